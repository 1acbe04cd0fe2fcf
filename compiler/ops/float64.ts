// What the ops' float64 evaluations (OpDef.eval) share: the feed types of the
// reference interpreter (compiler/reference.ts), the scalar math WGSL must
// match (erf, gelu, WGSL's integer conversions) and row-major index maps.
// Every value is a Float64Array; i32 values are stored as integral doubles and
// follow WGSL's wrapping integer arithmetic.

import { type Shape, numel, shapeStr, stridesOf } from '../ir.ts';

/** A fed tensor: row-major values, or a plain number for a one-element leaf (e.g. `lr`). */
export type FeedValue = ArrayLike<number> | number;

export interface Feeds {
  /** Values of the graph's 'input' leaves by name (row-major, numel of the declared shape). */
  inputs?: Record<string, FeedValue>;
  /** Values of the 'param' / 'buffer' leaves by dotted state name. */
  state?: Record<string, FeedValue>;
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
export function wrapI32(v: number): number {
  return Number.isFinite(v) ? Math.trunc(v) | 0 : 0;
}

/** WGSL's saturating f32 -> i32 conversion (truncation toward zero; NaN -> 0). */
export function castToI32(v: number): number {
  if (Number.isNaN(v)) return 0;
  if (v >= 2147483647) return 2147483647;
  if (v <= -2147483648) return -2147483648;
  return Math.trunc(v);
}

// ---------------------------------------------------------------------------
// Index maps

/** For each flat index of `shape`, offset + Σ idx[k]·strides[k]. Covers transpose, slice, broadcast. */
export function stridedOffsets(shape: Shape, strides: number[], offset = 0): Int32Array {
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

/** For each flat index of `to`, the flat index of `from` that numpy broadcasting reads. */
export function broadcastOffsets(from: Shape, to: Shape): Int32Array {
  return stridedOffsets(to, broadcastStrides(from, to));
}

/** Calls visit(flat, idx) for every element of `shape` in row-major order (idx is reused). */
export function walk(shape: Shape, visit: (flat: number, idx: number[]) => void): void {
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

/** out[i] = x[offsets[i]]. */
export function gatherAt(x: Float64Array, offsets: Int32Array): Float64Array {
  const out = new Float64Array(offsets.length);
  for (let i = 0; i < out.length; i++) out[i] = x[offsets[i]];
  return out;
}

/** Whether `v` replaces `best` as a running maximum: larger, or the first NaN (NaN propagates, as in PyTorch). */
export function beats(v: number, best: number): boolean {
  return v > best || (Number.isNaN(v) && !Number.isNaN(best));
}
