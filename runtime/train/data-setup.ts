// From a MIMIC-CXR-layout directory (real MIMIC-CXR-JPG or a generated SynthCXR)
// to the two batch streams a training run reads: the shuffled, augmented train
// split and the fixed validate split. Platform-neutral: the caller supplies the
// FileSource (a Node directory, files picked in a browser) and, for full-size
// images, a writable cache: every image is downscaled once into it (full-resolution
// MIMIC JPEGs take ~0.7 s each to decode, 512 px copies ~30 ms) and training reads
// the copies; the train-split pixel statistics are computed on a sample of the
// copies and cached beside them. Image decoding (resizing, statistics, every
// sample's augmentation) runs on the `imageWorkers` the caller gives (on Node:
// runtime/platform/node-workers.ts), else in the calling thread.

import { SubdirFileSource, type FileSource, type WritableFileSource } from '../data/fs.ts';
import type { Normalization } from '../data/augment.ts';
import { BatchLoader, parseReportText } from '../data/loader.ts';
import { MimicCxrDataset, writeResizedImages, type ResizeResult, type Study } from '../data/mimic.ts';
import { computePixelStats, type PixelStatsResult } from '../data/stats.ts';
import { ReportTokenizer } from '../data/tokenizer.ts';
import { IN_PROCESS, type ImageWorkers } from '../data/image-jobs.ts';

export interface TrainingDataOptions {
  /** The model's compiled batch size B. */
  batch: number;
  /** The run seed: data order, augmentation and sentence swaps derive from it. */
  seed: number;
  /** The model's image_size, max_tokens (T) and max_sentences (S). */
  imageSize: number;
  maxTokens: number;
  maxSentences: number;
  /** The model's `report_text` config (default all_sentences); any other value is an error. */
  reportText?: unknown;
  /** Vocabulary (vocab.txt or tokenizer.json), relative to the source root or given as a loaded tokenizer. */
  vocab?: string | ReportTokenizer;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  /**
   * Where the downscaled image copies (one subdirectory per size, `resized-<px>`) and their
   * pixel statistics are kept, reused by later runs. Without it the images are read as they
   * are and the statistics are cached in the source.
   */
  imageCache?: WritableFileSource;
  /** Longest side of the cached copies (default 512). */
  resizeMaxSide?: number;
  /** Images sampled for the pixel statistics (default 4000; all when there are fewer). */
  statsSampleSize?: number;
  /**
   * Where images are decoded, resized and augmented (default: the calling thread). The
   * training data takes them over: TrainingData.close() closes them.
   */
  imageWorkers?: ImageWorkers;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface TrainingData {
  dataset: MimicCxrDataset;
  tokenizer: ReportTokenizer;
  norm: Normalization;
  pixelStats: PixelStatsResult;
  /** The resized copy's bookkeeping (null without an image cache). */
  resized: ResizeResult | null;
  train: BatchLoader;
  /** null when the validate split has fewer studies than one batch. */
  validate: BatchLoader | null;
  /** Studies by "p<subject>/s<study>" id (the ids in ModelBatch.ids). */
  studyById: Map<string, Study>;
  /** One line for logs and the report, ending with the dropped data by reason (MimicCxrDataset.dropSummary). */
  description: string;
  /** Stops the image workers (pending loads reject); the loaders cannot be used afterwards. */
  close(): Promise<void>;
}

export const DEFAULT_RESIZE_MAX_SIDE = 512;
export const DEFAULT_STATS_SAMPLE_SIZE = 4000;

export const DEFAULT_VOCAB = 'vocab.txt';

export async function openTrainingData(source: FileSource, opts: TrainingDataOptions): Promise<TrainingData> {
  const workers = opts.imageWorkers ?? IN_PROCESS;
  try {
    return await openWith(source, opts, workers);
  } catch (err) {
    await workers.close();
    throw err;
  }
}

async function openWith(source: FileSource, opts: TrainingDataOptions, workers: ImageWorkers): Promise<TrainingData> {
  const reportText = parseReportText(opts.reportText ?? 'all_sentences');
  const tokenizer = opts.vocab instanceof ReportTokenizer ? opts.vocab : await loadVocab(source, opts.vocab);
  const dataset = await MimicCxrDataset.open(source, { tokenizer, onProgress: opts.onProgress });
  const trainStudies = dataset.split('train');
  const validateStudies = dataset.split('validate');
  if (trainStudies.length < opts.batch) {
    throw new Error(
      `${source.description}: the train split has ${trainStudies.length} usable studies, fewer than one batch of ${opts.batch}` +
        (dataset.problems.length ? ` (${dataset.problems.length} problems while reading: ${dataset.summary().replace(/\n/g, '; ')})` : ''),
    );
  }
  let resized: ResizeResult | null = null;
  let imageSource: FileSource = source;
  if (opts.imageCache) {
    const maxSide = opts.resizeMaxSide ?? DEFAULT_RESIZE_MAX_SIDE;
    const copies = new SubdirFileSource(opts.imageCache, `resized-${maxSide}`);
    resized = await writeResizedImages(dataset, dataset.studies, copies, {
      maxSide,
      workers,
      onProgress: (done, total) => opts.onProgress?.(`resizing images to ${maxSide} px`, done, total),
    });
    dataset.useImageSource(copies, resized.undecodable);
    imageSource = copies;
  }
  // Statistics of the images training reads (the copies when resized), known-bad ones left out.
  const statsImages = trainStudies.flatMap((s) => s.imagePaths).filter((p) => !resized?.undecodable.has(p));
  const pixelStats = await computePixelStats(imageSource, statsImages, {
    sampleSize: opts.statsSampleSize ?? DEFAULT_STATS_SAMPLE_SIZE,
    workers,
    onProgress: (done, total) => opts.onProgress?.('pixel statistics', done, total),
  });
  const norm: Normalization = { mean: pixelStats.mean, std: pixelStats.std };
  const common = {
    batchSize: opts.batch,
    seed: opts.seed,
    norm,
    imageSize: opts.imageSize,
    maxLength: opts.maxTokens,
    maxSentences: opts.maxSentences,
    reportText,
    imageWorkers: workers,
    // Only when given: an explicit undefined would override the loader's default.
    ...(opts.prefetch !== undefined ? { prefetch: opts.prefetch } : {}),
  };
  const ids = { clsId: tokenizer.clsId, sepId: tokenizer.sepId, padId: tokenizer.padId };
  const train = new BatchLoader(dataset, trainStudies, ids, { ...common, train: true });
  const validate = validateStudies.length >= opts.batch ? new BatchLoader(dataset, validateStudies, ids, { ...common, train: false }) : null;
  const studyById = new Map(dataset.studies.map((s) => [`p${s.subjectId}/s${s.studyId}`, s] as const));
  const description =
    `${source.description}: ${trainStudies.length} train / ${validateStudies.length} validate studies, ` +
    `vocabulary ${tokenizer.vocabSize}, pixel mean ${norm.mean.toFixed(4)} std ${norm.std.toFixed(4)} (${pixelStats.images} images${pixelStats.fromCache ? ', cached' : ''})` +
    (resized ? `, images resized into ${imageSource.description} (${resized.written} new, ${resized.kept} reused, ${resized.failed} unreadable)` : '') +
    (reportText === 'one_random_sentence' ? ', one random sentence per report' : '') +
    (validate ? '' : ` (validation off: fewer than ${opts.batch} validate studies)`) +
    `; ${dataset.dropSummary()}`;
  return { dataset, tokenizer, norm, pixelStats, resized, train, validate, studyById, description, close: () => workers.close() };
}

async function loadVocab(source: FileSource, vocab: string | undefined): Promise<ReportTokenizer> {
  const path = vocab ?? DEFAULT_VOCAB;
  if (!(await source.exists(path))) {
    throw new Error(
      `${source.description}: no vocabulary '${path}'. Give the BERT vocabulary of the report encoder with --vocab FILE ` +
        '(vocab.txt or tokenizer.json; Bio_ClinicalBERT for the reference models).',
    );
  }
  return ReportTokenizer.load(source, path);
}
