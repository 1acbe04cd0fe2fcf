// Collating prepared samples into the model's input tensors:
//   image           f32[B, 3, H, W]  one grayscale channel repeated 3× (already normalised)
//   input_ids       i32[B, T]        [CLS] sentence tokens [SEP] [PAD]…
//   attention_mask  i32[B, T]        1 on [CLS], tokens and [SEP]
//   token_sentence  i32[B, T]        sentence index per token, −1 on [CLS]/[SEP]/padding
// Sentences beyond the T−2 token budget or with index ≥ S are dropped (tokenizer.ts).
import type { HostTensor } from '../safetensors.ts';
import type { GrayImage } from './image.ts';
import { packSentences } from './tokenizer.ts';

export interface PreparedSample {
  /** Identifies the sample in messages (e.g. "p10/p10000032/s50414267"). */
  id: string;
  /** Normalised image, H × W. */
  image: GrayImage;
  /** Token ids per sentence (after any sentence augmentation), without special tokens. */
  sentenceTokens: readonly Int32Array[];
}

export interface CollateOptions {
  /** T (default 512). */
  maxLength?: number;
  /** S sentence slots (default: unlimited). */
  maxSentences?: number;
  clsId: number;
  sepId: number;
  padId: number;
}

export interface ModelBatch {
  inputs: {
    image: HostTensor & { dtype: 'f32' };
    input_ids: HostTensor & { dtype: 'i32' };
    attention_mask: HostTensor & { dtype: 'i32' };
    token_sentence: HostTensor & { dtype: 'i32' };
  };
  /** Sample ids, in batch order. */
  ids: string[];
  /** Sentences kept per sample (≤ S). */
  sentenceCounts: number[];
  /** Samples whose report lost sentences or tokens to the T / S limits. */
  truncatedSamples: number;
}

export function collateBatch(samples: readonly PreparedSample[], opts: CollateOptions): ModelBatch {
  const B = samples.length;
  if (B === 0) throw new Error('collateBatch: no samples');
  const { width: W, height: H } = samples[0].image;
  const T = opts.maxLength ?? 512;
  const image = new Float32Array(B * 3 * H * W);
  const inputIds = new Int32Array(B * T);
  const attentionMask = new Int32Array(B * T);
  const tokenSentence = new Int32Array(B * T);
  const sentenceCounts: number[] = [];
  let truncatedSamples = 0;
  samples.forEach((sample, b) => {
    if (sample.image.width !== W || sample.image.height !== H) {
      throw new Error(`collateBatch: sample ${sample.id} image is ${sample.image.width}×${sample.image.height}, batch expects ${W}×${H}`);
    }
    const plane = H * W;
    for (let c = 0; c < 3; c++) image.set(sample.image.data, (b * 3 + c) * plane);
    const packed = packSentences(sample.sentenceTokens, {
      maxLength: T,
      maxSentences: opts.maxSentences,
      clsId: opts.clsId,
      sepId: opts.sepId,
      padId: opts.padId,
    });
    inputIds.set(packed.inputIds, b * T);
    attentionMask.set(packed.attentionMask, b * T);
    tokenSentence.set(packed.tokenSentence, b * T);
    sentenceCounts.push(packed.sentenceCount);
    if (packed.truncated) truncatedSamples++;
  });
  return {
    inputs: {
      image: { dtype: 'f32', shape: [B, 3, H, W], data: image },
      input_ids: { dtype: 'i32', shape: [B, T], data: inputIds },
      attention_mask: { dtype: 'i32', shape: [B, T], data: attentionMask },
      token_sentence: { dtype: 'i32', shape: [B, T], data: tokenSentence },
    },
    ids: samples.map((s) => s.id),
    sentenceCounts,
    truncatedSamples,
  };
}
