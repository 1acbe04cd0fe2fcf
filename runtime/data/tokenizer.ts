// BERT WordPiece tokenisation of report sentences and the packing of a report into the
// model's fixed-length token inputs (method §1).
//
// Tokenisation itself is @huggingface/tokenizers (the JavaScript port of Hugging Face
// tokenizers): either the user's tokenizer.json, or a tokenizer assembled from a plain
// vocab.txt exactly as BertTokenizerFast builds one (BertNormalizer → BertPreTokenizer →
// WordPiece with "##" continuations, max 100 characters per word).
//
// Packing: sentences are tokenised separately without special tokens and concatenated in
// order while the total stays ≤ T−2 (510 for T = 512); the first sentence that would overflow
// and all later ones are dropped, except that a single first sentence longer than T−2 is
// truncated. Sentences with index ≥ S (the model's sentence slots) are dropped the same way.
// Then [CLS] … [SEP] and [PAD] up to T. token_sentence gives each token's sentence index,
// −1 for [CLS], [SEP] and padding.
import { Tokenizer } from '@huggingface/tokenizers';
import type { FileSource } from './fs.ts';
import { readText } from './fs.ts';
import { echo, quote } from '../../compiler/echo.ts';

export const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;

export interface VocabTokenizerOptions {
  /**
   * Lower-case (and strip accents) before WordPiece. 'auto' (default) lower-cases unless the
   * vocabulary itself is cased (holds capitalised whole words), as a cased vocabulary such as
   * Bio_ClinicalBERT's needs case kept to match its entries.
   */
  doLowerCase?: boolean | 'auto';
}

/** Whether a vocabulary looks cased: >1% of its plain word entries start with a capital. */
export function vocabLooksCased(tokens: string[]): boolean {
  let words = 0;
  let capitalised = 0;
  for (const t of tokens) {
    if (t.startsWith('##') || (t.startsWith('[') && t.endsWith(']'))) continue;
    if (!/^\p{L}/u.test(t)) continue;
    words++;
    if (/^\p{Lu}/u.test(t)) capitalised++;
  }
  return words > 0 && capitalised / words > 0.01;
}

/** Parses vocab.txt: one token per line, id = line number (0-based). */
export function parseVocabText(text: string, what = 'vocab.txt'): string[] {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const seen = new Map<string, number>();
  lines.forEach((token, id) => {
    if (token === '') throw new Error(`${what}: line ${id + 1} is empty (each line must hold one token)`);
    const previous = seen.get(token);
    if (previous !== undefined) throw new Error(`${what}: token ${quote(token)} on line ${id + 1} repeats line ${previous + 1}`);
    seen.set(token, id);
  });
  for (const special of ['[PAD]', '[UNK]', '[CLS]', '[SEP]']) {
    if (!seen.has(special)) throw new Error(`${what}: missing special token ${special}`);
  }
  return lines;
}

/** A tokenizer.json object equivalent to BertTokenizerFast over a vocab list. */
export function bertTokenizerJson(vocab: string[], lowercase: boolean): Record<string, unknown> {
  const ids: Record<string, number> = {};
  vocab.forEach((t, i) => (ids[t] = i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.filter((t) => t in ids).map((t) => ({
      id: ids[t],
      content: t,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'BertProcessing',
      sep: ['[SEP]', ids['[SEP]']],
      cls: ['[CLS]', ids['[CLS]']],
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: ids },
  };
}

export class ReportTokenizer {
  readonly vocabSize: number;
  readonly padId: number;
  readonly unkId: number;
  readonly clsId: number;
  readonly sepId: number;
  readonly lowercase: boolean | 'from tokenizer.json';
  private readonly tokenizer: Tokenizer;

  private constructor(tokenizer: Tokenizer, lowercase: boolean | 'from tokenizer.json', what: string) {
    this.tokenizer = tokenizer;
    this.lowercase = lowercase;
    this.vocabSize = tokenizer.get_vocab(true).size;
    const id = (token: string) => {
      const value = tokenizer.token_to_id(token);
      if (value === undefined) throw new Error(`${what}: the vocabulary has no ${token} token`);
      return value;
    };
    this.padId = id('[PAD]');
    this.unkId = id('[UNK]');
    this.clsId = id('[CLS]');
    this.sepId = id('[SEP]');
  }

  /** From the lines of a BERT vocab.txt. */
  static fromVocabText(text: string, opts: VocabTokenizerOptions = {}, what = 'vocab.txt'): ReportTokenizer {
    const vocab = parseVocabText(text, what);
    const lowercase = opts.doLowerCase === undefined || opts.doLowerCase === 'auto' ? !vocabLooksCased(vocab) : opts.doLowerCase;
    return new ReportTokenizer(new Tokenizer(bertTokenizerJson(vocab, lowercase), {}), lowercase, what);
  }

  /** From a Hugging Face tokenizer.json (object or text) and optional tokenizer_config.json. */
  static fromTokenizerJson(json: string | object, config: object = {}, what = 'tokenizer.json'): ReportTokenizer {
    let parsed: Record<string, unknown>;
    try {
      parsed = (typeof json === 'string' ? JSON.parse(json) : json) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`${what}: not valid JSON (${(err as Error).message})`);
    }
    const model = parsed.model as { type?: string } | undefined;
    if (!model || model.type !== 'WordPiece') {
      throw new Error(`${what}: expected a WordPiece model (BERT tokenizer), found ${echo(model?.type)}`);
    }
    return new ReportTokenizer(new Tokenizer(parsed, config), 'from tokenizer.json', what);
  }

  /** Loads vocab.txt or tokenizer.json (chosen by the file name). */
  static async load(source: FileSource, path: string, opts: VocabTokenizerOptions = {}): Promise<ReportTokenizer> {
    const text = await readText(source, path);
    if (path.endsWith('.json')) return ReportTokenizer.fromTokenizerJson(text, {}, path);
    return ReportTokenizer.fromVocabText(text, opts, path);
  }

  /** WordPiece tokens of one sentence, without special tokens. */
  tokens(sentence: string): string[] {
    return this.tokenizer.tokenize(sentence, { add_special_tokens: false });
  }

  /** Token ids of one sentence, without special tokens. */
  encodeSentence(sentence: string): Int32Array {
    return Int32Array.from(this.tokenizer.encode(sentence, { add_special_tokens: false }).ids);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Text of token ids (WordPiece pieces merged), special tokens removed. */
  decode(ids: ArrayLike<number>): string {
    const list = Array.from(ids);
    return list.length === 0 ? '' : this.tokenizer.decode(list, { skip_special_tokens: true });
  }
}

export interface PackOptions {
  /** T: total sequence length including [CLS] and [SEP] (default 512). */
  maxLength?: number;
  /** S: sentence slots; sentences with index ≥ S are dropped (default: unlimited). */
  maxSentences?: number;
  clsId: number;
  sepId: number;
  padId: number;
}

export interface PackedReport {
  inputIds: Int32Array; // [T]
  attentionMask: Int32Array; // [T]: 1 for [CLS], tokens and [SEP]
  tokenSentence: Int32Array; // [T]: sentence index, −1 for [CLS]/[SEP]/padding
  /** Number of sentences kept (sentence indices 0..sentenceCount−1 appear in tokenSentence). */
  sentenceCount: number;
  /** Number of content tokens kept (without [CLS]/[SEP]). */
  tokenCount: number;
  /** Whether any sentence or token was dropped. */
  truncated: boolean;
}

/** Packs tokenised sentences into [CLS] s0 s1 … [SEP] [PAD]… (the 510 rule, see top). */
export function packSentences(sentences: readonly Int32Array[], opts: PackOptions): PackedReport {
  const maxLength = opts.maxLength ?? 512;
  if (!Number.isInteger(maxLength) || maxLength < 3) throw new Error(`packSentences: maxLength must be an integer ≥ 3, got ${maxLength}`);
  const maxSentences = opts.maxSentences ?? Infinity;
  if (!(maxSentences >= 1)) throw new Error(`packSentences: maxSentences must be ≥ 1, got ${maxSentences}`);
  const budget = maxLength - 2;
  const inputIds = new Int32Array(maxLength).fill(opts.padId);
  const attentionMask = new Int32Array(maxLength);
  const tokenSentence = new Int32Array(maxLength).fill(-1);
  inputIds[0] = opts.clsId;
  attentionMask[0] = 1;
  let used = 0;
  let kept = 0;
  let truncated = false;
  for (let s = 0; s < sentences.length; s++) {
    const ids = sentences[s];
    if (ids.length === 0) throw new Error(`packSentences: sentence ${s} has no tokens (drop empty sentences first)`);
    if (s >= maxSentences) {
      truncated = true;
      break;
    }
    let take = ids.length;
    if (used + take > budget) {
      truncated = true;
      if (s !== 0) break; // first overflowing sentence and all later ones are dropped
      take = budget; // a single first sentence longer than the budget is truncated
    }
    for (let k = 0; k < take; k++) {
      inputIds[1 + used + k] = ids[k];
      attentionMask[1 + used + k] = 1;
      tokenSentence[1 + used + k] = s;
    }
    used += take;
    kept++;
    if (take < ids.length) break;
  }
  inputIds[1 + used] = opts.sepId;
  attentionMask[1 + used] = 1;
  return { inputIds, attentionMask, tokenSentence, sentenceCount: kept, tokenCount: used, truncated };
}
