// The MIMIC-CXR-JPG reader on a small fixture written to a temp dir: gzip CSVs, lateral
// views to drop, and each kind of corrupt input. Exact problem counts; every good sample loads.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatCsv, gzipText, parseCsv, readCsv } from '../../runtime/data/csv.ts';
import { decodeImage, encodeJpegGray, imageMoments } from '../../runtime/data/image.ts';
import { imagePath, MimicCxrDataset, reportPath, RESIZE_MANIFEST, selectSubset, writeResizedImages } from '../../runtime/data/mimic.ts';
import { MemoryFileSource, type FileSource } from '../../runtime/data/fs.ts';
import { BatchLoader } from '../../runtime/data/loader.ts';
import { Rng } from '../../runtime/data/random.ts';
import { PIXEL_STATS_FILE } from '../../runtime/data/stats.ts';
import { openTrainingData } from '../../runtime/train/data-setup.ts';
import { buildWordPieceVocab } from '../../runtime/data/synth/vocab.ts';
import { ReportTokenizer } from '../../runtime/data/tokenizer.ts';
import { nodeFileSource } from '../../runtime/platform/node-fs.ts';
import { createImageWorkers } from '../../runtime/platform/node-workers.ts';

const GOOD_REPORT = (finding: string) => `                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 FINDINGS:

 ${finding}  The heart size is normal.  No pleural effusion or
 pneumothorax.

 IMPRESSION:

 No acute cardiopulmonary process.
`;

interface FixtureImage {
  dicom: string;
  view: string;
  kind?: 'truncated' | 'missing';
}
interface FixtureStudy {
  name: string;
  subject: string;
  study: string;
  split: string;
  images: FixtureImage[];
  report: string | null; // null: no report file
}

const STUDIES: FixtureStudy[] = [
  {
    name: 'good-two-frontals',
    subject: '10000001',
    study: '50000001',
    split: 'train',
    report: GOOD_REPORT('There is a small left effusion.'),
    images: [
      { dicom: 'd1a', view: 'PA' },
      { dicom: 'd1b', view: 'AP' },
      { dicom: 'd1c', view: 'LATERAL' },
    ],
  },
  {
    name: 'good-one-frontal',
    subject: '10000002',
    study: '50000002',
    split: 'train',
    report: GOOD_REPORT('Mild cardiomegaly.'),
    images: [
      { dicom: 'd2a', view: 'PA' },
      { dicom: 'd2b', view: 'LL' },
    ],
  },
  {
    name: 'good-with-truncated-second',
    subject: '10000003',
    study: '50000003',
    split: 'train',
    report: GOOD_REPORT('Right lower lobe opacity.'),
    images: [
      { dicom: 'd3a', view: 'AP' },
      { dicom: 'd3b', view: 'AP', kind: 'truncated' },
    ],
  },
  {
    name: 'only-image-truncated',
    subject: '10000004',
    study: '50000004',
    split: 'train',
    report: GOOD_REPORT('Stable lines.'),
    images: [{ dicom: 'd4a', view: 'PA', kind: 'truncated' }],
  },
  { name: 'empty-report', subject: '10000005', study: '50000005', split: 'train', report: '  \n \n', images: [{ dicom: 'd5a', view: 'PA' }] },
  {
    name: 'missing-image',
    subject: '11000006',
    study: '50000006',
    split: 'validate',
    report: GOOD_REPORT('Clear lungs.'),
    images: [
      { dicom: 'd6a', view: 'PA', kind: 'missing' },
      { dicom: 'd6b', view: 'LATERAL' },
    ],
  },
  { name: 'missing-report', subject: '11000007', study: '50000007', split: 'validate', report: null, images: [{ dicom: 'd7a', view: 'AP' }] },
  {
    name: 'no-sections',
    subject: '12000009',
    study: '50000009',
    split: 'train',
    report: 'EXAMINATION: Chest.\nINDICATION: Cough.\nLungs are clear.\n',
    images: [{ dicom: 'd9a', view: 'PA' }],
  },
  {
    name: 'no-sentences',
    subject: '12000010',
    study: '50000010',
    split: 'train',
    report: 'FINDINGS:\n .\n\nIMPRESSION:\n ___\n',
    images: [{ dicom: 'd10a', view: 'PA' }],
  },
  { name: 'too-few-tokens', subject: '12000011', study: '50000011', split: 'train', report: 'IMPRESSION: Clear.\n', images: [{ dicom: 'd11a', view: 'PA' }] },
  {
    name: 'lateral-only',
    subject: '12000012',
    study: '50000012',
    split: 'test',
    report: GOOD_REPORT('Clear lungs.'),
    images: [{ dicom: 'd12a', view: 'LATERAL' }],
  },
  {
    name: 'good-validate',
    subject: '13000013',
    study: '50000013',
    split: 'validate',
    report: GOOD_REPORT('There is a small right effusion.'),
    images: [{ dicom: 'd13a', view: 'PA' }],
  },
  {
    name: 'good-test',
    subject: '13000014',
    study: '50000014',
    split: 'test',
    report: GOOD_REPORT('Left apical pneumothorax.'),
    images: [{ dicom: 'd14a', view: 'AP' }],
  },
];

async function writeFixture(root: string): Promise<void> {
  const files = nodeFileSource(root);
  const splitRows: string[][] = [];
  const metaRows: string[][] = [];
  const tiny = (v: number) => encodeJpegGray({ width: 16, height: 12, data: new Float32Array(192).fill(v) }, 90);
  let level = 0.1;
  for (const s of STUDIES) {
    for (const img of s.images) {
      splitRows.push([img.dicom, s.study, s.subject, s.split]);
      metaRows.push([img.dicom, s.subject, s.study, img.view, '12', '16']);
      if (img.kind === 'missing') continue;
      const bytes = tiny((level += 0.05));
      await files.writeFile(imagePath(s.subject, s.study, img.dicom), img.kind === 'truncated' ? bytes.subarray(0, Math.floor(bytes.length / 2)) : bytes);
    }
    if (s.report !== null) await files.writeFile(reportPath(s.subject, s.study), new TextEncoder().encode(s.report));
  }
  // A split row with a bad study id (line 20: 18 image rows follow the header), and a
  // metadata row with a bad subject id (line 20 there).
  splitRows.push(['d8a', '5x000008', '12000008', 'train']);
  splitRows.push(['d15a', '50000015', '12000015', 'train']);
  metaRows.push(['d15a', 'abc', '50000015', 'PA', '12', '16']);
  await files.writeFile('mimic-cxr-2.0.0-split.csv.gz', gzipText(formatCsv(['dicom_id', 'study_id', 'subject_id', 'split'], splitRows)));
  await files.writeFile(
    'mimic-cxr-2.0.0-metadata.csv.gz',
    gzipText(formatCsv(['dicom_id', 'subject_id', 'study_id', 'ViewPosition', 'Rows', 'Columns'], metaRows)),
  );
  await files.writeFile('vocab.txt', new TextEncoder().encode(buildWordPieceVocab(STUDIES.map((s) => s.report ?? '')).join('\n')));
}

let root = '';

test.before(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'lovt-mimic-'));
  await writeFixture(root);
});

test.after(() => {
  rmSync(root, { recursive: true, force: true });
});

async function openFixture() {
  const files = nodeFileSource(root);
  const tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
  return { files, tokenizer, dataset: await MimicCxrDataset.open(files, { tokenizer }) };
}

test('open: frontal views only, good studies kept per split, exact problem counts', async () => {
  const { dataset } = await openFixture();
  assert.equal(
    dataset.split('train').map((s) => s.studyId),
    ['50000001', '50000002', '50000003', '50000004'],
  );
  assert.equal(
    dataset.split('validate').map((s) => s.studyId),
    ['50000013'],
  );
  assert.equal(
    dataset.split('test').map((s) => s.studyId),
    ['50000014'],
  );
  assert.equal(dataset.droppedViews, { LATERAL: 3, LL: 1 });
  assert.equal(dataset.problemCounts(), {
    'bad-csv-row': 2,
    'missing-image': 1,
    'unreadable-image': 0,
    'undecodable-image': 0,
    'missing-report': 1,
    'unreadable-report': 0,
    'undecodable-report': 0,
    'empty-report': 1,
    'no-sections': 1,
    'no-sentences': 1,
    'too-few-tokens': 1,
    'no-frontal-image': 1,
    'no-loadable-image': 0,
  });
  const byKind = (kind: string) => dataset.problems.filter((p) => p.kind === kind);
  const [metadataRow, splitRow] = byKind('bad-csv-row');
  assert.is(splitRow.path, 'mimic-cxr-2.0.0-split.csv.gz:20');
  assert.match(splitRow.detail, /bad study_id "5x000008"/);
  assert.is(metadataRow.path, 'mimic-cxr-2.0.0-metadata.csv.gz:20');
  assert.match(metadataRow.detail, /subject_id "abc"/);
  assert.is(byKind('missing-image')[0].path, 'files/p11/p11000006/s50000006/d6a.jpg');
  assert.is(byKind('missing-report')[0].path, 'files/p11/p11000007/s50000007.txt');
  assert.is(byKind('empty-report')[0].path, 'files/p10/p10000005/s50000005.txt');
  assert.match(byKind('too-few-tokens')[0].detail, /2 token\(s\), fewer than 3/);
  // Sample contents: FINDINGS then IMPRESSION sentences, tokenised, all frontal images.
  const first = dataset.studies[0];
  assert.equal(first.sentences, [
    'There is a small left effusion.',
    'The heart size is normal.',
    'No pleural effusion or pneumothorax.',
    'No acute cardiopulmonary process.',
  ]);
  assert.is(first.sentenceTokens.length, 4);
  assert.equal(first.imagePaths, ['files/p10/p10000001/s50000001/d1a.jpg', 'files/p10/p10000001/s50000001/d1b.jpg']);
  assert.match(dataset.summary(), /studies: train 4, validate 1, test 1/);
});

test('loading: every good sample loads; truncated images are skipped and listed, never fatal', async () => {
  const { dataset, tokenizer } = await openFixture();
  const loader = new BatchLoader(dataset, dataset.split('train'), tokenizer, {
    batchSize: 1,
    seed: 7,
    train: true,
    norm: { mean: 0.5, std: 0.25 },
    imageSize: 32,
    maxLength: 24,
  });
  const seen: string[] = [];
  for await (const { batch } of loader.epoch(0)) seen.push(...batch.ids);
  assert.equal(seen.sort(), ['p10000001/s50000001', 'p10000002/s50000002', 'p10000003/s50000003']);
  const undecodable = dataset.problems.filter((p) => p.kind === 'undecodable-image').map((p) => p.path);
  assert.ok(undecodable.includes('files/p10/p10000004/s50000004/d4a.jpg'));
  assert.ok(dataset.problems.filter((p) => p.kind === 'undecodable-image').every((p) => /truncated JPEG/.test(p.detail)));
  // Several epochs: the study with one good and one truncated image always loads.
  for (let epoch = 1; epoch < 6; epoch++) {
    const ids: string[] = [];
    for await (const { batch } of loader.epoch(epoch)) ids.push(...batch.ids);
    assert.is(ids.length, 3);
  }
  // Decoding every image finds exactly the two truncated files.
  await dataset.verifyImages();
  assert.equal(
    dataset.problems
      .filter((p) => p.kind === 'undecodable-image')
      .map((p) => p.path)
      .sort(),
    ['files/p10/p10000003/s50000003/d3b.jpg', 'files/p10/p10000004/s50000004/d4a.jpg'],
  );
});

test('loading and resizing on worker threads: the same samples, copies and problems as in-process', async () => {
  const runs = [];
  for (const threads of [0, 2]) {
    const { dataset, tokenizer } = await openFixture();
    const workers = createImageWorkers(threads);
    try {
      const loader = new BatchLoader(dataset, dataset.split('train'), tokenizer, {
        batchSize: 1,
        seed: 7,
        train: true,
        norm: { mean: 0.5, std: 0.25 },
        imageSize: 32,
        maxLength: 24,
        imageWorkers: workers,
      });
      const seen: string[] = [];
      const pixels: number[] = [];
      for (let epoch = 0; epoch < 4; epoch++) {
        for await (const { batch } of loader.epoch(epoch)) {
          seen.push(...batch.ids);
          pixels.push(...batch.inputs.image.data.subarray(0, 40));
        }
      }
      const copy = new MemoryFileSource();
      const copies = await writeResizedImages(dataset, dataset.studies, copy, { maxSide: 8, workers });
      runs.push({ seen, pixels, problems: dataset.problems, copies, files: await Promise.all(copy.paths().map((p) => copy.readFile(p))) });
    } finally {
      await workers.close();
    }
  }
  assert.is(runs[0].seen.length, 12);
  assert.equal([runs[0].copies.written, runs[0].copies.failed], [6, 2]);
  assert.equal(runs[1], runs[0]);
});

test('an image drawn from a study is one of its frontal images, uniformly', async () => {
  const { dataset } = await openFixture();
  const study = dataset.studies[0];
  const counts = new Map<string, number>();
  for (let seed = 0; seed < 400; seed++) {
    const loaded = await dataset.loadImage(study, new Rng(seed));
    counts.set(loaded!.path, (counts.get(loaded!.path) ?? 0) + 1);
  }
  assert.equal([...counts.keys()].sort(), study.imagePaths);
  for (const n of counts.values()) assert.ok(n > 150 && n < 250, `draw count ${n}`);
});

test('plain .csv files work too, and a missing root fails with a clear message', async () => {
  const files = nodeFileSource(root);
  const split = await readCsv(files, 'mimic-cxr-2.0.0-split.csv.gz');
  const plainRoot = mkdtempSync(path.join(tmpdir(), 'lovt-mimic-plain-'));
  try {
    const plain = nodeFileSource(plainRoot);
    const meta = await readCsv(files, 'mimic-cxr-2.0.0-metadata.csv.gz');
    const rows = (t: typeof split) => t.rows.map((r) => t.header.map((h) => r[h]));
    await plain.writeFile('mimic-cxr-2.0.0-split.csv', new TextEncoder().encode(formatCsv(split.header, rows(split))));
    await plain.writeFile('mimic-cxr-2.0.0-metadata.csv', new TextEncoder().encode(formatCsv(meta.header, rows(meta))));
    const tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
    // Reports and images from the original root (reportSource), CSVs plain.
    const ds = await MimicCxrDataset.open(plain, { tokenizer, reportSource: files });
    assert.is(ds.studies.length, 0); // the images are not under plainRoot
    assert.is(ds.problemCounts()['missing-image'], 14); // every frontal image listed
    assert.is(ds.problemCounts()['no-frontal-image'], 12); // every study with a frontal row
  } finally {
    rmSync(plainRoot, { recursive: true, force: true });
  }
  const emptyRoot = mkdtempSync(path.join(tmpdir(), 'lovt-mimic-empty-'));
  try {
    const tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
    let message = '';
    try {
      await MimicCxrDataset.open(nodeFileSource(emptyRoot), { tokenizer });
    } catch (err) {
      message = (err as Error).message;
    }
    assert.is(message, `${emptyRoot}: no such directory, or it is empty (expected a MIMIC-CXR-JPG root with mimic-cxr-2.0.0-split.csv.gz)`);
    await nodeFileSource(emptyRoot).writeFile('README', new Uint8Array(1));
    try {
      await MimicCxrDataset.open(nodeFileSource(emptyRoot), { tokenizer });
    } catch (err) {
      message = (err as Error).message;
    }
    assert.match(message, /neither mimic-cxr-2\.0\.0-split\.csv\.gz nor mimic-cxr-2\.0\.0-split\.csv found/);
  } finally {
    rmSync(emptyRoot, { recursive: true, force: true });
  }
});

/** A source that counts image reads (every read of a .jpg decodes it). */
function countingImageReads(base: FileSource): FileSource & { imageReads: number } {
  return {
    imageReads: 0,
    description: base.description,
    async readFile(p: string) {
      if (p.endsWith('.jpg')) this.imageReads++;
      return base.readFile(p);
    },
    exists: (p: string) => base.exists(p),
    list: (d: string) => base.list(d),
  };
}

const TRUNCATED = ['files/p10/p10000003/s50000003/d3b.jpg', 'files/p10/p10000004/s50000004/d4a.jpg'];

test('a downscaled image copy serves as the image source; undecodable originals are recorded once, never read again', async () => {
  const { files, dataset, tokenizer } = await openFixture();
  const copy = new MemoryFileSource();
  const first = await writeResizedImages(dataset, dataset.studies, copy, { maxSide: 8 });
  assert.equal([first.written, first.kept, first.failed], [6, 0, 2]);
  assert.equal([...first.undecodable.keys()].sort(), TRUNCATED);
  assert.ok([...first.undecodable.values()].every((reason) => /truncated JPEG/.test(reason)));
  assert.ok(await copy.exists(RESIZE_MANIFEST));
  // A later run (a fresh dataset) keeps the copies and skips the bad originals without reading any.
  const originals = countingImageReads(files);
  const reopened = await MimicCxrDataset.open(originals, { tokenizer });
  const again = await writeResizedImages(reopened, reopened.studies, copy, { maxSide: 8 });
  assert.equal([again.written, again.kept, again.failed], [0, 6, 2]);
  assert.equal([...again.undecodable], [...first.undecodable].sort());
  assert.is(originals.imageReads, 0);
  try {
    await writeResizedImages(reopened, reopened.studies, copy, { maxSide: 16 });
    assert.unreachable('a copy of another size');
  } catch (err) {
    assert.match((err as Error).message, /holds images resized to 8 px, not 16: use another directory for this size/);
  }
  // Switched to the copy: the bad originals count as undecodable at once and are skipped when drawn.
  reopened.useImageSource(copy, again.undecodable);
  assert.is(reopened.problemCounts()['undecodable-image'], 2);
  const loaded = await reopened.loadImage(reopened.studies[0]);
  assert.equal([loaded!.image.width, loaded!.image.height], [8, 6]); // 16×12 → longest side 8
  assert.is(await reopened.loadImage(reopened.split('train').find((s) => s.studyId === '50000004')!), null);
  assert.is(originals.imageReads, 0);
  assert.is(reopened.problemCounts()['undecodable-image'], 2);
  // Opened directly on the copy instead, the files it lacks are missing images.
  const small = await MimicCxrDataset.open(files, { tokenizer, imageSource: copy });
  // The truncated-only study now has no image file: it is skipped at open time.
  assert.equal(
    small.split('train').map((s) => s.studyId),
    ['50000001', '50000002', '50000003'],
  );
  // Missing from the copy: d6a (absent anyway), the two truncated files, and the images of the
  // five studies skipped for their reports (only kept studies were copied).
  assert.is(small.problemCounts()['missing-image'], 8);
});

test('training data with an image cache: resized once and reused, statistics cached, corrupt images skipped and counted', async () => {
  const cacheDir = mkdtempSync(path.join(tmpdir(), 'lovt-image-cache-'));
  try {
    const open = async () => {
      const originals = countingImageReads(nodeFileSource(root));
      const data = await openTrainingData(originals, {
        batch: 1,
        seed: 5,
        imageSize: 16,
        maxTokens: 24,
        maxSentences: 4,
        imageCache: nodeFileSource(cacheDir),
        resizeMaxSide: 8,
      });
      const trained: string[] = [];
      for await (const { batch } of data.train.epoch(0)) trained.push(...batch.ids);
      return { originals, data, trained: trained.sort() };
    };
    const first = await open();
    // Every frontal image of the kept studies decoded once (6 copied, 2 truncated); statistics on a sample of the copies.
    assert.is(first.originals.imageReads, 8);
    assert.equal([first.data.resized!.written, first.data.resized!.kept, first.data.resized!.failed], [6, 0, 2]);
    assert.equal([first.data.pixelStats.fromCache, first.data.pixelStats.images], [false, 4]);
    assert.ok(existsSync(path.join(cacheDir, 'resized-8', RESIZE_MANIFEST)));
    assert.ok(existsSync(path.join(cacheDir, 'resized-8', PIXEL_STATS_FILE)));
    assert.not.ok(existsSync(path.join(root, PIXEL_STATS_FILE)), 'nothing is written into the data directory');
    assert.match(first.data.description, /images resized into .*resized-8 \(6 new, 0 reused, 2 unreadable\)/);

    const second = await open();
    assert.is(second.originals.imageReads, 0, 'no original image is read or decoded again');
    assert.equal([second.data.resized!.written, second.data.resized!.kept, second.data.resized!.failed], [0, 6, 2]);
    assert.equal(
      [second.data.pixelStats.fromCache, second.data.pixelStats.mean, second.data.pixelStats.std],
      [true, first.data.pixelStats.mean, first.data.pixelStats.std],
    );
    for (const run of [first, second]) {
      assert.equal(run.trained, ['p10000001/s50000001', 'p10000002/s50000002', 'p10000003/s50000003']);
      assert.equal(
        run.data.dataset.problems
          .filter((p) => p.kind === 'undecodable-image')
          .map((p) => p.path)
          .sort(),
        TRUNCATED,
      );
      const image = await run.data.dataset.loadImage(run.data.dataset.studies[0]);
      assert.equal([image!.image.width, image!.image.height], [8, 6], 'training reads the copies');
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

test("the resize cache is keyed by each original's size and modification time: a changed original is read again", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-resize-key-'));
  try {
    const data = path.join(dir, 'data');
    cpSync(root, data, { recursive: true });
    const files = nodeFileSource(data);
    const tokenizer = await ReportTokenizer.load(files, 'vocab.txt');
    const cache = nodeFileSource(path.join(dir, 'cache'));
    const run = async () => {
      const dataset = await MimicCxrDataset.open(files, { tokenizer });
      const r = await writeResizedImages(dataset, dataset.studies, cache, { maxSide: 8 });
      return { counts: [r.written, r.kept, r.failed], undecodable: [...r.undecodable.keys()].sort() };
    };
    assert.equal(await run(), { counts: [6, 0, 2], undecodable: TRUNCATED });
    assert.equal(await run(), { counts: [0, 6, 2], undecodable: TRUNCATED });
    // Replace one original (other size, brighter) and repair a truncated one; both are read again.
    const changed = imagePath('10000001', '50000001', 'd1a');
    const repaired = TRUNCATED[1];
    const later = new Date(Date.now() + 60_000);
    writeFileSync(path.join(data, changed), encodeJpegGray({ width: 20, height: 10, data: new Float32Array(200).fill(0.9) }, 90));
    writeFileSync(path.join(data, repaired), encodeJpegGray({ width: 16, height: 12, data: new Float32Array(192).fill(0.3) }, 90));
    for (const f of [changed, repaired]) utimesSync(path.join(data, f), later, later);
    assert.equal(await run(), { counts: [2, 5, 1], undecodable: [TRUNCATED[0]] });
    const copy = decodeImage(new Uint8Array(readFileSync(path.join(dir, 'cache', changed))), changed);
    assert.equal([copy.width, copy.height], [8, 4], 'the copy is of the new original');
    assert.ok(Math.abs(imageMoments(copy).mean - 0.9) < 0.02, `mean ${imageMoments(copy).mean}`);
    assert.ok(existsSync(path.join(dir, 'cache', repaired)));
    assert.equal(await run(), { counts: [0, 7, 1], undecodable: [TRUNCATED[0]] });
    // Same size, new modification time: read again too.
    utimesSync(path.join(data, changed), new Date(later.getTime() + 5000), new Date(later.getTime() + 5000));
    assert.equal(await run(), { counts: [1, 6, 1], undecodable: [TRUNCATED[0]] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CSV parsing: quotes, embedded commas/newlines, CRLF, ragged rows, errors with line numbers', () => {
  const t = parseCsv('a,b,c\r\n1,"x, y",3\r\n"multi\nline","he said ""hi""",\n4,5\n\n');
  assert.equal(t.header, ['a', 'b', 'c']);
  assert.equal(t.rows, [
    { a: '1', b: 'x, y', c: '3' },
    { a: 'multi\nline', b: 'he said "hi"', c: '' },
    { a: '4', b: '5', c: '' },
  ]);
  assert.equal(t.lines, [2, 3, 5]);
  assert.equal(t.raggedLines, [5]);
  assert.throws(() => parseCsv('a,b\n"open,2\n', 'f.csv'), /f\.csv: unterminated quoted field starting on line 2/);
  assert.throws(() => parseCsv('a,b\n1x"2,3\n', 'g.csv'), /g\.csv: line 2: quote inside an unquoted field/);
  assert.throws(() => parseCsv('', 'e.csv'), /e\.csv: empty file/);
});

test('subset selection: first fraction (reference) or a seeded random subset in order', () => {
  const items = Array.from({ length: 10 }, (_, i) => i);
  assert.equal(selectSubset(items, 0.3, 'first'), [0, 1, 2]);
  const r = selectSubset(items, 0.3, 'random', new Rng(1));
  assert.is(r.length, 3);
  assert.equal(
    r,
    [...r].sort((a, b) => a - b),
  );
  assert.equal(r, selectSubset(items, 0.3, 'random', new Rng(1)));
  assert.throws(() => selectSubset(items, 0, 'first'), /fraction must be in \(0, 1\]/);
});

test.run();
