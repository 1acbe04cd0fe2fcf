// Static cost estimates of a graph for `lovtc --stats`: op counts and floating
// point operations. A training step is estimated as forward + backward ≈ 3×
// the forward FLOPs (each contraction needs two more of the same size for the
// input and weight gradients), the usual rule of thumb.

import type { Graph, NodeOf, OpName } from '../ir.ts';
import { OPS } from '../ops/index.ts';

/** Floating-point operations of one node (multiply-add = 2): its op's count in the op table. */
export function nodeFlops<P extends OpName>(g: Graph, n: NodeOf<P>): number {
  return OPS[n.op].flops(
    n,
    n.inputs.map((i) => g.nodes[i].shape),
  );
}

export interface GraphStats {
  nodes: number;
  /** Nodes per op name, most frequent first. */
  byOp: [string, number][];
  forwardFlops: number;
  /** Estimated FLOPs of one training step (forward + backward), or the forward FLOPs in eval mode. */
  stepFlops: number;
}

export function graphStats(g: Graph, mode: 'train' | 'eval'): GraphStats {
  const counts = new Map<string, number>();
  let flops = 0;
  for (const n of g.nodes) {
    counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
    flops += nodeFlops(g, n);
  }
  return {
    nodes: g.nodes.length,
    byOp: [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)),
    forwardFlops: flops,
    stepFlops: mode === 'train' ? 3 * flops : flops,
  };
}
