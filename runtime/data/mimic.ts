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
// exists. Corrupt inputs are skipped, counted by kind and listed — never fatal: CSV rows with
// bad ids, missing image files, missing or empty reports, and (found when loading)
// truncated or undecodable images.
import { readCsv, requireColumns, type CsvTable } from './csv.ts';
import { readText, type FileSource, type WritableFileSource } from './fs.ts';
import type { GrayImage } from './image.ts';
import { drawImage, forEachInOrder, IN_PROCESS, jobsInFlight, type ImageFailure, type ImageJobResults, type ImageWorkers, type SampleTransform } from './image-jobs.ts';
import { reportSentences, type SentenceOptions } from './report.ts';
import type { Rng } from './random.ts';
import type { ReportTokenizer } from './tokenizer.ts';
import { clip, quote } from '../../compiler/echo.ts';

export type Split = 'train' | 'validate' | 'test';
export const SPLITS: readonly Split[] = ['train', 'validate', 'test'];

export type ProblemKind =
  | 'bad-csv-row'        // unparsable id, unknown split, or inconsistent with the other CSV
  | 'missing-image'      // listed image file does not exist
  | 'undecodable-image'  // truncated or corrupt image (found when loading)
  | 'missing-report'     // report file does not exist
  | 'empty-report'       // report file holds only whitespace
  | 'no-sections'        // neither FINDINGS nor IMPRESSION
  | 'no-sentences'       // sections present but no sentence in them
  | 'too-few-tokens'     // fewer than minTokens WordPiece tokens
  | 'no-frontal-image';  // no PA/AP image file left for the study

export const PROBLEM_KINDS: readonly ProblemKind[] = [
  'bad-csv-row', 'missing-image', 'undecodable-image', 'missing-report', 'empty-report',
  'no-sections', 'no-sentences', 'too-few-tokens', 'no-frontal-image',
];

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
  throw new Error(`${source.description}: neither ${base}.gz nor ${base} found (is this a MIMIC-CXR-JPG root?)`);
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

interface ImageRow { dicomId: string; subjectId: string; studyId: string; split: Split; line: number }

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
    const candidates = await mapLimit(groups, concurrency, async (rows) => {
      const { subjectId, studyId, split } = rows[0];
      const paths = rows.map((r) => imagePath(subjectId, studyId, r.dicomId)).sort();
      const present: string[] = [];
      const localProblems: DataProblem[] = [];
      for (const p of paths) {
        if (await imageSource.exists(p)) present.push(p);
        else localProblems.push({ kind: 'missing-image', path: p, detail: `listed in ${splitPath} but the file does not exist` });
      }
      const rPath = reportPath(subjectId, studyId);
      let text: string | null = null;
      if (await reportSource.exists(rPath)) text = new TextDecoder('utf-8').decode(await reportSource.readFile(rPath));
      return { subjectId, studyId, split, paths: present, reportPath: rPath, text, localProblems };
    }, (done) => opts.onProgress?.('reading reports', done, groups.length));

    for (const c of candidates) {
      problems.push(...c.localProblems);
      const skip = (kind: ProblemKind, path: string, detail: string) => problems.push({ kind, path, detail });
      if (c.paths.length === 0) {
        skip('no-frontal-image', studyDir(c.subjectId, c.studyId), 'no PA/AP image file exists for this study');
        continue;
      }
      if (c.text === null) { skip('missing-report', c.reportPath, 'report file does not exist'); continue; }
      if (c.text.trim() === '') { skip('empty-report', c.reportPath, 'report is empty'); continue; }
      const parsed = reportSentences(c.text, opts.sentenceOptions);
      if (!parsed.hasFindings && !parsed.hasImpression) { skip('no-sections', c.reportPath, 'no FINDINGS or IMPRESSION section'); continue; }
      const sentences: string[] = [];
      const sentenceTokens: Int32Array[] = [];
      for (const s of parsed.sentences) {
        const ids = opts.tokenizer.encodeSentence(s);
        if (ids.length === 0) continue;
        sentences.push(s);
        sentenceTokens.push(ids);
      }
      if (sentences.length === 0) { skip('no-sentences', c.reportPath, 'FINDINGS/IMPRESSION hold no sentence'); continue; }
      const tokens = sentenceTokens.reduce((n, t) => n + t.length, 0);
      if (tokens < minTokens) { skip('too-few-tokens', c.reportPath, `${tokens} token(s), fewer than ${minTokens}`); continue; }
      dataset.studies.push({
        index: dataset.studies.length, subjectId: c.subjectId, studyId: c.studyId, split: c.split,
        reportPath: c.reportPath, imagePaths: c.paths, sentences, sentenceTokens,
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
        this.problems.push({ kind: 'bad-csv-row', path: `${path}:${table.lines[r]}`, detail: `bad id(s): dicom_id ${quote(row.dicom_id)}, subject_id ${quote(row.subject_id)}, study_id ${quote(row.study_id)}` });
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

  /** Human-readable summary: kept studies per split, dropped views, problems by kind. */
  summary(): string {
    const lines: string[] = [];
    lines.push(`studies: ${SPLITS.map((s) => `${s} ${this.split(s).length}`).join(', ')}`);
    const views = Object.entries(this.droppedViews).map(([v, n]) => `${v || '(empty)'} ${n}`);
    if (views.length > 0) lines.push(`non-frontal images dropped: ${views.join(', ')}`);
    const counts = Object.entries(this.problemCounts()).filter(([, n]) => n > 0);
    if (counts.length > 0) lines.push(`skipped: ${counts.map(([k, n]) => `${k} ${n}`).join(', ')}`);
    return lines.join('\n');
  }

  /**
   * Loads one frontal image of a study: drawn uniformly with `rng` (or the first when rng is
   * undefined); if it cannot be read or decoded, the study's other images are tried in turn.
   * Returns null when none loads; failures are recorded in `problems` (once per file).
   */
  async loadImage(study: Study, rng?: Rng): Promise<{ image: GrayImage; path: string } | null> {
    const { loaded, failures } = await drawImage(this.imageSource, study.imagePaths, this.knownUndecodableOf(study.imagePaths), rng);
    this.recordImageFailures(failures);
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
      kind: 'sample', paths: study.imagePaths, knownUndecodable: this.knownUndecodableOf(study.imagePaths), seed, transform,
    });
    const recorded = this.sampleFailuresRecorded.then(async () => {
      const { image, failures } = await job;
      this.recordImageFailures(failures);
      return image;
    });
    this.sampleFailuresRecorded = recorded.then(() => undefined, () => undefined);
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

/** The record of a resized copy, beside its images: its size and the originals that do not decode. */
export const RESIZE_MANIFEST = 'lovt-resized.json';

interface ResizeManifest {
  version: 1;
  maxSide: number;
  quality: number;
  undecodable: Record<string, string>;
}

async function readResizeManifest(target: FileSource): Promise<ResizeManifest | null> {
  if (!(await target.exists(RESIZE_MANIFEST))) return null;
  try {
    const m = JSON.parse(await readText(target, RESIZE_MANIFEST)) as ResizeManifest;
    if (m && m.version === 1 && typeof m.undecodable === 'object') return m;
  } catch {
    // A damaged manifest only costs re-trying the undecodable originals.
  }
  return null;
}

/**
 * Writes a downscaled copy of every image of `studies` (read from the dataset's original
 * source) to `target` under the same relative paths (antialiased, aspect kept), for use as
 * the image source (MimicCxrDataset.useImageSource). Existing copies are kept, so an
 * interrupted run resumes and a finished one is reused without decoding anything; originals
 * that do not decode are recorded in the dataset's problems and in `target`'s manifest, so
 * later runs skip them without reading them. A target holding copies of another size is an
 * error (keep one target per size).
 */
export async function writeResizedImages(
  dataset: MimicCxrDataset, studies: readonly Study[], target: WritableFileSource, opts: ResizeOptions = {},
): Promise<ResizeResult> {
  const maxSide = opts.maxSide ?? 512;
  const quality = opts.quality ?? 95;
  const manifest = await readResizeManifest(target);
  if (manifest && manifest.maxSide !== maxSide) {
    throw new Error(`${target.description} holds images resized to ${manifest.maxSide} px, not ${maxSide}: use another directory for this size`);
  }
  const undecodable = new Map(Object.entries(manifest?.undecodable ?? {}));
  const workers = opts.workers ?? IN_PROCESS;
  const paths = studies.flatMap((s) => s.imagePaths);
  let written = 0;
  let kept = 0;
  let failed = 0;
  type Outcome = 'kept' | 'known-undecodable' | ImageJobResults['resize'];
  // Decoding and resizing run on the workers; the copies are written and the failures
  // recorded here, in path order.
  await forEachInOrder(paths, jobsInFlight(workers), async (path): Promise<Outcome> => {
    if (await target.exists(path)) return 'kept';
    if (undecodable.has(path)) return 'known-undecodable';
    return workers.run(dataset.originalSource, { kind: 'resize', path, maxSide, quality });
  }, async (outcome, path, i) => {
    if (outcome === 'kept') {
      kept++;
    } else if (outcome === 'known-undecodable') {
      failed++;
    } else if (outcome.jpeg) {
      await target.writeFile(path, outcome.jpeg);
      written++;
    } else {
      failed++;
      dataset.recordImageFailures(outcome.failures);
      for (const f of outcome.failures) if (f.kind === 'undecodable-image') undecodable.set(f.path, f.detail);
    }
    opts.onProgress?.(i + 1, paths.length);
  });
  if (!manifest || undecodable.size !== Object.keys(manifest.undecodable).length) {
    const record: ResizeManifest = { version: 1, maxSide, quality, undecodable: Object.fromEntries([...undecodable].sort()) };
    await target.writeFile(RESIZE_MANIFEST, new TextEncoder().encode(JSON.stringify(record, null, 2) + '\n'));
  }
  return { written, kept, failed, undecodable };
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
  const chosen = rng.shuffle(items.map((_, i) => i)).slice(0, count).sort((a, b) => a - b);
  return chosen.map((i) => items[i]);
}
