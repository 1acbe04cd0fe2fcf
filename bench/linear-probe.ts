// The frozen-feature linear probe row of `npm run bench`: samples/s of LinearSegmentation
// (models/eval/segmentation.lovt) trained by the evaluation's head trainer
// (runtime/eval/head-trainer.ts) on a random ResNet-18 (width 32) encoder's cached layer4
// features of the SynthCXR segmentation task (200 studies, 128 px), as `lovt-run eval`
// trains it: batch 8, Adam, one step program and one apply program per batch with the loss
// and the NaN/inf counts read back. Feature caching, compilation and the validation passes
// are not timed (the row counts training steps only).

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileModelOrThrow } from '../compiler/frontend/index.ts';
import type { LovtDevice } from '../runtime/device.ts';
import { HeadTrainer, randomEncoder } from '../runtime/eval/head-trainer.ts';
import { openSynthTask, synthTaskSpec } from '../runtime/eval/synth-tasks.ts';
import { EVAL_TASKS } from '../runtime/eval/tasks.ts';
import { NodeFileSource } from '../runtime/platform/node-fs.ts';
import { cacheRoot, ensureSynthDataset } from '../runtime/platform/node-storage.ts';

const EVAL_DIR = fileURLToPath(new URL('../models/eval/', import.meta.url));

export interface LinearProbeResult {
  samplesPerSecond: number;
  batch: number;
  steps: number;
  epochs: number;
  trainSeconds: number;
  data: string;
}

/** A first run compiles, caches the features and warms up; a second (seed 1) of max(2, --runs) epochs at LR 1e-2 is timed. */
export async function linearProbeThroughput(device: LovtDevice, opts: { runs: number }): Promise<LinearProbeResult> {
  const synth = await ensureSynthDataset(cacheRoot(), { studies: 200, seed: 0, imageSize: 128 });
  const data = await openSynthTask(new NodeFileSource(synth.dir), synthTaskSpec('synth-seg'), { imageSize: 128 });
  const task = { ...EVAL_TASKS['synth-seg-linear'], stopPatience: 1000 };
  const make = (maxEpochs: number) =>
    new HeadTrainer({
      device,
      compile: (file, model, set, mode) => compileModelOrThrow({ path: path.join(EVAL_DIR, file) }, { model, set, mode }),
      tasks: [task],
      encoders: [randomEncoder()],
      data: new Map([['synth-seg', data]]),
      maxEpochs,
    });
  const epochs = Math.max(2, opts.runs);
  const trainer = make(epochs);
  try {
    await trainer.trainOne({ task: task.name, encoder: 'random', lr: 1e-2, seed: 0, phase: 'seed' }); // compiles, caches, warms up
    const r = await trainer.trainOne({ task: task.name, encoder: 'random', lr: 1e-2, seed: 1, phase: 'seed' });
    const steps = r.steps as number;
    const trainSeconds = r.trainSeconds as number;
    return {
      samplesPerSecond: (steps * task.batch) / trainSeconds,
      batch: task.batch,
      steps,
      epochs: r.epochs as number,
      trainSeconds,
      data: data.description,
    };
  } finally {
    trainer.destroy();
  }
}
