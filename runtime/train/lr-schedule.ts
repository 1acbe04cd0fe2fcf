// Learning-rate schedules with PyTorch's semantics, stepped once per optimizer
// step (cosine) or once per validation (plateau). Every schedule's state is a
// small JSON object so a checkpoint can restore it exactly.
//
//   constant                     lr(step) = base
//   cosine(period, eta_min)      torch.optim.lr_scheduler.CosineAnnealingLR(T_max = period,
//                                eta_min) stepped after every optimizer step: the closed form
//                                eta_min + (base - eta_min)(1 + cos(pi t / T_max)) / 2, which
//                                PyTorch's recursive update follows, including past T_max
//                                (the LR then rises again: period 2 T_max). With warmup_steps W
//                                > 0 the first W steps ramp linearly, base·(t + 1)/W, and the
//                                cosine starts after them (t - W).
//   plateau(patience, factor,..) torch.optim.lr_scheduler.ReduceLROnPlateau(mode='min',
//                                threshold_mode='rel'), stepped with the validation loss.

export type ScheduleSpec =
  | { kind: 'constant' }
  | {
      kind: 'cosine';
      /** T_max in optimizer steps (one epoch in the LoVT recipe). */
      period: number;
      etaMin: number;
      /** Linear warm-up steps before the cosine (0 in the reference recipe). */
      warmupSteps?: number;
    }
  | {
      kind: 'plateau';
      patience: number;
      factor: number;
      /** Relative improvement needed to count as better (PyTorch default 1e-4). */
      threshold: number;
      /** Validations to wait after a reduction before counting bad ones again (default 0). */
      cooldown: number;
      minLr: number;
      /** Reductions smaller than this are skipped (PyTorch's eps, default 1e-8). */
      eps: number;
    };

/** The mutable part of a schedule, stored in checkpoints. */
export interface ScheduleState {
  kind: ScheduleSpec['kind'];
  /** ReduceLROnPlateau only. `best` is null while it is +infinity (JSON has no Infinity). */
  lr?: number;
  best?: number | null;
  numBadEpochs?: number;
  cooldownCounter?: number;
}

export interface LrSchedule {
  readonly spec: ScheduleSpec;
  readonly baseLr: number;
  /** The learning rate for optimizer step `step` (0-based: the step about to be taken). */
  lrAt(step: number): number;
  /** Reports a validation value (lower is better); only ReduceLROnPlateau reacts. */
  onValidation(value: number): void;
  state(): ScheduleState;
  restore(state: ScheduleState): void;
}

export function createSchedule(spec: ScheduleSpec, baseLr: number): LrSchedule {
  if (!(baseLr >= 0) || !Number.isFinite(baseLr)) throw new Error(`learning rate must be a finite non-negative number, got ${baseLr}`);
  switch (spec.kind) {
    case 'constant':
      return new ConstantSchedule(spec, baseLr);
    case 'cosine':
      if (!(spec.period >= 1) || !Number.isInteger(spec.period)) {
        throw new Error(`cosine schedule: period must be a positive whole number of optimizer steps, got ${spec.period}`);
      }
      return new CosineSchedule(spec, baseLr);
    case 'plateau':
      if (!(spec.factor > 0 && spec.factor < 1)) throw new Error(`plateau schedule: factor must be in (0, 1), got ${spec.factor}`);
      if (!(spec.patience >= 0)) throw new Error(`plateau schedule: patience must be >= 0, got ${spec.patience}`);
      return new PlateauSchedule(spec, baseLr);
  }
}

/** PyTorch's ReduceLROnPlateau defaults, for specs that name only patience and factor. */
export function plateauSpec(opts: { patience?: number; factor?: number; threshold?: number; cooldown?: number; minLr?: number; eps?: number }): ScheduleSpec {
  return {
    kind: 'plateau',
    patience: opts.patience ?? 10,
    factor: opts.factor ?? 0.1,
    threshold: opts.threshold ?? 1e-4,
    cooldown: opts.cooldown ?? 0,
    minLr: opts.minLr ?? 0,
    eps: opts.eps ?? 1e-8,
  };
}

/** A schedule whose LR is a function of the step alone: nothing to save or restore but its kind. */
abstract class StepFunctionSchedule implements LrSchedule {
  constructor(
    readonly spec: ScheduleSpec,
    readonly baseLr: number,
  ) {}
  abstract lrAt(step: number): number;
  onValidation(): void {}
  state(): ScheduleState {
    return { kind: this.spec.kind };
  }
  restore(state: ScheduleState): void {
    expectKind(state, this.spec.kind);
  }
}

class ConstantSchedule extends StepFunctionSchedule {
  lrAt(): number {
    return this.baseLr;
  }
}

class CosineSchedule extends StepFunctionSchedule {
  constructor(
    readonly spec: Extract<ScheduleSpec, { kind: 'cosine' }>,
    baseLr: number,
  ) {
    super(spec, baseLr);
  }
  lrAt(step: number): number {
    const { period, etaMin } = this.spec;
    const warmup = this.spec.warmupSteps ?? 0;
    if (step < warmup) return (this.baseLr * (step + 1)) / warmup;
    const t = step - warmup;
    return etaMin + ((this.baseLr - etaMin) * (1 + Math.cos((Math.PI * t) / period))) / 2;
  }
}

class PlateauSchedule implements LrSchedule {
  private lr: number;
  private best = Infinity;
  private numBadEpochs = 0;
  private cooldownCounter = 0;

  constructor(
    readonly spec: Extract<ScheduleSpec, { kind: 'plateau' }>,
    readonly baseLr: number,
  ) {
    this.lr = baseLr;
  }

  lrAt(): number {
    return this.lr;
  }

  // ReduceLROnPlateau.step(metrics), mode 'min', threshold_mode 'rel'. A NaN metric is
  // never "better" (PyTorch's comparison is false for NaN), so it counts as a bad epoch.
  onValidation(value: number): void {
    const s = this.spec;
    if (value < this.best * (1 - s.threshold)) {
      this.best = value;
      this.numBadEpochs = 0;
    } else {
      this.numBadEpochs++;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter--;
      this.numBadEpochs = 0;
    }
    if (this.numBadEpochs > s.patience) {
      const reduced = Math.max(this.lr * s.factor, s.minLr);
      if (this.lr - reduced > s.eps) this.lr = reduced;
      this.cooldownCounter = s.cooldown;
      this.numBadEpochs = 0;
    }
  }

  state(): ScheduleState {
    return {
      kind: 'plateau',
      lr: this.lr,
      best: Number.isFinite(this.best) ? this.best : null,
      numBadEpochs: this.numBadEpochs,
      cooldownCounter: this.cooldownCounter,
    };
  }

  restore(state: ScheduleState): void {
    expectKind(state, 'plateau');
    this.lr = state.lr ?? this.baseLr;
    this.best = state.best ?? Infinity;
    this.numBadEpochs = state.numBadEpochs ?? 0;
    this.cooldownCounter = state.cooldownCounter ?? 0;
  }
}

function expectKind(state: ScheduleState, kind: ScheduleSpec['kind']): void {
  if (state.kind !== kind) {
    throw new Error(`checkpoint holds a '${state.kind}' schedule state but the run uses a '${kind}' schedule`);
  }
}
