// The WGSL of every op the expression compiler (elementwise.ts) evaluates at
// one flat index: elementwise math, casts, dropout, comparisons, where, the
// layout ops as index maps (layout.ts) and the inline constants. An entry
// returns the value's WGSL expression (usually a `let` it emitted); these
// entries are the `expr` renderers of the renderer table (index.ts RENDERERS).

import type { Graph, Node, NodeOf, OpName, Shape } from '../ir.ts';
import { normAxis } from '../ops/index.ts';
import type { Unary } from '../ops/elementwise.ts';
import { concatBranches, padIndex, sliceIndex, transposeIndex } from './layout.ts';
import { type KernelBuilder, literal, wgslType } from './wgsl.ts';

/** A u32 WGSL value holding a flat row-major index into `shape`. */
export interface Index {
  name: string;
  shape: Shape;
}

/** What an expression renderer may use of the expression compiler (ExprCompiler implements it). */
export interface ExprContext {
  readonly graph: Graph;
  readonly builder: KernelBuilder;
  /** The value of node `id` at `ix` (memoised per node and index). */
  value(id: number, ix: Index): string;
  /** Input `k` of `node` read at `ix` under numpy broadcasting. */
  input(node: { inputs: number[] }, ix: Index, k: number): string;
  /** Coordinate `axis` of `ix`, as a u32 (a memoised `let`). */
  coord(ix: Index, axis: number): string;
  /** The index into `shape` that the u32 expression `expr` computes from `ix`. */
  derive(ix: Index, shape: Shape, expr: string): Index;
  /** `expr` bound to a fresh `let` (unless it is a plain name or literal). */
  bind(expr: string, prefix?: string): string;
  /** Emits one statement. */
  emit(line: string): void;
  fresh(prefix: string): string;
  /** Runs `body` inside `header { ... }`, scoping memoised values to the block. */
  block(header: string, body: () => void): void;
}

export interface ExprRenderer<P extends OpName> {
  expr(c: ExprContext, node: NodeOf<P>, ix: Index): string;
}

/** A unary op: `f32` renders it on f32 values, `i32` (where WGSL defines it) on i32 values. */
function unary<P extends Unary>(f32: (x: string, b: KernelBuilder) => string, i32?: (x: string) => string): ExprRenderer<P> {
  return {
    expr: (c, node, ix) => {
      if (node.dtype === 'i32') {
        if (!i32) throw new Error(`${node.op} is not defined on i32 tensors (node %${node.id}${node.name ? ' ' + node.name : ''}); cast to f32 first`);
        return c.bind(i32(c.input(node, ix, 0)));
      }
      return c.bind(f32(c.input(node, ix, 0), c.builder));
    },
  };
}

/** A binary op with the same WGSL on f32 and i32. */
function binary<P extends OpName>(f: (a: string, b: string) => string): ExprRenderer<P> {
  return {
    expr: (c, node, ix) => {
      const a = c.input(node, ix, 0);
      const b = c.input(node, ix, 1);
      return c.bind(f(a, b));
    },
  };
}

/** maximum/minimum: NaN-propagating on f32 (PyTorch; WGSL's max/min may drop a NaN), WGSL's on i32. */
function minMax<P extends OpName>(f: 'max' | 'min'): ExprRenderer<P> {
  return {
    expr: (c, node, ix) => {
      const a = c.input(node, ix, 0);
      const b = c.input(node, ix, 1);
      if (node.dtype === 'i32') return c.bind(`${f}(${a}, ${b})`);
      c.builder.use('lovt_max'); // lovt_min comes with it
      return c.bind(`lovt_${f}(${a}, ${b})`);
    },
  };
}

/** A comparison: f32 1.0 / 0.0. */
function compare<P extends OpName>(op: string): ExprRenderer<P> {
  return binary((a, b) => `select(0.0, 1.0, ${a} ${op} ${b})`);
}

/** reshape and stop_gradient: the input's value at the same flat index. */
const sameData = {
  expr: (c: ExprContext, node: Node, ix: Index) => c.value(node.inputs[0], { name: ix.name, shape: c.graph.nodes[node.inputs[0]].shape }),
};

const TABLE = {
  full: {
    expr: (c, node) => {
      const v = literal(node.attrs.value, node.dtype);
      // Infinities and NaN are built at run time by helpers (literal()).
      if (v.includes('lovt_inf')) c.builder.use('lovt_inf');
      if (v.includes('lovt_nan')) c.builder.use('lovt_nan');
      return v;
    },
  },
  iota: {
    expr: (c, node, ix) => {
      const k = c.coord(ix, normAxis(node.attrs.axis, node.shape.length));
      return node.dtype === 'i32' ? `i32(${k})` : `f32(${k})`;
    },
  },

  neg: unary(
    (x) => `-${x}`,
    (x) => `-${x}`,
  ),
  exp: unary((x) => `exp(${x})`),
  log: unary((x) => `log(${x})`),
  sqrt: unary((x) => `sqrt(${x})`),
  rsqrt: unary((x) => `inverseSqrt(${x})`),
  abs: unary(
    (x) => `abs(${x})`,
    (x) => `abs(${x})`,
  ),
  // NaN propagates (PyTorch): WGSL's max(NaN, x) may give x.
  relu: unary(
    (x, b) => (b.use('lovt_max'), `lovt_max(${x}, 0.0)`),
    (x) => `max(${x}, 0i)`,
  ),
  sigmoid: unary((x, b) => (b.use('lovt_sigmoid'), `lovt_sigmoid(${x})`)),
  tanh: unary((x, b) => (b.use('lovt_tanh'), `lovt_tanh(${x})`)),
  erf: unary((x, b) => (b.use('lovt_erf'), `lovt_erf(${x})`)),
  gelu: unary((x, b) => (b.use('lovt_erf'), `(0.5 * ${x} * (1.0 + lovt_erf(${x} * 0.70710678118654752)))`)),
  recip: unary((x) => `(1.0 / ${x})`),
  square: unary(
    (x) => `(${x} * ${x})`,
    (x) => `(${x} * ${x})`,
  ),
  sign: unary(
    (x) => `sign(${x})`,
    (x) => `sign(${x})`,
  ),
  isfinite: unary((x, b) => (b.use('lovt_isfinite'), `select(0.0, 1.0, lovt_isfinite(${x}))`)),
  stop_gradient: sameData,
  cast: {
    expr: (c, node, ix) => {
      const x = c.input(node, ix, 0);
      const from = c.graph.nodes[node.inputs[0]].dtype;
      if (from === node.dtype) return x;
      if (node.dtype === 'f32') return c.bind(`f32(${x})`);
      c.builder.use('lovt_to_i32');
      return c.bind(`lovt_to_i32(${x})`);
    },
  },
  dropout: {
    expr: (c, node, ix) => {
      const x = c.input(node, ix, 0);
      const seed = c.value(node.inputs[1], { name: '0u', shape: [] });
      const p = node.attrs.p;
      if (p === 0) return x;
      c.builder.use('lovt_pcg');
      const salt = (node.attrs.salt ?? 0) >>> 0;
      // keep(i) = hash/2^24 >= p  <=>  hash >= ceil(p * 2^24): an exact integer test.
      const threshold = Math.ceil(p * 16777216);
      const h = c.bind(`lovt_pcg(lovt_pcg(${ix.name}) ^ (bitcast<u32>(${seed}) * 0x9E3779B9u + ${salt}u)) >> 8u`, 'h');
      return c.bind(`select(0.0, ${x} / ${literal(1 - p, 'f32')}, ${h} >= ${threshold}u)`);
    },
  },

  add: binary((a, b) => `(${a} + ${b})`),
  sub: binary((a, b) => `(${a} - ${b})`),
  mul: binary((a, b) => `(${a} * ${b})`),
  div: binary((a, b) => `(${a} / ${b})`),
  maximum: minMax('max'),
  minimum: minMax('min'),
  pow: {
    expr: (c, node, ix) => {
      const a = c.input(node, ix, 0);
      const expNode = c.graph.nodes[node.inputs[1]];
      if (node.dtype === 'f32' && expNode.op === 'full') {
        const y = expNode.attrs.value;
        const special: Record<number, string> = {
          1: a,
          2: `(${a} * ${a})`,
          3: `(${a} * ${a} * ${a})`,
          0.5: `sqrt(${a})`,
          [-1]: `(1.0 / ${a})`,
          [-0.5]: `inverseSqrt(${a})`,
        };
        if (y in special) return c.bind(special[y]);
      }
      const e = c.input(node, ix, 1);
      if (node.dtype === 'i32') return c.bind(`i32(round(pow(f32(${a}), f32(${e}))))`);
      c.builder.use('lovt_pow');
      return c.bind(`lovt_pow(${a}, ${e})`);
    },
  },
  gt: compare('>'),
  ge: compare('>='),
  lt: compare('<'),
  le: compare('<='),
  eq: compare('=='),
  ne: compare('!='),
  where: {
    expr: (c, node, ix) => {
      const cond = c.input(node, ix, 0);
      const zero = c.graph.nodes[node.inputs[0]].dtype === 'i32' ? '0i' : '0.0';
      const a = c.input(node, ix, 1);
      const b = c.input(node, ix, 2);
      return c.bind(`select(${b}, ${a}, ${cond} != ${zero})`);
    },
  },

  reshape: sameData,
  expand: { expr: (c, node, ix) => c.input(node, ix, 0) },
  transpose: {
    expr: (c, node, ix) => {
      const src = c.graph.nodes[node.inputs[0]];
      const e = transposeIndex(node.attrs.perm, src.shape, (a) => c.coord(ix, a));
      return c.value(src.id, c.derive(ix, src.shape, e));
    },
  },
  slice: {
    expr: (c, node, ix) => {
      const src = c.graph.nodes[node.inputs[0]];
      const e = sliceIndex(node.attrs.starts, src.shape, (a) => c.coord(ix, a));
      return c.value(src.id, c.derive(ix, src.shape, e));
    },
  },
  pad: {
    expr: (c, node, ix) => {
      const src = c.graph.nodes[node.inputs[0]];
      const out = c.fresh('v');
      c.emit(`var ${out}: ${wgslType(node.dtype)} = ${literal(node.attrs.value ?? 0, node.dtype)};`);
      const p = padIndex(node.attrs.pads, src.shape, (a) => c.coord(ix, a), c.fresh('p'));
      for (const l of p.lets) c.emit(l);
      c.block(`if (${p.cond})`, () => {
        const inner = c.value(src.id, c.derive(ix, src.shape, p.index));
        c.emit(`${out} = ${inner};`);
      });
      return out;
    },
  },
  concat: {
    expr: (c, node, ix) => {
      const g = c.graph;
      const axis = normAxis(node.attrs.axis, node.shape.length);
      const out = c.fresh('v');
      c.emit(`var ${out}: ${wgslType(node.dtype)};`);
      const k0 = c.coord(ix, axis);
      const branches = concatBranches(
        axis,
        node.inputs.map((i) => g.nodes[i].shape),
        (a) => c.coord(ix, a),
      );
      // One if / else-if chain over the output coordinate along the axis.
      branches.forEach((br, k) => {
        const src = g.nodes[node.inputs[k]];
        const last = k === branches.length - 1;
        const header = k === 0 ? `if (${k0} < ${br.upper}u)` : last ? 'else' : `else if (${k0} < ${br.upper}u)`;
        c.block(header, () => {
          const inner = c.value(src.id, c.derive(ix, src.shape, br.index));
          c.emit(`${out} = ${inner};`);
        });
      });
      return out;
    },
  },
} satisfies { [P in OpName]?: ExprRenderer<P> };

/** The ops the expression compiler evaluates. */
export type ExprOp = keyof typeof TABLE;
export const EXPRESSIONS: { [P in ExprOp]: ExprRenderer<P> } = TABLE;

const LOOKUP: { [P in OpName]?: ExprRenderer<P> } = EXPRESSIONS;

/** The WGSL value of `node` at `ix` (its inputs through `c`). */
export function renderExpression<P extends OpName>(c: ExprContext, node: NodeOf<P>, ix: Index): string {
  const r: ExprRenderer<P> | undefined = LOOKUP[node.op];
  if (!r) throw new Error(`internal: no elementwise code for op '${node.op}' (node %${node.id})`);
  return r.expr(c, node, ix);
}
