// Device loss and WebGPU errors reach the caller as exceptions that say what
// failed: a program run when the device is lost (before the run, or while its
// work is in flight) rejects naming the program and the loss instead of
// hanging or surfacing a bare AbortError; validation errors caught by error
// scopes name the step; a plan made for other limits is refused naming the
// kernel. The loss tests destroy a device of their own, never the shared one.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { Program } from '../../runtime/executor.ts';
import { StateStore } from '../../runtime/state.ts';
import { getNodeDevice, openSeparateNodeDevice } from '../../runtime/platform/node.ts';

/** A program with enough work (a chain of 256² matmuls) that a run is still in flight a few milliseconds after it starts. */
function matmulChain() {
  const b = new GraphBuilder();
  const x = b.input('x', [256, 256]);
  let y = x;
  for (let i = 0; i < 8; i++) y = b.emit('matmul', [y, x]);
  b.output('y', y);
  return b.graph;
}
const chainInputs = { x: new Float32Array(256 * 256).fill(1 / 256) };

/** Fails the test instead of hanging when `p` does not settle within `ms`. */
function settlesWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A device of its own (the shared one keeps the first adapter) and a state store on it. */
async function ownDevice() {
  await getNodeDevice();
  const dev = await openSeparateNodeDevice();
  return { dev, store: new StateStore(dev) };
}

/** The error `p` rejects with (undefined if it resolves); fails the test if it hangs. */
function rejectionOf(p: Promise<unknown>, what: string): Promise<Error | undefined> {
  return settlesWithin(
    p.then(
      () => undefined,
      (e: Error) => e,
    ),
    10_000,
    what,
  );
}

/** Asserts `e` reports the device loss, starting with `prefix` (what was running). */
function assertLoss(e: Error | undefined, prefix: RegExp, what: string) {
  assert.ok(e instanceof Error, `${what} rejects`);
  assert.match(e.message, prefix);
  assert.match(e.message, /the WebGPU device was lost \(destroyed\): .*resume from the last checkpoint/);
}

test('device loss while a run is in flight, and before the next run and program: clear rejections, no hang', async () => {
  const { dev, store } = await ownDevice();
  const program = await Program.create(dev, matmulChain(), store, { label: 'chain' });
  const first = await program.run(chainInputs);
  assert.ok(Math.abs(first.y[0] - 1 / 256) < 1e-6, 'the program works before the loss');

  const inFlight = program.run(chainInputs);
  await new Promise((resolve) => setTimeout(resolve, 2)); // the submission is made, its work not finished
  dev.device.destroy();
  const outcome = await settlesWithin(
    inFlight.then(
      () => 'finished' as const,
      (e: Error) => e,
    ),
    10_000,
    'the in-flight run',
  );
  // On a fast GPU the work may finish before the loss lands; lavapipe is still computing.
  if (outcome !== 'finished') assertLoss(outcome, /^running chain \(8 dispatches, reading y\): /, 'the in-flight run');

  assertLoss(await rejectionOf(program.run(chainInputs), 'a run after the loss'), /^running chain/, 'a run after the loss');
  assertLoss(
    await rejectionOf(Program.create(dev, matmulChain(), store, { label: 'late' }), 'a later create'),
    /^creating late: /,
    'creating a program on a lost device',
  );
  program.destroy();
  store.destroy();
});

test('device destroyed right after a run is requested: the run rejects naming the program', async () => {
  const { dev, store } = await ownDevice();
  const program = await Program.create(dev, matmulChain(), store, { label: 'chain2' });
  const run = program.run(chainInputs);
  dev.device.destroy(); // before the run has submitted anything
  assertLoss(await rejectionOf(run, 'the run'), /^running chain2/, 'the run');
  program.destroy();
  store.destroy();
});

test('device destroyed while a program is being created: create (or at the latest the first run) rejects naming it', async () => {
  const { dev, store } = await ownDevice();
  const creating = Program.create(dev, matmulChain(), store, { label: 'chain3' });
  setTimeout(() => dev.device.destroy(), 1); // while buffers are made and pipelines compile
  const created = await settlesWithin(
    creating.then(
      (p) => p,
      (e: Error) => e,
    ),
    10_000,
    'Program.create',
  );
  if (created instanceof Error) assertLoss(created, /^creating chain3: /, 'Program.create');
  else {
    assertLoss(await rejectionOf(created.run(chainInputs), 'the first run'), /^running chain3/, 'the first run');
    created.destroy();
  }
  store.destroy();
});

test('validation errors caught by error scopes name the step that failed', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [5]);
  const w = b.state('w', [5], { kind: 'zeros' }, true);
  b.output('y', b.mul(b.emit('exp', [x]), w));
  const store = new StateStore(dev);

  // A buffer over the device's maxBufferSize: refused while allocating, named.
  const huge = planGraph(b.graph, dev.limits);
  const scratch = huge.buffers.find((buf) => buf.kind !== 'state')!;
  huge.buffers[scratch.id] = { ...scratch, bytes: dev.limits.maxBufferSize + 16 };
  await Program.create(dev, b.graph, store, { plan: huge, label: 'huge' }).then(
    () => assert.unreachable('allocated a buffer over maxBufferSize'),
    (e: Error) => assert.match(e.message, /^allocating huge's buffers .*WebGPU validation error: .*max buffer size/s),
  );

  // A run binding a destroyed state buffer: the submission's validation error names the run.
  const program = await Program.create(dev, b.graph, store, { label: 'scale' });
  const ok = await program.run({ x: new Float32Array(5) });
  assert.equal(Array.from(ok.y), [0, 0, 0, 0, 0]);
  store.destroy();
  await program.run({ x: new Float32Array(5) }).then(
    () => assert.unreachable('ran with a destroyed state buffer'),
    (e: Error) => assert.match(e.message, /^running scale \(1 dispatches, reading y\): WebGPU validation error: .*destroyed/is),
  );
  program.destroy();
});

test('a plan made for larger limits is refused naming the kernel and the limit', async () => {
  const dev = await getNodeDevice();
  const b = new GraphBuilder();
  const x = b.input('x', [4]);
  b.output('y', b.emit('exp', [b.emit('neg', [x])]));
  const store = new StateStore(dev);
  const wide = planGraph(b.graph, dev.limits, { fuse: false });
  wide.kernels[1] = { ...wide.kernels[1], workgroups: [dev.limits.maxComputeWorkgroupsPerDimension + 1, 1, 1] };
  await Program.create(dev, b.graph, store, { plan: wide, label: 'wide' }).then(
    () => assert.unreachable('accepted an oversized dispatch'),
    (e: Error) => assert.match(e.message, /^wide: kernel exp_4 dispatches \d+ workgroups along x, over this device's maxComputeWorkgroupsPerDimension/),
  );
  const bound = planGraph(b.graph, dev.limits, { fuse: false });
  const k = bound.kernels[0];
  bound.kernels[0] = { ...k, bindings: [...Array(dev.limits.maxStorageBuffersPerShaderStage).fill(k.bindings[0]), ...k.bindings] };
  await Program.create(dev, b.graph, store, { plan: bound, label: 'bound' }).then(
    () => assert.unreachable('accepted a kernel over maxStorageBuffersPerShaderStage'),
    (e: Error) => assert.match(e.message, /^bound: kernel neg_4 binds \d+ storage buffers, over this device's maxStorageBuffersPerShaderStage/),
  );
  store.destroy();
});

test.run();
