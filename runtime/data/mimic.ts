// MIMIC-CXR-JPG 2.0.0 reader (method §1). Users bring their own credentialed copy; SynthCXR
// writes the same layout. Layout under the root:
//   mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split
//   mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, …
//   files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg   (XX = first two digits of the subject id)
//   files/pXX/pNNNNNNNN/sNNNNNNNN.txt              the report (from MIMIC-CXR 2.0.0; it may live
//                                                  under another root: `reportSource`)
// One sample per study = its report + all its frontal (PA/AP) images; an image is drawn
// uniformly each time the sample is loaded. Studies are skipped when the report has neither
// FINDINGS nor IMPRESSION, has no sentences or fewer than 3 tokens, or no frontal image file
// exists. Corrupt inputs are skipped, never fatal, and every one is counted by reason
// (PROBLEM_INFO) and listed: CSV rows with bad or mismatched ids, missing or unreadable
// (directory, symlink loop) image files, missing, unreadable, binary or empty reports, and
// (found when loading) truncated or undecodable images and studies none of whose images loads.
import { readCsv, requireColumns, type CsvTable } from './csv.ts';
import { fileStatus, readText, type FileSource, type WritableFileSource } from './fs.ts';
import type { GrayImage } from './image.ts';
import {
  drawImage,
  forEachInOrder,
  IN_PROCESS,
  jobsInFlight,
  type ImageFailure,
  type ImageJobResults,
  type ImageWorkers,
  type SampleTransform,
} from './image-jobs.ts';
import { reportSentences, type SentenceOptions } from './report.ts';
import type { Rng } from './random.ts';
import type { ReportTokenizer } from './tokenizer.ts';
import { clip, quote } from '../../compiler/echo.ts';

export type Split = 'train' | 'validate' | 'test';
export const SPLITS: readonly Split[] = ['train', 'validate', 'test'];

/** What a problem drops: a row of a CSV, one image of a study, or a whole study. */
export type DropUnit = 'CSV row' | 'image' | 'study';

/** Every reason a CSV row, an image or a study is dropped, with what it drops and what it means. */
export const PROBLEM_INFO = {
  'bad-csv-row': { unit: 'CSV row', what: 'unparsable, duplicate or mismatched ids, or an unknown split' },
  'missing-image': { unit: 'image', what: 'the listed image file does not exist' },
  'unreadable-image': { unit: 'image', what: 'not a readable file (a directory, a symlink loop, ...)' },
  'undecodable-image': { unit: 'image', what: 'truncated or corrupt image (found when decoding)' },
  'missing-report': { unit: 'study', what: 'the report file does not exist' },
  'unreadable-report': { unit: 'study', what: 'the report is not a readable file (a directory, a symlink loop, ...)' },
  'undecodable-report': { unit: 'study', what: 'the report is binary, not UTF-8 text' },
  'empty-report': { unit: 'study', what: 'the report holds only whitespace' },
  'no-sections': { unit: 'study', what: 'the report has neither FINDINGS nor IMPRESSION' },
  'no-sentences': { unit: 'study', what: 'FINDINGS/IMPRESSION hold no sentence' },
  'too-few-tokens': { unit: 'study', what: 'fewer WordPiece tokens than the minimum' },
  'no-frontal-image': { unit: 'study', what: 'no PA/AP image file left for the study' },
  'no-loadable-image': { unit: 'study', what: 'none of its images loads (found when loading; skipped each time it is drawn)' },
} as const satisfies Record<string, { unit: DropUnit; what: string }>;

export type ProblemKind = keyof typeof PROBLEM_INFO;

export const PROBLEM_KINDS = Object.keys(PROBLEM_INFO) as ProblemKind[];

/** Dropped data by reason, for the run's report. */
export interface DropReport {
  reasons: { kind: ProblemKind; unit: DropUnit; what: string; count: number; examples: string[] }[];
  /** Images left out for not being frontal, by ViewPosition ('' for empty). */
  droppedViews: Record<string, number>;
}

export interface DataProblem {
  kind: ProblemKind;
  /** The file concerned (CSV path with line, image or report path). */
  path: string;
  detail: string;
}

export interface Study {
  /** Index in the dataset's study list (stable; used to seed per-sample randomness). */
  index: number;
  subjectId: string;
  studyId: string;
  split: Split;
  reportPath: string;
  /** Frontal images, sorted by path. */
  imagePaths: string[];
  /** FINDINGS then IMPRESSION sentences (cleaned). */
  sentences: string[];
  /** WordPiece ids of each sentence, without special tokens; same length as `sentences`. */
  sentenceTokens: Int32Array[];
}

export interface MimicOpenOptions {
  tokenizer: ReportTokenizer;
  /** Where the reports live (default: the dataset root). */
  reportSource?: FileSource;
  /**
   * Where the images live (default: the dataset root), e.g. a downscaled copy written by
   * writeResizedImages: full-resolution MIMIC JPEGs take ~0.7 s each to decode.
   */
  imageSource?: FileSource;
  /** Split/metadata CSV paths; default: mimic-cxr-2.0.0-{split,metadata}.csv.gz or .csv. */
  splitCsv?: string;
  metadataCsv?: string;
  /** Accepted ViewPosition values (default PA, AP). */
  views?: string[];
  /** Minimum WordPiece tokens per report (default 3). */
  minTokens?: number;
  sentenceOptions?: SentenceOptions;
  /** Parallel file checks / reads while opening (default 32). */
  concurrency?: number;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export const SPLIT_CSV = 'mimic-cxr-2.0.0-split.csv';
export const METADATA_CSV = 'mimic-cxr-2.0.0-metadata.csv';

const ID_PATTERN = /^\d{1,12}$/;
const DICOM_ID_PATTERN = /^[0-9A-Za-z][0-9A-Za-z._-]*$/;

/** Directory of a study: files/pXX/pSUBJECT/sSTUDY. */
export function studyDir(subjectId: string, studyId: string): string {
  return `files/p${subjectId.slice(0, 2)}/p${subjectId}/s${studyId}`;
}

export function imagePath(subjectId: string, studyId: string, dicomId: string): string {
  return `${studyDir(subjectId, studyId)}/${dicomId}.jpg`;
}

export function reportPath(subjectId: string, studyId: string): string {
  return `${studyDir(subjectId, studyId)}.txt`;
}

async function findCsv(source: FileSource, explicit: string | undefined, base: string): Promise<string> {
  if (explicit) return explicit;
  for (const candidate of [`${base}.gz`, base]) if (await source.exists(candidate)) return candidate;
  if ((await source.list('')).length === 0)
    throw new Error(`${source.description}: no such directory, or it is empty (expected a MIMIC-CXR-JPG root with ${base}.gz)`);
  throw new Error(`${source.description}: neither ${base}.gz nor ${base} found (is this a MIMIC-CXR-JPG root?)`);
}

/** Checks that `source` is a MIMIC-CXR-JPG root (both CSVs present), before anything (a cache) is created for it. */
export async function checkMimicRoot(source: FileSource): Promise<void> {
  await findCsv(source, undefined, SPLIT_CSV);
  await findCsv(source, undefined, METADATA_CSV);
}

/** Runs `fn` over items with bounded concurrency, preserving order of results. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>, progress?: (done: number) => void): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      results[i] = await fn(items[i], i);
      progress?.(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** A report's text, or why there is none: missing, not a readable file, or not text. */
async function readReport(source: FileSource, path: string): Promise<{ text: string } | { problem: ProblemKind; detail: string }> {
  const st = await fileStatus(source, path);
  if (st.kind === 'missing') return { problem: 'missing-report', detail: 'report file does not exist' };
  if (st.kind === 'unreadable') return { problem: 'unreadable-report', detail: st.detail };
  let bytes: Uint8Array;
  try {
    bytes = await source.readFile(path);
  } catch (err) {
    return { problem: 'unreadable-report', detail: (err as Error).message };
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return { problem: 'undecodable-report', detail: 'not valid UTF-8 text (a binary file?)' };
  }
  const nul = text.indexOf('\0');
  if (nul >= 0) return { problem: 'undecodable-report', detail: `a NUL byte at offset ${nul} (a binary file?)` };
  return { text };
}

interface ImageRow {
  dicomId: string;
  subjectId: string;
  studyId: string;
  split: Split;
  line: number;
}

export class MimicCxrDataset {
  /** The images the studies were checked against at open time. */
  readonly originalSource: FileSource;
  readonly reportSource: FileSource;
  /** Kept studies in CSV order, all splits. */
  readonly studies: Study[];
  /** Every problem found, in the order found. */
  readonly problems: DataProblem[] = [];
  /** Images dropped for not being frontal, by ViewPosition ('' for empty). */
  readonly droppedViews: Record<string, number> = {};
  private readonly reportedImages = new Set<string>();
  private readonly unloadableStudies = new Set<number>();
  private imageSource: FileSource;
  /** Images known not to decode (path → reason): skipped without being read. */
  private knownUndecodable: ReadonlyMap<string, string> = new Map();
  /** Settles when the failures of every sample image requested so far are recorded. */
  private sampleFailuresRecorded: Promise<void> = Promise.resolve();

  private constructor(source: FileSource, reportSource: FileSource, studies: Study[]) {
    this.originalSource = source;
    this.imageSource = source;
    this.reportSource = reportSource;
    this.studies = studies;
  }

  /** Images are read from here. */
  get source(): FileSource {
    return this.imageSource;
  }

  /**
   * Reads images from `source` from now on — a copy of the originals under the same paths,
   * e.g. the downscaled one writeResizedImages writes. `undecodable` lists originals that
   * do not decode (so the copy lacks them): they are recorded as problems now and skipped
   * when drawn, without being read.
   */
  useImageSource(source: FileSource, undecodable: ReadonlyMap<string, string> = new Map()): void {
    this.imageSource = source;
    this.knownUndecodable = undecodable;
    for (const [path, reason] of undecodable) this.recordImageProblem('undecodable-image', path, reason);
  }

  /** Reads the CSVs, reports and file listing; tokenises every kept report. */
  static async open(source: FileSource, opts: MimicOpenOptions): Promise<MimicCxrDataset> {
    const reportSource = opts.reportSource ?? source;
    const imageSource = opts.imageSource ?? source;
    const views = new Set((opts.views ?? ['PA', 'AP']).map((v) => v.toUpperCase()));
    const minTokens = opts.minTokens ?? 3;
    const concurrency = opts.concurrency ?? 32;
    const splitPath = await findCsv(source, opts.splitCsv, SPLIT_CSV);
    const metadataPath = await findCsv(source, opts.metadataCsv, METADATA_CSV);
    const dataset = new MimicCxrDataset(imageSource, reportSource, []);
    const problems = dataset.problems;

    const splitTable = await readCsv(source, splitPath);
    requireColumns(splitTable, ['dicom_id', 'study_id', 'subject_id', 'split'], splitPath);
    const metadataTable = await readCsv(source, metadataPath);
    requireColumns(metadataTable, ['dicom_id', 'subject_id', 'study_id', 'ViewPosition'], metadataPath);

    const metadata = dataset.indexMetadata(metadataTable, metadataPath);
    // Frontal image rows grouped by study, in split-CSV order.
    const studyRows = new Map<string, ImageRow[]>();
    const seenDicom = new Set<string>();
    splitTable.rows.forEach((row, r) => {
      const line = splitTable.lines[r];
      const where = `${splitPath}:${line}`;
      const dicomId = row.dicom_id.trim();
      const studyId = row.study_id.trim();
      const subjectId = row.subject_id.trim();
      const split = row.split.trim() as Split;
      const bad = (detail: string) => problems.push({ kind: 'bad-csv-row', path: where, detail });
      if (!DICOM_ID_PATTERN.test(dicomId)) return bad(`bad dicom_id ${quote(row.dicom_id)}`);
      if (!ID_PATTERN.test(studyId)) return bad(`bad study_id ${quote(row.study_id)} (dicom ${clip(dicomId)})`);
      if (!ID_PATTERN.test(subjectId)) return bad(`bad subject_id ${quote(row.subject_id)} (dicom ${clip(dicomId)})`);
      if (!SPLITS.includes(split)) return bad(`unknown split ${quote(row.split)} (dicom ${clip(dicomId)})`);
      if (seenDicom.has(dicomId)) return bad(`dicom_id ${dicomId} listed twice`);
      seenDicom.add(dicomId);
      const meta = metadata.get(dicomId);
      if (!meta) {
        // Already counted once as a bad metadata row: one corrupt row is one problem.
        if (metadata.badDicomIds.has(dicomId)) return;
        return bad(`dicom_id ${dicomId} is not in ${metadataPath}`);
      }
      if (meta.studyId !== studyId || meta.subjectId !== subjectId) {
        return bad(`dicom_id ${dicomId}: split CSV says subject ${subjectId} study ${studyId}, metadata says subject ${meta.subjectId} study ${meta.studyId}`);
      }
      if (!views.has(meta.view.toUpperCase())) {
        dataset.droppedViews[meta.view] = (dataset.droppedViews[meta.view] ?? 0) + 1;
        return;
      }
      const key = `${subjectId}/${studyId}`;
      let rows = studyRows.get(key);
      if (!rows) studyRows.set(key, (rows = []));
      if (rows.length > 0 && rows[0].split !== split) {
        return bad(`dicom_id ${dicomId}: study ${studyId} is in split ${rows[0].split} but this image says ${split}`);
      }
      rows.push({ dicomId, subjectId, studyId, split, line });
    });

    // Check image files and read reports.
    const groups = [...studyRows.values()];
    const candidates = await mapLimit(
      groups,
      concurrency,
      async (rows) => {
        const { subjectId, studyId, split } = rows[0];
        const paths = rows.map((r) => imagePath(subjectId, studyId, r.dicomId)).sort();
        const present: string[] = [];
        const localProblems: DataProblem[] = [];
        for (const p of paths) {
          const st = await fileStatus(imageSource, p);
          if (st.kind === 'file') present.push(p);
          else if (st.kind === 'missing') localProblems.push({ kind: 'missing-image', path: p, detail: `listed in ${splitPath} but the file does not exist` });
          else localProblems.push({ kind: 'unreadable-image', path: p, detail: `listed in ${splitPath} but ${st.detail}` });
        }
        const rPath = reportPath(subjectId, studyId);
        return { subjectId, studyId, split, paths: present, reportPath: rPath, report: await readReport(reportSource, rPath), localProblems };
      },
      (done) => opts.onProgress?.('reading reports', done, groups.length),
    );

    for (const c of candidates) {
      problems.push(...c.localProblems);
      const skip = (kind: ProblemKind, path: string, detail: string) => problems.push({ kind, path, detail });
      if (c.paths.length === 0) {
        skip('no-frontal-image', studyDir(c.subjectId, c.studyId), 'no PA/AP image file exists for this study');
        continue;
      }
      if ('problem' in c.report) {
        skip(c.report.problem, c.reportPath, c.report.detail);
        continue;
      }
      if (c.report.text.trim() === '') {
        skip('empty-report', c.reportPath, 'report is empty');
        continue;
      }
      const parsed = reportSentences(c.report.text, opts.sentenceOptions);
      if (!parsed.hasFindings && !parsed.hasImpression) {
        skip('no-sections', c.reportPath, 'no FINDINGS or IMPRESSION section');
        continue;
      }
      const sentences: string[] = [];
      const sentenceTokens: Int32Array[] = [];
      for (const s of parsed.sentences) {
        const ids = opts.tokenizer.encodeSentence(s);
        if (ids.length === 0) continue;
        sentences.push(s);
        sentenceTokens.push(ids);
      }
      if (sentences.length === 0) {
        skip('no-sentences', c.reportPath, 'FINDINGS/IMPRESSION hold no sentence');
        continue;
      }
      const tokens = sentenceTokens.reduce((n, t) => n + t.length, 0);
      if (tokens < minTokens) {
        skip('too-few-tokens', c.reportPath, `${tokens} token(s), fewer than ${minTokens}`);
        continue;
      }
      dataset.studies.push({
        index: dataset.studies.length,
        subjectId: c.subjectId,
        studyId: c.studyId,
        split: c.split,
        reportPath: c.reportPath,
        imagePaths: c.paths,
        sentences,
        sentenceTokens,
      });
    }
    return dataset;
  }

  private indexMetadata(table: CsvTable, path: string): Map<string, { subjectId: string; studyId: string; view: string }> & { badDicomIds: Set<string> } {
    const out = Object.assign(new Map<string, { subjectId: string; studyId: string; view: string }>(), { badDicomIds: new Set<string>() });
    table.rows.forEach((row, r) => {
      const dicomId = row.dicom_id.trim();
      const subjectId = row.subject_id.trim();
      const studyId = row.study_id.trim();
      if (!DICOM_ID_PATTERN.test(dicomId) || !ID_PATTERN.test(subjectId) || !ID_PATTERN.test(studyId)) {
        out.badDicomIds.add(dicomId);
        this.problems.push({
          kind: 'bad-csv-row',
          path: `${path}:${table.lines[r]}`,
          detail: `bad id(s): dicom_id ${quote(row.dicom_id)}, subject_id ${quote(row.subject_id)}, study_id ${quote(row.study_id)}`,
        });
        return;
      }
      out.set(dicomId, { subjectId, studyId, view: row.ViewPosition.trim() });
    });
    return out;
  }

  /** Kept studies of one split, in CSV order. */
  split(name: Split): Study[] {
    return this.studies.filter((s) => s.split === name);
  }

  /** Problem counts by kind (every kind present, 0 when none). */
  problemCounts(): Record<ProblemKind, number> {
    const counts = Object.fromEntries(PROBLEM_KINDS.map((k) => [k, 0])) as Record<ProblemKind, number>;
    for (const p of this.problems) counts[p.kind]++;
    return counts;
  }

  /** Human-readable summary: kept studies per split, non-frontal images left out, dropped data by reason. */
  summary(): string {
    const lines: string[] = [];
    lines.push(`studies: ${SPLITS.map((s) => `${s} ${this.split(s).length}`).join(', ')}`);
    const views = Object.entries(this.droppedViews).map(([v, n]) => `${v || '(empty)'} ${n}`);
    if (views.length > 0) lines.push(`non-frontal images left out: ${views.join(', ')}`);
    lines.push(this.dropSummary());
    return lines.join('\n');
  }

  /**
   * One line of dropped data so far, by unit and reason:
   * "dropped: 2 studies (missing-report 1, empty-report 1), 1 image (missing-image 1), 0 CSV rows".
   */
  dropSummary(): string {
    const counts = this.problemCounts();
    const units: [DropUnit, string][] = [
      ['study', 'studies'],
      ['image', 'images'],
      ['CSV row', 'CSV rows'],
    ];
    return `dropped: ${units
      .map(([unit, plural]) => {
        const kinds = PROBLEM_KINDS.filter((k) => PROBLEM_INFO[k].unit === unit && counts[k] > 0);
        const n = kinds.reduce((sum, k) => sum + counts[k], 0);
        return `${n} ${n === 1 ? unit : plural}${kinds.length ? ` (${kinds.map((k) => `${k} ${counts[k]}`).join(', ')})` : ''}`;
      })
      .join(', ')}`;
  }

  /** Every reason with its count (0 included) and the first few paths, for the run's report. */
  dropReport(examples = 3): DropReport {
    const counts = this.problemCounts();
    return {
      reasons: PROBLEM_KINDS.map((kind) => ({
        kind,
        ...PROBLEM_INFO[kind],
        count: counts[kind],
        examples: this.problems
          .filter((p) => p.kind === kind)
          .slice(0, examples)
          .map((p) => p.path),
      })),
      droppedViews: { ...this.droppedViews },
    };
  }

  /**
   * Loads one frontal image of a study: drawn uniformly with `rng` (or the first when rng is
   * undefined); if it cannot be read or decoded, the study's other images are tried in turn.
   * Returns null when none loads; failures are recorded in `problems` (once per file).
   */
  async loadImage(study: Study, rng?: Rng): Promise<{ image: GrayImage; path: string } | null> {
    const { loaded, failures } = await drawImage(this.imageSource, study.imagePaths, this.knownUndecodableOf(study.imagePaths), rng);
    this.recordImageFailures(failures);
    if (!loaded) this.recordUnloadable(study);
    return loaded;
  }

  /**
   * A sample's transformed image (the job drawing it with the sample's seed), decoded by
   * `workers` from the current image source; null when none of the study's images loads.
   * Failures are recorded as loadImage records them, in the order of the calls (not of the
   * jobs' completion), so `problems` is the same for any number of workers.
   */
  loadSampleImage(study: Study, seed: number, transform: SampleTransform, workers: ImageWorkers = IN_PROCESS): Promise<GrayImage | null> {
    const job = workers.run(this.imageSource, {
      kind: 'sample',
      paths: study.imagePaths,
      knownUndecodable: this.knownUndecodableOf(study.imagePaths),
      seed,
      transform,
    });
    const recorded = this.sampleFailuresRecorded.then(async () => {
      const { image, failures } = await job;
      this.recordImageFailures(failures);
      if (!image) this.recordUnloadable(study);
      return image;
    });
    this.sampleFailuresRecorded = recorded.then(
      () => undefined,
      () => undefined,
    );
    return recorded;
  }

  /** Reads and decodes one image (from the current image source unless `from` is given); null (and a recorded problem) when it cannot. */
  async loadImagePath(path: string, from: FileSource = this.imageSource): Promise<GrayImage | null> {
    const { loaded, failures } = await drawImage(from, [path], this.knownUndecodableOf([path]));
    this.recordImageFailures(failures);
    return loaded?.image ?? null;
  }

  private knownUndecodableOf(paths: readonly string[]): Record<string, string> {
    const known: Record<string, string> = {};
    for (const path of paths) {
      const reason = this.knownUndecodable.get(path);
      if (reason !== undefined) known[path] = reason;
    }
    return known;
  }

  /** Records image failures as problems, once per file (the first failure of a file counts). */
  recordImageFailures(failures: readonly ImageFailure[]): void {
    for (const f of failures) this.recordImageProblem(f.kind, f.path, f.detail);
  }

  /** A study none of whose images loads: skipped whenever it is drawn, counted once. */
  private recordUnloadable(study: Study): void {
    if (this.unloadableStudies.has(study.index)) return;
    this.unloadableStudies.add(study.index);
    this.problems.push({
      kind: 'no-loadable-image',
      path: studyDir(study.subjectId, study.studyId),
      detail: `none of its ${study.imagePaths.length} frontal image(s) loads; the study is skipped`,
    });
  }

  private recordImageProblem(kind: ProblemKind, path: string, detail: string): void {
    if (this.reportedImages.has(path)) return;
    this.reportedImages.add(path);
    this.problems.push({ kind, path, detail });
  }

  /** Checks every image of the given studies by decoding it (slow; for `lovt-run data check`). */
  async verifyImages(studies: readonly Study[] = this.studies, onProgress?: (done: number, total: number) => void): Promise<number> {
    const paths = studies.flatMap((s) => s.imagePaths);
    let bad = 0;
    let done = 0;
    for (const path of paths) {
      if (!(await this.loadImagePath(path))) bad++;
      onProgress?.(++done, paths.length);
    }
    return bad;
  }
}

export interface ResizeOptions {
  /** Longest side after resizing (default 512); smaller images are copied unchanged. */
  maxSide?: number;
  /** JPEG quality of the copies (default 95). */
  quality?: number;
  /** Where the originals are decoded and resized (default: the calling thread). */
  workers?: ImageWorkers;
  onProgress?: (done: number, total: number) => void;
}

export interface ResizeResult {
  /** Copies written now, copies already there, originals that could not be copied. */
  written: number;
  kept: number;
  failed: number;
  /** Originals that do not decode (path → reason), including those found by earlier runs. */
  undecodable: Map<string, string>;
}

/**
 * The record of a resized copy, beside its images: its size, the originals that do not decode,
 * and (version 2) the size and modification time of every original when it was copied or
 * found undecodable, so that a changed original is read again.
 */
export const RESIZE_MANIFEST = 'lovt-resized.json';

/** [size in bytes, modification time in ms] of an original. */
type OriginalKey = [number, number];

interface ResizeManifest {
  version: 1 | 2;
  maxSide: number;
  quality: number;
  undecodable: Record<string, string>;
  originals?: Record<string, OriginalKey>;
}

/**
 * Copies made between manifest updates (at least; 5 % of a large set): the copies an
 * interrupted run leaves unrecorded are kept by modification time, without decoding.
 */
const MANIFEST_EVERY = 1000;

async function readResizeManifest(target: FileSource): Promise<ResizeManifest | null> {
  if (!(await target.exists(RESIZE_MANIFEST))) return null;
  try {
    const m = JSON.parse(await readText(target, RESIZE_MANIFEST)) as ResizeManifest;
    if (m && (m.version === 1 || m.version === 2) && typeof m.undecodable === 'object') return m;
  } catch {
    // A damaged manifest only costs re-checking the copies against their originals.
  }
  return null;
}

/**
 * Writes a downscaled copy of every image of `studies` (read from the dataset's original
 * source) to `target` under the same relative paths (antialiased, aspect kept), for use as
 * the image source (MimicCxrDataset.useImageSource). A copy is keyed by its original's size
 * and modification time (when the sources report them, as Node's do): it is kept while they
 * match, so an interrupted run resumes and a finished one is reused without decoding anything,
 * and made again from an original that changed. A copy without a recorded key (an
 * interrupted run, an older lovt) is kept only if it is newer than its original. Originals
 * that do not decode are recorded in the dataset's problems and in `target`'s manifest, so
 * later runs skip them without reading them until they change. A target holding copies of
 * another size is an error (keep one target per size).
 */
export async function writeResizedImages(
  dataset: MimicCxrDataset,
  studies: readonly Study[],
  target: WritableFileSource,
  opts: ResizeOptions = {},
): Promise<ResizeResult> {
  const maxSide = opts.maxSide ?? 512;
  const quality = opts.quality ?? 95;
  const manifest = await readResizeManifest(target);
  if (manifest && manifest.maxSide !== maxSide) {
    throw new Error(`${target.description} holds images resized to ${manifest.maxSide} px, not ${maxSide}: use another directory for this size`);
  }
  const undecodable = new Map(Object.entries(manifest?.undecodable ?? {}));
  const originals = new Map(Object.entries(manifest?.originals ?? {}));
  const workers = opts.workers ?? IN_PROCESS;
  const paths = studies.flatMap((s) => s.imagePaths);
  let written = 0;
  let kept = 0;
  let failed = 0;
  let changed = !manifest || manifest.version !== 2;
  let sinceSaved = 0;
  const save = async () => {
    const record: ResizeManifest = {
      version: 2,
      maxSide,
      quality,
      undecodable: Object.fromEntries([...undecodable].sort()),
      originals: Object.fromEntries([...originals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    };
    await target.writeFile(RESIZE_MANIFEST, new TextEncoder().encode(JSON.stringify(record) + '\n'));
    changed = false;
    sinceSaved = 0;
  };
  type Outcome =
    | { kind: 'kept'; key: OriginalKey | null }
    | { kind: 'known-undecodable'; key: OriginalKey | null }
    | { kind: 'resized'; key: OriginalKey | null; result: ImageJobResults['resize'] };
  // Decoding and resizing run on the workers; the copies are written and the failures
  // recorded here, in path order.
  await forEachInOrder(
    paths,
    jobsInFlight(workers),
    async (path): Promise<Outcome> => {
      const original = await fileStatus(dataset.originalSource, path);
      const key: OriginalKey | null =
        original.kind === 'file' && original.size !== undefined && original.mtimeMs !== undefined ? [original.size, original.mtimeMs] : null;
      const recorded = originals.get(path);
      // Without stats (a browser's files) a copy or verdict can only be trusted by path.
      const unchanged = key === null || sameKey(recorded, key);
      if (undecodable.has(path)) {
        if (unchanged) return { kind: 'known-undecodable', key };
      } else {
        const copy = await fileStatus(target, path);
        if (copy.kind === 'file') {
          if (unchanged) return { kind: 'kept', key };
          // Unrecorded (written after the last manifest update, or by an older lovt): kept if made after the original last changed.
          if (!recorded && copy.mtimeMs !== undefined && copy.mtimeMs >= key![1]) return { kind: 'kept', key };
        }
      }
      return { kind: 'resized', key, result: await workers.run(dataset.originalSource, { kind: 'resize', path, maxSide, quality }) };
    },
    async (outcome, path, i) => {
      const { key } = outcome;
      if (key && !sameKey(originals.get(path), key)) {
        originals.set(path, key);
        changed = true;
      }
      if (outcome.kind === 'kept') {
        kept++;
      } else if (outcome.kind === 'known-undecodable') {
        failed++;
      } else if (outcome.result.jpeg) {
        await target.writeFile(path, outcome.result.jpeg);
        if (undecodable.delete(path)) changed = true;
        written++;
        sinceSaved++;
      } else {
        failed++;
        dataset.recordImageFailures(outcome.result.failures);
        for (const f of outcome.result.failures) if (f.kind === 'undecodable-image') undecodable.set(f.path, f.detail);
        changed = true;
        sinceSaved++;
      }
      if (changed && sinceSaved >= Math.max(MANIFEST_EVERY, paths.length / 20)) await save();
      opts.onProgress?.(i + 1, paths.length);
    },
  );
  if (changed) await save();
  return { written, kept, failed, undecodable };
}

function sameKey(a: OriginalKey | undefined, b: OriginalKey): boolean {
  return a !== undefined && a[0] === b[0] && a[1] === b[1];
}

/**
 * The studies a pre-training run uses: the first ⌈fraction·N⌉ in the given order ('first',
 * the reference's "30 %" subset) or a seeded random subset kept in the original order
 * ('random', the fix for §7's non-random subset).
 */
export function selectSubset<T>(items: readonly T[], fraction: number, mode: 'first' | 'random', rng?: Rng): T[] {
  if (!(fraction > 0 && fraction <= 1)) throw new Error(`subset fraction must be in (0, 1], got ${fraction}`);
  const count = Math.ceil(fraction * items.length);
  if (mode === 'first') return items.slice(0, count);
  if (!rng) throw new Error('a random subset needs an Rng');
  const chosen = rng
    .shuffle(items.map((_, i) => i))
    .slice(0, count)
    .sort((a, b) => a - b);
  return chosen.map((i) => items[i]);
}
