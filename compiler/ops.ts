// Shape and dtype rules, one per primitive. The front end calls inferNode() to
// type every op it emits (turning a ShapeError into a located compile error),
// and validateGraph() re-checks a whole graph after every pass.

import { type Attrs, type DType, type Graph, type Node, type OpName, type Shape, shapeStr, numel } from './ir.ts';

/** A shape or dtype rule violation. `message` names the shapes; the caller adds the location. */
export class ShapeError extends Error {}

export interface TypedValue {
  shape: Shape;
  dtype: DType;
}

type Rule = (ins: TypedValue[], attrs: Attrs, self: TypedValue) => TypedValue;

const UNARY: OpName[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'abs', 'relu', 'sigmoid', 'tanh', 'gelu', 'erf', 'recip', 'square', 'sign', 'stop_gradient'];
const BINARY: OpName[] = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'];
const COMPARE: OpName[] = ['gt', 'ge', 'lt', 'le', 'eq', 'ne'];

export const ELEMENTWISE = new Set<OpName>([...UNARY, ...BINARY, ...COMPARE, 'isfinite', 'where', 'cast', 'dropout']);

function fail(msg: string): never {
  throw new ShapeError(msg);
}

function arity(ins: TypedValue[], n: number, op: string) {
  if (ins.length !== n) fail(`${op} takes ${n} input${n === 1 ? '' : 's'}, got ${ins.length}`);
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape): Shape {
  const n = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) fail(`cannot broadcast ${shapeStr(a)} with ${shapeStr(b)} (dimension ${i - n} is ${da} vs ${db})`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

function reduceShape(x: Shape, axes: number[], keepdims: boolean): Shape {
  const ax = new Set(axes.map((a) => normAxis(a, x.length)));
  const out: Shape = [];
  x.forEach((d, i) => {
    if (ax.has(i)) {
      if (keepdims) out.push(1);
    } else out.push(d);
  });
  return out;
}

function pair(v: unknown, name: string): [number, number] {
  if (Array.isArray(v) && v.length === 2) return [v[0], v[1]];
  if (typeof v === 'number') return [v, v];
  fail(`attribute ${name} must be an int or a pair of ints`);
}

function convOut(size: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;
}

function need(cond: boolean, msg: string) {
  if (!cond) fail(msg);
}

function f32(shape: Shape): TypedValue {
  return { shape, dtype: 'f32' };
}

const RULES: Partial<Record<OpName, Rule>> = {
  input: (_i, _a, self) => self,
  param: (_i, _a, self) => self,
  buffer: (_i, _a, self) => self,
  full: (_i, _a, self) => self,
  iota: (_i, a, self) => (normAxis(a.axis as number, self.shape.length), self),
  tensor: (_i, a, self) => {
    need(Array.isArray(a.data) && (a.data as number[]).length === numel(self.shape), `tensor data has ${(a.data as number[]).length} values, shape ${shapeStr(self.shape)} needs ${numel(self.shape)}`);
    return self;
  },
  cast: (ins, a) => (arity(ins, 1, 'cast'), { shape: ins[0].shape, dtype: a.to as DType }),
  isfinite: (ins) => (arity(ins, 1, 'isfinite'), need(ins[0].dtype === 'f32', 'isfinite takes an f32 tensor'), f32(ins[0].shape)),
  dropout: (ins, a) => {
    arity(ins, 2, 'dropout');
    need(ins[1].dtype === 'i32' && ins[1].shape.length === 0, 'dropout seed must be an i32 scalar');
    need((a.p as number) >= 0 && (a.p as number) < 1, `dropout probability must be in [0, 1), got ${a.p}`);
    return ins[0];
  },
  where: (ins) => {
    arity(ins, 3, 'where');
    need(ins[1].dtype === ins[2].dtype, `where: branches have different dtypes ${ins[1].dtype} and ${ins[2].dtype}`);
    return { shape: broadcastShapes(broadcastShapes(ins[0].shape, ins[1].shape), ins[2].shape), dtype: ins[1].dtype };
  },
  sum: (ins, a) => (arity(ins, 1, 'sum'), { shape: reduceShape(ins[0].shape, a.axes as number[], !!a.keepdims), dtype: ins[0].dtype }),
  max: (ins, a) => (arity(ins, 1, 'max'), { shape: reduceShape(ins[0].shape, a.axes as number[], !!a.keepdims), dtype: ins[0].dtype }),
  logsumexp: (ins, a) => (arity(ins, 1, 'logsumexp'), f32(reduceShape(ins[0].shape, [a.axis as number], !!a.keepdims))),
  softmax: (ins, a) => (arity(ins, 1, 'softmax'), normAxis(a.axis as number, ins[0].shape.length), f32(ins[0].shape)),
  reshape: (ins, a) => {
    arity(ins, 1, 'reshape');
    const shape = a.shape as number[];
    need(numel(shape) === numel(ins[0].shape), `cannot reshape ${shapeStr(ins[0].shape)} (${numel(ins[0].shape)} elements) to ${shapeStr(shape)} (${numel(shape)} elements)`);
    return { shape, dtype: ins[0].dtype };
  },
  transpose: (ins, a) => {
    arity(ins, 1, 'transpose');
    const perm = a.perm as number[];
    const r = ins[0].shape.length;
    need(perm.length === r && [...perm].sort((x, y) => x - y).every((p, i) => p === i), `transpose permutation [${perm}] does not fit rank ${r}`);
    return { shape: perm.map((p) => ins[0].shape[p]), dtype: ins[0].dtype };
  },
  expand: (ins, a) => {
    arity(ins, 1, 'expand');
    const shape = a.shape as number[];
    const b = broadcastShapes(ins[0].shape, shape);
    need(shapeStr(b) === shapeStr(shape), `cannot expand ${shapeStr(ins[0].shape)} to ${shapeStr(shape)}`);
    return { shape, dtype: ins[0].dtype };
  },
  slice: (ins, a) => {
    arity(ins, 1, 'slice');
    const x = ins[0].shape;
    const starts = a.starts as number[];
    const ends = a.ends as number[];
    need(starts.length === x.length && ends.length === x.length, `slice needs ${x.length} starts and ends`);
    return {
      shape: x.map((d, i) => {
        need(0 <= starts[i] && starts[i] <= ends[i] && ends[i] <= d, `slice ${starts[i]}:${ends[i]} is out of range for dimension ${i} of ${shapeStr(x)}`);
        return ends[i] - starts[i];
      }),
      dtype: ins[0].dtype,
    };
  },
  concat: (ins, a) => {
    need(ins.length >= 1, 'concat needs at least one input');
    const axis = normAxis(a.axis as number, ins[0].shape.length);
    const out = [...ins[0].shape];
    for (const v of ins.slice(1)) {
      need(v.shape.length === out.length && v.shape.every((d, i) => i === axis || d === out[i]), `concat along axis ${axis}: ${shapeStr(ins[0].shape)} and ${shapeStr(v.shape)} differ off that axis`);
      need(v.dtype === ins[0].dtype, `concat of ${ins[0].dtype} and ${v.dtype}`);
      out[axis] += v.shape[axis];
    }
    return { shape: out, dtype: ins[0].dtype };
  },
  pad: (ins, a) => {
    arity(ins, 1, 'pad');
    const pads = a.pads as number[];
    need(pads.length === 2 * ins[0].shape.length, `pad needs ${2 * ins[0].shape.length} values (before, after per dimension)`);
    return { shape: ins[0].shape.map((d, i) => d + pads[2 * i] + pads[2 * i + 1]), dtype: ins[0].dtype };
  },
  matmul: (ins, a) => {
    arity(ins, 2, 'matmul');
    const [x, y] = [ins[0].shape, ins[1].shape];
    need(x.length >= 2 && y.length >= 2, `matmul needs rank >= 2 operands, got ${shapeStr(x)} and ${shapeStr(y)}`);
    const [m, k1] = a.transA ? [x[x.length - 1], x[x.length - 2]] : [x[x.length - 2], x[x.length - 1]];
    const [k2, n] = a.transB ? [y[y.length - 1], y[y.length - 2]] : [y[y.length - 2], y[y.length - 1]];
    need(k1 === k2, `matmul contraction mismatch: ${shapeStr(x)}${a.transA ? 'ᵀ' : ''} @ ${shapeStr(y)}${a.transB ? 'ᵀ' : ''} (${k1} vs ${k2})`);
    const batch = broadcastShapes(x.slice(0, -2), y.slice(0, -2));
    return f32([...batch, m, n]);
  },
  conv2d: (ins, a) => {
    arity(ins, 2, 'conv2d');
    const [x, w] = [ins[0].shape, ins[1].shape];
    need(x.length === 4 && w.length === 4, `conv2d needs x [N, C, H, W] and weight [O, C/groups, kH, kW], got ${shapeStr(x)} and ${shapeStr(w)}`);
    const g = (a.groups as number) ?? 1;
    const [sh, sw] = pair(a.stride, 'stride');
    const [ph, pw] = pair(a.padding, 'padding');
    const [dh, dw] = pair(a.dilation, 'dilation');
    need(x[1] === w[1] * g, `conv2d: input has ${x[1]} channels, weight ${shapeStr(w)} expects ${w[1] * g} (groups ${g})`);
    need(w[0] % g === 0, `conv2d: ${w[0]} output channels not divisible by groups ${g}`);
    const oh = convOut(x[2], w[2], sh, ph, dh);
    const ow = convOut(x[3], w[3], sw, pw, dw);
    need(oh > 0 && ow > 0, `conv2d: input ${shapeStr(x)} is smaller than kernel ${w[2]}x${w[3]}`);
    return f32([x[0], w[0], oh, ow]);
  },
  conv2d_grad_input: (ins, a) => {
    arity(ins, 2, 'conv2d_grad_input'); // (dy, w)
    const [dy, w] = [ins[0].shape, ins[1].shape];
    const [h, wd] = a.inputSize as number[];
    return f32([dy[0], w[1] * ((a.groups as number) ?? 1), h, wd]);
  },
  conv2d_grad_weight: (ins, a) => {
    arity(ins, 2, 'conv2d_grad_weight'); // (x, dy)
    const [x, dy] = [ins[0].shape, ins[1].shape];
    const [kh, kw] = a.kernelSize as number[];
    return f32([dy[1], x[1] / ((a.groups as number) ?? 1), kh, kw]);
  },
  max_pool2d: (ins, a) => pool(ins, a, 'max_pool2d'),
  avg_pool2d: (ins, a) => pool(ins, a, 'avg_pool2d'),
  max_pool2d_grad: (ins) => (arity(ins, 2, 'max_pool2d_grad'), f32(ins[0].shape)), // (x, dy)
  avg_pool2d_grad: (ins, a) => (arity(ins, 1, 'avg_pool2d_grad'), f32([ins[0].shape[0], ins[0].shape[1], ...(a.inputSize as number[])])), // (dy)
  upsample2d: (ins, a) => {
    arity(ins, 1, 'upsample2d');
    need(ins[0].shape.length === 4, `upsample2d needs [N, C, H, W], got ${shapeStr(ins[0].shape)}`);
    const [oh, ow] = a.size as number[];
    return f32([ins[0].shape[0], ins[0].shape[1], oh, ow]);
  },
  upsample2d_grad: (ins, a) => (arity(ins, 1, 'upsample2d_grad'), f32([ins[0].shape[0], ins[0].shape[1], ...(a.inputSize as number[])])),
  gather: (ins) => {
    arity(ins, 2, 'gather'); // (table [V, ...], idx int)
    need(ins[1].dtype === 'i32', `gather indices must be i32, got ${ins[1].dtype}`);
    need(ins[0].shape.length >= 1, 'gather table must have rank >= 1');
    return { shape: [...ins[1].shape, ...ins[0].shape.slice(1)], dtype: ins[0].dtype };
  },
  scatter_add: (ins, a) => {
    arity(ins, 2, 'scatter_add'); // (idx, values) -> [numRows, ...]
    need(ins[0].dtype === 'i32', 'scatter_add indices must be i32');
    return f32([a.numRows as number, ...ins[1].shape.slice(ins[0].shape.length)]);
  },
  segment_max: (ins, a) => {
    arity(ins, 2, 'segment_max'); // (x [B, T, D], seg i32 [B, T]) -> [B, S, D]
    const [x, s] = [ins[0].shape, ins[1].shape];
    need(x.length === 3 && s.length === 2 && x[0] === s[0] && x[1] === s[1], `segment_max needs x [B, T, D] and segment ids [B, T], got ${shapeStr(x)} and ${shapeStr(s)}`);
    need(ins[1].dtype === 'i32', 'segment ids must be i32');
    return f32([x[0], a.numSegments as number, x[2]]);
  },
  segment_max_grad: (ins) => (arity(ins, 3, 'segment_max_grad'), f32(ins[0].shape)), // (x, seg, dy)
};

function pool(ins: TypedValue[], a: Attrs, op: string): TypedValue {
  arity(ins, 1, op);
  const x = ins[0].shape;
  need(x.length === 4, `${op} needs [N, C, H, W], got ${shapeStr(x)}`);
  const [kh, kw] = pair(a.kernel, 'kernel');
  const [sh, sw] = pair(a.stride, 'stride');
  const [ph, pw] = pair(a.padding, 'padding');
  return f32([x[0], x[1], convOut(x[2], kh, sh, ph, 1), convOut(x[3], kw, sw, pw, 1)]);
}

for (const op of UNARY) RULES[op] = (ins) => (arity(ins, 1, op), ins[0]);
for (const op of BINARY) RULES[op] = (ins) => {
  arity(ins, 2, op);
  need(ins[0].dtype === ins[1].dtype, `${op} of ${ins[0].dtype} and ${ins[1].dtype}: cast one side first`);
  return { shape: broadcastShapes(ins[0].shape, ins[1].shape), dtype: ins[0].dtype };
};
for (const op of COMPARE) RULES[op] = (ins) => (arity(ins, 2, op), f32(broadcastShapes(ins[0].shape, ins[1].shape)));

/** Type of an op applied to typed inputs. `self` carries the declared type of leaves. */
export function inferType(op: OpName, ins: TypedValue[], attrs: Attrs, self: TypedValue = { shape: [], dtype: 'f32' }): TypedValue {
  const rule = RULES[op];
  if (!rule) fail(`unknown primitive '${op}'`);
  return rule(ins, attrs, self);
}

export function isPrimitive(name: string): name is OpName {
  return name in RULES;
}

/** Every primitive op (for tests that must cover them all). */
export function primitiveOps(): OpName[] {
  return Object.keys(RULES) as OpName[];
}

/** Checks ids, topological order, leaf bookkeeping and every node's type. Throws Error naming the node. */
export function validateGraph(g: Graph): void {
  const seen = new Set<number>();
  g.nodes.forEach((n: Node, i) => {
    if (n.id !== i) throw new Error(`IR: node at index ${i} has id ${n.id}`);
    for (const x of n.inputs) if (!seen.has(x)) throw new Error(`IR: node ${i} (${n.op}) uses %${x} before it is defined`);
    let t: TypedValue;
    try {
      t = inferType(n.op, n.inputs.map((x) => g.nodes[x]), n.attrs, n);
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
