// The float64 reference interpreter of the graph IR: the executable form of
// docs/ir.md. It is deliberately simple (direct loops, no fusion, no tiling) so
// that it can serve as the oracle for the WGSL kernels, autodiff's finite
// differences, the graph passes and the optimizer programs. Every value is a
// Float64Array; i32 values are stored as integral doubles and follow WGSL's
// wrapping integer arithmetic.

import { type Attrs, type Graph, type Node, type OpName, type Shape, numel, shapeStr, stridesOf } from '../compiler/ir.ts';
import { dropoutStreamKey, dropoutUniform } from '../compiler/random.ts';

/** A fed tensor: row-major values, or a plain number for a one-element leaf (e.g. `lr`). */
export type FeedValue = ArrayLike<number> | number;

export interface Feeds {
  /** Values of the graph's 'input' leaves by name (row-major, numel of the declared shape). */
  inputs?: Record<string, FeedValue>;
  /** Values of the 'param' / 'buffer' leaves by dotted state name. */
  state?: Record<string, FeedValue>;
}

export interface Evaluation {
  /** The value of every node, indexed by node id. */
  values: Float64Array[];
  /** graph.outputs resolved to values. */
  outputs: Record<string, Float64Array>;
  /** graph.updates resolved to values: the new state, applied by the caller after the run. */
  updates: Record<string, Float64Array>;
}

/** Runs every node of `graph` in order and returns all values, the named outputs and the state updates. */
export function evaluate(graph: Graph, feeds: Feeds): Evaluation {
  const values: Float64Array[] = [];
  for (const node of graph.nodes) {
    const ins = node.inputs.map((i) => values[i]);
    let v: Float64Array;
    try {
      v = evalNode(node, ins, graph, feeds);
    } catch (e) {
      throw new Error(`reference: node ${node.id} (${node.op}${node.name ? ' ' + node.name : ''}${shapeStr(node.shape)}): ${(e as Error).message}`);
    }
    if (v.length !== numel(node.shape)) throw new Error(`reference: node ${node.id} (${node.op}) produced ${v.length} values for shape ${shapeStr(node.shape)}`);
    values.push(v);
  }
  const outputs: Record<string, Float64Array> = {};
  for (const [name, id] of Object.entries(graph.outputs)) outputs[name] = values[id];
  const updates: Record<string, Float64Array> = {};
  for (const [name, id] of Object.entries(graph.updates)) updates[name] = values[id];
  return { values, outputs, updates };
}

// ---------------------------------------------------------------------------
// Scalar math

const SQRT1_2 = Math.SQRT1_2;
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * erf to ~1e-16 relative accuracy: an all-positive series for |x| < 2.5 (no
 * cancellation) and the continued fraction of erfc beyond. Finite-difference
 * gradient checks of gelu/erf need this accuracy; polynomial fits (1e-7) do not.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const sign = x < 0 ? -1 : 1;
  const ax = Math.abs(x);
  if (ax >= 6) return sign; // erfc(6) ≈ 2e-17, below half an ulp of 1
  const x2 = ax * ax;
  if (ax < 2.5) {
    // erf(x) = 2/√π · e^{-x²} · Σ_n 2^n x^{2n+1} / (1·3·…·(2n+1))
    let term = ax;
    let total = ax;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      total += term;
      if (term < total * 1e-17) break;
    }
    return sign * TWO_OVER_SQRT_PI * Math.exp(-x2) * total;
  }
  // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))), evaluated bottom-up.
  let f = ax;
  for (let n = 120; n >= 1; n--) f = ax + n / 2 / f;
  return sign * (1 - Math.exp(-x2) / (Math.sqrt(Math.PI) * f));
}

/** GELU, exact erf form: x · Φ(x) = 0.5 · x · (1 + erf(x / √2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x * SQRT1_2));
}

/** WGSL's wrapping i32 from an integral (or truncated) double. */
function wrapI32(v: number): number {
  return Number.isFinite(v) ? Math.trunc(v) | 0 : 0;
}

/** WGSL's saturating f32 -> i32 conversion (truncation toward zero; NaN -> 0). */
function castToI32(v: number): number {
  if (Number.isNaN(v)) return 0;
  if (v >= 2147483647) return 2147483647;
  if (v <= -2147483648) return -2147483648;
  return Math.trunc(v);
}

// ---------------------------------------------------------------------------
// Index helpers

/** For each flat index of `shape`, offset + Σ idx[k]·strides[k]. Covers transpose, slice, broadcast. */
function stridedOffsets(shape: Shape, strides: number[], offset = 0): Int32Array {
  const n = numel(shape);
  const out = new Int32Array(n);
  const rank = shape.length;
  const idx = new Array(rank).fill(0);
  let off = offset;
  for (let i = 0; i < n; i++) {
    out[i] = off;
    for (let k = rank - 1; k >= 0; k--) {
      idx[k]++;
      off += strides[k];
      if (idx[k] < shape[k]) break;
      off -= strides[k] * shape[k];
      idx[k] = 0;
    }
  }
  return out;
}

/** Strides of `from` viewed in `to`'s index space under numpy broadcasting (0 on broadcast dims). */
function broadcastStrides(from: Shape, to: Shape): number[] {
  const fs = stridesOf(from);
  const lead = to.length - from.length;
  return to.map((d, k) => {
    const j = k - lead;
    if (j < 0 || from[j] === 1) return 0;
    if (from[j] !== d) throw new Error(`cannot broadcast ${shapeStr(from)} to ${shapeStr(to)}`);
    return fs[j];
  });
}

function broadcastOffsets(from: Shape, to: Shape): Int32Array {
  return stridedOffsets(to, broadcastStrides(from, to));
}

/** Calls visit(flat, idx) for every element of `shape` in row-major order (idx is reused). */
function walk(shape: Shape, visit: (flat: number, idx: number[]) => void): void {
  const n = numel(shape);
  const idx = new Array(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    visit(i, idx);
    for (let k = shape.length - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** The shape with the given axes set to 1 (keepdims form of a reduction). */
function keptShape(shape: Shape, axes: number[]): Shape {
  const ax = new Set(axes.map((a) => normAxis(a, shape.length)));
  return shape.map((d, i) => (ax.has(i) ? 1 : d));
}

function pair(v: unknown, name: string): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2) return [v[0], v[1]];
  throw new Error(`attribute ${name} must be an int or a pair of ints, got ${JSON.stringify(v)}`);
}

function convOut(size: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;
}

// ---------------------------------------------------------------------------
// Elementwise ops

const UNARY: Partial<Record<OpName, (x: number) => number>> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  relu: (x) => (x > 0 || Number.isNaN(x) ? x : 0), // NaN propagates, as in PyTorch
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  tanh: Math.tanh,
  gelu,
  erf,
  recip: (x) => 1 / x,
  square: (x) => x * x,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
  isfinite: (x) => (Number.isFinite(x) ? 1 : 0),
  stop_gradient: (x) => x,
};

const BINARY: Partial<Record<OpName, (a: number, b: number) => number>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: (a, b) => (a >= b || Number.isNaN(a) ? a : b), // NaN propagates, as in PyTorch
  minimum: (a, b) => (a <= b || Number.isNaN(a) ? a : b),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
};

/** i32 versions where wrapping differs from "compute in f64 then wrap" (WGSL semantics). */
const BINARY_I32: Partial<Record<OpName, (a: number, b: number) => number>> = {
  mul: (a, b) => Math.imul(a, b),
  div: (a, b) => (b === 0 ? a : a === -2147483648 && b === -1 ? a : Math.trunc(a / b)),
  pow: (a, b) => wrapI32(Math.pow(a, b)),
};

function unary(node: Node, x: Float64Array): Float64Array {
  const f = node.dtype === 'i32' && node.op === 'square' ? (v: number) => Math.imul(v, v) : UNARY[node.op]!;
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i]);
  return node.dtype === 'i32' ? out.map(wrapI32) : out;
}

function binary(node: Node, a: Float64Array, b: Float64Array, aShape: Shape, bShape: Shape): Float64Array {
  const i32 = node.dtype === 'i32';
  const f = (i32 && BINARY_I32[node.op]) || BINARY[node.op]!;
  const oa = broadcastOffsets(aShape, node.shape);
  const ob = broadcastOffsets(bShape, node.shape);
  const out = new Float64Array(oa.length);
  for (let i = 0; i < out.length; i++) out[i] = f(a[oa[i]], b[ob[i]]);
  return i32 ? out.map(wrapI32) : out;
}

function where(node: Node, ins: Float64Array[], shapes: Shape[]): Float64Array {
  const [oc, oa, ob] = shapes.map((s) => broadcastOffsets(s, node.shape));
  const [c, a, b] = ins;
  const out = new Float64Array(oc.length);
  for (let i = 0; i < out.length; i++) out[i] = c[oc[i]] !== 0 ? a[oa[i]] : b[ob[i]];
  return out;
}

function dropout(x: Float64Array, seed: number, attrs: Attrs): Float64Array {
  const p = attrs.p as number;
  const key = dropoutStreamKey(seed, (attrs.salt as number) ?? 0);
  const scale = 1 / (1 - p);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = dropoutUniform(i, key) >= p ? x[i] * scale : 0;
  return out;
}

// ---------------------------------------------------------------------------
// Reductions

/** Maps each element of x to its group (flat index in the keepdims shape). */
function groupIndex(xShape: Shape, axes: number[]): { map: Int32Array; groups: number } {
  const kept = keptShape(xShape, axes);
  return { map: broadcastOffsets(kept, xShape), groups: numel(kept) };
}

function reduceSum(x: Float64Array, xShape: Shape, axes: number[]): Float64Array {
  const { map, groups } = groupIndex(xShape, axes);
  const out = new Float64Array(groups);
  for (let i = 0; i < x.length; i++) out[map[i]] += x[i];
  return out;
}

function reduceMax(x: Float64Array, xShape: Shape, axes: number[]): Float64Array {
  const { map, groups } = groupIndex(xShape, axes);
  const out = new Float64Array(groups).fill(-Infinity);
  for (let i = 0; i < x.length; i++) if (beats(x[i], out[map[i]])) out[map[i]] = x[i];
  return out;
}

function logsumexp(x: Float64Array, xShape: Shape, axis: number): Float64Array {
  const { map } = groupIndex(xShape, [axis]);
  const m = reduceMax(x, xShape, [axis]);
  const s = new Float64Array(m.length);
  for (let i = 0; i < x.length; i++) s[map[i]] += Math.exp(x[i] - m[map[i]]);
  return m.map((mi, g) => (Number.isFinite(mi) ? mi + Math.log(s[g]) : mi));
}

function softmax(x: Float64Array, xShape: Shape, axis: number): Float64Array {
  const { map } = groupIndex(xShape, [axis]);
  const m = reduceMax(x, xShape, [axis]);
  const e = new Float64Array(x.length);
  const s = new Float64Array(m.length);
  for (let i = 0; i < x.length; i++) s[map[i]] += e[i] = Math.exp(x[i] - m[map[i]]);
  for (let i = 0; i < x.length; i++) e[i] /= s[map[i]];
  return e;
}

// ---------------------------------------------------------------------------
// Layout

function gatherAt(x: Float64Array, offsets: Int32Array): Float64Array {
  const out = new Float64Array(offsets.length);
  for (let i = 0; i < out.length; i++) out[i] = x[offsets[i]];
  return out;
}

function concat(node: Node, ins: Float64Array[], shapes: Shape[]): Float64Array {
  const axis = normAxis(node.attrs.axis as number, node.shape.length);
  const outer = numel(node.shape.slice(0, axis));
  const inner = numel(node.shape.slice(axis + 1));
  const rowOut = node.shape[axis] * inner;
  const out = new Float64Array(numel(node.shape));
  let at = 0;
  ins.forEach((x, k) => {
    const rowIn = shapes[k][axis] * inner;
    for (let o = 0; o < outer; o++) out.set(x.subarray(o * rowIn, (o + 1) * rowIn), o * rowOut + at);
    at += rowIn;
  });
  return out;
}

/** pad: out[i] = x[i - before] where that is in range, else `value`. Negative pads crop. */
function pad(node: Node, x: Float64Array, xShape: Shape): Float64Array {
  const pads = node.attrs.pads as number[];
  const out = new Float64Array(numel(node.shape)).fill((node.attrs.value as number) ?? 0);
  const os = stridesOf(node.shape);
  walk(xShape, (flat, idx) => {
    let o = 0;
    for (let k = 0; k < idx.length; k++) {
      const j = idx[k] + pads[2 * k];
      if (j < 0 || j >= node.shape[k]) return;
      o += j * os[k];
    }
    out[o] = x[flat];
  });
  return out;
}

// ---------------------------------------------------------------------------
// Contractions

function matmul(node: Node, a: Float64Array, b: Float64Array, aShape: Shape, bShape: Shape): Float64Array {
  const transA = !!node.attrs.transA;
  const transB = !!node.attrs.transB;
  const [m, n] = node.shape.slice(-2);
  const aCols = aShape[aShape.length - 1];
  const bCols = bShape[bShape.length - 1];
  const k = transA ? aShape[aShape.length - 2] : aCols;
  // op(A)[i, l] = A[i·ai + l·al]; op(B)[l, j] = B[l·bl + j·bj]
  const [ai, al] = transA ? [1, aCols] : [aCols, 1];
  const [bl, bj] = transB ? [1, bCols] : [bCols, 1];
  const batch = node.shape.slice(0, -2);
  const aMat = aShape[aShape.length - 2] * aCols;
  const bMat = bShape[bShape.length - 2] * bCols;
  const aBatch = broadcastOffsets(aShape.slice(0, -2), batch);
  const bBatch = broadcastOffsets(bShape.slice(0, -2), batch);
  const out = new Float64Array(numel(node.shape));
  for (let t = 0; t < aBatch.length; t++) {
    const a0 = aBatch[t] * aMat;
    const b0 = bBatch[t] * bMat;
    const o0 = t * m * n;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let l = 0; l < k; l++) acc += a[a0 + i * ai + l * al] * b[b0 + l * bl + j * bj];
        out[o0 + i * n + j] = acc;
      }
  }
  return out;
}

interface ConvGeometry {
  N: number; C: number; H: number; W: number; // input
  O: number; kh: number; kw: number; // weight [O, C/groups, kh, kw]
  OH: number; OW: number; // output
  sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
  groups: number;
}

function convGeometry(attrs: Attrs, x: Shape, w: Shape, y: Shape): ConvGeometry {
  const [sh, sw] = pair(attrs.stride, 'stride');
  const [ph, pw] = pair(attrs.padding, 'padding');
  const [dh, dw] = pair(attrs.dilation, 'dilation');
  const groups = (attrs.groups as number) ?? 1;
  const g: ConvGeometry = { N: x[0], C: x[1], H: x[2], W: x[3], O: w[0], kh: w[2], kw: w[3], OH: y[2], OW: y[3], sh, sw, ph, pw, dh, dw, groups };
  const oh = convOut(g.H, g.kh, sh, ph, dh);
  const ow = convOut(g.W, g.kw, sw, pw, dw);
  if (oh !== g.OH || ow !== g.OW)
    throw new Error(`input ${shapeStr(x)} with kernel ${g.kh}x${g.kw}, stride ${sh},${sw}, padding ${ph},${pw}, dilation ${dh},${dw} gives output ${oh}x${ow}, not ${g.OH}x${g.OW}`);
  if (w[1] * groups !== g.C) throw new Error(`weight ${shapeStr(w)} with groups ${groups} does not match ${g.C} input channels`);
  return g;
}

/** Calls visit(xIndex, wIndex, yIndex) for every multiply of a direct convolution. */
function convTaps(g: ConvGeometry, visit: (xi: number, wi: number, yi: number) => void): void {
  const cg = g.C / g.groups;
  const og = g.O / g.groups;
  for (let n = 0; n < g.N; n++)
    for (let o = 0; o < g.O; o++) {
      const c0 = Math.floor(o / og) * cg;
      for (let oh = 0; oh < g.OH; oh++)
        for (let ow = 0; ow < g.OW; ow++) {
          const yi = ((n * g.O + o) * g.OH + oh) * g.OW + ow;
          for (let c = 0; c < cg; c++)
            for (let i = 0; i < g.kh; i++) {
              const ih = oh * g.sh - g.ph + i * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (let j = 0; j < g.kw; j++) {
                const iw = ow * g.sw - g.pw + j * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                visit(((n * g.C + c0 + c) * g.H + ih) * g.W + iw, ((o * cg + c) * g.kh + i) * g.kw + j, yi);
              }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pooling and resampling

interface PoolGeometry {
  N: number; C: number; H: number; W: number; OH: number; OW: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number;
}

function poolGeometry(attrs: Attrs, x: Shape, y: Shape): PoolGeometry {
  const [kh, kw] = pair(attrs.kernel, 'kernel');
  const [sh, sw] = pair(attrs.stride, 'stride');
  const [ph, pw] = pair(attrs.padding, 'padding');
  const g = { N: x[0], C: x[1], H: x[2], W: x[3], OH: y[2], OW: y[3], kh, kw, sh, sw, ph, pw };
  const oh = convOut(g.H, kh, sh, ph, 1);
  const ow = convOut(g.W, kw, sw, pw, 1);
  if (oh !== g.OH || ow !== g.OW) throw new Error(`pooling ${shapeStr(x)} with kernel ${kh}x${kw}, stride ${sh},${sw}, padding ${ph},${pw} gives ${oh}x${ow}, not ${g.OH}x${g.OW}`);
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

/** Whether `v` replaces `best` as a running maximum: larger, or the first NaN (NaN propagates, as in PyTorch). */
function beats(v: number, best: number): boolean {
  return v > best || (Number.isNaN(v) && !Number.isNaN(best));
}

/** Per output element, the x index of the first (row-major in the window) maximum, or -1 for an all-padding window. */
function maxPoolArgmax(x: Float64Array, g: PoolGeometry): Int32Array {
  const arg = new Int32Array(g.N * g.C * g.OH * g.OW).fill(-1);
  poolTaps(g, (xi, yi) => {
    if (arg[yi] < 0 || beats(x[xi], x[arg[yi]])) arg[yi] = xi;
  });
  return arg;
}

/** For one axis of upsampling: output position -> two source indices and the weight of the second. */
interface AxisTaps {
  i0: Int32Array;
  i1: Int32Array;
  w1: Float64Array;
}

function upsampleAxis(inSize: number, outSize: number, mode: string, alignCorners: boolean): AxisTaps {
  const t: AxisTaps = { i0: new Int32Array(outSize), i1: new Int32Array(outSize), w1: new Float64Array(outSize) };
  for (let d = 0; d < outSize; d++) {
    if (mode === 'nearest') {
      // PyTorch's legacy 'nearest': floor(d · in / out), computed exactly in integers.
      t.i0[d] = t.i1[d] = Math.min(Math.floor((d * inSize) / outSize), inSize - 1);
      continue;
    }
    if (mode !== 'bilinear') throw new Error(`upsample2d mode must be 'nearest' or 'bilinear', got ${JSON.stringify(mode)}`);
    const src = alignCorners
      ? outSize > 1 ? (d * (inSize - 1)) / (outSize - 1) : 0
      : Math.max(((d + 0.5) * inSize) / outSize - 0.5, 0);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    t.i0[d] = i0;
    t.i1[d] = Math.min(i0 + 1, inSize - 1);
    t.w1[d] = src - i0;
  }
  return t;
}

/** Calls visit(xIndex, yIndex, weight) for each non-zero interpolation weight of y = upsample(x). */
function upsampleTaps(attrs: Attrs, x: Shape, y: Shape, visit: (xi: number, yi: number, w: number) => void): void {
  const mode = attrs.mode as string;
  const align = !!attrs.alignCorners;
  const [N, C, H, W] = x;
  const [OH, OW] = [y[2], y[3]];
  const ty = upsampleAxis(H, OH, mode, align);
  const tx = upsampleAxis(W, OW, mode, align);
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

// ---------------------------------------------------------------------------
// The dispatcher

function leafValue(node: Node, source: Record<string, FeedValue> | undefined, kind: string): Float64Array {
  const name = node.attrs.name as string;
  const fed = source?.[name];
  if (fed === undefined || fed === null) throw new Error(`${kind} '${name}' was not fed`);
  const v = typeof fed === 'number' ? [fed] : fed;
  if (typeof v.length !== 'number') throw new Error(`${kind} '${name}' must be fed a number or an array of numbers`);
  if (v.length !== numel(node.shape)) throw new Error(`${kind} '${name}' has ${v.length} values, shape ${shapeStr(node.shape)} needs ${numel(node.shape)}`);
  const out = Float64Array.from(v);
  return node.dtype === 'i32' ? out.map(wrapI32) : out;
}

function evalNode(node: Node, ins: Float64Array[], graph: Graph, feeds: Feeds): Float64Array {
  const shapes = node.inputs.map((i) => graph.nodes[i].shape);
  const a = node.attrs;
  const size = numel(node.shape);
  if (node.op in UNARY) return unary(node, ins[0]);
  if (node.op in BINARY) return binary(node, ins[0], ins[1], shapes[0], shapes[1]);
  switch (node.op) {
    case 'input':
      return leafValue(node, feeds.inputs, 'input');
    case 'param':
    case 'buffer':
      return leafValue(node, feeds.state, 'state');
    case 'full':
      return new Float64Array(size).fill(node.dtype === 'i32' ? wrapI32(a.value as number) : (a.value as number));
    case 'tensor':
      return node.dtype === 'i32' ? Float64Array.from(a.data as number[], wrapI32) : Float64Array.from(a.data as number[]);
    case 'iota': {
      const axis = normAxis(a.axis as number, node.shape.length);
      const stride = stridesOf(node.shape)[axis];
      const out = new Float64Array(size);
      for (let i = 0; i < size; i++) out[i] = Math.floor(i / stride) % node.shape[axis];
      return out;
    }
    case 'cast':
      return a.to === 'i32' ? ins[0].map(castToI32) : Float64Array.from(ins[0]);
    case 'dropout':
      return dropout(ins[0], ins[1][0], a);
    case 'where':
      return where(node, ins, shapes);
    case 'sum': {
      const total = reduceSum(ins[0], shapes[0], a.axes as number[]);
      return node.dtype === 'i32' ? total.map(wrapI32) : total;
    }
    case 'max':
      return reduceMax(ins[0], shapes[0], a.axes as number[]);
    case 'logsumexp':
      return logsumexp(ins[0], shapes[0], a.axis as number);
    case 'softmax':
      return softmax(ins[0], shapes[0], a.axis as number);
    case 'reshape':
      return Float64Array.from(ins[0]);
    case 'transpose': {
      const xs = stridesOf(shapes[0]);
      return gatherAt(ins[0], stridedOffsets(node.shape, (a.perm as number[]).map((p) => xs[p])));
    }
    case 'expand':
      return gatherAt(ins[0], broadcastOffsets(shapes[0], node.shape));
    case 'slice': {
      const xs = stridesOf(shapes[0]);
      const offset = (a.starts as number[]).reduce((acc, s, k) => acc + s * xs[k], 0);
      return gatherAt(ins[0], stridedOffsets(node.shape, xs, offset));
    }
    case 'concat':
      return concat(node, ins, shapes);
    case 'pad':
      return pad(node, ins[0], shapes[0]);
    case 'matmul':
      return matmul(node, ins[0], ins[1], shapes[0], shapes[1]);
    case 'conv2d': {
      const out = new Float64Array(size);
      const [x, w] = ins;
      convTaps(convGeometry(a, shapes[0], shapes[1], node.shape), (xi, wi, yi) => (out[yi] += x[xi] * w[wi]));
      return out;
    }
    case 'conv2d_grad_input': {
      const out = new Float64Array(size);
      const [dy, w] = ins;
      convTaps(convGeometry(a, node.shape, shapes[1], shapes[0]), (xi, wi, yi) => (out[xi] += dy[yi] * w[wi]));
      return out;
    }
    case 'conv2d_grad_weight': {
      const out = new Float64Array(size);
      const [x, dy] = ins;
      convTaps(convGeometry(a, shapes[0], node.shape, shapes[1]), (xi, wi, yi) => (out[wi] += x[xi] * dy[yi]));
      return out;
    }
    case 'max_pool2d': {
      const arg = maxPoolArgmax(ins[0], poolGeometry(a, shapes[0], node.shape));
      return Float64Array.from(arg, (xi) => (xi < 0 ? 0 : ins[0][xi]));
    }
    case 'max_pool2d_grad': {
      const [x, dy] = ins;
      const arg = maxPoolArgmax(x, poolGeometry(a, shapes[0], shapes[1]));
      const out = new Float64Array(size);
      arg.forEach((xi, yi) => xi >= 0 && (out[xi] += dy[yi]));
      return out;
    }
    case 'avg_pool2d': {
      const g = poolGeometry(a, shapes[0], node.shape);
      const out = new Float64Array(size);
      const x = ins[0];
      poolTaps(g, (xi, yi) => (out[yi] += x[xi]));
      return out.map((v) => v / (g.kh * g.kw)); // count_include_pad = true
    }
    case 'avg_pool2d_grad': {
      const g = poolGeometry(a, node.shape, shapes[0]);
      const out = new Float64Array(size);
      const dy = ins[0];
      const k = g.kh * g.kw;
      poolTaps(g, (xi, yi) => (out[xi] += dy[yi] / k));
      return out;
    }
    case 'upsample2d': {
      const out = new Float64Array(size);
      const x = ins[0];
      upsampleTaps(a, shapes[0], node.shape, (xi, yi, w) => (out[yi] += w * x[xi]));
      return out;
    }
    case 'upsample2d_grad': {
      const out = new Float64Array(size);
      const dy = ins[0];
      upsampleTaps(a, node.shape, shapes[0], (xi, yi, w) => (out[xi] += w * dy[yi]));
      return out;
    }
    case 'gather': {
      const [table, idx] = ins;
      const rows = shapes[0][0];
      const rowSize = numel(shapes[0].slice(1));
      const out = new Float64Array(size);
      idx.forEach((r, j) => {
        checkRow(r, rows, 'gather');
        out.set(table.subarray(r * rowSize, (r + 1) * rowSize), j * rowSize);
      });
      return out;
    }
    case 'scatter_add': {
      const [idx, vals] = ins;
      const [idxShape, valShape] = shapes;
      if (shapeStr(valShape.slice(0, idxShape.length)) !== shapeStr(idxShape))
        throw new Error(`values ${shapeStr(valShape)} must start with the index shape ${shapeStr(idxShape)}`);
      const rows = a.numRows as number;
      const rowSize = numel(valShape.slice(idxShape.length));
      const out = new Float64Array(size);
      idx.forEach((r, j) => {
        checkRow(r, rows, 'scatter_add');
        for (let k = 0; k < rowSize; k++) out[r * rowSize + k] += vals[j * rowSize + k];
      });
      return out;
    }
    case 'segment_max': {
      const [x, seg] = ins;
      const [, T, D] = shapes[0];
      const S = a.numSegments as number;
      const arg = segmentArgmax(x, seg, shapes[0], S);
      return Float64Array.from(arg, (t, o) => {
        if (t < 0) return 0; // empty segment
        const b = Math.floor(o / (S * D));
        return x[(b * T + t) * D + (o % D)];
      });
    }
    case 'segment_max_grad': {
      const [x, seg, dy] = ins;
      const [, T, D] = shapes[0];
      const S = shapes[2][1];
      const arg = segmentArgmax(x, seg, shapes[0], S);
      const out = new Float64Array(size);
      arg.forEach((t, o) => {
        if (t < 0) return;
        const b = Math.floor(o / (S * D));
        out[(b * T + t) * D + (o % D)] += dy[o];
      });
      return out;
    }
  }
  throw new Error(`the reference interpreter has no rule for op '${node.op}'`);
}
