// Batches for one split, epoch by epoch. Deterministic given (seed, epoch, position): the
// epoch order is a permutation seeded by (seed, epoch), and each sample's randomness (which
// image, augmentation, sentence swaps) is seeded by (seed, epoch, study index), so a run
// resumed from a saved LoaderPosition produces exactly the batches it would have produced.
// Samples whose images all fail to load are skipped (recorded in the dataset's problems) and
// the next sample in the order takes their place; the position counts samples consumed, so
// skips do not break resumption. Only full batches are produced (the model is compiled for a
// fixed batch size), so the last partial batch of an epoch is dropped.
//
// Prefetching: samples for the next `prefetch` batches are prepared ahead (file reads are
// asynchronous and decoding runs between GPU submissions), so data preparation overlaps
// with GPU work waiting in the event loop.
import { collateBatch, type ModelBatch, type PreparedSample } from './batch.ts';
import { evalTransform, sentenceSwapOrder, trainTransform, type Normalization, type TrainAugmentOptions } from './augment.ts';
import type { MimicCxrDataset, Study } from './mimic.ts';
import { deriveSeed, permutation, Rng } from './random.ts';

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
  /** Sentence-swap geometric p (default 0.4); 0 or undefined-in-eval disables. */
  sentenceSwapP?: number;
  /** Shuffle each epoch (default: `train`). */
  shuffle?: boolean;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  augment?: TrainAugmentOptions;
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
      imageSize: 224, maxLength: 512, sentenceSwapP: 0.4, shuffle: options.train, prefetch: 2,
      ...options,
    };
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

  /** Prepares one sample (image transform + sentence order); null when no image loads. */
  async prepare(study: Study, epoch: number): Promise<PreparedSample | null> {
    const o = this.options;
    // Evaluation uses one fixed draw per study so that validation losses are comparable
    // across epochs.
    const sampleEpoch = o.train ? epoch : 0;
    const imageRng = new Rng(deriveSeed(o.seed, sampleEpoch, study.index, 1));
    const loaded = await this.dataset.loadImage(study, imageRng);
    if (!loaded) return null;
    const image = o.train
      ? trainTransform(loaded.image, imageRng, o.norm, { ...o.augment, size: o.imageSize })
      : evalTransform(loaded.image, o.norm, o.imageSize);
    let sentenceTokens: Int32Array[] = study.sentenceTokens;
    if (o.train && o.sentenceSwapP > 0) {
      const order = sentenceSwapOrder(study.sentenceTokens.length, new Rng(deriveSeed(o.seed, epoch, study.index, 2)), o.sentenceSwapP);
      sentenceTokens = order.map((i) => study.sentenceTokens[i]);
    }
    return { id: `p${study.subjectId}/s${study.studyId}`, image, sentenceTokens };
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
