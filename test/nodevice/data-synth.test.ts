// SynthCXR: determinism (same seed → identical bytes), masks and boxes matching the drawn
// findings, report sentences naming them, and the real MIMIC reader reading the output.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCsv, decodeMaybeGzip } from '../../runtime/data/csv.ts';
import { MemoryFileSource, readText } from '../../runtime/data/fs.ts';
import { decodeImage, decodePngGray } from '../../runtime/data/image.ts';
import { MimicCxrDataset } from '../../runtime/data/mimic.ts';
import { Rng } from '../../runtime/data/random.ts';
import { generateSynthCXR, SYNTH_ANNOTATIONS_CSV, SYNTH_ANNOTATIONS_JSON } from '../../runtime/data/synth/dataset.ts';
import { drawAnatomy, drawFindingShape, drawPlacement, maskBox, renderFrontal, type Finding } from '../../runtime/data/synth/phantom.ts';
import { ReportTokenizer } from '../../runtime/data/tokenizer.ts';

const OPTS = { studies: 5, seed: 21, imageSize: 48 };

test('same seed → byte-identical files; another seed → different content', async () => {
  const a = new MemoryFileSource();
  const b = new MemoryFileSource();
  const c = new MemoryFileSource();
  const summary = await generateSynthCXR(a, OPTS);
  await generateSynthCXR(b, OPTS);
  await generateSynthCXR(c, { ...OPTS, seed: 22 });
  assert.equal(a.paths(), b.paths());
  for (const p of a.paths()) assert.equal(await a.readFile(p), await b.readFile(p), p);
  assert.not.equal(a.paths(), c.paths());
  assert.is(summary.studies, 5);
  assert.is(summary.files, a.paths().length);
  assert.is(summary.splits.train + summary.splits.validate + summary.splits.test, 5);
});

/** The types and placements to exercise every finding kind on one patient. */
const ALL_FINDINGS: Omit<Finding, 'shape'>[] = [
  { type: 'consolidation', side: 'right', zone: 'lower' },
  { type: 'nodule', side: 'left', zone: 'upper', sizeCm: 2.0 },
  { type: 'effusion', side: 'left', severity: 'moderate' },
  { type: 'pneumothorax', side: 'right', severity: 'moderate' },
  { type: 'cardiomegaly' },
  { type: 'line', lineKind: 'cvc' },
  { type: 'line', lineKind: 'ett' },
  { type: 'device', side: 'left', zone: 'middle' },
];

test('masks are exactly where the findings change the image, on the named side', () => {
  for (const seed of [1, 2, 3]) {
    const rng = new Rng(seed);
    const anatomy = drawAnatomy(rng);
    for (const spec of ALL_FINDINGS) {
      const finding = { ...spec, shape: drawFindingShape(anatomy, spec, rng) };
      const placement = drawPlacement(rng, seed === 2 ? 'AP' : 'PA');
      const size = 96;
      const withFinding = renderFrontal(anatomy, [finding], placement, size);
      const without = renderFrontal(anatomy, [finding], placement, size, { omitFindings: true });
      const mask = withFinding.masks[0];
      let changed = 0;
      let maskArea = 0;
      let sideCount = 0;
      for (let i = 0; i < size * size; i++) {
        const differs = withFinding.image.data[i] !== without.image.data[i];
        if (mask[i]) maskArea++;
        if (differs) {
          changed++;
          if (!mask[i]) assert.unreachable(`${spec.type} (seed ${seed}): pixel ${i} changed outside the mask`);
        }
        // The patient's right is the image left.
        if (mask[i] && spec.side) sideCount += i % size < size / 2 === (spec.side === 'right') ? 1 : 0;
      }
      assert.ok(maskArea > 0, `${spec.type}: empty mask`);
      const minFraction = spec.type === 'cardiomegaly' ? 0.15 : 0.6;
      assert.ok(changed / maskArea >= minFraction, `${spec.type} (seed ${seed}): only ${changed}/${maskArea} mask pixels drawn`);
      if (spec.side) assert.ok(sideCount / maskArea > 0.9, `${spec.type} (seed ${seed}) not on the ${spec.side}`);
      const box = maskBox(mask, size, size)!;
      assert.ok(box[2] > 0 && box[3] > 0);
    }
  }
});

test('stored masks, boxes and sentence links agree with each other and with the reports', async () => {
  const files = new MemoryFileSource();
  await generateSynthCXR(files, { studies: 9, seed: 5, imageSize: 64 });
  const ann = JSON.parse(await readText(files, SYNTH_ANNOTATIONS_JSON));
  const csv = parseCsv(await readText(files, SYNTH_ANNOTATIONS_CSV));
  let boxes = 0;
  for (const study of ann.studies) {
    // Every finding is named by at least one sentence that mentions its kind (and side).
    for (const f of study.findings) {
      assert.ok(f.sentences.length > 0, `${study.study_id}: finding ${f.label} has no sentence`);
      const keyword = {
        consolidation: /consolidation|opacity/i,
        nodule: /nodul/i,
        effusion: /effusion/i,
        pneumothorax: /pneumothorax/i,
        cardiomegaly: /cardiomegaly|enlarge/i,
        line: /catheter|line|tube|IJ/i,
        device: /device|density|pacemaker/i,
      }[f.type as string]!;
      for (const si of f.sentences) {
        const sentence: string = study.sentences[si];
        assert.match(sentence, keyword);
        if (f.side && f.type !== 'line' && !/^Right IJ|catheter/.test(sentence)) assert.match(sentence.toLowerCase(), new RegExp(f.side));
      }
    }
    for (const image of study.images) {
      const decoded = decodeImage(await files.readFile(image.path), image.path);
      assert.is(decoded.width, 64);
      for (const fa of image.findings) {
        const mask = decodePngGray(await files.readFile(fa.mask), fa.mask);
        const bytes = Uint8Array.from(mask.data, (v) => Math.round(v * 255));
        assert.equal(maskBox(bytes, 64, 64), fa.bbox);
        assert.is(
          bytes.reduce((s, v) => s + (v ? 1 : 0), 0),
          fa.area,
        );
        if (fa.bbox) {
          boxes++;
          const row = csv.rows.find((r) => r.dicom_id === image.dicom_id && r.mask_path === fa.mask)!;
          assert.equal([+row.x, +row.y, +row.width, +row.height], fa.bbox);
          assert.is(row.finding, study.findings[fa.finding].type);
        }
      }
    }
  }
  assert.is(csv.rows.length, boxes);
  assert.ok(boxes > 0);
});

test('the MIMIC reader reads SynthCXR: laterals dropped, no problems, no [UNK] tokens', async () => {
  const files = new MemoryFileSource();
  const summary = await generateSynthCXR(files, { studies: 8, seed: 9, imageSize: 48 });
  const tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
  assert.is(tokenizer.lowercase, true);
  assert.is(tokenizer.vocabSize, summary.vocabSize);
  const dataset = await MimicCxrDataset.open(files, { tokenizer });
  assert.equal(dataset.problems, []);
  assert.is(dataset.studies.length, 8);
  assert.is(
    Object.values(dataset.droppedViews).reduce((s, n) => s + n, 0),
    summary.images.lateral,
  );
  assert.is(
    dataset.studies.reduce((s, st) => s + st.imagePaths.length, 0),
    summary.images.frontal,
  );
  for (const split of ['train', 'validate', 'test'] as const) assert.is(dataset.split(split).length, summary.splits[split]);
  for (const st of dataset.studies) for (const ids of st.sentenceTokens) assert.not.ok(ids.includes(tokenizer.unkId));
  // The vocabulary really exercises ## continuations.
  const pieces = dataset.studies.flatMap((st) => st.sentenceTokens.flatMap((ids) => Array.from(ids, (i) => tokenizer.idToToken(i)!)));
  assert.ok(pieces.some((p) => p.startsWith('##')));
  // The metadata lists lateral views with their ViewPosition.
  const meta = parseCsv(decodeMaybeGzip(await files.readFile('mimic-cxr-2.0.0-metadata.csv.gz'), 'meta'));
  assert.ok(meta.rows.some((r) => r.ViewPosition === 'LATERAL' || r.ViewPosition === 'LL'));
});

test('bad options are rejected with the option named', async () => {
  const files = new MemoryFileSource();
  let message = '';
  try {
    await generateSynthCXR(files, { studies: 0, seed: 1 });
  } catch (err) {
    message = (err as Error).message;
  }
  assert.match(message, /studies must be a positive integer, got 0/);
  try {
    await generateSynthCXR(files, { studies: 1, seed: 1, imageSize: 8 });
  } catch (err) {
    message = (err as Error).message;
  }
  assert.match(message, /imageSize must be an integer in \[32, 4096\], got 8/);
});

test.run();
