// SynthCXR task data (runtime/eval/synth-tasks.ts): patient-disjoint splits, nested
// training fractions, masks and boxes checked against the stored PNGs and annotation
// boxes read independently, normalisation against hand-computed train statistics, batch
// shapes, and the data errors (missing annotations or masks, empty split, empty fraction).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryFileSource, readText } from '../../runtime/data/fs.ts';
import { decodeImage, decodePngGray } from '../../runtime/data/image.ts';
import { generateSynthCXR, SYNTH_ANNOTATIONS_JSON } from '../../runtime/data/synth/dataset.ts';
import {
  boxToEval,
  loadTaskSample,
  openSynthTask,
  splitBySubject,
  synthTaskSpec,
  taskBatches,
  trainingFraction,
  type SynthTaskData,
  type TaskBatch,
} from '../../runtime/eval/synth-tasks.ts';

const SYNTH = { studies: 40, seed: 3, imageSize: 48 };
const synth = (async () => {
  const files = new MemoryFileSource();
  await generateSynthCXR(files, SYNTH);
  return files;
})();

/** A copy of a source without the files `drop` selects. */
async function copyWithout(source: MemoryFileSource, drop: (path: string) => boolean): Promise<MemoryFileSource> {
  const out = new MemoryFileSource({}, 'copy');
  for (const p of source.paths()) if (!drop(p)) await out.writeFile(p, await source.readFile(p));
  return out;
}

/** The message a promise rejects with ('resolved' when it does not). */
const rejection = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (e: Error) => e.message,
  );

async function collect(gen: AsyncGenerator<TaskBatch>): Promise<TaskBatch[]> {
  const out: TaskBatch[] = [];
  for await (const b of gen) out.push(b);
  return out;
}

test('splits are disjoint by subject, cover every sample, follow the proportions and the seed', () => {
  // 50 subjects with 1–3 images each.
  const samples = Array.from({ length: 100 }, (_, i) => ({ id: `s${String(i).padStart(3, '0')}`, subjectId: `p${(i * 7) % 50}` }));
  const a = splitBySubject(samples, [0.6, 0.2, 0.2], 0);
  const subjectsOf = (list: typeof samples) => new Set(list.map((s) => s.subjectId));
  assert.is(subjectsOf(a.train).size, 30);
  assert.is(subjectsOf(a.validate).size, 10);
  assert.is(subjectsOf(a.test).size, 10);
  for (const [x, y] of [
    [a.train, a.validate],
    [a.train, a.test],
    [a.validate, a.test],
  ]) {
    for (const s of subjectsOf(x)) assert.not.ok(subjectsOf(y).has(s), `subject ${s} in two splits`);
  }
  assert.is(a.train.length + a.validate.length + a.test.length, 100);
  assert.equal(
    [...a.test].map((s) => s.id),
    [...a.test].map((s) => s.id).sort(),
    'each split is sorted by id',
  );
  // Input order does not matter; the seed does.
  assert.equal(splitBySubject([...samples].reverse(), [0.6, 0.2, 0.2], 0), a);
  assert.not.equal(splitBySubject(samples, [0.6, 0.2, 0.2], 1).test, a.test);
  assert.throws(() => splitBySubject(samples, [0.6, 0.3, 0.2], 0), /three positive numbers summing to 1 \(train, validate, test\), got 0.6, 0.3, 0.2/);
});

test('training fractions are nested (1 % ⊂ 10 % ⊂ 100 %), ⌊p·N/100⌋ long, and zero samples is an error', () => {
  const items = Array.from({ length: 1601 }, (_, i) => i);
  const f1 = trainingFraction(items, 1, 0);
  const f10 = trainingFraction(items, 10, 0);
  const f100 = trainingFraction(items, 100, 0);
  assert.is(f1.length, 16);
  assert.is(f10.length, 160);
  assert.equal(f100, items);
  const in10 = new Set(f10);
  assert.ok(
    f1.every((i) => in10.has(i)),
    '1 % ⊂ 10 %',
  );
  assert.equal(
    f10,
    [...f10].sort((x, y) => x - y),
    'kept in input order',
  );
  assert.not.equal(f10, items.slice(0, 160), 'a random subset, not the first rows');
  assert.equal(trainingFraction(items, 10, 0), f10, 'deterministic');
  assert.throws(
    () => trainingFraction(items.slice(0, 99), 1, 0, "task synth-seg's training split"),
    /--fraction 1 leaves 0 of the 99 images of task synth-seg's training split \(⌊1% · 99⌋ = 0\); use a larger fraction or a larger data set/,
  );
  assert.throws(() => trainingFraction(items, 0, 0), /--fraction must be a percentage in \(0, 100\]/);
});

test('segmentation task: union masks and normalised images match the stored files read independently', async () => {
  const files = await synth;
  // At the stored size nothing is resized: the mask must be exactly the union of the lung-finding PNGs.
  const data = await openSynthTask(files, synthTaskSpec('synth-seg'), { imageSize: 48 });
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  // Pixel statistics by hand over the training split: mean of image means, mean variance + variance of means.
  const trainPaths: string[] = data.splits.train.map((s) => s.imagePath);
  let sumMean = 0;
  let sumVar = 0;
  const means: number[] = [];
  for (const p of trainPaths) {
    const img = decodeImage(await files.readFile(p), p);
    let m = 0;
    for (const v of img.data) m += v;
    m /= img.data.length;
    let v2 = 0;
    for (const v of img.data) v2 += (v - m) ** 2;
    sumVar += v2 / img.data.length;
    sumMean += m;
    means.push(m);
  }
  const mean = sumMean / means.length;
  const std = Math.sqrt(sumVar / means.length + means.reduce((s, m) => s + (m - mean) ** 2, 0) / means.length);
  assert.ok(Math.abs(data.norm.mean - mean) < 1e-12 && Math.abs(data.norm.std - std) < 1e-12, `norm ${data.norm.mean}/${data.norm.std} vs ${mean}/${std}`);

  let positives = 0;
  for (const split of ['train', 'validate', 'test'] as const) {
    for (const sample of data.splits[split]) {
      const loaded = await loadTaskSample(data, sample);
      const study = ann.studies.find((s: { study_id: string }) => s.study_id === sample.studyId);
      const image = study.images.find((i: { dicom_id: string }) => i.dicom_id === sample.dicomId);
      const expected = new Float32Array(48 * 48);
      for (const f of image.findings) {
        if (!['consolidation', 'nodule', 'effusion', 'pneumothorax'].includes(study.findings[f.finding].type)) continue;
        const m = decodePngGray(await files.readFile(f.mask), f.mask);
        m.data.forEach((v, i) => {
          if (v > 0) expected[i] = 1;
        });
      }
      assert.equal(Array.from(loaded.mask!), Array.from(expected), `${sample.id} mask`);
      positives += expected.reduce((s, v) => s + v, 0);
      const raw = decodeImage(await files.readFile(sample.imagePath), sample.imagePath);
      for (let i = 0; i < raw.data.length; i += 97) {
        const want = (raw.data[i] - data.norm.mean) / data.norm.std;
        assert.ok(Math.abs(loaded.image[i] - want) < 1e-5, `${sample.id} pixel ${i}: ${loaded.image[i]} vs ${want}`);
      }
    }
  }
  assert.ok(positives > 0, 'the data set has lung findings');
});

test('segmentation batches: [B,3,S,S] images, [B,1,S,S] 0/1 masks, resized masks stay inside the mapped boxes', async () => {
  const files = await synth;
  const data: SynthTaskData = await openSynthTask(files, synthTaskSpec('synth-seg'), { imageSize: 32 });
  const batches = await collect(taskBatches(data, 'validate', { batchSize: 4, last: 'pad' }));
  const n = data.splits.validate.length;
  assert.is(batches.length, Math.ceil(n / 4));
  assert.is(
    batches.reduce((s, b) => s + b.valid, 0),
    n,
  );
  assert.equal(
    batches.flatMap((b) => b.ids.slice(0, b.valid)),
    data.splits.validate.map((s) => s.id),
  );
  for (const b of batches) {
    assert.equal(b.images.shape, [4, 3, 32, 32]);
    assert.equal(b.masks!.shape, [4, 1, 32, 32]);
    assert.ok(b.masks!.data.every((v) => v === 0 || v === 1));
    // The three channels repeat the gray image.
    assert.equal(b.images.data.subarray(0, 1024), b.images.data.subarray(1024, 2048));
  }
  // Each positive pixel of a resized mask lies in (or within one pixel of) a task finding's box mapped to 32².
  for (const sample of data.splits.train) {
    const loaded = await loadTaskSample(data, sample);
    const boxes = sample.findings.filter((f) => f.box).map((f) => boxToEval(f.box!, sample.width, sample.height, 32));
    loaded.mask!.forEach((v, i) => {
      if (!v) return;
      const [x, y] = [(i % 32) + 0.5, Math.floor(i / 32) + 0.5];
      assert.ok(
        boxes.some((bx) => x >= bx[0] - 1 && x <= bx[2] + 1 && y >= bx[1] - 1 && y <= bx[3] + 1),
        `${sample.id}: mask pixel ${i} outside every box`,
      );
    });
  }
  const train = await collect(taskBatches(data, 'train', { batchSize: 4, last: 'drop', shuffle: { seed: 1, epoch: 0 } }));
  assert.is(train.length, Math.floor(data.splits.train.length / 4));
  const again = await collect(taskBatches(data, 'train', { batchSize: 4, last: 'drop', shuffle: { seed: 1, epoch: 0 } }));
  assert.equal(
    again.map((b) => b.ids),
    train.map((b) => b.ids),
    'same seed and epoch, same order',
  );
  const next = await collect(taskBatches(data, 'train', { batchSize: 4, last: 'drop', shuffle: { seed: 1, epoch: 1 } }));
  assert.not.equal(
    next.map((b) => b.ids),
    train.map((b) => b.ids),
    'another epoch, another order',
  );
});

test('detection task: boxes with class ids, mapped by the eval geometry, from the annotation file', async () => {
  const files = await synth;
  const spec = synthTaskSpec('synth-det');
  const data = await openSynthTask(files, spec, { imageSize: 32, channels: 1 });
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  let boxes = 0;
  for (const b of await collect(taskBatches(data, 'test', { batchSize: 3 }))) {
    assert.is(b.masks, undefined);
    assert.equal(b.images.shape.slice(1), [1, 32, 32]);
    b.ids.forEach((id, k) => {
      const [subject, study, dicom] = id.split('/');
      const st = ann.studies.find((s: { study_id: string; subject_id: string }) => `s${s.study_id}` === study && `p${s.subject_id}` === subject);
      const image = st.images.find((i: { dicom_id: string }) => i.dicom_id === dicom);
      // [x, y, w, h] at 48 px → [x1, y1, x2, y2] at 32 px: × 2/3 (square images, no padding).
      const expected = image.findings
        .filter((f: { bbox: number[] | null; finding: number }) => f.bbox && spec.findings.includes(st.findings[f.finding].type))
        .map((f: { bbox: number[]; finding: number }) => ({
          box: [f.bbox[0], f.bbox[1], f.bbox[0] + f.bbox[2], f.bbox[1] + f.bbox[3]].map((v) => (v * 32) / 48),
          label: spec.findings.indexOf(st.findings[f.finding].type),
        }));
      assert.equal(
        b.boxes![k].map((x) => x.label),
        expected.map((x: { label: number }) => x.label),
        id,
      );
      b.boxes![k].forEach((x, j) =>
        x.box.forEach((v, c) => assert.ok(Math.abs(v - expected[j].box[c]) < 1e-12, `${id} box ${j}: ${x.box} vs ${expected[j].box}`)),
      );
      boxes += expected.length;
    });
  }
  assert.ok(boxes > 0);
  // Padding to a square: a 64×32 image gets 16 px on top, then × 32/64; a 20×15 one gets
  // ⌊5/2⌋ = 2 px on top (the odd pixel goes to the bottom, as padToSquare), then × 40/20.
  assert.equal(boxToEval([4, 2, 14, 12], 64, 32, 32), [2, 9, 7, 14]);
  assert.equal(boxToEval([4, 2, 14, 12], 20, 15, 40), [8, 8, 28, 28]);
});

test('data errors name the files looked for, the empty split, the fraction', async () => {
  const files = await synth;
  const noAnnotations = await copyWithout(files, (p) => p === SYNTH_ANNOTATIONS_JSON);
  assert.match(
    await rejection(openSynthTask(noAnnotations, synthTaskSpec('synth-seg'))),
    /^copy: no SynthCXR task annotations for task synth-seg: looked for synth-annotations\.json \(the findings' boxes and the list of their masks\) and the mask files masks\/pXX\/pSUBJECT\/sSTUDY\/<dicom_id>_<k>_<type>\.png it lists/,
  );
  const noMasks = await copyWithout(files, (p) => p.startsWith('masks/') && p.endsWith('_effusion.png'));
  assert.match(
    await rejection(openSynthTask(noMasks, synthTaskSpec('synth-seg'))),
    /^copy: task synth-seg: \d+ of the \d+ images and \d+ masks listed in synth-annotations\.json do not exist; looked for mask masks\/p\d\d\/p\d+\/s\d+\/[0-9a-f-]+_\d_effusion\.png/,
  );
  // Detection reads no mask file.
  await openSynthTask(noMasks, synthTaskSpec('synth-det'));
  const tiny = new MemoryFileSource({}, 'tiny');
  await generateSynthCXR(tiny, { studies: 2, seed: 1, imageSize: 32 });
  assert.match(
    await rejection(openSynthTask(tiny, synthTaskSpec('synth-seg'))),
    /^tiny: task synth-seg: the validate split is empty \(\d+ frontal images of \d+ subjects, split 0.6 \/ 0.2 \/ 0.2 by subject\); generate a larger data set/,
  );
  // A data set whose findings are all of other types: nothing to learn or measure.
  const heartOnly = { name: 'heart', kind: 'segmentation' as const, findings: ['cardiomegaly' as const] };
  const noHearts = new MemoryFileSource({}, 'normal');
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  for (const p of files.paths()) await noHearts.writeFile(p, await files.readFile(p));
  for (const st of ann.studies) for (const f of st.findings) if (f.type === 'cardiomegaly') f.type = 'nodule';
  await noHearts.writeFile(SYNTH_ANNOTATIONS_JSON, new TextEncoder().encode(JSON.stringify(ann)));
  assert.match(
    await rejection(openSynthTask(noHearts, heartOnly)),
    /^normal: task heart: no image of the \w+ split shows a finding of the task \(cardiomegaly\) among its \d+ images; use a larger data set \(lovt-run synth --studies N\)$/,
  );
  assert.match(
    await rejection(openSynthTask(files, synthTaskSpec('synth-seg'), { fraction: 1 })),
    /^--fraction 1 leaves 0 of the \d+ images of task synth-seg's training split/,
  );
  assert.throws(() => synthTaskSpec('rsna'), /unknown SynthCXR task 'rsna'; the tasks are synth-seg, synth-det/);
});

test.run();
