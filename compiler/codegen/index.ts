// The codegen dispatcher: one fused group (compiler/passes/fusion.ts) in, the
// kernels that compute it out. Elementwise groups and reductions are rendered
// here; matmul/conv go to the register-tiled generators in matmul.ts/conv.ts,
// pooling/resampling/indexing to nn.ts. An anchored group's elementwise tail
// travels to its generator as an Epilogue.

import type { DType, Graph, Node } from '../ir.ts';
import type { Group } from '../passes/fusion.ts';
import type { Kernel } from './kernel.ts';
import { FusedEpilogue, renderConcatSlabs, renderElementwise } from './elementwise.ts';
import { renderReduce } from './reduce.ts';
import { renderNN } from './nn.ts';
import { renderMatmul } from './matmul.ts';
import { renderConv2d, renderConv2dGradInput, renderConv2dGradWeightSplit } from './conv.ts';
import type { ContractionOptions, ContractionTarget } from './tiling.ts';
import type { RenderOptions } from './wgsl.ts';

export type { RenderOptions } from './wgsl.ts';

/** The register-tiled contraction generators (matmul.ts, conv.ts): bindings are the inputs, epilogue extras, the output. */
const CONTRACTIONS: Record<string, (graph: Graph, node: Node, opts: ContractionOptions) => Kernel | Kernel[]> = {
  matmul: renderMatmul,
  conv2d: renderConv2d,
  conv2d_grad_input: renderConv2dGradInput,
  conv2d_grad_weight: renderConv2dGradWeightSplit,
};

export interface RenderedGroup {
  kernels: Kernel[];
  /** Scratch tensors the kernels use (ids from opts.scratch), with their sizes. */
  scratch: { id: number; elements: number; dtype: DType }[];
}

/**
 * Renders one group, within `maxStorageBuffers` bindings per kernel (a concat
 * over more inputs becomes several kernels). `target` picks the contraction
 * kernel family for the device (tiling.ts contractionTarget; the portable one
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
  let kernels: Kernel[];
  if (group.kind === 'reduce') kernels = [renderReduce(graph, anchor, opts, inline)];
  else if (group.kind === 'nn') kernels = renderNN(graph, anchor, opts);
  else {
    const render = CONTRACTIONS[anchor.op];
    if (!render) throw new Error(`internal: no contraction generator for '${anchor.op}' (node %${anchor.id})`);
    // A split-K weight gradient is two kernels joined by a scratch tensor of partial sums.
    const contraction = { maxWorkgroupsPerDim: opts.maxWorkgroupsPerDim, epilogue: opts.epilogue, target: limits.target, scratch: opts.scratch };
    kernels = [render(graph, anchor, contraction)].flat();
  }
  // A fused epilogue stores the group's root, not the anchor: the written binding becomes the root.
  if (group.root !== anchor.id) {
    const last = kernels[kernels.length - 1];
    last.bindings = last.bindings.map((b) => (b.tensor === anchor.id && b.access === 'read_write' ? { ...b, tensor: group.root } : b));
  }
  return { kernels, scratch };
}
