// The op table: every primitive defined once -- kernel family, arity, shape
// rule, gradient, float64 evaluation, FLOP count -- typed over OpName, so a new
// op does not type-check until its entry is complete (docs/engine.md, "Adding a
// primitive"). Attributes are typed in ir.ts (OpAttrs); the WGSL renderers
// have a total table of their own (codegen/index.ts RENDERERS). Every op-class
// set the passes use is derived here from the entries.
//
// GraphBuilder.emit types every node with inferType as it is created, so a
// ShapeError surfaces at the op that caused it (the front end locates it);
// validateGraph re-checks a whole graph after every pass.

import { type Graph, type NodeOf, type OpAttrs, type OpName, shapeStr } from '../ir.ts';
import { type OpDef, type OpKind, type TypedValue, fail } from './def.ts';
import { LEAF_DEFS } from './leaves.ts';
import { ELEMENTWISE_DEFS } from './elementwise.ts';
import { REDUCE_DEFS } from './reduce.ts';
import { LAYOUT_DEFS } from './layout.ts';
import { CONTRACTION_DEFS } from './contraction.ts';
import { NN_DEFS } from './nn.ts';

export { ShapeError, broadcastShapes, normAxis, pair, type OpDef, type OpKind, type TypedValue } from './def.ts';

export const OPS: { [P in OpName]: OpDef<P> } = { ...LEAF_DEFS, ...ELEMENTWISE_DEFS, ...REDUCE_DEFS, ...LAYOUT_DEFS, ...CONTRACTION_DEFS, ...NN_DEFS };

/** Every primitive op (for tests that must cover them all). */
export function primitiveOps(): OpName[] {
  return Object.keys(OPS) as OpName[];
}

/** The fields of an entry that classify it, readable on any entry. */
type OpClass = Pick<OpDef<OpName>, 'kind' | 'inline' | 'view' | 'epilogue' | 'commutative'> & { grad: object };

function opsWhere(pred: (d: OpClass) => boolean): Set<OpName> {
  return new Set(primitiveOps().filter((op) => pred(OPS[op])));
}
const ofKind = (...kinds: OpKind[]) => opsWhere((d) => kinds.includes(d.kind));

/** Fed or stored values, bound as buffers: input, param, buffer. */
export const EXTERNAL_LEAVES = ofKind('leaf');
/** Compile-time constants: full, tensor, iota. */
export const CONSTANT_LEAVES = ofKind('constant');
/** Constants compiled into the expressions that read them: full, iota. */
export const INLINE_LEAVES = opsWhere((d) => d.kind === 'constant' && !!d.inline);
export const ELEMENTWISE = ofKind('elementwise');
export const LAYOUT_OPS = ofKind('layout');
export const REDUCE_OPS = ofKind('reduce');
export const CONTRACTION_OPS = ofKind('contraction');
export const NN_OPS = ofKind('nn');
/** Ops that alias their input's storage when they are not fused into a consumer. */
export const VIEW_OPS = opsWhere((d) => !!d.view);
/** Anchors whose kernels accept an Epilogue. */
export const EPILOGUE_ANCHORS = opsWhere((d) => !!d.epilogue);
/** Ops whose two inputs can be swapped without changing the value. */
export const COMMUTATIVE = opsWhere((d) => !!d.commutative);
/** Ops whose output carries no gradient: leaves, piecewise constant ops, stop_gradient. */
export const NO_GRADIENT = opsWhere((d) => 'none' in d.grad);

/** Type of an op applied to typed inputs. `self` carries the declared type of leaves. */
export function inferType<P extends OpName>(op: P, ins: TypedValue[], attrs: OpAttrs[P], self: TypedValue = { shape: [], dtype: 'f32' }): TypedValue {
  if (!Object.hasOwn(OPS, op)) fail(`unknown primitive '${op}'`);
  const def: OpDef<P> = OPS[op];
  const n = def.arity;
  if (n !== 'variadic' && ins.length !== n) fail(`${op} takes ${n} input${n === 1 ? '' : 's'}, got ${ins.length}`);
  return def.type(ins, attrs, self);
}

/** Checks ids, topological order, leaf bookkeeping and every node's type. Throws Error naming the node. */
export function validateGraph(g: Graph): void {
  const seen = new Set<number>();
  g.nodes.forEach(<P extends OpName>(n: NodeOf<P>, i: number) => {
    if (n.id !== i) throw new Error(`IR: node at index ${i} has id ${n.id}`);
    for (const x of n.inputs) if (!seen.has(x)) throw new Error(`IR: node ${i} (${n.op}) uses %${x} before it is defined`);
    let t: TypedValue;
    try {
      t = inferType(
        n.op,
        n.inputs.map((x) => g.nodes[x]),
        n.attrs,
        n,
      );
    } catch (e) {
      throw new Error(`IR: node ${i} (${n.op}${n.name ? ' ' + n.name : ''}): ${(e as Error).message}`);
    }
    if (shapeStr(t.shape) !== shapeStr(n.shape) || t.dtype !== n.dtype)
      throw new Error(`IR: node ${i} (${n.op}) is typed ${n.dtype}${shapeStr(n.shape)} but its rule gives ${t.dtype}${shapeStr(t.shape)}`);
    seen.add(i);
  });
  for (const [name, id] of Object.entries(g.inputs)) if (g.nodes[id]?.op !== 'input') throw new Error(`IR: input ${name} is not an input node`);
  for (const [name, s] of Object.entries(g.state)) {
    const n = g.nodes[s.node];
    if (!n || (n.op !== 'param' && n.op !== 'buffer')) throw new Error(`IR: state ${name} is not a param/buffer node`);
  }
  for (const [name, id] of Object.entries(g.updates)) {
    const s = g.state[name];
    if (!s) throw new Error(`IR: update of unknown state ${name}`);
    const v = g.nodes[id];
    if (shapeStr(v.shape) !== shapeStr(s.shape)) throw new Error(`IR: update of ${name} ${shapeStr(s.shape)} has shape ${shapeStr(v.shape)}`);
  }
  for (const [name, id] of Object.entries(g.outputs)) if (!g.nodes[id]) throw new Error(`IR: output ${name} refers to missing node ${id}`);
}
