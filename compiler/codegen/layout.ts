// Layout ops as index maps. reshape/transpose/expand/slice/concat/pad never get a
// kernel of their own shape logic: each is a function from an output element's
// coordinates to the input element it copies (or a constant, for padding). Their
// expression renderers (expressions.ts) apply these maps while the expression
// compiler (elementwise.ts) generates a (possibly fused) kernel, so a standalone transpose is just a one-node group
// and a transpose feeding an add costs no extra pass over memory.
//
// reshape and stop_gradient are *views* when not fused: they alias their
// input's buffer (row-major contiguity is preserved) and emit no kernel.

import type { Shape } from '../ir.ts';
import { stridesOf, numel } from '../ir.ts';

/** Coordinate `axis` of a flat row-major index `flat` into `shape`, as a u32 WGSL expression. */
export function coordExpr(flat: string, shape: Shape, axis: number): string {
  const dim = shape[axis];
  if (dim === 1) return '0u';
  const stride = stridesOf(shape)[axis];
  if (axis === 0) return stride === 1 ? flat : `(${flat} / ${stride}u)`;
  return stride === 1 ? `(${flat} % ${dim}u)` : `((${flat} / ${stride}u) % ${dim}u)`;
}

/** Σ terms[k] * stride_k over the listed (coord, stride) pairs, skipping zero terms. */
function linear(terms: [string, number][]): string {
  const parts = terms.filter(([c, s]) => c !== '0u' && s !== 0).map(([c, s]) => (s === 1 ? c : `${c} * ${s}u`));
  return parts.length ? parts.join(' + ') : '0u';
}

/** How coordinates are obtained: the expression compiler memoises them as `let`s. */
export type CoordFn = (axis: number) => string;

/**
 * Flat index into `inShape` of the element that numpy broadcasting reads for
 * output flat index `flat` over `outShape` (inShape is right-aligned to outShape).
 */
export function broadcastIndex(outShape: Shape, inShape: Shape, flat: string, coord: CoordFn): string {
  const n = numel(inShape);
  if (n === numel(outShape)) return flat; // only size-1 axes differ: same flat index (an epilogue relies on this)
  if (n === 1) return '0u';
  const off = outShape.length - inShape.length;
  const inStrides = stridesOf(inShape);
  // Which output axes the input really varies along.
  const live = inShape.map((d, k) => d !== 1 && d === outShape[k + off]);
  const liveAxes = live.flatMap((l, k) => (l ? [k + off] : []));
  // A contiguous block of live axes [a, b): index = (flat / inner) % count when it ends the shape or starts it.
  const first = liveAxes[0];
  const last = liveAxes[liveAxes.length - 1];
  if (last - first + 1 === liveAxes.length) {
    const inner = numel(outShape.slice(last + 1));
    const count = numel(outShape.slice(first, last + 1));
    const base = inner === 1 ? flat : `(${flat} / ${inner}u)`;
    return first === 0 ? base : `(${base} % ${count}u)`;
  }
  return linear(inShape.map((_d, k) => [live[k] ? coord(k + off) : '0u', inStrides[k]] as [string, number]));
}

/** transpose: output axis j is input axis perm[j]. */
export function transposeIndex(perm: number[], inShape: Shape, coord: CoordFn): string {
  const inStrides = stridesOf(inShape);
  return linear(perm.map((p, j) => [coord(j), inStrides[p]] as [string, number]));
}

/** slice: input coordinate = output coordinate + start. */
export function sliceIndex(starts: number[], inShape: Shape, coord: CoordFn): string {
  const inStrides = stridesOf(inShape);
  let constant = 0;
  const terms: [string, number][] = [];
  inShape.forEach((_d, k) => {
    constant += starts[k] * inStrides[k];
    terms.push([coord(k), inStrides[k]]);
  });
  const body = linear(terms);
  return constant === 0 ? body : body === '0u' ? `${constant}u` : `${body} + ${constant}u`;
}

/**
 * pad: the input element for an output coordinate, valid only when `cond` holds
 * (otherwise the output is the pad value). `lets` declare signed coordinates.
 */
export function padIndex(pads: number[], inShape: Shape, coord: CoordFn, tmp: string): { lets: string[]; cond: string; index: string } {
  const inStrides = stridesOf(inShape);
  const lets: string[] = [];
  const conds: string[] = [];
  const terms: [string, number][] = [];
  inShape.forEach((d, k) => {
    const before = pads[2 * k];
    const after = pads[2 * k + 1];
    if (before === 0 && after === 0) {
      terms.push([coord(k), inStrides[k]]);
      return;
    }
    const v = `${tmp}_${k}`;
    lets.push(`let ${v} = i32(${coord(k)}) - ${before}i;`);
    if (before > 0) conds.push(`${v} >= 0i`);
    if (after > 0) conds.push(`${v} < ${d}i`);
    terms.push([`u32(${v})`, inStrides[k]]);
  });
  return { lets, cond: conds.length ? conds.join(' && ') : 'true', index: linear(terms) };
}

/** concat: the input that holds an output coordinate along `axis`, and its index there. */
export function concatBranches(axis: number, inShapes: Shape[], coord: CoordFn): { upper: number; index: string }[] {
  let offset = 0;
  return inShapes.map((s) => {
    const inStrides = stridesOf(s);
    const start = offset;
    offset += s[axis];
    const terms = s.map((_d, k) => [k === axis ? (start === 0 ? coord(k) : `(${coord(k)} - ${start}u)`) : coord(k), inStrides[k]] as [string, number]);
    return { upper: offset, index: linear(terms) };
  });
}
