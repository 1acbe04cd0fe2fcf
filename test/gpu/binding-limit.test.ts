// Kernels respect maxStorageBuffersPerShaderStage: a concat over more inputs
// than one kernel may bind is split into kernels that each write a slab of the
// output, planned under WebGPU's default limit of 8 and run on the device
// against the float64 reference, forward and gradient, fused and unfused.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { Shape } from '../../compiler/ir.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { contractionTarget } from '../../runtime/device.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { checkAgainstReference, randomFeeds } from './reference-check.ts';

const LIMIT = 8;

/**
 * concat of `count` trainable tensors along `axis` (sizes 1, 2, 3, ... along
 * it; with `extras`, also a constant and a repeated input), its value and the
 * gradient of Σ concat·cotangent with respect to every tensor as outputs.
 */
function concatGraph(count: number, shape: Shape, axis: number, extras: boolean) {
  const b = new GraphBuilder();
  const parts: number[] = [];
  const params: number[] = [];
  const sized = (k: number) => shape.map((d, i) => (i === axis ? 1 + (k % 3) : d));
  for (let k = 0; k < count; k++) {
    const p = b.state(`x${k}`, sized(k), { kind: 'zeros' }, true);
    params.push(p);
    parts.push(p);
    if (extras && k === 3) parts.push(b.full(0.5, sized(k))); // compiled inline: binds nothing
    if (extras && k === 6) parts.push(parts[1]); // read twice, bound once; its gradient sums two slices
  }
  const y = b.emit('concat', parts, { axis });
  b.output('y', y);
  const cot = b.input('cotangent', b.node(y).shape);
  const loss = b.sum(
    b.mul(y, cot),
    b.node(y).shape.map((_, i) => i),
  );
  const grads = gradients(b, loss, params);
  for (const p of params) b.output(`grad.${b.node(p).name}`, grads.get(p)!);
  return b.graph;
}

/** [tensors, shape (the axis entry is replaced), axis, a constant and a repeated input too]. */
const CASES: [number, Shape, number, boolean][] = [
  [9, [3, 1, 5], 1, false], // non-leading axis, odd sizes
  [12, [1, 7], 0, true], // leading axis
  [17, [2, 3, 1], 2, true], // last axis: the slabs interleave in memory
];

for (const [count, shape, axis, extras] of CASES)
  test(`a ${count}-input concat along axis ${axis} under limit ${LIMIT}: split into slabs, forward and gradient match the reference`, async () => {
    const dev = await getNodeDevice();
    const graph = concatGraph(count, shape, axis, extras);
    const limits = { ...dev.limits, maxStorageBuffersPerShaderStage: LIMIT };
    for (const fuse of [false, true]) {
      const plan = planGraph(graph, limits, { fuse, target: contractionTarget(dev) });
      for (const k of plan.kernels) assert.ok(k.bindings.length <= LIMIT, `${k.name} binds ${k.bindings.length}`);
      const slabs = plan.kernels.filter((k) => k.name.includes('_slab'));
      assert.ok(slabs.length >= Math.ceil(count / (LIMIT - 1)), `the concat is split (${plan.kernels.map((k) => k.name).join(', ')})`);
      // Copies are exact; the repeated input's gradient adds two f32 values.
      await checkAgainstReference(graph, randomFeeds(graph, count), { rtol: 0, atol: 0, per: { 'grad.x1': { rtol: 2 ** -23, atol: 0 } } }, { plan });
    }
  });

test('without a split the concat would exceed the limit: planned under the device limit it is one kernel', async () => {
  const dev = await getNodeDevice();
  const graph = concatGraph(9, [3, 1, 5], 1, false);
  if (dev.limits.maxStorageBuffersPerShaderStage < 9) return; // this device splits it too
  const plan = planGraph(graph, dev.limits, { fuse: false });
  assert.not.ok(plan.kernels.some((k) => k.name.includes('_slab')));
  assert.ok(plan.kernels.some((k) => k.bindings.length > LIMIT));
});

test.run();
