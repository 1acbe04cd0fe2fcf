// Constant folding and algebraic simplification. Ops whose inputs are all
// constants are evaluated at compile time by the float64 reference interpreter
// (the ops' own float64 evaluation, so folding can never disagree with it); ops on uniform `full` constants fold
// to a `full` of any size, others only when small. Identities such as x·1,
// x+0, reshape∘reshape and transpose∘transpose are rewritten away.

import { GraphBuilder } from '../builder.ts';
import { type Graph, type Node, type NodeOf, numel, shapeStr } from '../ir.ts';
import { CONSTANT_LEAVES, ELEMENTWISE } from '../ops/index.ts';
import { evaluate } from '../reference.ts';
import { copyNode, rebuildGraph } from './rewrite.ts';

/** Largest result (elements) folded into a `tensor` constant; larger stays a runtime op. */
export const FOLD_MAX_ELEMENTS = 4096;
/** Largest constant input (elements) evaluated at compile time. */
const FOLD_MAX_INPUT_ELEMENTS = 1 << 16;

/** The value every element of a constant node has, or undefined if it is not a uniform constant. */
function uniformValue(n: Node): number | undefined {
  if (n.op === 'full') return n.attrs.value;
  if (n.op === 'tensor') {
    const data = n.attrs.data;
    if (data.length > 0 && data.every((v) => v === data[0])) return data[0];
  }
  return undefined;
}

/** Evaluates `node` on its constant inputs (copied into a scratch graph) with the reference interpreter. */
function evaluateOnConstants(node: Node, inputs: Node[]): Float64Array {
  const scratch = new GraphBuilder();
  const ids = inputs.map((n) => copyNode(scratch, n, []));
  const id = copyNode(scratch, node, ids);
  return evaluate(scratch.graph, { inputs: {}, state: {} }).values[id];
}

/** A constant node for `values` with `node`'s type: `full` when uniform, else `tensor`. */
function emitConstant(out: GraphBuilder, node: Node, values: ArrayLike<number>): number {
  const first = values[0];
  let uniform = true;
  for (let i = 1; i < values.length && uniform; i++) uniform = Object.is(values[i], first);
  if (uniform) return out.emit('full', [], { value: first }, { shape: node.shape, dtype: node.dtype, name: node.name });
  return out.emit('tensor', [], { data: Array.from(values) }, { shape: node.shape, dtype: node.dtype, name: node.name });
}

function tryFoldConstant(node: Node, ins: Node[], out: GraphBuilder): number | undefined {
  if (ins.length === 0 || !ins.every((n) => CONSTANT_LEAVES.has(n.op))) return undefined;
  if (ELEMENTWISE.has(node.op) && node.op !== 'dropout' && ins.every((n) => uniformValue(n) !== undefined)) {
    // uniform in, uniform out: fold on scalars, whatever the size
    const scalars = ins.map((n): NodeOf<'full'> => ({ id: n.id, op: 'full', inputs: [], attrs: { value: uniformValue(n)! }, shape: [], dtype: n.dtype }));
    const v = evaluateOnConstants({ ...node, shape: [] }, scalars)[0];
    return out.emit('full', [], { value: v }, { shape: node.shape, dtype: node.dtype, name: node.name });
  }
  if (numel(node.shape) > FOLD_MAX_ELEMENTS || ins.some((n) => numel(n.shape) > FOLD_MAX_INPUT_ELEMENTS)) return undefined;
  return emitConstant(out, node, evaluateOnConstants(node, ins));
}

function sameType(a: Node, b: Node): boolean {
  return a.dtype === b.dtype && shapeStr(a.shape) === shapeStr(b.shape);
}

/** Returns the id (in `out`) that `node` simplifies to, or undefined to keep it. */
function simplify(node: Node, inputs: number[], out: GraphBuilder): number | undefined {
  const ins = inputs.map((i) => out.node(i));
  const isConst = (k: number, v: number) => uniformValue(ins[k]) === v;
  // `x op c` is x when c is the identity element and x already has the result's type.
  const passThrough = (k: number) => (sameType(ins[k], node) ? inputs[k] : undefined);
  switch (node.op) {
    case 'add':
      if (isConst(1, 0)) return passThrough(0);
      if (isConst(0, 0)) return passThrough(1);
      return undefined;
    case 'sub':
      return isConst(1, 0) ? passThrough(0) : undefined;
    case 'mul':
      if (isConst(1, 1)) return passThrough(0);
      if (isConst(0, 1)) return passThrough(1);
      return undefined;
    case 'div':
    case 'pow':
      return isConst(1, 1) ? passThrough(0) : undefined;
    case 'neg':
      return ins[0].op === 'neg' ? ins[0].inputs[0] : undefined;
    case 'cast':
      return ins[0].dtype === node.dtype ? inputs[0] : undefined;
    case 'reshape':
    case 'expand':
      if (sameType(ins[0], node)) return inputs[0];
      if (node.op === 'reshape' && ins[0].op === 'reshape') {
        const source = ins[0].inputs[0];
        return sameType(out.node(source), node) ? source : out.reshape(source, node.shape);
      }
      return undefined;
    case 'transpose': {
      const perm = node.attrs.perm;
      let source = inputs[0];
      let composed = perm;
      if (ins[0].op === 'transpose') {
        const inner = ins[0].attrs.perm;
        composed = perm.map((p) => inner[p]);
        source = ins[0].inputs[0];
      }
      if (composed.every((p, k) => p === k)) return source;
      return source === inputs[0] ? undefined : out.transpose(source, composed);
    }
    case 'slice':
    case 'pad':
    case 'sum':
      return sameType(ins[0], node) && (node.op !== 'pad' || node.attrs.pads.every((p) => p === 0)) ? inputs[0] : undefined;
  }
  return undefined;
}

export function constantFold(g: Graph): Graph {
  return rebuildGraph(g, (node, inputs, out) => {
    if (CONSTANT_LEAVES.has(node.op)) return copyNode(out, node, inputs);
    const ins = inputs.map((i) => out.node(i));
    return tryFoldConstant(node, ins, out) ?? simplify(node, inputs, out) ?? copyNode(out, node, inputs);
  });
}
