// Segmentation metrics of the downstream evaluation (method §6): Dice micro-averaged over
// every test pixel at threshold 0.5 (per class; the NIH task reports the mean over its 8
// classes), accumulated batch by batch since a test set's masks do not fit in memory at
// once, and the soft Dice loss of the segmentation heads for reference checks.
// Definitions and conventions: docs/evaluation.md, "Metrics".

/** The reference's cut: a pixel is predicted positive when its probability is ≥ 0.5 (torchmetrics). */
export const DICE_THRESHOLD = 0.5;

/** Micro Dice from pixel counts: 2TP / (2TP + FP + FN); 0 when TP = 0 (also when nothing is predicted or present, as torchmetrics' F1). */
export function diceFromCounts(tp: number, fp: number, fn: number): number {
  return tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
}

function checkPair(what: string, predictions: ArrayLike<number>, targets: ArrayLike<number>, shape?: readonly number[]): void {
  if (predictions.length !== targets.length) {
    throw new Error(`${what}: ${predictions.length} predictions but ${targets.length} target pixels; both must hold the same pixels in the same layout`);
  }
  if (shape !== undefined) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!shape.every((d) => Number.isInteger(d) && d >= 0) || size !== predictions.length) {
      throw new Error(`${what}: shape [${shape.join(', ')}] holds ${size} values but ${predictions.length} were given`);
    }
  }
}

function checkTarget(what: string, t: number, i: number): void {
  if (t !== 0 && t !== 1) throw new Error(`${what}: target pixel ${i} is ${t}; masks must be exactly 0 or 1 (threshold a resized mask before evaluating)`);
}

/**
 * Accumulates per-class TP/FP/FN over batches; `dice()` is then each class's Dice over
 * all pixels added (micro average: one ratio of sums, not a mean of per-image Dice).
 */
export class DiceAccumulator {
  readonly tp: Float64Array;
  readonly fp: Float64Array;
  readonly fn: Float64Array;

  constructor(
    readonly classes = 1,
    readonly threshold = DICE_THRESHOLD,
  ) {
    if (!(Number.isInteger(classes) && classes >= 1)) throw new Error(`Dice: classes must be a whole number ≥ 1, got ${classes}`);
    if (!Number.isFinite(threshold)) throw new Error(`Dice: threshold must be finite, got ${threshold}`);
    this.tp = new Float64Array(classes);
    this.fp = new Float64Array(classes);
    this.fn = new Float64Array(classes);
  }

  /**
   * Adds one batch. `predictions` are probabilities (positive when ≥ threshold; pass
   * threshold 0 to the constructor for logits), `targets` 0/1. With several classes,
   * `shape` is required and is [batch, classes, ...pixels] (channel-major per image, as
   * NCHW tensors); with one class any layout works and `shape` is only checked.
   */
  add(predictions: ArrayLike<number>, targets: ArrayLike<number>, shape?: readonly number[]): void {
    checkPair('Dice', predictions, targets, shape);
    let pixels = predictions.length; // elements per class block
    if (this.classes > 1) {
      if (shape === undefined || shape.length < 2 || shape[1] !== this.classes) {
        throw new Error(`Dice: ${this.classes} classes need shape [batch, ${this.classes}, ...pixels], got ${shape ? `[${shape.join(', ')}]` : 'no shape'}`);
      }
      pixels = shape.slice(2).reduce((a, b) => a * b, 1);
    }
    for (let i = 0; i < predictions.length; i++) {
      const p = predictions[i];
      const t = targets[i];
      if (Number.isNaN(p)) throw new Error(`Dice: prediction ${i} is NaN`);
      checkTarget('Dice', t, i);
      const c = this.classes > 1 ? Math.floor(i / pixels) % this.classes : 0;
      if (p >= this.threshold) {
        if (t === 1) this.tp[c]++;
        else this.fp[c]++;
      } else if (t === 1) this.fn[c]++;
    }
  }

  /** Per-class micro Dice over everything added. */
  dice(): number[] {
    return Array.from(this.tp, (tp, c) => diceFromCounts(tp, this.fp[c], this.fn[c]));
  }

  /** Mean of the per-class Dice values (the NIH task's metric; equals dice()[0] for one class). */
  meanDice(): number {
    const d = this.dice();
    return d.reduce((a, b) => a + b, 0) / d.length;
  }
}

export interface SoftDiceOptions {
  /** Added to numerator and denominator (the reference's segmentation_models_pytorch default: 0). */
  smooth?: number;
  /** Lower bound of the denominator (the reference's 1e-7). */
  eps?: number;
  /** Predictions are logits: apply the sigmoid first (as the reference's DiceLoss does). */
  fromLogits?: boolean;
}

/**
 * The reference heads' training loss, segmentation_models_pytorch DiceLoss(mode='binary')
 * with its defaults: over the whole batch, all classes and pixels pooled,
 * D = (2·Σ p·g + smooth) / max(Σ p + Σ g + smooth, eps) and loss = 1 − D; a batch with no
 * positive target pixel contributes 0 (DiceLoss masks such batches out).
 */
export function softDiceLoss(predictions: ArrayLike<number>, targets: ArrayLike<number>, opts: SoftDiceOptions = {}): number {
  const smooth = opts.smooth ?? 0;
  const eps = opts.eps ?? 1e-7;
  checkPair('soft Dice', predictions, targets);
  let inter = 0;
  let sumP = 0;
  let sumG = 0;
  for (let i = 0; i < predictions.length; i++) {
    const x = predictions[i];
    if (Number.isNaN(x)) throw new Error(`soft Dice: prediction ${i} is NaN`);
    const p = opts.fromLogits ? 1 / (1 + Math.exp(-x)) : x;
    const g = targets[i];
    if (!(g >= 0 && g <= 1)) throw new Error(`soft Dice: target ${i} is ${g}; targets lie in [0, 1]`);
    inter += p * g;
    sumP += p;
    sumG += g;
  }
  if (sumG === 0) return 0;
  return 1 - (2 * inter + smooth) / Math.max(sumP + sumG + smooth, eps);
}
