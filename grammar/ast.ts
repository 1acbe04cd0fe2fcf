// The typed .lovt syntax tree. Every node carries its source range so that any
// later stage (linking, elaboration, shape inference) can point at the exact
// text it is complaining about. docs/language.md describes the meaning.

/** A 1-based source range; `endCol` is one past the last character. */
export interface Range {
  file: string;
  line: number;
  col: number;
  endLine: number;
  endCol: number;
}

export interface Name {
  name: string;
  range: Range;
}

// ---------------------------------------------------------------- expressions

export type BinaryOp = '+' | '-' | '*' | '/' | '%' | '**' | '==' | '!=' | '<' | '<=' | '>' | '>=' | 'and' | 'or';

export type Expr =
  | { kind: 'Num'; value: number; isInt: boolean; range: Range }
  | { kind: 'Str'; value: string; range: Range }
  | { kind: 'Bool'; value: boolean; range: Range }
  | { kind: 'Ident'; name: string; range: Range }
  | { kind: 'List'; items: Expr[]; range: Range }
  | { kind: 'Tuple'; items: Expr[]; range: Range }
  | { kind: 'Unary'; op: '-' | 'not'; operand: Expr; range: Range }
  | { kind: 'Binary'; op: BinaryOp; left: Expr; right: Expr; opRange: Range; range: Range }
  | { kind: 'Cond'; cond: Expr; then: Expr; else: Expr; range: Range }
  | { kind: 'Call'; callee: Expr; args: Arg[]; range: Range }
  | { kind: 'Member'; object: Expr; name: Name; range: Range }
  | { kind: 'Index'; object: Expr; index: Expr; range: Range };

export interface Arg {
  /** Present for a named argument `name: value`. */
  name?: Name;
  value: Expr;
  range: Range;
}

// ---------------------------------------------------------------------- types

/** One dimension of a tensor type: an integer expression or `...`. */
export type Dim = { kind: 'Ellipsis'; range: Range } | { kind: 'DimExpr'; expr: Expr; range: Range };

export type TypeExpr =
  | { kind: 'TensorType'; dtype: 'f32' | 'i32'; dims: Dim[]; range: Range }
  | { kind: 'ValueType'; name: 'int' | 'float' | 'bool' | 'string'; list: boolean; range: Range }
  | { kind: 'EnumType'; members: Name[]; range: Range }
  | { kind: 'TupleType'; items: TypeExpr[]; range: Range }
  /** A type name the parser does not know (reported with "did you mean" when elaborated). */
  | { kind: 'UnknownType'; name: string; range: Range };

export interface ParamDecl {
  name: Name;
  type?: TypeExpr;
  default?: Expr;
  range: Range;
}

// ----------------------------------------------------------------- statements

export interface FnDecl {
  kind: 'Fn';
  name: Name;
  params: ParamDecl[];
  returnType?: TypeExpr;
  body: Stmt[];
  range: Range;
}

/**
 * A segment of a freeze path: `layer`, `layer[3]` or `layer[0..6]`. The index and the range
 * bounds are compile-time int expressions (`layer[0..frozen_layers]`), evaluated in the model's
 * scope where the freeze item stands.
 */
export interface FreezeSegment {
  name: Name;
  index?: { start: Expr; end?: Expr; range: Range };
}

export interface FreezePath {
  segments: FreezeSegment[];
  range: Range;
}

export interface TrainEntry {
  key: Name[]; // dotted: optimizer.lr
  value: Expr;
  range: Range;
}

export type Stmt =
  | { kind: 'Let'; names: Name[]; tuple: boolean; value: Expr; range: Range }
  /** `target = value`, `target[index] = value`; `key` is the `as KEY` of a sub-module declaration. */
  | { kind: 'Assign'; target: Name; index?: Expr; value: Expr; key?: Expr; range: Range }
  | { kind: 'ExprStmt'; expr: Expr; range: Range }
  | { kind: 'Return'; value?: Expr; range: Range }
  | { kind: 'If'; cond: Expr; then: Stmt[]; else?: Stmt[]; range: Range }
  | { kind: 'For'; variable: Name; range_?: { start: Expr; end: Expr }; iterable?: Expr; body: Stmt[]; range: Range }
  | { kind: 'Update'; name: Name; value: Expr; range: Range }
  | { kind: 'State'; state: 'param' | 'buffer'; name: Name; type: TypeExpr; init?: Expr; range: Range }
  | FnDecl
  // model-level items
  /** `where`: a compile-time bool over the config (and earlier names) that every value must satisfy. */
  | { kind: 'Config'; name: Name; type?: TypeExpr; value?: Expr; where?: Expr; range: Range }
  | { kind: 'Input'; name: Name; type: TypeExpr; range: Range }
  | { kind: 'Loss'; name: Name; args?: Arg[]; value?: Expr; range: Range }
  | { kind: 'Output'; name: Name; value: Expr; range: Range }
  | { kind: 'Freeze'; paths: FreezePath[]; range: Range }
  | { kind: 'Drop'; what: 'loss' | 'output' | 'freeze'; whatRange: Range; names: Name[]; range: Range }
  | { kind: 'Train'; entries: TrainEntry[]; range: Range };

export type StmtKind = Stmt['kind'];

// ---------------------------------------------------------------- top level

export interface ImportDecl {
  kind: 'Import';
  path: string;
  range: Range;
}

export interface BlockDecl {
  kind: 'Block';
  name: Name;
  params: ParamDecl[];
  body: Stmt[];
  range: Range;
}

export interface ModelDecl {
  kind: 'Model';
  name: Name;
  parent?: Name;
  body: Stmt[];
  range: Range;
}

export type TopDecl = ImportDecl | BlockDecl | FnDecl | ModelDecl;

export interface SourceFile {
  path: string;
  text: string;
  decls: TopDecl[];
}

/** A range spanning from the start of `a` to the end of `b`. */
export function span(a: Range, b: Range): Range {
  return { file: a.file, line: a.line, col: a.col, endLine: b.endLine, endCol: b.endCol };
}
