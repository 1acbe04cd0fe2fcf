// The buffer planner (compiler/passes/memory.ts) and the device-free parts of
// planning (compiler/schedule.ts, compiler/passes/fusion.ts): liveness-based
// reuse, pinning, limits, fusion decisions and JSON round trips.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { planMemory, type MemoryStep, type MemoryTensor } from '../../compiler/passes/memory.ts';
import { planGraph, planFromJSON, planToJSON, DEFAULT_LIMITS } from '../../compiler/schedule.ts';
import { fuseGraph } from '../../compiler/passes/fusion.ts';
import { GraphBuilder } from '../../compiler/builder.ts';

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
  assert.is(plan.peakBytes, plan.buffers.reduce((s, b) => s + b.bytes, 0));
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
  const withOutputEarly = checkPlan(tensors.map((t) => (t.id === 1 ? { ...t, liveAtEnd: true } : t)), steps);
  assert.is(withOutputEarly.buffers.length, 4); // an early output is never released
});

test('reading a transient before any step writes it is an error', () => {
  assert.throws(() => planMemory([{ id: 0, bytes: 4 }, { id: 1, bytes: 4 }], [{ reads: [0], writes: [1] }]), /reads tensor 0 before any step writes it/);
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

test.run();
