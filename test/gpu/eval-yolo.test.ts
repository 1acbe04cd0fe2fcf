// The YOLOv3 head on the device against the float64 reference interpreter: the std
// functions it is built from (bce_with_logits at saturated logits, leaky_relu) with their
// gradients, and one training step of YoloV3Frozen at 64 px (the step program the trainer
// runs: every loss term, every gradient accumulator and BatchNorm statistic), on random
// features and targets built by runtime/eval/yolo.ts from random boxes.
//
// Step tolerances as in train-e2e.test.ts, U = 2^-24: a loss may be off by 2·U·D·|loss|,
// a gradient or statistic by 4·U·D·S, with D the longest chain of ops computing it and S
// the largest |value| of its layer (gradients that cancel are rounding noise of their terms).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gradients } from '../../compiler/autodiff.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import { evaluate } from '../../compiler/reference.ts';
import { buildTrainingPrograms, optimizerOptions } from '../../compiler/train-program.ts';
import { Rng } from '../../compiler/random.ts';
import { runGraph } from '../../runtime/executor.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import type { HostTensor } from '../../runtime/state.ts';
import { yoloScales, yoloTargets } from '../../runtime/eval/yolo.ts';
import type { Box, LabelledBox } from '../../runtime/eval/boxes.ts';
import { compile } from '../nodevice/model-helpers.ts';
import { checkAgainstReference, initialTrainingState, opDepths, randomTensor } from './reference-check.ts';

const U = 2 ** -24;

test('bce_with_logits and leaky_relu on the device: values and gradients at logits up to ±100 match the reference', async () => {
  const source = `
import "std/nn.lovt"
import "std/losses.lovt"
model FnProbe {
  input x: f32[16]
  input y: f32[16]
  output bce = bce_with_logits(x, y)
  output leaky = leaky_relu(x, 0.1)
  loss weighted = sum(x * bce_with_logits(x, y)) + sum(y * leaky_relu(x, 0.2))
}`;
  const { graph } = compile({ text: source, name: 'fn-probe.lovt' });
  const b = new GraphBuilder(structuredClone(graph));
  b.graph.outputs['grad.x'] = gradients(b, graph.outputs['loss.total'], [graph.inputs.x]).get(graph.inputs.x)!;
  const x = Float32Array.of(-100, -30, -17.5, -3, -0.5, 0, 0, 1e-3, 0.7, 4, 17.5, 30, 100, -100, 100, 2);
  const y = Float32Array.of(0, 0, 1, 0.3, 1, 0, 0.25, 1, 0, 0.6, 0, 1, 0, 1, 1, 0.5);
  const got = await checkAgainstReference(b.graph, { inputs: { x, y } }, { rtol: 1e-6, atol: 1e-6 });
  for (const name of ['bce', 'leaky', 'grad.x']) assert.ok(Array.from(got.outputs[name]).every(Number.isFinite), `${name} is finite everywhere`);
  // bce(−100, 1) = 100 and bce(100, 0) = 100: the saturated sides keep their value.
  assert.is(got.outputs.bce[13], 100);
  assert.is(got.outputs.bce[12], 100);
});

const layerOf = (name: string) => name.slice(0, name.lastIndexOf('.'));
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

test('YoloV3Frozen at 64 px: one training step (losses, gradients, BatchNorm statistics) matches the reference', async () => {
  const classes = 2;
  const batch = 4;
  const set = { batch, image_size: 64, layer2_channels: 16, layer3_channels: 32, layer4_channels: 64, classes };
  const { graph, model } = compile({ file: 'eval/yolov3.lovt' }, { model: 'YoloV3Frozen', set });
  const { step } = buildTrainingPrograms(graph, { loss: 'loss.total', optimizer: optimizerOptions(model.train.optimizer), accumulate: 1 });

  // Three random boxes in each of the first three images, none in the last (padding).
  const rng = new Rng(4);
  const boxes: LabelledBox[][] = [0, 1, 2].map(() =>
    [0, 1, 2].map(() => {
      const w = 3 + rng.uniform() * 40;
      const h = 3 + rng.uniform() * 40;
      const x = rng.uniform() * (64 - w);
      const y = rng.uniform() * (64 - h);
      return { box: [x, y, x + w, y + h] as Box, label: Math.floor(rng.uniform() * classes) };
    }),
  );
  const inputs: Record<string, HostTensor> = { ...yoloTargets(boxes, { imageSize: 64, classes, batch }) };
  for (const s of yoloScales(64)) inputs[s.layer] = randomTensor(rng, graph.nodes[graph.inputs[s.layer]].shape, 'f32', -1, 3);
  for (const name of Object.keys(step.inputs)) assert.ok(inputs[name], `step input ${name} is fed`);

  const start = initialTrainingState(graph, [step], 0);
  const state: Record<string, HostTensor> = {};
  for (const s of Object.values(step.state)) state[s.name] = s.dtype === 'i32' ? Int32Array.from(start[s.name]) : Float32Array.from(start[s.name]);
  const got = await runGraph(await getNodeDevice(), step, { inputs, state });
  const want = evaluate(step, { inputs, state });

  const depth = opDepths(step);
  const bad: string[] = [];
  for (const [name, id] of Object.entries(step.outputs)) {
    if (!name.startsWith('loss.')) continue;
    const [g, w] = [got.outputs[name][0], want.outputs[name][0]];
    if (!(Math.abs(g - w) <= 2 * U * depth[id] * Math.abs(w) + 1e-12)) bad.push(`${name}: ${g} vs ${w}`);
  }
  const layerScale = new Map<string, number>();
  for (const [name, v] of Object.entries(want.updates)) layerScale.set(layerOf(name), Math.max(layerScale.get(layerOf(name)) ?? 0, maxAbs(v)));
  let checked = 0;
  for (const [name, id] of Object.entries(step.updates)) {
    const tol = 4 * U * depth[id] * layerScale.get(layerOf(name))!;
    const [g, w] = [got.state[name], want.updates[name]];
    for (let i = 0; i < w.length; i++) {
      if (!(Math.abs(g[i] - w[i]) <= tol)) {
        bad.push(`${name}[${i}]: ${g[i]} vs ${w[i]} (tol ${tol})`);
        break;
      }
    }
    checked++;
  }
  assert.ok(bad.length === 0, `${bad.length} mismatches:\n  ${bad.slice(0, 12).join('\n  ')}`);
  // Every gradient of the neck was compared, and the loss terms are all live.
  assert.ok(checked >= Object.values(graph.state).filter((s) => s.trainable).length, `${checked} updates compared`);
  for (const t of ['x', 'y', 'w', 'h', 'obj', 'noobj', 'cls']) assert.ok(want.outputs[`loss.${t}`][0] > 0, `loss.${t} > 0`);
  assert.ok(maxAbs(want.updates['grad_acc.yolo.embedding2.0.conv.weight']) > 0, 'the finest branch gets a gradient');
});

test.run();
