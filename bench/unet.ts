// The U-Net row of `npm run bench`: samples/s of one training step of the
// fine-tune U-Net head (models/eval/segmentation.lovt UNetFinetune: the ResNet-18
// width-32 encoder and the decoder, BatchNorm in training mode, Dice loss, Adam)
// at batch 8 and 128 px. The step program (forward + backward) and the apply
// program (Adam) run on one fixed random batch, uploaded every step, and are
// timed until the queue is idle; `warmup` steps (pipeline compilation) are not
// timed. The step's numerics are checked by test/gpu/eval-heads.test.ts.

import { performance } from 'node:perf_hooks';
import { Rng } from '../compiler/random.ts';
import type { LovtDevice } from '../runtime/device.ts';
import { Program } from '../runtime/executor.ts';
import { initState } from '../runtime/init.ts';
import { StateStore } from '../runtime/state.ts';
import { applyInputs, compile, trainingGraphs } from './model.ts';

export const UNET_ROW = 'U-Net training step';
const FILE = 'models/eval/segmentation.lovt';
const MODEL = 'UNetFinetune';
const BATCH = 8;
const IMAGE_SIZE = 128;

export interface UNetStepResult {
  samplesPerSecond: number;
  medianStepMs: number;
  batch: number;
  imageSize: number;
  model: string;
  warmupSteps: number;
  timedSteps: number;
  /** The loss after the last step: finite, or the row is refused. */
  finalLoss: number;
}

export async function unetStep(device: LovtDevice, opts: { warmup: number; runs: number }): Promise<UNetStepResult> {
  const train = compile(FILE, 'train', { batch: String(BATCH), image_size: String(IMAGE_SIZE), resnet: 'resnet18', resnet_width: '32' }, MODEL);
  const { step, apply, optimizer } = trainingGraphs(train);
  const store = new StateStore(device);
  const stepProgram = await Program.create(device, step, store, { label: 'step' });
  const applyProgram = await Program.create(device, apply, store, { label: 'apply' });
  try {
    for (const [name, value] of Object.entries(initState(train.graph, 1))) store.upload(name, value);
    const rng = new Rng(1);
    const pixels = BATCH * IMAGE_SIZE * IMAGE_SIZE;
    const inputs = {
      image: Float32Array.from({ length: 3 * pixels }, () => rng.normal()),
      mask: Float32Array.from({ length: pixels }, () => (rng.uniform() < 0.2 ? 1 : 0)),
    };
    const warmup = Math.max(1, opts.warmup);
    const times: number[] = [];
    let loss = NaN;
    for (let t = 1; t <= warmup + opts.runs; t++) {
      const last = t === warmup + opts.runs;
      const t0 = performance.now();
      const out = await stepProgram.run(inputs, last ? ['loss.total'] : []);
      await applyProgram.run(applyInputs(t, train.model.train.optimizer.lr, optimizer), []);
      await device.device.queue.onSubmittedWorkDone();
      if (t > warmup) times.push(performance.now() - t0);
      if (last) loss = out['loss.total'][0];
    }
    if (!Number.isFinite(loss)) throw new Error(`${UNET_ROW}: the loss after ${warmup + opts.runs} steps is ${loss}`);
    const medianStepMs = [...times].sort((a, b) => a - b)[times.length >> 1];
    return {
      samplesPerSecond: (1000 * BATCH) / medianStepMs,
      medianStepMs,
      batch: BATCH,
      imageSize: IMAGE_SIZE,
      model: MODEL,
      warmupSteps: warmup,
      timedSteps: times.length,
      finalLoss: loss,
    };
  } finally {
    stepProgram.destroy();
    applyProgram.destroy();
    store.destroy();
  }
}
