// Pixel normalisation statistics of the training split (method §1): images in [0, 1];
// mean = mean of per-image means; variance = mean of per-image variances + variance of the
// per-image means (the law of total variance for equally sized images). Computed once and
// cached in a JSON file beside the data, keyed by a hash of the image list, so a changed
// split or subset recomputes while repeated runs reuse the result.
import { type FileSource, isWritable, readText } from './fs.ts';
import { imageMoments, type GrayImage } from './image.ts';
import { forEachInOrder, IN_PROCESS, jobsInFlight, type ImageWorkers } from './image-jobs.ts';
import { deriveSeed, fnv1a64Hex, permutation, Rng } from './random.ts';

export interface PixelStats {
  mean: number;
  std: number;
  /** Images that contributed. */
  images: number;
}

export const PIXEL_STATS_FILE = 'lovt-pixel-stats.json';

/** Combines per-image moments (float64) into dataset mean/std. */
export function combineImageMoments(moments: readonly { mean: number; variance: number }[]): PixelStats {
  const n = moments.length;
  if (n === 0) throw new Error('pixel statistics need at least one image');
  let meanOfMeans = 0;
  let meanOfVariances = 0;
  for (const m of moments) {
    meanOfMeans += m.mean;
    meanOfVariances += m.variance;
  }
  meanOfMeans /= n;
  meanOfVariances /= n;
  let varianceOfMeans = 0;
  for (const m of moments) varianceOfMeans += (m.mean - meanOfMeans) ** 2;
  varianceOfMeans /= n;
  return { mean: meanOfMeans, std: Math.sqrt(meanOfVariances + varianceOfMeans), images: n };
}

/** The same statistics from whole images. */
export function pixelStatsOfImages(images: readonly GrayImage[]): PixelStats {
  return combineImageMoments(images.map(imageMoments));
}

/** Cache key: hash of the sorted image paths. */
export function pixelStatsKey(imagePaths: readonly string[]): string {
  return fnv1a64Hex([...imagePaths].sort().join('\n'));
}

interface StatsCacheFile {
  version: 1;
  entries: Record<string, PixelStats & { skipped: number }>;
}

async function readCache(source: FileSource, path: string): Promise<StatsCacheFile> {
  if (!(await source.exists(path))) return { version: 1, entries: {} };
  try {
    const parsed = JSON.parse(await readText(source, path)) as StatsCacheFile;
    if (parsed && parsed.version === 1 && typeof parsed.entries === 'object') return parsed;
  } catch {
    // A damaged cache is recomputed and rewritten, never fatal.
  }
  return { version: 1, entries: {} };
}

export interface PixelStatsResult extends PixelStats {
  key: string;
  fromCache: boolean;
  /** Images that could not be read or decoded (left out of the statistics). */
  skipped: { path: string; reason: string }[];
}

export interface PixelStatsOptions {
  /** Cache file path relative to the source root (default lovt-pixel-stats.json). */
  cacheFile?: string;
  /** Called after each image with (done, total). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Use a fixed pseudo-random subset of this many images (all when undefined or larger than
   * the list). Full-resolution MIMIC decodes at ~0.7 s per image, so the exact statistics of
   * ~240k training images take days; a few thousand images give the same values to about
   * three decimals.
   */
  sampleSize?: number;
  /** Where the images are decoded (default: the calling thread). */
  workers?: ImageWorkers;
}

/**
 * Dataset statistics over the given images (typically every frontal image of the train
 * split), from the cache when the same image list was seen before. Unreadable images are
 * skipped and listed.
 */
export async function computePixelStats(source: FileSource, imagePaths: readonly string[], opts: PixelStatsOptions = {}): Promise<PixelStatsResult> {
  const cacheFile = opts.cacheFile ?? PIXEL_STATS_FILE;
  if (opts.sampleSize !== undefined && opts.sampleSize < imagePaths.length) {
    if (!(Number.isInteger(opts.sampleSize) && opts.sampleSize > 0))
      throw new Error(`pixel statistics: sampleSize must be a positive integer, got ${opts.sampleSize}`);
    // The subset depends only on the (sorted) list, so the cache key stays stable.
    const sorted = [...imagePaths].sort();
    const order = permutation(sorted.length, new Rng(deriveSeed(0x57a75, sorted.length)));
    imagePaths = Array.from(order.subarray(0, opts.sampleSize), (i) => sorted[i]);
  }
  const key = pixelStatsKey(imagePaths);
  const cache = await readCache(source, cacheFile);
  const hit = cache.entries[key];
  if (hit && Number.isFinite(hit.mean) && Number.isFinite(hit.std) && hit.std > 0) {
    return { mean: hit.mean, std: hit.std, images: hit.images, key, fromCache: true, skipped: [] };
  }
  const workers = opts.workers ?? IN_PROCESS;
  const moments: { mean: number; variance: number }[] = [];
  const skipped: { path: string; reason: string }[] = [];
  // Combined in list order, so the sums (and the statistics) do not depend on the workers.
  await forEachInOrder(
    imagePaths,
    jobsInFlight(workers),
    (path) => workers.run(source, { kind: 'moments', path }),
    (result, path, i) => {
      if (result.moments) moments.push(result.moments);
      else skipped.push({ path, reason: result.failures[0].detail });
      opts.onProgress?.(i + 1, imagePaths.length);
    },
  );
  if (moments.length === 0) throw new Error(`pixel statistics: none of the ${imagePaths.length} images could be decoded`);
  const stats = combineImageMoments(moments);
  if (!(stats.std > 0)) throw new Error(`pixel statistics: the images have zero variance (std ${stats.std})`);
  if (isWritable(source)) {
    cache.entries[key] = { ...stats, skipped: skipped.length };
    await source.writeFile(cacheFile, new TextEncoder().encode(JSON.stringify(cache, null, 2) + '\n'));
  }
  return { ...stats, key, fromCache: false, skipped };
}
