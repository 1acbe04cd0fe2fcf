// Training on the GPU, in process, on a model small enough for lavapipe: exact
// resume, the NaN stop, --init weights, and the `lovt-run loss` evaluation.
// The command-line side is test/gpu/cli-train.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { NodeFileSource, writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { nodeStorage } from '../../runtime/platform/node-storage.ts';
import { readSafetensors, type HostTensor } from '../../runtime/safetensors.ts';
import { loadCheckpoint } from '../../runtime/train/checkpoint.ts';
import { openTrainingData, type TrainingData } from '../../runtime/train/data-setup.ts';
import { readMetrics } from '../../runtime/train/metrics.ts';
import { NonFiniteError, Trainer, type CompiledModel } from '../../runtime/train/trainer.ts';
import { evaluateLosses } from '../../runtime/train/evaluate.ts';
import { exportPrefixed, matchInitWeights } from '../../runtime/train/weights.ts';

const work = mkdtempSync(path.join(tmpdir(), 'lovt-train-'));

const modelPath = fileURLToPath(new URL('./tiny-clip.lovt', import.meta.url));
const dataDir = path.join(work, 'synth');

let data: TrainingData;
let set: Record<string, string>;

function compileBoth(extra: Record<string, string> = {}): { train: CompiledModel; eval: CompiledModel } {
  const s = { ...set, ...extra };
  return {
    train: compileModelOrThrow({ path: modelPath }, { mode: 'train', set: s }),
    eval: compileModelOrThrow({ path: modelPath }, { mode: 'eval', set: s }),
  };
}

async function train(runDir: string, opts: { maxSteps?: number; resume?: boolean; extraSet?: Record<string, string> } = {}) {
  const storage = nodeStorage(runDir);
  const models = compileBoth(opts.extraSet);
  const trainer = await Trainer.create({
    device: await getNodeDevice(),
    storage,
    ...models,
    data,
    modelPath,
    set: { ...set, ...opts.extraSet },
    dataInfo: { spec: 'test' },
    maxSteps: opts.maxSteps,
    resume: opts.resume ? await loadCheckpoint(storage, 'last') : null,
  });
  try {
    return { trainer, result: await trainer.run(), state: await trainer.downloadState() };
  } finally {
    trainer.destroy();
  }
}

test.before(async () => {
  // 24 studies at 32 px, half of them in the validate split: 3 train batches of 4 (2 optimizer
  // steps per epoch with accumulate 2: a full one and the epoch-end one) and 2 validation batches.
  const s = await writeSynthDataset(dataDir, { studies: 24, seed: 3, imageSize: 32, splitFractions: [0.5, 0.5, 0] });
  set = { vocab_size: String(s.vocabSize) };
  data = await openTrainingData(new NodeFileSource(dataDir), { batch: 4, seed: 7, imageSize: 16, maxTokens: 16, maxSentences: 4 });
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test('resume at step k gives bit-identical weights, optimizer state and metrics at step n', async () => {
  const full = await train(path.join(work, 'full'), { maxSteps: 5 });
  assert.is(full.result.steps, 5);
  assert.match(full.result.stopReason, /reached 5 optimizer steps/);
  // Interrupted after step 1 (mid-epoch), then after step 3 (mid-epoch 2), then run to 5.
  const part = path.join(work, 'part');
  await train(part, { maxSteps: 1 });
  await train(part, { maxSteps: 3, resume: true });
  const resumed = await train(part, { maxSteps: 5, resume: true });
  assert.is(resumed.result.steps, 5);
  assert.equal([...resumed.state.keys()], [...full.state.keys()]);
  assert.ok(
    [...full.state.keys()].some((k) => k.startsWith('optim.')),
    'optimizer moments are checkpointed',
  );
  for (const [name, t] of full.state) {
    const r = resumed.state.get(name)!;
    const same = t.data.length === r.data.length && t.data.every((v, i) => Object.is(v, r.data[i]));
    assert.ok(same, `state ${name} differs after resume`);
  }
  const strip = (rs: Awaited<ReturnType<typeof readMetrics>>) => rs.map(({ samples_per_s: _, ...r }) => r);
  assert.equal(strip(await readMetrics(nodeStorage(part))), strip(await readMetrics(nodeStorage(path.join(work, 'full')))));
  const val = (await readMetrics(nodeStorage(part))).filter((r) => r.kind === 'val');
  assert.is(val.length, 2, 'a validation at each of the 2 epoch ends');
  const best = await loadCheckpoint(nodeStorage(part), 'best');
  assert.is(best.manifest.step, resumed.result.bestValidation!.step);
});

test('a NaN/inf anywhere stops the run naming the step and the first such tensor; nothing of it is applied; the last good checkpoint stays', async () => {
  const dir = path.join(work, 'nan');
  const storage = nodeStorage(dir);
  // An absurd LR: Adam's first update moves every weight by ~1e30; the next forward overflows.
  const extra = { 'train.optimizer.lr': '1e30' };
  const trainer = await Trainer.create({
    device: await getNodeDevice(),
    storage,
    ...compileBoth(extra),
    data,
    modelPath,
    set: { ...set, ...extra },
    dataInfo: { spec: 'test' },
    maxSteps: 4,
    checkpointEvery: 1,
  });
  let err: unknown;
  try {
    await trainer.run();
  } catch (e) {
    err = e;
  }
  try {
    assert.instance(err, NonFiniteError);
    const e = err as NonFiniteError;
    assert.ok(e.step >= 2, `diverged at step ${e.step}`);
    assert.match(
      e.message,
      new RegExp(
        `^at optimizer step ${e.step} \\(epoch \\d+(, micro-batch \\d of 2, samples [^)]+)?\\): .+; (nothing of this step was applied|the update was not applied) and training stopped\\. The last good checkpoint is step ${e.step - 1} \\(`,
      ),
    );
    assert.ok(e.message.includes(e.tensor));
    // The device refused the step: the weights and optimizer state are those of the last good step, bit for bit.
    const last = await loadCheckpoint(storage, 'last');
    assert.is(last.manifest.step, e.step - 1);
    const state = await trainer.downloadState();
    for (const [name, t] of last.tensors) {
      assert.ok(t.data.every(Number.isFinite), `the kept checkpoint is finite (${name})`);
      if (model(name).trainable || name.startsWith('optim.'))
        assert.equal(Array.from(state.get(name)!.data), Array.from(t.data), `${name} is the last good step's`);
    }
    for (const [name, t] of state) assert.ok(t.data.every(Number.isFinite), `${name} stays finite on the device`);
    const events = (await readMetrics(storage)).filter((r) => r.kind === 'event');
    assert.equal(
      events.map((r) => [r.step, r.event, r.tensor]),
      [[e.step, 'non-finite', e.tensor]],
    );
  } finally {
    trainer.destroy();
  }
  function model(name: string) {
    return compileBoth().train.graph.state[name] ?? { trainable: false };
  }
});

test('a NaN validation loss stops the run as non-finite (not "no improvement"); no checkpoint replaces the last good one', async () => {
  const nanModel = fileURLToPath(new URL('./tiny-clip-nan-eval.lovt', import.meta.url));
  const dir = path.join(work, 'nan-validation');
  const storage = nodeStorage(dir);
  const compiled = (mode: 'train' | 'eval') => compileModelOrThrow({ path: nanModel }, { mode, set });
  const trainer = await Trainer.create({
    device: await getNodeDevice(),
    storage,
    train: compiled('train'),
    eval: compiled('eval'),
    data,
    modelPath: nanModel,
    set,
    dataInfo: { spec: 'test' },
  });
  let err: unknown;
  try {
    await trainer.run();
  } catch (e) {
    err = e;
  } finally {
    trainer.destroy();
  }
  assert.instance(err, NonFiniteError);
  // 2 optimizer steps in epoch 1, then the validation: the run stops there, with the step-0 checkpoint kept.
  assert.match(
    (err as Error).message,
    /^validation at the end of epoch 1 \(step 2\): val_(total|i2r) is NaN; training stopped\. The last good checkpoint is step 0 \(/,
  );
  assert.is((await loadCheckpoint(storage, 'last')).manifest.step, 0);
  assert.not.ok(await storage.exists('best.json'));
  const records = await readMetrics(storage);
  assert.equal(
    records.map((r) => r.kind),
    ['train', 'train', 'event'],
  );
});

test('evaluateLosses: training-mode losses without dropout, gradients, and named mismatches', async () => {
  const { train: model } = compileBoth();
  const ckpt = await loadCheckpoint(nodeStorage(path.join(work, 'full')), 'last');
  const weights = new Map([...ckpt.tensors].filter(([k]) => !k.startsWith('optim.')));
  const first = (await data.validate!.epoch(0).next()).value!.batch;
  const batch = new Map<string, HostTensor>(Object.entries(first.inputs));
  const device = await getNodeDevice();
  const a = await evaluateLosses(device, model, weights, batch, { grads: true });
  const b = await evaluateLosses(device, model, weights, batch);
  assert.equal(Object.keys(a.losses), ['total', 'i2r', 'r2i']);
  assert.is(a.losses.total, b.losses.total, 'no dropout: the same losses with and without the backward pass');
  assert.ok(Math.abs(a.losses.total - (0.75 * a.losses.i2r + 0.25 * a.losses.r2i)) < 1e-5);
  assert.equal(
    [...a.grads!.keys()].sort(),
    Object.values(model.graph.state)
      .filter((s) => s.trainable)
      .map((s) => s.name)
      .sort(),
  );
  assert.ok([...a.grads!.values()].some((g) => g.data.some((v) => v !== 0)));

  const bad = new Map(weights);
  bad.delete('image_proj.bias');
  bad.set('image_bn.weight', { dtype: 'f32', shape: [9], data: new Float32Array(9) });
  bad.set('extra.weight', { dtype: 'f32', shape: [1], data: new Float32Array(1) });
  let msg = '';
  try {
    await evaluateLosses(device, model, bad, batch, { weightsName: 'W.safetensors' });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert.match(
    msg,
    /^W\.safetensors does not match the model's state: missing 1 .*image_proj\.bias; unexpected 1 .*extra\.weight; mis-shaped 1: image_bn\.weight \[9\] vs model \[8\]/,
  );
  const noIds = new Map(batch);
  noIds.delete('input_ids');
  msg = '';
  try {
    await evaluateLosses(device, model, weights, noIds, { batchName: 'X.safetensors' });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert.match(msg, /^X\.safetensors does not match the model's inputs: missing 1 \(model inputs not in the file\): input_ids/);
});

test('--init weights (an export of another run) are what the run starts from', async () => {
  const exported = exportPrefixed((await loadCheckpoint(nodeStorage(path.join(work, 'full')), 'last')).tensors, 'image_encoder');
  const { train: model } = compileBoth();
  const { tensors } = matchInitWeights(model.graph.state, 'image_encoder', readSafetensors(exported).tensors, 'exported');
  const storage = nodeStorage(path.join(work, 'init'));
  const trainer = await Trainer.create({
    device: await getNodeDevice(),
    storage,
    ...compileBoth(),
    data,
    modelPath,
    set,
    dataInfo: {},
    init: tensors,
  });
  try {
    const state = await trainer.downloadState();
    assert.equal([...tensors.keys()].sort(), ['image_encoder.bias', 'image_encoder.weight']);
    for (const [name, t] of tensors) assert.equal(Array.from(state.get(name)!.data), Array.from(t.data), name);
    // The step-0 checkpoint holds them too.
    const step0 = await loadCheckpoint(storage, 'last');
    assert.is(step0.manifest.step, 0);
    assert.equal(Array.from(step0.tensors.get('image_encoder.weight')!.data), Array.from(tensors.get('image_encoder.weight')!.data));
  } finally {
    trainer.destroy();
  }
});

test.run();
