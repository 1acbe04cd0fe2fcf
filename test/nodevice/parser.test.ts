// The .lovt lexer and parser: every construct of docs/language.md parses to the
// expected AST with source ranges; syntax errors are located; recovery works
// per top-level declaration.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Expr, Stmt, TopDecl } from '../../grammar/ast.ts';
import { tokenize } from '../../grammar/lexer.ts';
import { checkGrammar, parseExpression, parseLovt } from '../../grammar/parser.ts';

function parseOk(text: string): TopDecl[] {
  const r = parseLovt(text, 't.lovt');
  assert.equal(r.problems, [], `unexpected problems: ${JSON.stringify(r.problems)}`);
  return r.file.decls;
}

function expr(text: string): Expr {
  const r = parseExpression(text, 'e');
  assert.ok(r.expr, `did not parse: ${text}: ${r.problem?.message}`);
  return r.expr!;
}

/** A compact s-expression of an expression, for precedence checks. */
function sexp(e: Expr): string {
  switch (e.kind) {
    case 'Num':
      return String(e.value);
    case 'Str':
      return JSON.stringify(e.value);
    case 'Bool':
      return String(e.value);
    case 'Ident':
      return e.name;
    case 'List':
      return `[${e.items.map(sexp).join(' ')}]`;
    case 'Tuple':
      return `(tuple ${e.items.map(sexp).join(' ')})`;
    case 'Unary':
      return `(${e.op} ${sexp(e.operand)})`;
    case 'Binary':
      return `(${e.op} ${sexp(e.left)} ${sexp(e.right)})`;
    case 'Cond':
      return `(if ${sexp(e.cond)} ${sexp(e.then)} ${sexp(e.else)})`;
    case 'Call':
      return `(call ${sexp(e.callee)}${e.args.map((a) => ' ' + (a.name ? `${a.name.name}:` : '') + sexp(a.value)).join('')})`;
    case 'Member':
      return `(. ${sexp(e.object)} ${e.name.name})`;
    case 'Index':
      return `(idx ${sexp(e.object)} ${sexp(e.index)})`;
  }
}

test("the grammar passes Chevrotain's validations (the shared parser skips them for speed)", () => {
  checkGrammar();
});

test('lexer: numbers, ranges, strings, comments, statement words stay identifiers', () => {
  const r = tokenize('let x = 0..3 1.5 1e-4 2.5E3 "a\\"b" output /* c\n d */ ... // end');
  assert.equal(r.errors, []);
  assert.equal(
    r.tokens.map((t) => `${t.tokenType.name}:${t.image}`),
    [
      'Let:let',
      'Identifier:x',
      'Assign:=',
      'IntLit:0',
      'DotDot:..',
      'IntLit:3',
      'FloatLit:1.5',
      'FloatLit:1e-4',
      'FloatLit:2.5E3',
      'StringLit:"a\\"b"',
      'Identifier:output',
      'Ellipsis:...',
    ],
  );
  const kw = tokenize('letter lets let');
  assert.equal(
    kw.tokens.map((t) => t.tokenType.name),
    ['Identifier', 'Identifier', 'Let'],
  );
});

test('lexer: bad characters, unterminated strings and comments are located errors', () => {
  const r = tokenize('a @ b\n"open\n/* never closed');
  assert.equal(
    r.errors.map((e) => [e.message, e.line, e.col]),
    [
      ['unexpected character "@"', 1, 3],
      ['unterminated string literal', 2, 1],
      ['unterminated block comment', 3, 1],
    ],
  );
});

test('expressions: precedence and associativity', () => {
  assert.is(sexp(expr('1 + 2 * 3')), '(+ 1 (* 2 3))');
  assert.is(sexp(expr('a - b - c')), '(- (- a b) c)');
  assert.is(sexp(expr('-x ** 2')), '(- (** x 2))');
  assert.is(sexp(expr('2 ** 3 ** 2')), '(** 2 (** 3 2))');
  assert.is(sexp(expr('-1')), '-1');
  assert.is(sexp(expr('a < b and not c or d == e')), '(or (and (< a b) (not c)) (== d e))');
  assert.is(sexp(expr('if a then b else if c then d else e')), '(if a b (if c d e))');
  assert.is(sexp(expr('x.shape[1] * 2')), '(* (idx (. x shape) 1) 2)');
  assert.is(sexp(expr('layer[i](h)')), '(call (idx layer i) h)');
  assert.is(sexp(expr('f(x, axis: 1, keepdims: true,)')), '(call f x axis:1 keepdims:true)');
  assert.is(sexp(expr('[1, 2, 3,]')), '[1 2 3]');
  assert.is(sexp(expr('(a, b)')), '(tuple a b)');
  assert.is(sexp(expr('(a)')), 'a');
  assert.is(sexp(expr('x % 2 / 3')), '(/ (% x 2) 3)');
  assert.is(sexp(expr('"s" + "t"')), '(+ "s" "t")');
});

test('comparisons do not chain', () => {
  const r = parseExpression('a < b < c', 'e');
  assert.ok(r.problem);
});

test('ranges point at the source text', () => {
  const e = expr('foo(bar, 12)');
  assert.equal([e.range.line, e.range.col, e.range.endCol], [1, 1, 13]);
  if (e.kind !== 'Call') throw new Error('call expected');
  assert.equal([e.args[1].value.range.col, e.args[1].value.range.endCol], [10, 12]);
});

test('a block with params, state, sub-modules, loops, conditionals and methods', () => {
  const [b] = parseOk(`
block Net(width: int, depth: int = 2, act: enum(relu, gelu) = relu, sizes: int[] = [1, 2]) {
  param w: f32[width, 2 * width] = normal(0, 0.02)
  buffer count: i32[] = zeros()
  stem = Linear(width, width)
  output = Linear(width, width)       // 'output' is a sub-module name here
  for i in 0..depth {
    let k = i + 1
    layer[i] = Linear(width, width)
  }
  if act == gelu { extra = Linear(width, width) } else if depth > 3 { } else { }
  fn forward(x: f32[..., width], y: f32[] = 0) -> f32[..., width] { return x }
}`);
  assert.is(b.kind, 'Block');
  if (b.kind !== 'Block') return;
  assert.equal(
    b.params.map((p) => p.name.name),
    ['width', 'depth', 'act', 'sizes'],
  );
  assert.equal(b.params[2].type?.kind, 'EnumType');
  assert.equal(b.params[3].type, { kind: 'ValueType', name: 'int', list: true, range: b.params[3].type!.range });
  assert.equal(
    b.body.map((s) => s.kind),
    ['State', 'State', 'Assign', 'Assign', 'For', 'If', 'Fn'],
  );
  const out = b.body[3] as Extract<Stmt, { kind: 'Assign' }>;
  assert.is(out.target.name, 'output');
  const loop = b.body[4] as Extract<Stmt, { kind: 'For' }>;
  assert.ok(loop.range_);
  assert.equal(
    loop.body.map((s) => s.kind),
    ['Let', 'Assign'],
  );
  const indexed = loop.body[1] as Extract<Stmt, { kind: 'Assign' }>;
  assert.ok(indexed.index);
  const fn = b.body[6] as Extract<Stmt, { kind: 'Fn' }>;
  assert.is(fn.params[0].type?.kind, 'TensorType');
  const t = fn.params[0].type as Extract<Stmt, { kind: 'State' }>['type'] & { kind: 'TensorType' };
  assert.equal(
    t.dims.map((d) => d.kind),
    ['Ellipsis', 'DimExpr'],
  );
  assert.is(fn.returnType?.kind, 'TensorType');
});

test('fn bodies: let tuples, rebinding, update, return forms', () => {
  const [f] = parseOk(`
fn f(x: f32[B, D]) -> (f32[B, D], f32[B]) {
  let (a, b) = g(x)
  a = a + 1
  update running = a
  if training { return (a, b) }
  return
}`);
  if (f.kind !== 'Fn') throw new Error('fn expected');
  assert.equal(
    f.body.map((s) => s.kind),
    ['Let', 'Assign', 'Update', 'If', 'Return'],
  );
  assert.ok((f.body[0] as Extract<Stmt, { kind: 'Let' }>).tuple);
  assert.is(f.returnType?.kind, 'TupleType');
  assert.is((f.body[4] as Extract<Stmt, { kind: 'Return' }>).value, undefined);
});

test('models: config, input, modules, losses, outputs, freeze, drop, train, extends', () => {
  const decls = parseOk(`
import "std/nn.lovt"
model A {
  config batch: int = 32
  config target: enum(smooth, uniform) = smooth
  input image: f32[batch, 3, 224, 224]
  enc = Encoder()
  let h = enc(image)
  loss l1(weight: 0.75) = mean(h)
  loss l2 = mean(h)
  output heat = h
  freeze enc.embeddings, enc.encoder.layer[0..6], enc.pooler[3]
  train {
    optimizer = adamw(lr: 1e-4, weight_decay: 1e-6)
    schedule = cosine(period: epoch, eta_min: 0)
    optimizer.lr = 3e-4 accumulate = 16
  }
}
model B extends A {
  config target = uniform
  loss l1(weight: 0.5)
  drop loss l2
  drop output heat
  drop freeze
}`);
  assert.equal(
    decls.map((d) => d.kind),
    ['Import', 'Model', 'Model'],
  );
  const a = decls[1];
  if (a.kind !== 'Model') return;
  assert.equal(
    a.body.map((s) => s.kind),
    ['Config', 'Config', 'Input', 'Assign', 'Let', 'Loss', 'Loss', 'Output', 'Freeze', 'Train'],
  );
  const fr = a.body[8] as Extract<Stmt, { kind: 'Freeze' }>;
  assert.equal(
    fr.paths.map((p) =>
      p.segments.map((s) => s.name.name + (s.index ? `[${sexp(s.index.start)}${s.index.end !== undefined ? '..' + sexp(s.index.end) : ''}]` : '')).join('.'),
    ),
    ['enc.embeddings', 'enc.encoder.layer[0..6]', 'enc.pooler[3]'],
  );
  const tr = a.body[9] as Extract<Stmt, { kind: 'Train' }>;
  assert.equal(
    tr.entries.map((e) => e.key.map((k) => k.name).join('.')),
    ['optimizer', 'schedule', 'optimizer.lr', 'accumulate'],
  );
  const b = decls[2];
  if (b.kind !== 'Model') return;
  assert.is(b.parent?.name, 'A');
  assert.equal(
    b.body.map((s) => s.kind),
    ['Config', 'Loss', 'Drop', 'Drop', 'Drop'],
  );
  const weightOnly = b.body[1] as Extract<Stmt, { kind: 'Loss' }>;
  assert.is(weightOnly.value, undefined);
  assert.equal(
    weightOnly.args?.map((x) => x.name?.name),
    ['weight'],
  );
});

test('sub-module state keys: NAME = Block(...) as KEY, the key a compile-time expression', () => {
  const [b] = parseOk(`
block Head(bn: bool) {
  first = Linear(2, 3) as 0
  if bn { norm = BatchNorm(3) as 1 }
  last = Linear(3, 4) as if bn then 3 else 2
  inner = Wrapped() as "model"
  layer[0] = Linear(4, 4)
}`);
  if (b.kind !== 'Block') throw new Error('block expected');
  const assigns = [b.body[0], (b.body[1] as Extract<Stmt, { kind: 'If' }>).then[0], b.body[2], b.body[3], b.body[4]] as Extract<Stmt, { kind: 'Assign' }>[];
  assert.equal(
    assigns.map((a) => [a.target.name, a.key ? sexp(a.key) : null]),
    [
      ['first', '0'],
      ['norm', '1'],
      ['last', '(if bn 3 2)'],
      ['inner', '"model"'],
      ['layer', null],
    ],
  );
  // the statement's range ends at the key
  assert.equal([assigns[0].range.col, assigns[0].range.endCol], [3, 28]);
  const r = parseLovt('fn f() { let x = Linear(2, 3) as 0 }', 'e.lovt');
  assert.equal(
    r.problems.map((p) => [p.message, p.hint]),
    [["expected '}' but found 'as'", "'as KEY' follows a sub-module declaration NAME = Block(...) at block or model level"]],
  );
  assert.is(parseLovt('fn f() { let as = 1 }', 'e.lovt').problems[0].hint, "'as' is a reserved word and cannot be used as a name");
  assert.equal(
    tokenize('as assert asx').tokens.map((t) => t.tokenType.name),
    ['As', 'Identifier', 'Identifier'],
  );
});

test('freeze indices and ranges are compile-time expressions', () => {
  const [m] = parseOk(`model M {
  freeze enc.layer[0..frozen_layers], enc.layer[n - 1].bias, enc.blocks[2 * k..2 * k + 2]
}`);
  if (m.kind !== 'Model') throw new Error('model expected');
  const fr = m.body[0] as Extract<Stmt, { kind: 'Freeze' }>;
  assert.equal(
    fr.paths.map((p) =>
      p.segments.map((s) => s.name.name + (s.index ? `[${sexp(s.index.start)}${s.index.end ? '..' + sexp(s.index.end) : ''}]` : '')).join('.'),
    ),
    ['enc.layer[0..frozen_layers]', 'enc.layer[(- n 1)].bias', 'enc.blocks[(* 2 k)..(+ (* 2 k) 2)]'],
  );
  assert.equal([fr.paths[0].range.col, fr.paths[0].range.endCol], [10, 37]);
});

test('syntax errors are located, and other declarations still parse', () => {
  const r = parseLovt(
    `fn good() { return 1 }
fn bad(x: int { return x }
block AlsoGood() { }
model M { let = 3 }
`,
    'e.lovt',
  );
  assert.equal(
    r.file.decls.map((d) => (d.kind === 'Import' ? 'import' : d.name.name)),
    ['good', 'AlsoGood'],
  );
  assert.equal(
    r.problems.map((p) => [p.range.line, p.range.col, p.message]),
    [
      [2, 15, "expected ')' but found '{'"],
      [4, 15, "expected a name or '(' but found '='"],
    ],
  );
});

test('reserved words cannot be names; hints for common slips', () => {
  const r = parseLovt('fn f() { let in = 1 }', 'e.lovt');
  assert.is(r.problems[0].hint, "'in' is a reserved word and cannot be used as a name");
  const r2 = parseLovt('fn f() { if a { } elif b { } }', 'e.lovt');
  assert.is(r2.problems[0].hint, "write 'else if'");
});

test('deep nesting is refused instead of overflowing the stack', () => {
  const r = parseLovt(`fn f() { return ${'('.repeat(5000)}1${')'.repeat(5000)} }`, 'deep.lovt');
  assert.is(r.problems.length, 1);
  assert.match(r.problems[0].message, /nesting deeper than 200 levels/);
  const r2 = parseLovt(`fn f() { return ${'-'.repeat(100000)}1 }`, 'deep.lovt');
  assert.match(r2.problems[0].message, /nesting deeper than 200 levels/);
});

test('left side of = must be a name or name[index]', () => {
  const r = parseLovt('fn f() { f(x) = 3 }', 'e.lovt');
  assert.equal(
    r.problems.map((p) => p.message),
    ['the left side of = must be a name or name[index]'],
  );
});

test.run();
