// The lovt-tiny throughput row of `npm run bench`: samples/s of
// models/lovt-tiny.lovt trained end to end by the real trainer
// (runtime/train/trainer.ts) on a generated SynthCXR, so image decoding,
// augmentation, tokenisation and batching count, as in `lovt-run train`.
// The recipe is the demo's (`lovt-run demo`): accumulate = 1, so every
// optimizer step is one batch. The first steps are warm-up (on a cold Mesa
// shader cache the first step also compiles the pipelines, ~100 s on lavapipe)
// and not timed; the timed steps all fall in the first epoch, before any
// validation or epoch-end checkpoint.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { LovtDevice } from '../runtime/device.ts';
import { ReportTokenizer } from '../runtime/data/tokenizer.ts';
import { NodeFileSource } from '../runtime/platform/node-fs.ts';
import { cacheRoot, ensureSynthDataset, nodeStorage } from '../runtime/platform/node-storage.ts';
import { DEFAULT_VOCAB, openTrainingData, type TrainingData } from '../runtime/train/data-setup.ts';
import { DROPOUT_SEED_INPUT, programInputs, Trainer } from '../runtime/train/trainer.ts';
import { Program } from '../runtime/executor.ts';
import { initState } from '../runtime/init.ts';
import { StateStore } from '../runtime/state.ts';
import { applyInputs, compile, trainingGraphs, type Compiled } from './model.ts';

export const LOVT_TINY_FILE = 'models/lovt-tiny.lovt';
/** SynthCXR size: enough train studies that warm-up + timed steps stay inside one epoch. */
const STUDIES = 200;

export interface ThroughputResult {
  samplesPerSecond: number;
  /** Median wall time of one timed optimizer step (one batch), data loading included. */
  medianStepMs: number;
  /** The step and apply programs alone on one fixed batch, until the queue is idle: median ms (no data loading, no read-back). */
  deviceStepMs: number;
  /** The same without the NaN/inf checks (TrainingOptions.finiteChecks false), timed interleaved with deviceStepMs: what finite-or-stop costs. */
  uncheckedDeviceStepMs: number;
  batch: number;
  warmupSteps: number;
  timedSteps: number;
  data: string;
}

export async function lovtTinyThroughput(device: LovtDevice, opts: { warmup: number; runs: number }): Promise<ThroughputResult> {
  const synth = await ensureSynthDataset(cacheRoot(), { studies: STUDIES, seed: 0, imageSize: 128 });
  const source = new NodeFileSource(synth.dir);
  const tokenizer = await ReportTokenizer.load(source, DEFAULT_VOCAB);
  const set = { vocab_size: String(tokenizer.vocabSize), 'train.accumulate': '1', 'train.optimizer.lr': '1e-3' };
  const train = compile(LOVT_TINY_FILE, 'train', set);
  const evalModel = compile(LOVT_TINY_FILE, 'eval', set);
  const config = (name: string) => train.model.configs[name].value as number;
  const batch = config('batch');
  const data = await openTrainingData(source, {
    batch,
    seed: train.model.train.seed,
    imageSize: config('image_size'),
    maxTokens: config('max_tokens'),
    maxSentences: config('max_sentences'),
    vocab: tokenizer,
  });
  const warmupSteps = Math.max(1, opts.warmup);
  const totalSteps = warmupSteps + Math.max(2, opts.runs);
  // Step ends on the host clock: a step's time is from the previous step's end (the first: the warm-up's last).
  const ends: number[] = [];
  let stepsPerEpoch = Infinity;
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'lovt-bench-'));
  try {
    const trainer = await Trainer.create({
      device,
      storage: nodeStorage(runDir),
      train,
      eval: evalModel,
      data,
      modelPath: LOVT_TINY_FILE,
      set,
      dataInfo: { kind: 'synth', dir: synth.dir },
      maxSteps: totalSteps,
      onEvent: (e) => {
        if (e.kind === 'start') stepsPerEpoch = e.stepsPerEpoch;
        if (e.kind === 'step') ends.push(performance.now());
      },
    });
    try {
      await trainer.run();
    } finally {
      trainer.destroy();
    }
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
  if (stepsPerEpoch < totalSteps)
    throw new Error(`${STUDIES} SynthCXR studies give ${stepsPerEpoch} steps per epoch, fewer than the ${totalSteps} the row runs`);
  const timed = ends.slice(warmupSteps - 1);
  const stepMs = timed.slice(1).map((t, i) => t - timed[i]);
  const seconds = (timed[timed.length - 1] - timed[0]) / 1000;
  return {
    samplesPerSecond: (batch * stepMs.length) / seconds,
    medianStepMs: median(stepMs),
    ...(await deviceStepMs(device, train, data, Math.max(2, opts.runs))),
    batch,
    warmupSteps,
    timedSteps: stepMs.length,
    data: `SynthCXR ${STUDIES} studies, 128 px, ${data.description}`,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/**
 * The device-only step time: the trainer's step and apply programs (their
 * pipelines are cached by now) on the first training batch, repeated; and the
 * same programs without the finiteness checks, each run right after the
 * checked one so that both see the same machine load.
 */
async function deviceStepMs(
  device: LovtDevice,
  train: Compiled,
  data: TrainingData,
  runs: number,
): Promise<{ deviceStepMs: number; uncheckedDeviceStepMs: number }> {
  let batch;
  for await (const loaded of data.train.epoch(0)) {
    batch = loaded.batch;
    break;
  }
  if (!batch) throw new Error('the training data gave no batch');
  const variants = await Promise.all(
    [true, false].map(async (finiteChecks) => {
      const { step, apply, optimizer } = trainingGraphs(train, { finiteChecks });
      const store = new StateStore(device);
      const stepProgram = await Program.create(device, step, store, { label: 'step' });
      const applyProgram = await Program.create(device, apply, store, { label: 'apply' });
      for (const [name, value] of Object.entries(initState(train.graph, 1))) store.upload(name, value);
      const inputs = programInputs(step, batch, { [DROPOUT_SEED_INPUT]: Int32Array.of(1) });
      const times: number[] = [];
      const destroy = () => {
        stepProgram.destroy();
        applyProgram.destroy();
        store.destroy();
      };
      return { stepProgram, applyProgram, optimizer, inputs, times, destroy };
    }),
  );
  try {
    for (let t = 1; t <= runs + 1; t++) {
      for (const v of variants) {
        const t0 = performance.now();
        await v.stepProgram.run(v.inputs, []);
        await v.applyProgram.run(applyInputs(t, train.model.train.optimizer.lr, v.optimizer), []);
        await device.device.queue.onSubmittedWorkDone();
        if (t > 1) v.times.push(performance.now() - t0); // the first run binds fresh buffers
      }
    }
    return { deviceStepMs: median(variants[0].times), uncheckedDeviceStepMs: median(variants[1].times) };
  } finally {
    for (const v of variants) v.destroy();
  }
}
