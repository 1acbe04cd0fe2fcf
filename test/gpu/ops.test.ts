// Every primitive (except matmul/conv, tested with their generators) run on the
// device and compared with the float64 reference, at small shapes that are not
// multiples of 4 or of any workgroup size. Ops are grouped into a few graphs so
// each test compiles its kernels together; every op is its own output, so a
// failure names the op. Fusion is off here (fusion.test.ts covers it). FORWARD
// places every primitive: a new one does not type-check until it is.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { OpName, PoolAttrs, UpsampleAttrs } from '../../compiler/ir.ts';
import { Rng } from '../../compiler/random.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { PORTABLE_TARGET } from '../../compiler/codegen/gemm.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { checkAgainstReference, randomFeeds, randomTensor } from './reference-check.ts';

const unfused = { fuse: false };

/**
 * Where each primitive's device forward is checked against the float64
 * reference: 'here' (a graph of this file), or the test file that does it.
 * The last test checks that every 'here' op ran in some graph of this file.
 */
const FORWARD: { [P in OpName]: 'here' | `${string}.test.ts` } = {
  input: 'here',
  param: 'executor.test.ts',
  buffer: 'executor.test.ts',
  full: 'here',
  tensor: 'here',
  iota: 'here',
  neg: 'here',
  exp: 'here',
  log: 'here',
  sqrt: 'here',
  rsqrt: 'here',
  abs: 'here',
  relu: 'here',
  sigmoid: 'here',
  tanh: 'here',
  gelu: 'here',
  erf: 'here',
  recip: 'here',
  square: 'here',
  sign: 'here',
  isfinite: 'here',
  cast: 'here',
  stop_gradient: 'here',
  dropout: 'here',
  add: 'here',
  sub: 'here',
  mul: 'here',
  div: 'here',
  pow: 'here',
  maximum: 'here',
  minimum: 'here',
  gt: 'here',
  ge: 'here',
  lt: 'here',
  le: 'here',
  eq: 'here',
  ne: 'here',
  where: 'here',
  sum: 'here',
  max: 'here',
  logsumexp: 'here',
  softmax: 'here',
  log_softmax: 'here',
  reshape: 'here',
  transpose: 'here',
  expand: 'here',
  slice: 'here',
  concat: 'here',
  pad: 'here',
  matmul: 'matmul.test.ts',
  conv2d: 'conv.test.ts',
  conv2d_grad_input: 'conv.test.ts',
  conv2d_grad_weight: 'conv.test.ts',
  max_pool2d: 'here',
  max_pool2d_grad: 'here',
  avg_pool2d: 'here',
  avg_pool2d_grad: 'here',
  upsample2d: 'here',
  upsample2d_grad: 'here',
  gather: 'here',
  scatter_add: 'here',
  segment_max: 'here',
  segment_max_grad: 'here',
};

/** The ops of every graph this file checked. */
const covered = new Set<OpName>();

/** checkAgainstReference, recording the graph's ops. */
function check(...args: Parameters<typeof checkAgainstReference>) {
  for (const n of args[0].nodes) covered.add(n.op);
  return checkAgainstReference(...args);
}

test('unary f32 ops at [3, 5, 7], including saturating arguments', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5, 7]);
  const pos = b.input('pos', [3, 5, 7]);
  const big = b.input('big', [6]);
  const ops: OpName[] = ['neg', 'exp', 'abs', 'relu', 'sigmoid', 'tanh', 'gelu', 'erf', 'recip', 'square', 'sign', 'stop_gradient'];
  for (const op of ops) b.output(op, b.emit(op, [x]));
  for (const op of ['log', 'sqrt', 'rsqrt'] as OpName[]) b.output(op, b.emit(op, [pos]));
  for (const op of ['sigmoid', 'tanh', 'gelu', 'erf', 'exp'] as OpName[]) b.output(`${op}_big`, b.emit(op, [big]));
  const rng = new Rng(1);
  const feeds = randomFeeds(b.graph, 1, {
    x: randomTensor(rng, [3, 5, 7], 'f32', -4, 4),
    pos: randomTensor(rng, [3, 5, 7], 'f32', 0.05, 5),
    big: Float32Array.from([-60, -20, -1e-4, 3e-5, 20, 60]),
  });
  // recip near 0 amplifies f32 input rounding; erf/gelu use a 6e-8-abs-error approximation.
  await check(b.graph, feeds, { per: { erf: { atol: 2e-7 }, gelu: { atol: 2e-7 }, erf_big: { atol: 2e-7 }, gelu_big: { atol: 2e-7 } } }, unfused);
});

test('binary ops, comparisons and where with numpy broadcasting', async () => {
  const b = new GraphBuilder();
  const a = b.input('a', [3, 5, 7]);
  const col = b.input('col', [5, 1]);
  const row = b.input('row', [7]);
  const s = b.input('s', []);
  const pos = b.input('pos', [3, 5, 7]);
  const ints = b.input('ints', [5, 1]);
  for (const op of ['add', 'sub', 'mul', 'maximum', 'minimum'] as OpName[]) b.output(op, b.emit(op, [a, col]));
  b.output('div', b.emit('div', [row, pos]));
  b.output('outer', b.mul(col, row)); // [5,1] x [7] -> [5,7]
  b.output('scalar', b.sub(s, a));
  b.output('pow', b.emit('pow', [pos, col]));
  b.output('pow_square', b.emit('pow', [a, b.full(2)]));
  b.output('pow_half', b.emit('pow', [pos, b.full(0.5)]));
  b.output('pow_int_exponent', b.emit('pow', [a, ints])); // negative bases with integral exponents
  for (const op of ['gt', 'ge', 'lt', 'le', 'eq', 'ne'] as OpName[]) b.output(op, b.emit(op, [a, col]));
  b.output('eq_self', b.emit('eq', [a, a]));
  b.output('where', b.emit('where', [b.emit('gt', [a, row]), a, col]));
  const rng = new Rng(2);
  const feeds = randomFeeds(b.graph, 2, {
    pos: randomTensor(rng, [3, 5, 7], 'f32', 0.2, 3),
    ints: Float32Array.from([0, 1, 2, 3, -1]),
  });
  await check(b.graph, feeds, { rtol: 2e-5, per: { div: { rtol: 1e-5, atol: 1e-5 } } }, unfused);
});

test('i32 arithmetic, casts, comparisons and reductions follow WGSL semantics', async () => {
  const b = new GraphBuilder();
  const i = b.input('i', [4, 9], 'i32');
  const j = b.input('j', [9], 'i32');
  const f = b.input('f', [4, 9]);
  for (const op of ['add', 'sub', 'mul', 'div', 'maximum', 'minimum'] as OpName[]) b.output(op, b.emit(op, [i, j]));
  for (const op of ['neg', 'abs', 'square', 'sign', 'relu'] as OpName[]) b.output(op, b.emit(op, [i]));
  b.output('cast_to_i32', b.emit('cast', [f], { to: 'i32' }));
  b.output('cast_to_f32', b.emit('cast', [i], { to: 'f32' }));
  b.output('lt', b.emit('lt', [i, j]));
  b.output('where_i32_cond', b.emit('where', [i, f, b.full(-1)]));
  b.output('sum', b.sum(i, [1]));
  b.output('max', b.emit('max', [i], { axes: [0] }));
  const rng = new Rng(3);
  const feeds = randomFeeds(b.graph, 3, {
    i: randomTensor(rng, [4, 9], 'i32', -20, 20),
    j: Int32Array.from([0, 1, -1, 3, -7, 2147483647, 5, -2, 9]), // 0: x / 0 = x
    f: Float32Array.from({ length: 36 }, (_, k) => (k - 18) * 0.7 + (k === 5 ? 1e10 : 0) - (k === 6 ? 1e10 : 0)),
  });
  await check(b.graph, feeds, { rtol: 0, atol: 0 }, unfused);
});

test('constants: full, iota and tensor, read directly and inside expressions', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3]);
  b.output('full', b.full(1.5, [2, 3]));
  b.output('full_i32', b.full(-7, [5], 'i32'));
  const io = b.emit('iota', [], { axis: 1 }, { shape: [2, 3], dtype: 'f32' });
  b.output('iota', io);
  b.output('iota_i32', b.emit('iota', [], { axis: 0 }, { shape: [3, 2], dtype: 'i32' }));
  const t = b.emit('tensor', [], { data: [1, -2, 3, 0.25, 5, 6] }, { shape: [2, 3], dtype: 'f32' });
  b.output('tensor', t);
  b.output('mixed', b.add(b.mul(x, io), b.add(t, b.full(0.5))));
  await check(b.graph, randomFeeds(b.graph, 4), {}, unfused);
});

/** Every reduction kernel shape; run with the device's target (subgroup rows on lavapipe) and the portable one (shared-memory trees). */
function reductionsGraph(): GraphBuilder {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5, 7]);
  const wide = b.input('wide', [4, 70]); // long contiguous rows: tree kernel
  const tall = b.input('tall', [70, 3]); // long strided rows, few of them: tree kernel
  const many = b.input('many', [33, 4100]); // strided rows, many of them: loop kernel
  for (const axes of [[2], [1], [0], [0, 2], [0, 1, 2], [], [-2]]) b.output(`sum_${axes.join('_')}`, b.sum(x, axes));
  for (const axes of [[2], [0], [0, 2]]) b.output(`max_${axes.join('_')}`, b.emit('max', [x], { axes }));
  b.output('sum_keepdims', b.sum(x, [1], true));
  b.output('max_keepdims', b.emit('max', [x], { axes: [0, 2], keepdims: true }));
  b.output('sum_wide', b.sum(wide, [1]));
  b.output('max_wide', b.emit('max', [wide], { axes: [1] }));
  b.output('sum_tall', b.sum(tall, [0]));
  b.output('sum_many', b.sum(many, [0]));
  for (const axis of [0, 1, -1]) b.output(`softmax_${axis}`, b.emit('softmax', [x], { axis }));
  for (const axis of [0, 2]) b.output(`logsumexp_${axis}`, b.emit('logsumexp', [x], { axis }));
  b.output('logsumexp_keepdims', b.emit('logsumexp', [x], { axis: 1, keepdims: true }));
  b.output('softmax_wide', b.emit('softmax', [wide], { axis: 1 }));
  for (const axis of [0, 1, -1]) b.output(`log_softmax_${axis}`, b.emit('log_softmax', [x], { axis }));
  b.output('log_softmax_wide', b.emit('log_softmax', [wide], { axis: 1 }));
  b.output('log_softmax_tall', b.emit('log_softmax', [tall], { axis: 0 }));
  b.output('logsumexp_tall', b.emit('logsumexp', [tall], { axis: 0 }));
  // Large logits: stability (a naive exp would overflow f32).
  const scaled = b.mul(x, b.full(200));
  b.output('softmax_large', b.emit('softmax', [scaled], { axis: 2 }));
  b.output('logsumexp_large', b.emit('logsumexp', [scaled], { axis: 2 }));
  b.output('log_softmax_large', b.emit('log_softmax', [scaled], { axis: 2 }));
  // Masked with -1e9 as docs/ir.md prescribes: a fully masked row is uniform.
  b.output('softmax_masked', b.emit('softmax', [b.full(-1e9, [2, 3])], { axis: 1 }));
  b.output('log_softmax_masked', b.emit('log_softmax', [b.full(-1e9, [2, 3])], { axis: 1 }));
  // A row of -inf: logsumexp is -inf, not NaN (the online merge must not form -inf - -inf).
  b.output('logsumexp_neg_inf', b.emit('logsumexp', [b.add(b.full(-Infinity, [2, 40]), b.input('shift', [40]))], { axis: 1 }));
  return b;
}

test('reductions: sum/max over axis sets (row and loop kernels), keepdims, logsumexp, softmax and log_softmax', async () => {
  const b = reductionsGraph();
  const tol = { rtol: 1e-5, atol: 2e-6, per: { sum_many: { atol: 2e-5 } } };
  const feeds = randomFeeds(b.graph, 5);
  const device = await check(b.graph, feeds, tol, unfused);
  const portable = await check(b.graph, feeds, tol, { ...unfused, target: PORTABLE_TARGET });
  assert.is(device.outputs.logsumexp_neg_inf[0], -Infinity);
  assert.is(portable.outputs.logsumexp_neg_inf[1], -Infinity);
});

test('NaN and infinities propagate as in PyTorch: relu, maximum, minimum, max, logsumexp, pools, segment_max; isfinite', async () => {
  // WGSL's max(NaN, x) may return x, which turned a poisoned network into a finite
  // loss (relu -> 0 everywhere -> identical embeddings -> ln B). Every op must match
  // the reference, which keeps NaN wherever PyTorch does.
  const special = [NaN, Infinity, -Infinity, 0, -1.5, 2];
  const b = new GraphBuilder();
  const x = b.input('x', [4, 6]);
  const y = b.input('y', [4, 6]);
  for (const op of ['relu', 'isfinite', 'neg'] as OpName[]) b.output(op, b.emit(op, [x]));
  for (const op of ['maximum', 'minimum'] as OpName[]) {
    b.output(op, b.emit(op, [x, y]));
    b.output(`${op}_swapped`, b.emit(op, [y, x]));
  }
  b.output('max_rows', b.emit('max', [x], { axes: [1] }));
  b.output('max_all', b.emit('max', [x], { axes: [0, 1] }));
  b.output('max_long_rows', b.emit('max', [b.input('long', [3, 70])], { axes: [1] })); // tree / subgroup kernels
  b.output('logsumexp', b.emit('logsumexp', [x], { axis: 1 }));
  b.output('softmax', b.emit('softmax', [x], { axis: 1 }));
  const img = b.reshape(x, [1, 1, 4, 6]);
  b.output('max_pool', b.emit('max_pool2d', [img], { kernel: 2, stride: 2, padding: 0 }));
  b.output('segment_max', b.emit('segment_max', [b.reshape(x, [2, 4, 3]), b.input('seg', [2, 4], 'i32')], { numSegments: 3 }));
  // Row r of x holds `special` rotated by r, so each NaN/inf meets every neighbour; y is ordinary.
  const xs = Float32Array.from({ length: 24 }, (_, i) => special[(i + Math.floor(i / 6)) % 6]);
  const long = Float32Array.from({ length: 210 }, (_, i) => (i === 5 ? NaN : i === 100 ? Infinity : i === 209 ? NaN : Math.sin(i)));
  const feeds = { inputs: { x: xs, y: Float32Array.from({ length: 24 }, (_, i) => i - 12), long, seg: Int32Array.from([0, 1, 1, 2, 0, 0, 2, -1]) } };
  for (const opts of [unfused, {}, { target: PORTABLE_TARGET }]) {
    const r = await check(b.graph, feeds, { rtol: 1e-6, atol: 1e-6 }, opts);
    assert.ok(Number.isNaN(r.outputs.relu[0]) && Number.isNaN(r.outputs.max_all[0]) && Number.isNaN(r.outputs.max_long_rows[0]));
    assert.equal(Array.from(r.outputs.isfinite.slice(0, 6)), [0, 0, 0, 1, 1, 1]);
  }
});

test('whole-tensor reductions of any size share one pipeline (the length is read from the input binding)', async () => {
  const b = new GraphBuilder();
  const sizes = [[5, 7], [300], [2, 3, 70], [3]];
  sizes.forEach((shape, k) => {
    const x = b.input(`x${k}`, shape);
    b.output(
      `count${k}`,
      b.sum(
        b.sub(b.scalar(1), b.emit('isfinite', [x])),
        shape.map((_, i) => i),
      ),
    );
    b.output(
      `sumsq${k}`,
      b.sum(
        b.mul(x, x),
        shape.map((_, i) => i),
      ),
    );
  });
  const rng = new Rng(12);
  const overrides = Object.fromEntries(
    sizes.map((shape, k) => {
      const t = randomTensor(rng, shape, 'f32', -3, 3) as Float32Array;
      t[k] = [NaN, Infinity, -Infinity, 1][k];
      return [`x${k}`, t];
    }),
  );
  const r = await checkAgainstReference(b.graph, randomFeeds(b.graph, 12, overrides), { rtol: 1e-5 });
  assert.equal(
    sizes.map((_, k) => r.outputs[`count${k}`][0]),
    [1, 1, 1, 0],
  );
  const plan = planGraph(b.graph, {}, { target: PORTABLE_TARGET });
  const counts = new Set(plan.kernels.filter((k) => /isfinite/.test(k.wgsl)).map((k) => k.wgsl));
  // Sizes above and below the tree kernel's width: one pipeline each, not one per size.
  assert.ok(counts.size <= 2, `${counts.size} count pipelines for ${sizes.length} sizes`);
});

test('layout: transpose, expand, slice, concat, pad (with crop) and reshape views', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5, 7]);
  const y = b.input('y', [3, 2, 7]);
  const z = b.input('z', [3, 1, 7]);
  const v = b.input('v', [5, 1]);
  const k = b.input('k', [6], 'i32');
  for (const perm of [
    [2, 0, 1],
    [1, 0, 2],
    [0, 2, 1],
    [2, 1, 0],
  ])
    b.output(`transpose_${perm.join('')}`, b.transpose(x, perm));
  b.output('expand', b.expand(v, [3, 5, 4]));
  b.output('expand_scalar', b.expand(b.reshape(v, [5, 1, 1]), [5, 2, 3]));
  b.output('slice', b.emit('slice', [x], { starts: [1, 0, 2], ends: [3, 4, 7] }));
  b.output('concat', b.emit('concat', [x, y, z], { axis: 1 }));
  b.output('concat_last', b.emit('concat', [x, x], { axis: -1 }));
  b.output('pad', b.emit('pad', [x], { pads: [0, 1, 2, 0, 1, 3], value: -0.5 }));
  b.output('pad_crop', b.emit('pad', [x], { pads: [-1, 0, 1, -2, 0, 0], value: 0 }));
  b.output('reshape', b.reshape(x, [15, 7]));
  b.output('transpose_i32', b.transpose(b.reshape(k, [2, 3]), [1, 0]));
  b.output('concat_i32', b.emit('concat', [k, k], { axis: 0 }));
  await check(b.graph, randomFeeds(b.graph, 6), { rtol: 0, atol: 0 }, unfused);
});

test('pooling and its gradients (padding, overlapping windows, ties)', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3, 7, 9]);
  const ties = b.input('ties', [1, 2, 5, 6]); // small integers: many equal maxima
  const geoms: PoolAttrs[] = [
    { kernel: 3, stride: 2, padding: 1 },
    { kernel: [2, 3], stride: [1, 2], padding: [0, 1] },
  ];
  geoms.forEach((attrs, i) => {
    const sources =
      i === 0
        ? ([
            ['x', x, [7, 9]],
            ['ties', ties, [5, 6]],
          ] as const)
        : ([['x', x, [7, 9]]] as const);
    for (const [name, src, size] of sources) {
      const mp = b.emit('max_pool2d', [src], attrs);
      const ap = b.emit('avg_pool2d', [src], attrs);
      b.output(`max_pool_${name}_${i}`, mp);
      b.output(`avg_pool_${name}_${i}`, ap);
      const dy = b.input(`dy_${name}_${i}`, b.node(mp).shape);
      b.output(`max_pool_grad_${name}_${i}`, b.emit('max_pool2d_grad', [src, dy], attrs));
      b.output(`avg_pool_grad_${name}_${i}`, b.emit('avg_pool2d_grad', [dy], { ...attrs, inputSize: [...size] }));
    }
  });
  const rng = new Rng(7);
  const feeds = randomFeeds(b.graph, 7, { ties: randomTensor(rng, [1, 2, 5, 6], 'f32', 0, 3).map(Math.floor) as Float32Array });
  await check(b.graph, feeds, { rtol: 1e-5, atol: 1e-6 }, unfused);
});

test('upsample2d (nearest, bilinear with and without align_corners) and its gradient', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3, 5, 7]);
  const sizes = [
    [12, 9],
    [3, 4],
    [1, 1],
  ];
  const modes = [
    ['nearest', false],
    ['bilinear', false],
    ['bilinear', true],
  ] as const;
  for (const [oh, ow] of sizes)
    for (const [mode, alignCorners] of modes) {
      const tag = `${mode}${alignCorners ? '_align' : ''}_${oh}x${ow}`;
      const attrs: UpsampleAttrs = { size: [oh, ow], mode, alignCorners };
      b.output(`up_${tag}`, b.emit('upsample2d', [x], attrs));
      const dy = b.input(`dy_${tag}`, [2, 3, oh, ow]);
      b.output(`up_grad_${tag}`, b.emit('upsample2d_grad', [dy], { ...attrs, inputSize: [5, 7] }));
    }
  await check(b.graph, randomFeeds(b.graph, 8), { rtol: 1e-5, atol: 2e-6 }, unfused);
});

test('gather, scatter_add (scan and sorted paths) and out-of-range rows', async () => {
  const b = new GraphBuilder();
  const table = b.input('table', [10, 3]);
  const idx = b.input('idx', [2, 5], 'i32');
  const vals = b.input('vals', [2, 5, 3]);
  const bigIdx = b.input('big_idx', [300], 'i32');
  const bigVals = b.input('big_vals', [300, 2]);
  b.output('gather', b.emit('gather', [table, idx]));
  b.output('gather_rows', b.emit('gather', [b.input('table1', [10]), idx]));
  b.output('scatter_scan', b.emit('scatter_add', [idx, vals], { numRows: 10 }));
  b.output('scatter_sorted', b.emit('scatter_add', [bigIdx, bigVals], { numRows: 400 }));
  const rng = new Rng(9);
  const feeds = randomFeeds(b.graph, 9, {
    idx: Int32Array.from([3, 0, 9, 3, 3, 7, 1, 0, 9, 2]),
    big_idx: randomTensor(rng, [300], 'i32', 0, 50), // many duplicates: long runs per row
  });
  await check(b.graph, feeds, { rtol: 1e-5, atol: 1e-6 }, unfused);
});

test('segment_max and segment_max_grad: empty segments, ignored ids, first arg-max on ties', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 9, 5]);
  const seg = b.input('seg', [2, 9], 'i32');
  const dy = b.input('dy', [2, 4, 5]);
  b.output('segment_max', b.emit('segment_max', [x, seg], { numSegments: 4 }));
  b.output('segment_max_grad', b.emit('segment_max_grad', [x, seg, dy]));
  const rng = new Rng(10);
  const feeds = randomFeeds(b.graph, 10, {
    x: randomTensor(rng, [2, 9, 5], 'f32', -2, 2).map(Math.round) as Float32Array, // integers: ties
    seg: Int32Array.from([0, 0, 1, 1, 1, -1, 3, 3, 7, /**/ 2, 2, 2, 0, 0, 0, 0, 4, -3]), // segment 2 empty in batch 0, 1 and 3 in batch 1
  });
  await check(b.graph, feeds, { rtol: 0, atol: 0 }, unfused);
});

test('dropout reproduces the reference mask bit for bit', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5, 7]);
  const seed = b.input('seed', [], 'i32');
  b.output('d30', b.emit('dropout', [x, seed], { p: 0.3, salt: 12345 }));
  b.output('d10', b.emit('dropout', [x, seed], { p: 0.1, salt: 0xdeadbeef }));
  b.output('d0', b.emit('dropout', [x, seed], { p: 0, salt: 1 }));
  for (const s of [7, -123456789]) await check(b.graph, randomFeeds(b.graph, 11, { seed: Int32Array.of(s) }), { rtol: 1e-6, atol: 0 }, unfused);
});

test('dispatches over maxComputeWorkgroupsPerDimension fold into a 2-D grid', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [37, 41]); // 1517 elements: 6 workgroups of 256
  const idx = b.input('idx', [300], 'i32');
  const vals = b.input('vals', [300]);
  b.output('exp', b.emit('exp', [x]));
  b.output('sum_rows', b.sum(x, [1])); // tree: one workgroup per row
  b.output('sum_cols', b.sum(x, [0]));
  b.output('softmax', b.emit('softmax', [x], { axis: 0 }));
  b.output('pool', b.emit('avg_pool2d', [b.reshape(x, [1, 1, 37, 41])], { kernel: 2, stride: 1, padding: 0 }));
  b.output('scatter', b.emit('scatter_add', [idx, vals], { numRows: 500 }));
  const dev = await getNodeDevice();
  const plan = planGraph(b.graph, { ...dev.limits, maxComputeWorkgroupsPerDimension: 7 }, { fuse: false });
  for (const k of plan.kernels) assert.ok(k.workgroups[0] <= 7 && k.workgroups[1] <= 7, `${k.name} ${k.workgroups}`);
  assert.ok(
    plan.kernels.some((k) => k.workgroups[1] > 1),
    'some dispatch folded',
  );
  const rng = new Rng(12);
  await check(b.graph, randomFeeds(b.graph, 12, { idx: randomTensor(rng, [300], 'i32', 0, 500) }), { rtol: 1e-5, atol: 1e-6 }, { plan });
});

test('every primitive placed here in FORWARD ran in a graph of this file', () => {
  const missing = (Object.keys(FORWARD) as OpName[]).filter((op) => FORWARD[op] === 'here' && !covered.has(op));
  assert.equal(missing, [], `not run here: ${missing.join(', ')}`);
});

test.run();
