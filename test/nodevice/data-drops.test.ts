// Every dropped CSV row, image and study is counted by reason: a small MIMIC-layout data
// set with one of each defect (missing, empty, binary and directory reports; a missing
// image, a directory and a symlink loop in place of images; bad and mismatched study ids; a
// corrupt image), exact counts after opening and after loading, the data summary line the
// run prints, and the run report's table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatCsv, gzipText } from '../../runtime/data/csv.ts';
import { encodeJpegGray } from '../../runtime/data/image.ts';
import { imagePath, MimicCxrDataset, PROBLEM_KINDS, reportPath, type ProblemKind } from '../../runtime/data/mimic.ts';
import { BatchLoader } from '../../runtime/data/loader.ts';
import { buildWordPieceVocab } from '../../runtime/data/synth/vocab.ts';
import { ReportTokenizer } from '../../runtime/data/tokenizer.ts';
import { openTrainingData } from '../../runtime/train/data-setup.ts';
import { writeReport } from '../../runtime/report/report.ts';
import { nodeFileSource } from '../../runtime/platform/node-fs.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';

const REPORT = (finding: string) => `FINDINGS:\n\n ${finding}  The heart size is normal.\n\nIMPRESSION:\n\n No acute cardiopulmonary process.\n`;

type ImageKind = 'good' | 'missing' | 'directory' | 'loop' | 'truncated';
type ReportKind = 'good' | 'missing' | 'empty' | 'binary' | 'directory';
interface Study {
  subject: string;
  study: string;
  split: string;
  images: ImageKind[];
  report: ReportKind;
  metadataStudy?: string;
}

const STUDIES: Study[] = [
  { subject: '10000001', study: '50000001', split: 'train', images: ['good'], report: 'good' },
  { subject: '10000002', study: '50000002', split: 'train', images: ['good'], report: 'good' },
  { subject: '10000003', study: '50000003', split: 'train', images: ['good'], report: 'good' },
  { subject: '10000004', study: '50000004', split: 'validate', images: ['good'], report: 'good' },
  { subject: '10000005', study: '50000005', split: 'validate', images: ['good'], report: 'good' },
  { subject: '11000001', study: '51000001', split: 'train', images: ['good'], report: 'missing' },
  { subject: '11000002', study: '51000002', split: 'train', images: ['good'], report: 'empty' },
  { subject: '11000003', study: '51000003', split: 'train', images: ['good'], report: 'binary' },
  { subject: '11000004', study: '51000004', split: 'train', images: ['good'], report: 'directory' },
  { subject: '12000001', study: '52000001', split: 'train', images: ['missing'], report: 'good' },
  { subject: '12000002', study: '52000002', split: 'train', images: ['directory'], report: 'good' },
  // kept: its other image is good
  { subject: '12000003', study: '52000003', split: 'train', images: ['loop', 'good'], report: 'good' },
  // kept at open; found not to load when drawn
  { subject: '12000004', study: '52000004', split: 'train', images: ['truncated'], report: 'good' },
  // the split CSV and the metadata disagree about the study
  { subject: '13000001', study: '53000001', split: 'train', images: ['good'], report: 'good', metadataStudy: '53000099' },
];

async function writeFixture(root: string): Promise<void> {
  const files = nodeFileSource(root);
  const splitRows: string[][] = [];
  const metaRows: string[][] = [];
  let level = 0.1;
  for (const s of STUDIES) {
    for (const [i, kind] of s.images.entries()) {
      const dicom = `d${s.study}${'abc'[i]}`;
      splitRows.push([dicom, s.study, s.subject, s.split]);
      metaRows.push([dicom, s.subject, s.metadataStudy ?? s.study, 'PA']);
      const file = path.join(root, imagePath(s.subject, s.study, dicom));
      const jpeg = encodeJpegGray({ width: 16, height: 12, data: new Float32Array(192).fill((level += 0.04)) }, 90);
      if (kind === 'good') await files.writeFile(imagePath(s.subject, s.study, dicom), jpeg);
      if (kind === 'truncated') await files.writeFile(imagePath(s.subject, s.study, dicom), jpeg.subarray(0, jpeg.length >> 1));
      if (kind === 'directory') mkdirSync(file, { recursive: true });
      if (kind === 'loop') {
        mkdirSync(path.dirname(file), { recursive: true });
        symlinkSync(file, file);
      }
    }
    const rPath = reportPath(s.subject, s.study);
    if (s.report === 'good') await files.writeFile(rPath, new TextEncoder().encode(REPORT(`Finding ${s.study}.`)));
    if (s.report === 'empty') await files.writeFile(rPath, new TextEncoder().encode(' \n\n '));
    if (s.report === 'binary') await files.writeFile(rPath, Uint8Array.of(0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x80));
    if (s.report === 'directory') mkdirSync(path.join(root, rPath), { recursive: true });
  }
  splitRows.push(['dbad', '5x000008', '14000001', 'train']); // an unparsable study id
  await files.writeFile('mimic-cxr-2.0.0-split.csv.gz', gzipText(formatCsv(['dicom_id', 'study_id', 'subject_id', 'split'], splitRows)));
  await files.writeFile('mimic-cxr-2.0.0-metadata.csv.gz', gzipText(formatCsv(['dicom_id', 'subject_id', 'study_id', 'ViewPosition'], metaRows)));
  await files.writeFile('vocab.txt', new TextEncoder().encode(buildWordPieceVocab(STUDIES.map((s) => REPORT(`Finding ${s.study}.`))).join('\n')));
}

let root = '';

test.before(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'lovt-drops-'));
  await writeFixture(root);
});

test.after(() => {
  rmSync(root, { recursive: true, force: true });
});

function counts(nonZero: Partial<Record<ProblemKind, number>>): Record<ProblemKind, number> {
  return Object.fromEntries(PROBLEM_KINDS.map((k) => [k, nonZero[k] ?? 0])) as Record<ProblemKind, number>;
}

const AT_OPEN = counts({
  'bad-csv-row': 2,
  'missing-image': 1,
  'unreadable-image': 2,
  'missing-report': 1,
  'unreadable-report': 1,
  'undecodable-report': 1,
  'empty-report': 1,
  'no-frontal-image': 2,
});
const OPEN_LINE =
  'dropped: 6 studies (missing-report 1, unreadable-report 1, undecodable-report 1, empty-report 1, no-frontal-image 2), ' +
  '3 images (missing-image 1, unreadable-image 2), 2 CSV rows (bad-csv-row 2)';

test('open: every dropped row, image and study counted by reason, with its path and why', async () => {
  const files = nodeFileSource(root);
  const dataset = await MimicCxrDataset.open(files, { tokenizer: await ReportTokenizer.load(files, 'vocab.txt') });
  assert.equal(
    dataset.split('train').map((s) => s.studyId),
    ['50000001', '50000002', '50000003', '52000003', '52000004'],
  );
  assert.equal(
    dataset.split('validate').map((s) => s.studyId),
    ['50000004', '50000005'],
  );
  assert.equal(dataset.problemCounts(), AT_OPEN);
  assert.is(dataset.dropSummary(), OPEN_LINE);
  const why = (kind: ProblemKind) => dataset.problems.filter((p) => p.kind === kind).map((p) => `${p.path}: ${p.detail}`);
  assert.equal(why('unreadable-image'), [
    'files/p12/p12000002/s52000002/d52000002a.jpg: listed in mimic-cxr-2.0.0-split.csv.gz but it is a directory, not a regular file',
    'files/p12/p12000003/s52000003/d52000003a.jpg: listed in mimic-cxr-2.0.0-split.csv.gz but ELOOP: too many symbolic links encountered',
  ]);
  assert.equal(why('unreadable-report'), ['files/p11/p11000004/s51000004.txt: it is a directory, not a regular file']);
  assert.equal(why('undecodable-report'), ['files/p11/p11000003/s51000003.txt: not valid UTF-8 text (a binary file?)']);
  assert.equal(why('bad-csv-row'), [
    'mimic-cxr-2.0.0-split.csv.gz:16: dicom_id d53000001a: split CSV says subject 13000001 study 53000001, metadata says subject 13000001 study 53000099',
    'mimic-cxr-2.0.0-split.csv.gz:17: bad study_id "5x000008" (dicom dbad)',
  ]);
  assert.equal(dataset.split('train')[3].imagePaths, ['files/p12/p12000003/s52000003/d52000003b.jpg'], 'the loop is left out, the good image kept');

  // Loading finds the corrupt image: the image and its study are counted once, however often drawn.
  const loader = new BatchLoader(
    dataset,
    dataset.split('train'),
    { clsId: 2, sepId: 3, padId: 0 },
    { batchSize: 1, seed: 3, train: true, norm: { mean: 0.5, std: 0.25 }, imageSize: 16, maxLength: 24 },
  );
  for (let epoch = 0; epoch < 3; epoch++) {
    const ids: string[] = [];
    for await (const { batch } of loader.epoch(epoch)) ids.push(...batch.ids);
    assert.is(ids.length, 4);
  }
  assert.equal(dataset.problemCounts(), { ...AT_OPEN, 'undecodable-image': 1, 'no-loadable-image': 1 });
  assert.is(
    dataset.dropSummary(),
    'dropped: 7 studies (missing-report 1, unreadable-report 1, undecodable-report 1, empty-report 1, no-frontal-image 2, no-loadable-image 1), ' +
      '4 images (missing-image 1, unreadable-image 2, undecodable-image 1), 2 CSV rows (bad-csv-row 2)',
  );
});

test('the data summary a run prints ends with the drops; the report lists every reason', async () => {
  const files = nodeFileSource(root);
  const data = await openTrainingData(files, { batch: 2, seed: 1, imageSize: 16, maxTokens: 24, maxSentences: 4 });
  const runDir = mkdtempSync(path.join(tmpdir(), 'lovt-drops-run-'));
  try {
    assert.ok(data.description.endsWith(`; ${OPEN_LINE}`), data.description);
    for await (const _ of data.train.epoch(0));
    const text = await writeReport(new NodeStorage(runDir), {
      summary: {
        model: 'M',
        modelPath: 'm.lovt',
        device: 'test',
        data: data.description,
        seed: 1,
        steps: 2,
        epochs: 1,
        samplesSeen: 4,
        wallSeconds: 1,
        stopReason: 'step budget reached',
      },
      lossTerms: [],
      records: [],
      heatmaps: [],
      dropped: data.dataset.dropReport(),
    });
    const section = text.slice(text.indexOf('## Dropped data'), text.indexOf('## Loss curves')).trim().split('\n');
    assert.equal(section.slice(0, 5), [
      '## Dropped data',
      '',
      '13 CSV rows, images or studies were dropped; the training used the rest.',
      '',
      '| reason | drops a | count | meaning | first paths |',
    ]);
    const rows = section.slice(6).map((l) => l.split(' | ').slice(0, 3).join(' ').replace(/^\| /, ''));
    assert.equal(rows, [
      'bad-csv-row CSV row 2',
      'missing-image image 1',
      'unreadable-image image 2',
      'undecodable-image image 1',
      'missing-report study 1',
      'unreadable-report study 1',
      'undecodable-report study 1',
      'empty-report study 1',
      'no-sections study 0',
      'no-sentences study 0',
      'too-few-tokens study 0',
      'no-frontal-image study 2',
      'no-loadable-image study 1',
    ]);
    assert.ok(
      section.some((l) => l.startsWith('| no-loadable-image | study | 1 |') && l.endsWith('| `files/p12/p12000004/s52000004` |')),
      'paths listed',
    );
  } finally {
    await data.close();
    rmSync(runDir, { recursive: true, force: true });
  }
});

test('an image replaced by a directory after opening is counted as unreadable when drawn, not as missing', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-drops-late-'));
  try {
    cpSync(root, dir, { recursive: true });
    const files = nodeFileSource(dir);
    const dataset = await MimicCxrDataset.open(files, { tokenizer: await ReportTokenizer.load(files, 'vocab.txt') });
    const study = dataset.split('train')[0];
    rmSync(path.join(dir, study.imagePaths[0]));
    mkdirSync(path.join(dir, study.imagePaths[0]));
    assert.is(await dataset.loadImage(study), null);
    assert.equal(dataset.problemCounts(), { ...AT_OPEN, 'unreadable-image': 3, 'no-loadable-image': 1 });
    assert.match(dataset.problems.at(-2)!.detail, /it is a directory, not a regular file$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
