// Batching and the loader: tensor layout, determinism per (seed, epoch, position), exact
// resumption from a saved position, evaluation mode, sentence swaps, one random sentence
// per load (report_text), prefetching while the consumer waits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collateBatch } from '../../runtime/data/batch.ts';
import { evalTransform } from '../../runtime/data/augment.ts';
import { MemoryFileSource } from '../../runtime/data/fs.ts';
import { BatchLoader, parseReportText, type LoadedBatch, type LoaderOptions, type ReportText } from '../../runtime/data/loader.ts';
import { MimicCxrDataset } from '../../runtime/data/mimic.ts';
import { computePixelStats, PIXEL_STATS_FILE } from '../../runtime/data/stats.ts';
import { deriveSeed, Rng } from '../../runtime/data/random.ts';
import { generateSynthCXR } from '../../runtime/data/synth/dataset.ts';
import { packSentences, ReportTokenizer } from '../../runtime/data/tokenizer.ts';

const files = new MemoryFileSource();
let dataset: MimicCxrDataset;
let tokenizer: ReportTokenizer;

test.before(async () => {
  await generateSynthCXR(files, { studies: 16, seed: 3, imageSize: 40, splitFractions: [0.75, 0.25, 0] });
  tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
  dataset = await MimicCxrDataset.open(files, { tokenizer });
});

test('train-split pixel statistics: plausible values, cached beside the data', async () => {
  const trainImages = () => dataset.split('train').flatMap((s) => s.imagePaths);
  const stats = await computePixelStats(files, trainImages());
  assert.is(
    stats.images,
    dataset.split('train').reduce((n, s) => n + s.imagePaths.length, 0),
  );
  assert.ok(stats.mean > 0.1 && stats.mean < 0.7, `mean ${stats.mean}`);
  assert.ok(stats.std > 0.05 && stats.std < 0.5, `std ${stats.std}`);
  assert.ok(await files.exists(PIXEL_STATS_FILE));
  assert.is((await computePixelStats(files, trainImages())).fromCache, true);
});

const NORM = { mean: 0.4, std: 0.25 };

function loader(overrides: Partial<LoaderOptions> = {}, split: 'train' | 'validate' = 'train'): BatchLoader {
  return new BatchLoader(dataset, dataset.split(split), tokenizer, {
    batchSize: 3,
    seed: 11,
    train: split === 'train',
    norm: NORM,
    imageSize: 24,
    maxLength: 64,
    maxSentences: 8,
    ...overrides,
  });
}

async function collect(it: AsyncIterable<LoadedBatch>): Promise<LoadedBatch[]> {
  const out: LoadedBatch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

function fingerprint(b: LoadedBatch): string {
  const x = b.batch.inputs;
  let h = 0;
  for (const v of x.image.data) h = (h * 31 + Math.round(v * 1e4)) | 0;
  return `${b.batch.ids.join(',')}|${Array.from(x.input_ids.data).join(',')}|${h}`;
}

test('collateBatch: shapes, channel repetition, [CLS]/[SEP]/padding, token_sentence', () => {
  const image = { width: 2, height: 2, data: Float32Array.from([1, 2, 3, 4]) };
  const b = collateBatch(
    [
      { id: 'a', image, sentenceTokens: [Int32Array.from([10, 11]), Int32Array.from([12])] },
      { id: 'b', image: { ...image, data: Float32Array.from([5, 6, 7, 8]) }, sentenceTokens: [Int32Array.from([13, 14, 15])] },
    ],
    { maxLength: 6, clsId: 2, sepId: 3, padId: 0 },
  );
  assert.equal(b.inputs.image.shape, [2, 3, 2, 2]);
  assert.equal(Array.from(b.inputs.image.data), [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8]);
  assert.equal(b.inputs.input_ids.shape, [2, 6]);
  assert.equal(Array.from(b.inputs.input_ids.data), [2, 10, 11, 12, 3, 0, 2, 13, 14, 15, 3, 0]);
  assert.equal(Array.from(b.inputs.attention_mask.data), [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]);
  assert.equal(Array.from(b.inputs.token_sentence.data), [-1, 0, 0, 1, -1, -1, -1, 0, 0, 0, -1, -1]);
  assert.equal(b.sentenceCounts, [2, 1]);
  assert.is(b.inputs.token_sentence.dtype, 'i32');
  assert.throws(
    () =>
      collateBatch(
        [
          { id: 'a', image, sentenceTokens: [Int32Array.from([1])] },
          { id: 'z', image: { width: 3, height: 2, data: new Float32Array(6) }, sentenceTokens: [Int32Array.from([1])] },
        ],
        { clsId: 2, sepId: 3, padId: 0 },
      ),
    /sample z image is 3×2, batch expects 2×2/,
  );
});

test('train batches: model input layout, every study once per epoch, full batches only', async () => {
  const l = loader();
  const train = dataset.split('train');
  const batches = await collect(l.epoch(0));
  assert.is(batches.length, Math.floor(train.length / 3));
  assert.is(l.batchesPerEpoch(), batches.length);
  const ids = batches.flatMap((b) => b.batch.ids);
  assert.is(new Set(ids).size, ids.length);
  for (const { batch } of batches) {
    const { image, input_ids, attention_mask, token_sentence } = batch.inputs;
    assert.equal(image.shape, [3, 3, 24, 24]);
    assert.equal(input_ids.shape, [3, 64]);
    for (let b = 0; b < 3; b++) {
      const plane = 24 * 24;
      const r = image.data.subarray(b * 3 * plane, (b * 3 + 1) * plane);
      assert.equal(image.data.subarray((b * 3 + 2) * plane, (b * 3 + 3) * plane), r);
      const row = (t: { data: Int32Array }) => Array.from(t.data.subarray(b * 64, (b + 1) * 64));
      const ids = row(input_ids);
      const mask = row(attention_mask);
      const sent = row(token_sentence);
      assert.is(ids[0], tokenizer.clsId);
      const sep = ids.indexOf(tokenizer.sepId);
      assert.ok(sep > 1);
      assert.ok(mask.every((m, t) => m === (t <= sep ? 1 : 0)));
      assert.ok(sent.every((s, t) => (t === 0 || t >= sep ? s === -1 : s >= 0 && s < 8)));
      // Sentence indices are non-decreasing and start at 0.
      assert.is(sent[1], 0);
      for (let t = 2; t < sep; t++) assert.ok(sent[t] === sent[t - 1] || sent[t] === sent[t - 1] + 1);
    }
  }
});

test('deterministic per seed; epochs and seeds reorder', async () => {
  const a = (await collect(loader().epoch(0))).map(fingerprint);
  const b = (await collect(loader({ prefetch: 1 }).epoch(0))).map(fingerprint); // prefetch depth does not matter
  assert.equal(a, b);
  const e1 = (await collect(loader().epoch(1))).map(fingerprint);
  assert.not.equal(a, e1);
  const s2 = (await collect(loader({ seed: 12 }).epoch(0))).map(fingerprint);
  assert.not.equal(a, s2);
});

test('resuming from a saved position reproduces the remaining batches exactly, across epochs', async () => {
  const full = await collect(loader().from({ epoch: 0, cursor: 0 }, 3));
  assert.is(full.length, 3 * loader().batchesPerEpoch());
  for (const k of [0, 1, 4, full.length - 2]) {
    const resumed = await collect(loader().from(full[k].next, 3));
    assert.equal(resumed.map(fingerprint), full.slice(k + 1).map(fingerprint), `resume after batch ${k}`);
    assert.equal(
      resumed.map((r) => [r.epoch, r.index]),
      full.slice(k + 1).map((r) => [r.epoch, r.index]),
    );
  }
});

test('evaluation: fixed order, no augmentation, same batches every epoch', async () => {
  const l = loader({ batchSize: 2 }, 'validate');
  const e0 = await collect(l.epoch(0));
  const e5 = await collect(l.epoch(5));
  assert.ok(e0.length >= 1);
  assert.equal(e0.map(fingerprint), e5.map(fingerprint));
  const val = dataset.split('validate');
  assert.equal(
    e0.flatMap((b) => b.batch.ids),
    val.slice(0, e0.length * 2).map((s) => `p${s.subjectId}/s${s.studyId}`),
  );
  // The image is the validation transform of the image drawn by the study's fixed stream,
  // and the sentences keep their report order.
  const study = val[0];
  const drawn = await dataset.loadImage(study, new Rng(deriveSeed(11, 0, study.index, 1)));
  const expected = evalTransform(drawn!.image, NORM, 24);
  assert.equal(e0[0].batch.inputs.image.data.subarray(0, 24 * 24), expected.data);
  const packed = packSentences(study.sentenceTokens, { maxLength: 64, maxSentences: 8, ...tokenizer });
  assert.equal(e0[0].batch.inputs.input_ids.data.subarray(0, 64), packed.inputIds);
});

test('training swaps sentences for some samples (same multiset of sentences)', async () => {
  const l = loader({ maxLength: 256, maxSentences: 64 });
  let swapped = 0;
  for (let epoch = 0; epoch < 4; epoch++) {
    for (const study of dataset.split('train')) {
      const sample = (await l.prepare(study, epoch))!;
      const key = (ids: readonly Int32Array[]) => ids.map((s) => Array.from(s).join(' '));
      assert.equal([...key(sample.sentenceTokens)].sort(), [...key(study.sentenceTokens)].sort());
      if (key(sample.sentenceTokens).join('|') !== key(study.sentenceTokens).join('|')) swapped++;
    }
  }
  assert.ok(swapped > 0);
  const none = loader({ sentenceSwapP: 0 });
  const study = dataset.split('train')[0];
  assert.equal((await none.prepare(study, 0))!.sentenceTokens, study.sentenceTokens);
});

const tokenKey = (ids: Int32Array) => Array.from(ids).join(' ');

test("report_text one_random_sentence: one of the study's sentences per load, varying across loads", async () => {
  const l = loader({ reportText: 'one_random_sentence' });
  const train = dataset.split('train');
  assert.ok(
    train.some((s) => s.sentenceTokens.length >= 3),
    'the fixture has multi-sentence reports',
  );
  let varied = 0;
  for (const study of train) {
    const draws = new Set<string>();
    for (let epoch = 0; epoch < 8; epoch++) {
      const { sentenceTokens } = (await l.prepare(study, epoch))!;
      assert.is(sentenceTokens.length, 1);
      assert.ok(study.sentenceTokens.map(tokenKey).includes(tokenKey(sentenceTokens[0])), `${study.studyId} epoch ${epoch}: a sentence of the report`);
      draws.add(tokenKey(sentenceTokens[0]));
    }
    if (draws.size > 1) varied++;
  }
  assert.ok(varied >= train.filter((s) => s.sentenceTokens.length >= 3).length / 2, `draws vary across loads for ${varied} of ${train.length} studies`);
});

test('report_text one_random_sentence: batches hold a one-sentence report with [CLS]/[SEP] and sentence index 0', async () => {
  const studies = new Map(dataset.studies.map((s) => [`p${s.subjectId}/s${s.studyId}`, s]));
  for (const { batch } of await collect(loader({ reportText: 'one_random_sentence' }).epoch(0))) {
    assert.equal(batch.sentenceCounts, [1, 1, 1]);
    batch.ids.forEach((id, b) => {
      const row = (t: { data: Int32Array }) => t.data.subarray(b * 64, (b + 1) * 64);
      const ids = row(batch.inputs.input_ids);
      const sep = ids.indexOf(tokenizer.sepId);
      const sentence = ids.subarray(1, sep);
      assert.ok(studies.get(id)!.sentenceTokens.map(tokenKey).includes(tokenKey(sentence)), `${id}: [CLS] one report sentence [SEP]`);
      const expected = packSentences([sentence], { maxLength: 64, maxSentences: 8, ...tokenizer });
      assert.equal(ids, expected.inputIds);
      assert.equal(row(batch.inputs.token_sentence), expected.tokenSentence);
      assert.equal(row(batch.inputs.attention_mask), expected.attentionMask);
      assert.ok(Array.from(row(batch.inputs.token_sentence)).every((s, t) => s === (t >= 1 && t < sep ? 0 : -1)));
    });
  }
});

test('report_text one_random_sentence: same seed same draws, another seed others, exact resume, fixed in evaluation', async () => {
  const one = (o: Partial<LoaderOptions> = {}, split: 'train' | 'validate' = 'train') => loader({ reportText: 'one_random_sentence', ...o }, split);
  const full = await collect(one().from({ epoch: 0, cursor: 0 }, 3));
  assert.equal((await collect(one().from({ epoch: 0, cursor: 0 }, 3))).map(fingerprint), full.map(fingerprint));
  assert.not.equal((await collect(one({ seed: 12 }).epoch(0))).map(fingerprint), full.slice(0, 4).map(fingerprint));
  for (const k of [0, 2, 5]) {
    assert.equal((await collect(one().from(full[k].next, 3))).map(fingerprint), full.slice(k + 1).map(fingerprint), `resume after batch ${k}`);
  }
  // The sentences differ from the whole-report batches of the same seed (the images do not).
  const all = await collect(loader().epoch(0));
  assert.not.equal(
    all.map((b) => Array.from(b.batch.inputs.input_ids.data).join(',')),
    full.slice(0, all.length).map((b) => Array.from(b.batch.inputs.input_ids.data).join(',')),
  );
  assert.equal(
    all.map((b) => Array.from(b.batch.inputs.image.data.subarray(0, 50)).join(',')),
    full.slice(0, all.length).map((b) => Array.from(b.batch.inputs.image.data.subarray(0, 50)).join(',')),
  );
  const v0 = await collect(one({ batchSize: 2 }, 'validate').epoch(0));
  assert.ok(v0.length >= 1);
  assert.equal((await collect(one({ batchSize: 2 }, 'validate').epoch(7))).map(fingerprint), v0.map(fingerprint));
  assert.ok(v0.every((b) => b.batch.sentenceCounts.every((n) => n === 1)));
});

test('report_text all_sentences is the default; an unknown value is a clear error', async () => {
  const study = dataset.split('train')[1];
  for (const epoch of [0, 3]) {
    assert.equal((await loader({ reportText: 'all_sentences' }).prepare(study, epoch))!.sentenceTokens, (await loader().prepare(study, epoch))!.sentenceTokens);
  }
  assert.throws(
    () => loader({ reportText: 'two_sentences' as ReportText }),
    /report_text: unknown value "two_sentences"; the data pipeline supports all_sentences, one_random_sentence/,
  );
  assert.throws(() => parseReportText(3), /report_text: unknown value 3/);
  assert.is(parseReportText('one_random_sentence'), 'one_random_sentence');
});

test('prefetch: the next batches are prepared while the consumer awaits other work (as the trainer awaits the GPU)', async () => {
  class CountingLoader extends BatchLoader {
    prepared = 0;
    override async prepare(...args: Parameters<BatchLoader['prepare']>) {
      const sample = await super.prepare(...args);
      this.prepared++;
      return sample;
    }
  }
  const l = new CountingLoader(dataset, dataset.split('train'), tokenizer, {
    batchSize: 3,
    prefetch: 2,
    seed: 11,
    train: true,
    norm: NORM,
    imageSize: 24,
    maxLength: 64,
  });
  const batches = l.epoch(0)[Symbol.asyncIterator]();
  await batches.next();
  // The consumer now waits on something else without asking for the next batch: the
  // loader's in-flight samples (the next prefetch × B) complete meanwhile, and no more start.
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const started = performance.now();
  while (l.prepared < 9 && performance.now() - started < 10_000) await sleep(5);
  await sleep(50);
  assert.is(l.prepared, 3 + 2 * 3);
  await batches.return?.(undefined);
});

test('a bad batch size is rejected', () => {
  assert.throws(() => loader({ batchSize: 0 }), /batch size must be a positive integer, got 0/);
});

test.run();
