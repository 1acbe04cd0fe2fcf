// A tiny two-tower contrastive model (CLIP/ConVIRT-style) written directly in
// the graph IR with GraphBuilder: the model of the browser example and the
// fixture of test/browser/chromium.test.ts. Small enough to compile and train
// in seconds on a software WebGPU (lavapipe, SwiftShader), yet it has the op mix
// of the real models: conv2d, pooling, matmul, an embedding gather, dropout,
// GELU, L2 normalisation, logsumexp/softmax and reductions.

import { GraphBuilder } from '../../compiler/builder.ts';
import type { Graph } from '../../compiler/ir.ts';
import { Rng } from '../../compiler/random.ts';
import type { HostTensor } from '../../runtime/state.ts';

export interface TinyModelConfig {
  batch: number;
  /** Image side (square, one channel). */
  imageSize: number;
  /** conv2d output channels. */
  channels: number;
  /** Tokens per report and vocabulary size. */
  tokens: number;
  vocab: number;
  /** Token embedding width and joint embedding width. */
  embed: number;
  joint: number;
  /** Contrastive temperature τ. */
  temperature: number;
  /** Dropout probability on the pooled text features. */
  dropout: number;
}

export const TINY_CONFIG: TinyModelConfig = { batch: 4, imageSize: 8, channels: 4, tokens: 6, vocab: 16, embed: 8, joint: 8, temperature: 0.1, dropout: 0.1 };

/**
 * The forward graph: inputs `images` f32 [B,1,S,S], `tokens` i32 [B,T],
 * `token_mask` f32 [B,T], `dropout_seed` i32 []; outputs `loss` (symmetric
 * InfoNCE), `logits` [B,B] and `probs` (row softmax).
 */
export function buildTinyContrastive(cfg: TinyModelConfig = TINY_CONFIG): Graph {
  const { batch: B, imageSize: S, channels: C, tokens: T, vocab: V, embed: E, joint: D } = cfg;
  const b = new GraphBuilder();
  const pytorchDefault = { kind: 'kaiming_uniform', mode: 'fan_in', gain: Math.sqrt(1 / 3) } as const;

  // y [M, N] = x [M, K] · wᵀ for a weight w [N, K] (PyTorch's Linear layout).
  const linearNoBias = (x: number, w: number): number => b.emit('matmul', [x, w], { transA: false, transB: true });
  const linear = (prefix: string, x: number, N: number, K: number): number => {
    const w = b.state(`${prefix}.weight`, [N, K], pytorchDefault, true);
    const bias = b.state(`${prefix}.bias`, [N], { kind: 'uniform', low: -1 / Math.sqrt(K), high: 1 / Math.sqrt(K) }, true);
    return b.add(linearNoBias(x, w), bias);
  };
  const mean = (x: number, axes: number[], count: number) => b.mul(b.sum(x, axes), b.scalar(1 / count));
  const l2normalize = (x: number) => b.mul(x, b.emit('rsqrt', [b.add(b.sum(b.emit('square', [x]), [-1], true), b.scalar(1e-12))]));

  // Image tower: 3×3 conv (padding 1) + bias, ReLU, 2×2 average pool, global mean, projection.
  const images = b.input('images', [B, 1, S, S]);
  const convW = b.state('image.conv.weight', [C, 1, 3, 3], pytorchDefault, true);
  const conv = b.emit('conv2d', [images, convW], { stride: 1, padding: 1, dilation: 1, groups: 1 });
  const convB = b.state('image.conv.bias', [C], { kind: 'uniform', low: -1 / 3, high: 1 / 3 }, true);
  const act = b.emit('relu', [b.add(conv, b.reshape(convB, [1, C, 1, 1]))]);
  const pooled = b.emit('avg_pool2d', [act], { kernel: 2, stride: 2, padding: 0 });
  const imageFeat = mean(pooled, [2, 3], (S / 2) * (S / 2)); // [B, C]
  const imageEmb = l2normalize(linear('image.proj', imageFeat, D, C));

  // Text tower: embedding lookup, masked mean over tokens, dropout, GELU, projection.
  const tokens = b.input('tokens', [B, T], 'i32');
  const mask = b.input('token_mask', [B, T]);
  const seed = b.input('dropout_seed', [], 'i32');
  const table = b.state('text.embedding', [V, E], { kind: 'normal', mean: 0, std: 1 }, true);
  const embedded = b.emit('gather', [table, tokens]); // [B, T, E]
  const summed = b.sum(b.mul(embedded, b.reshape(mask, [B, T, 1])), [1]); // [B, E]
  const count = b.emit('maximum', [b.sum(mask, [1], true), b.scalar(1)]); // [B, 1]
  const textFeat = b.emit('gelu', [b.emit('dropout', [b.div(summed, count), seed], { p: cfg.dropout, salt: 17 })]);
  const textEmb = l2normalize(linear('text.proj', textFeat, D, E));

  // Symmetric InfoNCE: mean over both directions of logsumexp(row) - diagonal.
  const logits = b.mul(linearNoBias(imageEmb, textEmb), b.scalar(1 / cfg.temperature)); // [B, B]
  const eye = b.emit('eq', [
    b.emit('iota', [], { axis: 0 }, { shape: [B, B], dtype: 'i32' }),
    b.emit('iota', [], { axis: 1 }, { shape: [B, B], dtype: 'i32' }),
  ]);
  const diagonal = b.sum(b.mul(logits, eye), [1]); // [B]
  const imageToText = b.sub(b.emit('logsumexp', [logits], { axis: 1 }), diagonal);
  const textToImage = b.sub(b.emit('logsumexp', [logits], { axis: 0 }), diagonal);
  const loss = b.mul(b.add(mean(imageToText, [0], B), mean(textToImage, [0], B)), b.scalar(0.5));
  b.output('loss', loss);
  b.output('logits', logits);
  b.output('probs', b.emit('softmax', [logits], { axis: 1 }));
  return b.graph;
}

/** A deterministic synthetic batch: images with a per-sample bright square, reports whose tokens name it. */
export function tinyBatch(cfg: TinyModelConfig, seed: number, dropoutSeed: number): Record<string, HostTensor> {
  const rng = new Rng(seed);
  const { batch: B, imageSize: S, tokens: T, vocab: V } = cfg;
  const images = new Float32Array(B * S * S);
  const tokens = new Int32Array(B * T);
  const mask = new Float32Array(B * T);
  for (let i = 0; i < B; i++) {
    const r = Math.floor(rng.uniform() * (S - 2));
    const c = Math.floor(rng.uniform() * (S - 2));
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) images[i * S * S + y * S + x] = 0.2 * (rng.uniform() - 0.5) + (y >= r && y < r + 3 && x >= c && x < c + 3 ? 1 : 0);
    const length = 2 + Math.floor(rng.uniform() * (T - 1)); // 2..T real tokens, the rest padding
    for (let t = 0; t < T; t++) {
      const real = t < length;
      tokens[i * T + t] = real ? (t === 0 ? 1 + r * (S - 2) + c : Math.floor(rng.uniform() * V)) % V : 0;
      mask[i * T + t] = real ? 1 : 0;
    }
  }
  return { images, tokens, token_mask: mask, dropout_seed: Int32Array.of(dropoutSeed) };
}
