// WordPiece tokenisation against hand-derived pieces, and the 510 rule with sentence indices.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryFileSource } from '../../runtime/data/fs.ts';
import { bertTokenizerJson, packSentences, parseVocabText, ReportTokenizer, vocabLooksCased } from '../../runtime/data/tokenizer.ts';

// ids:        0       1       2       3       4        5     6       7     8      9       10   11    12       13       14       15   16   17     18   19          20
const VOCAB = [
  '[PAD]',
  '[UNK]',
  '[CLS]',
  '[SEP]',
  '[MASK]',
  'the',
  'lung',
  '##s',
  'are',
  'clear',
  '.',
  'no',
  'pneum',
  '##oth',
  '##orax',
  'cm',
  '1',
  '##5',
  ',',
  'effusion',
  'small',
];

test('WordPiece: whole words, ## continuations, punctuation split, [UNK] for uncoverable words', () => {
  const tok = ReportTokenizer.fromVocabText(VOCAB.join('\n'), { doLowerCase: true });
  // "lungs" = lung + ##s; "pneumothorax" = pneum + ##oth + ##orax; "1.5" = 1 . then "5"
  // cannot start a word (only "##5" exists) → [UNK]; "effusions" = effusion + ##s; "xyz" → [UNK].
  assert.equal(tok.tokens('The lungs are clear. No pneumothorax, 1.5 cm small effusions xyz'), [
    'the',
    'lung',
    '##s',
    'are',
    'clear',
    '.',
    'no',
    'pneum',
    '##oth',
    '##orax',
    ',',
    '1',
    '.',
    '[UNK]',
    'cm',
    'small',
    'effusion',
    '##s',
    '[UNK]',
  ]);
  assert.equal(Array.from(tok.encodeSentence('The lungs are clear.')), [5, 6, 7, 8, 9, 10]);
  // "15" = 1 + ##5; "lungss" = lung + ##s + ##s.
  assert.equal(tok.tokens('15 lungss'), ['1', '##5', 'lung', '##s', '##s']);
  // A word is [UNK] as a whole when any part is uncoverable ("lungx": lung + ?x).
  assert.equal(tok.tokens('lungx'), ['[UNK]']);
  assert.is(tok.clsId, 2);
  assert.is(tok.sepId, 3);
  assert.is(tok.padId, 0);
  assert.is(tok.unkId, 1);
  assert.is(tok.vocabSize, VOCAB.length);
  assert.is(tok.decode([5, 6, 7, 8, 9, 10]), 'the lungs are clear.');
});

test('cased vocabularies keep case; do_lower_case is an option; auto detects casing', () => {
  const cased = [...VOCAB, 'Heart', 'Lungs', 'CT'];
  assert.ok(vocabLooksCased(cased));
  assert.not.ok(vocabLooksCased(VOCAB));
  const keep = ReportTokenizer.fromVocabText(cased.join('\n'));
  assert.is(keep.lowercase, false);
  assert.equal(keep.tokens('Heart the Lungs'), ['Heart', 'the', 'Lungs']);
  assert.equal(keep.tokens('The'), ['[UNK]']); // "The" is not in the cased vocabulary
  const lower = ReportTokenizer.fromVocabText(cased.join('\n'), { doLowerCase: true });
  assert.equal(lower.tokens('The LUNGS'), ['the', 'lung', '##s']);
});

test('tokenizer.json input gives the same tokens as the vocab.txt path', () => {
  const fromJson = ReportTokenizer.fromTokenizerJson(JSON.stringify(bertTokenizerJson(VOCAB, true)));
  const fromVocab = ReportTokenizer.fromVocabText(VOCAB.join('\n'), { doLowerCase: true });
  const text = 'The lungs are clear, no pneumothorax.';
  assert.equal(fromJson.tokens(text), fromVocab.tokens(text));
  assert.throws(() => ReportTokenizer.fromTokenizerJson('{"model": {"type": "BPE"}}'), /expected a WordPiece model/);
});

test('ReportTokenizer.load picks vocab.txt or tokenizer.json by name', async () => {
  const files = new MemoryFileSource({ 'vocab.txt': VOCAB.join('\n') + '\n', 'tok/tokenizer.json': JSON.stringify(bertTokenizerJson(VOCAB, true)) });
  const a = await ReportTokenizer.load(files, 'vocab.txt');
  const b = await ReportTokenizer.load(files, 'tok/tokenizer.json');
  assert.equal(a.tokens('No lungs'), ['no', 'lung', '##s']);
  assert.equal(b.tokens('No lungs'), ['no', 'lung', '##s']);
});

test('vocab.txt validation names the problem', () => {
  assert.throws(() => parseVocabText('[PAD]\n[UNK]\n[CLS]\n'), /missing special token \[SEP\]/);
  assert.throws(() => parseVocabText('[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nthe\n'), /token "the" on line 6 repeats line 5/);
  assert.throws(() => parseVocabText('[PAD]\n\n[UNK]\n'), /line 2 is empty/);
});

const IDS = { clsId: 2, sepId: 3, padId: 0 };
const seq = (start: number, n: number) => Int32Array.from({ length: n }, (_, i) => start + i);

test('packing: [CLS] sentences [SEP] padding, token_sentence with −1 on specials and padding', () => {
  const p = packSentences([Int32Array.from([10, 11]), Int32Array.from([12]), Int32Array.from([13, 14, 15])], { maxLength: 10, ...IDS });
  assert.equal(Array.from(p.inputIds), [2, 10, 11, 12, 13, 14, 15, 3, 0, 0]);
  assert.equal(Array.from(p.attentionMask), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
  assert.equal(Array.from(p.tokenSentence), [-1, 0, 0, 1, 2, 2, 2, -1, -1, -1]);
  assert.is(p.sentenceCount, 3);
  assert.is(p.tokenCount, 6);
  assert.is(p.truncated, false);
});

test('the 510 rule at T = 512: the first overflowing sentence and all later ones are dropped', () => {
  // 300 + 200 = 500 fit; the 20-token third sentence would make 520 > 510: dropped, and the
  // 5-token fourth (which alone would fit) is dropped with it.
  const p = packSentences([seq(100, 300), seq(1000, 200), seq(2000, 20), seq(3000, 5)], { maxLength: 512, ...IDS });
  assert.is(p.sentenceCount, 2);
  assert.is(p.tokenCount, 500);
  assert.ok(p.truncated);
  assert.is(p.inputIds[0], 2);
  assert.is(p.inputIds[300], 399);
  assert.is(p.inputIds[301], 1000);
  assert.is(p.inputIds[500], 1199);
  assert.is(p.inputIds[501], 3);
  assert.is(p.inputIds[502], 0);
  assert.is(p.tokenSentence[300], 0);
  assert.is(p.tokenSentence[301], 1);
  assert.is(p.tokenSentence[501], -1);
  assert.is(p.attentionMask[501], 1);
  assert.is(p.attentionMask[502], 0);
  // Exactly 510 tokens fit: [SEP] lands on the last position.
  const exact = packSentences([seq(100, 500), seq(1000, 10)], { maxLength: 512, ...IDS });
  assert.is(exact.sentenceCount, 2);
  assert.is(exact.inputIds[511], 3);
  assert.is(exact.truncated, false);
});

test('a single first sentence longer than 510 is truncated to 510 tokens', () => {
  const p = packSentences([seq(100, 600), seq(1000, 3)], { maxLength: 512, ...IDS });
  assert.is(p.sentenceCount, 1);
  assert.is(p.tokenCount, 510);
  assert.is(p.inputIds[510], 609);
  assert.is(p.inputIds[511], 3);
  assert.ok(Array.from(p.tokenSentence.slice(1, 511)).every((s) => s === 0));
  assert.ok(p.truncated);
});

test('sentences with index ≥ S are dropped like overflow', () => {
  const p = packSentences([seq(10, 2), seq(20, 2), seq(30, 2)], { maxLength: 16, maxSentences: 2, ...IDS });
  assert.equal(Array.from(p.inputIds.slice(0, 7)), [2, 10, 11, 20, 21, 3, 0]);
  assert.is(p.sentenceCount, 2);
  assert.ok(p.truncated);
  assert.ok(Array.from(p.tokenSentence).every((s) => s < 2));
});

test('packing rejects empty sentences and too-short T', () => {
  assert.throws(() => packSentences([new Int32Array(0)], { maxLength: 8, ...IDS }), /sentence 0 has no tokens/);
  assert.throws(() => packSentences([seq(1, 1)], { maxLength: 2, ...IDS }), /maxLength must be an integer ≥ 3/);
});

test.run();
