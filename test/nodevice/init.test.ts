// Seeded RNG and parameter initialisation: determinism, independence from
// declaration order, and the statistics of every InitSpec on large tensors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type InitSpec, type Shape } from '../../compiler/ir.ts';
import { Rng, hashName, rngForTensor } from '../../compiler/random.ts';
import { fans, initState, initTensor, sampleInit } from '../../runtime/init.ts';

/** The raw 32-bit patterns: equal bits, not merely equal values. */
function bits(a: Float32Array | Int32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

function stats(a: ArrayLike<number>): { mean: number; std: number; min: number; max: number } {
  let s = 0,
    min = Infinity,
    max = -Infinity;
  for (let i = 0; i < a.length; i++) {
    s += a[i];
    min = Math.min(min, a[i]);
    max = Math.max(max, a[i]);
  }
  const mean = s / a.length;
  let v = 0;
  for (let i = 0; i < a.length; i++) v += (a[i] - mean) ** 2;
  return { mean, std: Math.sqrt(v / a.length), min, max };
}

test('rngForTensor: one deterministic stream per (seed, name); uniform in [0, 1), standard normals', () => {
  const draw = (seed: number, name: string) => {
    const r = rngForTensor(seed, name);
    return Array.from({ length: 8 }, () => r.nextU32());
  };
  const base = draw(12345, 'a.weight');
  assert.equal(draw(12345, 'a.weight'), base);
  assert.not.equal(draw(12345, 'a.bias'), base);
  assert.not.equal(draw(12346, 'a.weight'), base);
  const r = rngForTensor(1, 'stats');
  const u = Float64Array.from({ length: 100000 }, () => r.uniform());
  const su = stats(u);
  assert.ok(su.min >= 0 && su.max < 1);
  assert.ok(Math.abs(su.mean - 0.5) < 0.005 && Math.abs(su.std - Math.sqrt(1 / 12)) < 0.003, JSON.stringify(su));
  const z = Float64Array.from({ length: 100000 }, () => r.normal());
  const sz = stats(z);
  assert.ok(Math.abs(sz.mean) < 0.01 && Math.abs(sz.std - 1) < 0.01, JSON.stringify(sz));
  assert.throws(() => rngForTensor(-1, 'x'), /non-negative integer/);
  assert.is(hashName('a'), 0xe40c292c); // FNV-1a test vector
});

test('initState: same seed gives bit-identical values, independent of declaration order', () => {
  const g1 = new GraphBuilder();
  g1.state('enc.conv1.weight', [8, 3, 3, 3], { kind: 'kaiming_normal', mode: 'fan_out', gain: Math.SQRT2 }, true);
  g1.state('enc.fc.weight', [4, 8], { kind: 'trunc_normal', std: 0.02 }, true);
  const g2 = new GraphBuilder();
  g2.state('head.bias', [4], { kind: 'uniform', low: -0.1, high: 0.1 }, true);
  g2.state('enc.fc.weight', [4, 8], { kind: 'trunc_normal', std: 0.02 }, true);
  g2.state('enc.conv1.weight', [8, 3, 3, 3], { kind: 'kaiming_normal', mode: 'fan_out', gain: Math.SQRT2 }, true);
  const a = initState(g1.graph, 12345);
  const a2 = initState(g1.graph, 12345);
  const b = initState(g2.graph, 12345);
  const c = initState(g1.graph, 54321);
  for (const name of ['enc.conv1.weight', 'enc.fc.weight']) {
    assert.equal(bits(a[name]), bits(a2[name]), `${name} deterministic`);
    assert.equal(bits(a[name]), bits(b[name]), `${name} independent of order and of other tensors`);
    assert.not.equal(bits(a[name]), bits(c[name]), `${name} changes with the seed`);
  }
  assert.not.equal(bits(a['enc.conv1.weight'].slice(0, 32)), bits(a['enc.fc.weight']), 'tensors draw different streams');
});

function drawStats(spec: InitSpec, shape: Shape) {
  return stats(sampleInit(spec, shape, rngForTensor(7, 'big')));
}

test('distributions: normal, uniform, kaiming (fan_in / fan_out), truncated normal', () => {
  const near = (got: number, want: number, rel: number, what: string) => assert.ok(Math.abs(got - want) <= rel * Math.abs(want), `${what}: ${got} vs ${want}`);
  const n = drawStats({ kind: 'normal', mean: 0.5, std: 2 }, [200000]);
  assert.ok(Math.abs(n.mean - 0.5) < 0.02, `normal mean ${n.mean}`);
  near(n.std, 2, 0.01, 'normal std');
  const u = drawStats({ kind: 'uniform', low: -3, high: 1 }, [200000]);
  assert.ok(u.min >= -3 && u.max <= 1);
  assert.ok(Math.abs(u.mean + 1) < 0.01, `uniform mean ${u.mean}`);
  near(u.std, 4 / Math.sqrt(12), 0.01, 'uniform std');
  const conv: Shape = [64, 32, 3, 3]; // fan_in 288, fan_out 576
  assert.equal(fans(conv), { fanIn: 288, fanOut: 576 });
  const kn = drawStats({ kind: 'kaiming_normal', mode: 'fan_out', gain: Math.SQRT2 }, conv);
  near(kn.std, Math.SQRT2 / Math.sqrt(576), 0.015, 'kaiming_normal fan_out std');
  assert.ok(Math.abs(kn.mean) < 0.003);
  const gain = Math.sqrt(2 / (1 + 5)); // PyTorch's Linear/Conv default (a = √5)
  const bound = gain * Math.sqrt(3 / 288);
  const ku = drawStats({ kind: 'kaiming_uniform', mode: 'fan_in', gain }, conv);
  assert.ok(ku.min >= -bound && ku.max <= bound && ku.max > 0.99 * bound, `kaiming_uniform range ${ku.min}..${ku.max} vs ±${bound}`);
  near(ku.std, bound / Math.sqrt(3), 0.015, 'kaiming_uniform std');
  const tn = drawStats({ kind: 'trunc_normal', std: 0.02 }, [200000]);
  assert.ok(tn.min >= -0.04 && tn.max <= 0.04, `trunc_normal range ${tn.min}..${tn.max}`);
  near(tn.std, 0.02 * 0.8796, 0.01, 'trunc_normal std (normal truncated at ±2σ)');
});

test('constant kinds and clear errors', () => {
  const b = new GraphBuilder();
  b.state('z', [3], { kind: 'zeros' }, false);
  b.state('o', [2], { kind: 'ones' }, false);
  b.state('c', [2], { kind: 'constant', value: 0.25 }, false);
  const s = initState(b.graph, 1);
  assert.equal(Array.from(s.z), [0, 0, 0]);
  assert.equal(Array.from(s.o), [1, 1]);
  assert.equal(Array.from(s.c), [0.25, 0.25]);
  assert.throws(
    () => initTensor({ node: 0, name: 'fc.bias', shape: [4], dtype: 'f32', trainable: true, init: { kind: 'kaiming_uniform', mode: 'fan_in', gain: 1 } }, 1),
    /initialising fc.bias \[4\] with kaiming_uniform: fan in and fan out need a tensor of rank >= 2/,
  );
});

test.run();
