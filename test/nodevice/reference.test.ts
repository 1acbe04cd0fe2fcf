// The float64 reference interpreter against hand-computed values, algebraic
// identities (adjoints of the gradient ops) and an independent implementation
// (TensorFlow.js's CPU backend, float32) for the contractions and resampling.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type Attrs, type ConvAttrs, type DType, type OpName, type PoolAttrs, type Shape, numel } from '../../compiler/ir.ts';
import { evaluate, erf, gelu } from '../../compiler/reference.ts';
import { pcgHash, dropoutKeep, Rng } from '../../compiler/random.ts';

await tf.setBackend('cpu');

interface Arg {
  shape: Shape;
  data: ArrayLike<number>;
  dtype?: DType;
}

/** Evaluates one op on constant inputs fed through 'input' leaves. */
function run1(op: OpName, args: Arg[], attrs: Attrs = {}): { v: Float64Array; shape: Shape } {
  const b = new GraphBuilder();
  const inputs: Record<string, ArrayLike<number>> = {};
  const ids = args.map((a, i) => {
    inputs[`in${i}`] = a.data;
    return b.input(`in${i}`, a.shape, a.dtype ?? 'f32');
  });
  const y = b.emit(op, ids, attrs);
  b.output('y', y);
  return { v: evaluate(b.graph, { inputs, state: {} }).outputs.y, shape: b.node(y).shape };
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-12, what = '') {
  assert.is(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i],
      e = expected[i];
    const ok = (Number.isNaN(a) && Number.isNaN(e)) || a === e || Math.abs(a - e) <= tol * Math.max(1, Math.abs(e));
    if (!ok) assert.unreachable(`${what} element ${i}: got ${a}, expected ${e}`);
  }
}

function randn(n: number, seed: number): Float64Array {
  const r = new Rng(seed);
  return Float64Array.from({ length: n }, () => r.normal());
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** NCHW <-> NHWC through tfjs. */
function toNHWC(data: ArrayLike<number>, shape: Shape): tf.Tensor4D {
  return tf.transpose(tf.tensor4d(Array.from(data), shape as [number, number, number, number]), [0, 2, 3, 1]);
}
function fromNHWC(t: tf.Tensor): Float32Array {
  return tf.transpose(t, [0, 3, 1, 2]).dataSync() as Float32Array;
}

test('erf and gelu match tabulated values', () => {
  close(
    [0.5, 1, 2, 3, -1.3, 4, 0].map(erf),
    [0.5204998778130465, 0.8427007929497149, 0.9953222650189527, 0.9999779095030014, -0.9340079449406524, 0.9999999845827421, 0],
    1e-15,
  );
  close([gelu(1), gelu(-0.5), gelu(0)], [0.8413447460685429, -0.15426876936299344, 0], 1e-15);
});

test('unary elementwise ops', () => {
  const x = [-2, -0.5, 0, 0.5, 3];
  const f = (op: OpName) => run1(op, [{ shape: [5], data: x }]).v;
  close(f('neg'), [2, 0.5, -0, -0.5, -3]);
  close(f('relu'), [0, 0, 0, 0.5, 3]);
  close(f('abs'), [2, 0.5, 0, 0.5, 3]);
  close(f('sign'), [-1, -1, 0, 1, 1]);
  close(f('square'), [4, 0.25, 0, 0.25, 9]);
  close(
    f('sigmoid'),
    x.map((v) => 1 / (1 + Math.exp(-v))),
  );
  close(f('tanh'), x.map(Math.tanh));
  close(f('exp'), x.map(Math.exp));
  close(f('stop_gradient'), x);
  close(f('gelu'), x.map(gelu));
  close(f('erf'), x.map(erf));
  const p = [0.25, 1, 4];
  close(run1('sqrt', [{ shape: [3], data: p }]).v, [0.5, 1, 2]);
  close(run1('rsqrt', [{ shape: [3], data: p }]).v, [2, 1, 0.5]);
  close(run1('recip', [{ shape: [3], data: p }]).v, [4, 1, 0.25]);
  close(run1('log', [{ shape: [3], data: p }]).v, p.map(Math.log));
});

test('NaN propagates through relu, maximum, minimum and max as in PyTorch; isfinite is a 1/0 mask', () => {
  const x = [NaN, Infinity, -Infinity, -1, 2];
  const v = (op: OpName, ins: { shape: number[]; data: number[] }[], attrs = {}) => Array.from(run1(op, ins, attrs).v);
  assert.equal(v('relu', [{ shape: [5], data: x }]), [NaN, Infinity, 0, 0, 2]);
  assert.equal(v('isfinite', [{ shape: [5], data: x }]), [0, 0, 0, 1, 1]);
  for (const op of ['maximum', 'minimum'] as OpName[]) {
    assert.ok(
      Number.isNaN(
        v(op, [
          { shape: [1], data: [NaN] },
          { shape: [1], data: [1] },
        ])[0],
      ),
      `${op}(NaN, 1)`,
    );
    assert.ok(
      Number.isNaN(
        v(op, [
          { shape: [1], data: [1] },
          { shape: [1], data: [NaN] },
        ])[0],
      ),
      `${op}(1, NaN)`,
    );
  }
  assert.equal(v('max', [{ shape: [5], data: x }], { axes: [0] }), [NaN]);
  assert.equal(v('max_pool2d', [{ shape: [1, 1, 1, 5], data: x }], { kernel: [1, 2], stride: [1, 2], padding: 0 }), [NaN, -1]);
});

test('binary ops broadcast like numpy', () => {
  const a = [1, 2, 3, 4, 5, 6]; // [2, 1, 3]
  const b = [10, 20, 30, 40]; // [4, 1]
  const { v, shape } = run1('add', [
    { shape: [2, 1, 3], data: a },
    { shape: [4, 1], data: b },
  ]);
  assert.equal(shape, [2, 4, 3]);
  for (let i = 0; i < 2; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) assert.is(v[(i * 4 + j) * 3 + k], a[i * 3 + k] + b[j]);
  close(
    run1('sub', [
      { shape: [2], data: [5, 1] },
      { shape: [], data: [2] },
    ]).v,
    [3, -1],
  );
  close(
    run1('div', [
      { shape: [2], data: [1, 3] },
      { shape: [2], data: [4, 2] },
    ]).v,
    [0.25, 1.5],
  );
  close(
    run1('pow', [
      { shape: [3], data: [2, 9, 4] },
      { shape: [3], data: [3, 0.5, -1] },
    ]).v,
    [8, 3, 0.25],
  );
  close(
    run1('maximum', [
      { shape: [3], data: [1, 5, -2] },
      { shape: [1], data: [0] },
    ]).v,
    [1, 5, 0],
  );
  close(
    run1('minimum', [
      { shape: [3], data: [1, 5, -2] },
      { shape: [1], data: [0] },
    ]).v,
    [0, 0, -2],
  );
});

test('comparisons give 1/0 f32 and where picks a where c != 0', () => {
  const a = { shape: [4], data: [1, 2, 3, 4] };
  const b = { shape: [1], data: [2] };
  const cases: [OpName, number[]][] = [
    ['gt', [0, 0, 1, 1]],
    ['ge', [0, 1, 1, 1]],
    ['lt', [1, 0, 0, 0]],
    ['le', [1, 1, 0, 0]],
    ['eq', [0, 1, 0, 0]],
    ['ne', [1, 0, 1, 1]],
  ];
  for (const [op, want] of cases) {
    const r = run1(op, [a, b]);
    close(r.v, want, 0, op);
  }
  const w = run1('where', [
    { shape: [2, 1], data: [0, -3] },
    { shape: [3], data: [1, 2, 3] },
    { shape: [2, 3], data: [7, 8, 9, 10, 11, 12] },
  ]);
  assert.equal(w.shape, [2, 3]);
  close(w.v, [7, 8, 9, 1, 2, 3], 0);
});

test('i32 arithmetic wraps like WGSL; cast saturates and truncates', () => {
  const i = (data: number[]) => ({ shape: [data.length], data, dtype: 'i32' as DType });
  close(run1('mul', [i([65536, -3, 46341]), i([65536, 7, 46341])]).v, [0, -21, -2147479015], 0);
  close(run1('add', [i([2147483647, -5]), i([1, 2])]).v, [-2147483648, -3], 0);
  close(run1('div', [i([-7, 7, 5, -2147483648]), i([2, -2, 0, -1])]).v, [-3, -3, 5, -2147483648], 0);
  close(run1('cast', [{ shape: [5], data: [-1.7, 2.9, 1e10, NaN, -1e10] }], { to: 'i32' }).v, [-1, 2, 2147483647, 0, -2147483648], 0);
  close(run1('cast', [i([3, -4])], { to: 'f32' }).v, [3, -4], 0);
});

test('sum and max over axes, with and without keepdims', () => {
  const x = Array.from({ length: 24 }, (_, i) => ((i * 7) % 11) - 5); // [2, 3, 4]
  const at = (i: number, j: number, k: number) => x[(i * 3 + j) * 4 + k];
  const s = run1('sum', [{ shape: [2, 3, 4], data: x }], { axes: [0, -1], keepdims: false });
  assert.equal(s.shape, [3]);
  for (let j = 0; j < 3; j++) {
    let e = 0;
    for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) e += at(i, j, k);
    assert.is(s.v[j], e);
  }
  const m = run1('max', [{ shape: [2, 3, 4], data: x }], { axes: [1], keepdims: true });
  assert.equal(m.shape, [2, 1, 4]);
  for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) assert.is(m.v[i * 4 + k], Math.max(at(i, 0, k), at(i, 1, k), at(i, 2, k)));
  const all = run1('sum', [{ shape: [2, 3, 4], data: x }], { axes: [0, 1, 2] });
  assert.equal(all.shape, []);
  assert.is(
    all.v[0],
    x.reduce((p, q) => p + q, 0),
  );
});

test('logsumexp and softmax, stable for large and finite-masked values', () => {
  const x = [1, 2, 3, 1000, 1001, 1002, -1e9, -1e9, -1e9]; // [3, 3]; the last row is fully masked with finite fills
  const l = run1('logsumexp', [{ shape: [3, 3], data: x }], { axis: 1, keepdims: false });
  const lse = (r: number[]) => Math.log(r.reduce((p, q) => p + Math.exp(q - r[2]), 0)) + r[2];
  close(l.v, [lse([1, 2, 3]), lse([1000, 1001, 1002]), -1e9 + Math.log(3)], 1e-14);
  const s = run1('softmax', [{ shape: [3, 3], data: x }], { axis: -1 });
  const e = [1, Math.E, Math.E * Math.E];
  const z = e[0] + e[1] + e[2];
  close(s.v, [...e.map((v) => v / z), ...e.map((v) => v / z), 1 / 3, 1 / 3, 1 / 3], 1e-14);
  const lk = run1('logsumexp', [{ shape: [3, 3], data: x }], { axis: 0, keepdims: true });
  assert.equal(lk.shape, [1, 3]);
  close(lk.v, [lse([-1e9, 1, 1000].sort((p, q) => p - q)), lse([-1e9, 2, 1001].sort((p, q) => p - q)), lse([-1e9, 3, 1002].sort((p, q) => p - q))], 1e-14);
});

test('log_softmax: hand values, stable for large and finite-masked values, and tfjs along either axis', () => {
  const x = [1, 2, 3, 1000, 1001, 1002, -1e9, -1e9, -1e9]; // [3, 3]; the last row is fully masked with finite fills
  const ls = run1('log_softmax', [{ shape: [3, 3], data: x }], { axis: -1 });
  const row = [1, 2, 3].map((v) => v - 3 - Math.log(Math.exp(-2) + Math.exp(-1) + 1)); // x - max - ln Σ e^{x - max}
  close(ls.v, [...row, ...row, -Math.log(3), -Math.log(3), -Math.log(3)], 1e-14);
  const xs = [3, 5, 7];
  const r = randn(numel(xs), 21).map((v) => 4 * v);
  const t = tf.tensor(Array.from(r), xs);
  for (const axis of [0, 1, 2]) {
    const got = run1('log_softmax', [{ shape: xs, data: r }], { axis });
    close(got.v, tf.sub(t, tf.logSumExp(t, axis, true)).dataSync(), 1e-5, `axis ${axis}`);
  }
  close(run1('log_softmax', [{ shape: xs, data: r }], { axis: -1 }).v, tf.logSoftmax(t).dataSync(), 1e-5, 'tf.logSoftmax');
});

test('layout: reshape, transpose, expand, slice, concat, pad', () => {
  const x = Array.from({ length: 24 }, (_, i) => i); // [2, 3, 4]
  const t = run1('transpose', [{ shape: [2, 3, 4], data: x }], { perm: [2, 0, 1] });
  assert.equal(t.shape, [4, 2, 3]);
  for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) assert.is(t.v[(k * 2 + i) * 3 + j], x[(i * 3 + j) * 4 + k]);
  close(run1('reshape', [{ shape: [2, 3, 4], data: x }], { shape: [6, 4] }).v, x, 0);
  close(run1('expand', [{ shape: [2, 1], data: [5, 6] }], { shape: [3, 2, 2] }).v, [5, 5, 6, 6, 5, 5, 6, 6, 5, 5, 6, 6], 0);
  const s = run1('slice', [{ shape: [2, 3, 4], data: x }], { starts: [1, 0, 1], ends: [2, 2, 4] });
  assert.equal(s.shape, [1, 2, 3]);
  close(s.v, [13, 14, 15, 17, 18, 19], 0);
  const c = run1(
    'concat',
    [
      { shape: [2, 1], data: [1, 2] },
      { shape: [2, 2], data: [3, 4, 5, 6] },
      { shape: [2, 1], data: [7, 8] },
    ],
    { axis: 1 },
  );
  assert.equal(c.shape, [2, 4]);
  close(c.v, [1, 3, 4, 7, 2, 5, 6, 8], 0);
  const p = run1('pad', [{ shape: [2, 2], data: [1, 2, 3, 4] }], { pads: [1, 0, 0, 2], value: -9 });
  assert.equal(p.shape, [3, 4]);
  close(p.v, [-9, -9, -9, -9, 1, 2, -9, -9, 3, 4, -9, -9], 0);
  const crop = run1('pad', [{ shape: [3, 3], data: [1, 2, 3, 4, 5, 6, 7, 8, 9] }], { pads: [-1, 0, 1, -2], value: 0 });
  assert.equal(crop.shape, [2, 2]);
  close(crop.v, [0, 4, 0, 7], 0); // out[i][j] = x[i + 1][j - 1]
});

test('leaves: full, tensor, iota', () => {
  const b = new GraphBuilder();
  b.output('f', b.full(2.5, [2, 2]));
  b.output('fi', b.full(3.7, [2], 'i32'));
  b.output('t', b.emit('tensor', [], { data: [1, 2, 3] }, { shape: [3] }));
  b.output('i0', b.emit('iota', [], { axis: 0 }, { shape: [2, 3], dtype: 'i32' }));
  b.output('i1', b.emit('iota', [], { axis: -1 }, { shape: [2, 3] }));
  const o = evaluate(b.graph, { inputs: {}, state: {} }).outputs;
  close(o.f, [2.5, 2.5, 2.5, 2.5], 0);
  close(o.fi, [3, 3], 0);
  close(o.t, [1, 2, 3], 0);
  close(o.i0, [0, 0, 0, 1, 1, 1], 0);
  close(o.i1, [0, 1, 2, 0, 1, 2], 0);
});

test('matmul: every transpose combination and batch broadcasting (vs tfjs)', () => {
  const [m, k, n] = [3, 5, 2];
  for (const transA of [false, true])
    for (const transB of [false, true]) {
      const aShape = transA ? [k, m] : [m, k];
      const bShape = transB ? [n, k] : [k, n];
      const a = randn(m * k, 1),
        bb = randn(k * n, 2);
      const r = run1(
        'matmul',
        [
          { shape: aShape, data: a },
          { shape: bShape, data: bb },
        ],
        { transA, transB },
      );
      const e = tf
        .matMul(tf.tensor2d(Array.from(a), aShape as [number, number]), tf.tensor2d(Array.from(bb), bShape as [number, number]), transA, transB)
        .dataSync();
      close(r.v, e, 1e-5, `transA=${transA} transB=${transB}`);
    }
  // [2, 1, 3, 4] @ [5, 4, 2] -> [2, 5, 3, 2], checked by explicit loops
  const a = randn(24, 3),
    bb = randn(40, 4);
  const r = run1('matmul', [
    { shape: [2, 1, 3, 4], data: a },
    { shape: [5, 4, 2], data: bb },
  ]);
  assert.equal(r.shape, [2, 5, 3, 2]);
  for (let p = 0; p < 2; p++)
    for (let q = 0; q < 5; q++)
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 2; j++) {
          let s = 0;
          for (let l = 0; l < 4; l++) s += a[p * 12 + i * 4 + l] * bb[q * 8 + l * 2 + j];
          close([r.v[((p * 5 + q) * 3 + i) * 2 + j]], [s], 1e-12);
        }
});

test('conv2d matches tfjs (stride, padding, dilation, groups)', () => {
  const cases: (Required<ConvAttrs> & { x: Shape; w: Shape })[] = [
    { x: [2, 3, 7, 5], w: [4, 3, 3, 3], stride: 2, padding: 1, dilation: 1, groups: 1 },
    { x: [1, 2, 7, 6], w: [3, 2, 3, 2], stride: 1, padding: [2, 1], dilation: [2, 1], groups: 1 },
    { x: [1, 4, 5, 5], w: [6, 2, 3, 3], stride: 1, padding: 1, dilation: 1, groups: 2 },
  ];
  for (const c of cases) {
    const xd = randn(numel(c.x), 5),
      wd = randn(numel(c.w), 6);
    const r = run1(
      'conv2d',
      [
        { shape: c.x, data: xd },
        { shape: c.w, data: wd },
      ],
      { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups },
    );
    const [ph, pw] = Array.isArray(c.padding) ? c.padding : [c.padding, c.padding];
    const cg = c.x[1] / c.groups,
      og = c.w[0] / c.groups;
    const x = toNHWC(xd, c.x);
    const w = tf.transpose(tf.tensor4d(Array.from(wd), c.w as [number, number, number, number]), [2, 3, 1, 0]); // [kh, kw, Cg, O]
    const parts = [];
    for (let g = 0; g < c.groups; g++) {
      const xg = tf.slice(x, [0, 0, 0, g * cg], [-1, -1, -1, cg]);
      const wg = tf.slice(w, [0, 0, 0, g * og], [-1, -1, -1, og]);
      parts.push(
        tf.conv2d(
          xg as tf.Tensor4D,
          wg as tf.Tensor4D,
          c.stride,
          [
            [0, 0],
            [ph, ph],
            [pw, pw],
            [0, 0],
          ],
          'NHWC',
          c.dilation as number | [number, number],
        ),
      );
    }
    close(r.v, fromNHWC(tf.concat(parts, 3)), 1e-5, JSON.stringify(c));
  }
});

test('conv2d_grad_input and conv2d_grad_weight are the adjoints of conv2d', () => {
  const attrs: ConvAttrs = { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 2 };
  const xs = [2, 4, 7, 6],
    ws = [6, 2, 3, 2];
  const x = randn(numel(xs), 7),
    w = randn(numel(ws), 8);
  const y = run1(
    'conv2d',
    [
      { shape: xs, data: x },
      { shape: ws, data: w },
    ],
    attrs,
  );
  const dy = randn(y.v.length, 9);
  const dx = run1(
    'conv2d_grad_input',
    [
      { shape: y.shape, data: dy },
      { shape: ws, data: w },
    ],
    { ...attrs, inputSize: [7, 6] },
  );
  const dw = run1(
    'conv2d_grad_weight',
    [
      { shape: xs, data: x },
      { shape: y.shape, data: dy },
    ],
    { ...attrs, kernelSize: [3, 2] },
  );
  assert.equal(dx.shape, xs);
  assert.equal(dw.shape, ws);
  const ydy = dot(y.v, dy);
  close([dot(x, dx.v)], [ydy], 1e-12);
  close([dot(w, dw.v)], [ydy], 1e-12);
});

test('max_pool2d matches tfjs; its grad routes to the first maximum', () => {
  const xs = [1, 2, 7, 5];
  const x = randn(numel(xs), 10);
  const r = run1('max_pool2d', [{ shape: xs, data: x }], { kernel: 3, stride: 2, padding: 0 });
  close(r.v, fromNHWC(tf.maxPool(toNHWC(x, xs), 3, 2, 'valid')), 1e-6);
  // ties: each window routes its whole gradient to its first (row-major) maximum
  const tie = [1, 1, 0, 1, 1, 0, 0, 0, 2]; // [1, 1, 3, 3]
  const g = run1(
    'max_pool2d_grad',
    [
      { shape: [1, 1, 3, 3], data: tie },
      { shape: [1, 1, 2, 2], data: [10, 20, 30, 40] },
    ],
    { kernel: 2, stride: 1, padding: 0 },
  );
  close(g.v, [10, 20, 0, 30, 0, 0, 0, 0, 40], 0);
  // padding is skipped, not treated as 0: an all-negative input keeps negative maxima
  const p = run1('max_pool2d', [{ shape: [1, 1, 2, 2], data: [-1, -2, -3, -4] }], { kernel: 2, stride: 1, padding: 1 });
  close(p.v, [-1, -1, -2, -1, -1, -2, -3, -3, -4], 0);
});

test('avg_pool2d counts padding (count_include_pad) and its grad is the adjoint', () => {
  const x = [1, 2, 3, 4, 5, 6, 7, 8, 9]; // [1, 1, 3, 3]
  const r = run1('avg_pool2d', [{ shape: [1, 1, 3, 3], data: x }], { kernel: 2, stride: 2, padding: 1 });
  assert.equal(r.shape, [1, 1, 2, 2]);
  close(r.v, [1 / 4, (2 + 3) / 4, (4 + 7) / 4, (5 + 6 + 8 + 9) / 4]);
  const xs = [2, 3, 7, 6];
  const xr = randn(numel(xs), 11);
  const attrs: PoolAttrs = { kernel: [3, 2], stride: [2, 1], padding: [1, 1] };
  const y = run1('avg_pool2d', [{ shape: xs, data: xr }], attrs);
  const dy = randn(y.v.length, 12);
  const dx = run1('avg_pool2d_grad', [{ shape: y.shape, data: dy }], { ...attrs, inputSize: [7, 6] });
  close([dot(xr, dx.v)], [dot(y.v, dy)], 1e-12);
});

test('upsample2d matches tfjs resize (nearest, bilinear with and without align corners); grad is the adjoint', () => {
  const xs = [1, 2, 3, 5];
  const x = randn(numel(xs), 13);
  const size: [number, number] = [7, 8];
  const near = run1('upsample2d', [{ shape: xs, data: x }], { size, mode: 'nearest', alignCorners: false });
  close(near.v, fromNHWC(tf.image.resizeNearestNeighbor(toNHWC(x, xs), size, false, false)), 1e-6, 'nearest');
  const bil = run1('upsample2d', [{ shape: xs, data: x }], { size, mode: 'bilinear', alignCorners: false });
  close(bil.v, fromNHWC(tf.image.resizeBilinear(toNHWC(x, xs), size, false, true)), 1e-5, 'bilinear');
  const ac = run1('upsample2d', [{ shape: xs, data: x }], { size, mode: 'bilinear', alignCorners: true });
  close(ac.v, fromNHWC(tf.image.resizeBilinear(toNHWC(x, xs), size, true)), 1e-5, 'align corners');
  for (const mode of ['nearest', 'bilinear'] as const)
    for (const alignCorners of [false, true]) {
      const y = run1('upsample2d', [{ shape: xs, data: x }], { size, mode, alignCorners });
      const dy = randn(y.v.length, 14);
      const dx = run1('upsample2d_grad', [{ shape: y.shape, data: dy }], { size, mode, alignCorners, inputSize: [3, 5] });
      close([dot(x, dx.v)], [dot(y.v, dy)], 1e-12, `${mode} ${alignCorners}`);
    }
});

test('gather rows and scatter_add them back; out-of-range indices are errors', () => {
  const table = [0, 1, 10, 11, 20, 21]; // [3, 2]
  const g = run1('gather', [
    { shape: [3, 2], data: table },
    { shape: [2, 2], data: [2, 0, 2, 1], dtype: 'i32' },
  ]);
  assert.equal(g.shape, [2, 2, 2]);
  close(g.v, [20, 21, 0, 1, 20, 21, 10, 11], 0);
  const s = run1(
    'scatter_add',
    [
      { shape: [3], data: [2, 0, 2], dtype: 'i32' },
      { shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
    ],
    { numRows: 4 },
  );
  assert.equal(s.shape, [4, 2]);
  close(s.v, [3, 4, 0, 0, 6, 8, 0, 0], 0);
  assert.throws(
    () =>
      run1('gather', [
        { shape: [3, 2], data: table },
        { shape: [1], data: [3], dtype: 'i32' },
      ]),
    /gather index 3 is out of range \[0, 3\)/,
  );
});

test('segment_max: max per segment, 0 for empty segments, out-of-range ids ignored; grad to the first arg-max', () => {
  // B = 1, T = 5, D = 2; segments: 0, 0, -1, 2, 5 (S = 3; segment 1 is empty)
  const x = [1, 5, 3, 5, 100, 100, -2, -7, 100, 100];
  const seg = [0, 0, -1, 2, 5];
  const r = run1(
    'segment_max',
    [
      { shape: [1, 5, 2], data: x },
      { shape: [1, 5], data: seg, dtype: 'i32' },
    ],
    { numSegments: 3 },
  );
  assert.equal(r.shape, [1, 3, 2]);
  close(r.v, [3, 5, 0, 0, -2, -7], 0);
  const g = run1('segment_max_grad', [
    { shape: [1, 5, 2], data: x },
    { shape: [1, 5], data: seg, dtype: 'i32' },
    { shape: [1, 3, 2], data: [1, 2, 3, 4, 5, 6] },
  ]);
  close(g.v, [0, 2, 1, 0, 0, 0, 5, 6, 0, 0], 0); // tie 5 == 5 in column 1: first token gets it
});

test('pcg hash matches a BigInt implementation of the spec', () => {
  const M = (1n << 32n) - 1n;
  const pcgBig = (v: bigint) => {
    const state = (v * 747796405n + 2891336453n) & M;
    const word = (((state >> ((state >> 28n) + 4n)) ^ state) * 277803737n) & M;
    return Number(((word >> 22n) ^ word) & M);
  };
  for (const v of [0, 1, 2, 12345, 0x7fffffff, 0x80000000, 0xffffffff, 0xdeadbeef]) assert.is(pcgHash(v), pcgBig(BigInt(v)), `pcg(${v})`);
  const keepBig = (i: number, seed: number, salt: number, p: number) => {
    const key = (BigInt(seed >>> 0) * 0x9e3779b9n + BigInt(salt)) & M;
    const mixed = (pcgBig(BigInt(i)) ^ Number(key)) >>> 0;
    return (pcgBig(BigInt(mixed)) >>> 8) / 2 ** 24 >= p;
  };
  for (let i = 0; i < 200; i++) assert.is(dropoutKeep(i, -17 + i, 1000 + i, 0.5), keepBig(i, -17 + i, 1000 + i, 0.5), `keep(${i})`);
});

test('dropout: deterministic in (seed, salt), keeps ~1-p, scales kept values by 1/(1-p)', () => {
  const n = 20000,
    p = 0.3;
  const x = Float64Array.from({ length: n }, (_, i) => 1 + (i % 7));
  const drop = (seed: number, salt: number, prob = p) => {
    const b = new GraphBuilder();
    const xi = b.input('x', [n]);
    const s = b.input('seed', [], 'i32');
    b.output('y', b.emit('dropout', [xi, s], { p: prob, salt }));
    return evaluate(b.graph, { inputs: { x, seed: [seed] }, state: {} }).outputs.y;
  };
  const y = drop(42, 7);
  let kept = 0;
  y.forEach((v, i) => {
    if (v !== 0) {
      kept++;
      close([v], [x[i] / (1 - p)], 1e-15);
    }
    assert.is(v !== 0, dropoutKeep(i, 42, 7, p));
  });
  assert.ok(Math.abs(kept / n - (1 - p)) < 0.015, `kept fraction ${kept / n}`);
  close(drop(42, 7), y, 0);
  assert.not.equal(Array.from(drop(42, 8)), Array.from(y));
  assert.not.equal(Array.from(drop(43, 7)), Array.from(y));
  close(drop(1, 1, 0), x, 0);
});

test('evaluate: state feeds, outputs, updates, and clear errors for bad feeds', () => {
  const b = new GraphBuilder();
  const w = b.state('layer.w', [2], { kind: 'zeros' }, true);
  const x = b.input('x', [2]);
  const y = b.mul(w, x);
  b.output('y', y);
  b.update('layer.w', b.add(w, y));
  const r = evaluate(b.graph, { inputs: { x: [2, 3] }, state: { 'layer.w': [1, -1] } });
  close(r.outputs.y, [2, -3], 0);
  close(r.updates['layer.w'], [3, -4], 0);
  assert.is(r.values.length, b.graph.nodes.length);
  assert.throws(() => evaluate(b.graph, { inputs: {}, state: { 'layer.w': [1, 1] } }), /input 'x' was not fed/);
  assert.throws(() => evaluate(b.graph, { inputs: { x: [1, 2, 3] }, state: { 'layer.w': [1, 1] } }), /input 'x' has 3 values, shape \[2\] needs 2/);
});

test.run();
