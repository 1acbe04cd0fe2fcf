// The per-image work of the data pipeline as self-contained jobs — plain data in, plain data
// out — so that it can run on worker threads (runtime/platform/node-workers.ts) as well as in
// the calling thread: a training sample's image (draw, read, decode, augment/resize,
// normalise), a downscaled JPEG copy for the resize cache, and one image's pixel moments.
// A job reads its files itself from the FileSource it is run against and reports read and
// decode failures as data (never thrown), so the caller records them exactly as it would
// have in-process. Every random draw comes from the job's seed: the result does not depend
// on which thread ran it.
import { evalTransform, trainTransform, type Normalization, type TrainAugmentOptions } from './augment.ts';
import { fileStatus, type FileSource } from './fs.ts';
import { decodeImage, encodeJpegGray, imageMoments, resizeBilinear, type GrayImage } from './image.ts';
import { Rng } from './random.ts';

/** An image that could not be used: the file is missing/unreadable, or does not decode. */
export interface ImageFailure {
  kind: 'missing-image' | 'unreadable-image' | 'undecodable-image';
  path: string;
  detail: string;
}

/** The image transform of a sample: training augmentation or the evaluation resize, then normalisation. */
export interface SampleTransform {
  train: boolean;
  norm: Normalization;
  /** Output side. */
  size: number;
  augment?: TrainAugmentOptions;
}

/**
 * One sample's image: one of `paths` drawn uniformly with the stream seeded by `seed` (the
 * others tried in turn when it fails), transformed with the same stream.
 */
export interface SampleImageJob {
  kind: 'sample';
  paths: readonly string[];
  /** Paths known not to decode (path → reason): failures without being read. */
  knownUndecodable: Readonly<Record<string, string>>;
  seed: number;
  transform: SampleTransform;
}

/** A JPEG copy of one image whose longest side is at most `maxSide` (smaller images keep their size). */
export interface ResizeImageJob {
  kind: 'resize';
  path: string;
  maxSide: number;
  quality: number;
}

/** Mean and variance of one image's pixels. */
export interface MomentsImageJob {
  kind: 'moments';
  path: string;
}

export type ImageJob = SampleImageJob | ResizeImageJob | MomentsImageJob;

export interface ImageJobResults {
  sample: { image: GrayImage | null; failures: ImageFailure[] };
  resize: { jpeg: Uint8Array | null; failures: ImageFailure[] };
  moments: { moments: { mean: number; variance: number } | null; failures: ImageFailure[] };
}

export type ImageJobResult<J extends ImageJob = ImageJob> = ImageJobResults[J['kind']];

/**
 * Runs image jobs against a FileSource: in the calling thread or on worker threads. Results
 * are identical either way; callers reassemble them in their own order.
 */
export interface ImageWorkers {
  /** Worker threads the jobs run on (0: the calling thread). */
  readonly threads: number;
  run<J extends ImageJob>(source: FileSource, job: J): Promise<ImageJobResult<J>>;
  /** Stops the worker threads (pending jobs reject); the calling-thread runner has nothing to stop. */
  close(): Promise<void>;
}

/** The calling-thread runner: the default, and the one used in browsers. */
export const IN_PROCESS: ImageWorkers = {
  threads: 0,
  run: (source, job) => runImageJob(source, job),
  close: async () => {},
};

/** Jobs worth keeping in flight for a runner: enough to keep every thread and the file reads busy. */
export function jobsInFlight(workers: ImageWorkers): number {
  return Math.max(4, 4 * workers.threads);
}

/** Reads and decodes one image; a failure (missing file, undecodable bytes) is returned, not thrown. */
export async function readImage(source: FileSource, path: string): Promise<{ image: GrayImage } | { failure: ImageFailure }> {
  let bytes: Uint8Array;
  try {
    bytes = await source.readFile(path);
  } catch (err) {
    // Gone since the data set was opened, or a directory (symlink loop, ...) in its place.
    const missing = (await fileStatus(source, path)).kind === 'missing';
    return { failure: { kind: missing ? 'missing-image' : 'unreadable-image', path, detail: (err as Error).message } };
  }
  try {
    return { image: decodeImage(bytes, path) };
  } catch (err) {
    return { failure: { kind: 'undecodable-image', path, detail: (err as Error).message } };
  }
}

/**
 * The first of `paths` that loads, starting at the one drawn with `rng` (the first when rng
 * is undefined) and going round; null when none does. Every failure met is returned.
 */
export async function drawImage(
  source: FileSource,
  paths: readonly string[],
  knownUndecodable: Readonly<Record<string, string>>,
  rng?: Rng,
): Promise<{ loaded: { image: GrayImage; path: string } | null; failures: ImageFailure[] }> {
  const n = paths.length;
  const first = rng ? rng.int(n) : 0;
  const failures: ImageFailure[] = [];
  for (let k = 0; k < n; k++) {
    const path = paths[(first + k) % n];
    const known = knownUndecodable[path];
    if (known !== undefined) {
      failures.push({ kind: 'undecodable-image', path, detail: known });
      continue;
    }
    const read = await readImage(source, path);
    if ('image' in read) return { loaded: { image: read.image, path }, failures };
    failures.push(read.failure);
  }
  return { loaded: null, failures };
}

/** The downscaled copy the resize cache stores (antialiased, aspect kept). */
export function downscaleToMaxSide(image: GrayImage, maxSide: number): GrayImage {
  const scale = Math.min(1, maxSide / Math.max(image.width, image.height));
  if (scale >= 1) return image;
  return resizeBilinear(image, Math.max(1, Math.round(image.width * scale)), Math.max(1, Math.round(image.height * scale)));
}

export async function runImageJob<J extends ImageJob>(source: FileSource, job: J): Promise<ImageJobResult<J>> {
  return (await runAnyImageJob(source, job)) as ImageJobResult<J>;
}

async function runAnyImageJob(source: FileSource, job: ImageJob): Promise<ImageJobResult> {
  switch (job.kind) {
    case 'sample': {
      const rng = new Rng(job.seed);
      const { loaded, failures } = await drawImage(source, job.paths, job.knownUndecodable, rng);
      if (!loaded) return { image: null, failures };
      const t = job.transform;
      const image = t.train ? trainTransform(loaded.image, rng, t.norm, { ...t.augment, size: t.size }) : evalTransform(loaded.image, t.norm, t.size);
      return { image, failures };
    }
    case 'resize': {
      const read = await readImage(source, job.path);
      if ('failure' in read) return { jpeg: null, failures: [read.failure] };
      return { jpeg: encodeJpegGray(downscaleToMaxSide(read.image, job.maxSide), job.quality), failures: [] };
    }
    case 'moments': {
      const read = await readImage(source, job.path);
      if ('failure' in read) return { moments: null, failures: [read.failure] };
      return { moments: imageMoments(read.image), failures: [] };
    }
  }
}

/**
 * Starts `start` for at most `limit` items at a time and hands each result to `consume` in
 * item order (so that what consume records does not depend on which job finished first).
 */
export async function forEachInOrder<T, R>(
  items: readonly T[],
  limit: number,
  start: (item: T, index: number) => Promise<R>,
  consume: (result: R, item: T, index: number) => void | Promise<void>,
): Promise<void> {
  const pending: Promise<R>[] = [];
  let next = 0;
  const fill = () => {
    while (pending.length < Math.max(1, limit) && next < items.length) {
      const job = start(items[next], next);
      job.catch(() => undefined); // surfaced when awaited below
      pending.push(job);
      next++;
    }
  };
  fill();
  for (let i = 0; i < items.length; i++) {
    const result = await pending.shift()!;
    fill();
    await consume(result, items[i], i);
  }
}
