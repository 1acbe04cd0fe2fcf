// The matmul generator: [...batch, M, K] x [...batch, K, N] with optional
// transposes and numpy batch broadcasting, described as an implicit GEMM for
// the templates in gemm.ts. A weight shared across the batch
// ([B, M, K] x [K, N], a linear layer) folds the batch into M, so it runs as
// one large GEMM instead of B small ones.

import { type Graph, type Node, numel, shapeStr } from '../ir.ts';
import { broadcastShapes } from '../ops/index.ts';
import type { Kernel } from './kernel.ts';
import { type ContractionOptions, type GemmOperand, type GemmSpec, ParamBlock, renderGemm } from './gemm.ts';

export interface MatmulDims {
  /** Broadcast batch shape of the output. */
  batchShape: number[];
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
}

function describe(node: Node): string {
  return `matmul (node %${node.id}${node.name ? ' ' + node.name : ''})`;
}

/** The GEMM dimensions of a matmul node; throws a located error on malformed input. */
export function matmulDims(graph: Graph, node: Node): MatmulDims {
  if (node.op !== 'matmul') throw new Error(`renderMatmul got a '${node.op}' node (%${node.id})`);
  if (node.inputs.length !== 2) throw new Error(`${describe(node)} takes 2 inputs, got ${node.inputs.length}`);
  const [x, y] = node.inputs.map((i) => graph.nodes[i]);
  for (const t of [x, y, node]) if (t.dtype !== 'f32') throw new Error(`${describe(node)}: only f32 is supported, %${t.id} is ${t.dtype}`);
  if (x.shape.length < 2 || y.shape.length < 2)
    throw new Error(`${describe(node)} needs rank >= 2 operands, got ${shapeStr(x.shape)} and ${shapeStr(y.shape)}`);
  const transA = !!node.attrs.transA;
  const transB = !!node.attrs.transB;
  const xr = x.shape.length;
  const yr = y.shape.length;
  const [M, K] = transA ? [x.shape[xr - 1], x.shape[xr - 2]] : [x.shape[xr - 2], x.shape[xr - 1]];
  const [K2, N] = transB ? [y.shape[yr - 1], y.shape[yr - 2]] : [y.shape[yr - 2], y.shape[yr - 1]];
  if (K !== K2) throw new Error(`${describe(node)}: contraction mismatch ${shapeStr(x.shape)} @ ${shapeStr(y.shape)} (${K} vs ${K2})`);
  const batchShape = broadcastShapes(x.shape.slice(0, -2), y.shape.slice(0, -2));
  return { batchShape, M, N, K, transA, transB };
}

/** Floating-point operations of a matmul node (2 per multiply-add). */
export function matmulFlops(graph: Graph, node: Node): number {
  const d = matmulDims(graph, node);
  return 2 * numel(d.batchShape) * d.M * d.N * d.K;
}

/**
 * WGSL expression of an operand's element offset for flat output batch index
 * `b`: the operand's own batch dims are right-aligned against the output's,
 * and dims of size 1 (broadcast) contribute nothing. Sizes and strides are
 * params named after the operand (`name`); only which dims broadcast is
 * structural.
 */
function batchOffset(p: ParamBlock, name: string, outBatch: number[], own: number[], matrixSize: number, b: string): string {
  // One matrix (stride 0) or one per output batch index: the same code.
  if (numel(own) === 1 || (own.length === outBatch.length && own.every((d, i) => d === outBatch[i])))
    return `(${b}) * ${p.get(`${name}Stride`, numel(own) === 1 ? 0 : matrixSize)}`;
  const terms: string[] = [];
  let outStride = 1; // stride of dim i in the flat output batch index
  let ownStride = matrixSize; // stride of dim i in the operand
  for (let i = outBatch.length - 1; i >= 0; i--) {
    const j = own.length - (outBatch.length - i);
    const size = j >= 0 ? own[j] : 1;
    if (size !== 1) {
      const d = `${name}Dim${i}`;
      terms.push(`((${b}) / ${p.get(`${d}OutStride`, outStride)} % ${p.get(`${d}Size`, outBatch[i])}) * ${p.get(`${d}Stride`, ownStride)}`);
    }
    outStride *= outBatch[i];
    ownStride *= size;
  }
  return terms.length ? `(${terms.join(' + ')})` : '0u';
}

/** The implicit-GEMM description of a matmul node. */
export function matmulSpec(graph: Graph, node: Node): GemmSpec {
  const { batchShape, M, N, K, transA, transB } = matmulDims(graph, node);
  const [x, y] = node.inputs.map((i) => graph.nodes[i]);
  const xBatch = x.shape.slice(0, -2);
  const yBatch = y.shape.slice(0, -2);
  const batch = numel(batchShape);

  // [B..., M, K] x [K, N] (B's batch all ones, A untransposed and not broadcast):
  // the batch rows are contiguous, so fold them into M.
  const fold = batch > 1 && numel(yBatch) === 1 && !transA && numel(xBatch) === batch;
  const gBatch = fold ? 1 : batch;
  const gM = fold ? batch * M : M;
  const p = new ParamBlock();
  // Folded, the GEMM batch is 1 and b is always 0.
  const aOff = (b: string) => batchOffset(p, 'a', fold ? [] : batchShape, fold ? [] : xBatch, M * K, b);
  const bOff = (b: string) => batchOffset(p, 'b', fold ? [] : batchShape, fold ? [] : yBatch, K * N, b);
  // Row strides: A's is K (or gM transposed), B's is N (or K transposed), the output's N.
  const lda = () => p.get('lda', transA ? gM : K);
  const ldb = () => p.get('ldb', transB ? K : N);
  const ldo = () => p.get('ldo', N);

  const a: GemmOperand = transA
    ? { input: 'mm_a', fast: 'r', vec4: gM % 4 === 0 ? 'r' : undefined, index: (b, m, k) => `${aOff(b)} + (${k}) * ${lda()} + (${m})` }
    : { input: 'mm_a', fast: 'k', vec4: K % 4 === 0 ? 'k' : undefined, index: (b, m, k) => `${aOff(b)} + (${m}) * ${lda()} + (${k})` };
  const bOp: GemmOperand = transB
    ? { input: 'mm_b', fast: 'k', vec4: K % 4 === 0 ? 'k' : undefined, index: (b, n, k) => `${bOff(b)} + (${n}) * ${ldb()} + (${k})` }
    : { input: 'mm_b', fast: 'r', vec4: N % 4 === 0 ? 'r' : undefined, index: (b, n, k) => `${bOff(b)} + (${k}) * ${ldb()} + (${n})` };
  return {
    op: 'matmul',
    params: p,
    batch: gBatch,
    M: gM,
    N,
    K,
    inputs: [
      { tensor: x.id, name: 'mm_a', numel: numel(x.shape) },
      { tensor: y.id, name: 'mm_b', numel: numel(y.shape) },
    ],
    a,
    b: bOp,
    out: (b, m, n) => `(${b}) * ${p.get('outStride', gM * N)} + (${m}) * ${ldo()} + (${n})`,
    outVec4: N % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * batch * M * N * K,
  };
}

/** One kernel computing a matmul node (bindings: x, y, the epilogue's extras, the output). */
export function renderMatmul(graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  return renderGemm(matmulSpec(graph, node), opts);
}
