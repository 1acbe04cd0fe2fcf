// The bench's correctness gate (bench/verify.ts): its sampled float64 checks
// accept the outputs of the reference interpreter (rounded to f32) and refuse
// outputs with the mistakes a fast kernel makes: a scale, a shifted index, a
// wrong edge tile, a flipped (correlation vs convolution) filter.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { evaluate } from '../../compiler/reference.ts';
import { checkSampled, convReferences, matmulReference, sampleIndices } from '../../bench/verify.ts';
import { seededUniform } from '../gpu/kernel-runner.ts';

const random = seededUniform(4242);

test('sampleIndices: distinct, in range, deterministic, with the first and last element', () => {
  const s = sampleIndices(1000, 300);
  assert.is(new Set(s).size, 300);
  assert.ok(s.includes(0) && s.includes(999));
  assert.ok(s.every((i) => Number.isInteger(i) && i >= 0 && i < 1000));
  assert.equal(sampleIndices(1000, 300), s);
  assert.is(sampleIndices(50, 300).length, 50, 'a small output is checked whole');
});

test('matmul: the exact product passes; a scaled, shifted or edge-tile-wrong product is refused', () => {
  const [M, K, N] = [37, 53, 29];
  const a = random(M * K),
    b = random(K * N);
  const g = new GraphBuilder();
  g.graph.outputs.y = g.emit('matmul', [g.input('a', [M, K]), g.input('b', [K, N])]);
  const good = Float32Array.from(evaluate(g.graph, { inputs: { a, b } }).outputs.y);
  const ref = matmulReference(a, b, M, K, N);
  assert.is(checkSampled('matmul', good, ref), null);
  assert.match(
    checkSampled(
      'matmul',
      good.map((v) => v * 1.001),
      ref,
    ) ?? '',
    /^matmul: \d+ of 300 sampled output elements are wrong, e.g. element \d+ is/,
  );
  assert.ok(
    checkSampled(
      'matmul',
      good.map((_, i) => good[Math.min(i + 1, good.length - 1)]),
      ref,
    ),
    'an index off by one',
  );
  // The last 8×8 tile never written (a missing bounds case): the last element is always sampled.
  const edge = good.map((v, i) => (Math.floor(i / N) >= M - 8 && i % N >= N - 8 ? 0 : v));
  assert.match(checkSampled('matmul', edge, ref) ?? '', new RegExp(`element ${M * N - 1} is 0,`));
  assert.match(checkSampled('matmul', good.subarray(1), ref) ?? '', /^matmul: 1072 output elements, expected 1073$/);
});

test('conv 3x3 forward, input and weight gradient: the reference interpreter passes; a flipped filter or a wrong channel is refused', () => {
  const shape = { N: 2, C: 3, H: 7, W: 6, O: 4, k: 3, pad: 1 };
  const x = random(2 * 3 * 7 * 6),
    w = random(4 * 3 * 9),
    dy = random(2 * 4 * 7 * 6);
  const attrs = { stride: 1, padding: 1, dilation: 1, groups: 1 };
  const g = new GraphBuilder();
  const [xi, wi, dyi] = [g.input('x', [2, 3, 7, 6]), g.input('w', [4, 3, 3, 3]), g.input('dy', [2, 4, 7, 6])];
  g.graph.outputs.y = g.emit('conv2d', [xi, wi], attrs);
  g.graph.outputs.dx = g.emit('conv2d_grad_input', [dyi, wi], { ...attrs, inputSize: [7, 6] });
  g.graph.outputs.dw = g.emit('conv2d_grad_weight', [xi, dyi], { ...attrs, kernelSize: [3, 3] });
  const run = (wv: Float32Array) => {
    const o = evaluate(g.graph, { inputs: { x, w: wv, dy } }).outputs;
    return { y: Float32Array.from(o.y), dx: Float32Array.from(o.dx), dw: Float32Array.from(o.dw) };
  };
  const good = run(w);
  const ref = convReferences(shape, { x, w, dy });
  assert.is(checkSampled('forward', good.y, ref.forward), null);
  assert.is(checkSampled('grad input', good.dx, ref.gradInput), null);
  assert.is(checkSampled('grad weight', good.dw, ref.gradWeight), null);
  // A convolution instead of a correlation: every 3x3 filter rotated by 180°.
  const flipped = w.map((_, i) => w[i - (i % 9) + 8 - (i % 9)]);
  const bad = run(flipped);
  assert.ok(checkSampled('forward', bad.y, ref.forward));
  assert.ok(checkSampled('grad input', bad.dx, ref.gradInput));
  // The weight gradient of output channel 2 written into channel 3's place.
  const swapped = good.dw.map((v, i) => (Math.floor(i / 27) === 3 ? good.dw[i - 27] : v));
  assert.match(checkSampled('grad weight', swapped, ref.gradWeight) ?? '', /^grad weight: 27 of 108 sampled output elements are wrong/);
});

test.run();
