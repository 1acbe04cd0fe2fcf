// Static cost estimates of a graph for `lovtc --stats`: op counts and floating
// point operations. A training step is estimated as forward + backward ≈ 3×
// the forward FLOPs (each contraction needs two more of the same size for the
// input and weight gradients), the usual rule of thumb.

import { type Graph, type Node, numel } from '../ir.ts';

/** Floating-point operations of one node (multiply-add = 2). */
export function nodeFlops(g: Graph, n: Node): number {
  const out = numel(n.shape);
  const inShape = (i: number) => g.nodes[n.inputs[i]].shape;
  switch (n.op) {
    case 'input':
    case 'param':
    case 'buffer':
    case 'full':
    case 'tensor':
    case 'iota':
    case 'reshape':
    case 'transpose':
    case 'expand':
    case 'slice':
    case 'concat':
    case 'pad':
    case 'gather':
    case 'cast':
    case 'stop_gradient':
      return 0;
    case 'matmul': {
      const a = inShape(0);
      const k = n.attrs.transA ? a[a.length - 2] : a[a.length - 1];
      return 2 * out * k;
    }
    case 'conv2d': {
      const w = inShape(1);
      return 2 * out * w[1] * w[2] * w[3];
    }
    case 'sum':
    case 'max':
      return numel(inShape(0));
    case 'logsumexp':
    case 'softmax':
      return 4 * numel(inShape(0));
    case 'max_pool2d':
    case 'avg_pool2d': {
      const k = n.attrs.kernel;
      const kk = Array.isArray(k) ? k[0] * k[1] : (k as number) ** 2;
      return out * kk;
    }
    case 'upsample2d':
      return 4 * out;
    case 'segment_max':
      return numel(inShape(0));
    default:
      return out; // elementwise
  }
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
