// Deterministic randomness shared by the float64 reference interpreter, the
// WGSL codegen (which mirrors dropoutKeep() bit for bit), parameter
// initialisation (rngForTensor) and test data (Rng). Everything here is 32-bit
// unsigned integer arithmetic written with Math.imul and `>>> 0`, so the hash
// maps one-to-one onto WGSL's wrapping u32 ops.

const TWO_POW_24 = 16777216;

/** The "PCG hash" (Jarzynski & Olano 2020): one round of a PCG-RXS-M-XS step on a u32. */
export function pcgHash(v: number): number {
  const state = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> ((state >>> 28) + 4)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** u32(seed) * 0x9E3779B9 + salt: folds the per-step seed and a per-op salt into one word. */
export function dropoutStreamKey(seed: number, salt: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b9) + (salt >>> 0)) >>> 0;
}

/**
 * A uniform number in [0, 1) with 24 bits, for element `index` of a dropout op:
 * (pcg(pcg(u32(index)) ^ key) >> 8) / 2^24. The element is kept iff this is >= p.
 */
export function dropoutUniform(index: number, key: number): number {
  return (pcgHash((pcgHash(index >>> 0) ^ key) >>> 0) >>> 8) / TWO_POW_24;
}

/** Whether element `index` survives dropout with probability p of being dropped. */
export function dropoutKeep(index: number, seed: number, salt: number, p: number): boolean {
  return dropoutUniform(index, dropoutStreamKey(seed, salt)) >= p;
}

/** 32-bit FNV-1a of a string's UTF-16 code units: names a tensor's random stream. */
export function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

const TWO_POW_32 = 4294967296;

/** splitmix32: expands one u32 into a well-mixed sequence, used to seed xoshiro. */
function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * xoshiro128** (Blackman & Vigna) with Box–Muller normals, for parameter
 * initialisation and test data. Deterministic: the same (seed, stream) gives
 * bit-identical integer and uniform sequences on every JS engine (normals go
 * through Math.log/cos/sin, which V8 computes identically on every platform).
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal: number | null = null;

  /** `seed` is a non-negative integer up to 2^53; `stream` (a u32) selects an independent sequence. */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`RNG seed must be a non-negative integer, got ${seed}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    const st = { s: (lo ^ Math.imul(hi, 0x27d4eb2d) ^ Math.imul(stream >>> 0, 0x165667b1)) >>> 0 };
    this.s0 = splitmix32(st);
    this.s1 = splitmix32(st);
    this.s2 = splitmix32(st);
    this.s3 = splitmix32(st);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** Next uniformly distributed u32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Standard normal by the Box–Muller transform; the second value of each pair is kept for the next call. */
  normal(): number {
    if (this.spareNormal !== null) {
      const z = this.spareNormal;
      this.spareNormal = null;
      return z;
    }
    const u1 = 1 - this.uniform(); // (0, 1]: log stays finite
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    this.spareNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

/** The random stream of one named tensor: depends only on (seed, name), never on declaration order. */
export function rngForTensor(seed: number, name: string): Rng {
  return new Rng(seed, hashName(name));
}
