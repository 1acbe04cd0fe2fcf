// Reverse-mode automatic differentiation on the graph IR: one VJP rule per
// primitive (docs/ir.md lists them), applied in reverse topological order to
// the nodes that lie on a path from a `wrt` leaf to the loss. The backward
// nodes are appended to the same graph through the GraphBuilder, so they are
// typed by ops.ts like everything else and later passes (CSE, fold, DCE) clean
// up the redundancy the rules leave behind (repeated scalar constants, etc.).

import { GraphBuilder } from './builder.ts';
import { type Attrs, type Node, type OpName, type Shape, numel, shapeStr } from './ir.ts';

/** Ops whose output carries no gradient: it is piecewise constant, integer, or explicitly stopped. */
const NO_GRADIENT = new Set<OpName>([
  'input', 'param', 'buffer', 'full', 'tensor', 'iota',
  'gt', 'ge', 'lt', 'le', 'eq', 'ne', 'sign', 'isfinite', 'stop_gradient',
]);

/** Per-op masks of which input positions can receive a gradient (default: all, if f32). */
const DIFFERENTIABLE_INPUTS: Partial<Record<OpName, boolean[]>> = {
  where: [false, true, true], // the condition is a mask
  dropout: [true, false], // the seed
  gather: [true, false], // the indices
  scatter_add: [false, true],
  segment_max: [true, false],
  segment_max_grad: [false, false, true], // routing is piecewise constant in x
  max_pool2d_grad: [false, true],
};

/** Which inputs of `node` a gradient can flow into. */
function gradientEdges(node: Node, nodes: Node[]): boolean[] {
  if (NO_GRADIENT.has(node.op) || node.dtype !== 'f32') return node.inputs.map(() => false);
  const mask = DIFFERENTIABLE_INPUTS[node.op];
  return node.inputs.map((id, k) => (mask ? mask[k] : true) && nodes[id].dtype === 'f32');
}

interface VjpContext {
  b: GraphBuilder;
  node: Node;
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
type VjpRule = (c: VjpContext) => (number | null)[];

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

function shapeOf(c: VjpContext, k: number): Shape {
  return c.b.node(c.x[k]).shape;
}

/** A gradient for each input of a binary elementwise op, given the full-size contributions. */
function binaryGrads(c: VjpContext, ga: () => number, gb: () => number): (number | null)[] {
  return [c.need[0] ? unbroadcast(c.b, ga(), shapeOf(c, 0)) : null, c.need[1] ? unbroadcast(c.b, gb(), shapeOf(c, 1)) : null];
}

/** The keepdims shape of a reduction of `shape` over `axes`. */
function keptShape(shape: Shape, axes: number[]): Shape {
  const ax = new Set(axes.map((a) => (a < 0 ? a + shape.length : a)));
  return shape.map((d, i) => (ax.has(i) ? 1 : d));
}

/** Reshapes a reduced value (y or g) to its keepdims shape so it broadcasts against the input. */
function asKept(b: GraphBuilder, v: number, kept: Shape): number {
  return shapeStr(b.node(v).shape) === shapeStr(kept) ? v : b.reshape(v, kept);
}

function pick(attrs: Attrs, keys: string[], extra: Attrs = {}): Attrs {
  const out: Attrs = {};
  for (const k of keys) if (attrs[k] !== undefined) out[k] = attrs[k];
  return { ...out, ...extra };
}

const CONV_ATTRS = ['stride', 'padding', 'dilation', 'groups'];
const POOL_ATTRS = ['kernel', 'stride', 'padding'];
const UPSAMPLE_ATTRS = ['mode', 'alignCorners'];
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

const unsupportedSecondOrder = (op: string): VjpRule => () => {
  throw new Error(`autodiff: the gradient of ${op} with respect to its incoming gradient is not supported (second-order differentiation through ${op.replace('_grad', '')})`);
};

const RULES: Partial<Record<OpName, VjpRule>> = {
  // ---- elementwise unary
  neg: ({ b, g }) => [b.neg(g)],
  exp: ({ b, g, y }) => [b.mul(g, y)],
  log: ({ b, g, x }) => [b.div(g, x[0])],
  sqrt: ({ b, g, y }) => [b.div(b.mul(g, b.scalar(0.5)), y)],
  rsqrt: ({ b, g, y }) => [b.mul(g, b.mul(b.scalar(-0.5), b.mul(y, b.emit('square', [y]))))],
  abs: ({ b, g, x }) => [b.mul(g, b.emit('sign', [x[0]]))],
  relu: ({ b, g, x }) => [b.mul(g, b.emit('gt', [x[0], b.scalar(0)]))],
  sigmoid: ({ b, g, y }) => [b.mul(g, b.mul(y, b.sub(b.scalar(1), y)))],
  tanh: ({ b, g, y }) => [b.mul(g, b.sub(b.scalar(1), b.emit('square', [y])))],
  gelu: ({ b, g, x }) => {
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    const cdf = b.mul(b.scalar(0.5), b.add(b.scalar(1), b.emit('erf', [b.mul(x[0], b.scalar(Math.SQRT1_2))])));
    const pdf = b.mul(b.scalar(INV_SQRT_2PI), b.emit('exp', [b.mul(b.scalar(-0.5), b.emit('square', [x[0]]))]));
    return [b.mul(g, b.add(cdf, b.mul(x[0], pdf)))];
  },
  erf: ({ b, g, x }) => [b.mul(g, b.mul(b.scalar(2 / Math.sqrt(Math.PI)), b.emit('exp', [b.neg(b.emit('square', [x[0]]))])))],
  recip: ({ b, g, y }) => [b.neg(b.mul(g, b.emit('square', [y])))],
  square: ({ b, g, x }) => [b.mul(g, b.mul(x[0], b.scalar(2)))],
  cast: ({ g }) => [g], // only f32 -> f32 casts are on a gradient path
  dropout: ({ b, g, x, node }) => [b.emit('dropout', [g, x[1]], { ...node.attrs }), null],

  // ---- elementwise binary
  add: (c) => binaryGrads(c, () => c.g, () => c.g),
  sub: (c) => binaryGrads(c, () => c.g, () => c.b.neg(c.g)),
  mul: (c) => binaryGrads(c, () => c.b.mul(c.g, c.x[1]), () => c.b.mul(c.g, c.x[0])),
  div: (c) => binaryGrads(c, () => c.b.div(c.g, c.x[1]), () => c.b.neg(c.b.div(c.b.mul(c.g, c.y), c.x[1]))),
  pow: (c) => {
    const { b, g, x, y } = c;
    return binaryGrads(
      c,
      () => b.mul(g, b.mul(x[1], b.emit('pow', [x[0], b.sub(x[1], b.scalar(1))]))),
      () => b.mul(g, b.mul(y, b.emit('log', [x[0]]))),
    );
  },
  maximum: (c) => tieSplit(c, 'gt', 'ge'),
  minimum: (c) => tieSplit(c, 'lt', 'le'),
  where: ({ b, g, x, need }) => {
    const zero = b.scalar(0);
    return [
      null,
      need[1] ? unbroadcast(b, b.emit('where', [x[0], g, zero]), b.node(x[1]).shape) : null,
      need[2] ? unbroadcast(b, b.emit('where', [x[0], zero, g]), b.node(x[2]).shape) : null,
    ];
  },

  // ---- reductions
  sum: ({ b, g, x, node }) => {
    const xs = b.node(x[0]).shape;
    return [b.expand(asKept(b, g, keptShape(xs, node.attrs.axes as number[])), xs)];
  },
  max: ({ b, g, x, y, node }) => {
    // ties share the gradient equally (PyTorch amax)
    const axes = node.attrs.axes as number[];
    const kept = keptShape(b.node(x[0]).shape, axes);
    const mask = b.emit('eq', [x[0], asKept(b, y, kept)]);
    const count = b.sum(mask, axes, true);
    return [b.mul(mask, b.div(asKept(b, g, kept), count))];
  },
  logsumexp: ({ b, g, x, y, node }) => {
    const kept = keptShape(b.node(x[0]).shape, [node.attrs.axis as number]);
    return [b.mul(asKept(b, g, kept), b.emit('exp', [b.sub(x[0], asKept(b, y, kept))]))];
  },
  softmax: ({ b, g, y, node }) => {
    const dot = b.sum(b.mul(g, y), [node.attrs.axis as number], true);
    return [b.mul(y, b.sub(g, dot))];
  },

  // ---- layout
  reshape: ({ b, g, x }) => [b.reshape(g, b.node(x[0]).shape)],
  transpose: ({ b, g, node }) => {
    const perm = node.attrs.perm as number[];
    const inverse = new Array(perm.length);
    perm.forEach((p, k) => (inverse[p] = k));
    return [b.transpose(g, inverse)];
  },
  expand: ({ b, g, x }) => [unbroadcast(b, g, b.node(x[0]).shape)],
  slice: ({ b, g, x, node }) => {
    const xs = b.node(x[0]).shape;
    const starts = node.attrs.starts as number[];
    const ends = node.attrs.ends as number[];
    return [b.emit('pad', [g], { pads: xs.flatMap((d, k) => [starts[k], d - ends[k]]), value: 0 })];
  },
  concat: ({ b, g, x, node, need }) => {
    const ys = node.shape;
    const axis = (node.attrs.axis as number) < 0 ? (node.attrs.axis as number) + ys.length : (node.attrs.axis as number);
    let at = 0;
    return x.map((id, k) => {
      const d = b.node(id).shape[axis];
      const start = at;
      at += d;
      if (!need[k]) return null;
      return b.emit('slice', [g], { starts: ys.map((_, i) => (i === axis ? start : 0)), ends: ys.map((n, i) => (i === axis ? start + d : n)) });
    });
  },
  pad: ({ b, g, x, node }) => {
    const xs = b.node(x[0]).shape;
    const pads = node.attrs.pads as number[];
    if (pads.every((p) => p >= 0))
      return [b.emit('slice', [g], { starts: xs.map((_, k) => pads[2 * k]), ends: xs.map((d, k) => pads[2 * k] + d) })];
    return [b.emit('pad', [g], { pads: pads.map((p) => -p), value: 0 })];
  },

  // ---- contractions
  matmul: ({ b, g, x, need, node }) => {
    // Y = op(A)·op(B): dop(A) = G·op(B)ᵀ, dop(B) = op(A)ᵀ·G, folded into transpose flags.
    const tA = !!node.attrs.transA;
    const tB = !!node.attrs.transB;
    const [a, bb] = x;
    const mm = (p: number, q: number, transA: boolean, transB: boolean) => b.emit('matmul', [p, q], { transA, transB });
    const da = () => (tA ? mm(bb, g, tB, true) : mm(g, bb, false, !tB));
    const db = () => (tB ? mm(g, a, true, tA) : mm(a, g, !tA, false));
    return [need[0] ? unbroadcast(b, da(), b.node(a).shape) : null, need[1] ? unbroadcast(b, db(), b.node(bb).shape) : null];
  },
  conv2d: ({ b, g, x, need, node }) => {
    const [xs, ws] = [b.node(x[0]).shape, b.node(x[1]).shape];
    return [
      need[0] ? b.emit('conv2d_grad_input', [g, x[1]], pick(node.attrs, CONV_ATTRS, { inputSize: [xs[2], xs[3]] })) : null,
      need[1] ? b.emit('conv2d_grad_weight', [x[0], g], pick(node.attrs, CONV_ATTRS, { kernelSize: [ws[2], ws[3]] })) : null,
    ];
  },
  conv2d_grad_input: ({ b, g, x, need, node }) => {
    const ws = b.node(x[1]).shape;
    return [
      need[0] ? b.emit('conv2d', [g, x[1]], pick(node.attrs, CONV_ATTRS)) : null,
      need[1] ? b.emit('conv2d_grad_weight', [g, x[0]], pick(node.attrs, CONV_ATTRS, { kernelSize: [ws[2], ws[3]] })) : null,
    ];
  },
  conv2d_grad_weight: ({ b, g, x, need, node }) => {
    const xs = b.node(x[0]).shape;
    return [
      need[0] ? b.emit('conv2d_grad_input', [x[1], g], pick(node.attrs, CONV_ATTRS, { inputSize: [xs[2], xs[3]] })) : null,
      need[1] ? b.emit('conv2d', [x[0], g], pick(node.attrs, CONV_ATTRS)) : null,
    ];
  },

  // ---- pooling and resampling
  max_pool2d: ({ b, g, x, node }) => [b.emit('max_pool2d_grad', [x[0], g], pick(node.attrs, POOL_ATTRS))],
  max_pool2d_grad: unsupportedSecondOrder('max_pool2d_grad'),
  avg_pool2d: ({ b, g, x, node }) => {
    const xs = b.node(x[0]).shape;
    return [b.emit('avg_pool2d_grad', [g], pick(node.attrs, POOL_ATTRS, { inputSize: [xs[2], xs[3]] }))];
  },
  avg_pool2d_grad: ({ b, g, node }) => [b.emit('avg_pool2d', [g], pick(node.attrs, POOL_ATTRS))],
  upsample2d: ({ b, g, x, node }) => {
    const xs = b.node(x[0]).shape;
    return [b.emit('upsample2d_grad', [g], pick(node.attrs, UPSAMPLE_ATTRS, { size: node.attrs.size, inputSize: [xs[2], xs[3]] }))];
  },
  upsample2d_grad: ({ b, g, x, node }) => {
    const ds = b.node(x[0]).shape;
    return [b.emit('upsample2d', [g], pick(node.attrs, UPSAMPLE_ATTRS, { size: [ds[2], ds[3]] }))];
  },

  // ---- indexing
  gather: ({ b, g, x }) => [b.emit('scatter_add', [x[1], g], { numRows: b.node(x[0]).shape[0] }), null],
  scatter_add: ({ b, g, x }) => [null, b.emit('gather', [g, x[0]])],
  segment_max: ({ b, g, x }) => [b.emit('segment_max_grad', [x[0], x[1], g]), null],
  segment_max_grad: unsupportedSecondOrder('segment_max_grad'),
};

/** maximum/minimum: the winner gets g, ties split it evenly (PyTorch). */
function tieSplit(c: VjpContext, strict: OpName, loose: OpName): (number | null)[] {
  const { b, g, x } = c;
  let ga: number | undefined;
  const gaFull = () => (ga ??= b.mul(g, b.mul(b.add(b.emit(strict, x), b.emit(loose, x)), b.scalar(0.5))));
  return binaryGrads(c, gaFull, () => b.sub(g, gaFull()));
}

/**
 * Appends the backward graph of `loss` to `b` and returns, for every id in
 * `wrt`, the id of its gradient node (shaped like it). `loss` must be an f32
 * scalar (any shape with one element) unless `seed`, a gradient for the loss
 * shaped like it, is given. Only nodes on a path from a `wrt` node to the loss
 * are differentiated, so sub-graphs of frozen state get no backward nodes.
 */
export function gradients(b: GraphBuilder, loss: number, wrt: number[], seed?: number): Map<number, number> {
  const nodes = b.graph.nodes;
  const lossNode = nodes[loss];
  if (!lossNode) throw new Error(`autodiff: loss node ${loss} does not exist`);
  if (lossNode.dtype !== 'f32') throw new Error(`autodiff: the loss must be f32, node ${loss} (${lossNode.op}) is ${lossNode.dtype}`);
  if (seed === undefined && numel(lossNode.shape) !== 1)
    throw new Error(`autodiff: the loss must be a scalar, node ${loss} (${lossNode.op}${lossNode.name ? ' ' + lossNode.name : ''}) has shape ${shapeStr(lossNode.shape)}`);
  if (seed !== undefined && shapeStr(nodes[seed].shape) !== shapeStr(lossNode.shape))
    throw new Error(`autodiff: seed gradient ${shapeStr(nodes[seed].shape)} does not match loss ${shapeStr(lossNode.shape)}`);
  for (const w of wrt) {
    if (!nodes[w]) throw new Error(`autodiff: wrt node ${w} does not exist`);
    if (nodes[w].dtype !== 'f32') throw new Error(`autodiff: cannot differentiate with respect to ${nodes[w].dtype} node ${w} (${nodes[w].name ?? nodes[w].op})`);
  }

  // Forward: which nodes depend (differentiably) on a wrt node.
  const wrtSet = new Set(wrt);
  const edges = nodes.slice(0, loss + 1).map((n) => gradientEdges(n, nodes));
  const dependent = new Array<boolean>(loss + 1).fill(false);
  for (let id = 0; id <= loss; id++)
    dependent[id] = wrtSet.has(id) || nodes[id].inputs.some((i, k) => edges[id][k] && dependent[i]);
  // Backward: which of those the loss depends on.
  const onPath = new Array<boolean>(loss + 1).fill(false);
  onPath[loss] = dependent[loss];
  for (let id = loss; id >= 0; id--) {
    if (!onPath[id]) continue;
    nodes[id].inputs.forEach((i, k) => {
      if (edges[id][k] && dependent[i]) onPath[i] = true;
    });
  }

  const grads = new Map<number, number>();
  const accumulate = (id: number, g: number) => {
    const want = nodes[id].shape;
    if (shapeStr(nodes[g].shape) !== shapeStr(want))
      throw new Error(`autodiff: internal error, gradient for node ${id} (${nodes[id].op}) has shape ${shapeStr(nodes[g].shape)}, expected ${shapeStr(want)}`);
    const prev = grads.get(id);
    grads.set(id, prev === undefined ? g : b.add(prev, g));
  };
  if (onPath[loss]) grads.set(loss, seed ?? b.full(1, lossNode.shape));

  for (let id = loss; id >= 0; id--) {
    const g = grads.get(id);
    if (!onPath[id] || g === undefined || nodes[id].inputs.length === 0) continue;
    const node = nodes[id];
    const need = node.inputs.map((i, k) => edges[id][k] && onPath[i]);
    if (!need.some(Boolean)) continue;
    const rule = RULES[node.op];
    if (!rule) throw new Error(`autodiff: no gradient rule for op '${node.op}' (node ${id})`);
    const contributions = rule({ b, node, x: node.inputs, y: id, g, need });
    node.inputs.forEach((i, k) => {
      const c = contributions[k];
      if (need[k] && c !== null && c !== undefined) accumulate(i, c);
    });
  }

  const result = new Map<number, number>();
  for (const w of wrt) result.set(w, grads.get(w) ?? b.full(0, nodes[w].shape));
  return result;
}
