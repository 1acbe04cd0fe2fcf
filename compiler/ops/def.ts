// The op table's entry type (OpDef) and what entries share: shape checks that
// throw ShapeError, and the gradient plumbing (unbroadcast, keepdims shapes)
// of the VJP rules. Each family file (leaves, elementwise, reduce, layout,
// contraction, nn) exports its part of the table; index.ts assembles it.

import type { GraphBuilder } from '../builder.ts';
import { type DType, type NodeOf, type OpAttrs, type OpName, type Shape, shapeStr } from '../ir.ts';
import type { Feeds } from './float64.ts';

/** A shape or dtype rule violation. `message` names the shapes; the caller adds the location. */
export class ShapeError extends Error {}

export interface TypedValue {
  shape: Shape;
  dtype: DType;
}

/**
 * How an op is scheduled (passes/fusion.ts) and rendered (codegen/):
 *  - 'leaf': input / param / buffer, a buffer the host or the state store fills;
 *  - 'constant': known at compile time (full, iota, tensor);
 *  - 'elementwise', 'layout': evaluated at one flat index by the expression
 *    compiler, so they fuse into any group;
 *  - 'reduce': anchors a group whose input producers fuse as a prologue;
 *  - 'contraction', 'nn': anchors a group with a kernel of its own.
 */
export type OpKind = 'leaf' | 'constant' | 'elementwise' | 'layout' | 'reduce' | 'contraction' | 'nn';

export interface VjpContext<P extends OpName> {
  b: GraphBuilder;
  node: NodeOf<P>;
  /** ids of the node's inputs */
  x: number[];
  /** the node's own id (its forward value, reusable by rules such as exp and softmax) */
  y: number;
  /** the gradient flowing into the node, shaped like it */
  g: number;
  /** need[k]: whether input k is on a path from a wrt leaf (rules skip work for the others) */
  need: boolean[];
}

/** Returns one gradient node per input (null where none is needed), each shaped exactly like that input. */
export type VjpRule<P extends OpName> = (c: VjpContext<P>) => (number | null)[];

/**
 * An op's reverse mode: a VJP rule and which inputs can receive a gradient
 * (default: every f32 input), or the reason it passes no gradient at all.
 */
export type Gradient<P extends OpName> = { none: string } | { vjp: VjpRule<P>; inputs?: boolean[] };

export interface EvalContext<P extends OpName> {
  node: NodeOf<P>;
  /** Input values, row-major; i32 values are integral doubles. */
  ins: Float64Array[];
  shapes: Shape[];
  feeds: Feeds;
}

/** Everything about one primitive except its WGSL (codegen/index.ts RENDERERS) and its docs (docs/ir.md). */
export interface OpDef<P extends OpName> {
  kind: OpKind;
  /** Number of inputs ('variadic': one or more, checked by the rule). */
  arity: number | 'variadic';
  /** Constants the expression compiler evaluates wherever they are read (no buffer). */
  inline?: boolean;
  /** Unfused, the op aliases its input's buffer (its row-major data is the input's). */
  view?: boolean;
  /** Anchors whose kernel applies a fused elementwise tail (an Epilogue) before storing. */
  epilogue?: boolean;
  /** Binary ops whose inputs can be swapped (broadcasting is symmetric): CSE merges a·b and b·a. */
  commutative?: boolean;
  /** The output type from the inputs' types; `self` is the declared type of a leaf. Throws ShapeError. */
  type(ins: TypedValue[], attrs: OpAttrs[P], self: TypedValue): TypedValue;
  grad: Gradient<P>;
  /** The float64 value (docs/ir.md): the reference interpreter, constant folding and compile-time math. */
  eval(c: EvalContext<P>): Float64Array;
  /** Floating-point operations (multiply-add = 2), for lovtc --stats. */
  flops(node: NodeOf<P>, ins: Shape[]): number;
}

/** A family's part of the op table (each file keeps its literal keys with `satisfies`). */
export type OpTablePart = { [P in OpName]?: OpDef<P> };

// ---------------------------------------------------------------------------
// Shape rules

export function fail(msg: string): never {
  throw new ShapeError(msg);
}

export function need(cond: boolean, msg: string): void {
  if (!cond) fail(msg);
}

export function f32(shape: Shape): TypedValue {
  return { shape, dtype: 'f32' };
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape): Shape {
  const n = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) fail(`cannot broadcast ${shapeStr(a)} with ${shapeStr(b)} (dimension ${i - n} is ${da} vs ${db})`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** A possibly negative axis as an index into a shape of that rank. */
export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** The shape with the given axes set to 1: the keepdims form of a reduction. */
export function keptShape(shape: Shape, axes: number[]): Shape {
  const ax = new Set(axes.map((a) => normAxis(a, shape.length)));
  return shape.map((d, i) => (ax.has(i) ? 1 : d));
}

/** The output shape of a reduction of `x` over `axes`. */
export function reduceShape(x: Shape, axes: number[], keepdims: boolean): Shape {
  const ax = new Set(axes.map((a) => normAxis(a, x.length)));
  const out: Shape = [];
  x.forEach((d, i) => {
    if (ax.has(i)) {
      if (keepdims) out.push(1);
    } else out.push(d);
  });
  return out;
}

/** An int-or-[h, w] attribute as [h, w] (attributes arrive from JSON too, so the form is checked). */
export function pair(v: unknown, name: string): [number, number] {
  if (Array.isArray(v) && v.length === 2) return [v[0], v[1]];
  if (typeof v === 'number') return [v, v];
  fail(`attribute ${name} must be an int or a pair of ints, got ${JSON.stringify(v)}`);
}

/** Output size of a convolution or pooling window along one axis. */
export function convOut(size: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;
}

// ---------------------------------------------------------------------------
// Gradient plumbing

/** Sums a broadcast gradient back to `shape` (numpy broadcasting in reverse). */
export function unbroadcast(b: GraphBuilder, g: number, shape: Shape): number {
  const gs = b.node(g).shape;
  if (shapeStr(gs) === shapeStr(shape)) return g;
  const lead = gs.length - shape.length;
  const axes: number[] = [];
  gs.forEach((d, k) => {
    if (k < lead || (shape[k - lead] === 1 && d !== 1)) axes.push(k);
  });
  const r = axes.length ? b.sum(g, axes, false) : g;
  return shapeStr(b.node(r).shape) === shapeStr(shape) ? r : b.reshape(r, shape);
}

/** Reshapes a reduced value (y or g) to its keepdims shape so it broadcasts against the input. */
export function asKept(b: GraphBuilder, v: number, kept: Shape): number {
  return shapeStr(b.node(v).shape) === shapeStr(kept) ? v : b.reshape(v, kept);
}

/** The attributes `keys` of `attrs` that are set (an absent optional attribute stays absent). */
export function pick<T extends object, K extends keyof T>(attrs: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) if (attrs[k] !== undefined) out[k] = attrs[k];
  return out;
}

/** Zero FLOPs: leaves, layout, pure data movement. */
export const NO_FLOPS = (): number => 0;
