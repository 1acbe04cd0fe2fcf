// Reductions: sum and max over any axis set, and the numerically stable
// logsumexp, softmax and log_softmax along one axis. Each anchors a kernel
// (codegen/reduce.ts) whose input producers fuse as a prologue and whose
// elementwise consumers fuse as an epilogue.

import { type Shape, numel } from '../ir.ts';
import { type OpTablePart, asKept, f32, keptShape, normAxis, reduceShape } from './def.ts';
import { broadcastOffsets, wrapI32 } from './float64.ts';

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
  for (let i = 0; i < x.length; i++) if (x[i] > out[map[i]] || Number.isNaN(x[i])) out[map[i]] = x[i];
  return out;
}

/** Per row along `axis`: its max m and s = Σ e^{x - m} (the stable form of Σ e^x = e^m · s). */
function rowExpSums(x: Float64Array, xShape: Shape, axis: number): { map: Int32Array; m: Float64Array; s: Float64Array } {
  const { map } = groupIndex(xShape, [axis]);
  const m = reduceMax(x, xShape, [axis]);
  const s = new Float64Array(m.length);
  for (let i = 0; i < x.length; i++) s[map[i]] += Math.exp(x[i] - m[map[i]]);
  return { map, m, s };
}

function logsumexp(x: Float64Array, xShape: Shape, axis: number): Float64Array {
  const { m, s } = rowExpSums(x, xShape, axis);
  return m.map((mi, g) => (Number.isFinite(mi) ? mi + Math.log(s[g]) : mi));
}

/** x - logsumexp(x), as (x - m) - ln s: no exponential of an unshifted value. */
function logSoftmax(x: Float64Array, xShape: Shape, axis: number): Float64Array {
  const { map, m, s } = rowExpSums(x, xShape, axis);
  return x.map((v, i) => v - m[map[i]] - Math.log(s[map[i]]));
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

/** One per input element for sum and max; the stable exp-normalised forms do about four. */
const inputElements = (_n: unknown, ins: Shape[]): number => numel(ins[0]);
const fourPerInputElement = (_n: unknown, ins: Shape[]): number => 4 * numel(ins[0]);

export const REDUCE_DEFS = {
  sum: {
    kind: 'reduce',
    arity: 1,
    epilogue: true,
    type: (ins, a) => ({ shape: reduceShape(ins[0].shape, a.axes, !!a.keepdims), dtype: ins[0].dtype }),
    grad: {
      vjp: ({ b, g, x, node }) => {
        const xs = b.node(x[0]).shape;
        return [b.expand(asKept(b, g, keptShape(xs, node.attrs.axes)), xs)];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const total = reduceSum(ins[0], shapes[0], node.attrs.axes);
      return node.dtype === 'i32' ? total.map(wrapI32) : total;
    },
    flops: inputElements,
  },
  max: {
    kind: 'reduce',
    arity: 1,
    epilogue: true,
    type: (ins, a) => ({ shape: reduceShape(ins[0].shape, a.axes, !!a.keepdims), dtype: ins[0].dtype }),
    grad: {
      vjp: ({ b, g, x, y, node }) => {
        // ties share the gradient equally (PyTorch amax)
        const axes = node.attrs.axes;
        const kept = keptShape(b.node(x[0]).shape, axes);
        const mask = b.emit('eq', [x[0], asKept(b, y, kept)]);
        const count = b.sum(mask, axes, true);
        return [b.mul(mask, b.div(asKept(b, g, kept), count))];
      },
    },
    eval: ({ node, ins, shapes }) => reduceMax(ins[0], shapes[0], node.attrs.axes),
    flops: inputElements,
  },
  logsumexp: {
    kind: 'reduce',
    arity: 1,
    epilogue: true,
    type: (ins, a) => f32(reduceShape(ins[0].shape, [a.axis], !!a.keepdims)),
    grad: {
      vjp: ({ b, g, x, y, node }) => {
        const kept = keptShape(b.node(x[0]).shape, [node.attrs.axis]);
        return [b.mul(asKept(b, g, kept), b.emit('exp', [b.sub(x[0], asKept(b, y, kept))]))];
      },
    },
    eval: ({ node, ins, shapes }) => logsumexp(ins[0], shapes[0], node.attrs.axis),
    flops: fourPerInputElement,
  },
  softmax: {
    kind: 'reduce',
    arity: 1,
    epilogue: true,
    type: (ins, a) => (normAxis(a.axis, ins[0].shape.length), f32(ins[0].shape)),
    grad: {
      vjp: ({ b, g, y, node }) => {
        const dot = b.sum(b.mul(g, y), [node.attrs.axis], true);
        return [b.mul(y, b.sub(g, dot))];
      },
    },
    eval: ({ node, ins, shapes }) => softmax(ins[0], shapes[0], node.attrs.axis),
    flops: fourPerInputElement,
  },
  log_softmax: {
    kind: 'reduce',
    arity: 1,
    epilogue: true,
    type: (ins, a) => (normAxis(a.axis, ins[0].shape.length), f32(ins[0].shape)),
    grad: {
      // y = x - logsumexp(x): dx = g - softmax(x)·Σ_axis g, with softmax(x) = e^y (y ≤ 0, no overflow).
      vjp: ({ b, g, y, node }) => [b.sub(g, b.mul(b.emit('exp', [y]), b.sum(g, [node.attrs.axis], true)))],
    },
    eval: ({ node, ins, shapes }) => logSoftmax(ins[0], shapes[0], node.attrs.axis),
    flops: fourPerInputElement,
  },
} satisfies OpTablePart;
