// Dead-code elimination: keep the nodes some output or state update needs
// (plus every input/param/buffer leaf, the program's interface), drop the rest.

import { type Graph } from '../ir.ts';
import { copyNode, rebuildGraph } from './rewrite.ts';

/** Marks every node reachable backwards from the outputs and updates. */
export function liveNodes(g: Graph): boolean[] {
  const live = new Array<boolean>(g.nodes.length).fill(false);
  for (const id of [...Object.values(g.outputs), ...Object.values(g.updates)]) live[id] = true;
  for (let id = g.nodes.length - 1; id >= 0; id--) if (live[id]) for (const i of g.nodes[id].inputs) live[i] = true;
  return live;
}

export function deadCodeElimination(g: Graph): Graph {
  const live = liveNodes(g);
  return rebuildGraph(g, (node, inputs, out) => (live[node.id] ? copyNode(out, node, inputs) : -1));
}
