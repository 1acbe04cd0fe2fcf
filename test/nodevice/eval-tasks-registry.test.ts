// The evaluation's task registry and suites (runtime/eval/tasks.ts), the segmentation
// adapter's metric on padded batches, and the encoder sources of the head trainer
// (runtime/eval/head-trainer.ts): --init parsing, a checkpoint's image encoder mapped to
// backbone.*, a torchvision file's architecture inferred from the std ResNet's own tensor
// names and shapes (compiled here at each architecture), and the mismatch message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import type { HostTensor } from '../../runtime/safetensors.ts';
import type { CheckpointManifest } from '../../runtime/train/checkpoint.ts';
import { DiceAccumulator } from '../../runtime/eval/segmentation.ts';
import {
  encoderFromCheckpoint,
  FEATURE_MAPS,
  headConfigs,
  encoderFromTorchvision,
  inferResNetArch,
  matchBackbone,
  paddedIndices,
  parseInitSpec,
  randomEncoder,
  resolveArch,
} from '../../runtime/eval/head-trainer.ts';
import { EVAL_SUITES, EVAL_TASKS, LINEAR_LR_GRID, resolveTasks, SEGMENTATION_ADAPTER, taskAdapter } from '../../runtime/eval/tasks.ts';
import { SYNTH_TASKS } from '../../runtime/eval/synth-tasks.ts';
import { YOLO_OUTPUTS } from '../../runtime/eval/yolo.ts';

const FEATURES = fileURLToPath(new URL('../../models/eval/features.lovt', import.meta.url));

/** The std ResNet's backbone state (EncoderFeatures at this architecture) as zero tensors under torchvision names. */
function torchvisionState(resnet: string, width: number): Map<string, HostTensor> {
  const { graph } = compileModelOrThrow({ path: FEATURES }, { mode: 'eval', set: { resnet, resnet_width: String(width), image_size: '64', batch: '1' } });
  const out = new Map<string, HostTensor>();
  for (const s of Object.values(graph.state)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    out.set(
      s.name.slice('backbone.'.length),
      s.dtype === 'i32' ? { dtype: 'i32', shape: s.shape, data: new Int32Array(n) } : { dtype: 'f32', shape: s.shape, data: new Float32Array(n) },
    );
  }
  return out;
}

test('tasks and suites: synth-seg-linear as method §6 says; suites resolve in order, once each; unknown names list the known ones', () => {
  const t = EVAL_TASKS['synth-seg-linear'];
  assert.equal(
    { metric: t.metric, grid: t.lrGrid, batch: t.batch, patience: t.stopPatience, encoder: t.encoder, head: t.head, data: t.data },
    {
      metric: 'Dice',
      grid: [3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3],
      batch: 8,
      patience: 10,
      encoder: 'frozen',
      head: { file: 'segmentation.lovt', model: 'LinearSegmentation' },
      data: 'synth-seg',
    },
  );
  assert.equal(t.lrGrid, [...LINEAR_LR_GRID]);
  assert.equal(
    Object.values(EVAL_TASKS).map((x) => [x.name, x.head.model, x.encoder, x.warmup?.model ?? null, x.warmup?.steps ?? null, x.lrGrid.join()]),
    [
      ['synth-seg-linear', 'LinearSegmentation', 'frozen', null, null, '0.3,0.1,0.03,0.01,0.003,0.001'],
      ['synth-seg-unet-frozen', 'UNetFrozen', 'frozen', null, null, '0.001,0.0003,0.0001,0.00003,0.00001'],
      ['synth-seg-unet-finetune', 'UNetFinetune', 'finetune', 'UNetFinetuneWarmup', 20, '0.001,0.0003,0.0001,0.00003,0.00001'],
      ['synth-det-yolo-frozen', 'YoloV3Frozen', 'frozen', null, null, '0.001,0.0003,0.0001'],
      ['synth-det-yolo-finetune', 'YoloV3Finetune', 'finetune', 'YoloV3FinetuneWarmup', 20, '0.001,0.0003,0.0001'],
    ],
  );
  assert.equal(EVAL_SUITES['synth-linear'], ['synth-seg-linear']);
  assert.equal([...EVAL_SUITES.synth].sort(), Object.keys(EVAL_TASKS).sort(), 'synth = every registered SynthCXR task');
  for (const task of Object.values(EVAL_TASKS)) assert.ok(taskAdapter(task), `${task.name} has an adapter`);
  assert.equal(
    resolveTasks(['synth-seg-linear'], 'synth-linear').map((x) => x.name),
    ['synth-seg-linear'],
  );
  assert.throws(
    () => resolveTasks(['nope']),
    (e: Error) => e.message === `unknown task 'nope' (--task); the tasks are ${Object.keys(EVAL_TASKS).join(', ')}`,
  );
  assert.throws(() => resolveTasks([], 'nope'), /^unknown suite 'nope' \(--suite\); the suites are synth-linear \(synth-seg-linear\), synth \(/);
  assert.throws(() => resolveTasks([]), /^give --task NAME \(synth-seg-linear.*\) or --suite NAME \(synth-linear, synth\)$/);
});

test("every registered task's head (and warm-up variant) compiles with the configs the trainer sets, reading what the encoder gives", () => {
  const EVAL = fileURLToPath(new URL('../../models/eval/', import.meta.url));
  const compile = (file: string, model: string, set: Record<string, string>, mode: 'train' | 'eval') =>
    compileModelOrThrow({ path: path.join(EVAL, file) }, { model, set, mode });
  for (const arch of [
    { resnet: 'resnet18', width: 16 },
    { resnet: 'resnet50', width: 8 },
  ] as const) {
    const features = compile(
      'features.lovt',
      'EncoderFeatures',
      { batch: '8', image_size: '64', resnet: arch.resnet, resnet_width: String(arch.width) },
      'eval',
    );
    const shapeOf = (name: string) => features.graph.nodes[features.graph.outputs[name]].shape;
    for (const task of Object.values(EVAL_TASKS)) {
      const classes = SYNTH_TASKS[task.data].findings.length;
      const set = headConfigs(task, compile, { imageSize: 64, classes }, arch, features.graph);
      const where = `${task.name} at ${arch.resnet} width ${arch.width}`;
      for (const model of [task.head.model, ...(task.warmup ? [task.warmup.model] : [])]) {
        for (const mode of ['train', 'eval'] as const) {
          const { graph } = compile(task.head.file, model, set, mode);
          const input = (n: string) => graph.nodes[graph.inputs[n]].shape;
          for (const map of FEATURE_MAPS) if (map in graph.inputs) assert.equal(input(map), shapeOf(map), `${where}: ${model} ${mode} input ${map}`);
          if (task.encoder === 'finetune') {
            assert.equal(input('image'), [8, 3, 64, 64], `${where}: ${model} reads the image`);
            assert.ok(`backbone.conv1.weight` in graph.state, `${where}: ${model} has the backbone`);
          } else
            assert.not.ok(
              Object.keys(graph.state).some((n) => n.startsWith('backbone.')),
              `${where}: a frozen head has no backbone`,
            );
          const outputs = taskAdapter(task).kind === 'segmentation' ? ['logits'] : [...YOLO_OUTPUTS];
          for (const o of outputs) assert.ok(o in graph.outputs, `${where}: ${model} ${mode} outputs ${o}`);
          assert.ok('loss.total' in graph.outputs, `${where}: ${model} ${mode} has a loss`);
        }
      }
      if (taskAdapter(task).kind === 'detection') assert.is(set.classes, String(classes), `${where}: classes`);
    }
  }
});

test('the segmentation adapter stacks masks and counts only the valid samples of a padded batch in Dice', () => {
  const S = 2;
  const m = (...v: number[]) => Float32Array.from(v);
  const targets = [{ mask: m(1, 0, 0, 1) }, { mask: m(1, 1, 0, 0) }, { mask: m(1, 0, 0, 1) }];
  assert.equal(Array.from(SEGMENTATION_ADAPTER.targets(targets, { imageSize: S, batch: 3, classes: 1 }).mask), [1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1]);
  // Logits: sample 0 predicts [1, 1, 0, 1], sample 1 [0, 1, 0, 0]; the third repeats sample 0 (padding) but predicts nothing.
  const logits = m(2, 0.5, -1, 0, -3, 4, -0.1, -2, -9, -9, -9, -9);
  const acc = SEGMENTATION_ADAPTER.accumulator({ imageSize: S, batch: 3, classes: 1 });
  acc.add({ logits }, targets, 2);
  // By hand: TP = 2 + 1 = 3, FP = 1 + 0 = 1, FN = 0 + 1 = 1 → 2·3 / (6 + 1 + 1) = 0.75 (the padded sample would add FN 2).
  assert.is(acc.value(), 0.75);
  const ref = new DiceAccumulator();
  ref.add(m(1, 1, 0, 1, 0, 1, 0, 0), m(1, 0, 0, 1, 1, 1, 0, 0));
  assert.is(acc.value(), ref.dice()[0]);
  assert.equal(paddedIndices(10, 8, 4), [8, 9, 8, 9]);
  assert.equal(paddedIndices(10, 4, 4), [4, 5, 6, 7]);
});

test('--init sources: random, a .safetensors file by its stem, a run directory by its base name', () => {
  assert.equal(parseInitSpec('random'), { kind: 'random', name: 'random' });
  assert.equal(parseInitSpec('out/enc/resnet50.safetensors'), { kind: 'safetensors', path: 'out/enc/resnet50.safetensors', name: 'resnet50' });
  assert.equal(parseInitSpec('runs/demo-1/'), { kind: 'run', path: 'runs/demo-1/', name: 'demo-1' });
  assert.throws(() => parseInitSpec(' '), /--init expects RUN_DIR, FILE.safetensors or 'random', got ''/);
  const r = randomEncoder();
  assert.equal(r.ref, { name: 'random', hash: 'random' });
  assert.equal(resolveArch(r, [r]), { resnet: 'resnet18', width: 32 }, 'alone: the feature model default');
  const other = encoderFromTorchvision('x', 'x.safetensors', torchvisionState('resnet34', 8), 'h');
  assert.equal(resolveArch(r, [r, other]), { resnet: 'resnet34', width: 8 }, 'random takes the architecture of the encoders it is compared with');
});

test("a torchvision state dict's architecture comes from its names and shapes (the std ResNet compiled at each)", () => {
  for (const [resnet, width] of [
    ['resnet18', 16],
    ['resnet34', 8],
    ['resnet50', 8],
  ] as const) {
    const state = torchvisionState(resnet, width);
    state.set('fc.weight', { dtype: 'f32', shape: [10, 4], data: new Float32Array(40) }); // a classifier is ignored
    assert.equal(inferResNetArch(state, 'f'), { resnet, width });
    const enc = encoderFromTorchvision('f', 'f.safetensors', state, 'hash');
    const { graph } = compileModelOrThrow({ path: FEATURES }, { mode: 'eval', set: { resnet, resnet_width: String(width), image_size: '64', batch: '1' } });
    assert.is(matchBackbone(graph, enc, 'EncoderFeatures').size, Object.keys(graph.state).length);
  }
  assert.throws(
    () => inferResNetArch(new Map([['weight', { dtype: 'f32', shape: [1], data: new Float32Array(1) }]]), 'a.safetensors'),
    /^a.safetensors has no conv1.weight/,
  );
  const deep = torchvisionState('resnet50', 8);
  deep.set('layer3.22.conv1.weight', deep.get('layer3.0.conv1.weight')!);
  assert.throws(
    () => inferResNetArch(deep, 'r101'),
    /^r101: Bottleneck ResNet with \[3, 4, 23, 3\] blocks in layer1..layer4; the evaluation supports ResNet-18/,
  );
});

test("a checkpoint's image encoder becomes backbone.*; a shape that does not fit names the first mismatching tensor", () => {
  const tv = torchvisionState('resnet18', 16);
  const tensors = new Map<string, HostTensor>([...tv].map(([k, v]) => [`image_encoder.${k}`, v]));
  tensors.set('report_encoder.x', { dtype: 'f32', shape: [1], data: new Float32Array(1) });
  const manifest = {
    model: { name: 'LoVT_Tiny' },
    tag: 'best',
    step: 40,
    config: { resnet: 'resnet18', resnet_width: 16, image_size: 96 },
    weights: { sha256: 'abc' },
  } as unknown as CheckpointManifest;
  const enc = encoderFromCheckpoint('demo', 'runs/demo', manifest, tensors);
  assert.equal(enc.ref, { name: 'demo', hash: 'abc' });
  assert.equal(enc.arch, { resnet: 'resnet18', width: 16 });
  assert.is(enc.imageSize, 96);
  assert.equal([...enc.weights!.keys()].sort(), [...tv.keys()].map((k) => `backbone.${k}`).sort());
  assert.throws(
    () => encoderFromCheckpoint('c', 'runs/c', { ...manifest, config: {} } as unknown as CheckpointManifest, tensors),
    /^runs\/c: the model LoVT_Tiny has no std ResNet image encoder \(configs resnet = undefined, resnet_width = undefined\)/,
  );
  // layer2.0.conv1.weight of a wider model: the first mismatch is named.
  tensors.set('image_encoder.layer2.0.conv1.weight', { dtype: 'f32', shape: [64, 16, 3, 3], data: new Float32Array(64 * 16 * 9) });
  const bad = encoderFromCheckpoint('demo', 'runs/demo', manifest, tensors);
  const { graph } = compileModelOrThrow({ path: FEATURES }, { mode: 'eval', set: { resnet: 'resnet18', resnet_width: '16', image_size: '64', batch: '1' } });
  assert.throws(
    () => matchBackbone(graph, bad, 'EncoderFeatures'),
    (e: Error) =>
      e.message.startsWith(
        'encoder demo (runs/demo: LoVT_Tiny, best checkpoint (step 40), resnet18 width 16) does not fit the backbone of EncoderFeatures: ' +
          'first mismatch backbone.layer2.0.conv1.weight [64, 16, 3, 3] vs model [32, 16, 3, 3]; mis-shaped 1: backbone.layer2.0.conv1.weight',
      ),
  );
});

test('lovt-run eval refuses bad input before any device work, one line each', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'lovt-eval-cli-'));
  try {
    const run = (...args: string[]) => lovtRun(['eval', ...args]);
    assertOneLineError(run('--task', 'nope', '--init', 'random'), /unknown task 'nope' \(--task\); the tasks are synth-seg-linear/);
    assertOneLineError(run('--suite', 'nope', '--init', 'random'), /unknown suite 'nope' \(--suite\); the suites are synth-linear \(synth-seg-linear\)/);
    assertOneLineError(run('--suite', 'synth-linear'), /give at least one encoder: --init RUN_DIR \| FILE.safetensors \| random/);
    const missing = path.join(work, 'no-run');
    assertOneLineError(
      run('--suite', 'synth-linear', '--init', missing),
      new RegExp(`--init ${missing}: no such run directory; give a pre-training run directory`),
    );
    assertOneLineError(run('--suite', 'synth-linear', '--init', `${missing}.safetensors`), /no-run.safetensors: no such file/);
    assertOneLineError(run('--suite', 'synth-linear', '--init', 'random', '--seeds', 'x'), /--seeds must be a positive whole number, got 'x'/);
    assertOneLineError(run('--suite', 'synth-linear', '--init', 'random', '--fraction', '101'), /--fraction must be a percentage in \(0, 100\]/);
    // A directory that is not a SynthCXR data set: the task data names what it looked for.
    assertOneLineError(
      run('--suite', 'synth-linear', '--init', 'random', '--data', work, '--image-size', '64'),
      /no SynthCXR task annotations for task synth-seg: looked for synth-annotations.json/,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test.run();
