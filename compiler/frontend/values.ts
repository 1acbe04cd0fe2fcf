// Compile-time values of the elaborator: numbers, bools, strings, enum members,
// lists, tuples, initialisers, block instances, callables — and tensors, which
// are references to graph nodes with their shape and where they were made.
// Also the conversions used wherever a specific kind of value is required.

import type { BlockDecl, FnDecl, ModelDecl, Range } from '../../grammar/ast.ts';
import type { DType, InitSpec, Shape } from '../ir.ts';
import { CompileError, formatLoc } from './diagnostics.ts';
import type { Scope } from './scope.ts';
import { quote } from '../echo.ts';

/** Where a tensor value was made, for shape-mismatch messages. */
export interface Origin {
  range: Range;
  /** A short description: the variable name or the kind of expression. */
  what: string;
}

export type Value =
  | { k: 'int'; v: number }
  | { k: 'float'; v: number }
  | { k: 'bool'; v: boolean }
  | { k: 'string'; v: string }
  | { k: 'enum'; v: string; members: readonly string[] }
  /** `n`: the total number of values inside, nested lists counted in full (bounds every traversal). */
  | { k: 'list'; items: Value[]; n?: number }
  | { k: 'tuple'; items: Value[]; n?: number }
  | { k: 'tensor'; id: number; shape: Shape; dtype: DType; origin: Origin }
  | { k: 'init'; spec: InitSpec }
  | { k: 'module'; inst: Instance }
  | { k: 'modlist'; name: string; items: Map<number, Instance> }
  | { k: 'fn'; decl: FnDecl; owner?: Instance }
  | { k: 'block'; decl: BlockDecl }
  | { k: 'builtin'; name: string }
  | { k: 'record'; kind: string; fields: Record<string, Value> }
  | { k: 'none' }
  /** The result of a failed statement: operations on it yield poison silently (no cascades). */
  | { k: 'poison' };

export type TensorValue = Extract<Value, { k: 'tensor' }>;

/** A state tensor declared by a block instance. */
export interface StateSlot {
  local: string;
  full: string;
  kind: 'param' | 'buffer';
  range: Range;
}

/** What holds a state key of an instance (a param, buffer, sub-module or sub-module list), for clash messages. */
export interface KeyHolder {
  what: string;
  range: Range;
}

/** One instantiated block (or the model itself, with an empty prefix). */
export interface Instance {
  /** Block or model name, for messages: Linear, LoVT. */
  typeName: string;
  /** Dotted state prefix including the trailing dot ('' for the model). */
  prefix: string;
  decl: BlockDecl | ModelDecl;
  scope: Scope;
  methods: Map<string, FnDecl>;
  /** Own state in declaration order. */
  state: StateSlot[];
  /** Sub-modules (and indexed sub-module lists) in declaration order, for state_dict order. */
  children: (Instance | { list: string; items: Map<number, Instance> })[];
  /**
   * The state keys in use: the name segments directly under `prefix` (own params and buffers,
   * sub-modules by their `as` key or name, sub-module lists by name). Each may be held once.
   */
  keys: Map<string, KeyHolder>;
}

export const NONE: Value = { k: 'none' };
export const POISON: Value = { k: 'poison' };

export const int = (v: number): Value => ({ k: 'int', v });
export const float = (v: number): Value => ({ k: 'float', v });
export const bool = (v: boolean): Value => ({ k: 'bool', v });
export const str = (v: string): Value => ({ k: 'string', v });
/** The total number of values inside a value (1 for a scalar). */
export function sizeOf(v: Value): number {
  return v.k === 'list' || v.k === 'tuple' ? (v.n ?? 1 + v.items.reduce((s, x) => s + sizeOf(x), 0)) : 1;
}

export const list = (items: Value[]): Value => ({ k: 'list', items, n: 1 + items.reduce((s, x) => s + sizeOf(x), 0) });
export const tuple = (items: Value[]): Value => ({ k: 'tuple', items, n: 1 + items.reduce((s, x) => s + sizeOf(x), 0) });

export function isNumber(v: Value): v is Extract<Value, { k: 'int' | 'float' }> {
  return v.k === 'int' || v.k === 'float';
}

export function dtypeShape(dtype: DType, shape: Shape): string {
  return `${dtype}[${shape.join(', ')}]`;
}

/** A short description of a value for messages: "f32[8, 512]", "int 3", "block instance Linear". */
export function describe(v: Value): string {
  switch (v.k) {
    case 'int':
      return `int ${v.v}`;
    case 'float':
      return `float ${v.v}`;
    case 'bool':
      return `bool ${v.v}`;
    case 'string':
      return `string ${quote(v.v)}`;
    case 'enum':
      return `enum member ${v.v}`;
    case 'list':
      return v.items.length <= 8 ? `list [${v.items.map(shortValue).join(', ')}]` : `list of ${v.items.length} items`;
    case 'tuple':
      return `tuple of ${v.items.length}`;
    case 'tensor':
      return dtypeShape(v.dtype, v.shape);
    case 'init':
      return `initialiser ${v.spec.kind}()`;
    case 'module':
      return `block instance ${v.inst.typeName}`;
    case 'modlist':
      return `indexed sub-modules ${v.name}[...]`;
    case 'fn':
      return `fn ${v.decl.name.name}`;
    case 'block':
      return `block ${v.decl.name.name}`;
    case 'builtin':
      return `built-in ${v.name}`;
    case 'record':
      return `${v.kind}(...)`;
    case 'none':
      return 'none';
    case 'poison':
      return 'an erroneous value';
  }
}

function shortValue(v: Value): string {
  if (v.k === 'int' || v.k === 'float') return String(v.v);
  if (v.k === 'bool') return String(v.v);
  if (v.k === 'string') return quote(v.v);
  if (v.k === 'enum') return v.v;
  return describe(v);
}

/** The kind of a value as a type word, for "expected int, got ..." messages. */
export function kindName(v: Value): string {
  switch (v.k) {
    case 'tensor':
      return `tensor ${describe(v)}`;
    default:
      return describe(v);
  }
}

export function originNote(t: TensorValue): string {
  return `${dtypeShape(t.dtype, t.shape)} (${t.origin.what}) comes from ${formatLoc(t.origin.range)}`;
}

// ------------------------------------------------------------- conversions

export function expectInt(v: Value, range: Range, what: string): number {
  if (v.k === 'int') return v.v;
  if (v.k === 'float' && Number.isInteger(v.v)) return v.v;
  throw new CompileError(range, `${what} must be an int, got ${kindName(v)}`);
}

export function expectFloat(v: Value, range: Range, what: string): number {
  if (v.k === 'int' || v.k === 'float') return v.v;
  throw new CompileError(range, `${what} must be a number, got ${kindName(v)}`);
}

export function expectBool(v: Value, range: Range, what: string): boolean {
  if (v.k === 'bool') return v.v;
  if (v.k === 'tensor')
    throw new CompileError(range, `${what} must be a compile-time bool, got tensor ${describe(v)}`, {
      hint: 'use where(mask, a, b) to select between tensors',
    });
  throw new CompileError(range, `${what} must be a bool, got ${kindName(v)}`);
}

export function expectString(v: Value, range: Range, what: string): string {
  if (v.k === 'string' || v.k === 'enum') return v.v;
  throw new CompileError(range, `${what} must be a string, got ${kindName(v)}`);
}

/** An int list; a single int is accepted as a one-element list. */
export function expectIntList(v: Value, range: Range, what: string): number[] {
  if (v.k === 'int' || v.k === 'float') return [expectInt(v, range, what)];
  if (v.k === 'list' || v.k === 'tuple') return v.items.map((x, i) => expectInt(x, range, `${what}[${i}]`));
  throw new CompileError(range, `${what} must be an int or a list of ints, got ${kindName(v)}`);
}

export function expectFloatList(v: Value, range: Range, what: string): number[] {
  if (v.k === 'int' || v.k === 'float') return [v.v];
  if (v.k === 'list' || v.k === 'tuple') return v.items.map((x, i) => expectFloat(x, range, `${what}[${i}]`));
  throw new CompileError(range, `${what} must be a number or a list of numbers, got ${kindName(v)}`);
}

export function expectTensor(v: Value, range: Range, what: string): TensorValue {
  if (v.k === 'tensor') return v;
  throw new CompileError(range, `${what} must be a tensor, got ${kindName(v)}`);
}

export function expectEnum(v: Value, members: readonly string[], range: Range, what: string): string {
  if ((v.k === 'enum' || v.k === 'string') && members.includes(v.v)) return v.v;
  const got = v.k === 'enum' || v.k === 'string' ? `'${v.v}'` : kindName(v);
  throw new CompileError(range, `${what} must be one of ${members.join(', ')}; got ${got}`);
}

/** Structural equality of compile-time values (== and !=). */
export function valuesEqual(a: Value, b: Value): boolean {
  if (isNumber(a) && isNumber(b)) return a.v === b.v;
  if ((a.k === 'enum' || a.k === 'string') && (b.k === 'enum' || b.k === 'string')) return a.v === b.v;
  if (a.k === 'bool' && b.k === 'bool') return a.v === b.v;
  if ((a.k === 'list' || a.k === 'tuple') && (b.k === 'list' || b.k === 'tuple'))
    return a.items.length === b.items.length && a.items.every((x, i) => valuesEqual(x, b.items[i]));
  if (a.k === 'none' && b.k === 'none') return true;
  if (a.k === 'module' && b.k === 'module') return a.inst === b.inst;
  return false;
}

/** A plain JSON view of a compile-time value (ModelInfo configs). */
export function toPlain(v: Value): unknown {
  switch (v.k) {
    case 'int':
    case 'float':
    case 'bool':
    case 'string':
    case 'enum':
      return v.v;
    case 'list':
    case 'tuple':
      return v.items.map(toPlain);
    case 'none':
      return null;
    default:
      return describe(v);
  }
}
