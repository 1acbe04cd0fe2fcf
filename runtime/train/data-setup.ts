// From a MIMIC-CXR-layout directory (real MIMIC-CXR-JPG or a generated SynthCXR)
// to the two batch streams a training run reads: the shuffled, augmented train
// split and the fixed validate split. Platform-neutral: the caller supplies the
// FileSource (a Node directory, files picked in a browser).

import type { FileSource } from '../data/fs.ts';
import type { Normalization } from '../data/augment.ts';
import { BatchLoader } from '../data/loader.ts';
import { MimicCxrDataset, type Study } from '../data/mimic.ts';
import { computePixelStats } from '../data/stats.ts';
import { ReportTokenizer } from '../data/tokenizer.ts';

export interface TrainingDataOptions {
  /** The model's compiled batch size B. */
  batch: number;
  /** The run seed: data order, augmentation and sentence swaps derive from it. */
  seed: number;
  /** The model's image_size, max_tokens (T) and max_sentences (S). */
  imageSize: number;
  maxTokens: number;
  maxSentences: number;
  /** Vocabulary (vocab.txt or tokenizer.json), relative to the source root or given as a loaded tokenizer. */
  vocab?: string | ReportTokenizer;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export interface TrainingData {
  dataset: MimicCxrDataset;
  tokenizer: ReportTokenizer;
  norm: Normalization;
  train: BatchLoader;
  /** null when the validate split has fewer studies than one batch. */
  validate: BatchLoader | null;
  /** Studies by "p<subject>/s<study>" id (the ids in ModelBatch.ids). */
  studyById: Map<string, Study>;
  /** One line for logs and the report. */
  description: string;
}

export const DEFAULT_VOCAB = 'vocab.txt';

export async function openTrainingData(source: FileSource, opts: TrainingDataOptions): Promise<TrainingData> {
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
  const stats = await computePixelStats(source, trainStudies.flatMap((s) => s.imagePaths), {
    onProgress: (done, total) => opts.onProgress?.('pixel statistics', done, total),
  });
  const norm: Normalization = { mean: stats.mean, std: stats.std };
  const common = {
    batchSize: opts.batch,
    seed: opts.seed,
    norm,
    imageSize: opts.imageSize,
    maxLength: opts.maxTokens,
    maxSentences: opts.maxSentences,
    // Only when given: an explicit undefined would override the loader's default.
    ...(opts.prefetch !== undefined ? { prefetch: opts.prefetch } : {}),
  };
  const ids = { clsId: tokenizer.clsId, sepId: tokenizer.sepId, padId: tokenizer.padId };
  const train = new BatchLoader(dataset, trainStudies, ids, { ...common, train: true });
  const validate = validateStudies.length >= opts.batch ? new BatchLoader(dataset, validateStudies, ids, { ...common, train: false }) : null;
  const studyById = new Map(dataset.studies.map((s) => [`p${s.subjectId}/s${s.studyId}`, s] as const));
  const description =
    `${source.description}: ${trainStudies.length} train / ${validateStudies.length} validate studies, ` +
    `vocabulary ${tokenizer.vocabSize}, pixel mean ${norm.mean.toFixed(4)} std ${norm.std.toFixed(4)}` +
    (validate ? '' : ` (validation off: fewer than ${opts.batch} validate studies)`);
  return { dataset, tokenizer, norm, train, validate, studyById, description };
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
