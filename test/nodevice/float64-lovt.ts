// An independent float64 re-implementation of LoVT / ConVIRT / CLIP* (the
// formulas of shared/lovt-method.md §2–§3 and the PyTorch modules they
// name), written as plain loops over Float64Array. It shares no code with the
// .lovt files, the front end or the reference interpreter: the model tests
// compare the compiled graphs against it. Weights are looked up by their
// PyTorch state_dict names, so a naming mistake in a .lovt file fails here too.

export interface Tensor {
  shape: number[];
  data: Float64Array;
}

export type StateValues = Record<string, ArrayLike<number>>;

export function tensor(shape: number[], data?: ArrayLike<number>): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  if (data) {
    if (data.length !== n) throw new Error(`tensor: ${data.length} values for shape [${shape}]`);
    for (let i = 0; i < n; i++) out[i] = data[i];
  }
  return { shape: [...shape], data: out };
}

export function getState(state: StateValues, name: string, shape: number[]): Tensor {
  const v = state[name];
  if (!v) throw new Error(`float64 reference: state '${name}' is missing`);
  return tensor(shape, v);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ---------------------------------------------------------------- scalar math

/** erf to ~1e-15: Maclaurin series for |x| < 2.5, Lentz continued fraction of erfc beyond. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (continued fraction, modified Lentz)
  const tiny = 1e-300;
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? tiny : d;
    c = ax + an / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

// ---------------------------------------------------------------- layers

export function conv2d(x: Tensor, w: Tensor, stride: number, pad: number, bias?: Tensor): Tensor {
  const [N, C, H, W] = x.shape;
  const [O, Cw, KH, KW] = w.shape;
  if (Cw !== C) throw new Error(`conv2d: ${C} input channels, weight has ${Cw}`);
  const OH = Math.floor((H + 2 * pad - KH) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - KW) / stride) + 1;
  const y = tensor([N, O, OH, OW]);
  const xd = x.data,
    wd = w.data,
    yd = y.data;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let acc = bias ? bias.data[o] : 0;
          for (let c = 0; c < C; c++)
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * stride - pad + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * stride - pad + kw;
                if (iw < 0 || iw >= W) continue;
                acc += xd[((n * C + c) * H + ih) * W + iw] * wd[((o * C + c) * KH + kh) * KW + kw];
              }
            }
          yd[((n * O + o) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

export function maxPool2d(x: Tensor, k: number, stride: number, pad: number): Tensor {
  const [N, C, H, W] = x.shape;
  const OH = Math.floor((H + 2 * pad - k) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - k) / stride) + 1;
  const y = tensor([N, C, OH, OW]);
  for (let nc = 0; nc < N * C; nc++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        let m = -Infinity;
        for (let kh = 0; kh < k; kh++)
          for (let kw = 0; kw < k; kw++) {
            const ih = oh * stride - pad + kh,
              iw = ow * stride - pad + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            m = Math.max(m, x.data[(nc * H + ih) * W + iw]);
          }
        y.data[(nc * OH + oh) * OW + ow] = m;
      }
  return y;
}

export function relu(x: Tensor): Tensor {
  return { shape: [...x.shape], data: x.data.map((v) => (v > 0 ? v : 0)) };
}

export function add(a: Tensor, b: Tensor): Tensor {
  if (a.data.length !== b.data.length) throw new Error('add: size mismatch');
  return { shape: [...a.shape], data: a.data.map((v, i) => v + b.data[i]) };
}

/** Running-statistics update that a training-mode BatchNorm call makes (PyTorch semantics). */
export interface BatchNormUpdate {
  mean: Float64Array; // batch mean
  varUnbiased: Float64Array; // batch variance with n/(n-1), as folded into running_var
}

/**
 * BatchNorm over x [N, C, ...] (channel axis 1). Training: batch statistics with the
 * biased variance; eval: running statistics. eps 1e-5.
 */
export function batchNorm(x: Tensor, state: StateValues, prefix: string, training: boolean, updates?: BatchNormUpdate[]): Tensor {
  const [N, C] = x.shape;
  const inner = numel(x.shape.slice(2));
  const gamma = state[`${prefix}.weight`],
    beta = state[`${prefix}.bias`];
  if (!gamma || !beta) throw new Error(`float64 reference: BatchNorm '${prefix}' has no weight/bias`);
  const y = tensor(x.shape);
  const count = N * inner;
  const mean = new Float64Array(C),
    varB = new Float64Array(C);
  if (training) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) s += x.data[(n * C + c) * inner + i];
      mean[c] = s / count;
      let v = 0;
      for (let n = 0; n < N; n++)
        for (let i = 0; i < inner; i++) {
          const d = x.data[(n * C + c) * inner + i] - mean[c];
          v += d * d;
        }
      varB[c] = v / count;
    }
    updates?.push({ mean, varUnbiased: varB.map((v) => (v * count) / (count - 1)) });
  } else {
    const rm = state[`${prefix}.running_mean`],
      rv = state[`${prefix}.running_var`];
    for (let c = 0; c < C; c++) {
      mean[c] = rm[c];
      varB[c] = rv[c];
    }
  }
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(varB[c] + 1e-5);
      for (let i = 0; i < inner; i++) {
        const k = (n * C + c) * inner + i;
        y.data[k] = (x.data[k] - mean[c]) * inv * gamma[c] + beta[c];
      }
    }
  return y;
}

/** y = x Wᵀ + b over the last axis. */
export function linear(x: Tensor, state: StateValues, prefix: string, outF: number, hasBias = true): Tensor {
  const inF = x.shape[x.shape.length - 1];
  const w = state[`${prefix}.weight`];
  if (!w) throw new Error(`float64 reference: Linear '${prefix}' has no weight`);
  if (w.length !== inF * outF) throw new Error(`float64 reference: ${prefix}.weight has ${w.length} values, expected ${outF}x${inF}`);
  const b = hasBias ? state[`${prefix}.bias`] : undefined;
  const rows = x.data.length / inF;
  const y = tensor([...x.shape.slice(0, -1), outF]);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) acc += x.data[r * inF + i] * w[o * inF + i];
      y.data[r * outF + o] = acc;
    }
  return y;
}

export function layerNorm(x: Tensor, state: StateValues, prefix: string, eps: number): Tensor {
  const D = x.shape[x.shape.length - 1];
  const g = state[`${prefix}.weight`],
    b = state[`${prefix}.bias`];
  const y = tensor(x.shape);
  for (let r = 0; r < x.data.length / D; r++) {
    let m = 0;
    for (let i = 0; i < D; i++) m += x.data[r * D + i];
    m /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x.data[r * D + i] - m) ** 2;
    v /= D;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < D; i++) y.data[r * D + i] = (x.data[r * D + i] - m) * inv * g[i] + b[i];
  }
  return y;
}

/** [B, N, C] <-> [B, C, N] (for BatchNorm1d over positions). */
export function swapLast2(x: Tensor): Tensor {
  const [B, N, C] = x.shape;
  const y = tensor([B, C, N]);
  for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) y.data[(b * C + c) * N + n] = x.data[(b * N + n) * C + c];
  return y;
}

// ---------------------------------------------------------------- ResNet (torchvision)

export type ResNetArch = 'resnet18' | 'resnet34' | 'resnet50';

const RESNET_LAYERS: Record<ResNetArch, number[]> = { resnet18: [2, 2, 2, 2], resnet34: [3, 4, 6, 3], resnet50: [3, 4, 6, 3] };

export interface ResNetFeatures {
  stem: Tensor; // relu(bn1(conv1(x))), before the max pool
  layers: Tensor[]; // layer1..layer4 outputs
}

export function resnet(x: Tensor, state: StateValues, prefix: string, arch: ResNetArch, baseWidth: number, training: boolean): ResNetFeatures {
  const bottleneck = arch === 'resnet50';
  const expansion = bottleneck ? 4 : 1;
  const bn = (t: Tensor, p: string) => batchNorm(t, state, `${prefix}.${p}`, training);
  const conv = (t: Tensor, p: string, outC: number, inC: number, k: number, stride: number, pad: number) =>
    conv2d(t, getState(state, `${prefix}.${p}.weight`, [outC, inC, k, k]), stride, pad);
  const stem = relu(bn(conv(x, 'conv1', baseWidth, 3, 7, 2, 3), 'bn1'));
  let h = maxPool2d(stem, 3, 2, 1);
  let inplanes = baseWidth;
  const layers: Tensor[] = [];
  RESNET_LAYERS[arch].forEach((blocks, li) => {
    const planes = baseWidth * 2 ** li;
    for (let i = 0; i < blocks; i++) {
      const p = `layer${li + 1}.${i}`;
      const stride = i === 0 && li > 0 ? 2 : 1;
      const outC = planes * expansion;
      let out: Tensor;
      if (bottleneck) {
        out = relu(bn(conv(h, `${p}.conv1`, planes, inplanes, 1, 1, 0), `${p}.bn1`));
        out = relu(bn(conv(out, `${p}.conv2`, planes, planes, 3, stride, 1), `${p}.bn2`));
        out = bn(conv(out, `${p}.conv3`, outC, planes, 1, 1, 0), `${p}.bn3`);
      } else {
        out = relu(bn(conv(h, `${p}.conv1`, planes, inplanes, 3, stride, 1), `${p}.bn1`));
        out = bn(conv(out, `${p}.conv2`, planes, planes, 3, 1, 1), `${p}.bn2`);
      }
      const identity = stride !== 1 || inplanes !== outC ? bn(conv(h, `${p}.downsample.0`, outC, inplanes, 1, stride, 0), `${p}.downsample.1`) : h;
      h = relu(add(out, identity));
      inplanes = outC;
    }
    layers.push(h);
  });
  return { stem, layers };
}

/** [B, C, H, W] -> [B, H*W, C], regions in row-major order. */
export function flattenRegions(fmap: Tensor): Tensor {
  const [B, C, H, W] = fmap.shape;
  const y = tensor([B, H * W, C]);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let k = 0; k < H * W; k++) y.data[(b * H * W + k) * C + c] = fmap.data[(b * C + c) * H * W + k];
  return y;
}

// ---------------------------------------------------------------- BERT (Hugging Face BertModel, no pooler)

export interface BertConfig {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
}

export function bert(ids: Int32Array, mask: Int32Array, B: number, T: number, state: StateValues, prefix: string, cfg: BertConfig): Tensor {
  const D = cfg.hidden;
  const word = state[`${prefix}.embeddings.word_embeddings.weight`];
  const pos = state[`${prefix}.embeddings.position_embeddings.weight`];
  const type = state[`${prefix}.embeddings.token_type_embeddings.weight`];
  let h = tensor([B, T, D]);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const id = ids[b * T + t];
      for (let i = 0; i < D; i++) h.data[(b * T + t) * D + i] = word[id * D + i] + pos[t * D + i] + type[i];
    }
  h = layerNorm(h, state, `${prefix}.embeddings.LayerNorm`, 1e-12);
  const dh = D / cfg.heads;
  for (let l = 0; l < cfg.layers; l++) {
    const p = `${prefix}.encoder.layer.${l}`;
    const q = linear(h, state, `${p}.attention.self.query`, D);
    const k = linear(h, state, `${p}.attention.self.key`, D);
    const v = linear(h, state, `${p}.attention.self.value`, D);
    const ctx = tensor([B, T, D]);
    const scores = new Float64Array(T);
    for (let b = 0; b < B; b++)
      for (let hd = 0; hd < cfg.heads; hd++)
        for (let i = 0; i < T; i++) {
          let mx = -Infinity;
          for (let j = 0; j < T; j++) {
            let s = 0;
            for (let e = 0; e < dh; e++) s += q.data[(b * T + i) * D + hd * dh + e] * k.data[(b * T + j) * D + hd * dh + e];
            s = s / Math.sqrt(dh);
            if (!mask[b * T + j]) s = -Infinity; // masked keys get zero probability
            scores[j] = s;
            mx = Math.max(mx, s);
          }
          let z = 0;
          for (let j = 0; j < T; j++) z += scores[j] = Math.exp(scores[j] - mx);
          for (let e = 0; e < dh; e++) {
            let acc = 0;
            for (let j = 0; j < T; j++) acc += (scores[j] / z) * v.data[(b * T + j) * D + hd * dh + e];
            ctx.data[(b * T + i) * D + hd * dh + e] = acc;
          }
        }
    const attn = layerNorm(add(linear(ctx, state, `${p}.attention.output.dense`, D), h), state, `${p}.attention.output.LayerNorm`, 1e-12);
    const inter = linear(attn, state, `${p}.intermediate.dense`, cfg.intermediate);
    inter.data = inter.data.map(geluExact);
    h = layerNorm(add(linear(inter, state, `${p}.output.dense`, D), attn), state, `${p}.output.LayerNorm`, 1e-12);
  }
  return h;
}

/** Sentence vectors: element-wise max over the tokens of each sentence (token_sentence = -1 for none); empty slots 0. */
export function sentenceMax(tokens: Tensor, tokenSentence: Int32Array, S: number): { sentences: Tensor; valid: Float64Array } {
  const [B, T, D] = tokens.shape;
  const y = tensor([B, S, D]);
  const valid = new Float64Array(B * S);
  y.data.fill(-Infinity);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const s = tokenSentence[b * T + t];
      if (s < 0 || s >= S) continue;
      valid[b * S + s] = 1;
      for (let i = 0; i < D; i++) y.data[(b * S + s) * D + i] = Math.max(y.data[(b * S + s) * D + i], tokens.data[(b * T + t) * D + i]);
    }
  for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) if (!valid[b * S + s]) for (let i = 0; i < D; i++) y.data[(b * S + s) * D + i] = 0;
  return { sentences: y, valid };
}

/** Max over the tokens that belong to a sentence (ConVIRT / CLIP* report global). */
export function tokenMax(tokens: Tensor, tokenSentence: Int32Array): Tensor {
  const [B, T, D] = tokens.shape;
  const y = tensor([B, D]);
  y.data.fill(-Infinity);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      if (tokenSentence[b * T + t] >= 0) for (let i = 0; i < D; i++) y.data[b * D + i] = Math.max(y.data[b * D + i], tokens.data[(b * T + t) * D + i]);
  return y;
}

export function averagePool(x: Tensor): Tensor {
  const [B, N, D] = x.shape;
  const y = tensor([B, D]);
  for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) for (let i = 0; i < D; i++) y.data[b * D + i] += x.data[(b * N + n) * D + i] / N;
  return y;
}

// ---------------------------------------------------------------- attention pooling (nn.MultiheadAttention, one query)

export function attentionPool(x: Tensor, valid: Float64Array, state: StateValues, prefix: string, heads: number): { pooled: Tensor; weights: Float64Array } {
  const [B, N, D] = x.shape;
  const W = state[`${prefix}.in_proj_weight`],
    bias = state[`${prefix}.in_proj_bias`];
  const dh = D / heads;
  const proj = (vec: (i: number) => number, block: number) => {
    const out = new Float64Array(D);
    for (let o = 0; o < D; o++) {
      let acc = bias[block * D + o];
      for (let i = 0; i < D; i++) acc += vec(i) * W[(block * D + o) * D + i];
      out[o] = acc;
    }
    return out;
  };
  const attended = tensor([B, D]);
  const weights = new Float64Array(B * N);
  for (let b = 0; b < B; b++) {
    const q = new Float64Array(D);
    for (let n = 0; n < N; n++) for (let i = 0; i < D; i++) q[i] += (valid[b * N + n] ? x.data[(b * N + n) * D + i] : 0) / N;
    const Q = proj((i) => q[i], 0);
    const K: Float64Array[] = [],
      V: Float64Array[] = [];
    for (let n = 0; n < N; n++) {
      K.push(proj((i) => x.data[(b * N + n) * D + i], 1));
      V.push(proj((i) => x.data[(b * N + n) * D + i], 2));
    }
    for (let h = 0; h < heads; h++) {
      const s = new Float64Array(N);
      let mx = -Infinity;
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let e = 0; e < dh; e++) acc += Q[h * dh + e] * K[n][h * dh + e];
        s[n] = valid[b * N + n] ? acc / Math.sqrt(dh) : -Infinity;
        mx = Math.max(mx, s[n]);
      }
      let z = 0;
      for (let n = 0; n < N; n++) z += s[n] = Math.exp(s[n] - mx);
      for (let n = 0; n < N; n++) {
        const p = s[n] / z;
        weights[b * N + n] += p / heads;
        for (let e = 0; e < dh; e++) attended.data[b * D + h * dh + e] += p * V[n][h * dh + e];
      }
    }
  }
  return { pooled: linear(attended, state, `${prefix}.out_proj`, D), weights };
}

// ---------------------------------------------------------------- projection heads

/**
 * nn.Sequential(Linear, BatchNorm1d, ReLU, Linear) (state keys 0, 1, 3) or, without
 * norm, Sequential(Linear, ReLU, Linear) (keys 0, 2), on x [..., d_in]; BN statistics
 * over all leading positions (batch × positions).
 */
export function projectionHead(x: Tensor, state: StateValues, prefix: string, dHidden: number, dOut: number, withBN: boolean, training: boolean): Tensor {
  let h = linear(x, state, `${prefix}.0`, dHidden);
  const lead = h.shape.slice(0, -1);
  if (withBN) {
    const rows = numel(lead);
    const flat = { shape: [rows, dHidden], data: h.data };
    h = { shape: [...lead, dHidden], data: batchNorm(flat, state, `${prefix}.1`, training).data };
  }
  h = relu(h);
  return linear(h, state, withBN ? `${prefix}.3` : `${prefix}.2`, dOut);
}

// ---------------------------------------------------------------- alignment model (shared single-head attention)

export function alignment(
  zi: Tensor,
  zr: Tensor,
  valid: Float64Array,
  state: StateValues,
  prefix: string,
  training: boolean,
  bnUpdates?: BatchNormUpdate[],
): { r2i: Tensor; i2r: Tensor } {
  const [B, K, d] = zi.shape;
  const S = zr.shape[1];
  const ki = linear(zi, state, `${prefix}.key_projection`, d),
    kr = linear(zr, state, `${prefix}.key_projection`, d);
  const vi = linear(zi, state, `${prefix}.value_projection`, d),
    vr = linear(zr, state, `${prefix}.value_projection`, d);
  const score = (b: number, k: number, s: number) => {
    let acc = 0;
    for (let e = 0; e < d; e++) acc += ki.data[(b * K + k) * d + e] * kr.data[(b * S + s) * d + e];
    return acc / Math.sqrt(d);
  };
  const r2iRaw = tensor([B, K, d]);
  const i2rRaw = tensor([B, S, d]);
  for (let b = 0; b < B; b++) {
    // report -> image: each region attends over the valid sentences
    for (let k = 0; k < K; k++) {
      const p = new Float64Array(S);
      let mx = -Infinity;
      for (let s = 0; s < S; s++) mx = Math.max(mx, (p[s] = valid[b * S + s] ? score(b, k, s) : -Infinity));
      let z = 0;
      for (let s = 0; s < S; s++) z += p[s] = Math.exp(p[s] - mx);
      for (let s = 0; s < S; s++) for (let e = 0; e < d; e++) r2iRaw.data[(b * K + k) * d + e] += (p[s] / z) * vr.data[(b * S + s) * d + e];
    }
    // image -> report: each valid sentence attends over the regions; padded sentence rows stay 0
    for (let s = 0; s < S; s++) {
      if (!valid[b * S + s]) continue;
      const p = new Float64Array(K);
      let mx = -Infinity;
      for (let k = 0; k < K; k++) mx = Math.max(mx, (p[k] = score(b, k, s)));
      let z = 0;
      for (let k = 0; k < K; k++) z += p[k] = Math.exp(p[k] - mx);
      for (let k = 0; k < K; k++) for (let e = 0; e < d; e++) i2rRaw.data[(b * S + s) * d + e] += (p[k] / z) * vi.data[(b * K + k) * d + e];
    }
  }
  const out = (raw: Tensor) =>
    swapLast2(batchNorm(swapLast2(linear(raw, state, `${prefix}.output_projection`, d)), state, `${prefix}.norm`, training, bnUpdates));
  // the reference computes report->image first, then image->report (order of the running-stat updates)
  const r2i = out(r2iRaw);
  const i2r = out(i2rRaw);
  return { r2i, i2r };
}

// ---------------------------------------------------------------- losses

export function l2normalizeRows(x: Tensor): Tensor {
  const D = x.shape[x.shape.length - 1];
  const y = tensor(x.shape);
  for (let r = 0; r < x.data.length / D; r++) {
    let s = 0;
    for (let i = 0; i < D; i++) s += x.data[r * D + i] ** 2;
    const n = Math.max(Math.sqrt(s), 1e-12);
    for (let i = 0; i < D; i++) y.data[r * D + i] = x.data[r * D + i] / n;
  }
  return y;
}

function logSumExp(v: number[]): number {
  const m = Math.max(...v);
  return m + Math.log(v.reduce((a, x) => a + Math.exp(x - m), 0));
}

/** ConVIRT InfoNCE in both directions (τ = tau): { i2r, r2i }. */
export function globalLosses(gi: Tensor, gr: Tensor, tau: number): { i2r: number; r2i: number } {
  const [B, D] = gi.shape;
  const a = l2normalizeRows(gi),
    b = l2normalizeRows(gr);
  const s: number[][] = [];
  for (let i = 0; i < B; i++) {
    s.push([]);
    for (let j = 0; j < B; j++) {
      let acc = 0;
      for (let e = 0; e < D; e++) acc += a.data[i * D + e] * b.data[j * D + e];
      s[i].push(acc / tau);
    }
  }
  let i2r = 0,
    r2i = 0;
  for (let i = 0; i < B; i++) {
    i2r += -s[i][i] + logSumExp(s[i]);
    r2i += -s[i][i] + logSumExp(s.map((row) => row[i]));
  }
  return { i2r: i2r / B, r2i: r2i / B };
}

export type TargetMode = 'smooth' | 'uniform' | 'identity';

/** Unnormalised image target g(d_nm) on an h×w grid, d = cell distance / grid diagonal. */
export function gridTarget(h: number, w: number, mode: TargetMode, radius = 0.5, lambda = 1.0): number[][] {
  const N = h * w;
  const diag = Math.sqrt(h * h + w * w);
  const g: number[][] = [];
  for (let n = 0; n < N; n++) {
    g.push([]);
    for (let m = 0; m < N; m++) {
      const dr = Math.floor(n / w) - Math.floor(m / w),
        dc = (n % w) - (m % w);
      const d = Math.sqrt(dr * dr + dc * dc) / diag;
      // d ≤ radius decided on squared integer distances (exact: no rounding at the boundary)
      const inside = dr * dr + dc * dc <= radius * radius * (h * h + w * w);
      g[n].push(mode === 'identity' ? (n === m ? 1 : 0) : !inside ? 0 : mode === 'smooth' ? Math.exp(-lambda * d) : 1);
    }
  }
  return g;
}

export function identityTarget(N: number): number[][] {
  return Array.from({ length: N }, (_, n) => Array.from({ length: N }, (_, m) => (n === m ? 1 : 0)));
}

/**
 * The local losses of one modality: z [B, N, D] local, za [B, N, D] attended
 * (cross-modal), g [N][N] unnormalised target, valid [B*N], w [B*N] pooling
 * weights (or all ones for uniform ω). Padded slots: excluded from every
 * log-sum-exp, 0 target weight, 0 row weight.
 */
export function localLosses(z: Tensor, za: Tensor, g: number[][], valid: ArrayLike<number>, w: ArrayLike<number>, tau: number): { l2a: number; a2l: number } {
  const [B, N, D] = z.shape;
  const a = l2normalizeRows(z),
    c = l2normalizeRows(za);
  let l2a = 0,
    a2l = 0;
  for (let b = 0; b < B; b++) {
    const s: number[][] = [];
    for (let n = 0; n < N; n++) {
      s.push([]);
      for (let m = 0; m < N; m++) {
        let acc = 0;
        for (let e = 0; e < D; e++) acc += a.data[(b * N + n) * D + e] * c.data[(b * N + m) * D + e];
        s[n].push(acc / tau);
      }
    }
    let omegaSum = 0;
    for (let n = 0; n < N; n++) omegaSum += valid[b * N + n] * w[b * N + n];
    for (let n = 0; n < N; n++) {
      if (!valid[b * N + n]) continue;
      const omega = (valid[b * N + n] * w[b * N + n]) / omegaSum;
      const ms = [...Array(N).keys()].filter((m) => valid[b * N + m]);
      const tsum = ms.reduce((acc, m) => acc + g[n][m], 0);
      const row = ms.map((m) => s[n][m]); // s_nm: local n vs attended m
      const col = ms.map((m) => s[m][n]); // s_mn: attended n vs local m
      const lossL2A = -ms.reduce((acc, m) => acc + (g[n][m] / tsum) * s[n][m], 0) + logSumExp(row);
      const lossA2L = -ms.reduce((acc, m) => acc + (g[n][m] / tsum) * s[m][n], 0) + logSumExp(col);
      l2a += omega * lossL2A;
      a2l += omega * lossA2L;
    }
  }
  return { l2a: l2a / B, a2l: a2l / B };
}

// ---------------------------------------------------------------- whole models

export interface ModelSpec {
  arch: ResNetArch;
  resnetWidth: number;
  bert: BertConfig;
  maxSentences: number;
  poolHeads: number;
  projectionHidden: number;
  projectionDim: number;
  projectionBN: boolean;
  imageAggregator: 'attention' | 'average' | 'token_max';
  reportAggregator: 'attention' | 'average' | 'token_max';
  tauGlobal: number;
  /** null: a global-only model (ConVIRT, CLIP*). */
  local: null | { tauLocal: number; imageTarget: TargetMode; localWeights: 'attention' | 'uniform' };
}

export interface ModelInputs {
  B: number;
  T: number;
  imageSize: number;
  image: Float64Array;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenSentence: Int32Array;
}

export interface ModelResult {
  losses: Record<string, number>;
  /** BatchNorm calls of the alignment model's shared norm, in call order. */
  alignmentNorm: BatchNormUpdate[];
  attentionWeights: { image: Float64Array; report: Float64Array };
}

function globalPool(kind: ModelSpec['imageAggregator'], x: Tensor, valid: Float64Array, state: StateValues, prefix: string, heads: number) {
  if (kind === 'attention') return attentionPool(x, valid, state, prefix, heads);
  const [B, N] = x.shape;
  const weights = new Float64Array(B * N);
  for (let b = 0; b < B; b++) {
    const count = valid.slice(b * N, (b + 1) * N).reduce((a, v) => a + v, 0);
    for (let n = 0; n < N; n++) weights[b * N + n] = valid[b * N + n] / count;
  }
  if (kind === 'average') return { pooled: averagePool(x), weights };
  // token max: the max over the valid slots
  const [, , D] = x.shape;
  const pooled = tensor([B, D]);
  pooled.data.fill(-Infinity);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++)
      if (valid[b * N + n]) for (let i = 0; i < D; i++) pooled.data[b * D + i] = Math.max(pooled.data[b * D + i], x.data[(b * N + n) * D + i]);
  return { pooled, weights };
}

/** The loss terms of LoVT / CLIP* / ConVIRT (a GlobalContrastive model) for one batch. */
export function referenceModel(spec: ModelSpec, state: StateValues, x: ModelInputs, training: boolean): ModelResult {
  const { B, T, imageSize } = x;
  const S = spec.maxSentences;
  const fmap = resnet(tensor([B, 3, imageSize, imageSize], x.image), state, 'image_encoder', spec.arch, spec.resnetWidth, training).layers[3];
  const regions = flattenRegions(fmap);
  const K = regions.shape[1];
  const regionValid = new Float64Array(B * K).fill(1);
  const tokens = bert(x.inputIds, x.attentionMask, B, T, state, 'report_encoder', spec.bert);
  const { sentences, valid: sentenceValid } = sentenceMax(tokens, x.tokenSentence, S);
  const imagePool = globalPool(spec.imageAggregator, regions, regionValid, state, 'image_pool', spec.poolHeads);
  const tokenValid = Float64Array.from(x.tokenSentence, (s) => (s >= 0 ? 1 : 0));
  const reportPool =
    spec.reportAggregator === 'token_max'
      ? globalPool('token_max', tokens, tokenValid, state, 'report_pool', spec.poolHeads)
      : globalPool(spec.reportAggregator, sentences, sentenceValid, state, 'report_pool', spec.poolHeads);
  const head = (t: Tensor, p: string) => projectionHead(t, state, p, spec.projectionHidden, spec.projectionDim, spec.projectionBN, training);
  const g = globalLosses(head(imagePool.pooled, 'image_global_head'), head(reportPool.pooled, 'report_global_head'), spec.tauGlobal);
  const losses: Record<string, number> = { global_i2r: g.i2r, global_r2i: g.r2i };
  const alignmentNorm: BatchNormUpdate[] = [];
  if (spec.local) {
    const zi = head(regions, 'image_local_head');
    const zr = head(sentences, 'report_local_head');
    const { r2i, i2r } = alignment(zi, zr, sentenceValid, state, 'alignment', training, alignmentNorm);
    const uniform = spec.local.localWeights === 'uniform';
    const [h, w] = fmap.shape.slice(2);
    const img = localLosses(zi, r2i, gridTarget(h, w, spec.local.imageTarget), regionValid, uniform ? regionValid : imagePool.weights, spec.local.tauLocal);
    const rep = localLosses(zr, i2r, identityTarget(S), sentenceValid, uniform ? sentenceValid : reportPool.weights, spec.local.tauLocal);
    Object.assign(losses, { local_image_l2a: img.l2a, local_image_a2l: img.a2l, local_report_l2a: rep.l2a, local_report_a2l: rep.a2l });
  }
  return { losses, alignmentNorm, attentionWeights: { image: imagePool.weights, report: reportPool.weights } };
}
