// Pooling, resampling and indexing ops on [N, C, H, W] images and token
// sequences, with their gradients as ops of their own (gather form on the
// device, codegen/nn.ts). The gradients of max_pool2d and segment_max route
// dy to the first maximum; differentiating those routes again (second order)
// is refused.

import { type NodeOf, type OpName, type PoolAttrs, type Shape, type UpsampleAttrs, numel, shapeStr } from '../ir.ts';
import { type OpTablePart, type TypedValue, type VjpRule, NO_FLOPS, convOut, f32, need, pair, pick } from './def.ts';
import { beats } from './float64.ts';

const POOL_ATTRS = ['kernel', 'stride', 'padding'] as const;
const UPSAMPLE_ATTRS = ['mode', 'alignCorners'] as const;

const unsupportedSecondOrder =
  (op: 'max_pool2d_grad' | 'segment_max_grad'): VjpRule<OpName> =>
  () => {
    throw new Error(
      `autodiff: the gradient of ${op} with respect to its incoming gradient is not supported (second-order differentiation through ${op.replace('_grad', '')})`,
    );
  };

// ---------------------------------------------------------------------------
// Pooling

function poolType(ins: TypedValue[], a: PoolAttrs, op: string): TypedValue {
  const x = ins[0].shape;
  need(x.length === 4, `${op} needs [N, C, H, W], got ${shapeStr(x)}`);
  const [kh, kw] = pair(a.kernel, 'kernel');
  const [sh, sw] = pair(a.stride, 'stride');
  const [ph, pw] = pair(a.padding, 'padding');
  return f32([x[0], x[1], convOut(x[2], kh, sh, ph, 1), convOut(x[3], kw, sw, pw, 1)]);
}

/** The window geometry of a pooling op (shared by the float64 reference and the WGSL kernels). */
export interface PoolGeometry {
  N: number;
  C: number;
  H: number;
  W: number;
  OH: number;
  OW: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
}

export function poolGeometry(attrs: PoolAttrs, x: Shape, y: Shape): PoolGeometry {
  const [kh, kw] = pair(attrs.kernel, 'kernel');
  const [sh, sw] = pair(attrs.stride, 'stride');
  const [ph, pw] = pair(attrs.padding, 'padding');
  const g = { N: x[0], C: x[1], H: x[2], W: x[3], OH: y[2], OW: y[3], kh, kw, sh, sw, ph, pw };
  const oh = convOut(g.H, kh, sh, ph, 1);
  const ow = convOut(g.W, kw, sw, pw, 1);
  if (oh !== g.OH || ow !== g.OW)
    throw new Error(`pooling ${shapeStr(x)} with kernel ${kh}x${kw}, stride ${sh},${sw}, padding ${ph},${pw} gives ${oh}x${ow}, not ${g.OH}x${g.OW}`);
  return g;
}

/** Calls visit(xIndex, yIndex) for each in-bounds tap of each window; padded positions are skipped. */
function poolTaps(g: PoolGeometry, visit: (xi: number, yi: number) => void): void {
  for (let nc = 0; nc < g.N * g.C; nc++)
    for (let oh = 0; oh < g.OH; oh++)
      for (let ow = 0; ow < g.OW; ow++) {
        const yi = (nc * g.OH + oh) * g.OW + ow;
        for (let i = 0; i < g.kh; i++) {
          const ih = oh * g.sh - g.ph + i;
          if (ih < 0 || ih >= g.H) continue;
          for (let j = 0; j < g.kw; j++) {
            const iw = ow * g.sw - g.pw + j;
            if (iw >= 0 && iw < g.W) visit((nc * g.H + ih) * g.W + iw, yi);
          }
        }
      }
}

/** Per output element, the x index of the first (row-major in the window) maximum, or -1 for an all-padding window. */
function maxPoolArgmax(x: Float64Array, g: PoolGeometry): Int32Array {
  const arg = new Int32Array(g.N * g.C * g.OH * g.OW).fill(-1);
  poolTaps(g, (xi, yi) => {
    if (arg[yi] < 0 || beats(x[xi], x[arg[yi]])) arg[yi] = xi;
  });
  return arg;
}

/** Taps per window times the windows (of `y`, the pooled side). */
function windowFlops(n: NodeOf<'max_pool2d' | 'avg_pool2d' | 'max_pool2d_grad' | 'avg_pool2d_grad'>, y: Shape): number {
  const [kh, kw] = pair(n.attrs.kernel, 'kernel');
  return numel(y) * kh * kw;
}

// ---------------------------------------------------------------------------
// Upsampling

/** For one axis of upsampling: output position -> two source indices and the weight of the second. */
export interface AxisTaps {
  i0: Int32Array;
  i1: Int32Array;
  w1: Float64Array;
}

/** The per-axis taps of docs/ir.md (Pooling and resampling), in float64; the device kernels bake them as tables. */
export function upsampleAxis(inSize: number, outSize: number, mode: string, alignCorners: boolean): AxisTaps {
  const t: AxisTaps = { i0: new Int32Array(outSize), i1: new Int32Array(outSize), w1: new Float64Array(outSize) };
  for (let d = 0; d < outSize; d++) {
    if (mode === 'nearest') {
      // PyTorch's legacy 'nearest': floor(d · in / out), computed exactly in integers.
      t.i0[d] = t.i1[d] = Math.min(Math.floor((d * inSize) / outSize), inSize - 1);
      continue;
    }
    if (mode !== 'bilinear') throw new Error(`upsample2d mode must be 'nearest' or 'bilinear', got ${JSON.stringify(mode)}`);
    const src = alignCorners ? (outSize > 1 ? (d * (inSize - 1)) / (outSize - 1) : 0) : Math.max(((d + 0.5) * inSize) / outSize - 0.5, 0);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    t.i0[d] = i0;
    t.i1[d] = Math.min(i0 + 1, inSize - 1);
    t.w1[d] = src - i0;
  }
  return t;
}

/** Calls visit(xIndex, yIndex, weight) for each non-zero interpolation weight of y = upsample(x). */
function upsampleTaps(attrs: UpsampleAttrs, x: Shape, y: Shape, visit: (xi: number, yi: number, w: number) => void): void {
  const align = !!attrs.alignCorners;
  const [N, C, H, W] = x;
  const [OH, OW] = [y[2], y[3]];
  const ty = upsampleAxis(H, OH, attrs.mode, align);
  const tx = upsampleAxis(W, OW, attrs.mode, align);
  for (let nc = 0; nc < N * C; nc++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        const yi = (nc * OH + oh) * OW + ow;
        const rows = [ty.i0[oh], ty.i1[oh]];
        const rw = [1 - ty.w1[oh], ty.w1[oh]];
        const cols = [tx.i0[ow], tx.i1[ow]];
        const cw = [1 - tx.w1[ow], tx.w1[ow]];
        for (let a = 0; a < 2; a++)
          for (let b = 0; b < 2; b++) {
            const w = rw[a] * cw[b];
            if (w !== 0) visit((nc * H + rows[a]) * W + cols[b], yi, w);
          }
      }
}

// ---------------------------------------------------------------------------
// Indexing

function checkRow(r: number, rows: number, what: string): void {
  if (!(r >= 0 && r < rows)) throw new Error(`${what} index ${r} is out of range [0, ${rows})`);
}

/** Per (b, s, d) of segment_max, the token t of the first maximum, or -1 for an empty segment. */
function segmentArgmax(x: Float64Array, seg: Float64Array, xShape: Shape, S: number): Int32Array {
  const [B, T, D] = xShape;
  const arg = new Int32Array(B * S * D).fill(-1);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const s = seg[b * T + t];
      if (s < 0 || s >= S) continue;
      for (let d = 0; d < D; d++) {
        const o = (b * S + s) * D + d;
        if (arg[o] < 0 || beats(x[(b * T + t) * D + d], x[(b * T + arg[o]) * D + d])) arg[o] = t;
      }
    }
  return arg;
}

export const NN_DEFS = {
  max_pool2d: {
    kind: 'nn',
    arity: 1,
    epilogue: true,
    type: (ins, a) => poolType(ins, a, 'max_pool2d'),
    grad: { vjp: ({ b, g, x, node }) => [b.emit('max_pool2d_grad', [x[0], g], pick(node.attrs, POOL_ATTRS))] },
    eval: ({ node, ins, shapes }) => {
      const arg = maxPoolArgmax(ins[0], poolGeometry(node.attrs, shapes[0], node.shape));
      return Float64Array.from(arg, (xi) => (xi < 0 ? 0 : ins[0][xi]));
    },
    flops: (n) => windowFlops(n, n.shape),
  },
  max_pool2d_grad: {
    kind: 'nn',
    arity: 2, // (x, dy)
    epilogue: true,
    type: (ins) => f32(ins[0].shape),
    grad: { vjp: unsupportedSecondOrder('max_pool2d_grad'), inputs: [false, true] },
    eval: ({ node, ins, shapes }) => {
      const [x, dy] = ins;
      const arg = maxPoolArgmax(x, poolGeometry(node.attrs, shapes[0], shapes[1]));
      const out = new Float64Array(numel(node.shape));
      arg.forEach((xi, yi) => xi >= 0 && (out[xi] += dy[yi]));
      return out;
    },
    flops: (n, ins) => windowFlops(n, ins[1]),
  },
  avg_pool2d: {
    kind: 'nn',
    arity: 1,
    epilogue: true,
    type: (ins, a) => poolType(ins, a, 'avg_pool2d'),
    grad: {
      vjp: ({ b, g, x, node }) => {
        const xs = b.node(x[0]).shape;
        return [b.emit('avg_pool2d_grad', [g], { ...pick(node.attrs, POOL_ATTRS), inputSize: [xs[2], xs[3]] })];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const g = poolGeometry(node.attrs, shapes[0], node.shape);
      const out = new Float64Array(numel(node.shape));
      const x = ins[0];
      poolTaps(g, (xi, yi) => (out[yi] += x[xi]));
      return out.map((v) => v / (g.kh * g.kw)); // count_include_pad = true
    },
    flops: (n) => windowFlops(n, n.shape),
  },
  avg_pool2d_grad: {
    kind: 'nn',
    arity: 1, // (dy)
    epilogue: true,
    type: (ins, a) => f32([ins[0].shape[0], ins[0].shape[1], ...a.inputSize]),
    grad: { vjp: ({ b, g, node }) => [b.emit('avg_pool2d', [g], pick(node.attrs, POOL_ATTRS))] },
    eval: ({ node, ins, shapes }) => {
      const g = poolGeometry(node.attrs, node.shape, shapes[0]);
      const out = new Float64Array(numel(node.shape));
      const dy = ins[0];
      const k = g.kh * g.kw;
      poolTaps(g, (xi, yi) => (out[xi] += dy[yi] / k));
      return out;
    },
    flops: (n, ins) => windowFlops(n, ins[0]),
  },
  upsample2d: {
    kind: 'nn',
    arity: 1,
    epilogue: true,
    type: (ins, a) => {
      need(ins[0].shape.length === 4, `upsample2d needs [N, C, H, W], got ${shapeStr(ins[0].shape)}`);
      const [oh, ow] = a.size;
      return f32([ins[0].shape[0], ins[0].shape[1], oh, ow]);
    },
    grad: {
      vjp: ({ b, g, x, node }) => {
        const xs = b.node(x[0]).shape;
        return [b.emit('upsample2d_grad', [g], { ...pick(node.attrs, UPSAMPLE_ATTRS), size: node.attrs.size, inputSize: [xs[2], xs[3]] })];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const out = new Float64Array(numel(node.shape));
      const x = ins[0];
      upsampleTaps(node.attrs, shapes[0], node.shape, (xi, yi, w) => (out[yi] += w * x[xi]));
      return out;
    },
    flops: (n) => 4 * numel(n.shape),
  },
  upsample2d_grad: {
    kind: 'nn',
    arity: 1, // (dy)
    epilogue: true,
    type: (ins, a) => f32([ins[0].shape[0], ins[0].shape[1], ...a.inputSize]),
    grad: {
      vjp: ({ b, g, x, node }) => {
        const ds = b.node(x[0]).shape;
        return [b.emit('upsample2d', [g], { ...pick(node.attrs, UPSAMPLE_ATTRS), size: [ds[2], ds[3]] })];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const out = new Float64Array(numel(node.shape));
      const dy = ins[0];
      upsampleTaps(node.attrs, node.shape, shapes[0], (xi, yi, w) => (out[xi] += w * dy[yi]));
      return out;
    },
    flops: (_n, ins) => 4 * numel(ins[0]),
  },
  gather: {
    kind: 'nn',
    arity: 2, // (table [V, ...], idx int)
    epilogue: true,
    type: (ins) => {
      need(ins[1].dtype === 'i32', `gather indices must be i32, got ${ins[1].dtype}`);
      need(ins[0].shape.length >= 1, 'gather table must have rank >= 1');
      return { shape: [...ins[1].shape, ...ins[0].shape.slice(1)], dtype: ins[0].dtype };
    },
    grad: { vjp: ({ b, g, x }) => [b.emit('scatter_add', [x[1], g], { numRows: b.node(x[0]).shape[0] }), null], inputs: [true, false] },
    eval: ({ node, ins, shapes }) => {
      const [table, idx] = ins;
      const rows = shapes[0][0];
      const rowSize = numel(shapes[0].slice(1));
      const out = new Float64Array(numel(node.shape));
      idx.forEach((r, j) => {
        checkRow(r, rows, 'gather');
        out.set(table.subarray(r * rowSize, (r + 1) * rowSize), j * rowSize);
      });
      return out;
    },
    flops: NO_FLOPS,
  },
  scatter_add: {
    kind: 'nn',
    arity: 2, // (idx, values) -> [numRows, ...]
    type: (ins, a) => {
      need(ins[0].dtype === 'i32', 'scatter_add indices must be i32');
      return f32([a.numRows, ...ins[1].shape.slice(ins[0].shape.length)]);
    },
    grad: { vjp: ({ b, g, x }) => [null, b.emit('gather', [g, x[0]])], inputs: [false, true] },
    eval: ({ node, ins, shapes }) => {
      const [idx, vals] = ins;
      const [idxShape, valShape] = shapes;
      if (shapeStr(valShape.slice(0, idxShape.length)) !== shapeStr(idxShape))
        throw new Error(`values ${shapeStr(valShape)} must start with the index shape ${shapeStr(idxShape)}`);
      const rows = node.attrs.numRows;
      const rowSize = numel(valShape.slice(idxShape.length));
      const out = new Float64Array(numel(node.shape));
      idx.forEach((r, j) => {
        checkRow(r, rows, 'scatter_add');
        for (let k = 0; k < rowSize; k++) out[r * rowSize + k] += vals[j * rowSize + k];
      });
      return out;
    },
    flops: (_n, ins) => numel(ins[1]),
  },
  segment_max: {
    kind: 'nn',
    arity: 2, // (x [B, T, D], seg i32 [B, T]) -> [B, S, D]
    epilogue: true,
    type: (ins, a) => {
      const [x, s] = [ins[0].shape, ins[1].shape];
      need(
        x.length === 3 && s.length === 2 && x[0] === s[0] && x[1] === s[1],
        `segment_max needs x [B, T, D] and segment ids [B, T], got ${shapeStr(x)} and ${shapeStr(s)}`,
      );
      need(ins[1].dtype === 'i32', 'segment ids must be i32');
      return f32([x[0], a.numSegments, x[2]]);
    },
    grad: { vjp: ({ b, g, x }) => [b.emit('segment_max_grad', [x[0], x[1], g]), null], inputs: [true, false] },
    eval: ({ node, ins, shapes }) => {
      const [x, seg] = ins;
      const [, T, D] = shapes[0];
      const S = node.attrs.numSegments;
      const arg = segmentArgmax(x, seg, shapes[0], S);
      return Float64Array.from(arg, (t, o) => {
        if (t < 0) return 0; // empty segment
        const b = Math.floor(o / (S * D));
        return x[(b * T + t) * D + (o % D)];
      });
    },
    flops: (_n, ins) => numel(ins[0]),
  },
  segment_max_grad: {
    kind: 'nn',
    arity: 3, // (x, seg, dy)
    epilogue: true,
    type: (ins) => f32(ins[0].shape),
    grad: { vjp: unsupportedSecondOrder('segment_max_grad'), inputs: [false, false, true] }, // routing is piecewise constant in x
    eval: ({ node, ins, shapes }) => {
      const [x, seg, dy] = ins;
      const [, T, D] = shapes[0];
      const S = shapes[2][1];
      const arg = segmentArgmax(x, seg, shapes[0], S);
      const out = new Float64Array(numel(node.shape));
      arg.forEach((t, o) => {
        if (t < 0) return;
        const b = Math.floor(o / (S * D));
        out[(b * T + t) * D + (o % D)] += dy[o];
      });
      return out;
    },
    flops: (_n, ins) => numel(ins[0]),
  },
} satisfies OpTablePart;
