// Fused kernels must compute exactly what the unfused ones do: each graph here
// runs with fusion on and off, both are checked against the float64 reference,
// and the fused plan must really have fused (fewer dispatches).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { Graph } from '../../compiler/ir.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { assertClose, checkAgainstReference, randomFeeds } from './reference-check.ts';

/** Runs fused and unfused, checks both against the reference and each other; returns both dispatch counts. */
async function fusedMatchesUnfused(graph: Graph, seed: number, tol = { rtol: 1e-5, atol: 2e-6 }): Promise<{ fused: number; unfused: number }> {
  const feeds = randomFeeds(graph, seed);
  const fused = await checkAgainstReference(graph, feeds, tol, { fuse: true });
  const unfused = await checkAgainstReference(graph, feeds, tol, { fuse: false });
  for (const name of Object.keys(graph.outputs)) assertClose(`fused vs unfused ${name}`, fused.outputs[name], unfused.outputs[name], tol);
  return { fused: fused.program.dispatches, unfused: unfused.program.dispatches };
}

test('elementwise chains with broadcasts, expands, transposes and reshapes become one kernel', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5, 7]);
  const w = b.input('w', [7]);
  const bias = b.input('bias', [5, 1]);
  const h = b.emit('gelu', [b.add(b.mul(x, w), bias)]);
  const t = b.transpose(b.reshape(h, [15, 7]), [1, 0]); // [7, 15]
  const e = b.expand(b.reshape(w, [7, 1]), [7, 15]);
  b.output('y', b.emit('tanh', [b.sub(t, e)]));
  const n = await fusedMatchesUnfused(b.graph, 1);
  assert.is(n.fused, 1);
  assert.ok(n.unfused >= 7);
});

test('slice, pad and concat inside a fused chain', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [4, 9]);
  const y = b.input('y', [4, 3]);
  const s = b.emit('slice', [b.emit('exp', [x])], { starts: [1, 2], ends: [4, 8] }); // [3, 6]
  const p = b.emit('pad', [b.neg(s)], { pads: [1, 0, 0, 2], value: 0.25 }); // [4, 8]
  const c = b.emit('concat', [p, b.emit('sigmoid', [y])], { axis: 1 }); // [4, 11]
  b.output('z', b.mul(c, b.full(3)));
  const n = await fusedMatchesUnfused(b.graph, 2);
  assert.is(n.fused, 1);
});

test('reductions take elementwise prologues and epilogues (norms, masked softmax, logsumexp)', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [6, 40]);
  const mask = b.input('mask', [40]);
  // L2 norm: prologue x*x, epilogue sqrt(. + eps)
  b.output('norm', b.emit('sqrt', [b.add(b.sum(b.mul(x, x), [1]), b.full(1e-6))]));
  // attention-style softmax of scaled, masked logits
  const logits = b.add(b.mul(x, b.full(0.125)), b.mul(b.sub(mask, b.full(1)), b.full(1e9)));
  b.output('attn', b.emit('softmax', [logits], { axis: 1 }));
  // mean via an epilogue division, and a logsumexp with a scaled input
  b.output('mean', b.div(b.sum(x, [0]), b.full(6)));
  b.output('lse', b.neg(b.emit('logsumexp', [b.div(x, b.full(0.3))], { axis: 1 })));
  const feeds = randomFeeds(b.graph, 3, { mask: Float32Array.from({ length: 40 }, (_, i) => (i % 7 === 3 ? 0 : 1)) });
  const fused = await checkAgainstReference(b.graph, feeds, { rtol: 1e-5, atol: 2e-6 }, { fuse: true });
  const unfused = await checkAgainstReference(b.graph, feeds, { rtol: 1e-5, atol: 2e-6 }, { fuse: false });
  assert.is(fused.program.dispatches, 4);
  assert.ok(unfused.program.dispatches > 12);
});

test('log_softmax takes a prologue and an epilogue: cross-entropy terms in one kernel', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [5, 37]);
  const bias = b.input('bias', [37]);
  const label = b.input('label', [5, 37]);
  const logp = b.emit('log_softmax', [b.add(b.mul(x, b.full(3)), bias)], { axis: 1 });
  b.output('nll', b.neg(b.mul(logp, label)));
  const n = await fusedMatchesUnfused(b.graph, 5);
  assert.is(n.fused, 1);
  assert.ok(n.unfused >= 5);
});

test('layer norm: shared intermediates are materialised once, the rest fuses', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 5, 33]);
  const gamma = b.input('gamma', [33]);
  const beta = b.input('beta', [33]);
  const mean = b.div(b.sum(x, [2], true), b.full(33));
  const xc = b.sub(x, mean);
  const variance = b.div(b.sum(b.mul(xc, xc), [2], true), b.full(33));
  const y = b.add(b.mul(b.mul(xc, b.emit('rsqrt', [b.add(variance, b.full(1e-5))])), gamma), beta);
  b.output('y', y);
  const n = await fusedMatchesUnfused(b.graph, 4);
  assert.ok(n.fused <= 4, `fused layer norm uses ${n.fused} dispatches`);
});

test('pooling, gather and segment_max take an epilogue', async () => {
  const b = new GraphBuilder();
  const img = b.input('img', [2, 3, 6, 5]);
  const table = b.input('table', [8, 4]);
  const idx = b.input('idx', [5], 'i32');
  const bias = b.input('bias', [3, 1, 1]);
  b.output('pool', b.emit('relu', [b.add(b.emit('max_pool2d', [img], { kernel: 2, stride: 2, padding: 0 }), bias)]));
  b.output('emb', b.mul(b.emit('gather', [table, idx]), b.full(2)));
  const feeds = randomFeeds(b.graph, 5, { idx: Int32Array.from([7, 0, 3, 3, 1]) });
  const fused = await checkAgainstReference(b.graph, feeds, {}, { fuse: true });
  assert.is(fused.program.dispatches, 2);
});

test('matmul and conv take elementwise epilogues (bias, activation, residual)', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 7, 5]);
  const w = b.input('w', [5, 9]);
  const bias = b.input('bias', [9]);
  const res = b.input('res', [2, 7, 9]);
  const mm = b.emit('matmul', [x, w], { transA: false, transB: false });
  b.output('linear_gelu', b.add(b.emit('gelu', [b.add(mm, bias)]), res));
  const img = b.input('img', [2, 3, 9, 7]);
  const k = b.input('k', [4, 3, 3, 3]);
  const cb = b.input('cb', [4, 1, 1]);
  const convAttrs = { stride: 2, padding: 1, dilation: 1, groups: 1 };
  const conv = b.emit('conv2d', [img, k], convAttrs);
  b.output('conv_relu', b.emit('relu', [b.add(conv, cb)]));
  const dy = b.input('dy', b.node(conv).shape);
  b.output('conv_dx', b.mul(b.emit('conv2d_grad_input', [dy, k], { ...convAttrs, inputSize: [9, 7] }), b.full(0.5)));
  b.output('conv_dw', b.neg(b.emit('conv2d_grad_weight', [img, dy], { ...convAttrs, kernelSize: [3, 3] })));
  const n = await fusedMatchesUnfused(b.graph, 8, { rtol: 1e-4, atol: 1e-5 });
  assert.is(n.fused, 4);
  assert.is(n.unfused, 11);
});

test('four elements per invocation: broadcasts, a tensor read at its own and a transposed index, dropout, i32, where', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [5, 60, 60]); // 18000 elements: 4500 invocations, not a multiple of the workgroup
  const bias = b.input('bias', [60]);
  const rowScale = b.input('row_scale', [5, 1, 1]);
  const lr = b.input('lr', []);
  const seed = b.input('seed', [], 'i32');
  const counts = b.input('counts', [150, 120], 'i32');
  const h = b.add(b.mul(x, rowScale), bias);
  const sym = b.add(h, b.transpose(x, [0, 2, 1])); // x at e and at the transposed index
  const d = b.emit('dropout', [b.emit('tanh', [sym]), seed], { p: 0.3, salt: 7 });
  b.output('y', b.mul(d, lr));
  b.output('z', b.emit('where', [b.emit('gt', [x, b.full(0)]), b.emit('exp', [x]), b.neg(h)]));
  b.output('n', b.add(b.mul(counts, b.full(3, [], 'i32')), b.full(-7, [], 'i32')));
  const feeds = randomFeeds(b.graph, 9, { seed: Int32Array.of(4242), counts: Int32Array.from({ length: 18000 }, (_, i) => i * 37 - 90000) });
  const plan = planGraph(b.graph, (await getNodeDevice()).limits);
  for (const k of plan.kernels) assert.match(k.wgsl, /vec4</, `${k.name} runs four elements per invocation`);
  const fused = await checkAgainstReference(b.graph, feeds, { rtol: 1e-5, atol: 2e-6 }, { fuse: true });
  const unfused = await checkAgainstReference(b.graph, feeds, { rtol: 1e-5, atol: 2e-6 }, { fuse: false });
  for (const name of Object.keys(b.graph.outputs)) assertClose(`fused vs unfused ${name}`, fused.outputs[name], unfused.outputs[name]);
  assert.is(fused.program.dispatches, 4); // h feeds two outputs: materialised once
});

test('dropout inside a fused chain keeps the reference mask', async () => {
  const b = new GraphBuilder();
  const x = b.input('x', [5, 13]);
  const seed = b.input('seed', [], 'i32');
  const d = b.emit('dropout', [b.emit('relu', [x]), seed], { p: 0.25, salt: 99 });
  b.output('y', b.add(d, b.full(1)));
  const feeds = randomFeeds(b.graph, 6, { seed: Int32Array.of(31337) });
  const r = await checkAgainstReference(b.graph, feeds, { rtol: 1e-6, atol: 0 }, { fuse: true });
  assert.is(r.program.dispatches, 1);
});

test('a fused group split by the device storage-buffer limit still computes the same', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  let acc = b.input('x0', [9]);
  for (let i = 1; i < 24; i++) acc = b.add(b.mul(acc, b.full(0.5)), b.input(`x${i}`, [9]));
  b.output('y', acc);
  const limit = dev.limits.maxStorageBuffersPerShaderStage;
  const plan = planGraph(b.graph, dev.limits);
  for (const k of plan.kernels) assert.ok(k.bindings.length <= limit);
  assert.ok(plan.kernels.length >= Math.ceil(25 / limit));
  await fusedMatchesUnfused(b.graph, 7);
});

test.run();
