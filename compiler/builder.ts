// GraphBuilder: the one way to append typed nodes to a Graph. The front end,
// autodiff and the training-program builder all emit through it, so every node
// is typed by its op's rule (compiler/ops/) at the moment it is created.

import { type DType, type Graph, type InitSpec, type Node, type OpAttrs, type OpName, type Shape, type SourceLoc } from './ir.ts';
import { inferType } from './ops/index.ts';

export function emptyGraph(): Graph {
  return { nodes: [], inputs: {}, state: {}, outputs: {}, updates: {} };
}

export interface EmitOptions {
  name?: string;
  loc?: SourceLoc;
  /** Declared type, required for leaves (input/param/buffer/full/tensor/iota). */
  shape?: Shape;
  dtype?: DType;
}

/** emit()'s attributes and options: the attributes may be omitted only for ops whose attributes are all optional. */
export type EmitArgs<P extends OpName> = {} extends OpAttrs[P] ? [attrs?: OpAttrs[P], opts?: EmitOptions] : [attrs: OpAttrs[P], opts?: EmitOptions];

export class GraphBuilder {
  constructor(public readonly graph: Graph = emptyGraph()) {}

  node(id: number): Node {
    return this.graph.nodes[id];
  }

  /** Appends one op; throws ShapeError (compiler/ops/) if its inputs do not type-check. */
  emit<P extends OpName>(op: P, inputs: number[], ...[attrsArg, opts = {}]: EmitArgs<P>): number {
    const attrs = attrsArg ?? ({} as OpAttrs[P]);
    const ins = inputs.map((i) => this.graph.nodes[i]);
    const t = inferType(op, ins, attrs, { shape: opts.shape ?? [], dtype: opts.dtype ?? 'f32' });
    const id = this.graph.nodes.length;
    // A node of op P is a Node; TypeScript cannot see that for a type parameter.
    const n = { id, op, inputs, attrs, shape: [...t.shape], dtype: t.dtype } as Node;
    if (opts.name) n.name = opts.name;
    if (opts.loc) n.loc = opts.loc;
    this.graph.nodes.push(n);
    return id;
  }

  input(name: string, shape: Shape, dtype: DType = 'f32', loc?: SourceLoc): number {
    if (name in this.graph.inputs) return this.graph.inputs[name];
    const id = this.emit('input', [], { name }, { shape, dtype, name, loc });
    this.graph.inputs[name] = id;
    return id;
  }

  state(name: string, shape: Shape, init: InitSpec, trainable: boolean, dtype: DType = 'f32', loc?: SourceLoc): number {
    const existing = this.graph.state[name];
    if (existing) return existing.node;
    const id = this.emit(trainable ? 'param' : 'buffer', [], { name }, { shape, dtype, name, loc });
    this.graph.state[name] = { node: id, name, shape: [...shape], dtype, trainable, init };
    return id;
  }

  full(value: number, shape: Shape = [], dtype: DType = 'f32'): number {
    return this.emit('full', [], { value }, { shape, dtype });
  }

  scalar(value: number): number {
    return this.full(value, [], 'f32');
  }

  output(name: string, id: number): void {
    this.graph.outputs[name] = id;
  }

  update(stateName: string, id: number): void {
    this.graph.updates[stateName] = id;
  }

  // Small conveniences for the ops that autodiff and optimizers use most.
  add(a: number, b: number) {
    return this.emit('add', [a, b]);
  }
  sub(a: number, b: number) {
    return this.emit('sub', [a, b]);
  }
  mul(a: number, b: number) {
    return this.emit('mul', [a, b]);
  }
  div(a: number, b: number) {
    return this.emit('div', [a, b]);
  }
  neg(a: number) {
    return this.emit('neg', [a]);
  }
  sum(a: number, axes: number[], keepdims = false) {
    return this.emit('sum', [a], { axes, keepdims });
  }
  reshape(a: number, shape: Shape) {
    return this.emit('reshape', [a], { shape });
  }
  expand(a: number, shape: Shape) {
    return this.emit('expand', [a], { shape });
  }
  transpose(a: number, perm: number[]) {
    return this.emit('transpose', [a], { perm });
  }
}
