// The buffer planner (compiler/passes/memory.ts) and the device-free parts of
// planning (compiler/execution-plan.ts, compiler/passes/fusion.ts): liveness-based
// reuse, pinning, limits, fusion decisions and JSON round trips.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { planMemory, type MemoryStep, type MemoryTensor } from '../../compiler/passes/memory.ts';
import { planGraph, planFromJSON, planToJSON, DEFAULT_LIMITS, GENERIC_TARGET } from '../../compiler/execution-plan.ts';
import { fuseGraph } from '../../compiler/passes/fusion.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runLovtc } from '../../bin/lovtc.ts';

/** Live range of every tensor: [first write (or -1 when live at start), last touch (or the end when live at end)]. */
function liveRanges(tensors: MemoryTensor[], steps: MemoryStep[]): Map<number, [number, number]> {
  const r = new Map<number, [number, number]>();
  steps.forEach((s, k) => {
    for (const t of [...s.writes, ...s.reads]) {
      const cur = r.get(t);
      r.set(t, cur ? [Math.min(cur[0], k), k] : [k, k]);
    }
  });
  for (const t of tensors) {
    const [a, b] = r.get(t.id) ?? [Infinity, -Infinity];
    r.set(t.id, [t.liveAtStart || t.persistent ? -1 : a, t.liveAtEnd || t.persistent ? steps.length : b]);
  }
  return r;
}

/** The planner's invariants, checked independently of how it placed things. */
function checkPlan(tensors: MemoryTensor[], steps: MemoryStep[]) {
  const plan = planMemory(tensors, steps);
  const ranges = liveRanges(tensors, steps);
  const byBuffer = new Map<number, MemoryTensor[]>();
  for (const t of tensors) {
    const a = plan.assignment.get(t.id);
    assert.ok(a, `tensor ${t.id} placed`);
    assert.ok(plan.buffers[a!.buffer].bytes >= t.bytes, `buffer of tensor ${t.id} is large enough`);
    byBuffer.set(a!.buffer, [...(byBuffer.get(a!.buffer) ?? []), t]);
  }
  for (const [buffer, ts] of byBuffer) {
    if (ts.some((t) => t.persistent)) assert.is(ts.length, 1, `persistent tensor ${ts[0].id} shares buffer ${buffer}`);
    for (let i = 0; i < ts.length; i++)
      for (let j = i + 1; j < ts.length; j++) {
        const [a0, a1] = ranges.get(ts[i].id)!;
        const [b0, b1] = ranges.get(ts[j].id)!;
        assert.ok(a1 < b0 || b1 < a0, `tensors ${ts[i].id} [${a0},${a1}] and ${ts[j].id} [${b0},${b1}] overlap in buffer ${buffer}`);
      }
  }
  assert.is(
    plan.peakBytes,
    plan.buffers.reduce((s, b) => s + b.bytes, 0),
  );
  return plan;
}

test('a chain of equal tensors ping-pongs between two buffers, input and output included', () => {
  const tensors: MemoryTensor[] = [0, 1, 2, 3, 4, 5].map((id) => ({ id, bytes: 1024, liveAtStart: id === 0, liveAtEnd: id === 5 }));
  const steps: MemoryStep[] = [1, 2, 3, 4, 5].map((k) => ({ reads: [k - 1], writes: [k] }));
  const plan = checkPlan(tensors, steps);
  assert.is(plan.buffers.length, 2);
  assert.is(plan.noReuseBytes, 6 * 1024);
  assert.is(plan.peakBytes, 2 * 1024);
  assert.is.not(plan.assignment.get(1)!.buffer, plan.assignment.get(2)!.buffer); // step 2 reads 1 while writing 2
  assert.is(plan.assignment.get(0)!.buffer, plan.assignment.get(2)!.buffer); // the input's buffer is reused once read
});

test('outputs stay live to the end, constants keep their own buffer, a freed buffer grows', () => {
  const tensors: MemoryTensor[] = [
    { id: 0, bytes: 64, liveAtStart: true },
    { id: 1, bytes: 64 },
    { id: 2, bytes: 64 },
    { id: 3, bytes: 512 },
    { id: 4, bytes: 64, liveAtEnd: true },
    { id: 9, bytes: 32, persistent: true }, // a constant read by the last step
  ];
  const steps: MemoryStep[] = [
    { reads: [0], writes: [1] },
    { reads: [1], writes: [2] },
    { reads: [2], writes: [3] },
    { reads: [3, 9], writes: [4] },
  ];
  const plan = checkPlan(tensors, steps);
  const at = (t: number) => plan.assignment.get(t)!.buffer;
  assert.is(plan.buffers.length, 3); // the constant and two shared buffers
  assert.is(at(3), at(1)); // 3 (512 B) took 1's freed 64-byte buffer, grown, instead of a new one
  assert.is(plan.buffers[at(3)].bytes, 512);
  assert.is(at(4), at(0)); // the output reuses the input's buffer
  const withOutputEarly = checkPlan(
    tensors.map((t) => (t.id === 1 ? { ...t, liveAtEnd: true } : t)),
    steps,
  );
  assert.is(withOutputEarly.buffers.length, 4); // an early output is never released
});

test('reading a transient before any step writes it is an error', () => {
  assert.throws(
    () =>
      planMemory(
        [
          { id: 0, bytes: 4 },
          { id: 1, bytes: 4 },
        ],
        [{ reads: [0], writes: [1] }],
      ),
    /reads tensor 0 before any step writes it/,
  );
  assert.throws(() => planMemory([{ id: 0, bytes: 4 }], [{ reads: [], writes: [7] }]), /unknown tensor 7/);
});

test('random schedules: live tensors never share a buffer, persistent ones never share at all', () => {
  const schedule = fc
    .record({
      sizes: fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 2, maxLength: 40 }),
      seed: fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 40, maxLength: 40 }),
      kind: fc.array(fc.constantFrom('plain', 'plain', 'start', 'end', 'persistent'), { minLength: 40, maxLength: 40 }),
    })
    .map(({ sizes, seed, kind }) => {
      // Tensors marked start/persistent are host-provided; every other tensor k is written by its own step, which reads up to two earlier tensors.
      const tensors: MemoryTensor[] = sizes.map((bytes, id) => ({
        id,
        bytes,
        liveAtStart: id === 0 || kind[id] === 'start',
        liveAtEnd: kind[id] === 'end',
        persistent: kind[id] === 'persistent',
      }));
      const steps: MemoryStep[] = [];
      tensors.forEach((t, k) => {
        if (t.liveAtStart || t.persistent || k === 0) return;
        steps.push({ reads: [...new Set([seed[k][0] % k, seed[k][1] % k])], writes: [k] });
      });
      return { tensors, steps };
    });
  fc.assert(
    fc.property(schedule, ({ tensors, steps }) => {
      const plan = checkPlan(tensors, steps);
      assert.ok(plan.peakBytes <= plan.noReuseBytes);
    }),
    { numRuns: 300 },
  );
});

/** x -> 12 chained elementwise ops (no fusion) -> output. */
function chainGraph(length: number) {
  const b = new GraphBuilder();
  let v = b.input('x', [64, 64]);
  for (let i = 0; i < length; i++) v = b.emit(i % 2 ? 'exp' : 'neg', [v]);
  b.output('y', v);
  return b.graph;
}

test('planGraph reuses buffers along a chain and reports both totals', () => {
  const plan = planGraph(chainGraph(12), DEFAULT_LIMITS, { fuse: false });
  assert.is(plan.stats.dispatches, 12);
  const tensorBytes = 64 * 64 * 4;
  assert.is(plan.stats.noReuseBytes, 13 * tensorBytes);
  assert.is(plan.stats.peakBytes, 2 * tensorBytes); // the input's buffer joins the ping-pong once read
  const fused = planGraph(chainGraph(12), DEFAULT_LIMITS);
  assert.is(fused.stats.dispatches, 1);
  assert.is(fused.stats.peakBytes, 2 * tensorBytes);
});

test('an ExecutionPlan survives a JSON round trip', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3, 5]);
  const w = b.state('w', [5], { kind: 'zeros' }, true);
  const y = b.sum(b.mul(x, w), [1]);
  b.output('y', y);
  b.update('w', b.add(w, b.sum(x, [0])));
  const plan = planGraph(b.graph);
  const back = planFromJSON(planToJSON(plan));
  assert.equal(back.kernels, plan.kernels);
  assert.equal([...back.tensorBuffer], [...plan.tensorBuffer]);
  assert.equal(back.outputs, plan.outputs);
  assert.equal(back.updates, plan.updates);
  assert.is(back.buffers.find((bb) => bb.kind === 'state')?.name, 'w');
});

test('fusion respects maxStorageBuffersPerShaderStage', () => {
  const b = new GraphBuilder();
  let acc = b.input('x0', [7]);
  for (let i = 1; i < 20; i++) acc = b.add(acc, b.input(`x${i}`, [7]));
  b.output('sum', acc);
  for (const maxStorageBuffersPerShaderStage of [4, 8, 16]) {
    const plan = planGraph(b.graph, { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage });
    for (const k of plan.kernels) assert.ok(k.bindings.length <= maxStorageBuffersPerShaderStage, `${k.name} binds ${k.bindings.length}`);
    assert.ok(plan.stats.dispatches < 19, 'still fused');
  }
});

test('fusion: an elementwise tail joins its reduction as an epilogue, its producers as a prologue', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [4, 6]);
  const sq = b.mul(x, x); // prologue
  const s = b.sum(sq, [1]);
  const y = b.emit('sqrt', [b.add(s, b.full(1e-6))]); // epilogue
  b.output('norm', y);
  const f = fuseGraph(b.graph, { enabled: true, maxStorageBuffers: 8 });
  assert.is(f.groups.length, 1);
  assert.is(f.groups[0].kind, 'reduce');
  assert.is(f.groups[0].anchor, s);
  assert.is(f.groups[0].root, y);
  assert.ok(f.groups[0].inline.includes(sq));
  // A reduction read at a broadcast index (x - mean) cannot be an epilogue input.
  const b2 = new GraphBuilder();
  const x2 = b2.input('x', [4, 6]);
  const m = b2.sum(x2, [1], true);
  b2.output('centered', b2.sub(x2, m));
  const f2 = fuseGraph(b2.graph, { enabled: true, maxStorageBuffers: 8 });
  assert.is(f2.groups.length, 2);
});

test('fusion never recomputes: a producer read at two different indices is materialised', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [5, 5]);
  const e = b.emit('exp', [x]);
  b.output('sym', b.add(e, b.transpose(e, [1, 0]))); // e at (i, j) and at (j, i)
  const f = fuseGraph(b.graph, { enabled: true, maxStorageBuffers: 8 });
  assert.is(f.groups.length, 2);
  // Read twice at the same index: fused.
  const b2 = new GraphBuilder();
  const x2 = b2.input('x', [5, 5]);
  const e2 = b2.emit('exp', [x2]);
  b2.output('y', b2.add(b2.mul(e2, e2), b2.emit('tanh', [e2])));
  assert.is(fuseGraph(b2.graph, { enabled: true, maxStorageBuffers: 8 }).groups.length, 1);
});

test('a tensor over the binding limit is refused with its name, size, the limit and a fix', () => {
  const b = new GraphBuilder();
  const x = b.input('images', [64, 3, 224, 224]);
  b.output('y', b.emit('relu', [x]));
  assert.throws(
    () => planGraph(b.graph, { ...DEFAULT_LIMITS, maxStorageBufferBindingSize: 16 * 2 ** 20 }),
    (e: Error) => /images/.test(e.message) && /38535168 bytes/.test(e.message) && /16777216/.test(e.message) && /batch size/.test(e.message),
  );
});

test('state updates are computed in place when the old value is dead; otherwise copied', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [4, 6]);
  const seen = b.state('seen', [4, 6], { kind: 'zeros' }, false);
  const acc = b.state('acc', [4, 6], { kind: 'zeros' }, false);
  const rows = b.state('rows', [4], { kind: 'zeros' }, false);
  const late = b.state('late', [4, 6], { kind: 'zeros' }, false);
  const early = b.sum(seen, [0, 1]); // reads seen before its update: fine
  b.update('seen', b.add(seen, x));
  b.update('acc', b.add(b.mul(acc, b.full(0.9)), x)); // elementwise, same index: in place
  b.update('rows', b.add(rows, b.sum(x, [1]))); // a reduction's epilogue: in place
  const late1 = b.mul(late, b.full(2));
  b.update('late', late1);
  b.output('late_sum', b.sum(late, [0, 1])); // read after its update's kernel: must be copied
  b.output('early', early);
  const plan = planGraph(b.graph);
  const stateBuffer = (name: string) => plan.state[name].buffer;
  for (const name of ['seen', 'acc', 'rows']) assert.is(plan.updates[name].place.buffer, stateBuffer(name), `${name} in place`);
  assert.is.not(plan.updates.late.place.buffer, stateBuffer('late'));
  assert.is(plan.stats.inPlaceUpdates, 3);
  // An in-place kernel binds its state once, read_write, and never read-only.
  for (const k of plan.kernels) {
    const buffers = k.bindings.map((bb) => plan.tensorBuffer.get(bb.tensor)!.buffer);
    assert.is(new Set(buffers).size, buffers.length, `${k.name} binds a buffer twice`);
  }
  // A state read at another index (a transpose) is not updated in place.
  const b2 = new GraphBuilder();
  const sq = b2.state('sq', [3, 3], { kind: 'zeros' }, false);
  b2.update('sq', b2.add(sq, b2.transpose(sq, [1, 0])));
  assert.is(planGraph(b2.graph).stats.inPlaceUpdates, 0);
});

test('an all-zero update is a clear: no constant buffer, no kernel', () => {
  const b = new GraphBuilder();
  const lr = b.input('lr', []);
  const w = b.state('w', [64, 64], { kind: 'zeros' }, true);
  const g = b.state('g', [64, 64], { kind: 'zeros' }, false);
  b.update('w', b.sub(w, b.mul(lr, g)));
  b.update('g', b.full(0, [64, 64]));
  const plan = planGraph(b.graph);
  assert.ok(plan.updates.g.zero);
  assert.is(plan.buffers.filter((bb) => bb.kind === 'const').length, 0);
  assert.is(plan.stats.dispatches, 1);
  assert.ok(plan.stats.peakBytes < 64, `only the lr input is planned, got ${plan.stats.peakBytes} bytes`);
});

test('shape-free elementwise kernels share one WGSL text across sizes', () => {
  const b = new GraphBuilder();
  const lr = b.input('lr', []);
  const texts = new Set<string>();
  for (const shape of [[64, 256], [128, 200], [3], [70, 6], [5, 7]]) {
    const p = b.state(`p${shape.join('x')}`, shape, { kind: 'zeros' }, true);
    const m = b.state(`m${shape.join('x')}`, shape, { kind: 'zeros' }, false);
    b.update(`p${shape.join('x')}`, b.sub(p, b.mul(lr, b.emit('sqrt', [b.add(m, b.full(1e-8))]))));
  }
  for (const k of planGraph(b.graph).kernels) texts.add(k.wgsl);
  assert.is(texts.size, 2); // four elements per invocation for large sizes that allow it, one otherwise
  for (const t of texts) assert.match(t, /arrayLength/);
  // A broadcast needs coordinates: its size stays baked in.
  const b2 = new GraphBuilder();
  b2.output('y', b2.add(b2.input('x', [4, 5]), b2.input('bias', [5])));
  assert.not.match(planGraph(b2.graph).kernels[0].wgsl, /arrayLength/);
});

test('the generic target plans any size and lists tensors over the default 128 MiB binding limit', () => {
  const b = new GraphBuilder();
  const x = b.input('attn_logits', [32, 12, 512, 512]);
  b.output('attn', b.emit('softmax', [x], { axis: -1 }));
  assert.throws(() => planGraph(b.graph), /384\.0 MiB/);
  const plan = planGraph(b.graph, GENERIC_TARGET);
  assert.is(plan.stats.oversized.length, 2);
  assert.match(plan.stats.oversized[0].description, /attn_logits|softmax/);
  assert.is(plan.stats.oversized[0].bytes, 32 * 12 * 512 * 512 * 4);
  assert.is(planGraph(chainGraph(3)).stats.oversized.length, 0);
});

test('lovtc --stats reports the plan for the generic target, and --limit plans for a device', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovtc-plan-'));
  const file = path.join(dir, 'wide.lovt');
  // 40 x 1024 x 1024 f32 = 160 MiB: over WebGPU's default 128 MiB binding limit.
  writeFileSync(
    file,
    `import "std/nn.lovt"
model Wide {
  config batch: int = 40
  input x: f32[batch, 1024, 1024]
  scale = Linear(1024, 1024)
  let y = scale(x)
  loss energy = sum(square(y)) / batch
  output y = y
}
`,
  );
  const run = async (...args: string[]) => {
    let out = '';
    let err = '';
    const code = await runLovtc(args, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
    return { code, out, err };
  };
  const r = await run(file, '--stats');
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /kernels\s+step [\d,]+ dispatches \/ [\d,]+ pipelines, apply [\d,]+ dispatches \/ [\d,]+ pipelines; [\d,]+ distinct pipelines/);
  assert.match(r.out, /memory\s+step [\d.]+ [KMG]iB planned vs [\d.]+ [KMG]iB without buffer reuse \(\d+%\)/);
  assert.match(r.out, /target\s+generic/);
  assert.match(r.err, /lovtc: warning: \d+ tensors? exceeds? WebGPU's default storage-buffer binding limit of 128 MiB/);
  assert.match(r.err, /f32\[40, 1024, 1024\]\) 160\.00 MiB/);
  const small = await run(file, '--stats', '--set', 'batch=2');
  assert.is(small.code, 0);
  assert.is(small.err, '');
  // Planning for a device with the default limit refuses the big tensor, naming it.
  const limited = await run(file, '--stats', '--limit', 'maxStorageBufferBindingSize=134217728');
  assert.is(limited.code, 0);
  assert.match(limited.err, /could not plan this graph: tensor %\d+ .*f32\[40, 1024, 1024\].*over this device's storage-buffer binding limit/);
  const bad = await run(file, '--stats', '--limit', 'maxBindings=3');
  assert.is(bad.code, 2);
  assert.match(bad.err, /--limit needs KEY=VALUE with KEY one of maxStorageBuffersPerShaderStage/);
  rmSync(dir, { recursive: true, force: true });
});

test.run();
