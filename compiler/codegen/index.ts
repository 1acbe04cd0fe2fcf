// The codegen dispatcher: one fused group (compiler/passes/fusion.ts) in, the
// kernels that compute it out. Elementwise groups and reductions are rendered
// here; matmul/conv go to the register-tiled generators in matmul.ts/conv.ts,
// pooling/resampling/indexing to nn.ts. An anchored group's elementwise tail
// travels to its generator as an Epilogue.

import type { DType, Graph, Node } from '../ir.ts';
import type { Group } from '../passes/fusion.ts';
import type { Epilogue, Kernel } from './kernel.ts';
import { FusedEpilogue, renderElementwise } from './elementwise.ts';
import { renderReduce } from './reduce.ts';
import { renderNN } from './nn.ts';
import type { RenderOptions } from './wgsl.ts';

export type { RenderOptions } from './wgsl.ts';

/** A generator for a contraction op, with H4's signature (bindings: inputs, epilogue extras, output). */
export type ContractionRenderer = (graph: Graph, node: Node, opts: { maxWorkgroupsPerDim: number; epilogue?: Epilogue }) => Kernel;

/**
 * matmul / conv generators by op. They live in matmul.ts and conv.ts (another
 * engineer's files) and are registered here once those exist; until then
 * those ops are refused with a clear error.
 */
const CONTRACTIONS: Partial<Record<string, ContractionRenderer>> = {};

export function registerContraction(op: 'matmul' | 'conv2d' | 'conv2d_grad_input' | 'conv2d_grad_weight', render: ContractionRenderer): void {
  CONTRACTIONS[op] = render;
}

export interface RenderedGroup {
  kernels: Kernel[];
  /** Scratch tensors the kernels use (ids from opts.scratch), with their sizes. */
  scratch: { id: number; elements: number; dtype: DType }[];
}

/** Renders one group. `opts.scratch` is supplied here; callers pass the device limits only. */
export function renderGroup(graph: Graph, group: Group, limits: { maxWorkgroupsPerDim: number }, newScratchId: () => number): RenderedGroup {
  const scratch: RenderedGroup['scratch'] = [];
  const opts: RenderOptions = {
    maxWorkgroupsPerDim: limits.maxWorkgroupsPerDim,
    scratch: (elements, dtype) => {
      const id = newScratchId();
      scratch.push({ id, elements, dtype });
      return id;
    },
  };
  const inline = new Set(group.inline);
  if (group.kind === 'elementwise') return { kernels: [renderElementwise(graph, group.root, inline, opts)], scratch };

  const anchor = graph.nodes[group.anchor!];
  if (group.root !== anchor.id) opts.epilogue = new FusedEpilogue(graph, anchor.id, group.root, inline);
  let kernels: Kernel[];
  if (group.kind === 'reduce') kernels = [renderReduce(graph, anchor, opts, inline)];
  else if (group.kind === 'nn') kernels = renderNN(graph, anchor, opts);
  else {
    const render = CONTRACTIONS[anchor.op];
    if (!render)
      throw new Error(`no WGSL generator is registered for '${anchor.op}' (node %${anchor.id}${anchor.name ? ' ' + anchor.name : ''}); compiler/codegen/matmul.ts and conv.ts provide them`);
    const k = render(graph, anchor, { maxWorkgroupsPerDim: opts.maxWorkgroupsPerDim, epilogue: opts.epilogue });
    kernels = [k];
  }
  // A fused epilogue stores the group's root, not the anchor: the written binding becomes the root.
  if (group.root !== anchor.id) {
    const last = kernels[kernels.length - 1];
    last.bindings = last.bindings.map((b) => (b.tensor === anchor.id && b.access === 'read_write' ? { ...b, tensor: group.root } : b));
  }
  return { kernels, scratch };
}
