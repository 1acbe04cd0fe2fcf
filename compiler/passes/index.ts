// The graph optimisation pipeline: constant folding and algebraic identities,
// common-subexpression elimination, then dead-code elimination, repeated while
// the graph keeps shrinking. Each pass returns a new, renumbered graph and is
// followed by validateGraph, so a broken rewrite is caught at the pass that
// made it.

import { type Graph } from '../ir.ts';
import { validateGraph } from '../ops/index.ts';
import { constantFold } from './fold.ts';
import { commonSubexpressionElimination } from './cse.ts';
import { deadCodeElimination } from './dce.ts';

export { constantFold } from './fold.ts';
export { commonSubexpressionElimination } from './cse.ts';
export { deadCodeElimination, liveNodes } from './dce.ts';

export interface Pass {
  name: string;
  run: (g: Graph) => Graph;
}

export const DEFAULT_PASSES: Pass[] = [
  { name: 'fold', run: constantFold },
  { name: 'cse', run: commonSubexpressionElimination },
  { name: 'dce', run: deadCodeElimination },
];

/** Runs one pass and re-validates its result, naming the pass in any error. */
export function runPass(pass: Pass, g: Graph): Graph {
  const result = pass.run(g);
  try {
    validateGraph(result);
  } catch (e) {
    throw new Error(`pass ${pass.name} produced an invalid graph: ${(e as Error).message}`);
  }
  return result;
}

/** fold → cse → dce, repeated (at most `maxRounds` rounds) until a round removes no node. */
export function optimize(graph: Graph, passes: Pass[] = DEFAULT_PASSES, maxRounds = 4): Graph {
  validateGraph(graph);
  let g = graph;
  for (let round = 0; round < maxRounds; round++) {
    const before = g.nodes.length;
    for (const pass of passes) g = runPass(pass, g);
    if (g.nodes.length >= before) break;
  }
  return g;
}
