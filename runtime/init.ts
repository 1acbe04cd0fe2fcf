// Parameter and buffer initialisation from each state tensor's InitSpec, with
// PyTorch's formulas (torch.nn.init). Deterministic and order-independent: a
// tensor's values depend only on (seed, its dotted name), because each tensor
// draws from its own stream (compiler/random.ts: rngForTensor), so adding or reordering layers
// never changes the initial values of the others.

import { type Graph, type InitSpec, type Shape, type StateInfo, numel, shapeStr } from '../compiler/ir.ts';
import { type Rng, rngForTensor } from '../compiler/random.ts';

/**
 * torch.nn.init._calculate_fan_in_and_fan_out for PyTorch's weight layout
 * [out, in, ...kernel]: fan_in = shape[1]·prod(shape[2:]), fan_out = shape[0]·prod(shape[2:]).
 */
export function fans(shape: Shape): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new Error(`fan in and fan out need a tensor of rank >= 2, got shape ${shapeStr(shape)}`);
  const receptive = numel(shape.slice(2));
  return { fanIn: shape[1] * receptive, fanOut: shape[0] * receptive };
}

function fill(n: number, draw: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = draw();
  return out;
}

function fanFor(spec: { mode: 'fan_in' | 'fan_out' }, shape: Shape): number {
  const { fanIn, fanOut } = fans(shape);
  const fan = spec.mode === 'fan_in' ? fanIn : spec.mode === 'fan_out' ? fanOut : NaN;
  if (!Number.isFinite(fan)) throw new Error(`kaiming mode must be 'fan_in' or 'fan_out', got ${JSON.stringify(spec.mode)}`);
  if (fan === 0) throw new Error(`kaiming initialisation of an empty tensor ${shapeStr(shape)}`);
  return fan;
}

/** Samples values for `spec` with `rng` (exported for tests of the distributions). */
export function sampleInit(spec: InitSpec, shape: Shape, rng: Rng): Float32Array {
  const n = numel(shape);
  switch (spec.kind) {
    case 'zeros':
      return new Float32Array(n);
    case 'ones':
      return new Float32Array(n).fill(1);
    case 'constant':
      return new Float32Array(n).fill(spec.value);
    case 'normal':
      return fill(n, () => spec.mean + spec.std * rng.normal());
    case 'uniform':
      return fill(n, () => spec.low + (spec.high - spec.low) * rng.uniform());
    case 'kaiming_normal': {
      const std = spec.gain / Math.sqrt(fanFor(spec, shape));
      return fill(n, () => std * rng.normal());
    }
    case 'kaiming_uniform': {
      const bound = spec.gain * Math.sqrt(3 / fanFor(spec, shape));
      return fill(n, () => (2 * rng.uniform() - 1) * bound);
    }
    case 'trunc_normal':
      // N(0, std²) conditioned on [-2std, 2std], by rejection (95% acceptance)
      return fill(n, () => {
        for (;;) {
          const z = rng.normal();
          if (z >= -2 && z <= 2) return spec.std * z;
        }
      });
  }
  throw new Error(`unknown init kind ${JSON.stringify((spec as { kind: unknown }).kind)}`);
}

/** The initial value of one state tensor: depends only on (seed, info.name, info.shape, info.init). */
export function initTensor(info: StateInfo, seed: number): Float32Array | Int32Array {
  try {
    const values = sampleInit(info.init, info.shape, rngForTensor(seed, info.name));
    // Integer state (BatchNorm's num_batches_tracked) takes the same init, truncated.
    return info.dtype === 'i32' ? Int32Array.from(values, Math.trunc) : values;
  } catch (e) {
    throw new Error(`initialising ${info.name} ${shapeStr(info.shape)} with ${info.init.kind}: ${(e as Error).message}`);
  }
}

/** Initial values of every param and buffer of `graph`, by dotted name. */
export function initState(graph: Graph, seed: number): Record<string, Float32Array | Int32Array> {
  const out: Record<string, Float32Array | Int32Array> = {};
  for (const info of Object.values(graph.state)) out[info.name] = initTensor(info, seed);
  return out;
}
