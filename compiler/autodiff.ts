// Reverse-mode automatic differentiation on the graph IR: each primitive's VJP
// rule (its `grad` in the op table, compiler/ops/; docs/ir.md lists them) is
// applied in reverse topological order to the nodes that lie on a path from a
// `wrt` leaf to the loss. The backward nodes are appended to the same graph
// through the GraphBuilder, so they are typed like everything else and later
// passes (CSE, fold, DCE) clean up the redundancy the rules leave behind
// (repeated scalar constants, etc.).

import type { GraphBuilder } from './builder.ts';
import { type NodeOf, type OpName, numel, shapeStr } from './ir.ts';
import { OPS } from './ops/index.ts';

/** Which inputs of `node` a gradient can flow into. */
function gradientEdges<P extends OpName>(node: NodeOf<P>, nodes: NodeOf<OpName>[]): boolean[] {
  const grad = OPS[node.op].grad;
  if ('none' in grad || node.dtype !== 'f32') return node.inputs.map(() => false);
  return node.inputs.map((id, k) => (grad.inputs ? grad.inputs[k] : true) && nodes[id].dtype === 'f32');
}

/** The gradient contributions of node `id`'s VJP rule, one per input (null where none). */
function vjp<P extends OpName>(b: GraphBuilder, node: NodeOf<P>, g: number, need: boolean[]): (number | null)[] {
  const grad = OPS[node.op].grad;
  if ('none' in grad) throw new Error(`autodiff: internal error, ${node.op} (node ${node.id}) has no gradient: ${grad.none}`);
  return grad.vjp({ b, node, x: node.inputs, y: node.id, g, need });
}

/**
 * Appends the backward graph of `loss` to `b` and returns, for every id in
 * `wrt`, the id of its gradient node (shaped like it). `loss` must be an f32
 * scalar (any shape with one element) unless `seed`, a gradient for the loss
 * shaped like it, is given. Only nodes on a path from a `wrt` node to the loss
 * are differentiated, so sub-graphs of frozen state get no backward nodes.
 */
export function gradients(b: GraphBuilder, loss: number, wrt: number[], seed?: number): Map<number, number> {
  const nodes = b.graph.nodes;
  const lossNode = nodes[loss];
  if (!lossNode) throw new Error(`autodiff: loss node ${loss} does not exist`);
  if (lossNode.dtype !== 'f32') throw new Error(`autodiff: the loss must be f32, node ${loss} (${lossNode.op}) is ${lossNode.dtype}`);
  if (seed === undefined && numel(lossNode.shape) !== 1)
    throw new Error(
      `autodiff: the loss must be a scalar, node ${loss} (${lossNode.op}${lossNode.name ? ' ' + lossNode.name : ''}) has shape ${shapeStr(lossNode.shape)}`,
    );
  if (seed !== undefined && shapeStr(nodes[seed].shape) !== shapeStr(lossNode.shape))
    throw new Error(`autodiff: seed gradient ${shapeStr(nodes[seed].shape)} does not match loss ${shapeStr(lossNode.shape)}`);
  for (const w of wrt) {
    if (!nodes[w]) throw new Error(`autodiff: wrt node ${w} does not exist`);
    if (nodes[w].dtype !== 'f32')
      throw new Error(`autodiff: cannot differentiate with respect to ${nodes[w].dtype} node ${w} (${nodes[w].name ?? nodes[w].op})`);
  }

  // Forward: which nodes depend (differentiably) on a wrt node.
  const wrtSet = new Set(wrt);
  const edges = nodes.slice(0, loss + 1).map((n) => gradientEdges(n, nodes));
  const dependent = new Array<boolean>(loss + 1).fill(false);
  for (let id = 0; id <= loss; id++) dependent[id] = wrtSet.has(id) || nodes[id].inputs.some((i, k) => edges[id][k] && dependent[i]);
  // Backward: which of those the loss depends on.
  const onPath = new Array<boolean>(loss + 1).fill(false);
  onPath[loss] = dependent[loss];
  for (let id = loss; id >= 0; id--) {
    if (!onPath[id]) continue;
    nodes[id].inputs.forEach((i, k) => {
      if (edges[id][k] && dependent[i]) onPath[i] = true;
    });
  }

  const grads = new Map<number, number>();
  const accumulate = (id: number, g: number) => {
    const want = nodes[id].shape;
    if (shapeStr(nodes[g].shape) !== shapeStr(want))
      throw new Error(`autodiff: internal error, gradient for node ${id} (${nodes[id].op}) has shape ${shapeStr(nodes[g].shape)}, expected ${shapeStr(want)}`);
    const prev = grads.get(id);
    grads.set(id, prev === undefined ? g : b.add(prev, g));
  };
  if (onPath[loss]) grads.set(loss, seed ?? b.full(1, lossNode.shape));

  for (let id = loss; id >= 0; id--) {
    const g = grads.get(id);
    if (!onPath[id] || g === undefined || nodes[id].inputs.length === 0) continue;
    const node = nodes[id];
    const need = node.inputs.map((i, k) => edges[id][k] && onPath[i]);
    if (!need.some(Boolean)) continue;
    const contributions = vjp(b, node, g, need);
    node.inputs.forEach((i, k) => {
      const c = contributions[k];
      if (need[k] && c !== null && c !== undefined) accumulate(i, c);
    });
  }

  const result = new Map<number, number>();
  for (const w of wrt) result.set(w, grads.get(w) ?? b.full(0, nodes[w].shape));
  return result;
}
