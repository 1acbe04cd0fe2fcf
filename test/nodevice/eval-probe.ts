// A real, deterministic head for the protocol tests: a closed-form linear probe on tiny
// SynthCXR features, computed on the host in float64. Each image is cut into square
// cells; a cell's feature vector comes from its pixels ("pixels": the raw normalised
// pixels; "random": tanh of a fixed random projection of them), plus a constant. The
// probe predicts whether a cell lies in the task's mask (the cell's mask fraction ≥ ½) by
// class-balanced ridge regression onto 0/1 (the ridge λ plays the LR's part in the grid);
// the run seed draws a bootstrap resample of the training images. Every pixel of a cell
// takes the cell's prediction; Dice at 0.5 over all pixels of the split is the metric.
import { Rng } from '../../runtime/data/random.ts';
import { DiceAccumulator } from '../../runtime/eval/metrics.ts';
import type { RunResult } from '../../runtime/eval/protocol.ts';
import { loadTaskSample, type LoadedTaskSample, type SynthTaskData } from '../../runtime/eval/synth-tasks.ts';

export type ProbeEncoder = 'pixels' | 'random';

export interface ProbeData {
  size: number;
  cell: number;
  splits: Record<'train' | 'validate' | 'test', LoadedTaskSample[]>;
}

export async function loadProbeData(data: SynthTaskData, cell: number): Promise<ProbeData> {
  const load = (list: typeof data.splits.train) => Promise.all(list.map((s) => loadTaskSample(data, s)));
  return {
    size: data.imageSize,
    cell,
    splits: { train: await load(data.splits.train), validate: await load(data.splits.validate), test: await load(data.splits.test) },
  };
}

const PROJECTION_DIM = 6;

function projection(inputs: number): Float64Array {
  const rng = new Rng(7);
  return Float64Array.from({ length: PROJECTION_DIM * inputs }, () => rng.normal() / Math.sqrt(inputs));
}

/** Per cell (row-major grid): its features and its mask fraction. */
export function cellFeatures(d: ProbeData, s: LoadedTaskSample, encoder: ProbeEncoder): { x: Float64Array[]; y: number[] } {
  const g = d.size / d.cell;
  const inputs = d.cell * d.cell;
  const w = encoder === 'random' ? projection(inputs) : null;
  const x: Float64Array[] = [];
  const y: number[] = [];
  for (let r = 0; r < g; r++) {
    for (let c = 0; c < g; c++) {
      const px = new Float64Array(inputs);
      let inMask = 0;
      for (let i = 0; i < d.cell; i++) {
        for (let j = 0; j < d.cell; j++) {
          const p = (r * d.cell + i) * d.size + c * d.cell + j;
          px[i * d.cell + j] = s.image[p];
          inMask += s.mask![p];
        }
      }
      let f: Float64Array;
      if (w) {
        f = new Float64Array(PROJECTION_DIM + 1);
        for (let k = 0; k < PROJECTION_DIM; k++) {
          let a = 0;
          for (let i = 0; i < inputs; i++) a += w[k * inputs + i] * px[i];
          f[k] = Math.tanh(a);
        }
      } else {
        f = new Float64Array(inputs + 1);
        f.set(px);
      }
      f[f.length - 1] = 1;
      x.push(f);
      y.push(inMask / inputs);
    }
  }
  return { x, y };
}

/** Solves A w = b for symmetric positive definite A (Cholesky), float64. */
function solveSpd(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i === j ? Math.sqrt(s) : s / l[j * n + j];
    }
  }
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[i * n + k] * z[k];
    z[i] = s / l[i * n + i];
  }
  const w = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = z[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * w[k];
    w[i] = s / l[i * n + i];
  }
  return w;
}

/** Trains the probe with ridge λ on a bootstrap resample drawn with `seed`; Dice on validate and test. */
export function trainProbe(d: ProbeData, encoder: ProbeEncoder, lambda: number, seed: number): RunResult {
  const t0 = performance.now();
  const rng = new Rng(seed);
  const train = d.splits.train;
  const picked = Array.from({ length: train.length }, () => train[rng.int(train.length)]);
  const rows = picked.map((s) => cellFeatures(d, s, encoder));
  const n = rows[0].x[0].length;
  let positives = 0;
  let total = 0;
  for (const r of rows)
    for (const t of r.y) {
      total++;
      if (t >= 0.5) positives++;
    }
  // Balanced weights: each class carries half of the total weight.
  const wPos = positives > 0 ? total / (2 * positives) : 0;
  const wNeg = total / (2 * (total - positives));
  const a = new Float64Array(n * n);
  const b = new Float64Array(n);
  for (const r of rows) {
    r.x.forEach((f, i) => {
      const t = r.y[i] >= 0.5 ? 1 : 0;
      const wt = t ? wPos : wNeg;
      for (let p = 0; p < n; p++) {
        b[p] += wt * f[p] * t;
        for (let q = 0; q < n; q++) a[p * n + q] += wt * f[p] * f[q];
      }
    });
  }
  for (let p = 0; p < n; p++) a[p * n + p] += lambda;
  const w = solveSpd(a, b, n);
  const dice = (split: LoadedTaskSample[]) => {
    const acc = new DiceAccumulator();
    const g = d.size / d.cell;
    for (const s of split) {
      const { x } = cellFeatures(d, s, encoder);
      const pred = new Float32Array(d.size * d.size);
      for (let p = 0; p < pred.length; p++) {
        const cellIndex = Math.floor(Math.floor(p / d.size) / d.cell) * g + Math.floor((p % d.size) / d.cell);
        let v = 0;
        for (let k = 0; k < n; k++) v += w[k] * x[cellIndex][k];
        pred[p] = v;
      }
      acc.add(pred, s.mask!);
    }
    return acc.dice()[0];
  };
  return { valMetric: dice(d.splits.validate), testMetric: dice(d.splits.test), wallSeconds: (performance.now() - t0) / 1000, trainImages: picked.length };
}
