// conv2d forward / input-gradient / weight-gradient kernels on the device
// against a float64 conv written here, for both templates: stride, padding,
// dilation, groups, 1x1 / 7x7 / non-square kernels, odd sizes and one medium
// shape that fills whole tiles. The float64 gradients are the adjoint of the
// float64 forward, itself checked against finite differences.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { Node } from '../../compiler/ir.ts';
import { convFlops, convSpec, renderConv2d, renderConv2dGradInput, renderConv2dGradWeight, renderConv2dGradWeightSplit } from '../../compiler/codegen/conv.ts';
import { chooseSplitK } from '../../compiler/codegen/gemm.ts';
import { runKernel, assertWithinF32Bound, contractionTemplates, seededUniform } from './kernel-runner.ts';
import { checkAgainstReference, randomFeeds } from './reference-check.ts';
import { CONV_TRANSPOSE_CASES, convTransposeProbe } from '../nodevice/model-helpers.ts';

const lovt = await getNodeDevice();
const device = lovt.device;
const TEMPLATES = contractionTemplates(lovt).templates;
const random = seededUniform(987654321);

interface Case {
  N: number;
  C: number;
  H: number;
  W: number;
  O: number;
  k: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

function outSize(c: Case): [number, number] {
  return [0, 1].map((i) => Math.floor(([c.H, c.W][i] + 2 * c.padding[i] - c.dilation[i] * (c.k[i] - 1) - 1) / c.stride[i]) + 1) as [number, number];
}

/**
 * Visits every (output, weight, input) index triple of the conv, in float64
 * terms: y[yi] += w[wi] * x[xi]. The forward, both gradients and their
 * magnitude sums (for the f32 error bound) are all sums over these triples.
 */
function forEachTap(c: Case, visit: (yi: number, wi: number, xi: number) => void) {
  const [OH, OW] = outSize(c);
  const Cg = c.C / c.groups;
  const Og = c.O / c.groups;
  for (let n = 0; n < c.N; n++)
    for (let o = 0; o < c.O; o++) {
      const g = Math.floor(o / Og);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++)
          for (let ci = 0; ci < Cg; ci++)
            for (let kh = 0; kh < c.k[0]; kh++)
              for (let kw = 0; kw < c.k[1]; kw++) {
                const ih = oh * c.stride[0] - c.padding[0] + kh * c.dilation[0];
                const iw = ow * c.stride[1] - c.padding[1] + kw * c.dilation[1];
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                visit(((n * c.O + o) * OH + oh) * OW + ow, ((o * Cg + ci) * c.k[0] + kh) * c.k[1] + kw, ((n * c.C + g * Cg + ci) * c.H + ih) * c.W + iw);
              }
    }
}

interface Ref {
  v: Float64Array;
  mag: Float64Array;
  terms: number;
}

function references(c: Case, x: Float32Array, w: Float32Array, dy: Float32Array) {
  const [OH, OW] = outSize(c);
  const make = (n: number): Ref => ({ v: new Float64Array(n), mag: new Float64Array(n), terms: 0 });
  const y = make(c.N * c.O * OH * OW);
  const dx = make(x.length);
  const dw = make(w.length);
  forEachTap(c, (yi, wi, xi) => {
    y.v[yi] += w[wi] * x[xi];
    y.mag[yi] += Math.abs(w[wi] * x[xi]);
    dx.v[xi] += dy[yi] * w[wi];
    dx.mag[xi] += Math.abs(dy[yi] * w[wi]);
    dw.v[wi] += dy[yi] * x[xi];
    dw.mag[wi] += Math.abs(dy[yi] * x[xi]);
  });
  const Cg = c.C / c.groups;
  y.terms = Cg * c.k[0] * c.k[1];
  dx.terms = c.O * c.k[0] * c.k[1];
  dw.terms = c.N * OH * OW;
  return { y, dx, dw };
}

function assertClose(got: Float32Array, want: Ref, what: string) {
  assertWithinF32Bound(got, want.v, want.mag, want.terms, what);
}

function graphFor(c: Case) {
  const g = new GraphBuilder();
  const x = g.input('x', [c.N, c.C, c.H, c.W]);
  const w = g.input('w', [c.O, c.C / c.groups, ...c.k]);
  const attrs = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
  const y = g.emit('conv2d', [x, w], attrs);
  const dy = g.input('dy', g.node(y).shape);
  const gi = g.emit('conv2d_grad_input', [dy, w], { ...attrs, inputSize: [c.H, c.W] });
  const gw = g.emit('conv2d_grad_weight', [x, dy], { ...attrs, kernelSize: c.k });
  return { graph: g.graph, y: g.node(y), gi: g.node(gi), gw: g.node(gw) };
}

/** As in matmul.test.ts: `tiled` cases also run on the tiled template (slow for lavapipe to compile). */
async function check(c: Case, tiled = false) {
  const { graph, y, gi, gw } = graphFor(c);
  const x = random(c.N * c.C * c.H * c.W);
  const w = random(c.O * (c.C / c.groups) * c.k[0] * c.k[1]);
  const dy = random(y.shape.reduce((a, b) => a * b));
  const ref = references(c, x, w, dy);
  const label = `x [${c.N},${c.C},${c.H},${c.W}] O ${c.O} k ${c.k} s ${c.stride} p ${c.padding} d ${c.dilation} g ${c.groups}`;
  for (const [name, opts] of tiled || TEMPLATES.length === 1 ? TEMPLATES : TEMPLATES.filter(([n]) => n !== 'tiled')) {
    const kf = renderConv2d(graph, y, opts);
    assertClose(await runKernel(device, kf, [x, w], ref.y.v.length), ref.y, `${name} ${kf.name} ${label}`);
    const ki = renderConv2dGradInput(graph, gi, opts);
    assertClose(await runKernel(device, ki, [dy, w], x.length), ref.dx, `${name} ${ki.name} ${label}`);
    const kw = renderConv2dGradWeight(graph, gw, opts);
    assertClose(await runKernel(device, kw, [x, dy], w.length), ref.dw, `${name} ${kw.name} ${label}`);
  }
}

const base: Case = { N: 2, C: 3, H: 7, W: 5, O: 4, k: [3, 3], stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };

test('the float64 reference gradients match finite differences of the float64 conv', () => {
  const c: Case = { ...base, stride: [2, 1], dilation: [1, 2], padding: [1, 2] };
  const x = Float64Array.from(random(c.N * c.C * c.H * c.W));
  const w = Float64Array.from(random(c.O * c.C * 9));
  const [OH, OW] = outSize(c);
  const dy = random(c.N * c.O * OH * OW);
  // L(x, w) = <conv(x, w), dy>, evaluated in float64
  const loss = () => {
    let s = 0;
    forEachTap(c, (yi, wi, xi) => (s += dy[yi] * w[wi] * x[xi]));
    return s;
  };
  const ref = references(c, Float32Array.from(x), Float32Array.from(w), dy);
  const h = 1e-4;
  for (const [arr, grad] of [
    [x, ref.dx.v],
    [w, ref.dw.v],
  ] as const)
    for (const i of [0, 7, arr.length - 1]) {
      const keep = arr[i];
      arr[i] = keep + h;
      const up = loss();
      arr[i] = keep - h;
      const down = loss();
      arr[i] = keep;
      assert.ok(Math.abs((up - down) / (2 * h) - grad[i]) < 1e-6, `finite difference at ${i}`);
    }
});

test('3x3, stride 1, padding 1, odd sizes', async () => {
  await check(base);
  await check({ ...base, N: 1, C: 5, H: 13, W: 17, O: 7 });
});

test('stride 2 with groups 2', async () => {
  await check({ ...base, C: 4, H: 9, W: 9, O: 6, stride: [2, 2], groups: 2 }, true);
});

test('strided input gradients run as dense stride-phase sub-convolutions', async () => {
  const cases: Case[] = [
    // The ResNet downsampling 3x3: even sizes, not multiples of 4 or of the tile.
    { ...base, N: 3, C: 6, H: 10, W: 14, O: 10, stride: [2, 2] },
    // Odd edges (phases longer than the image), unequal strides, a kernel as wide as the stride.
    { ...base, N: 2, C: 5, H: 11, W: 13, O: 7, k: [3, 3], stride: [2, 3], padding: [1, 0] },
    // The stem's 7x7 stride 2, padding 3.
    { ...base, N: 2, C: 3, H: 13, W: 9, O: 5, k: [7, 7], stride: [2, 2], padding: [3, 3] },
  ];
  for (const c of cases) {
    const { graph, gi } = graphFor(c);
    for (const [, opts] of TEMPLATES) assert.match(renderConv2dGradInput(graph, gi, opts).name, /_phase\dx\d_/);
    await check(c);
  }
});

/**
 * The weight gradient split over K (partial sums into a scratch tensor, then
 * their sum), run kernel by kernel as the executor would; `splitK` forces the
 * number of parts, else chooseSplitK must choose to split.
 */
async function checkSplitWeightGradient(c: Case, splitK?: number) {
  const { graph, y, gw } = graphFor(c);
  const x = random(c.N * c.C * c.H * c.W);
  const dy = random(y.shape.reduce((a, b) => a * b));
  const { dw } = references(c, x, random(c.O * (c.C / c.groups) * c.k[0] * c.k[1]), dy);
  const label = `x [${c.N},${c.C},${c.H},${c.W}] O ${c.O} k ${c.k} s ${c.stride} p ${c.padding} g ${c.groups}`;
  for (const [name, opts] of TEMPLATES) {
    if (splitK === undefined) assert.ok(chooseSplitK(convSpec(graph, gw), opts.target!) > 1, `${name}: split-K chosen for ${label}`);
    const scratch: number[] = [];
    const kernels = renderConv2dGradWeightSplit(graph, gw, { ...opts, splitK, scratch: (elements) => (scratch.push(elements), 1000 + scratch.length) });
    assert.is(kernels.length, 2, `${name}: two passes for ${label}`);
    assert.match(kernels[0].name, /_splitk\d+_/);
    const partials = await runKernel(device, kernels[0], [x, dy], scratch[0]);
    assertClose(await runKernel(device, kernels[1], [partials], dw.v.length), dw, `${name} ${kernels[0].name} + ${kernels[1].name} ${label}`);
  }
}

test('split-K weight gradients: chosen for a long reduction, forced with ragged parts', async () => {
  // A stem-like 7x7 stride 2 with few weights and 3 * 29 * 29 = 2523 pixels to sum (not a multiple of 4).
  await checkSplitWeightGradient({ ...base, N: 3, H: 57, W: 57, O: 5, k: [7, 7], stride: [2, 2], padding: [3, 3] });
  // Forced: K = 70 in 3 parts of 24 (scalar dy loads), K = 300 in 4 parts of 76 (vec4 dy loads, clamped tail), groups.
  await checkSplitWeightGradient(base, 3);
  await checkSplitWeightGradient({ ...base, N: 3, C: 4, H: 10, W: 10, O: 6, groups: 2 }, 4);
});

test('dilation 2, padding 2', async () => {
  await check({ ...base, N: 1, H: 13, W: 11, O: 5, padding: [2, 2], dilation: [2, 2] });
});

test('1x1 kernels: pointwise and strided', async () => {
  await check({ ...base, C: 8, H: 8, W: 8, O: 8, k: [1, 1], padding: [0, 0] });
  await check({ ...base, C: 4, H: 7, W: 7, O: 6, k: [1, 1], padding: [0, 0], stride: [2, 2] });
});

test('7x7 stride 2 padding 3 stem; non-square kernel, stride, padding and dilation', async () => {
  await check({ ...base, N: 1, H: 17, W: 17, O: 5, k: [7, 7], stride: [2, 2], padding: [3, 3] });
  await check({ ...base, H: 9, W: 8, O: 5, k: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [1, 2] }, true);
});

test('medium shape exercising full tiles: [2, 16, 20, 20] -> 24, 3x3', async () => {
  await check({ ...base, C: 16, H: 20, W: 20, O: 24 });
});

test('conv_transpose2d from .lovt and its gradients in x and w on the device vs the float64 reference', async () => {
  // Lowered onto conv2d_grad_input (plus pad / crop where output_padding >= stride); its VJPs are conv2d and conv2d_grad_weight.
  for (const [i, c] of CONV_TRANSPOSE_CASES.entries()) {
    const graph = convTransposeProbe(c);
    await checkAgainstReference(graph, randomFeeds(graph, 300 + i), { rtol: 1e-4, atol: 1e-4 });
  }
});

test('flops and inconsistent geometry', () => {
  const { graph, y, gi } = graphFor(base);
  assert.is(convFlops(graph, y), 2 * 2 * 4 * 7 * 5 * 3 * 9);
  assert.is(convFlops(graph, gi), convFlops(graph, y));
  if (gi.op !== 'conv2d_grad_input') throw new Error(`expected conv2d_grad_input, got ${gi.op}`);
  const wrong: Node = { ...gi, attrs: { ...gi.attrs, inputSize: [8, 5] }, shape: [2, 3, 8, 5] };
  assert.throws(() => renderConv2dGradInput(graph, wrong, { maxWorkgroupsPerDim: 65535 }), /gives 8x5, not 7x5|gives 7x5, not 8x5|gives \d+x\d+, not/);
  assert.throws(() => renderConv2d(graph, gi, { maxWorkgroupsPerDim: 65535 }), /got a 'conv2d_grad_input' node/);
});

test.run();
