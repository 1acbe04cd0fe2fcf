// Common-subexpression elimination by hash-consing: two pure nodes with the
// same op, (mapped) inputs, attributes and type compute the same value, so the
// second becomes a use of the first. Dropout is a pure function of
// (x, seed, salt), so only dropouts with equal salts (and inputs) merge; the
// interface leaves (inputs, params, buffers) are never merged.

import { type Attrs, type Node, type Graph } from '../ir.ts';
import { COMMUTATIVE } from '../ops/index.ts';
import { copyNode, rebuildGraph } from './rewrite.ts';

function canonicalAttrs(attrs: Attrs): string {
  return JSON.stringify(Object.entries(attrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function nodeKey(node: Node, inputs: number[]): string {
  const ins = COMMUTATIVE.has(node.op) ? [...inputs].sort((a, b) => a - b) : inputs;
  return `${node.op}|${ins.join(',')}|${canonicalAttrs(node.attrs)}|${node.dtype}[${node.shape.join(',')}]`;
}

export function commonSubexpressionElimination(g: Graph): Graph {
  const seen = new Map<string, number>();
  return rebuildGraph(g, (node, inputs, out) => {
    const key = nodeKey(node, inputs);
    const existing = seen.get(key);
    if (existing !== undefined) return existing;
    const id = copyNode(out, node, inputs);
    seen.set(key, id);
    return id;
  });
}
