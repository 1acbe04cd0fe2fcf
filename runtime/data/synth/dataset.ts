// SynthCXR: a synthetic chest X-ray + report dataset written in the MIMIC-CXR-JPG layout, so
// the real reader (mimic.ts) reads it and the default run needs no download or credentials.
//
// Written under the output root:
//   files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg   frontal (PA/AP) and lateral (LATERAL/LL) images
//   files/pXX/pSUBJECT/sSTUDY.txt              the report (FINDINGS + IMPRESSION, MIMIC style)
//   mimic-cxr-2.0.0-split.csv.gz              dicom_id, study_id, subject_id, split
//   mimic-cxr-2.0.0-metadata.csv.gz           dicom_id, subject_id, study_id, ViewPosition, …
//   masks/pXX/pSUBJECT/sSTUDY/<dicom_id>_<k>_<type>.png   per frontal image and finding k:
//                                              8-bit mask, 255 where the finding is drawn
//   synth-annotations.json                    everything below, per study and per image
//   synth-annotations.csv                     one row per (frontal image, finding): the box
//   vocab.txt                                  WordPiece vocabulary of the reports
//   README.md                                  this description
// Boxes are [x, y, width, height] in pixels of the stored image (x right, y down), the tight
// bounds of the mask. Finding sides are the patient's (PA convention: patient right = image
// left). Everything is a deterministic function of (studies, seed, imageSize): the same
// arguments give byte-identical files.
import { formatCsv, gzipText } from '../csv.ts';
import { joinPath, type WritableFileSource } from '../fs.ts';
import { encodeJpegGray, encodePngGray8 } from '../image.ts';
import { imagePath, METADATA_CSV, reportPath, SPLIT_CSV, studyDir, type Split } from '../mimic.ts';
import { deriveSeed, Rng } from '../random.ts';
import { reportSentences } from '../report.ts';
import {
  drawAnatomy,
  drawFindingShape,
  drawPlacement,
  maskBox,
  renderFrontal,
  renderLateral,
  type Finding,
  type FindingType,
  type Side,
  type Zone,
} from './phantom.ts';
import { FOLLOW_UP_SENTENCES, writeReport } from './reports.ts';
import { buildWordPieceVocab } from './vocab.ts';

export interface SynthOptions {
  studies: number;
  seed: number;
  /** Image side in pixels (default 256). */
  imageSize?: number;
  /** Fractions of subjects in train / validate / test (default 0.8 / 0.1 / 0.1). */
  splitFractions?: [number, number, number];
  /** JPEG quality (default 92). */
  jpegQuality?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SynthSummary {
  studies: number;
  subjects: number;
  images: { frontal: number; lateral: number };
  splits: Record<Split, number>;
  findings: Record<FindingType, number>;
  normalStudies: number;
  vocabSize: number;
  files: number;
}

export const SYNTH_ANNOTATIONS_JSON = 'synth-annotations.json';
export const SYNTH_ANNOTATIONS_CSV = 'synth-annotations.csv';
export const SYNTH_VOCAB = 'vocab.txt';

export const FINDING_TYPES: readonly FindingType[] = ['consolidation', 'nodule', 'effusion', 'pneumothorax', 'cardiomegaly', 'line', 'device'];

/** Human-readable label of a finding, e.g. "left lower lung consolidation". */
export function findingLabel(f: Finding): string {
  const zone = f.zone === 'middle' ? 'mid' : f.zone;
  switch (f.type) {
    case 'consolidation':
      return `${f.side} ${zone} lung consolidation`;
    case 'nodule':
      return `${f.side} ${zone} lung nodule`;
    case 'effusion':
      return `${f.side} pleural effusion`;
    case 'pneumothorax':
      return `${f.side} pneumothorax`;
    case 'cardiomegaly':
      return 'cardiomegaly';
    case 'line':
      return f.lineKind === 'ett' ? 'endotracheal tube' : 'right internal jugular catheter';
    case 'device':
      return `radiopaque device, ${f.side} ${zone} hemithorax`;
  }
}

const SIDES: Side[] = ['right', 'left'];
const ZONES: Zone[] = ['upper', 'middle', 'lower'];

/** Draws the findings of one study (none for ~30 % of studies). */
function drawFindings(rng: Rng): Omit<Finding, 'shape'>[] {
  if (rng.bernoulli(0.3)) return [];
  const count = rng.bernoulli(0.55) ? 1 : rng.bernoulli(0.6) ? 2 : 3;
  const out: Omit<Finding, 'shape'>[] = [];
  const weights: [FindingType, number][] = [
    ['consolidation', 3],
    ['effusion', 2.5],
    ['nodule', 1.5],
    ['cardiomegaly', 2],
    ['pneumothorax', 1.5],
    ['line', 1.5],
    ['device', 1],
  ];
  for (let attempt = 0; out.length < count && attempt < 20; attempt++) {
    const total = weights.reduce((s, [, w]) => s + w, 0);
    let r = rng.uniform(0, total);
    let type: FindingType = weights[0][0];
    for (const [t, w] of weights) {
      if ((r -= w) < 0) {
        type = t;
        break;
      }
    }
    const side = rng.pick(SIDES);
    const f: Omit<Finding, 'shape'> = { type };
    if (type === 'consolidation' || type === 'nodule') {
      f.side = side;
      f.zone = rng.pick(ZONES);
    }
    if (type === 'nodule') f.sizeCm = Math.round(rng.uniform(0.8, 2.5) * 10) / 10;
    if (type === 'effusion') {
      f.side = side;
      f.severity = rng.pick(['small', 'moderate', 'large'] as const);
    }
    if (type === 'pneumothorax') {
      f.side = side;
      f.severity = rng.pick(['small', 'moderate'] as const);
    }
    if (type === 'line') f.lineKind = rng.pick(['cvc', 'ett'] as const);
    if (type === 'device') {
      f.side = side;
      f.zone = rng.pick(['upper', 'middle'] as Zone[]);
    }
    // One finding per type and side; a pneumothorax and an effusion do not share a side.
    const clash = out.some(
      (o) =>
        (o.type === type && (o.side === f.side || type === 'cardiomegaly' || type === 'line')) ||
        (o.side === f.side && ((o.type === 'effusion' && type === 'pneumothorax') || (o.type === 'pneumothorax' && type === 'effusion'))),
    );
    if (!clash) out.push(f);
  }
  return out;
}

function hexId(rng: Rng): string {
  return Array.from({ length: 5 }, () => rng.nextU32().toString(16).padStart(8, '0')).join('-');
}

interface ImageAnnotation {
  dicom_id: string;
  view: string;
  path: string;
  width: number;
  height: number;
  findings: { finding: number; bbox: [number, number, number, number] | null; area: number; mask: string }[];
}

interface StudyAnnotation {
  subject_id: string;
  study_id: string;
  split: Split;
  report: string;
  findings: { index: number; type: FindingType; label: string; side?: Side; zone?: Zone; severity?: string; size_cm?: number; sentences: number[] }[];
  /** The FINDINGS + IMPRESSION sentences as the reader splits them. */
  sentences: string[];
  images: ImageAnnotation[];
}

/** Generates the dataset into `files` (see the file comment for the layout). */
export async function generateSynthCXR(files: WritableFileSource, opts: SynthOptions): Promise<SynthSummary> {
  const { studies: studyCount, seed } = opts;
  if (!(Number.isInteger(studyCount) && studyCount > 0)) throw new Error(`SynthCXR: studies must be a positive integer, got ${studyCount}`);
  if (!Number.isFinite(seed)) throw new Error(`SynthCXR: seed must be a number, got ${seed}`);
  const size = opts.imageSize ?? 256;
  if (!(Number.isInteger(size) && size >= 32 && size <= 4096)) throw new Error(`SynthCXR: imageSize must be an integer in [32, 4096], got ${size}`);
  const fractions = opts.splitFractions ?? [0.8, 0.1, 0.1];
  const quality = opts.jpegQuality ?? 92;
  const top = new Rng(deriveSeed(seed, 0x5c));

  // Subjects with 1–3 studies each; ids are 8 digits, spread over the pXX folders.
  const subjects: { id: string; studies: string[]; split: Split }[] = [];
  const usedSubjects = new Set<string>();
  const usedStudies = new Set<string>();
  let remaining = studyCount;
  while (remaining > 0) {
    let id: string;
    do id = String(top.intBetween(10000000, 19999999));
    while (usedSubjects.has(id));
    usedSubjects.add(id);
    const n = Math.min(remaining, top.pick([1, 1, 1, 2, 2, 3]));
    const studyIds: string[] = [];
    for (let k = 0; k < n; k++) {
      let sid: string;
      do sid = String(top.intBetween(50000000, 59999999));
      while (usedStudies.has(sid));
      usedStudies.add(sid);
      studyIds.push(sid);
    }
    subjects.push({ id, studies: studyIds, split: 'train' });
    remaining -= n;
  }
  // Patient-level split: a shuffled subject order cut by the fractions; with ≥ 3 subjects
  // every split gets at least one.
  const order = top.shuffle(subjects.map((_, i) => i));
  const nVal = subjects.length >= 3 ? Math.max(1, Math.round(fractions[1] * subjects.length)) : 0;
  const nTest = subjects.length >= 3 ? Math.max(1, Math.round(fractions[2] * subjects.length)) : 0;
  order.forEach((s, k) => {
    subjects[s].split = k < nVal ? 'validate' : k < nVal + nTest ? 'test' : 'train';
  });

  const splitRows: (string | number)[][] = [];
  const metadataRows: (string | number)[][] = [];
  const csvRows: (string | number)[][] = [];
  const annotations: StudyAnnotation[] = [];
  const reports: string[] = [];
  const summary: SynthSummary = {
    studies: 0,
    subjects: subjects.length,
    images: { frontal: 0, lateral: 0 },
    splits: { train: 0, validate: 0, test: 0 },
    findings: Object.fromEntries(FINDING_TYPES.map((t) => [t, 0])) as Record<FindingType, number>,
    normalStudies: 0,
    vocabSize: 0,
    files: 0,
  };
  const write = async (path: string, data: Uint8Array) => {
    await files.writeFile(path, data);
    summary.files++;
  };

  let studyIndex = 0;
  for (const subject of subjects) {
    const sex = top.bernoulli(0.5) ? 'M' : 'F';
    const age = top.intBetween(25, 90);
    for (const studyId of subject.studies) {
      const rng = new Rng(deriveSeed(seed, 0x57, studyIndex));
      const anatomy = drawAnatomy(rng);
      const findings: Finding[] = drawFindings(rng).map((f) => ({ ...f, shape: drawFindingShape(anatomy, f, rng) }));
      const inpatient = findings.some((f) => f.type === 'line') || rng.bernoulli(0.35);
      const frontalViews: ('PA' | 'AP')[] = inpatient ? (rng.bernoulli(0.25) ? ['AP', 'AP'] : ['AP']) : rng.bernoulli(0.2) ? ['PA', 'PA'] : ['PA'];
      const lateralViews = inpatient ? (rng.bernoulli(0.15) ? ['LL'] : []) : rng.bernoulli(0.85) ? ['LATERAL'] : [];
      const viewsText = frontalViews[0] === 'PA' ? (lateralViews.length > 0 ? 'PA AND LAT' : 'PA') : 'PORTABLE AP';
      const report = writeReport(findings, rng, { age, sex, views: viewsText });
      const sentences = reportSentences(report.text).sentences;
      const sources = [...report.findingsSentences, ...report.impressionSentences];
      // A reader sentence names the findings of the written sentence it comes from (a written
      // sentence may split in two: "… lung nodule. Recommend CT …": the follow-up names none).
      const sentenceFindings = sentences.map((s) => {
        if (FOLLOW_UP_SENTENCES.includes(s)) return [];
        const src = sources.find((r) => r.text.replace(/\s+/g, ' ').includes(s));
        return src ? src.findings : [];
      });
      const studyAnnotation: StudyAnnotation = {
        subject_id: subject.id,
        study_id: studyId,
        split: subject.split,
        report: reportPath(subject.id, studyId),
        findings: findings.map((f, index) => ({
          index,
          type: f.type,
          label: findingLabel(f),
          side: f.side,
          zone: f.zone,
          severity: f.severity,
          size_cm: f.sizeCm,
          sentences: sentenceFindings.flatMap((list, si) => (list.includes(index) ? [si] : [])),
        })),
        sentences,
        images: [],
      };
      await write(reportPath(subject.id, studyId), new TextEncoder().encode(report.text));
      reports.push(report.text);
      const date = 21100101 + top.intBetween(0, 80) * 10000 + top.intBetween(0, 11) * 100 + top.intBetween(0, 27);
      const time = `${top.intBetween(0, 23)}${String(top.intBetween(0, 59)).padStart(2, '0')}${String(top.intBetween(0, 59)).padStart(2, '0')}.${top.intBetween(0, 999)}`;
      const views = [...frontalViews, ...lateralViews];
      for (const view of views) {
        const dicomId = hexId(rng);
        const path = imagePath(subject.id, studyId, dicomId);
        const placement = drawPlacement(rng, view === 'AP' ? 'AP' : 'PA');
        splitRows.push([dicomId, studyId, subject.id, subject.split]);
        metadataRows.push([
          dicomId,
          subject.id,
          studyId,
          `CHEST (${viewsText})`,
          view,
          size,
          size,
          date,
          time,
          view === 'AP' ? 'CHEST (PORTABLE AP)' : 'CHEST (PA AND LAT)',
          view === 'PA' ? 'postero-anterior' : view === 'AP' ? 'antero-posterior' : view === 'LL' ? 'left lateral' : 'lateral',
          view === 'AP' ? 'Recumbent' : 'Erect',
        ]);
        if (view === 'LATERAL' || view === 'LL') {
          await write(path, encodeJpegGray(renderLateral(anatomy, placement, size), quality));
          summary.images.lateral++;
          continue;
        }
        const rendered = renderFrontal(anatomy, findings, placement, size);
        await write(path, encodeJpegGray(rendered.image, quality));
        summary.images.frontal++;
        const imageAnnotation: ImageAnnotation = { dicom_id: dicomId, view, path, width: size, height: size, findings: [] };
        for (let k = 0; k < findings.length; k++) {
          const maskPath = joinPath('masks', studyDir(subject.id, studyId).slice('files/'.length), `${dicomId}_${k}_${findings[k].type}.png`);
          await write(maskPath, encodePngGray8(size, size, rendered.masks[k]));
          const bbox = maskBox(rendered.masks[k], size, size);
          const area = rendered.masks[k].reduce((s, v) => s + (v > 0 ? 1 : 0), 0);
          imageAnnotation.findings.push({ finding: k, bbox, area, mask: maskPath });
          if (bbox) {
            const f = findings[k];
            csvRows.push([dicomId, subject.id, studyId, subject.split, view, f.type, findingLabel(f), f.side ?? '', f.zone ?? '', ...bbox, maskPath]);
          }
        }
        studyAnnotation.images.push(imageAnnotation);
      }
      annotations.push(studyAnnotation);
      summary.studies++;
      summary.splits[subject.split]++;
      if (findings.length === 0) summary.normalStudies++;
      for (const f of findings) summary.findings[f.type]++;
      studyIndex++;
      opts.onProgress?.(studyIndex, studyCount);
    }
  }

  await write(`${SPLIT_CSV}.gz`, gzipText(formatCsv(['dicom_id', 'study_id', 'subject_id', 'split'], splitRows)));
  await write(
    `${METADATA_CSV}.gz`,
    gzipText(
      formatCsv(
        [
          'dicom_id',
          'subject_id',
          'study_id',
          'PerformedProcedureStepDescription',
          'ViewPosition',
          'Rows',
          'Columns',
          'StudyDate',
          'StudyTime',
          'ProcedureCodeSequence_CodeMeaning',
          'ViewCodeSequence_CodeMeaning',
          'PatientOrientationCodeSequence_CodeMeaning',
        ],
        metadataRows,
      ),
    ),
  );
  await write(
    SYNTH_ANNOTATIONS_CSV,
    new TextEncoder().encode(
      formatCsv(['dicom_id', 'subject_id', 'study_id', 'split', 'view', 'finding', 'label', 'side', 'zone', 'x', 'y', 'width', 'height', 'mask_path'], csvRows),
    ),
  );
  await write(
    SYNTH_ANNOTATIONS_JSON,
    new TextEncoder().encode(
      JSON.stringify(
        {
          format: 'SynthCXR annotations 1',
          seed,
          image_size: size,
          coordinates: 'bbox = [x, y, width, height] in pixels of the stored image, x right, y down; tight bounds of the mask (255 = finding)',
          sides: "the patient's side (PA convention: patient right = image left)",
          studies: annotations,
        },
        null,
        1,
      ) + '\n',
    ),
  );
  const vocab = buildWordPieceVocab(reports);
  summary.vocabSize = vocab.length;
  await write(SYNTH_VOCAB, new TextEncoder().encode(vocab.join('\n') + '\n'));
  await write('README.md', new TextEncoder().encode(readmeText(summary, seed, size)));
  return summary;
}

function readmeText(summary: SynthSummary, seed: number, size: number): string {
  return `# SynthCXR (seed ${seed}, ${size}×${size})

A synthetic chest X-ray dataset written by lovt in the MIMIC-CXR-JPG 2.0.0 layout, so that the
MIMIC-CXR reader loads it unchanged. Not medical data.

- ${summary.studies} studies of ${summary.subjects} subjects; ${summary.images.frontal} frontal (PA/AP) and ${summary.images.lateral} lateral images.
- Splits (by subject): train ${summary.splits.train}, validate ${summary.splits.validate}, test ${summary.splits.test} studies.
- Findings: ${Object.entries(summary.findings)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}; ${summary.normalStudies} normal studies.

Files:
- \`files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg\`: images; \`files/pXX/pSUBJECT/sSTUDY.txt\`: reports.
- \`${SPLIT_CSV}.gz\`, \`${METADATA_CSV}.gz\`: as in MIMIC-CXR-JPG (ViewPosition PA, AP, LATERAL, LL).
- \`masks/pXX/pSUBJECT/sSTUDY/<dicom_id>_<k>_<type>.png\`: 8-bit mask of finding k in that frontal image (255 = finding).
- \`${SYNTH_ANNOTATIONS_CSV}\`: one row per frontal image and finding: dicom_id, subject_id, study_id, split,
  view, finding type, label, side, zone, box x, y, width, height (pixels, tight bounds of the mask), mask_path.
- \`${SYNTH_ANNOTATIONS_JSON}\`: per study the findings (type, label, side, zone, severity, the indices of the
  report sentences naming it), the report sentences as the reader splits them, and per image the boxes and masks.
- \`${SYNTH_VOCAB}\`: an uncased WordPiece vocabulary built from the reports ([PAD]=0, [UNK], [CLS], [SEP], [MASK]).

Sides are the patient's (PA convention: the patient's right is on the image left).
`;
}
