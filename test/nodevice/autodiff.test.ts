// Every primitive's VJP rule checked against central finite differences on the
// float64 reference interpreter, at small odd shapes (3, 5, 7), plus composite
// graphs and the gradient-flow rules (stop_gradient, integers, frozen state).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type Attrs, type ConvAttrs, type DType, type Graph, type OpName, type Shape, numel } from '../../compiler/ir.ts';
import { validateGraph } from '../../compiler/ops/index.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { evaluate } from '../../compiler/reference.ts';
import { Rng } from '../../compiler/random.ts';

interface Leaf {
  shape: Shape;
  /** values; default: standard normal */
  data?: ArrayLike<number>;
  /** false: fed as a constant input (no gradient checked) */
  wrt?: boolean;
  dtype?: DType;
}

let dataSeed = 100;
function randn(n: number, transform: (v: number) => number = (v) => v): Float64Array {
  const r = new Rng(dataSeed++);
  return Float64Array.from({ length: n }, () => transform(r.normal()));
}
const positive = (v: number) => 0.5 + Math.abs(v);
const awayFromZero = (v: number) => Math.sign(v || 1) * (0.5 + Math.abs(v));

/**
 * Builds `build(b, ids)` over the leaves (wrt leaves become params), reduces a
 * non-scalar result with a fixed random weighting, and compares the autodiff
 * gradient of every wrt element with a central finite difference.
 */
function gradCheck(leaves: Record<string, Leaf>, build: (b: GraphBuilder, ids: Record<string, number>) => number, what: string, tol = 1e-6) {
  const b = new GraphBuilder();
  const ids: Record<string, number> = {};
  const inputs: Record<string, ArrayLike<number>> = {};
  const state: Record<string, Float64Array> = {};
  for (const [name, leaf] of Object.entries(leaves)) {
    const data = leaf.data ?? randn(numel(leaf.shape));
    if (leaf.wrt === false) {
      ids[name] = b.input(name, leaf.shape, leaf.dtype ?? 'f32');
      inputs[name] = data;
    } else {
      ids[name] = b.state(name, leaf.shape, { kind: 'zeros' }, true);
      state[name] = Float64Array.from(data);
    }
  }
  const y = build(b, ids);
  let loss = y;
  if (numel(b.node(y).shape) !== 1) {
    const r = b.emit('tensor', [], { data: Array.from(randn(numel(b.node(y).shape))) }, { shape: b.node(y).shape });
    loss = b.sum(
      b.mul(y, r),
      b.node(y).shape.map((_, i) => i),
    );
  }
  const forward: Graph = structuredClone(b.graph);
  forward.outputs = { loss };
  const wrtNames = Object.keys(state);
  const g = gradients(
    b,
    loss,
    wrtNames.map((n) => ids[n]),
  );
  validateGraph(b.graph);
  for (const n of wrtNames) b.output(`grad.${n}`, g.get(ids[n])!);
  const analytic = evaluate(b.graph, { inputs, state }).outputs;
  const h = 1e-5;
  const lossAt = (s: Record<string, Float64Array>) => evaluate(forward, { inputs, state: s }).outputs.loss[0];
  for (const n of wrtNames) {
    const got = analytic[`grad.${n}`];
    assert.is(got.length, state[n].length);
    for (let i = 0; i < state[n].length; i++) {
      const plus = { ...state, [n]: Float64Array.from(state[n]) };
      const minus = { ...state, [n]: Float64Array.from(state[n]) };
      plus[n][i] += h;
      minus[n][i] -= h;
      const fd = (lossAt(plus) - lossAt(minus)) / (2 * h);
      if (!(Math.abs(got[i] - fd) <= tol * (1 + Math.abs(fd)))) assert.unreachable(`${what}: d loss / d ${n}[${i}] = ${got[i]}, finite difference ${fd}`);
    }
  }
}

/** One op applied to wrt leaves named a, b, c, … */
function opCheck(op: OpName, leaves: Leaf[], attrs: Attrs = {}, tol?: number) {
  const named: Record<string, Leaf> = {};
  leaves.forEach((l, i) => (named[String.fromCharCode(97 + i)] = l));
  gradCheck(named, (b, ids) => b.emit(op, Object.values(ids), attrs), `${op} ${JSON.stringify(attrs)}`, tol);
}

test('unary elementwise ops', () => {
  const s = [3, 5];
  for (const op of ['neg', 'exp', 'abs', 'relu', 'sigmoid', 'tanh', 'gelu', 'erf', 'square'] as OpName[]) opCheck(op, [{ shape: s }]);
  for (const op of ['log', 'sqrt', 'rsqrt'] as OpName[]) opCheck(op, [{ shape: s, data: randn(15, positive) }]);
  opCheck('recip', [{ shape: s, data: randn(15, awayFromZero) }]);
  opCheck('cast', [{ shape: [7] }], { to: 'f32' });
});

test('binary elementwise ops with broadcasting', () => {
  const A = { shape: [3, 1, 5] };
  const B = { shape: [7, 1] };
  for (const op of ['add', 'sub', 'mul', 'maximum', 'minimum'] as OpName[]) opCheck(op, [A, B]);
  opCheck('div', [A, { shape: [7, 1], data: randn(7, awayFromZero) }]);
  opCheck('pow', [{ shape: [3, 5], data: randn(15, positive) }, { shape: [5] }]);
  opCheck('mul', [{ shape: [] }, { shape: [3, 5] }]);
  // ties of maximum split the gradient evenly
  gradCheck(
    { a: { shape: [3], data: [1, 2, 3] }, b: { shape: [3], data: [1, 0, 5] } },
    (b, { a, b: c }) => b.emit('maximum', [a, c]),
    'maximum ties (central differences see the even split)',
  );
});

test('where: gradient flows to the picked branch only', () => {
  gradCheck(
    { c: { shape: [3, 1], data: [1, 0, 1], wrt: false }, a: { shape: [3, 5] }, b: { shape: [5] } },
    (b, { c, a, b: bb }) => b.emit('where', [c, a, bb]),
    'where',
  );
});

test('reductions: sum, max, logsumexp, softmax, log_softmax', () => {
  const X = { shape: [3, 5, 7] };
  opCheck('sum', [X], { axes: [0, 2], keepdims: false });
  opCheck('sum', [X], { axes: [-2], keepdims: true });
  opCheck('max', [X], { axes: [1], keepdims: false });
  opCheck('max', [X], { axes: [0, 2], keepdims: true });
  opCheck('logsumexp', [X], { axis: 1, keepdims: false });
  opCheck('logsumexp', [X], { axis: -1, keepdims: true });
  opCheck('softmax', [X], { axis: 0 });
  opCheck('softmax', [X], { axis: 2 });
  opCheck('log_softmax', [X], { axis: 1 });
  opCheck('log_softmax', [X], { axis: -1 });
});

test('layout: reshape, transpose, expand, slice, concat, pad', () => {
  opCheck('reshape', [{ shape: [3, 5, 7] }], { shape: [15, 7] });
  opCheck('transpose', [{ shape: [3, 5, 7] }], { perm: [2, 0, 1] });
  opCheck('expand', [{ shape: [3, 1] }], { shape: [5, 3, 7] });
  opCheck('slice', [{ shape: [3, 5, 7] }], { starts: [1, 0, 2], ends: [3, 5, 5] });
  opCheck('concat', [{ shape: [3, 2] }, { shape: [3, 5] }, { shape: [3, 1] }], { axis: 1 });
  opCheck('pad', [{ shape: [3, 5] }], { pads: [1, 2, 0, 3], value: 1.5 });
  opCheck('pad', [{ shape: [5, 5] }], { pads: [-1, 2, 1, -3], value: 0 });
});

test('matmul: transpose flags and batch broadcasting', () => {
  for (const transA of [false, true])
    for (const transB of [false, true]) opCheck('matmul', [{ shape: transA ? [5, 3] : [3, 5] }, { shape: transB ? [7, 5] : [5, 7] }], { transA, transB });
  opCheck('matmul', [{ shape: [2, 1, 3, 5] }, { shape: [3, 5, 2] }]);
  opCheck('matmul', [{ shape: [3, 5] }, { shape: [2, 7, 5] }], { transB: true });
});

test('conv2d and its gradient ops', () => {
  const attrs: ConvAttrs = { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 1 };
  opCheck('conv2d', [{ shape: [2, 3, 7, 5] }, { shape: [5, 3, 3, 2] }], attrs);
  const grouped = { stride: 1, padding: 1, dilation: 1, groups: 3 };
  opCheck('conv2d', [{ shape: [1, 3, 5, 5] }, { shape: [3, 1, 3, 3] }], grouped);
  // second order: the gradient ops themselves
  opCheck('conv2d_grad_input', [{ shape: [2, 5, 4, 7] }, { shape: [5, 3, 3, 2] }], { ...attrs, inputSize: [7, 5] });
  opCheck('conv2d_grad_weight', [{ shape: [2, 3, 7, 5] }, { shape: [2, 5, 4, 7] }], { ...attrs, kernelSize: [3, 2] });
});

test('pooling and upsampling', () => {
  opCheck('max_pool2d', [{ shape: [2, 3, 7, 5] }], { kernel: 3, stride: 2, padding: 1 });
  opCheck('avg_pool2d', [{ shape: [2, 3, 7, 5] }], { kernel: [3, 2], stride: [2, 1], padding: [1, 1] });
  opCheck('avg_pool2d_grad', [{ shape: [2, 3, 4, 6] }], { kernel: [3, 2], stride: [2, 1], padding: [1, 1], inputSize: [7, 5] });
  for (const mode of ['nearest', 'bilinear'] as const)
    for (const alignCorners of [false, true]) {
      opCheck('upsample2d', [{ shape: [1, 2, 3, 5] }], { size: [7, 4], mode, alignCorners });
      opCheck('upsample2d_grad', [{ shape: [1, 2, 7, 4] }], { size: [7, 4], mode, alignCorners, inputSize: [3, 5] });
    }
});

test('indexing: gather, scatter_add, segment_max (integer inputs get no gradient)', () => {
  const idx = { shape: [2, 3], data: [4, 0, 4, 1, 2, 1], wrt: false, dtype: 'i32' as DType };
  gradCheck({ t: { shape: [5, 3] }, i: idx }, (b, { t, i }) => b.emit('gather', [t, i]), 'gather');
  gradCheck({ i: idx, v: { shape: [2, 3, 7] } }, (b, { i, v }) => b.emit('scatter_add', [i, v], { numRows: 5 }), 'scatter_add');
  const seg = { shape: [2, 7], data: [0, 0, 1, 1, 1, -1, 2, 2, 2, 0, 5, 0, 0, 0], wrt: false, dtype: 'i32' as DType };
  gradCheck({ x: { shape: [2, 7, 3] }, s: seg }, (b, { x, s }) => b.emit('segment_max', [x, s], { numSegments: 3 }), 'segment_max');
});

test('dropout: the gradient is dropout of the gradient with the same mask', () => {
  gradCheck(
    { x: { shape: [5, 7] }, seed: { shape: [], data: [1234], wrt: false, dtype: 'i32' } },
    (b, { x, seed }) => b.emit('dropout', [x, seed], { p: 0.4, salt: 3 }),
    'dropout',
  );
});

test('fan-out accumulates; stop_gradient blocks; unreachable wrt gets zeros', () => {
  gradCheck({ x: { shape: [5] } }, (b, { x }) => b.add(b.mul(x, x), b.emit('exp', [x])), 'fan-out');
  const b = new GraphBuilder();
  const x = b.state('x', [3], { kind: 'zeros' }, true);
  const unused = b.state('unused', [2, 2], { kind: 'zeros' }, true);
  const loss = b.sum(b.mul(x, b.emit('stop_gradient', [x])), [0]);
  const g = gradients(b, loss, [x, unused]);
  b.output('gx', g.get(x)!);
  b.output('gu', g.get(unused)!);
  const r = evaluate(b.graph, { inputs: {}, state: { x: [1, -2, 3], unused: [1, 2, 3, 4] } }).outputs;
  assert.equal(Array.from(r.gx), [1, -2, 3]); // not 2x
  assert.equal(Array.from(r.gu), [0, 0, 0, 0]);
});

test('frozen sub-graphs get no backward nodes', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [1, 3, 5, 5]);
  const frozen = b.state('frozen.weight', [4, 3, 3, 3], { kind: 'zeros' }, false);
  const w = b.state('head.weight', [1, 4, 5, 5], { kind: 'zeros' }, true);
  const feat = b.emit('relu', [b.emit('conv2d', [x, frozen], { stride: 1, padding: 1, dilation: 1, groups: 1 })]);
  const loss = b.sum(b.mul(feat, w), [0, 1, 2, 3]);
  const before = b.graph.nodes.length;
  gradients(b, loss, [w]);
  const added = b.graph.nodes.slice(before).map((n) => n.op);
  assert.ok(added.length <= 4, `added ${added.join(', ')}`);
  for (const op of ['conv2d_grad_input', 'conv2d_grad_weight', 'gt']) assert.not.ok(added.includes(op as OpName), `${op} emitted for a frozen path`);
});

test('clear errors: non-scalar loss, integer wrt, second-order max pool', () => {
  const b = new GraphBuilder();
  const x = b.state('x', [3], { kind: 'zeros' }, true);
  assert.throws(() => gradients(b, b.emit('exp', [x]), [x]), /loss must be a scalar.*\[3\]/);
  const i = b.input('i', [3], 'i32');
  assert.throws(() => gradients(b, b.sum(x, [0]), [i]), /cannot differentiate with respect to i32/);
  const img = b.state('img', [1, 1, 4, 4], { kind: 'zeros' }, true);
  const dy = b.state('dy', [1, 1, 2, 2], { kind: 'zeros' }, true);
  const gp = b.emit('max_pool2d_grad', [img, dy], { kernel: 2, stride: 2, padding: 0 });
  assert.throws(() => gradients(b, b.sum(gp, [0, 1, 2, 3]), [dy]), /max_pool2d_grad.*not supported/);
});

test('composite: a tiny MLP with softmax cross-entropy', () => {
  const labels = [2, 0, 3, 3, 1];
  const onehot = Array.from({ length: 20 }, (_, k) => (labels[Math.floor(k / 4)] === k % 4 ? 1 : 0));
  gradCheck(
    {
      x: { shape: [5, 7], wrt: false },
      y: { shape: [5, 4], data: onehot, wrt: false },
      w1: { shape: [7, 3] },
      b1: { shape: [3] },
      w2: { shape: [3, 4] },
      b2: { shape: [4] },
    },
    (b, v) => {
      const h = b.emit('gelu', [b.add(b.emit('matmul', [v.x, v.w1]), v.b1)]);
      const z = b.add(b.emit('matmul', [h, v.w2]), v.b2);
      const nll = b.sub(b.emit('logsumexp', [z], { axis: 1 }), b.sum(b.mul(z, v.y), [1]));
      return b.mul(b.sum(nll, [0]), b.scalar(1 / 5));
    },
    'mlp',
  );
});

test('composite: conv + batch-norm-like normalisation + relu + max pool', () => {
  gradCheck(
    {
      x: { shape: [2, 3, 5, 5], wrt: false },
      w: { shape: [4, 3, 3, 3] },
      gamma: { shape: [1, 4, 1, 1], data: randn(4, positive) },
      beta: { shape: [1, 4, 1, 1] },
    },
    (b, v) => {
      const y = b.emit('conv2d', [v.x, v.w], { stride: 1, padding: 1, dilation: 1, groups: 1 });
      const count = b.scalar(1 / (2 * 5 * 5));
      const mean = b.mul(b.sum(y, [0, 2, 3], true), count);
      const c = b.sub(y, mean);
      const variance = b.mul(b.sum(b.emit('square', [c]), [0, 2, 3], true), count);
      const n = b.mul(c, b.emit('rsqrt', [b.add(variance, b.scalar(1e-5))]));
      const o = b.emit('relu', [b.add(b.mul(n, v.gamma), v.beta)]);
      return b.emit('max_pool2d', [o], { kernel: 2, stride: 2, padding: 0 });
    },
    'conv-bn',
    1e-5,
  );
});

test('composite: segment max over projected tokens with attention pooling', () => {
  const seg = [0, 0, 1, 1, 1, -1, 2, 0, 0, 0, 1, 1, 3, 3];
  gradCheck(
    { x: { shape: [2, 7, 3], wrt: false }, s: { shape: [2, 7], data: seg, wrt: false, dtype: 'i32' }, w: { shape: [3, 5] }, q: { shape: [5, 1] } },
    (b, v) => {
      const tokens = b.emit('tanh', [b.emit('matmul', [v.x, v.w])]); // [2, 7, 5]
      const sent = b.emit('segment_max', [tokens, v.s], { numSegments: 4 }); // [2, 4, 5]
      const scores = b.emit('softmax', [b.emit('matmul', [sent, v.q])], { axis: 1 }); // [2, 4, 1]
      return b.sum(b.mul(sent, scores), [1]); // [2, 5]
    },
    'segment-attention',
  );
});

test.run();
