// Elaboration: evaluates a flattened model for one mode and configuration —
// blocks are instantiated, fns called, compile-time control flow run — and
// emits the graph IR through GraphBuilder, typing every op with its shape rule
// (the op table, compiler/ops/). A ShapeError becomes a located compile error naming both shapes
// and where each came from. Errors are caught per statement so one run reports
// several; names bound by a failed statement become "poison", which later
// statements pass through silently instead of reporting cascades.

import type { Arg, BlockDecl, Dim, Expr, FnDecl, Range, Stmt, TypeExpr } from '../../grammar/ast.ts';
import { GraphBuilder } from '../builder.ts';
import { type DType, type OpAttrs, type OpName, type Shape, type SourceLoc, numel } from '../ir.ts';
import type { Binary, Compare } from '../ops/elementwise.ts';
import { ShapeError } from '../ops/index.ts';
import { CompileError, type DiagExtras, type Diagnostic, FatalError, MAX_ERRORS, didYouMean, formatLoc, makeDiagnostic } from './diagnostics.ts';
import { type Binding, Scope } from './scope.ts';
import {
  type Instance,
  type TensorValue,
  type Value,
  NONE,
  POISON,
  bool,
  describe,
  dtypeShape,
  expectBool,
  expectEnum,
  expectFloat,
  expectFloatList,
  expectInt,
  expectIntList,
  expectString,
  float,
  int,
  isNumber,
  kindName,
  list,
  originNote,
  sizeOf,
  str,
  tuple,
  valuesEqual,
} from './values.ts';

export const LIMITS = {
  maxNodes: 1_000_000,
  maxElements: 2 ** 31,
  maxCallDepth: 200,
  maxLoopIterations: 100_000,
  maxTotalIterations: 1_000_000,
  maxListLength: 100_000,
  maxSteps: 500_000,
};

/** What the primitives and built-ins (primitives.ts) are given to work with. */
export interface ArgSpec {
  name: string;
  /** The parameter is required when `dflt` is undefined and `optional` is not set. */
  dflt?: Value;
  optional?: boolean;
  /** Bare names that are members of this enum mean the member. */
  members?: readonly string[];
}

export interface CallArgs {
  values: (Value | undefined)[];
  ranges: Range[];
  callRange: Range;
  label: string;
}

export type BuiltinImpl = (el: Elaborator, a: CallArgs, scope: Scope, target?: InstantiationTarget) => Value;

export interface BuiltinDef {
  params: ArgSpec[];
  run: BuiltinImpl;
}

export interface InstantiationTarget {
  prefix: string;
  name: string;
}

interface Frame {
  name: string;
  range: Range;
}

type Ctx = { level: 'block' | 'model'; scope: Scope; inst: Instance } | { level: 'fn'; scope: Scope; inst?: Instance; fnLabel: string };

interface Returned {
  value: Value;
  range: Range;
}

export interface ElaborateOptions {
  mode: 'train' | 'eval';
  /** Source text by display path, for expression snippets in messages. */
  sources: Map<string, string>;
}

export class Elaborator {
  readonly b = new GraphBuilder();
  readonly diagnostics: Diagnostic[] = [];
  readonly training: boolean;
  readonly globalScope: Scope;
  private readonly seenDiags = new Set<string>();
  private readonly callStack: Frame[] = [];
  private steps = 0;
  private totalIterations = 0;
  private salt = 0;
  private seedNode: number | undefined;
  private lines = new Map<string, string[]>();
  /** Every instance created, with its parent's children list updated as it goes. */
  readonly instances: Instance[] = [];
  readonly builtins: Map<string, BuiltinDef>;
  /** How each state tensor was declared (frozen params are emitted as non-trainable leaves). */
  readonly stateKinds = new Map<string, 'param' | 'buffer'>();

  constructor(
    globals: Map<string, BlockDecl | FnDecl | { kind: 'Model' }>,
    builtins: Map<string, BuiltinDef>,
    readonly opts: ElaborateOptions,
  ) {
    this.training = opts.mode === 'train';
    this.builtins = builtins;
    this.globalScope = new Scope(undefined);
    for (const [name] of builtins) this.globalScope.define(name, { value: { k: 'builtin', name }, kind: 'builtin' });
    this.globalScope.define('training', { value: bool(this.training), kind: 'builtin' });
    for (const [name, d] of globals) {
      if (d.kind === 'Block') this.globalScope.define(name, { value: { k: 'block', decl: d }, kind: 'global', range: d.name.range });
      else if (d.kind === 'Fn') this.globalScope.define(name, { value: { k: 'fn', decl: d }, kind: 'global', range: d.name.range });
    }
  }

  // ---------------------------------------------------------------- errors

  report(e: CompileError): void {
    const notes = [...(e.extras.notes ?? [])];
    for (const f of this.callStack.slice(-4).reverse()) notes.push(`in ${f.name}, called from ${formatLoc(f.range)}`);
    const d = makeDiagnostic(e.range, e.message, { ...e.extras, notes });
    const key = `${d.file}:${d.line}:${d.col}:${d.message}`;
    if (this.seenDiags.has(key)) return;
    this.seenDiags.add(key);
    this.diagnostics.push(d);
    if (this.diagnostics.length >= MAX_ERRORS) throw new FatalError(e.range, 'too many errors; stopping');
  }

  error(range: Range | undefined, message: string, extras?: DiagExtras): never {
    throw new CompileError(range, message, extras);
  }

  /** Runs `f`, reporting a CompileError instead of throwing it; returns undefined on error. */
  guard<T>(f: () => T): T | undefined {
    try {
      return f();
    } catch (e) {
      if (e instanceof FatalError || !(e instanceof CompileError)) throw e;
      if (e.message) this.report(e);
      return undefined;
    }
  }

  /** The source text of a short single-line range, for naming an expression in messages. */
  snippet(r: Range, fallback: string): string {
    if (r.line !== r.endLine) return fallback;
    let ls = this.lines.get(r.file);
    if (!ls) {
      ls = (this.opts.sources.get(r.file) ?? '').split(/\r?\n/);
      this.lines.set(r.file, ls);
    }
    const text = (ls[r.line - 1] ?? '').slice(r.col - 1, r.endCol - 1);
    return text && text.length <= 40 ? text : fallback;
  }

  /** The statement being elaborated, to locate resource-limit errors. */
  private currentStmt: Range | undefined;

  private tick() {
    if (++this.steps > LIMITS.maxSteps)
      throw new FatalError(this.currentStmt, `elaboration takes more than ${LIMITS.maxSteps} steps; the program is too large`, {
        hint: 'look for loops or recursion with very large bounds',
      });
  }

  // -------------------------------------------------------------- emitting

  loc(r: Range): SourceLoc {
    return { file: r.file, line: r.line, col: r.col };
  }

  /** Emits one op through GraphBuilder; shape/dtype rule violations become located errors. */
  emit<P extends OpName>(
    op: P,
    ins: TensorValue[],
    attrs: OpAttrs[P],
    range: Range,
    label: string,
    what?: string,
    leaf?: { shape: Shape; dtype: DType },
  ): TensorValue {
    if (this.b.graph.nodes.length >= LIMITS.maxNodes) throw new FatalError(range, `the graph has more than ${LIMITS.maxNodes} nodes`);
    let id: number;
    try {
      id = this.b.emit<OpName>(
        op,
        ins.map((t) => t.id),
        attrs,
        { loc: this.loc(range), shape: leaf?.shape, dtype: leaf?.dtype },
      );
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
      const dtypes = new Set(ins.map((t) => t.dtype));
      const kind = dtypes.size > 1 && /f32|i32|dtype/.test(e.message) ? 'type mismatch' : 'shape mismatch';
      this.error(range, `${kind} in ${label}: ${e.message}`, { notes: ins.map(originNote) });
    }
    const node = this.b.node(id);
    this.checkShape(node.shape, range, label);
    return { k: 'tensor', id, shape: node.shape, dtype: node.dtype, origin: { range, what: what ?? this.snippet(range, label) } };
  }

  /** Lists and tuples may nest, but their total size is bounded (equality and printing walk all of it). */
  checkSize(v: Value, range: Range): Value {
    if (sizeOf(v) > LIMITS.maxListLength) this.error(range, `list larger than ${LIMITS.maxListLength} values`);
    return v;
  }

  checkShape(shape: Shape, range: Range, label: string): void {
    for (const d of shape)
      if (!(d >= 1)) this.error(range, `${label} produces an empty or invalid shape [${shape.join(', ')}]`, { hint: 'every dimension must be at least 1' });
    const n = numel(shape);
    if (n > LIMITS.maxElements)
      this.error(range, `${label} produces a tensor of ${n} elements ([${shape.join(', ')}]), more than the limit ${LIMITS.maxElements}`);
  }

  /** A compile-time number as a scalar constant of the given dtype. */
  constant(v: number, dtype: DType, range: Range): TensorValue {
    if (dtype === 'i32' && !Number.isInteger(v))
      this.error(range, `${v} is not an integer and cannot be combined with an i32 tensor`, { hint: 'cast the tensor to f32 first' });
    return this.emit('full', [], { value: v }, range, 'constant', String(v), { shape: [], dtype });
  }

  /** A tensor or a number (as a constant of `dtype`). */
  asTensor(v: Value, dtype: DType, range: Range, what: string): TensorValue {
    if (v.k === 'tensor') return v;
    if (isNumber(v)) return this.constant(v.v, dtype, range);
    if (v.k === 'bool') return this.constant(v.v ? 1 : 0, dtype, range);
    this.error(range, `${what} must be a tensor or a number, got ${kindName(v)}`);
  }

  /** The graph input `seed: i32[]` feeding every dropout, and a fresh salt per dropout site. */
  dropoutSeed(range: Range): { seed: TensorValue; salt: number } {
    if (this.seedNode === undefined) this.seedNode = this.b.input('seed', [], 'i32', this.loc(range));
    const n = this.b.node(this.seedNode);
    return { seed: { k: 'tensor', id: n.id, shape: n.shape, dtype: n.dtype, origin: { range, what: 'seed' } }, salt: this.salt++ };
  }

  // ------------------------------------------------------------ expressions

  eval(e: Expr, scope: Scope, target?: InstantiationTarget): Value {
    this.tick();
    switch (e.kind) {
      case 'Num':
        // 1e999 reads as Infinity: a learning rate or temperature of Infinity would make training undefined.
        if (!Number.isFinite(e.value))
          this.error(e.range, `number out of range: it reads as ${e.value}`, { hint: 'a number must be finite (at most about 1.8e308)' });
        return e.isInt ? int(e.value) : float(e.value);
      case 'Str':
        return str(e.value);
      case 'Bool':
        return bool(e.value);
      case 'Ident':
        return this.lookup(e.name, e.range, scope);
      case 'List':
      case 'Tuple': {
        const items = e.items.map((x) => this.eval(x, scope));
        if (items.some((x) => x.k === 'poison')) return POISON;
        return this.checkSize(e.kind === 'List' ? list(items) : tuple(items), e.range);
      }
      case 'Unary':
        return this.evalUnary(e, scope);
      case 'Binary':
        return this.evalBinary(e, scope);
      case 'Cond': {
        const c = this.eval(e.cond, scope);
        if (c.k === 'poison') return POISON;
        return expectBool(c, e.cond.range, 'the condition of if ... then ... else') ? this.eval(e.then, scope, target) : this.eval(e.else, scope, target);
      }
      case 'Call':
        return this.evalCall(e, scope, target);
      case 'Member':
        return this.evalMember(e, scope);
      case 'Index':
        return this.evalIndex(e, scope);
    }
  }

  lookup(name: string, range: Range, scope: Scope): Value {
    const b = scope.lookup(name);
    if (b) return b.value;
    this.error(range, `unknown name '${name}'`, didYouMean(name, scope.names()));
  }

  /** Evaluates an argument; a bare name that is a member of `members` means that member. */
  evalArg(e: Expr, scope: Scope, members?: readonly string[]): Value {
    if (members && e.kind === 'Ident' && members.includes(e.name)) return { k: 'enum', v: e.name, members };
    if (members && e.kind === 'Cond') {
      // The expectation flows into both branches: `if small then resnet18 else resnet50`.
      const c = this.eval(e.cond, scope);
      if (c.k === 'poison') return POISON;
      return this.evalArg(expectBool(c, e.cond.range, 'the condition of if ... then ... else') ? e.then : e.else, scope, members);
    }
    if (members && e.kind === 'Ident' && !scope.lookup(e.name)) {
      this.error(e.range, `'${e.name}' is not one of ${members.join(', ')}`, didYouMean(e.name, members));
    }
    return this.eval(e, scope);
  }

  private evalUnary(e: Extract<Expr, { kind: 'Unary' }>, scope: Scope): Value {
    const v = this.eval(e.operand, scope);
    if (v.k === 'poison') return POISON;
    if (e.op === 'not') return bool(!expectBool(v, e.operand.range, "the operand of 'not'"));
    if (v.k === 'int') return int(-v.v);
    if (v.k === 'float') return float(-v.v);
    if (v.k === 'tensor') return this.emit('neg', [v], {}, e.range, "unary '-'");
    this.error(e.range, `cannot negate ${kindName(v)}`);
  }

  private evalBinary(e: Extract<Expr, { kind: 'Binary' }>, scope: Scope): Value {
    if (e.op === 'and' || e.op === 'or') {
      const l = this.eval(e.left, scope);
      if (l.k === 'poison') return POISON;
      const lb = expectBool(l, e.left.range, `the left side of '${e.op}'`);
      if (e.op === 'and' ? !lb : lb) return bool(lb);
      const r = this.eval(e.right, scope);
      if (r.k === 'poison') return POISON;
      return bool(expectBool(r, e.right.range, `the right side of '${e.op}'`));
    }
    let l: Value;
    let r: Value;
    if ((e.op === '==' || e.op === '!=') && (e.left.kind === 'Ident' || e.right.kind === 'Ident')) {
      // `init == kaiming_fan_out`: a bare name beside an enum value means the member.
      [l, r] = this.evalEnumComparison(e.left, e.right, scope);
    } else {
      l = this.eval(e.left, scope);
      r = this.eval(e.right, scope);
    }
    if (l.k === 'poison' || r.k === 'poison') return POISON;
    return this.binaryOp(e.op, l, r, e.range, e.opRange, e.left.range, e.right.range);
  }

  private evalEnumComparison(left: Expr, right: Expr, scope: Scope): [Value, Value] {
    const memberOf = (side: Expr, other: Value): Value | undefined => {
      if (side.kind !== 'Ident' || other.k !== 'enum') return undefined;
      if (other.members.includes(side.name)) return { k: 'enum', v: side.name, members: other.members };
      if (!scope.lookup(side.name))
        this.error(side.range, `'${side.name}' is not a member of enum(${other.members.join(', ')})`, didYouMean(side.name, other.members));
      return undefined;
    };
    if (left.kind === 'Ident' && !scope.lookup(left.name)) {
      const r = this.eval(right, scope);
      return [memberOf(left, r) ?? this.eval(left, scope), r];
    }
    const l = this.eval(left, scope);
    return [l, memberOf(right, l) ?? this.eval(right, scope)];
  }

  binaryOp(op: string, l: Value, r: Value, range: Range, opRange: Range, lRange: Range, rRange: Range): Value {
    if (l.k === 'tensor' || r.k === 'tensor') return this.tensorBinary(op, l, r, range, opRange, lRange, rRange);
    if (op === '==' || op === '!=') {
      const eq = valuesEqual(l, r);
      return bool(op === '==' ? eq : !eq);
    }
    if (isNumber(l) && isNumber(r)) return this.numberBinary(op, l, r, opRange);
    if (op === '+' && l.k === 'string' && r.k === 'string') {
      if (l.v.length + r.v.length > LIMITS.maxListLength) this.error(range, `string longer than ${LIMITS.maxListLength} characters`);
      return str(l.v + r.v);
    }
    if (op === '+' && l.k === 'list' && r.k === 'list') {
      if (sizeOf(l) + sizeOf(r) > LIMITS.maxListLength) this.error(range, `list larger than ${LIMITS.maxListLength} values`);
      return list([...l.items, ...r.items]);
    }
    if (op === '*' && l.k === 'list' && r.k === 'int') {
      if (r.v < 0 || sizeOf(l) * r.v > LIMITS.maxListLength)
        this.error(range, `list repetition gives ${sizeOf(l) * r.v} values (allowed 0..${LIMITS.maxListLength})`);
      const out: Value[] = [];
      for (let i = 0; i < r.v; i++) out.push(...l.items);
      return list(out);
    }
    this.error(opRange, `'${op}' cannot combine ${kindName(l)} and ${kindName(r)}`);
  }

  private numberBinary(op: string, l: Extract<Value, { k: 'int' | 'float' }>, r: Extract<Value, { k: 'int' | 'float' }>, opRange: Range): Value {
    const bothInt = l.k === 'int' && r.k === 'int';
    const a = l.v;
    const b = r.v;
    const num = (v: number): Value => {
      if (bothInt) {
        if (!Number.isSafeInteger(v)) this.error(opRange, `integer overflow in '${op}' (${a} ${op} ${b})`);
        return int(v);
      }
      if (!Number.isFinite(v)) this.error(opRange, `'${op}' gives ${v} (${a} ${op} ${b})`);
      return float(v);
    };
    switch (op) {
      case '+':
        return num(a + b);
      case '-':
        return num(a - b);
      case '*':
        return num(a * b);
      case '/':
        if (b === 0) this.error(opRange, 'division by zero');
        return float(a / b);
      case '%':
        if (!bothInt) this.error(opRange, `'%' needs ints, got ${describe(l)} and ${describe(r)}`);
        if (b === 0) this.error(opRange, 'modulo by zero');
        return int(((a % b) + b) % b);
      case '**': {
        if (bothInt && b >= 0) return num(a ** b);
        const v = a ** b;
        if (!Number.isFinite(v)) this.error(opRange, `'**' gives ${v} (${a} ** ${b})`);
        return float(v);
      }
      case '<':
        return bool(a < b);
      case '<=':
        return bool(a <= b);
      case '>':
        return bool(a > b);
      case '>=':
        return bool(a >= b);
    }
    this.error(opRange, `unknown operator '${op}'`);
  }

  private static readonly TENSOR_OPS: Record<string, Binary | Compare> = {
    '+': 'add',
    '-': 'sub',
    '*': 'mul',
    '/': 'div',
    '**': 'pow',
    '==': 'eq',
    '!=': 'ne',
    '<': 'lt',
    '<=': 'le',
    '>': 'gt',
    '>=': 'ge',
  };

  private tensorBinary(op: string, l: Value, r: Value, range: Range, opRange: Range, lRange: Range, rRange: Range): Value {
    const irOp = Elaborator.TENSOR_OPS[op];
    if (!irOp) this.error(opRange, `'${op}' is not defined on tensors`);
    if (op === '**' && l.k === 'tensor' && isNumber(r) && r.v === 2) return this.emit('square', [l], {}, range, "'**'");
    const dtype = l.k === 'tensor' ? l.dtype : (r as TensorValue).dtype;
    const lt = this.asTensor(l, dtype, lRange, `the left side of '${op}'`);
    const rt = this.asTensor(r, dtype, rRange, `the right side of '${op}'`);
    if (lt.dtype !== rt.dtype)
      this.error(opRange, `type mismatch in '${op}': ${dtypeShape(lt.dtype, lt.shape)} and ${dtypeShape(rt.dtype, rt.shape)} have different dtypes`, {
        notes: [originNote(lt), originNote(rt)],
        hint: 'convert one side with cast(x, f32)',
      });
    return this.emit(irOp, [lt, rt], {}, range, `'${op}'`);
  }

  private evalMember(e: Extract<Expr, { kind: 'Member' }>, scope: Scope): Value {
    const o = this.eval(e.object, scope);
    const name = e.name.name;
    if (o.k === 'poison') return POISON;
    if (o.k === 'tensor') {
      if (name === 'shape') return list(o.shape.map(int));
      if (name === 'rank') return int(o.shape.length);
      if (name === 'dtype') return { k: 'enum', v: o.dtype, members: ['f32', 'i32'] };
      this.error(e.name.range, `a tensor has no member '${name}'`, didYouMean(name, ['shape', 'rank', 'dtype']));
    }
    if (o.k === 'module') {
      const b = o.inst.scope.vars.get(name);
      if (b) return b.value;
      this.error(e.name.range, `${o.inst.typeName} has no member '${name}'`, didYouMean(name, o.inst.scope.vars.keys()));
    }
    if (o.k === 'list' || o.k === 'tuple' || o.k === 'modlist') {
      if (name === 'len') return int(o.k === 'modlist' ? o.items.size : o.items.length);
    }
    this.error(e.name.range, `${kindName(o)} has no member '${name}'`);
  }

  private evalIndex(e: Extract<Expr, { kind: 'Index' }>, scope: Scope): Value {
    const o = this.eval(e.object, scope);
    const iv = this.eval(e.index, scope);
    if (o.k === 'poison' || iv.k === 'poison') return POISON;
    if (o.k === 'list' || o.k === 'tuple') {
      const i = expectInt(iv, e.index.range, 'an index');
      const j = i < 0 ? i + o.items.length : i;
      if (j < 0 || j >= o.items.length) this.error(e.index.range, `index ${i} is out of range for a ${o.k} of ${o.items.length} items`);
      return o.items[j];
    }
    if (o.k === 'modlist') {
      const i = expectInt(iv, e.index.range, 'a sub-module index');
      const inst = o.items.get(i);
      if (!inst) this.error(e.index.range, `${o.name}[${i}] does not exist (defined: ${[...o.items.keys()].join(', ') || 'none'})`);
      return { k: 'module', inst };
    }
    if (o.k === 'tensor')
      this.error(e.range, 'tensors cannot be indexed with [ ]', { hint: 'use slice(x, axis: a, start: i, end: i + 1) or gather(table, idx)' });
    this.error(e.range, `${kindName(o)} cannot be indexed`);
  }

  // ------------------------------------------------------------------ calls

  private evalCall(e: Extract<Expr, { kind: 'Call' }>, scope: Scope, target?: InstantiationTarget): Value {
    const callee = this.eval(e.callee, scope);
    if (callee.k === 'poison') return POISON;
    const label = this.snippet(e.callee.range, 'the callee');
    switch (callee.k) {
      case 'fn':
        return this.callFn(
          callee.decl,
          callee.owner,
          e.args,
          scope,
          e.range,
          callee.owner ? `${callee.owner.typeName}.${callee.decl.name.name}` : callee.decl.name.name,
        );
      case 'module': {
        const fwd = callee.inst.methods.get('forward');
        if (!fwd)
          this.error(
            e.callee.range,
            `${callee.inst.typeName} has no forward method, so it cannot be applied like a function`,
            didYouMean('forward', callee.inst.methods.keys()),
          );
        return this.callFn(fwd, callee.inst, e.args, scope, e.range, `${callee.inst.typeName}.forward`);
      }
      case 'block':
        if (!target)
          this.error(
            e.range,
            `block ${callee.decl.name.name} can only be instantiated as a sub-module: NAME = ${callee.decl.name.name}(...) at block or model level`,
            {
              hint: 'so that its parameters get a stable name',
            },
          );
        return { k: 'module', inst: this.instantiate(callee.decl, e.args, scope, e.range, target) };
      case 'builtin': {
        const def = this.builtins.get(callee.name)!;
        const a = this.evalArgs(def.params, e.args, scope, e.range, callee.name);
        if (a.values.some((v) => v?.k === 'poison')) return POISON;
        return def.run(this, a, scope, target);
      }
      default:
        this.error(e.callee.range, `${label} is ${kindName(callee)}, which cannot be called`);
    }
  }

  /** Matches positional and named arguments to parameters; reports misuse precisely. */
  matchArgs(params: readonly { name: string }[], args: Arg[], callRange: Range, label: string): (Arg | undefined)[] {
    const out: (Arg | undefined)[] = new Array(params.length).fill(undefined);
    let sawNamed = false;
    let pos = 0;
    for (const a of args) {
      if (a.name) {
        sawNamed = true;
        const i = params.findIndex((p) => p.name === a.name!.name);
        if (i < 0)
          this.error(a.name.range, `${label} has no parameter '${a.name.name}'`, {
            ...didYouMean(
              a.name.name,
              params.map((p) => p.name),
            ),
            notes: [`parameters of ${label}: ${params.map((p) => p.name).join(', ') || 'none'}`],
          });
        if (out[i]) this.error(a.name.range, `argument '${a.name.name}' of ${label} is given twice`);
        out[i] = a;
      } else {
        if (sawNamed) this.error(a.range, `positional argument after a named argument in a call of ${label}`);
        if (pos >= params.length)
          this.error(
            a.range,
            `${label} takes ${params.length} argument${params.length === 1 ? '' : 's'}, got ${args.filter((x) => !x.name).length} positional`,
          );
        out[pos++] = a;
      }
    }
    void callRange;
    return out;
  }

  /** Matches and evaluates the arguments of a primitive or built-in; defaults fill the gaps. */
  evalArgs(params: ArgSpec[], args: Arg[], scope: Scope, callRange: Range, label: string): CallArgs {
    const matched = this.matchArgs(params, args, callRange, label);
    const values: (Value | undefined)[] = [];
    const ranges: Range[] = [];
    params.forEach((p, i) => {
      const a = matched[i];
      if (a) {
        values.push(this.evalArg(a.value, scope, p.members));
        ranges.push(a.value.range);
      } else {
        if (p.dflt === undefined && !p.optional) this.error(callRange, `missing argument '${p.name}' of ${label}`);
        values.push(p.dflt);
        ranges.push(callRange);
      }
    });
    return { values, ranges, callRange, label };
  }

  private enter(name: string, range: Range) {
    if (this.callStack.length >= LIMITS.maxCallDepth)
      throw new FatalError(range, `calls nested more than ${LIMITS.maxCallDepth} deep (unbounded recursion?)`, { hint: `the innermost call is ${name}` });
    this.callStack.push({ name, range });
  }

  /** Binds arguments to a fn's or block's parameters, type-checking them (dims bind on first use). */
  private bindParams(params: FnDecl['params'], args: Arg[], callerScope: Scope, callee: Scope, callRange: Range, label: string): boolean {
    const matched = this.matchArgs(
      params.map((p) => ({ name: p.name.name })),
      args,
      callRange,
      label,
    );
    const deferred: DeferredDim[] = [];
    let poisoned = false;
    params.forEach((p, i) => {
      const a = matched[i];
      const members = p.type?.kind === 'EnumType' ? p.type.members.map((m) => m.name) : undefined;
      let v: Value;
      if (a) v = this.evalArg(a.value, callerScope, members);
      else if (p.default) v = this.evalArg(p.default, callee, members);
      else
        this.error(callRange, `missing argument '${p.name.name}' of ${label}`, { notes: [`parameter '${p.name.name}' is declared at ${formatLoc(p.range)}`] });
      if (v.k === 'poison') {
        poisoned = true;
        callee.define(p.name.name, { value: POISON, kind: 'arg', range: p.name.range });
        return;
      }
      const what = `argument '${p.name.name}' of ${label}`;
      if (p.type) v = this.checkType(v, p.type, callee, what, a ? a.value.range : callRange, deferred);
      callee.define(p.name.name, { value: v, kind: 'arg', range: p.name.range });
    });
    this.checkDeferredDims(deferred, callee);
    return !poisoned;
  }

  callFn(decl: FnDecl, owner: Instance | undefined, args: Arg[], callerScope: Scope, callRange: Range, label: string): Value {
    const scope = new Scope(owner ? owner.scope : this.globalScope, true);
    if (!this.bindParams(decl.params, args, callerScope, scope, callRange, label)) return POISON;
    this.enter(label, callRange);
    let ret: Returned | undefined;
    try {
      ret = this.execBody(decl.body, { level: 'fn', scope, inst: owner, fnLabel: label });
    } finally {
      this.callStack.pop();
    }
    const value = ret?.value ?? NONE;
    if (decl.returnType && value.k !== 'poison') {
      if (value.k === 'none') this.error(ret?.range ?? decl.name.range, `${label} declares a result (-> ...) but returns nothing`);
      const deferred: DeferredDim[] = [];
      const checked = this.checkType(value, decl.returnType, scope, `the result of ${label}`, ret!.range, deferred, true);
      this.checkDeferredDims(deferred, scope);
      return checked;
    }
    return value;
  }

  instantiate(decl: BlockDecl, args: Arg[], callerScope: Scope, callRange: Range, target: InstantiationTarget): Instance {
    const scope = new Scope(this.globalScope, false);
    const inst: Instance = { typeName: decl.name.name, prefix: target.prefix, decl, scope, methods: new Map(), state: [], children: [], keys: new Map() };
    if (!this.bindParams(decl.params, args, callerScope, scope, callRange, decl.name.name)) return inst;
    for (const s of decl.body) {
      if (s.kind === 'Fn') {
        inst.methods.set(s.name.name, s);
        scope.define(s.name.name, { value: { k: 'fn', decl: s, owner: inst }, kind: 'method', range: s.name.range });
      }
    }
    this.instances.push(inst);
    this.enter(`${decl.name.name} (instantiated as ${target.prefix.slice(0, -1) || target.name})`, callRange);
    try {
      this.execBody(
        decl.body.filter((s) => s.kind !== 'Fn'),
        { level: 'block', scope, inst },
      );
    } finally {
      this.callStack.pop();
    }
    return inst;
  }

  // ------------------------------------------------------------------ types

  /** Checks `v` against a declared type and returns it converted (int→float, names→enum members). */
  checkType(v: Value, t: TypeExpr, scope: Scope, what: string, range: Range, deferred: DeferredDim[], isResult = false): Value {
    switch (t.kind) {
      case 'ValueType':
        if (t.list) {
          if (t.name === 'int') return list(expectIntList(v, range, what).map(int));
          if (t.name === 'float') return list(expectFloatList(v, range, what).map(float));
          if (v.k !== 'list') this.error(range, `${what} must be a list, got ${kindName(v)}`);
          return v;
        }
        if (t.name === 'int') return int(expectInt(v, range, what));
        if (t.name === 'float') return float(expectFloat(v, range, what));
        if (t.name === 'bool') return bool(expectBool(v, range, what));
        return str(expectString(v, range, what));
      case 'EnumType': {
        const members = t.members.map((m) => m.name);
        return { k: 'enum', v: expectEnum(v, members, range, what), members };
      }
      case 'TupleType': {
        if (v.k !== 'tuple' || v.items.length !== t.items.length) this.error(range, `${what} must be a tuple of ${t.items.length}, got ${kindName(v)}`);
        return { k: 'tuple', items: v.items.map((x, i) => this.checkType(x, t.items[i], scope, `${what} (item ${i})`, range, deferred, isResult)) };
      }
      case 'UnknownType':
        this.error(t.range, `unknown type '${t.name}'`, didYouMean(t.name, ['f32', 'i32', 'int', 'float', 'bool', 'string']));
      // falls through (error throws)
      case 'TensorType':
        if (v.k !== 'tensor') this.error(range, `${what} must be a tensor ${this.snippet(t.range, 'type')}, got ${kindName(v)}`);
        this.matchTensorType(v, t, scope, what, range, deferred, isResult);
        return v;
    }
  }

  private matchTensorType(
    v: TensorValue,
    t: Extract<TypeExpr, { kind: 'TensorType' }>,
    scope: Scope,
    what: string,
    range: Range,
    deferred: DeferredDim[],
    isResult: boolean,
  ) {
    const typeText = this.snippet(t.range, `${t.dtype}[...]`);
    const mismatch = (detail: string, extraNotes: string[] = []): never =>
      this.error(range, `${what} must be ${typeText}, got ${dtypeShape(v.dtype, v.shape)}: ${detail}`, {
        notes: [originNote(v), `the type is declared at ${formatLoc(t.range)}`, ...extraNotes],
      });
    if (v.dtype !== t.dtype) mismatch(`the dtype is ${v.dtype}, not ${t.dtype}`);
    const ell = t.dims.findIndex((d) => d.kind === 'Ellipsis');
    if (ell >= 0 && t.dims.slice(ell + 1).some((d) => d.kind === 'Ellipsis')) this.error(t.range, `a tensor type may contain '...' only once`);
    const rank = v.shape.length;
    const fixed = ell >= 0 ? t.dims.length - 1 : t.dims.length;
    if (ell < 0 && rank !== fixed) mismatch(`rank ${rank}, expected ${fixed}`);
    if (ell >= 0 && rank < fixed) mismatch(`rank ${rank}, expected at least ${fixed}`);
    t.dims.forEach((d: Dim, i) => {
      if (d.kind === 'Ellipsis') return;
      const axis = ell >= 0 && i > ell ? rank - (t.dims.length - i) : i;
      const actual = v.shape[axis];
      if (d.expr.kind === 'Ident') {
        const b = scope.lookup(d.expr.name);
        if (!b) {
          scope.define(d.expr.name, { value: int(actual), kind: 'dim', range: d.range, boundBy: what });
          return;
        }
        if (b.value.k === 'poison') return;
        const expected = expectInt(b.value, d.range, `dimension '${d.expr.name}'`);
        if (expected !== actual) {
          const by = b.kind === 'dim' && b.boundBy ? [`${d.expr.name} = ${expected} was bound by ${b.boundBy}`] : [];
          mismatch(`dimension ${axis} is ${actual}, but ${d.expr.name} is ${expected}`, by);
        }
        return;
      }
      if (d.expr.kind === 'Num') {
        if (d.expr.value !== actual) mismatch(`dimension ${axis} is ${actual}, expected ${d.expr.value}`);
        return;
      }
      deferred.push({ expr: d.expr, actual, axis, check: (detail) => mismatch(detail) });
    });
    void isResult;
  }

  private checkDeferredDims(deferred: DeferredDim[], scope: Scope) {
    for (const d of deferred) {
      const v = this.eval(d.expr, scope);
      if (v.k === 'poison') continue;
      const expected = expectInt(v, d.expr.range, 'a dimension');
      if (expected !== d.actual) d.check(`dimension ${d.axis} is ${d.actual}, but ${this.snippet(d.expr.range, 'the expression')} is ${expected}`);
    }
  }

  /** The concrete shape of a `param`/`buffer`/`input` type: every dim must be known. */
  concreteShape(t: TypeExpr, scope: Scope, what: string): { shape: Shape; dtype: DType } {
    if (t.kind === 'UnknownType') this.error(t.range, `unknown type '${t.name}'`, didYouMean(t.name, ['f32', 'i32']));
    if (t.kind !== 'TensorType') this.error(t.range, `${what} must have a tensor type such as f32[4, 8]`);
    const shape = t.dims.map((d) => {
      if (d.kind === 'Ellipsis') this.error(d.range, `${what} must have a concrete shape; '...' is only allowed in fn signatures`);
      const v = this.eval(d.expr, scope);
      if (v.k === 'poison') throw new CompileError(undefined, ''); // silent: the cause is reported already
      const n = expectInt(v, d.range, 'a dimension');
      if (n < 1) this.error(d.range, `dimension ${n} of ${what} must be at least 1`);
      return n;
    });
    this.checkShape(shape, t.range, what);
    return { shape, dtype: t.dtype };
  }

  // ------------------------------------------------------------- statements

  /** Runs statements in order with per-statement error recovery; returns on `return`. */
  execBody(stmts: Stmt[], ctx: Ctx): Returned | undefined {
    for (const s of stmts) {
      try {
        const r = this.execStmt(s, ctx);
        if (r) return r;
      } catch (e) {
        if (e instanceof FatalError) throw e;
        if (e instanceof RangeError) throw new FatalError(s.range, 'nesting too deep to elaborate');
        if (!(e instanceof CompileError)) throw e;
        if (e.message) this.report(e);
        this.poisonBindings(s, ctx);
        if (s.kind === 'Return') return { value: POISON, range: s.range };
      }
    }
    return undefined;
  }

  private poisonBindings(s: Stmt, ctx: Ctx) {
    const put = (scope: Scope, name: string) => {
      if (!scope.vars.has(name)) scope.define(name, { value: POISON, kind: 'let' });
    };
    if (s.kind === 'Let') for (const n of s.names) put(ctx.scope, n.name);
    if (s.kind === 'State' && ctx.level !== 'fn') put(ctx.inst.scope, s.name.name);
    if (s.kind === 'Assign' && ctx.level !== 'fn') put(ctx.inst.scope, s.target.name);
  }

  execStmt(s: Stmt, ctx: Ctx): Returned | undefined {
    this.currentStmt = s.range;
    this.tick();
    switch (s.kind) {
      case 'Let':
        this.execLet(s, ctx);
        return undefined;
      case 'Assign':
        if (ctx.level === 'fn') this.execRebind(s, ctx);
        else this.execSubmodule(s, ctx);
        return undefined;
      case 'ExprStmt':
        this.eval(s.expr, ctx.scope);
        return undefined;
      case 'Return':
        if (ctx.level !== 'fn') this.error(s.range, "'return' is only allowed inside a fn");
        return { value: s.value ? this.eval(s.value, ctx.scope) : NONE, range: s.value?.range ?? s.range };
      case 'If': {
        const c = this.eval(s.cond, ctx.scope);
        if (c.k === 'poison') return undefined;
        const body = expectBool(c, s.cond.range, 'the condition of if') ? s.then : s.else;
        return body ? this.execBody(body, { ...ctx, scope: new Scope(ctx.scope) }) : undefined;
      }
      case 'For':
        return this.execFor(s, ctx);
      case 'Update':
        this.execUpdate(s, ctx);
        return undefined;
      case 'State':
        if (ctx.level === 'fn') this.error(s.range, `'${s.state}' declarations belong at block level, not inside a fn`);
        this.declareState(s, ctx.inst, ctx.scope);
        return undefined;
      case 'Fn':
        this.error(s.name.range, ctx.level === 'fn' ? 'fns cannot be nested' : 'methods must be declared at the top of the block body, not inside if/for');
      // falls through (error throws)
      default:
        this.error(s.range, `'${STMT_WORD[s.kind]}' is only allowed at model level`);
    }
  }

  private execLet(s: Extract<Stmt, { kind: 'Let' }>, ctx: Ctx) {
    for (const n of s.names) {
      const prev = ctx.scope.vars.get(n.name);
      if (prev && prev.value.k !== 'poison')
        this.error(n.range, `'${n.name}' is already defined${prev.range ? ` at ${formatLoc(prev.range)}` : ''}`, {
          hint: ctx.level === 'fn' ? `rebind it with ${n.name} = ...` : undefined,
        });
    }
    let v = this.eval(s.value, ctx.scope);
    if (v.k === 'module' && s.value.kind === 'Call') {
      // Aliasing an existing instance is fine; instantiation was refused inside eval.
    }
    if (!s.tuple) {
      ctx.scope.define(s.names[0].name, { value: this.named(v, s.names[0].name, s.value.range), kind: 'let', range: s.names[0].range });
      return;
    }
    if (v.k === 'poison') {
      for (const n of s.names) ctx.scope.define(n.name, { value: POISON, kind: 'let', range: n.range });
      return;
    }
    if (v.k !== 'tuple' || v.items.length !== s.names.length) this.error(s.value.range, `cannot unpack ${kindName(v)} into ${s.names.length} names`);
    v = v as Extract<Value, { k: 'tuple' }>;
    s.names.forEach((n, i) =>
      ctx.scope.define(n.name, { value: this.named((v as Extract<Value, { k: 'tuple' }>).items[i], n.name, s.value.range), kind: 'let', range: n.range }),
    );
  }

  /** A tensor bound to a name is described by that name in later messages. */
  private named(v: Value, name: string, range: Range): Value {
    if (v.k !== 'tensor') return v;
    const node = this.b.node(v.id);
    if (!node.name && node.op !== 'input' && node.op !== 'param' && node.op !== 'buffer') node.name = name;
    return { ...v, origin: { range, what: name } };
  }

  private execRebind(s: Extract<Stmt, { kind: 'Assign' }>, ctx: Extract<Ctx, { level: 'fn' }>) {
    if (s.index) this.error(s.range, 'indexed assignment (name[i] = ...) declares a sub-module and belongs at block level');
    if (s.key) this.error(s.key.range, "'as KEY' gives a sub-module its state key; it belongs on NAME = Block(...) at block or model level, not in a fn");
    const b = ctx.scope.lookupInFn(s.target.name);
    if (!b) {
      const outer = ctx.scope.lookup(s.target.name);
      if (outer)
        this.error(s.target.range, `cannot assign to '${s.target.name}': it is not a variable of this fn (it is a ${BINDING_WORD[outer.kind] ?? outer.kind})`, {
          hint: `declare a new variable with let`,
        });
      this.error(s.target.range, `unknown variable '${s.target.name}'`, {
        hint: `declare it with let ${s.target.name} = ...`,
        ...didYouMean(s.target.name, ctx.scope.names()),
      });
    }
    if (b.kind === 'dim') this.error(s.target.range, `cannot assign to '${s.target.name}': it is a dimension bound by ${b.boundBy ?? 'the signature'}`);
    b.value = this.named(this.eval(s.value, ctx.scope), s.target.name, s.value.range);
  }

  private execSubmodule(s: Extract<Stmt, { kind: 'Assign' }>, ctx: Extract<Ctx, { level: 'block' | 'model' }>) {
    const inst = ctx.inst;
    const name = s.target.name;
    this.checkTopName(inst, name, s.target.range);
    const existing = inst.scope.vars.get(name);
    let index: number | undefined;
    let prefix = `${inst.prefix}${name}.`;
    if (s.index) {
      if (s.key) this.error(s.key.range, `'as' cannot be combined with an index: ${name}[i] already gives the state key ${name}.i`);
      const iv = this.eval(s.index, ctx.scope);
      if (iv.k === 'poison') return;
      index = expectInt(iv, s.index.range, 'a sub-module index');
      if (index < 0) this.error(s.index.range, `a sub-module index must be at least 0, got ${index}`);
      if (existing?.value.k === 'poison') return; // an earlier statement failed; its error is reported
      if (existing && existing.value.k !== 'modlist')
        this.error(s.target.range, `'${name}' is already defined${definedAt(existing)} and is not an indexed sub-module list`);
      if (existing?.value.k === 'modlist' && existing.value.items.has(index)) this.error(s.range, `${name}[${index}] is already defined`);
      if (!existing) this.claimKey(inst, name, `sub-module list '${name}'`, s.target.range, s.target.range);
      prefix = `${inst.prefix}${name}.${index}.`;
    } else {
      if (existing?.value.k === 'poison') return; // an earlier definition failed; its error is reported
      if (existing) this.error(s.target.range, `duplicate definition of '${name}'${definedAt(existing, true)}`);
      const key = s.key ? this.stateKey(s.key, ctx.scope) : name;
      if (key === undefined) return; // the key expression failed; its error is reported
      if (s.key) this.checkTopName(inst, key, s.key.range);
      this.claimKey(inst, key, `sub-module '${name}'`, s.target.range, s.key?.range ?? s.target.range);
      prefix = `${inst.prefix}${key}.`;
    }
    const v = this.eval(s.value, ctx.scope, { prefix, name });
    if (v.k === 'poison') return;
    if (v.k !== 'module')
      this.error(s.value.range, `a sub-module must be a block instance, got ${kindName(v)}`, { hint: `bind other values with let ${name} = ...` });
    if (v.inst.prefix !== prefix)
      this.error(s.value.range, `'${name}' would be a second name for an existing instance`, { hint: `use let ${name} = ... to refer to it` });
    if (index === undefined) {
      inst.scope.define(name, { value: v, kind: 'module', range: s.target.range });
      inst.children.push(v.inst);
      return;
    }
    let ml = existing?.value;
    if (!ml || ml.k !== 'modlist') {
      const items = new Map<number, Instance>();
      ml = { k: 'modlist', name, items };
      inst.scope.define(name, { value: ml, kind: 'module', range: s.target.range });
      inst.children.push({ list: name, items });
    }
    ml.items.set(index, v.inst);
  }

  private execFor(s: Extract<Stmt, { kind: 'For' }>, ctx: Ctx): Returned | undefined {
    let values: Value[];
    if (s.range_) {
      const a = this.eval(s.range_.start, ctx.scope);
      const b = this.eval(s.range_.end, ctx.scope);
      if (a.k === 'poison' || b.k === 'poison') return undefined;
      const lo = expectInt(a, s.range_.start.range, 'the start of a range');
      const hi = expectInt(b, s.range_.end.range, 'the end of a range');
      if (hi - lo > LIMITS.maxLoopIterations) this.error(s.range_.end.range, `the loop ${lo}..${hi} has more than ${LIMITS.maxLoopIterations} iterations`);
      values = [];
      for (let i = lo; i < hi; i++) values.push(int(i));
    } else {
      const it = this.eval(s.iterable!, ctx.scope);
      if (it.k === 'poison') return undefined;
      if (it.k !== 'list' && it.k !== 'tuple') this.error(s.iterable!.range, `for ... in needs a range a..b or a list, got ${kindName(it)}`);
      values = it.items;
    }
    for (const v of values) {
      this.totalIterations++;
      if (this.totalIterations > LIMITS.maxTotalIterations) throw new FatalError(s.range, `more than ${LIMITS.maxTotalIterations} loop iterations in total`);
      const scope = new Scope(ctx.scope);
      scope.define(s.variable.name, { value: v, kind: 'for', range: s.variable.range });
      const r = this.execBody(s.body, { ...ctx, scope });
      if (r) return r;
    }
    return undefined;
  }

  private execUpdate(s: Extract<Stmt, { kind: 'Update' }>, ctx: Ctx) {
    if (ctx.level !== 'fn') this.error(s.range, "'update' is only allowed inside a block's fn");
    const b = ctx.scope.lookup(s.name.name);
    if (!b) this.error(s.name.range, `unknown buffer '${s.name.name}'`, didYouMean(s.name.name, ctx.scope.names()));
    if (b.kind !== 'state' || !b.state) this.error(s.name.range, `'${s.name.name}' is not a buffer of this block, so it cannot be updated`);
    if (b.state.kind !== 'buffer')
      this.error(s.name.range, `'${s.name.name}' is a param; only buffers can be updated`, { hint: 'declare it with buffer instead of param' });
    if (!this.training) return; // updates exist only in train mode
    const v = this.eval(s.value, ctx.scope);
    if (v.k === 'poison') return;
    if (v.k !== 'tensor') this.error(s.value.range, `the new value of buffer '${s.name.name}' must be a tensor, got ${kindName(v)}`);
    const info = this.b.graph.state[b.state.full];
    if (v.dtype !== info.dtype || v.shape.join(',') !== info.shape.join(','))
      this.error(
        s.value.range,
        `the new value of buffer '${s.name.name}' is ${dtypeShape(v.dtype, v.shape)}, but the buffer is ${dtypeShape(info.dtype, info.shape)}`,
        { notes: [originNote(v)] },
      );
    this.b.update(b.state.full, v.id);
    b.value = { ...v, origin: { range: s.range, what: `${s.name.name} (updated)` } };
  }

  /**
   * The value of `as KEY`: an int >= 0 (an nn.Sequential index, `as 0`) or a name (`as "model"`),
   * i.e. one segment of a dotted state name.
   */
  private stateKey(e: Expr, scope: Scope): string | undefined {
    const v = this.eval(e, scope);
    if (v.k === 'poison') return undefined;
    if ((v.k === 'int' || (v.k === 'float' && Number.isInteger(v.v))) && v.v >= 0) return String(v.v);
    if (v.k === 'string' && /^(0|[1-9][0-9]*|[A-Za-z_][A-Za-z0-9_]*)$/.test(v.v)) return v.v;
    this.error(e.range, `a state key must be an int >= 0 (an nn.Sequential index) or a name, got ${describe(v)}`, {
      hint: v.k === 'string' ? 'a key is one segment of the state name: digits, or letters, digits and _ (no dots)' : undefined,
    });
  }

  /** Claims one state key of `inst` (state names are unique, so each key may be held once). */
  private claimKey(inst: Instance, key: string, what: string, at: Range, errorRange: Range) {
    const prev = inst.keys.get(key);
    if (prev) this.error(errorRange, `duplicate state key '${key}': ${prev.what} already uses it (first defined at ${formatLoc(prev.range)})`);
    inst.keys.set(key, { what, range: at });
  }

  /** grad_acc.* and optim.* are the training programs' state (docs/parameters.md). */
  private checkTopName(inst: Instance, name: string, range: Range) {
    if (inst.prefix === '' && (name === 'grad_acc' || name === 'optim'))
      this.error(range, `'${name}' is reserved at model level: the training programs name their state ${name}.*`);
  }

  declareState(s: Extract<Stmt, { kind: 'State' }>, inst: Instance, scope: Scope) {
    const name = s.name.name;
    this.checkTopName(inst, name, s.name.range);
    const prev = inst.scope.vars.get(name);
    if (prev && prev.value.k !== 'poison') this.error(s.name.range, `duplicate definition of '${name}'${definedAt(prev, true)}`);
    const { shape, dtype } = this.concreteShape(s.type, scope, `${s.state} '${name}'`);
    if (s.state === 'param' && dtype !== 'f32') this.error(s.type.range, `param '${name}' must be f32 (only buffers may be i32)`);
    if (!s.init) this.error(s.range, `${s.state} '${name}' needs an initialiser, e.g. = zeros()`);
    const iv = this.eval(s.init, scope);
    if (iv.k === 'poison') return;
    if (iv.k !== 'init')
      this.error(s.init.range, `the initialiser of '${name}' must be an initialiser such as zeros() or normal(0, 0.02), got ${kindName(iv)}`);
    if ((iv.spec.kind === 'kaiming_normal' || iv.spec.kind === 'kaiming_uniform') && shape.length < 2)
      this.error(s.init.range, `${iv.spec.kind} needs a weight of rank 2 or more (it uses the fans), but '${name}' is ${dtypeShape(dtype, shape)}`);
    const full = inst.prefix + name;
    this.claimKey(inst, name, `${s.state} '${name}'`, s.name.range, s.name.range);
    if (this.b.graph.state[full]) this.error(s.name.range, `the state name '${full}' is already taken`);
    // `freeze` is applied after the model has run (model.ts), when its ranges can be evaluated.
    const trainable = s.state === 'param';
    const id = this.b.state(full, shape, iv.spec, trainable, dtype, this.loc(s.name.range));
    this.stateKinds.set(full, s.state);
    const slot = { local: name, full, kind: s.state, range: s.name.range };
    inst.state.push(slot);
    const node = this.b.node(id);
    inst.scope.define(name, {
      value: { k: 'tensor', id, shape: node.shape, dtype: node.dtype, origin: { range: s.name.range, what: full } },
      kind: 'state',
      range: s.name.range,
      state: slot,
    });
  }
}

interface DeferredDim {
  expr: Expr;
  actual: number;
  axis: number;
  check: (detail: string) => never;
}

const STMT_WORD: Partial<Record<Stmt['kind'], string>> = {
  Config: 'config',
  Input: 'input',
  Loss: 'loss',
  Output: 'output',
  Freeze: 'freeze',
  Drop: 'drop',
  Train: 'train',
};

const BINDING_WORD: Partial<Record<string, string>> = {
  arg: 'block parameter',
  state: 'param or buffer',
  module: 'sub-module',
  config: 'config',
  input: 'model input',
  method: 'method',
  global: 'top-level definition',
  builtin: 'built-in',
  let: 'block-level let',
};

/** " at file:line:col" (or " (first defined at ...)") for a binding that has a location. */
function definedAt(b: Binding, first = false): string {
  if (!b.range) return '';
  return first ? ` (first defined at ${formatLoc(b.range)})` : ` at ${formatLoc(b.range)}`;
}

/** True when some whole-segment prefix of `name` is in `frozen`. */
export function isFrozen(name: string, frozen: ReadonlySet<string>): boolean {
  if (frozen.size === 0) return false;
  let i = name.indexOf('.');
  while (i >= 0) {
    if (frozen.has(name.slice(0, i))) return true;
    i = name.indexOf('.', i + 1);
  }
  return frozen.has(name);
}
