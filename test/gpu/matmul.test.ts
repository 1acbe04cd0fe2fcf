// matmul kernels on the device against an independent float64 matmul, for both
// templates (shared-memory tiled; subgroup, where the device has fixed-size
// subgroups), at awkward sizes, transposes, batch broadcasting, an epilogue,
// a folded workgroup grid and one medium shape that exercises full tiles.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { Graph, Node } from '../../compiler/ir.ts';
import type { Epilogue } from '../../compiler/codegen/kernel.ts';
import { renderMatmul, matmulFlops } from '../../compiler/codegen/matmul.ts';
import type { ContractionOptions, TileConfig } from '../../compiler/codegen/gemm.ts';
import { runKernel, assertWithinF32Bound, contractionTemplates, seededUniform } from './kernel-runner.ts';

const lovt = await getNodeDevice();
const device = lovt.device;
/** The templates this device can run: 'tiled' always, 'subgroup' with a fixed subgroup size. */
const { templates: TEMPLATES, subgroupSize: sg } = contractionTemplates(lovt);
const random = seededUniform(12345);

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** float64 matmul with numpy batch broadcasting; also returns sum |a||b| per output for the error bound. */
function reference(a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], transA: boolean, transB: boolean) {
  const ar = aShape.length;
  const br = bShape.length;
  const M = transA ? aShape[ar - 1] : aShape[ar - 2];
  const K = transA ? aShape[ar - 2] : aShape[ar - 1];
  const N = transB ? bShape[br - 2] : bShape[br - 1];
  const aB = aShape.slice(0, -2);
  const bB = bShape.slice(0, -2);
  const rank = Math.max(aB.length, bB.length);
  const pad = (s: number[]) => [...Array(rank - s.length).fill(1), ...s];
  const [pa, pb] = [pad(aB), pad(bB)];
  const outB = pa.map((d, i) => Math.max(d, pb[i]));
  const batches = prod(outB);
  const y = new Float64Array(batches * M * N);
  const mag = new Float64Array(batches * M * N);
  for (let t = 0; t < batches; t++) {
    // unravel t, then map each coordinate into the (possibly broadcast) operand
    let rem = t;
    const coord = new Array(rank);
    for (let i = rank - 1; i >= 0; i--) {
      coord[i] = rem % outB[i];
      rem = Math.floor(rem / outB[i]);
    }
    let ao = 0;
    let bo = 0;
    for (let i = 0; i < rank; i++) {
      ao = ao * pa[i] + (pa[i] === 1 ? 0 : coord[i]);
      bo = bo * pb[i] + (pb[i] === 1 ? 0 : coord[i]);
    }
    ao *= M * K;
    bo *= K * N;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        let s1 = 0;
        for (let k = 0; k < K; k++) {
          const av = a[ao + (transA ? k * M + m : m * K + k)];
          const bv = b[bo + (transB ? n * K + k : k * N + n)];
          s += av * bv;
          s1 += Math.abs(av * bv);
        }
        y[(t * M + m) * N + n] = s;
        mag[(t * M + m) * N + n] = s1;
      }
  }
  return { y, mag, K };
}

function matmulGraph(aShape: number[], bShape: number[], transA = false, transB = false): { graph: Graph; node: Node } {
  const g = new GraphBuilder();
  const x = g.input('x', aShape);
  const y = g.input('y', bShape);
  const z = g.emit('matmul', [x, y], { transA, transB });
  return { graph: g.graph, node: g.node(z) };
}

/** |got - want| within the f32 summation bound K * 2^-24 * sum|a||b| (plus a hair for the exact-zero case). */
function assertClose(got: Float32Array, want: { y: Float64Array; mag: Float64Array; K: number }, what: string) {
  assertWithinF32Bound(got, want.y, want.mag, want.K, what);
}

/**
 * The templates a case runs on. Every case runs on the subgroup template where
 * the device has one; `tiled` cases also on the tiled template (all of them on
 * a device without subgroups). Compiling a tiled kernel costs lavapipe ~1.5 s
 * the first time (Mesa caches it after that), so the tiled template gets a
 * representative subset.
 */
function templatesFor(tiled: boolean) {
  return tiled || TEMPLATES.length === 1 ? TEMPLATES : TEMPLATES.filter(([name]) => name !== 'tiled');
}

async function check(aShape: number[], bShape: number[], transA = false, transB = false, extra: Partial<ContractionOptions> = {}, tiled = false) {
  const { graph, node } = matmulGraph(aShape, bShape, transA, transB);
  const a = random(prod(aShape));
  const b = random(prod(bShape));
  const want = reference(a, aShape, b, bShape, transA, transB);
  for (const [name, opts] of templatesFor(tiled)) {
    const kernel = renderMatmul(graph, node, { ...opts, ...extra });
    assert.equal(kernel.bindings, [
      { tensor: node.inputs[0], access: 'read' },
      { tensor: node.inputs[1], access: 'read' },
      { tensor: node.id, access: 'read_write' },
    ]);
    const got = await runKernel(device, kernel, [a, b], prod(node.shape));
    assertClose(got, want, `${name} ${kernel.name} [${aShape}]${transA ? 'ᵀ' : ''} @ [${bShape}]${transB ? 'ᵀ' : ''}`);
  }
}

async function checkTile([aShape, bShape, transA, transB]: readonly [readonly number[], readonly number[], boolean, boolean], tile: TileConfig) {
  const { graph, node } = matmulGraph([...aShape], [...bShape], transA, transB);
  const a = random(prod([...aShape]));
  const b = random(prod([...bShape]));
  const kernel = renderMatmul(graph, node, { maxWorkgroupsPerDim: 65535, tile });
  const want = reference(a, [...aShape], b, [...bShape], transA, transB);
  assertClose(await runKernel(device, kernel, [a, b], prod(node.shape)), want, `${kernel.name} ${JSON.stringify(tile)}`);
}

test('awkward small sizes', async () => {
  await check([1, 1], [1, 1]);
  await check([3, 5], [5, 7]);
  await check([13, 17], [17, 33], false, false, {}, true);
  await check([33, 7], [7, 5]);
});

test('narrow N (matrix-vector products run transposed on the subgroup template)', async () => {
  await check([40, 9], [9, 1]);
  await check([3, 37, 8], [8, 3]);
  await check([2, 12, 36], [2, 12, 2], true, false);
});

test('transposed operands', async () => {
  await check([7, 5], [7, 3], true, false);
  await check([5, 13], [17, 13], false, true);
  await check([17, 13], [33, 17], true, true, {}, true);
  await check([8, 12], [12, 16], false, false); // all multiples of 4: vector loads
  await check([12, 36], [20, 12], true, true); // transposed and aligned: vector loads along rows / k
});

test('batch broadcasting', async () => {
  await check([2, 3, 5, 7], [3, 7, 4]); // leading dim broadcast
  await check([4, 5, 6], [6, 3]); // shared weight: batch folds into M
  await check([5, 6], [2, 6, 3]); // shared left operand
  await check([3, 5, 7], [1, 4, 7], false, true); // size-1 batch dim, transposed right operand
  await check([2, 1, 7, 5], [1, 3, 7, 4], true, false, {}, true); // both sides broadcast
});

test('medium shape exercising full tiles (128x200 @ 200x96)', async () => {
  await check([128, 200], [200, 96], false, false, {}, true);
});

test('each load path of the subgroup template (vector/scalar A and B, ragged K) and the big tiles', async () => {
  // [70, 37] @ [37, 131] is ragged everywhere; 72 x 40 x 136 is aligned; 36 is ragged only in K.
  const shapes = {
    ragged: [[70, 37], [37, 131], false, false],
    aligned: [[72, 40], [40, 136], false, false],
    alignedT: [[40, 72], [136, 40], true, true],
    raggedK: [[70, 37], [37, 136], false, false],
  } as const;
  const cases: [TileConfig, keyof typeof shapes][] = [[{ template: 'tiled', tm: 32, tn: 64, tk: 16 }, 'ragged']];
  if (sg > 0)
    for (const [rowsPerLane, colGroups, kStep, shape] of [
      [1, 1, 1, 'ragged'], // scalar A and B, one k per iteration
      [1, 1, 4, 'raggedK'], // scalar A, vector B rows with a zero-filled last k step
      [4, 1, 4, 'alignedT'], // A loaded as 4-row vectors, B as vectors along k
      [2, 2, 4, 'ragged'], // two column groups, scalar loads
      [8, 2, 4, 'aligned'], // the tile chosen for large problems: vector loads along k (A) and rows (B)
    ] as const)
      cases.push([{ template: 'subgroup', subgroupSize: sg, rowsPerLane, colGroups, subgroupsPerWorkgroup: 2, kStep }, shape]);
  for (const [tile, shape] of cases) await checkTile(shapes[shape], tile);
});

test('a grid folded into y when workgroups exceed the per-dimension limit', async () => {
  await check([2, 40, 9], [2, 9, 70], false, false, { maxWorkgroupsPerDim: 8 }, true);
});

test('epilogue: relu(v + bias[n]) with the bias bound after the inputs', async () => {
  const M = 9;
  const K = 11;
  const N = 13;
  const { graph, node } = matmulGraph([M, K], [K, N]);
  const a = random(M * K);
  const b = random(K * N);
  const bias = random(N);
  const biasId = 1000;
  const epilogue: Epilogue = {
    extra: [biasId],
    render: (first) => ({
      decls: `@group(0) @binding(${first}) var<storage, read> ep_bias: array<f32>;`,
      code: `fn epilogue(v: f32, i: u32) -> f32 { return max(v + ep_bias[i % ${N}u], 0.0); }`,
    }),
  };
  const want = reference(a, [M, K], b, [K, N], false, false);
  for (let i = 0; i < want.y.length; i++) {
    want.y[i] = Math.max(want.y[i] + bias[i % N], 0);
    want.mag[i] += Math.abs(bias[i % N]);
  }
  for (const [name, opts] of TEMPLATES) {
    const kernel = renderMatmul(graph, node, { ...opts, epilogue });
    assert.equal(
      kernel.bindings.map((x) => x.tensor),
      [node.inputs[0], node.inputs[1], biasId, node.id],
      name,
    );
    assertClose(await runKernel(device, kernel, [a, b, bias], M * N), want, `${name} epilogue`);
  }
});

test('flops and malformed input', () => {
  const { graph, node } = matmulGraph([2, 3, 4], [4, 5]);
  assert.is(matmulFlops(graph, node), 2 * 2 * 3 * 4 * 5);
  const bad: Node = { ...node, op: 'matmul', attrs: { transB: true } };
  assert.throws(() => renderMatmul(graph, bad, { maxWorkgroupsPerDim: 65535 }), /contraction mismatch/);
  const notMatmul: Node = { ...node, op: 'add', attrs: {} };
  assert.throws(() => renderMatmul(graph, notMatmul, { maxWorkgroupsPerDim: 65535 }), /renderMatmul got a 'add' node/);
});

test.run();
