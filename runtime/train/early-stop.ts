// Early stopping on a monitored validation value (lower is better), with the
// semantics of PyTorch Lightning's EarlyStopping(mode='min', min_delta, patience,
// check_finite=True), which the LoVT reference uses: an epoch improves when
// value < best - min_delta; the run stops after `patience` epochs in a row
// without improvement, or at once on a non-finite value.

export interface EarlyStopSpec {
  /** Name of the monitored validation metric, e.g. 'val_total'. */
  monitor: string;
  patience: number;
  minDelta: number;
}

export interface EarlyStopState {
  /** null while no finite value has been seen (JSON has no Infinity). */
  best: number | null;
  /** Epoch (0-based) at which `best` was reached. */
  bestEpoch: number | null;
  wait: number;
}

export interface EarlyStopDecision {
  /** This validation is the best so far: the trainer saves the best checkpoint. */
  improved: boolean;
  stop: boolean;
  /** Why the run stops, for the log and the report. */
  reason?: string;
}

export class EarlyStopping {
  private best = Infinity;
  private bestEpoch: number | null = null;
  private wait = 0;

  constructor(readonly spec: EarlyStopSpec) {
    if (!(spec.patience >= 1) || !Number.isInteger(spec.patience)) {
      throw new Error(`early stopping: patience must be a positive whole number of epochs, got ${spec.patience}`);
    }
  }

  get bestValue(): number {
    return this.best;
  }

  /** Feeds one validation value; `epoch` is only recorded. */
  update(value: number, epoch: number): EarlyStopDecision {
    if (!Number.isFinite(value)) {
      return { improved: false, stop: true, reason: `${this.spec.monitor} is ${value} at epoch ${epoch + 1}` };
    }
    if (value + this.spec.minDelta < this.best) {
      this.best = value;
      this.bestEpoch = epoch;
      this.wait = 0;
      return { improved: true, stop: false };
    }
    this.wait++;
    if (this.wait >= this.spec.patience) {
      return {
        improved: false,
        stop: true,
        reason: `${this.spec.monitor} did not improve for ${this.wait} epochs (best ${this.best.toPrecision(6)} at epoch ${(this.bestEpoch ?? 0) + 1})`,
      };
    }
    return { improved: false, stop: false };
  }

  state(): EarlyStopState {
    return { best: Number.isFinite(this.best) ? this.best : null, bestEpoch: this.bestEpoch, wait: this.wait };
  }

  restore(s: EarlyStopState): void {
    this.best = s.best ?? Infinity;
    this.bestEpoch = s.bestEpoch;
    this.wait = s.wait;
  }
}
