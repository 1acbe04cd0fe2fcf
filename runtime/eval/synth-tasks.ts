// Downstream task data on a SynthCXR data set (runtime/data/synth/): a segmentation task
// (per-pixel mask of the findings) and a detection task (boxes with class ids), both built
// from what `lovt-run synth` writes beside the images — synth-annotations.json (per
// frontal image the findings, their tight boxes and mask files) and masks/…png.
//
// One sample = one frontal image. Splits are disjoint by patient (subject): the subjects
// are shuffled with a seed and cut 60 / 20 / 20 (the proportions of the RSNA task,
// method §6). They ignore the split the data set was generated with (pre-training's);
// evaluate on a data set generated with another seed to keep pre-training images out.
// `fraction` (percent) keeps a prefix of one fixed seeded permutation of the training
// images, so 1 % ⊂ 10 % ⊂ 100 % and every run seed sees the same subset. Images are
// padded to a centred square, resized to the eval size and normalised with the
// training split's pixel statistics, as validation images in pre-training (evalTransform);
// masks go through the same geometry (threshold 0.5 after resizing) and boxes are mapped
// by it. Platform-neutral: the caller gives the FileSource (and image workers, if any).
// Definitions: docs/evaluation.md, "Tasks (SynthCXR)".
import type { Normalization } from '../data/augment.ts';
import { readText, type FileSource } from '../data/fs.ts';
import { decodeImage, padToSquare, resizeBilinear, type GrayImage } from '../data/image.ts';
import { IN_PROCESS, type ImageWorkers } from '../data/image-jobs.ts';
import { SPLITS, type Split } from '../data/mimic.ts';
import { deriveSeed, permutation, Rng } from '../data/random.ts';
import { computePixelStats, type PixelStatsResult } from '../data/stats.ts';
import { SYNTH_ANNOTATIONS_JSON } from '../data/synth/dataset.ts';
import type { FindingType } from '../data/synth/phantom.ts';
import type { HostTensor } from '../safetensors.ts';
import { xywhToXyxy, type Box, type LabelledBox } from './boxes.ts';

export type SynthTaskKind = 'segmentation' | 'detection';

export interface SynthTaskSpec {
  name: string;
  kind: SynthTaskKind;
  /**
   * The finding types the task sees: segmentation targets the union of their masks;
   * detection's class id of a box is the index of its type here.
   */
  findings: readonly FindingType[];
}

/**
 * The lung findings, the analogues of the paper's pneumonia and pneumothorax tasks.
 * Cardiomegaly (its mask is the whole heart, ~11 % of the image, which would dominate
 * the pixel counts), lines and devices are left out.
 */
export const LUNG_FINDINGS: readonly FindingType[] = ['consolidation', 'nodule', 'effusion', 'pneumothorax'];

export const SYNTH_TASKS: Readonly<Record<string, SynthTaskSpec>> = {
  'synth-seg': { name: 'synth-seg', kind: 'segmentation', findings: LUNG_FINDINGS },
  'synth-det': { name: 'synth-det', kind: 'detection', findings: LUNG_FINDINGS },
};

export function synthTaskSpec(name: string): SynthTaskSpec {
  const spec = SYNTH_TASKS[name];
  if (!spec) throw new Error(`unknown SynthCXR task '${name}'; the tasks are ${Object.keys(SYNTH_TASKS).join(', ')}`);
  return spec;
}

/** Train / validate / test proportions of the subjects (RSNA's 16010 / 5337 / 5337). */
export const TASK_SPLIT_PROPORTIONS: readonly [number, number, number] = [0.6, 0.2, 0.2];
/** The training-set fractions of the paper, in percent. */
export const TASK_FRACTIONS: readonly number[] = [1, 10, 100];

export interface TaskFinding {
  type: FindingType;
  /** Index of the type in the task's `findings`. */
  classId: number;
  /** Tight box in stored-image pixels, [x1, y1, x2, y2]; null when the finding is not visible in this image. */
  box: Box | null;
  /** Mask PNG, relative to the data set root. */
  maskPath: string;
}

export interface TaskSample {
  /** "p<subject>/s<study>/<dicom_id>", for messages. */
  id: string;
  subjectId: string;
  studyId: string;
  dicomId: string;
  imagePath: string;
  /** Size of the stored image. */
  width: number;
  height: number;
  /** The image's findings of the task's types (others are left out). */
  findings: TaskFinding[];
}

// ---------------------------------------------------------------------------------------
// Splits and fractions (pure: tested on their own)

/**
 * Cuts `samples` into train / validate / test by subject: the subjects (sorted by id) are
 * shuffled with `seed`; the first round(p_val·S) go to validate, the next round(p_test·S)
 * to test, the rest to train. Each split keeps its samples sorted by id.
 */
export function splitBySubject<T extends { id: string; subjectId: string }>(
  samples: readonly T[],
  proportions: readonly [number, number, number],
  seed: number,
): Record<Split, T[]> {
  const sum = proportions[0] + proportions[1] + proportions[2];
  if (!proportions.every((p) => Number.isFinite(p) && p > 0) || Math.abs(sum - 1) > 1e-9) {
    throw new Error(`task split proportions must be three positive numbers summing to 1 (train, validate, test), got ${proportions.join(', ')}`);
  }
  const subjects = [...new Set(samples.map((s) => s.subjectId))].sort();
  const order = permutation(subjects.length, new Rng(deriveSeed(seed, 0x7a5c)));
  const nVal = Math.round(proportions[1] * subjects.length);
  const nTest = Math.round(proportions[2] * subjects.length);
  const splitOf = new Map<string, Split>();
  order.forEach((s, k) => splitOf.set(subjects[s], k < nVal ? 'validate' : k < nVal + nTest ? 'test' : 'train'));
  const out: Record<Split, T[]> = { train: [], validate: [], test: [] };
  for (const s of [...samples].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) out[splitOf.get(s.subjectId)!].push(s);
  return out;
}

/**
 * The training subset for `percent` % of `samples`: the first ⌊percent/100 · N⌋ of one
 * permutation seeded by `seed` alone (so a smaller fraction is a subset of a larger one),
 * returned in the input order. Zero samples is an error.
 */
export function trainingFraction<T>(samples: readonly T[], percent: number, seed: number, what = 'the training split'): T[] {
  if (!(Number.isFinite(percent) && percent > 0 && percent <= 100)) {
    throw new Error(`--fraction must be a percentage in (0, 100] (the paper uses ${TASK_FRACTIONS.join(', ')}), got ${percent}`);
  }
  // percent·N first: for whole percentages it is an exact integer, so the floor has no
  // rounding error (29/100·100 would be 28.999…).
  const count = Math.floor((percent * samples.length) / 100);
  if (count === 0) {
    throw new Error(
      `--fraction ${percent} leaves 0 of the ${samples.length} images of ${what} (⌊${percent}% · ${samples.length}⌋ = 0); ` +
        'use a larger fraction or a larger data set (lovt-run synth --studies N)',
    );
  }
  const order = permutation(samples.length, new Rng(deriveSeed(seed, 0xf7ac)));
  const keep = Array.from(order.subarray(0, count)).sort((a, b) => a - b);
  return keep.map((i) => samples[i]);
}

// ---------------------------------------------------------------------------------------
// Reading the annotations

/** synth-annotations.json as the generator writes it (runtime/data/synth/dataset.ts). */
export interface SynthAnnotationFile {
  format?: string;
  studies?: {
    subject_id: string;
    study_id: string;
    findings: { index: number; type: FindingType; label?: string; sentences?: number[] }[];
    /** The report's FINDINGS + IMPRESSION sentences as the reader splits them; findings[].sentences index them. */
    sentences?: string[];
    images: {
      dicom_id: string;
      path: string;
      width: number;
      height: number;
      findings: { finding: number; bbox: number[] | null; area?: number; mask: string }[];
    }[];
  }[];
}

const ANNOTATION_FORMAT = 'SynthCXR annotations 1';

/** Reads and checks synth-annotations.json; `what` (e.g. "task synth-seg") names the user in messages. */
export async function readSynthAnnotations(
  source: FileSource,
  what: string,
): Promise<SynthAnnotationFile & { studies: NonNullable<SynthAnnotationFile['studies']> }> {
  const where = `${source.description}/${SYNTH_ANNOTATIONS_JSON}`;
  if (!(await source.exists(SYNTH_ANNOTATIONS_JSON))) {
    throw new Error(
      `${source.description}: no SynthCXR task annotations for ${what}: looked for ${SYNTH_ANNOTATIONS_JSON} ` +
        `(the findings' boxes and the list of their masks) and the mask files masks/pXX/pSUBJECT/sSTUDY/<dicom_id>_<k>_<type>.png it lists. ` +
        'Tasks need a data set written by `lovt-run synth --out DIR` (or --data synth).',
    );
  }
  let parsed: SynthAnnotationFile;
  try {
    parsed = JSON.parse(await readText(source, SYNTH_ANNOTATIONS_JSON)) as SynthAnnotationFile;
  } catch (err) {
    throw new Error(`${where} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed.format !== ANNOTATION_FORMAT || !Array.isArray(parsed.studies)) {
    throw new Error(`${where}: expected format '${ANNOTATION_FORMAT}' with a 'studies' list, found format ${JSON.stringify(parsed.format)}`);
  }
  return parsed as SynthAnnotationFile & { studies: NonNullable<SynthAnnotationFile['studies']> };
}

/** Every frontal image of the data set with its findings of the task's types. */
export async function readTaskSamples(source: FileSource, spec: SynthTaskSpec): Promise<TaskSample[]> {
  const where = `${source.description}/${SYNTH_ANNOTATIONS_JSON}`;
  const parsed = await readSynthAnnotations(source, `task ${spec.name}`);
  const samples: TaskSample[] = [];
  for (const study of parsed.studies) {
    for (const image of study.images ?? []) {
      const id = `p${study.subject_id}/s${study.study_id}/${image.dicom_id}`;
      const findings: TaskFinding[] = [];
      for (const f of image.findings ?? []) {
        const type = study.findings?.[f.finding]?.type;
        if (type === undefined) throw new Error(`${where}: image ${id} names finding ${f.finding}, which study ${study.study_id} does not have`);
        const classId = spec.findings.indexOf(type);
        if (classId < 0) continue;
        if (f.bbox !== null && !(Array.isArray(f.bbox) && f.bbox.length === 4)) {
          throw new Error(`${where}: image ${id}, finding ${f.finding}: bbox must be [x, y, width, height] or null, got ${JSON.stringify(f.bbox)}`);
        }
        findings.push({ type, classId, box: f.bbox ? xywhToXyxy(f.bbox) : null, maskPath: f.mask });
      }
      samples.push({
        id,
        subjectId: study.subject_id,
        studyId: study.study_id,
        dicomId: image.dicom_id,
        imagePath: image.path,
        width: image.width,
        height: image.height,
        findings,
      });
    }
  }
  return samples;
}

// ---------------------------------------------------------------------------------------
// Opening a task

export interface TaskDataOptions {
  /** Side of the square eval images (default 224, method §6). */
  imageSize?: number;
  /** Image channels in batches: 3 repeats the gray channel as the ResNet input (default 3). */
  channels?: 1 | 3;
  /** Percentage of the training split used (default 100). */
  fraction?: number;
  /** Seed of the subject split and of the training subset (default 0; not a run seed). */
  splitSeed?: number;
  proportions?: readonly [number, number, number];
  /** Images sampled for the pixel statistics (default: all training images). */
  statsSampleSize?: number;
  /** Where images are decoded and resized (default: the calling thread). Not closed by the task. */
  workers?: ImageWorkers;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface SynthTaskData {
  spec: SynthTaskSpec;
  source: FileSource;
  imageSize: number;
  channels: 1 | 3;
  /** Percentage of the training split kept. */
  fraction: number;
  /** The training split before the fraction was applied. */
  fullTrain: TaskSample[];
  /** Train (after the fraction), validate and test samples. */
  splits: Record<Split, TaskSample[]>;
  norm: Normalization;
  pixelStats: PixelStatsResult;
  workers: ImageWorkers;
  /** One line for logs and reports. */
  description: string;
}

/**
 * Reads the annotations, splits by subject, applies the fraction, checks that every image
 * and (segmentation) mask file it will read exists, and computes the training split's
 * pixel statistics — every data error surfaces here, before any device work.
 */
export async function openSynthTask(source: FileSource, spec: SynthTaskSpec, opts: TaskDataOptions = {}): Promise<SynthTaskData> {
  const imageSize = opts.imageSize ?? 224;
  if (!(Number.isInteger(imageSize) && imageSize >= 8)) throw new Error(`task ${spec.name}: image size must be a whole number ≥ 8, got ${imageSize}`);
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new Error(`task ${spec.name}: channels must be 1 or 3, got ${channels}`);
  const fraction = opts.fraction ?? 100;
  const splitSeed = opts.splitSeed ?? 0;
  const all = await readTaskSamples(source, spec);
  const split = splitBySubject(all, opts.proportions ?? TASK_SPLIT_PROPORTIONS, splitSeed);
  const subjects = new Set(all.map((s) => s.subjectId)).size;
  for (const name of SPLITS) {
    if (split[name].length === 0) {
      throw new Error(
        `${source.description}: task ${spec.name}: the ${name} split is empty (${all.length} frontal images of ${subjects} subjects, ` +
          `split ${(opts.proportions ?? TASK_SPLIT_PROPORTIONS).join(' / ')} by subject); generate a larger data set (lovt-run synth --studies N)`,
      );
    }
  }
  const train = trainingFraction(split.train, fraction, splitSeed, `task ${spec.name}'s training split`);
  const splits: Record<Split, TaskSample[]> = { train, validate: split.validate, test: split.test };
  const positives = (list: TaskSample[]) => list.filter((s) => s.findings.some((f) => f.box !== null)).length;
  for (const name of SPLITS) {
    // Without a single finding there is nothing to learn, and Dice or mAP says nothing (mAP is undefined).
    if (positives(splits[name]) === 0) {
      throw new Error(
        `${source.description}: task ${spec.name}: no image of the ${name} split` +
          (name === 'train' && fraction < 100 ? ` (${fraction}% of it)` : '') +
          ` shows a finding of the task (${spec.findings.join(', ')}) among its ${splits[name].length} images; use a larger data set (lovt-run synth --studies N)` +
          (name === 'train' && fraction < 100 ? ' or a larger --fraction' : ''),
      );
    }
  }
  await checkFilesExist(source, spec, splits);
  const workers = opts.workers ?? IN_PROCESS;
  // Statistics of the whole training split, so that 1 %, 10 % and 100 % share one normalisation.
  const pixelStats = await computePixelStats(
    source,
    split.train.map((s) => s.imagePath),
    {
      sampleSize: opts.statsSampleSize,
      workers,
      onProgress: (d, t) => opts.onProgress?.('pixel statistics', d, t),
    },
  );
  const description =
    `task ${spec.name} (${spec.kind} of ${spec.findings.join(', ')}) on ${source.description}: ` +
    SPLITS.map((n) => `${n} ${splits[n].length} images (${positives(splits[n])} with findings)`).join(', ') +
    (fraction < 100 ? `; training fraction ${fraction}% of ${split.train.length}` : '') +
    `; ${imageSize}×${imageSize}, pixel mean ${pixelStats.mean.toFixed(4)} std ${pixelStats.std.toFixed(4)}`;
  return {
    spec,
    source,
    imageSize,
    channels,
    fraction,
    fullTrain: split.train,
    splits,
    norm: { mean: pixelStats.mean, std: pixelStats.std },
    pixelStats,
    workers,
    description,
  };
}

async function checkFilesExist(source: FileSource, spec: SynthTaskSpec, splits: Record<Split, TaskSample[]>): Promise<void> {
  const missing: string[] = [];
  let images = 0;
  let masks = 0;
  for (const name of SPLITS) {
    for (const s of splits[name]) {
      images++;
      if (!(await source.exists(s.imagePath))) missing.push(`image ${s.imagePath}`);
      if (spec.kind !== 'segmentation') continue;
      for (const f of s.findings) {
        masks++;
        if (!(await source.exists(f.maskPath))) missing.push(`mask ${f.maskPath}`);
      }
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `${source.description}: task ${spec.name}: ${missing.length} of the ${images} images` +
        (spec.kind === 'segmentation' ? ` and ${masks} masks` : '') +
        ` listed in ${SYNTH_ANNOTATIONS_JSON} do not exist; looked for ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Loading samples and batches

export interface LoadedTaskSample {
  sample: TaskSample;
  /** Normalised image, imageSize², row-major. */
  image: Float32Array;
  /** Segmentation: 0/1 union of the task's finding masks, imageSize². */
  mask?: Float32Array;
  /** Detection: boxes in eval-image pixels, label = class id. */
  boxes?: LabelledBox[];
}

/** Where the stored image lands in the eval image: the square padding's offset and the scale. */
export function evalGeometry(width: number, height: number, size: number): { left: number; top: number; scale: number } {
  const side = Math.max(width, height);
  // padToSquare's offsets: the odd pixel goes right / bottom.
  return { left: Math.floor((side - width) / 2), top: Math.floor((side - height) / 2), scale: size / side };
}

/** A stored-image box mapped into the eval image. */
export function boxToEval(box: Box, width: number, height: number, size: number): Box {
  const { left, top, scale } = evalGeometry(width, height, size);
  return [(box[0] + left) * scale, (box[1] + top) * scale, (box[2] + left) * scale, (box[3] + top) * scale];
}

/** Loads one sample: its normalised eval image and its mask or boxes. */
export async function loadTaskSample(data: SynthTaskData, sample: TaskSample): Promise<LoadedTaskSample> {
  const result = await data.workers.run(data.source, {
    kind: 'sample',
    paths: [sample.imagePath],
    knownUndecodable: {},
    seed: 0,
    transform: { train: false, norm: data.norm, size: data.imageSize },
  });
  if (!result.image) {
    const f = result.failures[0];
    throw new Error(`task ${data.spec.name}: cannot load image ${f?.path ?? sample.imagePath} of ${sample.id}: ${f?.detail ?? 'no image'}`);
  }
  const out: LoadedTaskSample = { sample, image: result.image.data };
  if (data.spec.kind === 'segmentation') out.mask = await loadUnionMask(data, sample);
  else {
    out.boxes = sample.findings
      .filter((f) => f.box !== null)
      .map((f) => ({ box: boxToEval(f.box!, sample.width, sample.height, data.imageSize), label: f.classId }));
  }
  return out;
}

async function loadUnionMask(data: SynthTaskData, sample: TaskSample): Promise<Float32Array> {
  const size = data.imageSize;
  if (sample.findings.length === 0) return new Float32Array(size * size);
  const union = { width: sample.width, height: sample.height, data: new Float32Array(sample.width * sample.height) };
  for (const f of sample.findings) {
    let bytes: Uint8Array;
    try {
      bytes = await data.source.readFile(f.maskPath);
    } catch (err) {
      throw new Error(`task ${data.spec.name}: cannot read mask ${f.maskPath} of ${sample.id}: ${(err as Error).message}`);
    }
    const mask = decodeImage(bytes, f.maskPath);
    if (mask.width !== sample.width || mask.height !== sample.height) {
      throw new Error(
        `task ${data.spec.name}: mask ${f.maskPath} is ${mask.width}×${mask.height} but its image ${sample.imagePath} is ${sample.width}×${sample.height}`,
      );
    }
    for (let i = 0; i < mask.data.length; i++) if (mask.data[i] > 0) union.data[i] = 1;
  }
  return maskToEval(union, size);
}

/** A stored-image 0/1 mask through the eval image's geometry (pad, antialiased resize to size²), back to 0/1 at 0.5. */
export function maskToEval(mask: GrayImage, size: number): Float32Array {
  const resized = resizeBilinear(padToSquare(mask, 0), size, size).data;
  const out = new Float32Array(size * size);
  for (let i = 0; i < out.length; i++) out[i] = resized[i] >= 0.5 ? 1 : 0;
  return out;
}

export interface TaskBatch {
  ids: string[];
  /** How many leading entries are real samples (the rest repeat them to fill a fixed batch size). */
  valid: number;
  /** f32 [B, channels, S, S], normalised. */
  images: HostTensor & { dtype: 'f32' };
  /** Segmentation: f32 [B, 1, S, S], 0/1. */
  masks?: HostTensor & { dtype: 'f32' };
  /** Detection: per sample its boxes (eval-image pixels, label = class id). */
  boxes?: LabelledBox[][];
}

/** Stacks loaded samples into a batch (images repeated over the channels). */
export function collateTaskBatch(loaded: readonly LoadedTaskSample[], channels: 1 | 3, valid = loaded.length): TaskBatch {
  const B = loaded.length;
  if (B === 0) throw new Error('collateTaskBatch: no samples');
  const plane = loaded[0].image.length;
  const side = Math.round(Math.sqrt(plane));
  const images = new Float32Array(B * channels * plane);
  const hasMask = loaded[0].mask !== undefined;
  const masks = hasMask ? new Float32Array(B * plane) : null;
  loaded.forEach((l, b) => {
    for (let c = 0; c < channels; c++) images.set(l.image, (b * channels + c) * plane);
    if (masks) masks.set(l.mask!, b * plane);
  });
  const batch: TaskBatch = {
    ids: loaded.map((l) => l.sample.id),
    valid,
    images: { dtype: 'f32', shape: [B, channels, side, side], data: images },
  };
  if (masks) batch.masks = { dtype: 'f32', shape: [B, 1, side, side], data: masks };
  if (loaded[0].boxes !== undefined) batch.boxes = loaded.map((l) => l.boxes!);
  return batch;
}

export interface TaskBatchOptions {
  batchSize: number;
  /** Shuffle with (seed, epoch) (training); default: the split's fixed order. */
  shuffle?: { seed: number; epoch: number };
  /**
   * The last, short batch: 'keep' it short (default), 'drop' it (training with a fixed
   * batch size), or 'pad' it to the batch size by repeating its samples (`valid` says how
   * many are real; evaluation with a fixed batch size).
   */
  last?: 'keep' | 'drop' | 'pad';
}

/** The order in which an epoch visits a split: fixed, or a permutation seeded by (seed, epoch). */
export function taskEpochOrder(count: number, shuffle?: { seed: number; epoch: number }): Int32Array {
  if (!shuffle) return Int32Array.from({ length: count }, (_, i) => i);
  return permutation(count, new Rng(deriveSeed(shuffle.seed, shuffle.epoch, 0x5eed)));
}

/** Batches of one split; the next batch is read while the current one is used. */
export async function* taskBatches(data: SynthTaskData, split: Split, opts: TaskBatchOptions): AsyncGenerator<TaskBatch> {
  const B = opts.batchSize;
  if (!(Number.isInteger(B) && B > 0)) throw new Error(`task ${data.spec.name}: batch size must be a positive whole number, got ${B}`);
  const samples = data.splits[split];
  const order = taskEpochOrder(samples.length, opts.shuffle);
  const last = opts.last ?? 'keep';
  const count = last === 'drop' ? Math.floor(samples.length / B) : Math.ceil(samples.length / B);
  const load = (k: number) => {
    const idx = Array.from(order.subarray(k * B, Math.min(samples.length, (k + 1) * B)));
    const job = Promise.all(idx.map((i) => loadTaskSample(data, samples[i])));
    job.catch(() => undefined); // surfaced when awaited below
    return job;
  };
  let next = count > 0 ? load(0) : null;
  for (let k = 0; k < count; k++) {
    const loaded = await next!;
    next = k + 1 < count ? load(k + 1) : null;
    const valid = loaded.length;
    if (last === 'pad') for (let i = 0; loaded.length < B; i++) loaded.push(loaded[i % valid]);
    yield collateTaskBatch(loaded, data.channels, valid);
  }
}
