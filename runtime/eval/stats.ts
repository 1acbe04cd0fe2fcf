// Statistics of the evaluation protocol (method §6): each task is run N times (5, with
// different seeds) and reported as mean ± 1.96·s/√N, s the sample standard deviation
// (N − 1 in the denominator, as the reference's np.std(values, ddof=1)).

/** The normal 97.5% quantile: a two-sided 95% interval. */
export const Z_95 = 1.96;

export interface MeanInterval {
  mean: number;
  /** Sample standard deviation (N − 1). */
  std: number;
  n: number;
  /** z·std/√n. */
  halfWidth: number;
  low: number;
  high: number;
}

/** mean ± z·s/√N over runs; throws for fewer than 2 values (s is undefined) or a non-finite value. */
export function meanInterval(values: readonly number[], z = Z_95): MeanInterval {
  const n = values.length;
  if (n < 2) throw new Error(`confidence interval: needs at least 2 runs, got ${n}`);
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) throw new Error(`confidence interval: run ${i} has value ${v}; every run needs a finite metric`);
  });
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  const halfWidth = (z * std) / Math.sqrt(n);
  return { mean, std, n, halfWidth, low: mean - halfWidth, high: mean + halfWidth };
}

/** Whether two closed intervals [low, high] share a point (touching counts as overlap). */
export function intervalsOverlap(a: { low: number; high: number }, b: { low: number; high: number }): boolean {
  return a.low <= b.high && b.low <= a.high;
}
