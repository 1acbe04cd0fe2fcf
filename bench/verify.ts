// The bench's correctness gate: before a lovt kernel is timed, its output on the
// bench's own inputs is checked against float64 sums computed here on the host,
// on a sample of output elements (all of a 1024³ matmul would take the host
// longer than the whole bench). A wrong kernel is refused: its row is marked
// failed and never timed, so a wrong fast kernel cannot show as a speed-up.
// The bound is the f32 summation bound of the kernel tests (test/gpu/kernel-runner.ts).

import { f32SumTolerance } from '../test/gpu/kernel-runner.ts';

/** Float64 values of single output elements of a contraction. */
export interface SampledReference {
  /** The number of output elements. */
  size: number;
  /** Products summed into each element (the bound's length). */
  terms: number;
  /** Element i's float64 value and the sum of its products' magnitudes. */
  element(i: number): { value: number; magnitude: number };
}

/**
 * `count` distinct output indices, deterministic: the first and last element
 * (tile and padding edges) and the rest spread by a 32-bit LCG.
 */
export function sampleIndices(size: number, count: number): number[] {
  const picked = new Set([0, size - 1]);
  let s = 12345;
  while (picked.size < Math.min(count, size)) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    picked.add(s % size);
  }
  return [...picked];
}

/** null when every sampled element of `got` is within the f32 bound, else what is wrong. */
export function checkSampled(what: string, got: ArrayLike<number>, ref: SampledReference, count = 300): string | null {
  if (got.length !== ref.size) return `${what}: ${got.length} output elements, expected ${ref.size}`;
  const sample = sampleIndices(ref.size, count);
  let bad = 0;
  let first = '';
  for (const i of sample) {
    const { value, magnitude } = ref.element(i);
    const tol = f32SumTolerance(ref.terms, magnitude);
    if (!(Math.abs(got[i] - value) <= tol) && !bad++) first = `element ${i} is ${got[i]}, float64 ${value} (tolerance ${tol.toExponential(2)})`;
  }
  return bad ? `${what}: ${bad} of ${sample.length} sampled output elements are wrong, e.g. ${first}` : null;
}

/** a [M, K] · b [K, N], row-major. */
export function matmulReference(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number): SampledReference {
  return {
    size: M * N,
    terms: K,
    element(i) {
      const m = Math.floor(i / N),
        n = i % N;
      let value = 0,
        magnitude = 0;
      for (let k = 0; k < K; k++) {
        const p = a[m * K + k] * b[k * N + n];
        value += p;
        magnitude += Math.abs(p);
      }
      return { value, magnitude };
    },
  };
}

/** A conv2d with stride 1, dilation 1, one group and a square `k`×`k` kernel padded by `pad` on every side. */
export interface ConvShape {
  N: number;
  C: number;
  H: number;
  W: number;
  O: number;
  k: number;
  pad: number;
}

/**
 * The forward (x, w → y), input-gradient (dy, w → dx) and weight-gradient
 * (x, dy → dw) outputs of a conv, element by element from the definition
 * y[n,o,i,j] = Σ_c,p,q x[n, c, i+p-pad, j+q-pad] · w[o, c, p, q] (NCHW, OIHW).
 * Each reads only the operands it needs.
 */
export function convReferences(
  s: ConvShape,
  { x = [], w = [], dy = [] }: { x?: ArrayLike<number>; w?: ArrayLike<number>; dy?: ArrayLike<number> },
): { forward: SampledReference; gradInput: SampledReference; gradWeight: SampledReference } {
  const OH = s.H + 2 * s.pad - s.k + 1,
    OW = s.W + 2 * s.pad - s.k + 1;
  const X = (n: number, c: number, h: number, v: number) => (h < 0 || h >= s.H || v < 0 || v >= s.W ? 0 : x[((n * s.C + c) * s.H + h) * s.W + v]);
  const Wt = (o: number, c: number, p: number, q: number) => w[((o * s.C + c) * s.k + p) * s.k + q];
  const DY = (n: number, o: number, i: number, j: number) => (i < 0 || i >= OH || j < 0 || j >= OW ? 0 : dy[((n * s.O + o) * OH + i) * OW + j]);
  /** Σ f over a box of indices, with the magnitude. */
  const sum = (dims: number[], f: (ix: number[]) => number) => {
    let value = 0,
      magnitude = 0;
    const ix = dims.map(() => 0);
    for (;;) {
      const p = f(ix);
      value += p;
      magnitude += Math.abs(p);
      let d = dims.length - 1;
      while (d >= 0 && ++ix[d] === dims[d]) ix[d--] = 0;
      if (d < 0) return { value, magnitude };
    }
  };
  const coords = (i: number, dims: number[]) => {
    const out = new Array<number>(dims.length);
    for (let d = dims.length - 1; d >= 0; d--) {
      out[d] = i % dims[d];
      i = Math.floor(i / dims[d]);
    }
    return out;
  };
  return {
    forward: {
      size: s.N * s.O * OH * OW,
      terms: s.C * s.k * s.k,
      element(i) {
        const [n, o, oh, ow] = coords(i, [s.N, s.O, OH, OW]);
        return sum([s.C, s.k, s.k], ([c, p, q]) => X(n, c, oh + p - s.pad, ow + q - s.pad) * Wt(o, c, p, q));
      },
    },
    gradInput: {
      size: s.N * s.C * s.H * s.W,
      terms: s.O * s.k * s.k,
      element(i) {
        const [n, c, h, v] = coords(i, [s.N, s.C, s.H, s.W]);
        return sum([s.O, s.k, s.k], ([o, p, q]) => DY(n, o, h + s.pad - p, v + s.pad - q) * Wt(o, c, p, q));
      },
    },
    gradWeight: {
      size: s.O * s.C * s.k * s.k,
      terms: s.N * OH * OW,
      element(i) {
        const [o, c, p, q] = coords(i, [s.O, s.C, s.k, s.k]);
        return sum([s.N, OH, OW], ([n, oh, ow]) => X(n, c, oh + p - s.pad, ow + q - s.pad) * DY(n, o, oh, ow));
      },
    },
  };
}
