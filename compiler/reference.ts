// The float64 reference interpreter of the graph IR: the executable form of
// docs/ir.md. Each op's evaluation is its `eval` in the op table
// (compiler/ops/), deliberately simple (direct loops, no fusion, no tiling),
// so that it can serve as the oracle for the WGSL kernels, autodiff's finite
// differences, the graph passes and the optimizer programs, and so that
// constant folding and the front end's compile-time math can never disagree
// with it. Every value is a Float64Array; i32 values are stored as integral
// doubles and follow WGSL's wrapping integer arithmetic.

import { type Graph, type NodeOf, type OpName, type Shape, numel, shapeStr } from './ir.ts';
import { OPS } from './ops/index.ts';
import type { Feeds } from './ops/float64.ts';
import type { Binary, Compare, Unary } from './ops/elementwise.ts';

export type { Feeds, FeedValue } from './ops/float64.ts';
export { erf, gelu } from './ops/float64.ts';

export interface Evaluation {
  /** The value of every node, indexed by node id. */
  values: Float64Array[];
  /** graph.outputs resolved to values. */
  outputs: Record<string, Float64Array>;
  /** graph.updates resolved to values: the new state, applied by the caller after the run. */
  updates: Record<string, Float64Array>;
}

/** One node's float64 value from its inputs' values (the op table's eval). */
export function evalNode<P extends OpName>(node: NodeOf<P>, ins: Float64Array[], shapes: Shape[], feeds: Feeds): Float64Array {
  return OPS[node.op].eval({ node, ins, shapes, feeds });
}

/** Runs every node of `graph` in order and returns all values, the named outputs and the state updates. */
export function evaluate(graph: Graph, feeds: Feeds): Evaluation {
  const values: Float64Array[] = [];
  for (const node of graph.nodes) {
    const ins = node.inputs.map((i) => values[i]);
    let v: Float64Array;
    try {
      v = evalNode(
        node,
        ins,
        node.inputs.map((i) => graph.nodes[i].shape),
        feeds,
      );
    } catch (e) {
      throw new Error(`reference: node ${node.id} (${node.op}${node.name ? ' ' + node.name : ''}${shapeStr(node.shape)}): ${(e as Error).message}`);
    }
    if (v.length !== numel(node.shape))
      throw new Error(`reference: node ${node.id} (${node.op}) produced ${v.length} values for shape ${shapeStr(node.shape)}`);
    values.push(v);
  }
  const outputs: Record<string, Float64Array> = {};
  for (const [name, id] of Object.entries(graph.outputs)) outputs[name] = values[id];
  const updates: Record<string, Float64Array> = {};
  for (const [name, id] of Object.entries(graph.updates)) updates[name] = values[id];
  return { values, outputs, updates };
}

/** Ops computable on compile-time numbers: the attribute-free elementwise math. */
export type ScalarOp = Unary | Binary | Compare;

/**
 * `op` applied to scalar numbers in float64, exactly as the reference
 * evaluates it on f32 tensors: the front end's compile-time math
 * (`sqrt(1 / 3)`) and constant folding go through here.
 */
export function evalScalar(op: ScalarOp, args: number[]): number {
  const node = { id: args.length, op, inputs: args.map((_, i) => i), attrs: {}, shape: [], dtype: 'f32' } as NodeOf<ScalarOp>;
  return evalNode(
    node,
    args.map((v) => Float64Array.of(v)),
    args.map(() => []),
    {},
  )[0];
}
