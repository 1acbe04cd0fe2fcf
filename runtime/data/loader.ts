// Batches for one split, epoch by epoch. Deterministic given (seed, epoch, position): the
// epoch order is a permutation seeded by (seed, epoch), and each sample's randomness (which
// image, augmentation, sentence swaps or the one sentence drawn) is seeded by (seed, epoch,
// study index), so a run resumed from a saved LoaderPosition produces exactly the batches it
// would have produced.
// Samples whose images all fail to load are skipped (recorded in the dataset's problems) and
// the next sample in the order takes their place; the position counts samples consumed, so
// skips do not break resumption. Only full batches are produced (the model is compiled for a
// fixed batch size), so the last partial batch of an epoch is dropped.
//
// Prefetching: samples for the next `prefetch` batches are started as soon as a batch is
// handed out, so while the consumer awaits the GPU (the trainer's step awaits mapAsync of
// its loss outputs) the next batches are read, decoded and augmented. Each sample's image
// is one job of `imageWorkers` (image-jobs.ts): on worker threads when given (Node:
// runtime/platform/node-workers.ts), else in the event loop between GPU waits. Samples are
// awaited in order, so the batches are the same for any number of workers.
//
// Report text (the model's `report_text` config): 'all_sentences' packs the whole report
// (training: sentence order augmented by swaps); 'one_random_sentence' (ConVIRT, CLIP*)
// packs one sentence of the report drawn uniformly per load — per (seed, epoch, study) in
// training, one fixed draw per study in evaluation — as a one-sentence report.
import { collateBatch, type ModelBatch, type PreparedSample } from './batch.ts';
import { sentenceSwapOrder, type Normalization, type TrainAugmentOptions } from './augment.ts';
import { IN_PROCESS, type ImageWorkers } from './image-jobs.ts';
import type { MimicCxrDataset, Study } from './mimic.ts';
import { deriveSeed, permutation, Rng } from './random.ts';
import { echo } from '../../compiler/echo.ts';

/** The values of a model's `report_text` config. */
export const REPORT_TEXTS = ['all_sentences', 'one_random_sentence'] as const;
export type ReportText = (typeof REPORT_TEXTS)[number];

/** Checks a `report_text` value from a model (any type) and returns it typed. */
export function parseReportText(value: unknown): ReportText {
  if (typeof value === 'string' && (REPORT_TEXTS as readonly string[]).includes(value)) return value as ReportText;
  throw new Error(`report_text: unknown value ${echo(value)}; the data pipeline supports ${REPORT_TEXTS.join(', ')}`);
}

export interface LoaderOptions {
  batchSize: number;
  seed: number;
  /** Training mode: shuffled order, image augmentation, sentence swaps. */
  train: boolean;
  norm: Normalization;
  /** Output image side (default 224). */
  imageSize?: number;
  /** T (default 512) and S (default unlimited). */
  maxLength?: number;
  maxSentences?: number;
  /** Which text a sample carries (default all_sentences). */
  reportText?: ReportText;
  /** Sentence-swap geometric p (default 0.4; all_sentences in training only); 0 disables. */
  sentenceSwapP?: number;
  /** Shuffle each epoch (default: `train`). */
  shuffle?: boolean;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  augment?: TrainAugmentOptions;
  /** Where images are decoded and augmented (default: the calling thread). The loader does not close them. */
  imageWorkers?: ImageWorkers;
}

/** Where the loader is: the next batch starts at sample `cursor` of epoch `epoch`'s order. */
export interface LoaderPosition {
  epoch: number;
  cursor: number;
}

export interface LoadedBatch {
  batch: ModelBatch;
  epoch: number;
  /** Batch number within the epoch (0-based). */
  index: number;
  /** The position after this batch: save it to resume with the next batch. */
  next: LoaderPosition;
}

export interface TokenIds {
  clsId: number;
  sepId: number;
  padId: number;
}

export class BatchLoader {
  readonly dataset: MimicCxrDataset;
  readonly studies: readonly Study[];
  readonly options: Required<Omit<LoaderOptions, 'maxSentences' | 'augment'>> & Pick<LoaderOptions, 'maxSentences' | 'augment'>;
  private readonly ids: TokenIds;

  constructor(dataset: MimicCxrDataset, studies: readonly Study[], ids: TokenIds, options: LoaderOptions) {
    if (!(Number.isInteger(options.batchSize) && options.batchSize > 0)) {
      throw new Error(`batch size must be a positive integer, got ${options.batchSize}`);
    }
    this.dataset = dataset;
    this.studies = studies;
    this.ids = ids;
    this.options = {
      imageSize: 224,
      maxLength: 512,
      reportText: 'all_sentences',
      sentenceSwapP: 0.4,
      shuffle: options.train,
      prefetch: 2,
      imageWorkers: IN_PROCESS,
      ...options,
    };
    parseReportText(this.options.reportText);
  }

  /** Full batches per epoch if no sample fails to load. */
  batchesPerEpoch(): number {
    return Math.floor(this.studies.length / this.options.batchSize);
  }

  /** The order in which an epoch visits the studies (indices into `studies`). */
  epochOrder(epoch: number): Int32Array {
    if (!this.options.shuffle) return Int32Array.from(this.studies, (_, i) => i);
    return permutation(this.studies.length, new Rng(deriveSeed(this.options.seed, epoch, 0x5eed)));
  }

  /** Prepares one sample (image transform + its sentences); null when no image loads. */
  async prepare(study: Study, epoch: number): Promise<PreparedSample | null> {
    const o = this.options;
    // Evaluation uses one fixed draw per study so that validation losses are comparable
    // across epochs.
    const sampleEpoch = o.train ? epoch : 0;
    const image = await this.dataset.loadSampleImage(
      study,
      deriveSeed(o.seed, sampleEpoch, study.index, 1),
      { train: o.train, norm: o.norm, size: o.imageSize, augment: o.augment },
      o.imageWorkers,
    );
    if (!image) return null;
    return { id: `p${study.subjectId}/s${study.studyId}`, image, sentenceTokens: this.sentences(study, sampleEpoch) };
  }

  /** The report text of one load, as token ids per sentence. */
  private sentences(study: Study, sampleEpoch: number): Int32Array[] {
    const o = this.options;
    const all = study.sentenceTokens;
    if (o.reportText === 'one_random_sentence') {
      return [all[new Rng(deriveSeed(o.seed, sampleEpoch, study.index, 3)).int(all.length)]];
    }
    if (!(o.train && o.sentenceSwapP > 0)) return all;
    return sentenceSwapOrder(all.length, new Rng(deriveSeed(o.seed, sampleEpoch, study.index, 2)), o.sentenceSwapP).map((i) => all[i]);
  }

  /** Batches of one epoch from a position (default: its start). */
  async *epoch(epoch: number, cursor = 0): AsyncGenerator<LoadedBatch> {
    const o = this.options;
    const order = this.epochOrder(epoch);
    const window = Math.max(1, o.prefetch) * o.batchSize;
    const pending: Promise<PreparedSample | null>[] = [];
    let nextToStart = cursor;
    const fill = () => {
      while (pending.length < window && nextToStart < order.length) {
        const study = this.studies[order[nextToStart++]];
        const job = this.prepare(study, epoch);
        job.catch(() => undefined); // surfaced when awaited below
        pending.push(job);
      }
    };
    let consumed = cursor;
    let index = Math.floor(cursor / o.batchSize); // exact when no sample was skipped before
    let samples: PreparedSample[] = [];
    fill();
    while (pending.length > 0) {
      const sample = await pending.shift()!;
      consumed++;
      fill();
      if (sample) samples.push(sample);
      if (samples.length === o.batchSize) {
        const batch = collateBatch(samples, { maxLength: o.maxLength, maxSentences: o.maxSentences, ...this.ids });
        samples = [];
        yield { batch, epoch, index: index++, next: consumed >= order.length ? { epoch: epoch + 1, cursor: 0 } : { epoch, cursor: consumed } };
      }
    }
  }

  /** Batches across epochs from a saved position, until `epochs` (exclusive) is reached. */
  async *from(position: LoaderPosition, epochs = Infinity): AsyncGenerator<LoadedBatch> {
    for (let e = position.epoch; e < epochs; e++) {
      yield* this.epoch(e, e === position.epoch ? position.cursor : 0);
    }
  }
}
