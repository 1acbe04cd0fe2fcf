// Elementwise ops: unary math, casts, dropout, binary arithmetic with numpy
// broadcasting, comparisons and where. The expression compiler
// (codegen/elementwise.ts) evaluates them at one flat index, so they fuse into
// any group; i32 arithmetic wraps like WGSL's (docs/ir.md, Numerics).

import { type NodeOf, type OpName, type Shape, numel } from '../ir.ts';
import { dropoutStreamKey, dropoutUniform } from '../random.ts';
import {
  type EvalContext,
  type Gradient,
  type OpDef,
  type OpTablePart,
  type TypedValue,
  type VjpContext,
  NO_FLOPS,
  broadcastShapes,
  f32,
  need,
  unbroadcast,
} from './def.ts';
import { broadcastOffsets, castToI32, erf, gelu, wrapI32 } from './float64.ts';

export type Unary =
  'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'relu' | 'sigmoid' | 'tanh' | 'gelu' | 'erf' | 'recip' | 'square' | 'sign' | 'isfinite' | 'stop_gradient';
export type Binary = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum';
export type Compare = 'gt' | 'ge' | 'lt' | 'le' | 'eq' | 'ne';

const PIECEWISE_CONSTANT = { none: 'piecewise constant' };
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Elementwise FLOPs: one per output element. */
const perElement = (n: NodeOf<OpName>): number => numel(n.shape);

/** f applied per element; `i32` replaces it where WGSL's wrapping differs from "compute in f64, then wrap". */
function unary<P extends Unary>(f: (x: number) => number, grad: Gradient<P>, i32?: (x: number) => number): OpDef<P> {
  return {
    kind: 'elementwise',
    arity: 1,
    type: (ins) => ins[0],
    grad,
    eval: ({ node, ins }) => {
      const fn = node.dtype === 'i32' && i32 ? i32 : f;
      const x = ins[0];
      const out = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) out[i] = fn(x[i]);
      return node.dtype === 'i32' ? out.map(wrapI32) : out;
    },
    flops: perElement,
  };
}

/** f over the broadcast inputs; the result wraps when the op is i32. */
function broadcastEval(node: NodeOf<OpName>, ins: Float64Array[], shapes: Shape[], f: (a: number, b: number) => number): Float64Array {
  const [a, b] = ins;
  const oa = broadcastOffsets(shapes[0], node.shape);
  const ob = broadcastOffsets(shapes[1], node.shape);
  const out = new Float64Array(oa.length);
  for (let i = 0; i < out.length; i++) out[i] = f(a[oa[i]], b[ob[i]]);
  return node.dtype === 'i32' ? out.map(wrapI32) : out;
}

/** A binary arithmetic op (both inputs one dtype). `i32` as in unary(). */
function binary<P extends Binary>(
  op: P,
  f: (a: number, b: number) => number,
  vjp: (c: VjpContext<P>) => (number | null)[],
  extra: { commutative?: boolean; i32?: (a: number, b: number) => number } = {},
): OpDef<P> {
  const def: OpDef<P> = {
    kind: 'elementwise',
    arity: 2,
    type: (ins) => {
      need(ins[0].dtype === ins[1].dtype, `${op} of ${ins[0].dtype} and ${ins[1].dtype}: cast one side first`);
      return { shape: broadcastShapes(ins[0].shape, ins[1].shape), dtype: ins[0].dtype };
    },
    grad: { vjp },
    eval: ({ node, ins, shapes }) => broadcastEval(node, ins, shapes, (node.dtype === 'i32' && extra.i32) || f),
    flops: perElement,
  };
  if (extra.commutative) def.commutative = true;
  return def;
}

/** A comparison: any dtype in, f32 1.0 / 0.0 out. */
function compare<P extends Compare>(f: (a: number, b: number) => boolean, commutative = false): OpDef<P> {
  const def: OpDef<P> = {
    kind: 'elementwise',
    arity: 2,
    type: (ins) => f32(broadcastShapes(ins[0].shape, ins[1].shape)),
    grad: PIECEWISE_CONSTANT,
    eval: ({ node, ins, shapes }) => broadcastEval(node, ins, shapes, (a, b) => (f(a, b) ? 1 : 0)),
    flops: perElement,
  };
  if (commutative) def.commutative = true;
  return def;
}

function shapeOf(c: VjpContext<OpName>, k: number): Shape {
  return c.b.node(c.x[k]).shape;
}

/** A gradient for each input of a binary elementwise op, given the full-size contributions. */
function binaryGrads(c: VjpContext<OpName>, ga: () => number, gb: () => number): (number | null)[] {
  return [c.need[0] ? unbroadcast(c.b, ga(), shapeOf(c, 0)) : null, c.need[1] ? unbroadcast(c.b, gb(), shapeOf(c, 1)) : null];
}

/** maximum/minimum: the winner gets g, ties split it evenly (PyTorch). */
function tieSplit(c: VjpContext<'maximum' | 'minimum'>, strict: 'gt' | 'lt', loose: 'ge' | 'le'): (number | null)[] {
  const { b, g, x } = c;
  let ga: number | undefined;
  const gaFull = () => (ga ??= b.mul(g, b.mul(b.add(b.emit(strict, x), b.emit(loose, x)), b.scalar(0.5))));
  return binaryGrads(c, gaFull, () => b.sub(g, gaFull()));
}

function dropout({ node, ins }: EvalContext<'dropout'>): Float64Array {
  const x = ins[0];
  const p = node.attrs.p;
  const key = dropoutStreamKey(ins[1][0], node.attrs.salt ?? 0);
  const scale = 1 / (1 - p);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = dropoutUniform(i, key) >= p ? x[i] * scale : 0;
  return out;
}

export const ELEMENTWISE_DEFS = {
  neg: unary((x) => -x, { vjp: ({ b, g }) => [b.neg(g)] }),
  exp: unary(Math.exp, { vjp: ({ b, g, y }) => [b.mul(g, y)] }),
  log: unary(Math.log, { vjp: ({ b, g, x }) => [b.div(g, x[0])] }),
  sqrt: unary(Math.sqrt, { vjp: ({ b, g, y }) => [b.div(b.mul(g, b.scalar(0.5)), y)] }),
  rsqrt: unary((x) => 1 / Math.sqrt(x), { vjp: ({ b, g, y }) => [b.mul(g, b.mul(b.scalar(-0.5), b.mul(y, b.emit('square', [y]))))] }),
  abs: unary(Math.abs, { vjp: ({ b, g, x }) => [b.mul(g, b.emit('sign', [x[0]]))] }),
  relu: unary((x) => (x > 0 || Number.isNaN(x) ? x : 0), { vjp: ({ b, g, x }) => [b.mul(g, b.emit('gt', [x[0], b.scalar(0)]))] }),
  sigmoid: unary((x) => 1 / (1 + Math.exp(-x)), { vjp: ({ b, g, y }) => [b.mul(g, b.mul(y, b.sub(b.scalar(1), y)))] }),
  tanh: unary(Math.tanh, { vjp: ({ b, g, y }) => [b.mul(g, b.sub(b.scalar(1), b.emit('square', [y])))] }),
  gelu: unary(gelu, {
    vjp: ({ b, g, x }) => {
      // d/dx x·Φ(x) = Φ(x) + x·φ(x)
      const cdf = b.mul(b.scalar(0.5), b.add(b.scalar(1), b.emit('erf', [b.mul(x[0], b.scalar(Math.SQRT1_2))])));
      const pdf = b.mul(b.scalar(INV_SQRT_2PI), b.emit('exp', [b.mul(b.scalar(-0.5), b.emit('square', [x[0]]))]));
      return [b.mul(g, b.add(cdf, b.mul(x[0], pdf)))];
    },
  }),
  erf: unary(erf, { vjp: ({ b, g, x }) => [b.mul(g, b.mul(b.scalar(2 / Math.sqrt(Math.PI)), b.emit('exp', [b.neg(b.emit('square', [x[0]]))])))] }),
  recip: unary((x) => 1 / x, { vjp: ({ b, g, y }) => [b.neg(b.mul(g, b.emit('square', [y])))] }),
  square: unary(
    (x) => x * x,
    { vjp: ({ b, g, x }) => [b.mul(g, b.mul(x[0], b.scalar(2)))] },
    (x) => Math.imul(x, x),
  ),
  sign: unary((x) => (x > 0 ? 1 : x < 0 ? -1 : 0), PIECEWISE_CONSTANT),
  // 1.0 where finite, 0.0 for NaN and ±inf: the training programs' finite-or-stop flags.
  isfinite: {
    ...unary((x) => (Number.isFinite(x) ? 1 : 0), PIECEWISE_CONSTANT),
    type: (ins) => (need(ins[0].dtype === 'f32', 'isfinite takes an f32 tensor'), f32(ins[0].shape)),
  },
  stop_gradient: { ...unary((x) => x, { none: 'blocks the gradient by definition' }), view: true, flops: NO_FLOPS },
  cast: {
    kind: 'elementwise',
    arity: 1,
    type: (ins, a) => ({ shape: ins[0].shape, dtype: a.to }),
    grad: { vjp: ({ g }) => [g] }, // only f32 -> f32 casts are on a gradient path
    eval: ({ node, ins }) => (node.attrs.to === 'i32' ? ins[0].map(castToI32) : Float64Array.from(ins[0])),
    flops: NO_FLOPS,
  },
  dropout: {
    kind: 'elementwise',
    arity: 2,
    type: (ins, a) => {
      need(ins[1].dtype === 'i32' && ins[1].shape.length === 0, 'dropout seed must be an i32 scalar');
      need(a.p >= 0 && a.p < 1, `dropout probability must be in [0, 1), got ${a.p}`);
      return ins[0];
    },
    // The mask is a pure function of (index, seed, salt): the VJP is the same op on g.
    grad: { vjp: ({ b, g, x, node }) => [b.emit('dropout', [g, x[1]], { ...node.attrs }), null], inputs: [true, false] },
    eval: dropout,
    flops: perElement,
  },

  add: binary(
    'add',
    (a, b) => a + b,
    (c) =>
      binaryGrads(
        c,
        () => c.g,
        () => c.g,
      ),
    { commutative: true },
  ),
  sub: binary(
    'sub',
    (a, b) => a - b,
    (c) =>
      binaryGrads(
        c,
        () => c.g,
        () => c.b.neg(c.g),
      ),
  ),
  mul: binary(
    'mul',
    (a, b) => a * b,
    (c) =>
      binaryGrads(
        c,
        () => c.b.mul(c.g, c.x[1]),
        () => c.b.mul(c.g, c.x[0]),
      ),
    { commutative: true, i32: (a, b) => Math.imul(a, b) },
  ),
  div: binary(
    'div',
    (a, b) => a / b,
    (c) =>
      binaryGrads(
        c,
        () => c.b.div(c.g, c.x[1]),
        () => c.b.neg(c.b.div(c.b.mul(c.g, c.y), c.x[1])),
      ),
    {
      i32: (a, b) => (b === 0 ? a : a === -2147483648 && b === -1 ? a : Math.trunc(a / b)),
    },
  ),
  pow: binary(
    'pow',
    Math.pow,
    (c) => {
      const { b, g, x, y } = c;
      return binaryGrads(
        c,
        () => b.mul(g, b.mul(x[1], b.emit('pow', [x[0], b.sub(x[1], b.scalar(1))]))),
        () => b.mul(g, b.mul(y, b.emit('log', [x[0]]))),
      );
    },
    { i32: (a, b) => wrapI32(Math.pow(a, b)) },
  ),
  // NaN propagates (PyTorch's maximum/minimum).
  maximum: binary(
    'maximum',
    (a, b) => (a >= b || Number.isNaN(a) ? a : b),
    (c) => tieSplit(c, 'gt', 'ge'),
    { commutative: true },
  ),
  minimum: binary(
    'minimum',
    (a, b) => (a <= b || Number.isNaN(a) ? a : b),
    (c) => tieSplit(c, 'lt', 'le'),
    { commutative: true },
  ),

  gt: compare((a, b) => a > b),
  ge: compare((a, b) => a >= b),
  lt: compare((a, b) => a < b),
  le: compare((a, b) => a <= b),
  eq: compare((a, b) => a === b, true),
  ne: compare((a, b) => a !== b, true),
  where: {
    kind: 'elementwise',
    arity: 3,
    type: (ins: TypedValue[]) => {
      need(ins[1].dtype === ins[2].dtype, `where: branches have different dtypes ${ins[1].dtype} and ${ins[2].dtype}`);
      return { shape: broadcastShapes(broadcastShapes(ins[0].shape, ins[1].shape), ins[2].shape), dtype: ins[1].dtype };
    },
    grad: {
      vjp: ({ b, g, x, need }) => {
        const zero = b.scalar(0);
        return [
          null,
          need[1] ? unbroadcast(b, b.emit('where', [x[0], g, zero]), b.node(x[1]).shape) : null,
          need[2] ? unbroadcast(b, b.emit('where', [x[0], zero, g]), b.node(x[2]).shape) : null,
        ];
      },
      inputs: [false, true, true], // the condition is a mask
    },
    eval: ({ node, ins, shapes }) => {
      const [oc, oa, ob] = shapes.map((s) => broadcastOffsets(s, node.shape));
      const [c, a, b] = ins;
      const out = new Float64Array(oc.length);
      for (let i = 0; i < out.length; i++) out[i] = c[oc[i]] !== 0 ? a[oa[i]] : b[ob[i]];
      return out;
    },
    flops: perElement,
  },
} satisfies OpTablePart;
