// Leaves: the graph's interface (input, param, buffer: values the host feeds or
// the state store holds) and compile-time constants (full, tensor, iota).
// Leaves take their type as declared; gradients stop at them (autodiff returns
// a gradient only for the requested `wrt` leaves).

import { type NodeOf, numel, shapeStr, stridesOf } from '../ir.ts';
import { type OpTablePart, type TypedValue, NO_FLOPS, need, normAxis } from './def.ts';
import { type FeedValue, wrapI32 } from './float64.ts';

const declared = (_ins: TypedValue[], _attrs: unknown, self: TypedValue): TypedValue => self;
const LEAF = { none: 'a leaf' };
const CONSTANT = { none: 'a constant leaf' };

function leafValue(node: NodeOf<'input' | 'param' | 'buffer'>, source: Record<string, FeedValue> | undefined, kind: string): Float64Array {
  const name = node.attrs.name;
  const fed = source?.[name];
  if (fed === undefined || fed === null) throw new Error(`${kind} '${name}' was not fed`);
  const v = typeof fed === 'number' ? [fed] : fed;
  if (typeof v.length !== 'number') throw new Error(`${kind} '${name}' must be fed a number or an array of numbers`);
  if (v.length !== numel(node.shape)) throw new Error(`${kind} '${name}' has ${v.length} values, shape ${shapeStr(node.shape)} needs ${numel(node.shape)}`);
  const out = Float64Array.from(v);
  return node.dtype === 'i32' ? out.map(wrapI32) : out;
}

export const LEAF_DEFS = {
  input: { kind: 'leaf', arity: 0, type: declared, grad: LEAF, flops: NO_FLOPS, eval: ({ node, feeds }) => leafValue(node, feeds.inputs, 'input') },
  param: { kind: 'leaf', arity: 0, type: declared, grad: LEAF, flops: NO_FLOPS, eval: ({ node, feeds }) => leafValue(node, feeds.state, 'state') },
  buffer: { kind: 'leaf', arity: 0, type: declared, grad: LEAF, flops: NO_FLOPS, eval: ({ node, feeds }) => leafValue(node, feeds.state, 'state') },
  full: {
    kind: 'constant',
    arity: 0,
    inline: true,
    type: declared,
    grad: CONSTANT,
    flops: NO_FLOPS,
    eval: ({ node }) => new Float64Array(numel(node.shape)).fill(node.dtype === 'i32' ? wrapI32(node.attrs.value) : node.attrs.value),
  },
  tensor: {
    kind: 'constant',
    arity: 0,
    type: (_ins, a, self) => {
      need(
        Array.isArray(a.data) && a.data.length === numel(self.shape),
        `tensor data has ${a.data?.length} values, shape ${shapeStr(self.shape)} needs ${numel(self.shape)}`,
      );
      return self;
    },
    grad: CONSTANT,
    flops: NO_FLOPS,
    eval: ({ node }) => (node.dtype === 'i32' ? Float64Array.from(node.attrs.data, wrapI32) : Float64Array.from(node.attrs.data)),
  },
  iota: {
    kind: 'constant',
    arity: 0,
    inline: true,
    type: (_ins, a, self) => (normAxis(a.axis, self.shape.length), self),
    grad: CONSTANT,
    flops: NO_FLOPS,
    eval: ({ node }) => {
      const axis = normAxis(node.attrs.axis, node.shape.length);
      const stride = stridesOf(node.shape)[axis];
      const size = numel(node.shape);
      const out = new Float64Array(size);
      for (let i = 0; i < size; i++) out[i] = Math.floor(i / stride) % node.shape[axis];
      return out;
    },
  },
} satisfies OpTablePart;
