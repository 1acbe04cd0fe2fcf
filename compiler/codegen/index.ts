// The codegen dispatcher: one fused group (compiler/passes/fusion.ts) in, the
// kernels that compute it out, through RENDERERS, the WGSL half of an op's
// definition (the other half is its op-table entry, compiler/ops/).
// Elementwise groups are one expression-compiler kernel (elementwise.ts);
// an anchored group is its anchor's kernel: reductions (reduce.ts), the
// register-tiled contraction generators (matmul.ts, conv.ts),
// pooling/resampling/indexing (nn.ts). An anchored group's elementwise tail
// travels to its generator as an Epilogue.

import type { DType, Graph, NodeOf, OpName } from '../ir.ts';
import type { Group } from '../passes/fusion.ts';
import type { Kernel } from './kernel.ts';
import { FusedEpilogue, renderConcatSlabs, renderElementwise } from './elementwise.ts';
import { EXPRESSIONS, type ExprRenderer } from './expressions.ts';
import { REDUCE_KERNELS } from './reduce.ts';
import { NN_KERNELS } from './nn.ts';
import { renderMatmul } from './matmul.ts';
import { renderConv2d, renderConv2dGradInput, renderConv2dGradWeightSplit } from './conv.ts';
import type { ContractionTarget } from './gemm.ts';
import type { AnchorOptions, KernelRenderer, RenderOptions } from './wgsl.ts';

export type { RenderOptions } from './wgsl.ts';

/**
 * How the codegen computes an op:
 *  - 'leaf': read from the buffer the host, the state store or a constant upload fills;
 *  - an ExprRenderer ({ expr }): evaluated at one flat index by the expression
 *    compiler (elementwise, layout, inline constants), so it fuses anywhere;
 *  - a KernelRenderer ({ kernel }): the kernels of an anchored group.
 */
export type Renderer<P extends OpName> = 'leaf' | ExprRenderer<P> | KernelRenderer<P>;

/** Every op's renderer: a new primitive does not type-check until it has one. */
export const RENDERERS: { [P in OpName]: Renderer<P> } = {
  input: 'leaf',
  param: 'leaf',
  buffer: 'leaf',
  tensor: 'leaf',
  ...EXPRESSIONS,
  ...REDUCE_KERNELS,
  ...NN_KERNELS,
  // Contractions: bindings are the inputs, the epilogue's extras, the output.
  matmul: { kernel: renderMatmul },
  conv2d: { kernel: renderConv2d },
  conv2d_grad_input: { kernel: renderConv2dGradInput },
  // A split-K weight gradient is two kernels joined by a scratch tensor of partial sums.
  conv2d_grad_weight: { kernel: renderConv2dGradWeightSplit },
};

/** The kernels of an anchored node. */
function renderAnchor<P extends OpName>(graph: Graph, node: NodeOf<P>, opts: AnchorOptions): Kernel[] {
  const r: Renderer<P> = RENDERERS[node.op];
  if (typeof r !== 'object' || !('kernel' in r)) throw new Error(`internal: op '${node.op}' (node %${node.id}) has no kernel renderer`);
  return [r.kernel(graph, node, opts)].flat();
}

export interface RenderedGroup {
  kernels: Kernel[];
  /** Scratch tensors the kernels use (ids from opts.scratch), with their sizes. */
  scratch: { id: number; elements: number; dtype: DType }[];
}

/**
 * Renders one group, within `maxStorageBuffers` bindings per kernel (a concat
 * over more inputs becomes several kernels). `target` picks the contraction
 * kernel family for the device (runtime/device.ts contractionTarget; the portable one
 * when absent).
 * `inPlace` is a state tensor the group's root overwrites in place
 * (elementwise and reduction groups only; the planner checks it is safe).
 */
export function renderGroup(
  graph: Graph,
  group: Group,
  limits: { maxWorkgroupsPerDim: number; maxStorageBuffers: number; target?: ContractionTarget },
  newScratchId: () => number,
  inPlace?: number,
): RenderedGroup {
  const scratch: RenderedGroup['scratch'] = [];
  const opts: RenderOptions = {
    maxWorkgroupsPerDim: limits.maxWorkgroupsPerDim,
    subgroupSize: limits.target?.kind === 'simd-cpu' && limits.target.subgroupSize > 0 ? limits.target.subgroupSize : undefined,
    scratch: (elements, dtype) => {
      const id = newScratchId();
      scratch.push({ id, elements, dtype });
      return id;
    },
  };
  const inline = new Set(group.inline);
  if (group.kind === 'elementwise') {
    const kernel = renderElementwise(graph, group.root, inline, opts, inPlace);
    // Only a concat binds an unbounded number of tensors (fusion keeps every other group within the limit).
    if (kernel.bindings.length <= limits.maxStorageBuffers || graph.nodes[group.root].op !== 'concat') return { kernels: [kernel], scratch };
    return { kernels: renderConcatSlabs(graph, group.root, inline, opts, limits.maxStorageBuffers, inPlace), scratch };
  }

  const anchor = graph.nodes[group.anchor!];
  if (inPlace !== undefined && (group.kind !== 'reduce' || group.root === anchor.id))
    throw new Error(`internal: in-place update of %${inPlace} by a ${group.kind} group without an epilogue`);
  if (group.root !== anchor.id) opts.epilogue = new FusedEpilogue(graph, anchor.id, group.root, inline, inPlace);
  const kernels = renderAnchor(graph, anchor, { ...opts, target: limits.target, inline });
  // A fused epilogue stores the group's root, not the anchor: the written binding becomes the root.
  if (group.root !== anchor.id) {
    const last = kernels[kernels.length - 1];
    last.bindings = last.bindings.map((b) => (b.tensor === anchor.id && b.access === 'read_write' ? { ...b, tensor: group.root } : b));
  }
  return { kernels, scratch };
}
