// The training loop: micro-batches through the step program (forward + backward,
// gradients summed into grad_acc.*), one apply program run per optimizer step
// (PyTorch's optimizer update, LR from the schedule), validation with the
// eval-mode program at every epoch end, early stopping, and checkpoints.
//
// Epochs follow PyTorch Lightning's accumulate_grad_batches: an epoch has
// ceil(batches / accumulate) optimizer steps, the last one with the micro-batches
// that are left (its gradient is still divided by `accumulate`, as Lightning
// does). The cosine period "epoch" is that many steps.
//
// Resume is exact: everything random is a function of (seed, position) — the data
// order and augmentation of (seed, epoch, study), the dropout seed of (seed, optimizer
// step, micro-batch) — and a checkpoint holds every state tensor, the optimizer
// step, the data position and the schedule and early-stopping state. A run resumed
// at step k therefore computes bit-identical weights at step n to one that never
// stopped (given deterministic GPU kernels, which the codegen guarantees).
//
// Platform-neutral: the caller compiles the model, opens the data and provides the
// Storage of the run directory (runtime/platform/node-storage.ts on Node).

import { numel, type DType, type Graph } from '../../compiler/ir.ts';
import type { ModelInfo, TrainSpec } from '../../compiler/frontend/index.ts';
import {
  buildTrainingPrograms,
  gradAccName,
  NONFINITE_OUTPUT,
  optimizerOptions,
  optimizerScalars,
  type FiniteCheck,
  type TrainingPrograms,
} from '../../compiler/train-program.ts';
import { optimize } from '../../compiler/passes/index.ts';
import type { LovtDevice } from '../device.ts';
import { Program } from '../executor.ts';
import { initState } from '../init.ts';
import { StateStore } from '../state.ts';
import type { HostTensor } from '../safetensors.ts';
import { deriveSeed } from '../data/random.ts';
import type { LoaderPosition, LoadedBatch } from '../data/loader.ts';
import type { ModelBatch } from '../data/batch.ts';
import type { TrainingData } from './data-setup.ts';
import { saveCheckpoint, type CheckpointInfo, type CheckpointTag, type LoadedCheckpoint } from './checkpoint.ts';
import { EarlyStopping } from './early-stop.ts';
import { MetricsLog, Throughput, type MetricsRecord } from './metrics.ts';
import { createSchedule, plateauSpec, type LrSchedule, type ScheduleSpec } from './lr-schedule.ts';
import type { Storage } from './storage.ts';
import { describeDiff, diffTensors, hasDifferences } from './weights.ts';
import { existingRunMessage, newRunId } from './run-dir.ts';
import { checkBatchValues } from './inputs.ts';

/** A model compiled by the front end (compileModel's graph and model info). */
export interface CompiledModel {
  graph: Graph;
  model: ModelInfo;
}

export type TrainEvent =
  | { kind: 'start'; step: number; totalSteps: number | null; maxSeconds: number | null; stepsPerEpoch: number; epoch: number; resumed: boolean }
  | {
      kind: 'step';
      step: number;
      epoch: number;
      lr: number;
      losses: Record<string, number>;
      samplesPerSecond: number;
      elapsedSeconds: number;
    }
  | { kind: 'validation'; step: number; epoch: number; losses: Record<string, number>; improved: boolean }
  | { kind: 'checkpoint'; step: number; tags: CheckpointTag[] }
  | { kind: 'message'; text: string };

export interface TrainerOptions {
  device: LovtDevice;
  /** The run directory. */
  storage: Storage;
  /** The model compiled in train mode (its train section drives the run). */
  train: CompiledModel;
  /** The same model compiled in eval mode: validation losses and inspection outputs. */
  eval: CompiledModel;
  data: TrainingData;
  /** Recorded in checkpoints: the model file, the --set overrides and the data set. */
  modelPath: string;
  set: Record<string, string>;
  dataInfo: Record<string, unknown>;
  /** Stop after this many optimizer steps in total (counting steps before a resume). */
  maxSteps?: number;
  /** Stop after this many epochs (default: the train section's epochs). */
  maxEpochs?: number;
  /** Stop (with a checkpoint) at the first step boundary after this much wall time of training (setup, which compiles the kernels, not counted). */
  maxSeconds?: number;
  /** Save the last checkpoint every K optimizer steps (besides every epoch end and the end). */
  checkpointEvery?: number;
  /** Validate on at most this many batches (default: the whole validate split). */
  maxValidationBatches?: number;
  /** Continue from this checkpoint. */
  resume?: LoadedCheckpoint | null;
  /** Pretrained tensors by state name (already matched by weights.ts), for a fresh run. */
  init?: Map<string, HostTensor>;
  /** The run's id, recorded in every checkpoint (default: a new one; a resume keeps the checkpoint's). */
  runId?: string;
  /** SHA-256 of the lovtc artifact trained (`modelPath` is its directory), when not a source. */
  artifact?: string;
  onEvent?: (e: TrainEvent) => void;
}

export interface TrainResult {
  steps: number;
  epochs: number;
  samplesSeen: number;
  wallSeconds: number;
  stopReason: string;
  bestValidation: { value: number; step: number; epoch: number } | null;
  lastLosses: Record<string, number>;
}

/**
 * A loss, gradient, state update or validation loss went NaN/±inf: the run
 * stops, nothing of that step reached the weights or the optimizer state, and
 * the last good checkpoint stays. `tensor` names the first non-finite value.
 */
export class NonFiniteError extends Error {
  constructor(
    readonly step: number,
    readonly tensor: string,
    message: string,
  ) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

export { optimizerOptions };
/** How a check of the training programs reads in a message. */
export function describeCheck(c: FiniteCheck): string {
  switch (c.kind) {
    case 'output':
      return c.name === 'loss.total' ? 'the total loss' : c.name.startsWith('loss.') ? `loss term '${c.name.slice(5)}'` : `output '${c.name}'`;
    case 'gradient':
      return `the gradient of ${c.name}`;
    case 'update':
      return `the new value of ${c.name}`;
    case 'optimizer':
      return `the optimizer update of ${c.name} (its new value or optimizer state)`;
  }
}

/** The first check with a non-zero count, and how many others have one. */
export function firstNonFinite(counts: ArrayLike<number>, checks: FiniteCheck[]): { check: FiniteCheck; count: number; others: FiniteCheck[] } | null {
  const bad = checks.map((check, i) => ({ check, count: counts[i] })).filter((c) => c.count > 0);
  return bad.length ? { ...bad[0], others: bad.slice(1).map((c) => c.check) } : null;
}

/** The graph input every dropout reads (docs/language.md: reserved name `seed`). */
export const DROPOUT_SEED_INPUT = 'seed';

/** The dropout seed of micro-batch `micro` of the optimizer step after `stepsDone` steps: a function of the position, so a resume reproduces it. */
export function dropoutSeed(runSeed: number, stepsDone: number, micro: number): number {
  return deriveSeed(runSeed, 0xd509, stepsDone, micro) | 0;
}

/** The monitor name of a validation value: val_total, val_<term>. */
export function monitorKey(monitor: string, terms: string[]): string {
  const m = /^val_(.+)$/.exec(monitor);
  const name = m?.[1];
  if (!name || (name !== 'total' && !terms.includes(name))) {
    throw new Error(`unknown monitor '${monitor}': use val_total or val_<loss term> (${terms.map((t) => `val_${t}`).join(', ')})`);
  }
  return `loss.${name}`;
}

/** The runtime schedule for a train section; `stepsPerEpoch` resolves period: epoch. */
export function scheduleSpec(spec: TrainSpec['schedule'], stepsPerEpoch: number): ScheduleSpec {
  switch (spec.kind) {
    case 'constant':
      return { kind: 'constant' };
    case 'cosine':
      return { kind: 'cosine', period: spec.period === 'epoch' ? stepsPerEpoch : spec.period, etaMin: spec.eta_min, warmupSteps: spec.warmup_steps };
    case 'plateau':
      return plateauSpec({ patience: spec.patience, factor: spec.factor, minLr: spec.min_lr });
  }
}

/** Dropout with p forced to 0 (identity): `lovt-run loss` compares against deterministic references. */
export function withoutDropout(graph: Graph): Graph {
  const g = structuredClone(graph);
  for (const n of g.nodes) if (n.op === 'dropout') n.attrs = { ...n.attrs, p: 0 };
  return g;
}

/** The inputs a program needs, taken from a collated batch (error naming any the batch lacks). */
export function programInputs(
  graph: Graph,
  batch: ModelBatch,
  extra: Record<string, Float32Array | Int32Array> = {},
): Record<string, Float32Array | Int32Array> {
  const out: Record<string, Float32Array | Int32Array> = {};
  const available = batch.inputs as unknown as Record<string, HostTensor>;
  for (const name of Object.keys(graph.inputs)) {
    if (name in extra) out[name] = extra[name];
    else if (name in available) out[name] = available[name].data;
    else throw new Error(`the model needs an input '${name}' that the data pipeline does not provide (it provides ${Object.keys(available).join(', ')})`);
  }
  return out;
}

export class Trainer {
  private store!: StateStore;
  private stepProgram!: Program;
  private applyProgram!: Program;
  private evalProgram!: Program;
  private schedule!: LrSchedule;
  private earlyStopping: EarlyStopping | null = null;
  private metrics!: MetricsLog;
  private readonly spec: TrainSpec;
  private readonly terms: string[];
  private readonly lossOutputs: string[];
  private readonly accumulate: number;
  private readonly seed: number;
  private readonly stepsPerEpoch: number;
  private readonly monitor: string;
  private step = 0;
  private position: LoaderPosition = { epoch: 0, cursor: 0 };
  private epochsDone = 0;
  private lastCheckpointStep = -1;
  private lastCheckpointTags: CheckpointTag[] = [];
  private bestValidation: TrainResult['bestValidation'] = null;
  private lastLosses: Record<string, number> = {};
  private lastValidation: Record<string, number> = {};
  private samplesSeen = 0;
  private readonly runId: string;
  private checks!: TrainingPrograms['checks'];
  /**
   * The last optimizer update's check, read back with the next step's losses
   * rather than waited for (the update itself is conditional on the device).
   */
  private pendingUpdate: { step: number; epoch: number; counts: Promise<Record<string, Float32Array | Int32Array>> } | null = null;

  private constructor(private readonly opts: TrainerOptions) {
    this.runId = opts.resume?.manifest.runId ?? opts.runId ?? newRunId();
    const { model } = opts.train;
    this.spec = model.train;
    this.terms = model.losses.map((l) => l.name);
    this.lossOutputs = ['loss.total', ...model.losses.map((l) => l.output)];
    this.accumulate = this.spec.accumulate;
    this.seed = this.spec.seed;
    const batches = opts.data.train.batchesPerEpoch();
    this.stepsPerEpoch = Math.max(1, Math.ceil(batches / this.accumulate));
    this.monitor = monitorKey(
      this.spec.early_stopping?.monitor ?? (this.spec.schedule.kind === 'plateau' ? this.spec.schedule.monitor : 'val_total'),
      this.terms,
    );
  }

  /** Compiles the programs, creates the state and restores or initialises it. */
  static async create(opts: TrainerOptions): Promise<Trainer> {
    const t = new Trainer(opts);
    await t.setup();
    return t;
  }

  private emit(e: TrainEvent): void {
    this.opts.onEvent?.(e);
  }

  private async setup(): Promise<void> {
    const { device, train, eval: evalModel, resume } = this.opts;
    // A new run never writes over another run's checkpoints and metrics.
    const existing = resume ? null : await existingRunMessage(this.opts.storage);
    if (existing) throw new Error(existing);
    const { step, apply, checks } = buildTrainingPrograms(train.graph, {
      loss: 'loss.total',
      optimizer: optimizerOptions(this.spec.optimizer),
      accumulate: this.accumulate,
    });
    this.checks = checks;
    this.store = new StateStore(device);
    this.emit({
      kind: 'message',
      text: 'compiling the GPU programs (step, apply, eval) and their kernels (minutes on a software rasteriser with a cold shader cache)…',
    });
    this.stepProgram = await Program.create(device, step, this.store, { label: 'train step' });
    this.applyProgram = await Program.create(device, apply, this.store, { label: 'optimizer apply' });
    this.evalProgram = await Program.create(device, optimize(evalModel.graph), this.store, { label: 'eval forward' });

    const baseLr = this.spec.optimizer.lr;
    this.schedule = createSchedule(scheduleSpec(this.spec.schedule, this.stepsPerEpoch), baseLr);
    if (this.spec.early_stopping) {
      this.earlyStopping = new EarlyStopping({ monitor: this.spec.early_stopping.monitor, patience: this.spec.early_stopping.patience, minDelta: 0 });
    }
    if (!this.opts.data.validate) {
      if (this.earlyStopping) this.emit({ kind: 'message', text: 'no validation split large enough for one batch: early stopping is off' });
      if (this.spec.schedule.kind === 'plateau') this.emit({ kind: 'message', text: 'no validation split: ReduceLROnPlateau keeps the initial LR' });
      this.earlyStopping = null;
    }

    await this.warmUp();
    if (resume) {
      this.restore(resume);
      this.metrics = await MetricsLog.open(this.opts.storage, { resumeAtStep: this.step });
    } else {
      const init = initState(train.graph, this.seed);
      for (const [name, data] of Object.entries(init)) this.store.upload(name, data);
      for (const [name, t] of this.opts.init ?? []) this.store.upload(name, t.data);
      this.metrics = await MetricsLog.open(this.opts.storage);
      // A step-0 checkpoint: there is always a last good checkpoint to go back to.
      await this.checkpoint(['last']);
    }
  }

  /** Compiles every kernel now, not inside the first step or validation (warmUpPrograms). */
  private async warmUp(): Promise<void> {
    await warmUpPrograms([this.stepProgram, this.applyProgram, this.evalProgram], this.store);
  }

  private restore(ckpt: LoadedCheckpoint): void {
    const m = ckpt.manifest;
    const expected = this.checkpointedStateNames().map((name) => ({ name, ...this.store.info(name) }));
    const d = diffTensors(expected, ckpt.tensors);
    if (hasDifferences(d)) {
      throw new Error(
        `the checkpoint does not fit the compiled model: ${describeDiff(d, { missing: 'in the model, not in the checkpoint', unexpected: 'in the checkpoint, not in the model' })}`,
      );
    }
    for (const [name, t] of d.matched) this.store.upload(name, t.tensor.data);
    this.step = m.step;
    this.epochsDone = m.epoch;
    this.position = { ...m.dataPosition };
    this.schedule.restore(m.schedule);
    if (this.earlyStopping && m.earlyStop) this.earlyStopping.restore(m.earlyStop);
    const best = m.metrics['best.value'];
    if (typeof best === 'number') this.bestValidation = { value: best, step: m.metrics['best.step'] ?? 0, epoch: m.metrics['best.epoch'] ?? 0 };
    this.samplesSeen = m.metrics['samples_seen'] ?? 0;
    this.lastCheckpointStep = m.step;
    this.lastCheckpointTags = [m.tag];
  }

  /** Every state tensor except the gradient accumulators (zero at every step boundary). */
  private checkpointedStateNames(): string[] {
    return this.store
      .names()
      .filter((n) => !n.startsWith('grad_acc.'))
      .sort();
  }

  /** Downloads the whole state (parameters, buffers, optimizer moments). */
  async downloadState(): Promise<Map<string, HostTensor>> {
    const out = new Map<string, HostTensor>();
    for (const name of this.checkpointedStateNames()) {
      const info = this.store.info(name);
      const data = await this.store.download(name);
      out.set(name, (info.dtype === 'i32' ? { dtype: 'i32', shape: info.shape, data } : { dtype: 'f32', shape: info.shape, data }) as HostTensor);
    }
    return out;
  }

  private checkpointInfo(): CheckpointInfo {
    const { model } = this.opts.train;
    const metrics: Record<string, number | null> = { samples_seen: this.samplesSeen };
    for (const [k, v] of Object.entries(this.lastLosses)) metrics[`train.${k}`] = v;
    for (const [k, v] of Object.entries(this.lastValidation)) metrics[`val.${k}`] = v;
    if (this.bestValidation) {
      metrics['best.value'] = this.bestValidation.value;
      metrics['best.step'] = this.bestValidation.step;
      metrics['best.epoch'] = this.bestValidation.epoch;
    }
    return {
      runId: this.runId,
      model: { name: model.name, path: this.opts.modelPath, sourceHash: model.sourceHash, ...(this.opts.artifact ? { artifact: this.opts.artifact } : {}) },
      set: this.opts.set,
      config: Object.fromEntries(Object.entries(model.configs).map(([k, v]) => [k, v.value])),
      train: { ...this.spec, stepsPerEpoch: this.stepsPerEpoch } as unknown as Record<string, unknown>,
      data: this.opts.dataInfo,
      seed: this.seed,
      step: this.step,
      epoch: this.epochsDone,
      dataPosition: { ...this.position },
      schedule: this.schedule.state(),
      earlyStop: this.earlyStopping?.state() ?? null,
      metrics,
    };
  }

  private async checkpoint(tags: CheckpointTag[]): Promise<void> {
    await this.settleUpdate();
    await saveCheckpoint(this.opts.storage, tags, await this.downloadState(), this.checkpointInfo());
    this.lastCheckpointStep = this.step;
    this.lastCheckpointTags = tags;
    this.emit({ kind: 'checkpoint', step: this.step, tags });
  }

  /** Trains until a limit or early stopping; a NaN or infinity anywhere throws NonFiniteError. */
  async run(): Promise<TrainResult> {
    const o = this.opts;
    const started = performance.now();
    const elapsed = () => (performance.now() - started) / 1000;
    const maxEpochs = o.maxEpochs ?? this.spec.epochs;
    const totalSteps = o.maxSteps ?? maxEpochs * this.stepsPerEpoch;
    const throughput = new Throughput();
    this.emit({
      kind: 'start',
      step: this.step,
      totalSteps,
      maxSeconds: o.maxSeconds ?? null,
      stepsPerEpoch: this.stepsPerEpoch,
      epoch: this.position.epoch,
      resumed: !!o.resume,
    });

    let stopReason = '';
    const limitReached = (): string => {
      if (o.maxSteps !== undefined && this.step >= o.maxSteps) return `reached ${o.maxSteps} optimizer steps`;
      if (this.position.epoch >= maxEpochs) return `reached ${maxEpochs} epochs`;
      if (o.maxSeconds !== undefined && elapsed() >= o.maxSeconds) return `time budget of ${formatSeconds(o.maxSeconds)} used`;
      return '';
    };

    outer: while (!(stopReason = limitReached())) {
      const epoch = this.position.epoch;
      const batches = o.data.train.epoch(epoch, this.position.cursor)[Symbol.asyncIterator]();
      let micro = 0;
      let sums: Record<string, number> = {};
      let stepStarted = performance.now();
      for (;;) {
        if (micro === 0) stepStarted = performance.now(); // data loading counts towards throughput
        const next = await batches.next();
        if (next.done) break;
        const losses = await this.microStep(next.value, micro);
        for (const [k, v] of Object.entries(losses)) sums[k] = (sums[k] ?? 0) + v;
        micro++;
        this.position = next.value.next;
        if (micro === this.accumulate) {
          await this.optimizerStep(sums, micro, epoch, throughput, stepStarted, elapsed());
          micro = 0;
          sums = {};
          if (o.checkpointEvery && this.step % o.checkpointEvery === 0) await this.checkpoint(['last']);
          if ((stopReason = limitReached())) {
            await batches.return?.(undefined);
            break outer;
          }
        }
      }
      // The epoch's data is exhausted: the remaining micro-batches make the last step.
      if (micro > 0) {
        await this.optimizerStep(sums, micro, epoch, throughput, stepStarted, elapsed());
      }
      this.position = { epoch: epoch + 1, cursor: 0 };
      this.epochsDone = epoch + 1;
      const stop = await this.endOfEpoch(epoch);
      if (stop) {
        stopReason = stop;
        break;
      }
    }
    await this.settleUpdate();
    if (this.lastCheckpointStep !== this.step || !this.lastCheckpointTags.includes('last')) await this.checkpoint(['last']);
    return {
      steps: this.step,
      epochs: this.epochsDone + (this.position.cursor > 0 ? this.position.cursor / Math.max(1, o.data.train.studies.length) : 0),
      samplesSeen: this.samplesSeen,
      wallSeconds: elapsed(),
      stopReason,
      bestValidation: this.bestValidation,
      lastLosses: this.lastLosses,
    };
  }

  /**
   * Forward + backward of one micro-batch; returns its losses. Throws
   * NonFiniteError when the batch or anything the step computes is not finite
   * (the step then changed no state), or the previous optimizer update was not.
   */
  private async microStep(loaded: LoadedBatch, micro: number): Promise<Record<string, number>> {
    const inputs = programInputs(this.stepProgram.graph, loaded.batch, { [DROPOUT_SEED_INPUT]: Int32Array.of(dropoutSeed(this.seed, this.step, micro)) });
    checkBatchValues(this.stepProgram.graph, inputs, `the training batch of epoch ${loaded.epoch + 1} (samples ${sampleList(loaded)})`);
    const [out] = await Promise.all([this.stepProgram.run(inputs, [...this.lossOutputs, NONFINITE_OUTPUT]), this.settleUpdate()]);
    const losses: Record<string, number> = {};
    for (const name of this.lossOutputs) losses[name] = out[name][0];
    this.samplesSeen += loaded.batch.ids.length;
    const bad = firstNonFinite(out[NONFINITE_OUTPUT], this.checks.step);
    if (bad) {
      const value = bad.check.kind === 'output' ? ` is ${out[bad.check.name][0]}` : '';
      await this.diverged(
        this.step + 1,
        loaded.epoch,
        bad.check,
        bad.count,
        value,
        bad.others,
        `at optimizer step ${this.step + 1} (epoch ${loaded.epoch + 1}, micro-batch ${micro + 1} of ${this.accumulate}, samples ${sampleList(loaded)}): `,
        'nothing of this step was applied',
      );
    }
    return losses;
  }

  /** Waits for the last optimizer update's check (issued without waiting, see pendingUpdate); throws NonFiniteError if it failed. */
  private async settleUpdate(): Promise<void> {
    const pending = this.pendingUpdate;
    if (!pending) return;
    this.pendingUpdate = null;
    const counts = (await pending.counts)[NONFINITE_OUTPUT];
    const bad = firstNonFinite(counts, this.checks.apply);
    if (bad) {
      await this.diverged(
        pending.step,
        pending.epoch,
        bad.check,
        bad.count,
        '',
        bad.others,
        `at optimizer step ${pending.step} (epoch ${pending.epoch + 1}): `,
        'the update was not applied',
      );
    }
  }

  private async diverged(
    step: number,
    epoch: number,
    check: FiniteCheck,
    count: number,
    value: string,
    others: FiniteCheck[],
    where: string,
    applied: string,
  ): Promise<never> {
    const tensor = describeCheck(check);
    await this.metrics.append({ kind: 'event', step, epoch, event: 'non-finite', tensor, count });
    // Of how many: a gradient or an update has its state tensor's size; an optimizer check counts the parameter and its moments together.
    const of = check.kind === 'gradient' || check.kind === 'update' ? ` of ${numel(this.store.info(check.name).shape).toLocaleString('en-US')}` : '';
    const what = value ? `${tensor}${value}` : `${tensor} has ${count.toLocaleString('en-US')}${of} values NaN or infinite`;
    const also = others.length
      ? ` (so do ${others.length} later value${others.length === 1 ? '' : 's'}, e.g. ${others.slice(0, 2).map(describeCheck).join(', ')})`
      : '';
    throw new NonFiniteError(step, tensor, `${where}${what}${also}; ${applied} and training stopped.${this.lastGoodCheckpoint()}`);
  }

  private lastGoodCheckpoint(): string {
    return this.lastCheckpointStep >= 0 ? ` The last good checkpoint is step ${this.lastCheckpointStep} (${this.opts.storage.description}/last.json).` : '';
  }

  private async optimizerStep(
    sums: Record<string, number>,
    micro: number,
    epoch: number,
    throughput: Throughput,
    stepStarted: number,
    elapsedSeconds: number,
  ): Promise<void> {
    const lr = this.schedule.lrAt(this.step);
    const scalars = optimizerScalars(this.step + 1, lr, optimizerOptions(this.spec.optimizer));
    const counts = this.applyProgram.run(Object.fromEntries(Object.entries(scalars).map(([k, v]) => [k, Float32Array.of(v)])), [NONFINITE_OUTPUT]);
    counts.catch(() => {}); // awaited by settleUpdate; this only keeps an early failure from being reported as unhandled
    this.pendingUpdate = { step: this.step + 1, epoch, counts };
    this.step++;
    const losses: Record<string, number> = {};
    for (const [k, v] of Object.entries(sums)) losses[k] = v / micro;
    this.lastLosses = losses;
    const samplesPerSecond = throughput.record(micro * this.opts.data.train.options.batchSize, (performance.now() - stepStarted) / 1000);
    const record: MetricsRecord = { kind: 'train', step: this.step, epoch, lr, samples_per_s: samplesPerSecond, micro_batches: micro, ...losses };
    await this.metrics.append(record);
    this.emit({ kind: 'step', step: this.step, epoch, lr, losses, samplesPerSecond, elapsedSeconds });
  }

  /** Validation, early stopping, plateau schedule and the epoch's checkpoint. Returns a stop reason or ''. */
  private async endOfEpoch(epoch: number): Promise<string> {
    if (!this.opts.data.validate) {
      await this.checkpoint(['last']);
      return '';
    }
    await this.settleUpdate();
    const losses = await this.validate();
    this.lastValidation = losses;
    // A NaN validation loss is no "no improvement": the model is broken, so the run stops without a checkpoint.
    const bad = Object.entries(losses).find(([, v]) => !Number.isFinite(v));
    if (bad) {
      const name = `val_${bad[0].replace(/^loss\./, '')}`;
      await this.metrics.append({ kind: 'event', step: this.step, epoch, event: 'non-finite', tensor: name, count: 1 });
      throw new NonFiniteError(
        this.step,
        name,
        `validation at the end of epoch ${epoch + 1} (step ${this.step}): ${name} is ${bad[1]}; training stopped.${this.lastGoodCheckpoint()}`,
      );
    }
    const value = losses[this.monitor];
    let improved = this.bestValidation === null || value < this.bestValidation.value;
    let stop = '';
    if (this.earlyStopping) {
      const d = this.earlyStopping.update(value, epoch);
      improved = d.improved;
      if (d.stop) stop = `early stopping: ${d.reason}`;
    }
    if (improved && Number.isFinite(value)) this.bestValidation = { value, step: this.step, epoch: epoch + 1 };
    this.schedule.onValidation(value);
    await this.metrics.append({ kind: 'val', step: this.step, epoch, ...losses });
    this.emit({ kind: 'validation', step: this.step, epoch, losses, improved });
    await this.checkpoint(improved && Number.isFinite(value) ? ['last', 'best'] : ['last']);
    return stop;
  }

  /** Mean validation losses over the validate split (eval-mode forward: BN running statistics, no dropout). */
  async validate(): Promise<Record<string, number>> {
    const loader = this.opts.data.validate;
    if (!loader) return {};
    const sums: Record<string, number> = {};
    let n = 0;
    for await (const loaded of loader.epoch(0)) {
      const inputs = programInputs(this.evalProgram.graph, loaded.batch);
      checkBatchValues(this.evalProgram.graph, inputs, `the validation batch of samples ${sampleList(loaded)}`);
      const out = await this.evalProgram.run(inputs, this.lossOutputs);
      for (const name of this.lossOutputs) sums[name] = (sums[name] ?? 0) + out[name][0];
      n++;
      if (this.opts.maxValidationBatches && n >= this.opts.maxValidationBatches) break;
    }
    const mean: Record<string, number> = {};
    for (const [k, v] of Object.entries(sums)) mean[k] = v / Math.max(1, n);
    return mean;
  }

  /**
   * Runs the eval-mode forward on the first validation batch(es) and returns the
   * requested outputs with the batch: for the report's attention heatmaps.
   */
  async inspect(outputs: string[], batches = 1): Promise<{ batch: ModelBatch; outputs: Record<string, Float32Array | Int32Array> }[]> {
    const loader = this.opts.data.validate ?? null;
    if (!loader) return [];
    const missing = outputs.filter((n) => !(n in this.evalProgram.graph.outputs));
    if (missing.length) throw new Error(`the model has no output ${missing.join(', ')} (outputs: ${Object.keys(this.evalProgram.graph.outputs).join(', ')})`);
    const res: { batch: ModelBatch; outputs: Record<string, Float32Array | Int32Array> }[] = [];
    for await (const loaded of loader.epoch(0)) {
      res.push({ batch: loaded.batch, outputs: await this.evalProgram.run(programInputs(this.evalProgram.graph, loaded.batch), outputs) });
      if (res.length >= batches) break;
    }
    return res;
  }

  get currentStep(): number {
    return this.step;
  }

  get lossTerms(): { name: string; weight: number }[] {
    return this.opts.train.model.losses.map((l) => ({ name: l.name, weight: l.weight }));
  }

  get evalGraph(): Graph {
    return this.evalProgram.graph;
  }

  destroy(): void {
    this.stepProgram?.destroy();
    this.applyProgram?.destroy();
    this.evalProgram?.destroy();
    this.store?.destroy();
  }
}

function zeroTensor(shape: number[], dtype: DType): Float32Array | Int32Array {
  return dtype === 'i32' ? new Int32Array(numel(shape)) : new Float32Array(numel(shape));
}

/** Zeroes every state tensor of `store`. */
export function zeroState(store: StateStore): void {
  for (const name of store.names()) {
    const { shape, dtype } = store.info(name);
    store.upload(name, zeroTensor(shape, dtype));
  }
}

/**
 * Runs every program once on zero inputs, so that their kernels are compiled now
 * (drivers such as lavapipe compile a pipeline at its first dispatch: minutes for a
 * whole model with a cold shader cache) rather than inside the first step; then
 * zeroes the state this disturbed (the caller initialises or restores it).
 */
export async function warmUpPrograms(programs: Program[], store: StateStore): Promise<void> {
  for (const p of programs) {
    const zeros: Record<string, Float32Array | Int32Array> = {};
    for (const [name, id] of Object.entries(p.graph.inputs)) zeros[name] = zeroTensor(p.graph.nodes[id].shape, p.graph.nodes[id].dtype);
    await p.run(zeros, []);
  }
  // A run that reads nothing back returns once submitted: wait for the work (and the compiles) to finish.
  await store.dev.device.queue.onSubmittedWorkDone();
  zeroState(store);
}

/** The first few sample ids of a batch, for messages. */
function sampleList(loaded: LoadedBatch): string {
  return `${loaded.batch.ids.slice(0, 4).join(', ')}${loaded.batch.ids.length > 4 ? ', …' : ''}`;
}

function formatSeconds(s: number): string {
  return s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(0)} s`;
}
