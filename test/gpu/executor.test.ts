// The executor and the StateStore: updates land after the run, programs share
// state by name, aliasing updates (swaps, views, identities) are safe, buffer
// reuse is invisible to results, and bad input fails with clear messages.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { evaluate } from '../../compiler/reference.ts';
import { Program, pipelineWarmerOf, registerPipelineWarmer } from '../../runtime/executor.ts';
import { StateStore } from '../../runtime/state.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { buildTrainingPrograms, optimizerScalars } from '../../compiler/train-program.ts';
import { Rng } from '../../compiler/random.ts';
import { assertClose, checkAgainstReference, randomFeeds, randomTensor } from './reference-check.ts';

const f32 = (...v: number[]) => Float32Array.from(v);

test("updates apply after the run; the next run sees them; outputs are this run's values", async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [5]);
  const w = b.state('w', [5], { kind: 'zeros' }, true);
  b.output('y', b.sum(b.mul(x, w), [0]));
  b.output('w_seen', w); // an output that is the state itself: read before the update lands
  b.update('w', b.sub(w, b.mul(x, b.full(0.5))));
  const store = new StateStore(dev);
  store.define('w', [5], 'f32');
  store.upload('w', f32(1, 2, 3, 4, 5));
  const program = await Program.create(dev, b.graph, store);
  const xs = f32(1, 1, 2, 0, -2);
  let host: ArrayLike<number> = [1, 2, 3, 4, 5];
  for (let step = 0; step < 3; step++) {
    const out = await program.run({ x: xs });
    const ref = evaluate(b.graph, { inputs: { x: xs }, state: { w: host } });
    assertClose(`step ${step} y`, out.y, ref.outputs.y);
    assertClose(`step ${step} w_seen`, out.w_seen, host);
    host = ref.updates.w;
    assertClose(`step ${step} w`, await store.download('w'), host);
  }
  const only = await program.run({ x: xs }, ['y']);
  assert.equal(Object.keys(only), ['y']);
  program.destroy();
  store.destroy();
});

test('two programs share a StateStore: a step accumulates, an apply consumes and resets', async () => {
  const dev = await getNodeDevice();
  const store = new StateStore(dev);
  // step: acc += x * 2
  const s = new GraphBuilder();
  const sx = s.input('x', [3, 4]);
  const sacc = s.state('acc', [3, 4], { kind: 'zeros' }, false);
  s.update('acc', s.add(sacc, s.mul(sx, s.full(2))));
  s.output('loss', s.sum(sx, [0, 1]));
  // apply: w -= lr * acc; acc = 0
  const a = new GraphBuilder();
  const lr = a.input('lr', []);
  const aw = a.state('w', [3, 4], { kind: 'zeros' }, true);
  const aacc = a.state('acc', [3, 4], { kind: 'zeros' }, false);
  a.update('w', a.sub(aw, a.mul(lr, aacc)));
  a.update('acc', a.full(0, [3, 4]));
  const step = await Program.create(dev, s.graph, store, { label: 'step' });
  const apply = await Program.create(dev, a.graph, store, { label: 'apply' });
  assert.equal(store.names().sort(), ['acc', 'w']);
  const w0 = Float32Array.from({ length: 12 }, (_, i) => i);
  store.upload('w', w0);
  const x1 = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 2);
  const x2 = Float32Array.from({ length: 12 }, (_, i) => 1 - i * 0.25);
  await step.run({ x: x1 });
  await step.run({ x: x2 });
  await apply.run({ lr: f32(0.1) });
  const w = await store.download('w');
  assertClose(
    'w',
    w,
    Array.from(w0, (v, i) => v - 0.1 * 2 * (x1[i] + x2[i])),
  );
  assertClose('acc', await store.download('acc'), new Array(12).fill(0));
  // A program declaring a state with another type is refused.
  const bad = new GraphBuilder();
  bad.state('acc', [4, 3], { kind: 'zeros' }, false);
  bad.output('z', bad.full(1, [1]));
  await Program.create(dev, bad.graph, store).then(
    () => assert.unreachable('mismatched state accepted'),
    (e: Error) => assert.match(e.message, /state 'acc' is f32\[3, 4\] in the store but a program declares it f32\[4, 3\]/),
  );
  step.destroy();
  apply.destroy();
  store.destroy();
});

test('aliasing updates: a swap, a view of another state, an identity, and an i32 counter', async () => {
  const b = new GraphBuilder();
  const p = b.state('p', [2, 3], { kind: 'zeros' }, true);
  const q = b.state('q', [2, 3], { kind: 'zeros' }, true);
  const r = b.state('r', [6], { kind: 'zeros' }, false);
  const keep = b.state('keep', [4], { kind: 'zeros' }, false);
  const count = b.state('count', [], { kind: 'zeros' }, false, 'i32');
  b.update('p', q);
  b.update('q', p);
  b.update('r', b.reshape(p, [6])); // reads p's old value although p is overwritten in the same run
  b.update('keep', keep);
  b.update('count', b.add(count, b.full(1, [], 'i32')));
  b.output('q_plus_p', b.add(p, q));
  const feeds = randomFeeds(b.graph, 1);
  feeds.state.count = Int32Array.of(41);
  const got = await checkAgainstReference(b.graph, feeds, { rtol: 1e-6, atol: 0 }); // state copies are exact; the add rounds to f32
  assert.equal(Array.from(got.state.count), [42]);
});

test('in-place updates (four-lane elementwise, reduction epilogue, read earlier) and copied ones match the reference over two runs', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [136, 128]);
  const seen = b.state('seen', [136, 128], { kind: 'zeros' }, false);
  const rows = b.state('rows', [136], { kind: 'zeros' }, false);
  const late = b.state('late', [136, 128], { kind: 'zeros' }, false);
  const zeroed = b.state('zeroed', [136, 128], { kind: 'zeros' }, false);
  b.output('early', b.sum(b.mul(seen, zeroed), [1])); // reads seen and zeroed before their updates
  b.update('seen', b.add(b.mul(seen, b.full(0.5)), b.emit('tanh', [x])));
  b.update('rows', b.add(rows, b.sum(b.mul(x, x), [1])));
  b.update('late', b.add(late, x));
  b.output('late_max', b.emit('max', [late], { axes: [0, 1], keepdims: false })); // reads late's old value after its update's kernel
  b.update('zeroed', b.full(0, [136, 128]));
  const plan = planGraph(b.graph, dev.limits);
  assert.is(plan.stats.inPlaceUpdates, 2);
  assert.ok(
    plan.kernels.some((k) => /let vec_state = out0\[i\];/.test(k.wgsl)),
    'an in-place update loads its state as vec4 before overwriting it',
  );
  assert.ok(plan.updates.zeroed.zero);
  const store = new StateStore(dev);
  const rng = new Rng(5);
  const host: Record<string, ArrayLike<number>> = {};
  for (const s of Object.values(b.graph.state)) {
    store.define(s.name, s.shape, s.dtype);
    host[s.name] = randomTensor(rng, s.shape);
    store.upload(s.name, host[s.name] as Float32Array);
  }
  const program = await Program.create(dev, b.graph, store, { plan });
  for (let run = 0; run < 2; run++) {
    const inputs = { x: randomTensor(rng, [136, 128]) as Float32Array };
    const out = await program.run(inputs);
    const ref = evaluate(b.graph, { inputs, state: host });
    for (const name of ['early', 'late_max']) assertClose(`run ${run} ${name}`, out[name], ref.outputs[name]);
    Object.assign(host, ref.updates);
    for (const name of Object.keys(b.graph.state)) assertClose(`run ${run} state ${name}`, await store.download(name), host[name]);
  }
  program.destroy();
  store.destroy();
});

test('a registered pipeline warmer gets each distinct kernel once, last first use first, and is stopped by the first run', async () => {
  const dev = await getNodeDevice();
  const real = pipelineWarmerOf(dev.device);
  const calls: string[][] = [];
  let stops = 0;
  registerPipelineWarmer(dev.device, {
    warm: (kernels) => {
      calls.push(kernels.map((k) => k.name));
      return () => void stops++;
    },
  });
  try {
    const b = new GraphBuilder();
    const x = b.input('x', [6]);
    const y = b.input('y', [9]);
    const ex = b.emit('exp', [x]);
    b.output('a', b.sum(ex, [0]));
    b.output('b', b.emit('exp', [y])); // the same shape-free WGSL as exp(x): one pipeline
    b.output('c', b.sum(b.emit('tanh', [y]), [0])); // a whole-tensor sum, like sum(exp(x)): one pipeline
    const plan = planGraph(b.graph, dev.limits, { fuse: false });
    const store = new StateStore(dev);
    const program = await Program.create(dev, b.graph, store, { plan, fuse: false });
    const firstUse = new Map<string, string>();
    for (const k of plan.kernels) if (!firstUse.has(k.wgsl)) firstUse.set(k.wgsl, k.name);
    assert.is(firstUse.size, plan.kernels.length - 2);
    assert.equal(calls, [[...firstUse.values()].reverse()]);
    assert.is(stops, 0);
    await program.run({ x: new Float32Array(6), y: new Float32Array(9) });
    await program.run({ x: new Float32Array(6), y: new Float32Array(9) });
    assert.is(stops, 1);
    program.destroy();
    store.destroy();
  } finally {
    registerPipelineWarmer(dev.device, real);
  }
});

test('buffer reuse is invisible: a long unfused chain with a fan-out matches the reference', async () => {
  const b = new GraphBuilder();
  let v = b.input('x', [5, 7]);
  const first = b.emit('tanh', [v]);
  v = first;
  for (let i = 0; i < 10; i++) v = b.emit(i % 3 === 0 ? 'sigmoid' : i % 3 === 1 ? 'neg' : 'exp', [b.add(v, b.full(0.1 * i))]);
  b.output('y', b.add(v, first)); // `first` stays live across the whole chain
  const plan = planGraph(b.graph, (await getNodeDevice()).limits, { fuse: false });
  assert.ok(plan.stats.peakBytes < plan.stats.noReuseBytes / 2, `peak ${plan.stats.peakBytes} vs ${plan.stats.noReuseBytes}`);
  await checkAgainstReference(b.graph, randomFeeds(b.graph, 2), { rtol: 1e-5, atol: 1e-6 }, { fuse: false });
});

test('autodiff training programs (step + AdamW apply) track the reference over several steps', async () => {
  const dev = await getNodeDevice();
  // A matmul-free classifier: logits = Σ_d x[n,d]·W[d,k] + b (broadcast multiply and sum), cross-entropy.
  const f = new GraphBuilder();
  const x = f.input('x', [6, 5]);
  const onehot = f.input('onehot', [6, 3]);
  const W = f.state('W', [5, 3], { kind: 'zeros' }, true);
  const bias = f.state('b', [3], { kind: 'zeros' }, true);
  const h = f.emit('tanh', [f.mul(f.reshape(x, [6, 5, 1]), W)]);
  const logits = f.add(f.sum(h, [1]), bias);
  const nll = f.sub(f.emit('logsumexp', [logits], { axis: 1 }), f.sum(f.mul(onehot, logits), [1]));
  f.output('loss', f.div(f.sum(nll, [0]), f.full(6)));
  const optimizer = { kind: 'adamw' as const, weightDecay: 0.01 };
  const { step, apply } = buildTrainingPrograms(f.graph, { loss: 'loss', optimizer, accumulate: 2 });

  const rng = new Rng(12);
  const store = new StateStore(dev);
  const stepProgram = await Program.create(dev, step, store, { label: 'step' });
  const applyProgram = await Program.create(dev, apply, store, { label: 'apply' });
  // Host mirror of the state, advanced by the reference interpreter.
  const host: Record<string, ArrayLike<number>> = {};
  for (const s of [...Object.values(step.state), ...Object.values(apply.state)])
    host[s.name] ??= s.name === 'W' || s.name === 'b' ? randomTensor(rng, s.shape) : new Float32Array(s.shape.reduce((a, c) => a * c, 1));
  for (const [name, v] of Object.entries(host)) store.upload(name, v as Float32Array);
  const advance = (graph: typeof step, inputs: Record<string, Float32Array>) => {
    const ref = evaluate(graph, { inputs, state: host });
    Object.assign(host, ref.updates);
    return ref;
  };
  for (let t = 1; t <= 2; t++) {
    for (let micro = 0; micro < 2; micro++) {
      const inputs = {
        x: randomTensor(rng, [6, 5]) as Float32Array,
        onehot: Float32Array.from({ length: 18 }, (_, i) => (i % 3 === (Math.floor(i / 3) + micro) % 3 ? 1 : 0)),
      };
      const got = await stepProgram.run(inputs, ['loss']);
      const ref = advance(step, inputs);
      assertClose(`step ${t}.${micro} loss`, got.loss, ref.outputs.loss, { rtol: 1e-5, atol: 1e-6 });
    }
    const scalars = Object.fromEntries(Object.entries(optimizerScalars(t, 0.05, optimizer)).map(([k, v]) => [k, Float32Array.of(v)]));
    await applyProgram.run(scalars);
    advance(apply, scalars);
    for (const name of ['W', 'b', 'optim.W.exp_avg', 'optim.W.exp_avg_sq', 'grad_acc.W'])
      assertClose(`after optimizer step ${t}: ${name}`, await store.download(name), host[name], { rtol: 1e-4, atol: 1e-6 });
  }
  stepProgram.destroy();
  applyProgram.destroy();
  store.destroy();
});

test('bad inputs and outputs are refused with messages that say what and where', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3]);
  const ids = b.input('ids', [4], 'i32');
  b.output('y', b.add(x, b.full(1)));
  b.output('n', b.sum(ids, [0]));
  const store = new StateStore(dev);
  const program = await Program.create(dev, b.graph, store, { label: 'probe' });
  const ok = { x: new Float32Array(6), ids: new Int32Array(4) };
  const cases: [Record<string, any>, string[] | undefined, RegExp][] = [
    [{ x: ok.x }, undefined, /probe: input 'ids' was not given/],
    [{ ...ok, ids: new Float32Array(4) }, undefined, /input 'ids' must be a Int32Array \(i32\[4\]\), got Float32Array/],
    [{ ...ok, x: new Float32Array(5) }, undefined, /input 'x' has 5 values but its shape \[2, 3\] needs 6/],
    [{ ...ok, z: new Float32Array(1) }, undefined, /unknown input 'z' \(inputs: x, ids\)/],
    [ok, ['y', 'loss'], /unknown output 'loss' \(outputs: y, n\)/],
  ];
  for (const [inputs, read, message] of cases)
    await program.run(inputs, read).then(
      () => assert.unreachable(`accepted ${message}`),
      (e: Error) => assert.match(e.message, message),
    );
  // The program still works after refused runs.
  const out = await program.run({ x: Float32Array.from([1, 2, 3, 4, 5, 6]), ids: Int32Array.from([1, 2, 3, 4]) });
  assert.equal(Array.from(out.y), [2, 3, 4, 5, 6, 7]);
  assert.equal(Array.from(out.n), [10]);
  program.destroy();
  await program.run(ok).then(
    () => assert.unreachable('ran after destroy'),
    (e: Error) => assert.match(e.message, /after destroy/),
  );
  store.destroy();
});

test('a kernel that fails to compile is named, with the offending WGSL line', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [4]);
  b.output('y', b.emit('exp', [x]));
  const plan = planGraph(b.graph, dev.limits);
  plan.kernels[0] = { ...plan.kernels[0], name: 'broken_exp_4', wgsl: plan.kernels[0].wgsl.replace('exp(', 'expp(') };
  const store = new StateStore(dev);
  await Program.create(dev, b.graph, store, { plan, label: 'broken' }).then(
    () => assert.unreachable('compiled broken WGSL'),
    (e: Error) => {
      assert.match(e.message, /kernel broken_exp_4 failed to compile/);
      assert.match(e.message, /expp/);
    },
  );
  store.destroy();
});

test('StateStore round-trips f32 and i32 and checks types', async () => {
  const dev = await getNodeDevice();
  const store = new StateStore(dev);
  store.define('a', [2, 2], 'f32');
  store.define('b', [3], 'i32');
  store.upload('a', f32(1.5, -2, 3, 4e-8));
  store.upload('b', Int32Array.from([-1, 2147483647, 0]));
  assert.equal(Array.from(await store.download('a')), Array.from(f32(1.5, -2, 3, 4e-8)));
  assert.equal(Array.from(await store.download('b')), [-1, 2147483647, 0]);
  assert.throws(() => store.upload('b', f32(1, 2, 3)), /state 'b' must be a Int32Array/);
  assert.throws(() => store.upload('nope', f32(1)), /state 'nope' is not in the store/);
  assert.equal(store.info('a'), { shape: [2, 2], dtype: 'f32' });
  store.destroy();
});

test.run();
