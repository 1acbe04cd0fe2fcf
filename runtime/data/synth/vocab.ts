// A WordPiece vocabulary built from the SynthCXR reports, so the default run needs no
// download. Layout (ids): [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then every single
// character seen (word-initial and "##" continuation forms, so no generated word is ever
// [UNK]), then frequent whole words, then frequent "##" suffix pieces. Inflected forms whose
// stem is a vocabulary word and whose ending is a suffix piece ("effusions" = "effusion" +
// "##s") are left out, so the real WordPiece tokenizer produces genuine continuations.
// Words are lower-cased, as the vocabulary is uncased.

const PUNCTUATION = /[\p{P}\u0021-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u007E]/u;

/** BERT basic tokenisation (lower-case, strip accents, split whitespace and punctuation). */
export function basicTokens(text: string): string[] {
  const normalized = text
    .toLowerCase()
    .normalize('NFD')
    .replace(/\p{Mn}/gu, '');
  const out: string[] = [];
  for (const chunk of normalized.split(/\s+/)) {
    let word = '';
    for (const ch of chunk) {
      if (PUNCTUATION.test(ch)) {
        if (word) out.push(word);
        out.push(ch);
        word = '';
      } else {
        word += ch;
      }
    }
    if (word) out.push(word);
  }
  return out;
}

const SUFFIXES = ['s', 'es', 'ed', 'ing', 'ly', 'al', 'ion', 'ity', 'ies', 'ic'];

export interface VocabOptions {
  /** Whole words seen fewer times than this are left to subword pieces (default 2). */
  minWordCount?: number;
}

export function buildWordPieceVocab(texts: Iterable<string>, opts: VocabOptions = {}): string[] {
  const minCount = opts.minWordCount ?? 2;
  const counts = new Map<string, number>();
  for (const text of texts) for (const t of basicTokens(text)) counts.set(t, (counts.get(t) ?? 0) + 1);
  const chars = new Set<string>();
  for (const word of counts.keys()) for (const ch of word) chars.add(ch);
  const sortedChars = [...chars].sort();
  const vocab: string[] = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
  vocab.push(...sortedChars);
  vocab.push(...sortedChars.filter((c) => !PUNCTUATION.test(c)).map((c) => `##${c}`));
  const byFrequency = [...counts.entries()].filter(([w]) => w.length > 1).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const wordSet = new Set(byFrequency.filter(([, n]) => n >= minCount).map(([w]) => w));
  const suffixPieces = new Set<string>();
  const words: string[] = [];
  for (const [word] of byFrequency) {
    if (!wordSet.has(word)) continue;
    const suffix = SUFFIXES.find((s) => word.length > s.length + 2 && word.endsWith(s) && wordSet.has(word.slice(0, -s.length)));
    if (suffix) {
      suffixPieces.add(`##${suffix}`);
      continue; // stem + ##suffix covers it
    }
    words.push(word);
  }
  const existing = new Set(vocab);
  for (const w of words)
    if (!existing.has(w)) {
      vocab.push(w);
      existing.add(w);
    }
  for (const p of [...suffixPieces].sort())
    if (!existing.has(p)) {
      vocab.push(p);
      existing.add(p);
    }
  return vocab;
}
