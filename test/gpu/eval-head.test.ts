// The head trainer (runtime/eval/head-trainer.ts) on the device: LinearSegmentation on a
// random encoder's cached layer4 features of a tiny generated SynthCXR (24 studies, 64 px).
// The training loss falls; the reported test and validation Dice equal an independent
// recomputation (the encoder and head compiled here on their own, the tested weights
// downloaded, logits read back, DiceAccumulator on the host), which also shows that the
// best-validation weights are the ones tested; two seeds give different runs. Then
// `lovt-run eval` end to end (results files, a resume that trains nothing) and a
// checkpoint whose backbone does not fit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import { optimize } from '../../compiler/passes/index.ts';
import { Program } from '../../runtime/executor.ts';
import { initState } from '../../runtime/init.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { NodeFileSource, writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { writeSafetensors } from '../../runtime/safetensors.ts';
import { StateStore } from '../../runtime/state.ts';
import { HeadTrainer, randomEncoder } from '../../runtime/eval/head-trainer.ts';
import { PROTOCOL_LOG, type RunResult } from '../../runtime/eval/protocol.ts';
import { DiceAccumulator } from '../../runtime/eval/segmentation.ts';
import { collateTaskBatch, loadTaskSample, openSynthTask, synthTaskSpec, type SynthTaskData } from '../../runtime/eval/synth-tasks.ts';
import { EVAL_TASKS } from '../../runtime/eval/tasks.ts';
import type { Split } from '../../runtime/data/mimic.ts';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';

const work = mkdtempSync(path.join(tmpdir(), 'lovt-eval-head-'));
const dataDir = path.join(work, 'synth');
const EVAL_DIR = fileURLToPath(new URL('../../models/eval/', import.meta.url));
const SIZE = 64;
const TASK = EVAL_TASKS['synth-seg-linear'];

let data: SynthTaskData;
let trainer: HeadTrainer;
const compile = (file: string, model: string, set: Record<string, string>, mode: 'train' | 'eval') =>
  compileModelOrThrow({ path: path.join(EVAL_DIR, file) }, { model, set, mode });

test.before(async () => {
  await writeSynthDataset(dataDir, { studies: 24, seed: 0, imageSize: SIZE });
  data = await openSynthTask(new NodeFileSource(dataDir), synthTaskSpec('synth-seg'), { imageSize: SIZE });
  trainer = new HeadTrainer({
    device: await getNodeDevice(),
    compile,
    tasks: [TASK],
    encoders: [randomEncoder()],
    data: new Map([['synth-seg', data]]),
    maxEpochs: 8,
  });
});

/** Micro Dice of a split from the given head weights, computed apart from the trainer: own programs, whole split in one batch. */
async function independentDice(split: Split, head: Map<string, { data: Float32Array | Int32Array }>): Promise<number> {
  const samples = await Promise.all(data.splits[split].map((s) => loadTaskSample(data, s)));
  const n = samples.length;
  const device = await getNodeDevice();
  const features = compile('features.lovt', 'EncoderFeatures', { batch: String(n), image_size: String(SIZE), resnet: 'resnet18', resnet_width: '32' }, 'eval');
  const headModel = compile('segmentation.lovt', 'LinearSegmentation', { batch: String(n), image_size: String(SIZE), layer4_channels: '256' }, 'eval');
  const store = new StateStore(device);
  const fp = await Program.create(device, optimize(features.graph), store, { label: 'test features' });
  const hp = await Program.create(device, optimize(headModel.graph), store, { label: 'test head' });
  try {
    for (const [k, v] of Object.entries(initState(features.graph, 0))) store.upload(k, v); // the random encoder: seed 0
    for (const [k, v] of head) store.upload(k, v.data);
    const batch = collateTaskBatch(samples, 3);
    const { layer4 } = await fp.run({ image: batch.images.data }, ['layer4']);
    const { logits } = await hp.run({ layer4, mask: batch.masks!.data }, ['logits']);
    const acc = new DiceAccumulator();
    acc.add(
      Array.from(logits, (x) => 1 / (1 + Math.exp(-x))),
      batch.masks!.data,
    );
    return acc.dice()[0];
  } finally {
    fp.destroy();
    hp.destroy();
    store.destroy();
  }
}

const runs: RunResult[] = [];

test('a run trains the head on cached features: the loss falls and the tested weights are the best validation epoch', async () => {
  const r = await trainer.trainOne({ task: TASK.name, encoder: 'random', lr: 0.03, seed: 0, phase: 'seed' });
  runs.push(r);
  const losses = r.trainLosses as number[];
  const valMetrics = r.valMetrics as number[];
  assert.ok(losses.length >= 2 && losses.every(Number.isFinite), `losses ${losses}`);
  assert.ok(losses[losses.length - 1] < losses[0], `train loss falls: ${losses.map((x) => x.toFixed(4)).join(', ')}`);
  assert.is(r.valMetric, Math.max(...valMetrics), 'the reported validation metric is the best epoch');
  assert.is(valMetrics[(r.bestEpoch as number) - 1], r.valMetric);
  // A later epoch validated worse, so testing the last weights would differ from testing the best.
  assert.ok(Math.min(...valMetrics.slice(r.bestEpoch as number)) < r.valMetric, `best epoch ${r.bestEpoch}, validation ${valMetrics.join(', ')}`);
  const head = await trainer.headState(TASK.name, 'random');
  assert.equal([...head.keys()].sort(), ['head.bias', 'head.weight']);
  // Recomputed from the tested weights: the validation Dice is the best epoch's, the test Dice the reported one.
  assert.ok(Math.abs((await independentDice('validate', head)) - r.valMetric) < 1e-12, 'validation Dice of the tested weights');
  assert.ok(Math.abs((await independentDice('test', head)) - r.testMetric) < 1e-12, `test Dice ${r.testMetric}`);
});

test('two seeds give different runs (head initialisation and data order)', async () => {
  const r = await trainer.trainOne({ task: TASK.name, encoder: 'random', lr: 0.03, seed: 1, phase: 'seed' });
  runs.push(r);
  assert.not.equal(r.trainLosses, runs[0].trainLosses);
  assert.not.equal(r.valLosses, runs[0].valLosses);
});

test('a run that diverges ends with NaN metrics and says where, without throwing', async () => {
  // Adam moves every weight by about the LR: at 1e38 the first update overflows (and is not applied).
  const r = await trainer.trainOne({ task: TASK.name, encoder: 'random', lr: 1e38, seed: 0, phase: 'seed' });
  assert.ok(Number.isNaN(r.valMetric) && Number.isNaN(r.testMetric), JSON.stringify(r));
  assert.match(
    r.stopReason as string,
    /^diverged: task synth-seg-linear, encoder random, lr 1e\+38, seed 0: at optimizer step 1 \(epoch 1\), the optimizer update of head.weight \(its new value or optimizer state\) has 256 NaN or infinite values$/,
    r.stopReason as string,
  );
  trainer.destroy();
});

test('lovt-run eval end to end: progress, the table, results.md/json and the chart; --resume trains nothing', () => {
  const out = path.join(work, 'eval');
  const args = ['eval', '--task', 'synth-seg-linear', '--init', 'random', '--seeds', '2', '--lr', '0.1', '--max-epochs', '3', '--data', dataDir];
  const r = lovtRun([...args, '--out', out], 300_000);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /layer4 of \d+ images cached in .*; recomputing them in each of 2 runs would have cost ~/);
  assert.match(r.stdout, /\[1\/2\] synth-seg-linear · random · seed · lr 0.1 · seed 0: val \d+\.\d%, test \d+\.\d%, 3 epochs/);
  assert.match(r.stdout, /\| synth-seg-linear \| Dice \| \d+\.\d ± \d+\.\d \|/);
  for (const f of ['results.md', 'results.json', 'figures/synth-seg-linear.png', PROTOCOL_LOG]) assert.ok(existsSync(path.join(out, f)), f);
  const results = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8'));
  const logged = readFileSync(path.join(out, PROTOCOL_LOG), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => JSON.parse(l));
  assert.equal(
    results.tasks[0].encoders[0].testMetrics,
    logged.map((l: { result: { testMetric: number } }) => l.result.testMetric),
  );
  assert.match(readFileSync(path.join(out, 'results.md'), 'utf8'), /\| synth-seg-linear \| Dice \| /);
  const again = lovtRun([...args, '--resume', out], 300_000);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /trained 0 runs, reused 2/);
  assert.equal(JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')).tasks, results.tasks);
});

test('an encoder whose backbone does not fit names the first mismatching tensor, before any device work', () => {
  // A torchvision ResNet-18 of width 32 whose layer3.1.conv2 has the wrong shape.
  const { graph } = compile('features.lovt', 'EncoderFeatures', { batch: '1', image_size: String(SIZE) }, 'eval');
  const tensors = new Map(
    Object.values(graph.state).map((s) => {
      const shape = s.name === 'backbone.layer3.1.conv2.weight' ? [128, 128, 1, 1] : s.shape;
      return [s.name.slice('backbone.'.length), { dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }];
    }),
  );
  const file = path.join(work, 'bad.safetensors');
  writeFileSync(file, writeSafetensors(tensors));
  const out = path.join(work, 'bad-eval');
  const r = lovtRun(['eval', '--task', 'synth-seg-linear', '--init', file, '--data', dataDir, '--out', out]);
  assertOneLineError(
    r,
    /encoder bad \(.*bad.safetensors: torchvision names, resnet18 width 32 \(inferred from the tensors\)\) does not fit the backbone of EncoderFeatures: first mismatch backbone.layer3.1.conv2.weight \[128, 128, 1, 1\] vs model \[128, 128, 3, 3\]/,
  );
  assert.not.match(r.stdout, /device:/);
  assert.not.ok(existsSync(out), 'nothing written');
});

test('cleanup', () => {
  rmSync(work, { recursive: true, force: true });
});

test.run();
