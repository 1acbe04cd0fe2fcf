// The built-in callables of .lovt: primitives (one IR op each, attrs from named
// arguments), compile-time built-ins (len, range, numel, assert, ...) and
// initialisers (-> InitSpec). docs/language.md §11–13 is the reference; the
// ops themselves (shape rules, float64 math) are the op table, compiler/ops/.

import type { Range } from '../../grammar/ast.ts';
import type { DType, IntOrPair, InitSpec, OpAttrs, OpName, Shape } from '../ir.ts';
import { numel } from '../ir.ts';
import type { Binary, Unary } from '../ops/elementwise.ts';
import { evalScalar } from '../reference.ts';
import type { ArgSpec, BuiltinDef, CallArgs, Elaborator } from './elaborate.ts';
import { LIMITS } from './elaborate.ts';
import {
  type TensorValue,
  type Value,
  NONE,
  bool,
  expectBool,
  expectEnum,
  expectFloat,
  expectFloatList,
  expectInt,
  expectIntList,
  expectString,
  expectTensor,
  float,
  int,
  isNumber,
  kindName,
  list,
} from './values.ts';

const DTYPES = ['f32', 'i32'] as const;
const MODES = ['fan_in', 'fan_out'] as const;

const req = (name: string, members?: readonly string[]): ArgSpec => ({ name, members });
const opt = (name: string, dflt?: Value, members?: readonly string[]): ArgSpec =>
  dflt === undefined ? { name, optional: true, members } : { name, dflt, members };

/** Reads argument `i` of a call, already evaluated (undefined when optional and absent). */
class Args {
  constructor(
    readonly el: Elaborator,
    readonly a: CallArgs,
    readonly specs: ArgSpec[],
  ) {}
  v(name: string): Value | undefined {
    return this.a.values[this.idx(name)];
  }
  r(name: string): Range {
    return this.a.ranges[this.idx(name)];
  }
  private idx(name: string): number {
    return this.specs.findIndex((s) => s.name === name);
  }
  what(name: string): string {
    return `argument '${name}' of ${this.a.label}`;
  }
  tensor(name: string): TensorValue {
    return expectTensor(this.v(name)!, this.r(name), this.what(name));
  }
  int(name: string): number {
    return expectInt(this.v(name)!, this.r(name), this.what(name));
  }
  float(name: string): number {
    return expectFloat(this.v(name)!, this.r(name), this.what(name));
  }
  bool(name: string): boolean {
    return expectBool(this.v(name)!, this.r(name), this.what(name));
  }
  ints(name: string): number[] {
    return expectIntList(this.v(name)!, this.r(name), this.what(name));
  }
  /** An int or a pair [h, w], as conv/pool attributes take them. */
  intOrPair(name: string): IntOrPair {
    const v = this.v(name)!;
    if (v.k === 'list' || v.k === 'tuple') {
      const xs = this.ints(name);
      if (xs.length !== 2) this.el.error(this.r(name), `${this.what(name)} must be an int or a pair [h, w], got ${xs.length} values`);
      return [xs[0], xs[1]];
    }
    return this.int(name);
  }
  enumOf<T extends string>(name: string, members: readonly T[]): T {
    return expectEnum(this.v(name)!, members, this.r(name), this.what(name)) as T; // expectEnum accepts only members
  }
  has(name: string): boolean {
    return this.v(name) !== undefined;
  }
}

type Run = (g: Args, el: Elaborator) => Value;

function def(params: ArgSpec[], run: Run): BuiltinDef {
  return { params, run: (el, a) => run(new Args(el, a, params), el) };
}

function normAxes(axes: number[], rank: number, g: Args, name: string): number[] {
  const seen = new Set<number>();
  return axes.map((ax) => {
    const a = ax < 0 ? ax + rank : ax;
    if (a < 0 || a >= rank) g.el.error(g.r(name), `axis ${ax} is out of range for a tensor of rank ${rank}`);
    if (seen.has(a)) g.el.error(g.r(name), `axis ${ax} is listed twice`);
    seen.add(a);
    return a;
  });
}

function emitOp<P extends OpName>(g: Args, op: P, ins: TensorValue[], attrs: OpAttrs[P]): TensorValue {
  return g.el.emit(op, ins, attrs, g.a.callRange, g.a.label);
}

// ---------------------------------------------------------------- elementwise

const UNARY_OPS: Unary[] = ['exp', 'log', 'sqrt', 'rsqrt', 'abs', 'relu', 'sigmoid', 'tanh', 'gelu', 'erf', 'square', 'sign', 'recip', 'neg', 'stop_gradient'];

/** A unary op; on a compile-time number it computes now, with the reference's float64 math. */
function unary(op: Unary): BuiltinDef {
  return def([req('x')], (g: Args) => {
    const x = g.v('x')!;
    if (isNumber(x)) {
      if (op === 'stop_gradient') return x;
      const y = evalScalar(op, [x.v]);
      if (!Number.isFinite(y)) g.el.error(g.a.callRange, `${op}(${x.v}) is not a finite number`);
      if ((op === 'abs' || op === 'neg' || op === 'square' || op === 'relu' || op === 'sign') && x.k === 'int') return int(y);
      return float(y);
    }
    return emitOp(g, op, [g.tensor('x')], {});
  });
}

/** The dtype of the first tensor among `vs` (f32 when none is a tensor). */
function tensorDtype(vs: (Value | undefined)[]): DType {
  for (const v of vs) if (v?.k === 'tensor') return v.dtype;
  return 'f32';
}

/** A binary op; on two compile-time numbers it computes now, with the reference's float64 math. */
function binary(op: Binary): BuiltinDef {
  return def([req('a'), req('b')], (g, el) => {
    const a = g.v('a')!;
    const b = g.v('b')!;
    if (isNumber(a) && isNumber(b)) {
      const y = evalScalar(op, [a.v, b.v]);
      if (!Number.isFinite(y)) el.error(g.a.callRange, `${op}(${a.v}, ${b.v}) is not a finite number`);
      return a.k === 'int' && b.k === 'int' && Number.isInteger(y) ? int(y) : float(y);
    }
    const dtype = tensorDtype([a, b]);
    return emitOp(g, op, [el.asTensor(a, dtype, g.r('a'), g.what('a')), el.asTensor(b, dtype, g.r('b'), g.what('b'))], {});
  });
}

// ------------------------------------------------------------------ reductions

function reduction(op: 'sum' | 'max'): BuiltinDef {
  return def([req('x'), opt('axes'), opt('keepdims', bool(false))], (g) => {
    const x = g.tensor('x');
    const axes = g.has('axes') ? normAxes(g.ints('axes'), x.shape.length, g, 'axes') : x.shape.map((_, i) => i);
    return emitOp(g, op, [x], { axes, keepdims: g.bool('keepdims') });
  });
}

/** max/min: a reduction on a tensor, or the compile-time max/min of numbers. */
function extremum(kind: 'max' | 'min'): BuiltinDef {
  const reduce = reduction('max');
  const params = [req('x'), opt('y'), opt('axes'), opt('keepdims', bool(false))];
  return {
    params,
    run: (el, a, scope, target) => {
      const g = new Args(el, a, params);
      const x = g.v('x')!;
      const pick = kind === 'max' ? Math.max : Math.min;
      if (x.k === 'tensor') {
        if (g.has('y'))
          el.error(
            g.r('y'),
            `${kind}(tensor, ...) reduces over axes; use ${kind === 'max' ? 'maximum' : 'minimum'}(a, b) for the elementwise ${kind} of two values`,
          );
        if (kind === 'min') el.error(g.r('x'), 'min of a tensor is not a primitive', { hint: 'use -max(-x, axes: ...)' });
        return reduce.run(el, { ...a, values: [a.values[0], a.values[2], a.values[3]], ranges: [a.ranges[0], a.ranges[2], a.ranges[3]] }, scope, target);
      }
      if (g.has('axes')) el.error(g.r('axes'), `axes: only applies to ${kind}(tensor, ...); ${kind} of numbers takes two numbers or a list`);
      const nums: number[] = x.k === 'list' ? expectFloatList(x, g.r('x'), g.what('x')) : [g.float('x')];
      if (g.has('y')) nums.push(g.float('y'));
      if (nums.length === 0) el.error(g.r('x'), `${kind} of an empty list`);
      const y = pick(...nums);
      const allInt = (x.k === 'list' ? x.items : [x]).every((v) => v.k === 'int') && (!g.has('y') || g.v('y')!.k === 'int');
      return allInt ? int(y) : float(y);
    },
  };
}

// ---------------------------------------------------------------------- layout

function reshapeTarget(g: Args, x: TensorValue, raw: number[]): Shape {
  const inferred = raw.filter((d) => d === -1).length;
  if (inferred > 1) g.el.error(g.r('shape'), 'reshape: at most one dimension may be -1');
  for (const d of raw) if (d !== -1 && d < 1) g.el.error(g.r('shape'), `reshape: dimension ${d} must be at least 1 (or -1 to infer it)`);
  if (!inferred) return raw;
  const known = raw.filter((d) => d !== -1).reduce((p, d) => p * d, 1);
  const total = numel(x.shape);
  if (total % known !== 0) g.el.error(g.r('shape'), `cannot reshape [${x.shape.join(', ')}] (${total} elements) to [${raw.join(', ')}]`);
  return raw.map((d) => (d === -1 ? total / known : d));
}

function sliceBounds(g: Args, x: TensorValue): { starts: number[]; ends: number[] } {
  const shape = x.shape;
  const clampPos = (p: number, size: number) => (p < 0 ? p + size : p);
  if (g.has('starts') || g.has('ends')) {
    if (g.has('axis') || g.has('start') || g.has('end')) g.el.error(g.a.callRange, 'slice takes either starts:/ends: or axis:/start:/end:, not both');
    const starts = g.has('starts') ? g.ints('starts') : shape.map(() => 0);
    const ends = g.has('ends') ? g.ints('ends') : [...shape];
    if (starts.length !== shape.length || ends.length !== shape.length)
      g.el.error(g.a.callRange, `slice of a rank-${shape.length} tensor needs ${shape.length} starts and ends, got ${starts.length} and ${ends.length}`);
    return { starts: starts.map((s, i) => clampPos(s, shape[i])), ends: ends.map((e, i) => clampPos(e, shape[i])) };
  }
  if (!g.has('axis')) g.el.error(g.a.callRange, 'slice needs starts:/ends: or axis:/start:/end:');
  const [axis] = normAxes([g.int('axis')], shape.length, g, 'axis');
  const starts = shape.map(() => 0);
  const ends = [...shape];
  if (g.has('start')) starts[axis] = clampPos(g.int('start'), shape[axis]);
  if (g.has('end')) ends[axis] = clampPos(g.int('end'), shape[axis]);
  return { starts, ends };
}

// ---------------------------------------------------------------- conv_transpose2d

/** An int-or-pair argument as [h, w], each at least `min`. */
function pairAtLeast(g: Args, name: string, min: number): [number, number] {
  const v = g.intOrPair(name);
  const p: [number, number] = typeof v === 'number' ? [v, v] : v;
  if (p.some((n) => n < min)) g.el.error(g.r(name), `${name} must be at least ${min}, got ${p.join(', ')}`);
  return p;
}

/**
 * torch.nn.functional.conv_transpose2d, weight [C_in, C_out/groups, kH, kW]:
 * the input gradient of the conv2d that maps the output back to x, i.e.
 * conv2d_grad_input(x, w) with inputSize = (H − 1)·s − 2p + d·(k − 1) +
 * output_padding + 1. That conv's geometry holds only for output_padding <
 * stride; PyTorch also allows output_padding < dilation, which is lowered as the
 * transposed conv of x padded with ⌈op/s⌉ zero rows (op = 0), cropped to size.
 */
function convTranspose2d(g: Args): TensorValue {
  const x = g.tensor('x');
  const w = g.tensor('w');
  const [xs, ws] = [x.shape, w.shape];
  if (xs.length !== 4) g.el.error(g.r('x'), `conv_transpose2d needs x [N, C_in, H, W], got [${xs.join(', ')}]`);
  if (ws.length !== 4) g.el.error(g.r('w'), `conv_transpose2d needs a weight [C_in, C_out/groups, kH, kW] (PyTorch's layout), got [${ws.join(', ')}]`);
  const groups = g.int('groups');
  if (groups < 1) g.el.error(g.r('groups'), `groups must be at least 1, got ${groups}`);
  if (ws[0] !== xs[1])
    g.el.error(g.r('w'), `weight [${ws.join(', ')}] is for ${ws[0]} input channels (dim 0 of [C_in, C_out/groups, kH, kW]), x [${xs.join(', ')}] has ${xs[1]}`);
  if (xs[1] % groups !== 0) g.el.error(g.r('groups'), `${xs[1]} input channels are not divisible by groups ${groups}`);
  const stride = pairAtLeast(g, 'stride', 1);
  const padding = pairAtLeast(g, 'padding', 0);
  const dilation = pairAtLeast(g, 'dilation', 1);
  const outPad = pairAtLeast(g, 'output_padding', 0);
  for (const i of [0, 1])
    if (outPad[i] >= Math.max(stride[i], dilation[i]))
      g.el.error(g.r('output_padding'), `output_padding ${outPad[i]} must be smaller than stride ${stride[i]} or dilation ${dilation[i]} (as in PyTorch)`);
  const out = [0, 1].map((i) => (xs[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (ws[2 + i] - 1) + outPad[i] + 1);
  if (out.some((n) => n < 1))
    g.el.error(
      g.a.callRange,
      `conv_transpose2d of x [${xs.join(', ')}] with kernel ${ws[2]}x${ws[3]} and padding ${padding.join(', ')} gives an empty output ${out.join('x')}`,
    );
  const conv = { stride, padding, dilation, groups };
  // Rows added to x where output_padding >= stride (only possible with dilation > stride).
  const extra = [0, 1].map((i) => (outPad[i] < stride[i] ? 0 : Math.ceil(outPad[i] / stride[i])));
  if (extra[0] === 0 && extra[1] === 0) return emitOp(g, 'conv2d_grad_input', [x, w], { ...conv, inputSize: [out[0], out[1]] });
  const padded = emitOp(g, 'pad', [x], { pads: [0, 0, 0, 0, 0, extra[0], 0, extra[1]], value: 0 });
  const full = [0, 1].map((i) => out[i] + (extra[i] > 0 ? extra[i] * stride[i] - outPad[i] : 0));
  const y = emitOp(g, 'conv2d_grad_input', [padded, w], { ...conv, inputSize: [full[0], full[1]] });
  return emitOp(g, 'pad', [y], { pads: [0, 0, 0, 0, 0, out[0] - full[0], 0, out[1] - full[1]], value: 0 });
}

// ---------------------------------------------------------------- initialisers

function init(params: ArgSpec[], make: (g: Args) => InitSpec): BuiltinDef {
  return def(params, (g) => ({ k: 'init', spec: make(g) }));
}

function positive(g: Args, name: string): number {
  const v = g.float(name);
  if (!(v > 0)) g.el.error(g.r(name), `${g.what(name)} must be positive, got ${v}`);
  return v;
}

// ------------------------------------------------------------------ the table

export function makeBuiltins(): Map<string, BuiltinDef> {
  const m = new Map<string, BuiltinDef>();
  for (const op of UNARY_OPS) m.set(op, unary(op));
  for (const op of ['maximum', 'minimum', 'pow'] as const) m.set(op, binary(op));

  m.set(
    'where',
    def([req('cond'), req('a'), req('b')], (g, el) => {
      const c = g.tensor('cond');
      const dtype = tensorDtype([g.v('a'), g.v('b')]);
      return emitOp(g, 'where', [c, el.asTensor(g.v('a')!, dtype, g.r('a'), g.what('a')), el.asTensor(g.v('b')!, dtype, g.r('b'), g.what('b'))], {});
    }),
  );
  m.set(
    'matmul',
    def([req('a'), req('b'), opt('transpose_a', bool(false)), opt('transpose_b', bool(false))], (g) =>
      emitOp(g, 'matmul', [g.tensor('a'), g.tensor('b')], { transA: g.bool('transpose_a'), transB: g.bool('transpose_b') }),
    ),
  );
  m.set(
    'conv2d',
    def([req('x'), req('w'), opt('stride', int(1)), opt('padding', int(0)), opt('dilation', int(1)), opt('groups', int(1))], (g) => {
      const groups = g.int('groups');
      if (groups < 1) g.el.error(g.r('groups'), `groups must be at least 1, got ${groups}`);
      return emitOp(g, 'conv2d', [g.tensor('x'), g.tensor('w')], {
        stride: g.intOrPair('stride'),
        padding: g.intOrPair('padding'),
        dilation: g.intOrPair('dilation'),
        groups,
      });
    }),
  );

  m.set(
    'conv_transpose2d',
    def(
      [req('x'), req('w'), opt('stride', int(1)), opt('padding', int(0)), opt('output_padding', int(0)), opt('dilation', int(1)), opt('groups', int(1))],
      convTranspose2d,
    ),
  );

  m.set('sum', reduction('sum'));
  m.set('max', extremum('max'));
  m.set('min', extremum('min'));
  m.set(
    'logsumexp',
    def([req('x'), opt('axis', int(-1)), opt('keepdims', bool(false))], (g) => {
      const x = g.tensor('x');
      const [axis] = normAxes([g.int('axis')], x.shape.length, g, 'axis');
      return emitOp(g, 'logsumexp', [x], { axis, keepdims: g.bool('keepdims') });
    }),
  );
  for (const op of ['softmax', 'log_softmax'] as const)
    m.set(
      op,
      def([req('x'), opt('axis', int(-1))], (g) => {
        const x = g.tensor('x');
        const [axis] = normAxes([g.int('axis')], x.shape.length, g, 'axis');
        return emitOp(g, op, [x], { axis });
      }),
    );

  m.set(
    'reshape',
    def([req('x'), req('shape')], (g) => {
      const x = g.tensor('x');
      return emitOp(g, 'reshape', [x], { shape: reshapeTarget(g, x, g.ints('shape')) });
    }),
  );
  m.set(
    'transpose',
    def([req('x'), req('perm')], (g) => emitOp(g, 'transpose', [g.tensor('x')], { perm: g.ints('perm') })),
  );
  m.set(
    'expand',
    def([req('x'), req('shape')], (g) => emitOp(g, 'expand', [g.tensor('x')], { shape: g.ints('shape') })),
  );
  m.set(
    'slice',
    def([req('x'), opt('starts'), opt('ends'), opt('axis'), opt('start'), opt('end')], (g) => {
      const x = g.tensor('x');
      const { starts, ends } = sliceBounds(g, x);
      return emitOp(g, 'slice', [x], { starts, ends });
    }),
  );
  m.set(
    'concat',
    def([req('tensors'), opt('axis', int(0))], (g: Args) => {
      const v = g.v('tensors')!;
      if (v.k !== 'list' && v.k !== 'tuple') g.el.error(g.r('tensors'), `concat takes a list of tensors [a, b, ...], got ${kindName(v)}`);
      const ts = v.items.map((t, i) => expectTensor(t, g.r('tensors'), `item ${i} of the concat list`));
      if (ts.length === 0) g.el.error(g.r('tensors'), 'concat of an empty list');
      const [axis] = normAxes([g.int('axis')], ts[0].shape.length, g, 'axis');
      return emitOp(g, 'concat', ts, { axis });
    }),
  );
  m.set(
    'pad',
    def([req('x'), req('pads'), opt('value', float(0))], (g) => emitOp(g, 'pad', [g.tensor('x')], { pads: g.ints('pads'), value: g.float('value') })),
  );
  m.set(
    'gather',
    def([req('table'), req('idx')], (g) => emitOp(g, 'gather', [g.tensor('table'), g.tensor('idx')], {})),
  );
  m.set(
    'segment_max',
    def([req('x'), req('seg'), req('segments')], (g) => {
      const n = g.int('segments');
      if (n < 1) g.el.error(g.r('segments'), `segments must be at least 1, got ${n}`);
      return emitOp(g, 'segment_max', [g.tensor('x'), g.tensor('seg')], { numSegments: n });
    }),
  );
  for (const op of ['max_pool2d', 'avg_pool2d'] as const) {
    m.set(
      op,
      def([req('x'), req('kernel'), opt('stride'), opt('padding', int(0))], (g) => {
        const kernel = g.intOrPair('kernel');
        return emitOp(g, op, [g.tensor('x')], { kernel, stride: g.has('stride') ? g.intOrPair('stride') : kernel, padding: g.intOrPair('padding') });
      }),
    );
  }
  m.set(
    'upsample2d',
    def(
      [
        req('x'),
        req('size'),
        opt('mode', { k: 'enum', v: 'nearest', members: ['nearest', 'bilinear'] }, ['nearest', 'bilinear']),
        opt('align_corners', bool(false)),
      ],
      (g) => {
        const size = g.ints('size');
        if (size.length !== 2) g.el.error(g.r('size'), `size must be [height, width], got ${size.length} values`);
        return emitOp(g, 'upsample2d', [g.tensor('x')], {
          size: [size[0], size[1]],
          mode: g.enumOf('mode', ['nearest', 'bilinear']),
          alignCorners: g.bool('align_corners'),
        });
      },
    ),
  );
  m.set(
    'iota',
    def([req('shape'), req('axis'), opt('dtype', { k: 'enum', v: 'i32', members: DTYPES }, DTYPES)], (g, el) => {
      const shape = g.ints('shape');
      const [axis] = normAxes([g.int('axis')], shape.length, g, 'axis');
      el.checkShape(shape, g.r('shape'), 'iota');
      return el.emit('iota', [], { axis }, g.a.callRange, 'iota', undefined, { shape, dtype: g.enumOf('dtype', DTYPES) });
    }),
  );
  m.set(
    'full',
    def([req('shape'), req('value'), opt('dtype', { k: 'enum', v: 'f32', members: DTYPES }, DTYPES)], (g, el) => {
      const shape = g.ints('shape');
      const dtype = g.enumOf('dtype', DTYPES);
      const value = g.float('value');
      if (dtype === 'i32' && !Number.isInteger(value)) el.error(g.r('value'), `an i32 tensor cannot hold ${value}`);
      el.checkShape(shape, g.r('shape'), 'full');
      return el.emit('full', [], { value }, g.a.callRange, 'full', undefined, { shape, dtype });
    }),
  );
  m.set(
    'tensor',
    def([req('values'), req('shape'), opt('dtype', { k: 'enum', v: 'f32', members: DTYPES }, DTYPES)], (g, el) => {
      const shape = g.ints('shape');
      const data = expectFloatList(g.v('values')!, g.r('values'), g.what('values'));
      el.checkShape(shape, g.r('shape'), 'tensor');
      if (data.length !== numel(shape)) el.error(g.r('values'), `tensor has ${data.length} values, but shape [${shape.join(', ')}] needs ${numel(shape)}`);
      return el.emit('tensor', [], { data }, g.a.callRange, 'tensor', undefined, { shape, dtype: g.enumOf('dtype', DTYPES) });
    }),
  );
  m.set(
    'cast',
    def([req('x'), req('to', DTYPES)], (g) => {
      const x = g.tensor('x');
      const to = g.enumOf('to', DTYPES);
      return x.dtype === to ? x : emitOp(g, 'cast', [x], { to });
    }),
  );
  m.set(
    'dropout',
    def([req('x'), req('p')], (g, el) => {
      const x = g.tensor('x');
      const p = g.float('p');
      if (!(p >= 0 && p < 1)) el.error(g.r('p'), `dropout probability must be in [0, 1), got ${p}`);
      if (!el.training || p === 0) return x;
      const { seed, salt } = el.dropoutSeed(g.a.callRange);
      return emitOp(g, 'dropout', [x, seed], { p, salt });
    }),
  );

  // ------------------------------------------------------ compile-time built-ins
  m.set(
    'len',
    def([req('x')], (g: Args) => {
      const x = g.v('x')!;
      if (x.k === 'list' || x.k === 'tuple') return int(x.items.length);
      if (x.k === 'modlist') return int(x.items.size);
      if (x.k === 'string') return int(x.v.length);
      g.el.error(g.r('x'), `len needs a list, got ${kindName(x)}`);
    }),
  );
  m.set(
    'range',
    def([req('start'), opt('end')], (g, el) => {
      let lo = g.int('start');
      let hi: number;
      if (g.has('end')) hi = g.int('end');
      else [lo, hi] = [0, lo];
      if (hi - lo > LIMITS.maxListLength) el.error(g.a.callRange, `range(${lo}, ${hi}) is longer than ${LIMITS.maxListLength}`);
      const out: Value[] = [];
      for (let i = lo; i < hi; i++) out.push(int(i));
      return list(out);
    }),
  );
  m.set(
    'numel',
    def([req('x'), opt('axes')], (g) => {
      const x = g.tensor('x');
      if (!g.has('axes')) return int(numel(x.shape));
      return int(normAxes(g.ints('axes'), x.shape.length, g, 'axes').reduce((p, a) => p * x.shape[a], 1));
    }),
  );
  m.set(
    'int',
    def([req('x')], (g) => int(Math.trunc(g.float('x')))),
  );
  m.set(
    'float',
    def([req('x')], (g) => float(g.float('x'))),
  );
  m.set(
    'floor',
    def([req('x')], (g) => int(Math.floor(g.float('x')))),
  );
  m.set(
    'ceil',
    def([req('x')], (g) => int(Math.ceil(g.float('x')))),
  );
  m.set(
    'eye',
    def([req('n')], (g, el) => {
      const n = g.int('n');
      el.checkShape([n, n], g.r('n'), 'eye');
      const rows = el.emit('iota', [], { axis: 0 }, g.a.callRange, 'eye', undefined, { shape: [n, n], dtype: 'i32' });
      const cols = el.emit('iota', [], { axis: 1 }, g.a.callRange, 'eye', undefined, { shape: [n, n], dtype: 'i32' });
      return el.emit('eq', [rows, cols], {}, g.a.callRange, 'eye', `eye(${n})`);
    }),
  );
  m.set(
    'assert',
    def([req('cond'), opt('message', { k: 'string', v: 'assertion failed' })], (g, el) => {
      if (!g.bool('cond')) el.error(g.a.callRange, expectString(g.v('message')!, g.r('message'), g.what('message')));
      return NONE;
    }),
  );

  // --------------------------------------------------------------- initialisers
  m.set(
    'zeros',
    init([], () => ({ kind: 'zeros' })),
  );
  m.set(
    'ones',
    init([], () => ({ kind: 'ones' })),
  );
  m.set(
    'constant',
    init([req('value')], (g) => ({ kind: 'constant', value: g.float('value') })),
  );
  m.set(
    'normal',
    init([opt('mean', float(0)), opt('std', float(1))], (g) => ({ kind: 'normal', mean: g.float('mean'), std: positive(g, 'std') })),
  );
  m.set(
    'uniform',
    init([opt('low', float(0)), opt('high', float(1))], (g) => {
      const low = g.float('low');
      const high = g.float('high');
      if (!(high > low)) g.el.error(g.a.callRange, `uniform(low, high) needs low < high, got ${low} and ${high}`);
      return { kind: 'uniform', low, high };
    }),
  );
  for (const kind of ['kaiming_normal', 'kaiming_uniform'] as const) {
    m.set(
      kind,
      init([opt('mode', { k: 'enum', v: 'fan_in', members: MODES }, MODES), opt('gain', float(Math.SQRT2))], (g) => ({
        kind,
        mode: g.enumOf('mode', MODES),
        gain: positive(g, 'gain'),
      })),
    );
  }
  m.set(
    'trunc_normal',
    init([opt('std', float(1))], (g) => ({ kind: 'trunc_normal', std: positive(g, 'std') })),
  );
  return m;
}
