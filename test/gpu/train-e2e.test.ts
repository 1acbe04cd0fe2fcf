// A real model trained end to end on the device and checked against the float64
// reference interpreter: models/lovt-tiny.lovt and models/clip-tiny.lovt, shrunk
// by config overrides, take two optimizer steps through the trainer `lovt-run
// train` uses (step and apply programs fused, memory-planned, updating state in
// place), on SynthCXR batches with augmentation (done on the host: both sides
// see the same batch) and dropout (counter-based masks, compiler/random.ts, that
// the reference draws identically). The reference evaluates the very step and
// apply graphs the device compiled, with the same batches, dropout seeds and LR,
// and every loss term of both steps and every state tensor after each step
// (weights, BatchNorm statistics, Adam moments) is compared.
//
// Each step is compared from the same state: step 1 from the initial weights,
// step 2 from the device's own state after step 1 (the run resumes from its
// step-1 checkpoint). Two steps in a row would not compare: Adam's first update
// is ±lr for any gradient above eps, so a gradient that is zero in exact
// arithmetic (a bias before BatchNorm, an attention key bias) steps by ±lr in
// whichever direction its f32 rounding noise points, and step 2 starts elsewhere.
//
// Tolerances, with U = 2^-24 the f32 unit roundoff:
//  - a value of the step graph (a loss, a BatchNorm statistic, a gradient) may be
//    off by 2·U·D·S per micro-batch: D is the length of the longest chain of ops
//    that computes it (one rounding of the running magnitude per op, doubled for
//    the sums inside ops), S its magnitude: the tensor's largest |value|. For a
//    gradient S is the largest gradient of its layer (the tensors of the same
//    module), since a gradient that cancels to zero is rounding noise of the terms
//    that cancel, and the budget is 4·U·D·S: rounding scales with the terms summed
//    over the batch, which in a contrastive loss's gradient exceed their sum;
//  - a value of the apply program (a weight, an Adam moment) may be off by the
//    spread of the float64 apply program's output when its gradient input moves
//    by that gradient tolerance (≈ lr where a gradient's sign is within its
//    rounding noise, far less elsewhere), plus the apply program's own rounding:
//    2·U·D times the change it makes, and 2·U times the value (the final store).
// The test also checks that these bounds are tight enough to fail a 1% error in
// one tensor's update, a 0.1% error in one Adam moment and a 1e-4 error in a loss.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildTrainingPrograms, gradAccName, optimizerScalars, optimStateName, type TrainingPrograms } from '../../compiler/train-program.ts';
import { evaluate } from '../../compiler/reference.ts';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { NodeFileSource, writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { nodeStorage } from '../../runtime/platform/node-storage.ts';
import { loadCheckpoint } from '../../runtime/train/checkpoint.ts';
import { openTrainingData } from '../../runtime/train/data-setup.ts';
import { DROPOUT_SEED_INPUT, dropoutSeed, optimizerOptions, programInputs, Trainer } from '../../runtime/train/trainer.ts';
import { MODELS, compile, type Compiled } from '../nodevice/model-helpers.ts';
import { initialTrainingState, opDepths } from './reference-check.ts';

const U = 2 ** -24;
const STEPS = 2;
// Small enough for the float64 interpreter (a few seconds per model): 64 px images (a 2×2
// region grid), batch 4 (at batch 2 the heads' BatchNorm sees 2 samples: x̂ = ±1 up to eps,
// and its backward pass cancels to f32 noise), reports of up to 4 sentences, a narrow
// ResNet-18 and BERT, 2 micro-batches per optimizer step.
const SET = {
  batch: 4,
  image_size: 64,
  max_tokens: 32,
  max_sentences: 4,
  bert_max_position: 32,
  resnet_width: 8,
  bert_hidden: 32,
  bert_intermediate: 64,
  projection_hidden: 32,
  projection_dim: 16,
  'train.accumulate': 2,
};

const work = mkdtempSync(path.join(tmpdir(), 'lovt-train-e2e-'));
const dataDir = path.join(work, 'synth');
let vocabSize = 0;

test.before(async () => {
  // 20 train studies: 5 batches of 4, so both steps (4 micro-batches) fall in epoch 0.
  vocabSize = (await writeSynthDataset(dataDir, { studies: 20, seed: 5, imageSize: 64, splitFractions: [1, 0, 0] })).vocabSize;
});

test.after(() => rmSync(work, { recursive: true, force: true }));

type State = Record<string, Float64Array>;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

const layerOf = (param: string) => param.slice(0, param.lastIndexOf('.'));

interface Expected {
  losses: Record<string, { value: number; tol: number }>;
  /** The state after the step and each tensor's per-element tolerance. */
  state: State;
  tol: State;
}

/**
 * One optimizer step on the float64 reference from `before`: the step graph on each
 * micro-batch, then the apply graph, with the tolerances described at the top.
 */
function referenceStep(
  { step, apply }: TrainingPrograms,
  before: State,
  micro: Record<string, ArrayLike<number>>[],
  scalars: Record<string, number>,
): Expected {
  const dStep = opDepths(step);
  const dApply = opDepths(apply);
  const losses: Expected['losses'] = {};
  let state = before;
  for (const inputs of micro) {
    const ev = evaluate(step, { inputs, state });
    for (const [name, id] of Object.entries(step.outputs)) {
      if (!name.startsWith('loss.')) continue;
      const v = ev.outputs[name][0];
      const l = (losses[name] ??= { value: 0, tol: 0 });
      l.value += v / micro.length;
      l.tol += (2 * U * dStep[id] * Math.abs(v)) / micro.length;
    }
    state = { ...state, ...ev.updates };
  }
  const tol: State = {};
  const perStepValue = (name: string, scale: number, roundings = 2) => roundings * U * dStep[step.updates[name]] * scale * micro.length;
  for (const name of Object.keys(step.updates)) tol[name] = new Float64Array(state[name].length).fill(perStepValue(name, maxAbs(state[name])));

  // Gradient tolerances, and the apply program at the gradients moved by ± them.
  const params = Object.values(step.state)
    .filter((s) => s.trainable)
    .map((s) => s.name);
  const layerScale = new Map<string, number>();
  for (const p of params) layerScale.set(layerOf(p), Math.max(layerScale.get(layerOf(p)) ?? 0, maxAbs(state[gradAccName(p)])));
  const gradTol = new Map(params.map((p) => [p, perStepValue(gradAccName(p), layerScale.get(layerOf(p))!, 4)]));
  const applyAt = (sign: number) => {
    const shifted = { ...state };
    for (const p of params) shifted[gradAccName(p)] = state[gradAccName(p)].map((g) => g + sign * gradTol.get(p)!);
    return evaluate(apply, { inputs: scalars, state: shifted }).updates;
  };
  const [mid, plus, minus] = [applyAt(0), applyAt(1), applyAt(-1)];
  for (const [name, id] of Object.entries(apply.updates)) {
    const t = new Float64Array(mid[name].length);
    for (let i = 0; i < t.length; i++)
      t[i] =
        Math.max(Math.abs(plus[name][i] - mid[name][i]), Math.abs(minus[name][i] - mid[name][i])) +
        2 * U * (dApply[id] * Math.abs(mid[name][i] - state[name][i]) + Math.max(Math.abs(mid[name][i]), Math.abs(state[name][i])));
    tol[name] = t;
  }
  return { losses, state: { ...state, ...mid }, tol };
}

/** Every loss, and every tensor with elements outside their tolerance (naming its worst). */
function mismatches(expected: Expected, losses: Record<string, number>, state: Map<string, HostTensor>): string[] {
  const out: string[] = [];
  const lossNames = Object.keys(expected.losses).sort();
  if (JSON.stringify(Object.keys(losses).sort()) !== JSON.stringify(lossNames)) out.push(`loss terms ${Object.keys(losses)} vs ${lossNames}`);
  for (const name of lossNames) {
    const { value, tol } = expected.losses[name];
    const d = Math.abs(losses[name] - value);
    if (!(d <= tol)) out.push(`${name}: device ${losses[name]}, float64 ${value} (|diff| ${d.toExponential(2)} > ${tol.toExponential(2)})`);
  }
  const names = Object.keys(expected.state)
    .filter((n) => !n.startsWith('grad_acc.'))
    .sort();
  if (JSON.stringify([...state.keys()].sort()) !== JSON.stringify(names))
    out.push(`state names differ: device ${[...state.keys()].length}, float64 ${names.length}`);
  for (const name of names) {
    const got = state.get(name)?.data;
    const want = expected.state[name];
    const tol = expected.tol[name]; // undefined: a tensor no program writes stays bit-identical
    if (!got) continue;
    let bad = 0,
      worst = -1,
      worstRatio = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      const t = tol ? tol[i] : 0;
      if (!(d <= t)) {
        bad++;
        const ratio = t > 0 ? d / t : Infinity;
        if (worst < 0 || ratio > worstRatio) [worst, worstRatio] = [i, ratio];
      }
    }
    if (bad)
      out.push(
        `${name}: ${bad} of ${want.length} elements off, e.g. [${worst}] device ${got[worst]}, float64 ${want[worst]} (tolerance ${tol?.[worst].toExponential(2) ?? 0})`,
      );
  }
  return out;
}

const asFloat64 = (state: Map<string, HostTensor>): State => Object.fromEntries([...state].map(([k, t]) => [k, Float64Array.from(t.data)]));

async function trainAndCompare(file: string, mutated: { update: string; moment: string }) {
  const set = Object.fromEntries(Object.entries({ ...SET, vocab_size: vocabSize }).map(([k, v]) => [k, String(v)]));
  const train: Compiled = compile({ file }, { mode: 'train', set });
  const spec = train.model.train;
  const config = (name: string) => train.model.configs[name].value as number;
  const data = await openTrainingData(new NodeFileSource(dataDir), {
    batch: config('batch'),
    seed: spec.seed,
    imageSize: config('image_size'),
    maxTokens: config('max_tokens'),
    maxSentences: config('max_sentences'),
    reportText: train.model.configs.report_text?.value,
  });
  try {
    // The device: step 1, then step 2 resumed from the step-1 checkpoint.
    const models = { train, eval: compile({ file }, { mode: 'eval', set }) };
    const storage = nodeStorage(path.join(work, file));
    const steps: { losses: Record<string, number>; lr: number; state: Map<string, HostTensor> }[] = [];
    for (let maxSteps = 1; maxSteps <= STEPS; maxSteps++) {
      let event: { losses: Record<string, number>; lr: number } | undefined;
      const trainer = await Trainer.create({
        device: await getNodeDevice(),
        storage,
        ...models,
        data,
        modelPath: path.join(MODELS, file),
        set,
        dataInfo: {},
        maxSteps,
        resume: maxSteps > 1 ? await loadCheckpoint(storage, 'last') : null,
        onEvent: (e) => void (e.kind === 'step' && (event = e)),
      });
      try {
        await trainer.run();
        steps.push({ ...event!, state: await trainer.downloadState() });
      } finally {
        trainer.destroy();
      }
    }

    // The reference: the programs the trainer built, the same batches (epoch 0) and dropout seeds.
    const optimizer = optimizerOptions(spec.optimizer);
    const programs = buildTrainingPrograms(train.graph, { loss: 'loss.total', optimizer, accumulate: spec.accumulate });
    const batches = data.train.epoch(0)[Symbol.asyncIterator]();
    let before = initialTrainingState(train.graph, [programs.step, programs.apply], spec.seed);
    for (const [t, got] of steps.entries()) {
      const micro: Record<string, ArrayLike<number>>[] = [];
      for (let m = 0; m < spec.accumulate; m++) {
        const { batch } = (await batches.next()).value!;
        micro.push(programInputs(programs.step, batch, { [DROPOUT_SEED_INPUT]: Int32Array.of(dropoutSeed(spec.seed, t, m)) }));
      }
      const expected = referenceStep(programs, before, micro, optimizerScalars(t + 1, got.lr, optimizer));
      const bad = mismatches(expected, got.losses, got.state);
      assert.ok(bad.length === 0, `${file}, optimizer step ${t + 1}: ${bad.length} mismatches with the float64 reference:\n  ${bad.slice(0, 12).join('\n  ')}`);

      // The same check fails a 1% error in one tensor's update, 0.1% in one Adam moment, 1e-4 in a loss.
      const wrong = (name: string, f: (v: number, i: number) => number) => {
        const copy = new Map(got.state);
        copy.set(name, { ...got.state.get(name)!, data: Float32Array.from(got.state.get(name)!.data, f) } as HostTensor);
        return copy;
      };
      const start = before[mutated.update];
      const updateOff = mismatches(
        expected,
        got.losses,
        wrong(mutated.update, (v, i) => start[i] + 1.01 * (v - start[i])),
      );
      assert.ok(
        updateOff.some((m) => m.startsWith(`${mutated.update}:`)),
        `a 1% error in ${mutated.update}'s update goes unnoticed`,
      );
      const momentOff = mismatches(
        expected,
        got.losses,
        wrong(mutated.moment, (v) => v * 1.001),
      );
      assert.ok(
        momentOff.some((m) => m.startsWith(`${mutated.moment}:`)),
        `a 0.1% error in ${mutated.moment} goes unnoticed`,
      );
      const lossOff = mismatches(expected, { ...got.losses, 'loss.total': got.losses['loss.total'] * (1 + 1e-4) }, got.state);
      assert.ok(
        lossOff.some((m) => m.startsWith('loss.total:')),
        'a 1e-4 error in the total loss goes unnoticed',
      );

      before = {
        ...asFloat64(got.state),
        ...Object.fromEntries(
          Object.keys(before)
            .filter((k) => k.startsWith('grad_acc.'))
            .map((k) => [k, new Float64Array(before[k].length)]),
        ),
      };
    }
    await batches.return?.(undefined);
  } finally {
    await data.close();
  }
}

test('lovt-tiny: two optimizer steps on the device match the float64 reference (every loss term, weight, BatchNorm statistic and Adam moment)', async () => {
  await trainAndCompare('lovt-tiny.lovt', {
    update: 'image_encoder.layer1.0.conv1.weight',
    moment: optimStateName('alignment.key_projection.weight', 'exp_avg'),
  });
});

test('clip-tiny: two optimizer steps on the device match the float64 reference', async () => {
  await trainAndCompare('clip-tiny.lovt', {
    update: 'report_encoder.encoder.layer.1.attention.self.query.weight',
    moment: optimStateName('image_encoder.layer4.1.conv2.weight', 'exp_avg_sq'),
  });
});

test.run();
