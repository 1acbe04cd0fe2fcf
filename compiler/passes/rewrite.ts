// The one way passes produce a new graph: walk the old nodes in order and let
// the pass decide, per node, which node of the new graph stands for it (a copy,
// an existing node, or freshly emitted constants). Leaves that form the
// program's interface (inputs, params, buffers) are always carried over, so a
// pass never changes what the host feeds or which state a program shares.

import { GraphBuilder } from '../builder.ts';
import { type Graph, type Node, type StateInfo } from '../ir.ts';

/**
 * Decides what the new graph uses for `node`, whose inputs are already mapped
 * to `inputs` (ids in `out`, -1 for a dropped input). Returns an id in `out`,
 * or -1 for "dropped" (only valid for nodes nothing kept refers to).
 */
export type NodeVisitor = (node: Node, inputs: number[], out: GraphBuilder) => number;

/** Appends a copy of `node` with new input ids to `out`. */
export function copyNode(out: GraphBuilder, node: Node, inputs: number[]): number {
  const dropped = node.inputs.find((_, k) => inputs[k] < 0);
  if (dropped !== undefined) throw new Error(`pass: node ${node.id} (${node.op}) uses node ${dropped}, which the pass dropped`);
  return out.emit(node.op, inputs, node.attrs, { name: node.name, loc: node.loc, shape: node.shape, dtype: node.dtype });
}

/** Rebuilds `g` through `visit`, renumbering nodes and remapping inputs, state, outputs and updates. */
export function rebuildGraph(g: Graph, visit: NodeVisitor): Graph {
  const out = new GraphBuilder();
  const stateByNode = new Map<number, StateInfo>();
  for (const s of Object.values(g.state)) stateByNode.set(s.node, s);
  const map = new Array<number>(g.nodes.length).fill(-1);
  for (const node of g.nodes) {
    const inputs = node.inputs.map((i) => map[i]); // -1 where the pass dropped the input
    if (node.op === 'input') {
      map[node.id] = out.input(node.attrs.name, node.shape, node.dtype, node.loc);
    } else if (node.op === 'param' || node.op === 'buffer') {
      const s = stateByNode.get(node.id);
      if (!s) throw new Error(`pass: ${node.op} node ${node.id} is not registered in graph.state`);
      map[node.id] = out.state(s.name, s.shape, s.init, s.trainable, s.dtype, node.loc);
    } else {
      map[node.id] = visit(node, inputs, out);
    }
  }
  const remap = (id: number, what: string) => {
    if (map[id] < 0) throw new Error(`pass: ${what} refers to node ${id}, which the pass dropped`);
    return map[id];
  };
  for (const [name, id] of Object.entries(g.outputs)) out.output(name, remap(id, `output ${name}`));
  for (const [name, id] of Object.entries(g.updates)) out.update(name, remap(id, `update of ${name}`));
  return out.graph;
}
