// Phrase-grounding measures of an attention map over the image regions (the K = 7×7
// cells of layer4) against a finding's pixel mask: pointing-game accuracy with its chance
// level, and the contrast-to-noise ratio (BioViL's CNR). A cell is inside the mask when
// the pixel under its centre is: cell (r, c) of a gh×gw grid over an H×W mask samples
// pixel (⌊(r + ½)·H/gh⌋, ⌊(c + ½)·W/gw⌋), e.g. (16 + 32r, 16 + 32c) for 7×7 over 224².
// Definitions and conventions: docs/evaluation.md, "Metrics".

/** One finding: the attention over its image's grid (row-major) and the finding's mask (row-major, non-zero = inside). */
export interface GroundingSample {
  attention: ArrayLike<number>;
  gridHeight: number;
  gridWidth: number;
  mask: ArrayLike<number>;
  maskHeight: number;
  maskWidth: number;
  /** Which cells are inside the mask (default 'centre'; see RegionRule). */
  rule?: RegionRule;
}

/**
 * 'centre': a cell is inside when the mask pixel under its centre is (the definition above);
 * 'overlap': when any mask pixel of the cell's block is, so that a finding smaller than a
 * cell is still reachable (a coarse grid's pointing game with a cell's tolerance). Cell
 * (r, c)'s block: rows ⌊r·H/gh⌋ … ⌈(r + 1)·H/gh⌉ − 1, columns alike.
 */
export type RegionRule = 'centre' | 'overlap';
export const REGION_RULES: readonly RegionRule[] = ['centre', 'overlap'];

function checkSample(s: GroundingSample, where: string): void {
  for (const [name, v] of [
    ['gridHeight', s.gridHeight],
    ['gridWidth', s.gridWidth],
    ['maskHeight', s.maskHeight],
    ['maskWidth', s.maskWidth],
  ] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`${where}: ${name} must be a whole number ≥ 1, got ${v}`);
  }
  if (s.attention.length !== s.gridHeight * s.gridWidth) {
    throw new Error(`${where}: attention has ${s.attention.length} values but the grid is ${s.gridHeight}×${s.gridWidth} = ${s.gridHeight * s.gridWidth}`);
  }
  if (s.mask.length !== s.maskHeight * s.maskWidth) {
    throw new Error(`${where}: mask has ${s.mask.length} pixels but is declared ${s.maskHeight}×${s.maskWidth} = ${s.maskHeight * s.maskWidth}`);
  }
  if (s.gridHeight > s.maskHeight || s.gridWidth > s.maskWidth) {
    throw new Error(`${where}: the ${s.gridHeight}×${s.gridWidth} grid is finer than the ${s.maskHeight}×${s.maskWidth} mask`);
  }
  for (let i = 0; i < s.attention.length; i++) if (Number.isNaN(s.attention[i])) throw new Error(`${where}: attention value ${i} is NaN`);
}

/** Per grid cell (row-major): 1 when the mask pixel under the cell's centre is non-zero. */
export function cellsInMask(mask: ArrayLike<number>, maskHeight: number, maskWidth: number, gridHeight: number, gridWidth: number): Uint8Array {
  const out = new Uint8Array(gridHeight * gridWidth);
  for (let r = 0; r < gridHeight; r++) {
    const y = Math.floor(((r + 0.5) * maskHeight) / gridHeight);
    for (let c = 0; c < gridWidth; c++) {
      const x = Math.floor(((c + 0.5) * maskWidth) / gridWidth);
      out[r * gridWidth + c] = mask[y * maskWidth + x] !== 0 ? 1 : 0;
    }
  }
  return out;
}

/** Per grid cell (row-major): 1 when any mask pixel of its block is non-zero (RegionRule 'overlap'). */
export function cellsOverlappingMask(mask: ArrayLike<number>, maskHeight: number, maskWidth: number, gridHeight: number, gridWidth: number): Uint8Array {
  const out = new Uint8Array(gridHeight * gridWidth);
  for (let y = 0; y < maskHeight; y++) {
    for (let x = 0; x < maskWidth; x++) {
      if (mask[y * maskWidth + x] === 0) continue;
      // The cells whose blocks hold pixel (y, x): with non-integer block sides a pixel may straddle two.
      for (let r = Math.floor((y * gridHeight) / maskHeight); r <= Math.min(gridHeight - 1, Math.ceil(((y + 1) * gridHeight) / maskHeight) - 1); r++) {
        for (let c = Math.floor((x * gridWidth) / maskWidth); c <= Math.min(gridWidth - 1, Math.ceil(((x + 1) * gridWidth) / maskWidth) - 1); c++) {
          out[r * gridWidth + c] = 1;
        }
      }
    }
  }
  return out;
}

/** The cells of a sample inside its mask, by its rule. */
export function sampleCells(s: GroundingSample, where = 'grounding sample'): Uint8Array {
  checkSample(s, where);
  if (s.rule !== undefined && !REGION_RULES.includes(s.rule)) throw new Error(`${where}: rule must be one of ${REGION_RULES.join(', ')}, got ${s.rule}`);
  return (s.rule === 'overlap' ? cellsOverlappingMask : cellsInMask)(s.mask, s.maskHeight, s.maskWidth, s.gridHeight, s.gridWidth);
}

/** Index of the largest value; ties go to the first in row-major order (numpy's argmax). */
function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export interface PointingGameResult {
  /** Fraction of samples whose most-attended cell is inside the mask. */
  accuracy: number;
  /** Mean over samples of the fraction of cells inside the mask: a uniformly random cell's expected accuracy. */
  chance: number;
  hits: number;
  samples: number;
}

/** Pointing game over findings; throws on an empty list. */
export function pointingGame(samples: readonly GroundingSample[]): PointingGameResult {
  if (samples.length === 0) throw new Error('pointing game: no samples');
  let hits = 0;
  let chance = 0;
  samples.forEach((s, i) => {
    const cells = sampleCells(s, `pointing game: sample ${i}`);
    if (cells[argmax(s.attention)]) hits++;
    chance += cells.reduce((a, b) => a + b, 0) / cells.length;
  });
  return { accuracy: hits / samples.length, chance: chance / samples.length, hits, samples: samples.length };
}

/**
 * Contrast-to-noise ratio |μ_in − μ_out| / √(σ²_in + σ²_out) of `values` split by
 * `inside` (non-zero = inside), with population variances. Both sides must be non-empty;
 * with zero variance on both sides it is 0 for equal means and Infinity otherwise.
 */
export function contrastToNoiseRatio(values: ArrayLike<number>, inside: ArrayLike<number>): number {
  if (values.length !== inside.length) throw new Error(`CNR: ${values.length} values but ${inside.length} mask entries`);
  for (let i = 0; i < values.length; i++) if (Number.isNaN(values[i])) throw new Error(`CNR: value ${i} is NaN`);
  const stats = [0, 1].map((side) => {
    let n = 0;
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      if ((inside[i] !== 0 ? 1 : 0) === side) {
        n++;
        sum += values[i];
      }
    }
    const mean = sum / n;
    let sq = 0;
    for (let i = 0; i < values.length; i++) if ((inside[i] !== 0 ? 1 : 0) === side) sq += (values[i] - mean) ** 2;
    return { n, mean, variance: sq / n };
  });
  const [out, ins] = stats;
  if (ins.n === 0 || out.n === 0) {
    throw new Error(
      `CNR: the mask covers ${ins.n} of ${values.length} values; both inside and outside must be non-empty (a mask with no cell centre inside needs a finer map)`,
    );
  }
  const diff = Math.abs(ins.mean - out.mean);
  const noise = Math.sqrt(ins.variance + out.variance);
  return noise === 0 ? (diff === 0 ? 0 : Infinity) : diff / noise;
}

/** CNR of a sample's attention over its grid cells, cells assigned by their centre pixel. */
export function groundingCNR(sample: GroundingSample): number {
  return contrastToNoiseRatio(sample.attention, sampleCells(sample, 'CNR'));
}
