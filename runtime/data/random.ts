// Seeded pseudo-random numbers for the data pipeline. Everything random in data loading
// (shuffles, image draws, augmentation parameters, sentence swaps, SynthCXR content) comes
// from here so that a run is reproducible from its seed and can resume mid-epoch: each
// sample derives its own stream from (seed, epoch, position) with `deriveSeed`, so its
// randomness does not depend on which batch or which prefetch worker handled it.
// Math.random is never used.
import { Rng as XoshiroRng } from '../../compiler/random.ts';

/** Mixes 32-bit integers into one 32-bit seed (murmur3 finalizer over a running hash). */
export function deriveSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    if (!Number.isFinite(part)) throw new Error(`deriveSeed: seed part ${part} is not a finite number`);
    // Fold values beyond 32 bits (e.g. large seeds) so that they still matter.
    const lo = part >>> 0;
    const hi = Math.floor(part / 4294967296) >>> 0;
    h = mix32(h ^ lo);
    if (hi !== 0) h = mix32(h ^ hi ^ 0x85ebca6b);
  }
  return mix32(h);
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * The data pipeline's generator: compiler/random.ts's xoshiro128** (shared with parameter
 * initialisation) with the draws data loading needs. Seeds are mixed through deriveSeed so
 * that nearby seeds give unrelated streams.
 */
export class Rng {
  private readonly base: XoshiroRng;

  constructor(seed: number) {
    this.base = new XoshiroRng(deriveSeed(seed));
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    return this.base.nextU32();
  }

  /** Uniform in [0, 1) with 53 bits of resolution. */
  float(): number {
    return this.base.uniform();
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.float();
  }

  /** Uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`Rng.int: n must be a positive integer, got ${n}`);
    if (n > 4294967296) return Math.floor(this.float() * n);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const u = this.nextU32();
      if (u < limit) return u % n;
    }
  }

  /** Uniform integer in [lo, hi] (both inclusive). */
  intBetween(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  bernoulli(p: number): boolean {
    return this.float() < p;
  }

  /** Standard normal. */
  normal(): number {
    return this.base.normal();
  }

  /** Number of failures before the first success, success probability p (mean (1−p)/p). */
  geometricFailures(p: number): number {
    if (!(p > 0 && p <= 1)) throw new Error(`Rng.geometricFailures: p must be in (0, 1], got ${p}`);
    let failures = 0;
    while (!this.bernoulli(p)) failures++;
    return failures;
  }

  /** Picks one element uniformly. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Rng.pick: empty list');
    return items[this.int(items.length)];
  }

  /** In-place Fisher–Yates shuffle; returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }
}

/** A shuffled permutation of 0..n−1. */
export function permutation(n: number, rng: Rng): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  return order;
}

/** 64-bit FNV-1a of a string as 16 hex digits (for cache keys; not cryptographic). */
export function fnv1a64Hex(text: string): string {
  let h1 = 0x84222325 >>> 0; // low 32 bits of the offset basis cbf29ce484222325
  let h2 = 0xcbf29ce4 >>> 0;
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < bytes.length; i++) {
    h1 = (h1 ^ bytes[i]) >>> 0;
    // multiply (h2:h1) by the FNV prime 0x100000001b3 = 2^40 + 0x1b3
    const lo = h1 * 0x1b3;
    const carry = Math.floor(lo / 4294967296);
    const newH1 = lo >>> 0;
    const newH2 = (Math.imul(h2, 0x1b3) + carry + ((h1 << 8) >>> 0)) >>> 0;
    h1 = newH1;
    h2 = newH2;
  }
  return h2.toString(16).padStart(8, '0') + h1.toString(16).padStart(8, '0');
}
