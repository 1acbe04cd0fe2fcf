// The segmentation heads of models/eval/segmentation.lovt on the float64 reference:
// soft_dice_loss against runtime/eval's softDiceLoss, the U-Net heads' state (the
// fine-tune backbone loads by EncoderFeatures' names, the warm-up freezes it, the
// widths of method §6 for ResNet-50), finite-difference gradients of decoder
// parameters, and the fine-tune U-Net equal to the frozen one fed the cached features.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Graph } from '../../compiler/ir.ts';
import { evaluate } from '../../compiler/reference.ts';
import { softDiceLoss } from '../../runtime/eval/segmentation.ts';
import { compile, randomArray, randomState, rng, withGradients } from './model-helpers.ts';

const FILE = 'eval/segmentation.lovt';

function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  assert.is(got.length, want.length, `${what}: lengths differ`);
  for (let i = 0; i < got.length; i++)
    if (!(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])))) assert.unreachable(`${what}[${i}]: ${got[i]} vs ${want[i]}`);
}

/** 0/1 values, about `p` of them 1. */
function binary(n: number, r: () => number, p: number): Float64Array {
  return Float64Array.from({ length: n }, () => (r() < p ? 1 : 0));
}

/** [name, shape] of the state under `prefix` (all with ''). */
function stateOf(graph: Graph, prefix: string): [string, number[]][] {
  return Object.values(graph.state)
    .filter((s) => s.name.startsWith(prefix))
    .map((s) => [s.name, s.shape]);
}

function pick(values: Record<string, Float64Array>, graph: Graph): Record<string, Float64Array> {
  return Object.fromEntries(Object.values(graph.state).map((s) => [s.name, values[s.name]]));
}

test('soft_dice_loss equals runtime/eval softDiceLoss(fromLogits); an all-negative target gives 0', () => {
  const text = `import "segmentation.lovt"
model P {
  input logits: f32[3, 1, 5, 4]
  input target: f32[3, 1, 5, 4]
  output loss = soft_dice_loss(logits, target)
}`;
  const { graph } = compile({ text, name: 'eval/dice-probe.lovt' }, { mode: 'eval' });
  const r = rng(5);
  for (const p of [0.3, 0.05, 0]) {
    const logits = randomArray(60, r, 3);
    const target = binary(60, r, p);
    const got = evaluate(graph, { inputs: { logits, target } }).outputs.loss[0];
    const want = softDiceLoss(logits, target, { fromLogits: true });
    close([got], [want], 1e-12, `positives ${p}`);
    if (p === 0) assert.is(got, 0);
  }
});

test("U-Net heads compile in both modes; the fine-tune backbone has EncoderFeatures' state; the warm-up freezes exactly it", () => {
  const set = { batch: 2, image_size: 64 };
  for (const model of ['UNetFrozen', 'UNetFinetune', 'UNetFinetuneWarmup'])
    for (const mode of ['train', 'eval'] as const) {
      const { graph } = compile({ file: FILE }, { model, mode, set });
      assert.equal(graph.nodes[graph.outputs.logits].shape, [2, 1, 64, 64], `${model} ${mode}`);
      assert.equal(stateOf(graph, 'decoder.'), stateOf(compile({ file: FILE }, { model: 'UNetFrozen', mode, set }).graph, 'decoder.'), `${model} decoder`);
    }
  const features = compile({ file: 'eval/features.lovt' }, { model: 'EncoderFeatures', mode: 'eval', set }).graph;
  const finetune = compile({ file: FILE }, { model: 'UNetFinetune', set }).graph;
  assert.equal(stateOf(finetune, 'backbone.'), stateOf(features, ''));
  assert.equal(
    Object.values(finetune.state).map((s) => s.name),
    [...stateOf(features, ''), ...stateOf(finetune, 'decoder.')].map(([n]) => n),
  );
  const warmup = compile({ file: FILE }, { model: 'UNetFinetuneWarmup', set }).graph;
  for (const s of Object.values(warmup.state)) {
    const param = Object.values(finetune.state).find((t) => t.name === s.name)!.trainable;
    assert.is(s.trainable, param && !s.name.startsWith('backbone.'), s.name);
  }
});

test('U-Net widths on ResNet-50 are the reference: bridge 2048, up-blocks 1024/512/256/128/64, skips concatenated after the upsampling', () => {
  const { graph } = compile({ file: FILE }, { model: 'UNetFinetune', mode: 'eval', set: { batch: 1, image_size: 64, resnet: 'resnet50', resnet_width: 64 } });
  const shape = (name: string) => Object.values(graph.state).find((s) => s.name === `decoder.${name}`)!.shape;
  assert.equal(shape('bridge.0.conv.weight'), [2048, 2048, 3, 3]);
  assert.equal(shape('bridge.1.bn.weight'), [2048]);
  const widths = [2048, 1024, 512, 256, 128, 64];
  const skips = [1024, 512, 256, 64, 3];
  for (let i = 0; i < 5; i++) {
    assert.equal(shape(`up_blocks.${i}.upsample.weight`), [widths[i], widths[i + 1], 2, 2]);
    assert.equal(shape(`up_blocks.${i}.upsample.bias`), [widths[i + 1]]);
    assert.equal(shape(`up_blocks.${i}.conv_block_1.conv.weight`), [widths[i + 1], widths[i + 1] + skips[i], 3, 3]);
    assert.equal(shape(`up_blocks.${i}.conv_block_2.conv.weight`), [widths[i + 1], widths[i + 1], 3, 3]);
  }
  assert.equal(shape('classifier.weight'), [1, 64, 1, 1]);
  assert.equal(shape('classifier.bias'), [1]);
});

/** UNetFrozen at a tiny scale (widths 32 / 16 / 8 / 4 / 2 / 1) with random features and a 0/1 mask. */
const TINY_FROZEN = { batch: 2, image_size: 32, stem_channels: 2, layer1_channels: 3, layer2_channels: 2, layer3_channels: 4, layer4_channels: 32 };

function frozenFeeds(graph: Graph, seed: number): Record<string, Float64Array> {
  const r = rng(seed);
  const feeds: Record<string, Float64Array> = {};
  for (const [name, id] of Object.entries(graph.inputs)) {
    const n = graph.nodes[id].shape.reduce((a, b) => a * b, 1);
    feeds[name] = name === 'mask' ? binary(n, r, 0.3) : randomArray(n, r, 1);
  }
  return feeds;
}

test('U-Net (frozen, train mode): finite differences of the Dice loss in decoder parameters', () => {
  const { graph } = compile({ file: FILE }, { model: 'UNetFrozen', set: TINY_FROZEN });
  const inputs = frozenFeeds(graph, 11);
  const state = randomState(graph, 12);
  const checked = [
    'up_blocks.0.upsample.weight',
    'up_blocks.3.upsample.bias',
    'up_blocks.4.conv_block_1.conv.weight',
    'bridge.1.bn.weight',
    'up_blocks.2.conv_block_2.bn.bias',
    'classifier.weight',
  ].map((n) => `decoder.${n}`);
  const node = (name: string) => Object.values(graph.state).find((s) => s.name === name)!.node;
  const withGrads = withGradients(graph, 'loss.dice', Object.fromEntries(checked.map((n) => [n, node(n)])));
  const got = evaluate(withGrads, { inputs, state }).outputs;
  const lossAt = (s: Record<string, Float64Array>) => evaluate(graph, { inputs, state: s }).outputs['loss.dice'][0];
  assert.ok(lossAt(state) > 0 && lossAt(state) < 1, 'a Dice loss strictly between 0 and 1');
  const h = 1e-6;
  for (const name of checked) {
    const grad = got[`grad.${name}`];
    let largest = 0;
    const n = state[name].length;
    for (const i of new Set([0, 1 % n, Math.floor(n / 2), n - 1])) {
      const at = (d: number) => lossAt({ ...state, [name]: state[name].map((v, j) => (j === i ? v + d : v)) });
      const fd = (at(h) - at(-h)) / (2 * h);
      largest = Math.max(largest, Math.abs(fd));
      assert.ok(Math.abs(grad[i] - fd) <= 1e-6 + 1e-4 * Math.abs(fd), `${name}[${i}]: autodiff ${grad[i]}, finite difference ${fd}`);
    }
    assert.ok(largest > 1e-6, `${name}: a gradient that is not zero (${largest})`);
  }
});

test('UNetFinetune (eval) = UNetFrozen (eval) fed the eval-mode EncoderFeatures maps of the same backbone', () => {
  const set = { batch: 2, image_size: 32 };
  const encoder = { resnet: 'resnet18', resnet_width: 8 };
  const finetune = compile({ file: FILE }, { model: 'UNetFinetune', mode: 'eval', set: { ...set, ...encoder } }).graph;
  const features = compile({ file: 'eval/features.lovt' }, { model: 'EncoderFeatures', mode: 'eval', set: { ...set, ...encoder } }).graph;
  const channels = { stem_channels: 8, layer1_channels: 8, layer2_channels: 16, layer3_channels: 32, layer4_channels: 64 };
  const frozen = compile({ file: FILE }, { model: 'UNetFrozen', mode: 'eval', set: { ...set, ...channels } }).graph;
  const r = rng(21);
  const image = randomArray(2 * 3 * 32 * 32, r, 1);
  const mask = binary(2 * 32 * 32, r, 0.2);
  const state = randomState(finetune, 22);
  const maps = evaluate(features, { inputs: { image }, state: pick(state, features) }).outputs;
  const want = evaluate(finetune, { inputs: { image, mask }, state }).outputs;
  const got = evaluate(frozen, {
    inputs: { image, mask, stem: maps.stem, layer1: maps.layer1, layer2: maps.layer2, layer3: maps.layer3, layer4: maps.layer4 },
    state: pick(state, frozen),
  }).outputs;
  close(got.logits, want.logits, 1e-12, 'logits');
  close(got['loss.dice'], want['loss.dice'], 1e-12, 'loss');
});

test.run();
