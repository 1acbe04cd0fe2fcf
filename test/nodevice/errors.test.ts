// Malformed .lovt programs, each with the exact located messages the front
// end must report (file:line:col: message), and its hint, notes and import
// chain where they matter: syntax errors, unknown names, shape and type
// mismatches, duplicates, cyclic and escaping imports, bad overrides, limits.
// Files other than the main one live in an in-memory host under /virtual.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type CompileOptions, compileModel, renderDiagnostic } from '../../compiler/frontend/index.ts';
import { type SourceHost, nodeHost } from '../../compiler/frontend/resolve.ts';

interface Case {
  name: string;
  /** Main file path (default test/nodevice/errors-virtual.lovt, which does not exist on disk). */
  path?: string;
  main: string;
  files?: Record<string, string>;
  opts?: CompileOptions;
  /** Every diagnostic, in order: "file:line:col: message" (just the message when it has no location). */
  expect: string[];
  hint?: string;
  notes?: string[];
  chain?: string[];
}

function compileCase(c: Case) {
  const mainPath = c.path ?? 'test/nodevice/errors-virtual.lovt';
  const files: Record<string, string> = { ...(c.files ?? {}), [path.resolve(mainPath)]: c.main };
  const host: SourceHost = {
    read: (p) => files[p] ?? nodeHost.read(p),
    realpath: (p) => (p in files ? p : nodeHost.realpath(p)),
    size: (p) => (p in files ? files[p].length : nodeHost.size(p)),
  };
  return compileModel({ path: mainPath }, { host, ...(c.opts ?? {}) });
}

const CASES: Case[] = [
  {
    name: 'conv_transpose2d: output_padding not below stride or dilation',
    main: 'model M {\n  input x: f32[1, 2, 3, 3]\n  input w: f32[2, 4, 2, 2]\n  output y = conv_transpose2d(x, w, stride: 2, output_padding: 2)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:4:64: output_padding 2 must be smaller than stride 2 or dilation 1 (as in PyTorch)'],
  },
  {
    name: 'conv_transpose2d: weight for other input channels, groups not dividing them',
    main: 'model M {\n  input x: f32[1, 3, 3, 3]\n  input w: f32[2, 4, 2, 2]\n  input w3: f32[3, 4, 2, 2]\n  output y = conv_transpose2d(x, w)\n  output z = conv_transpose2d(x, w3, groups: 2)\n}\n',
    expect: [
      'test/nodevice/errors-virtual.lovt:5:34: weight [2, 4, 2, 2] is for 2 input channels (dim 0 of [C_in, C_out/groups, kH, kW]), x [1, 3, 3, 3] has 3',
      'test/nodevice/errors-virtual.lovt:6:46: 3 input channels are not divisible by groups 2',
    ],
  },
  {
    name: 'unclosed parameter list',
    main: 'fn f(x: int { return x }\n',
    expect: ["test/nodevice/errors-virtual.lovt:1:13: expected ')' but found '{'"],
  },
  {
    name: 'let without a name',
    main: 'model M {\n  let = 3\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:7: expected a name or '(' but found '='"],
  },
  {
    name: 'stray character',
    main: 'model M {\n  let a = 1 @ 2\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:13: unexpected character "@"'],
  },
  {
    name: 'unterminated string',
    main: 'fn f() {\n  assert(true, "oops)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:16: unterminated string literal'],
  },
  {
    name: 'param without colon',
    main: 'block B() {\n  param w f32[3] = zeros()\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:11: expected ':' but found 'f32'"],
  },
  {
    name: 'reserved word as a name',
    main: 'fn f() {\n  let in = 1\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:7: expected a name or '(' but found 'in'"],
    hint: "'in' is a reserved word and cannot be used as a name",
  },
  {
    name: 'elif',
    main: 'fn f(a: bool) {\n  if a { } elif a { }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:19: expected '}' but found '{'"],
    hint: "write 'else if'",
  },
  {
    name: 'text after a declaration',
    main: 'model M { }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:1: unexpected '}' after the end of this declaration"],
    hint: 'a file holds import, block, fn and model declarations',
  },
  {
    name: 'bad assignment target',
    main: 'fn f() {\n  f() = 2\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:3: the left side of = must be a name or name[index]'],
  },
  {
    name: 'chained comparison',
    main: 'fn f(a: int) -> bool {\n  return 1 < a < 3\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:16: expected '}' but found '<'"],
    hint: 'comparisons do not chain: write a < b and b < c',
  },
  {
    name: 'unknown name with a suggestion',
    main: 'import "std/nn.lovt"\nmodel M {\n  input x: f32[2, 3]\n  enc = Linear(3, 4)\n  output y = relu(encc(x))\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:5:19: unknown name 'encc'"],
    hint: "did you mean 'enc'?",
  },
  {
    name: 'unknown block',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linaer(3, 4)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:9: unknown name 'Linaer'"],
    hint: "did you mean 'Linear'?",
  },
  {
    name: 'unknown named argument',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(3, 4, has_bais: false)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:22: Linear has no parameter 'has_bais'"],
    hint: "did you mean 'has_bias'?",
    notes: ['parameters of Linear: in_features, out_features, has_bias, init, gain, init_std'],
  },
  {
    name: 'missing argument',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(3)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:9: missing argument 'out_features' of Linear"],
    notes: ["parameter 'out_features' is declared at models/std/nn.lovt:10:32"],
  },
  {
    name: 'too many arguments',
    main: 'import "std/nn.lovt"\nmodel M {\n  input x: f32[2, 3]\n  output y = relu(x, 2)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:4:22: relu takes 1 argument, got 2 positional'],
  },
  {
    name: 'misspelled enum member',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(3, 4, init: kaiming_fan_ot)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:28: 'kaiming_fan_ot' is not one of torch, kaiming_fan_out, kaiming_fan_out_linear, bert"],
    hint: "did you mean 'kaiming_fan_out'?",
  },
  {
    name: 'misspelled enum default',
    main: 'model M {\n  config t: enum(smooth, uniform) = smoth\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:37: 'smoth' is not one of smooth, uniform"],
    hint: "did you mean 'smooth'?",
  },
  {
    name: 'unknown member of an instance',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(3, 4)\n  output w = enc.wieght\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:4:18: Linear has no member 'wieght'"],
    hint: "did you mean 'weight'?",
  },
  {
    name: 'assignment to an undeclared variable',
    main: 'fn f(x: f32[2]) -> f32[2] {\n  y = x\n  return x\n}\nmodel M {\n  input x: f32[2]\n  output y = f(x)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:3: unknown variable 'y'"],
    hint: 'declare it with let y = ...',
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:7:14'],
  },
  {
    name: 'unknown --set key',
    main: 'model M {\n  config tau: float = 0.1\n}\n',
    opts: { set: { tua: '0.2' } },
    expect: ["--set tua=0.2: the model M has no config 'tua'"],
    hint: "did you mean 'tau'?",
  },
  {
    name: 'unknown --model',
    main: 'model Main { }\n',
    opts: { model: 'Mian' },
    expect: ["no model named 'Mian' (models: Main)"],
    hint: "did you mean 'Main'?",
  },
  {
    name: 'several models and no --model',
    main: 'model A { }\nmodel B { }\n',
    expect: ['test/nodevice/errors-virtual.lovt defines several models (A, B); pick one with --model NAME'],
  },
  {
    name: 'unknown train key',
    main: 'model M {\n  train {\n    optimiser = adamw()\n  }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:5: unknown train key 'optimiser'"],
    hint: "did you mean 'optimizer'?",
    notes: ['train keys: optimizer, schedule, early_stopping, batch, accumulate, epochs, seed'],
  },
  {
    name: 'unknown optimizer',
    main: 'model M {\n  train {\n    optimizer = adamx(lr: 1e-3)\n  }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:17: unknown optimizer 'adamx'"],
    hint: "did you mean 'adam'?",
    notes: ['choices: adamw, adam, sgd'],
  },
  {
    name: 'unknown optimizer field',
    main: 'model M {\n  train {\n    optimizer.betas1 = 0.9\n  }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:15: adamw(...) has no field 'betas1'"],
    hint: "did you mean 'betas'?",
    notes: ['fields of adamw: lr, betas, eps, weight_decay'],
  },
  {
    name: 'bad train value',
    main: 'model M {\n  train {\n    accumulate = 0\n  }\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:18: train.accumulate must be at least 1, got 0'],
  },
  {
    name: 'broadcast mismatch names both shapes and origins',
    main: 'model M {\n  input a: f32[4, 8]\n  input b: f32[4, 16]\n  let c = a\n  output y = c + b\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:5:14: shape mismatch in '+': cannot broadcast [4, 8] with [4, 16] (dimension -1 is 8 vs 16)"],
    notes: ['f32[4, 8] (c) comes from test/nodevice/errors-virtual.lovt:4:11', 'f32[4, 16] (input b) comes from test/nodevice/errors-virtual.lovt:3:9'],
  },
  {
    name: 'matmul contraction mismatch',
    main: 'model M {\n  input a: f32[4, 8]\n  input b: f32[16, 2]\n  output y = matmul(a, b)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:4:14: shape mismatch in matmul: matmul contraction mismatch: [4, 8] @ [16, 2] (8 vs 16)'],
    notes: ['f32[4, 8] (input a) comes from test/nodevice/errors-virtual.lovt:2:9', 'f32[16, 2] (input b) comes from test/nodevice/errors-virtual.lovt:3:9'],
  },
  {
    name: 'block applied to the wrong feature size',
    main: 'import "std/nn.lovt"\nmodel M {\n  input x: f32[2, 5]\n  enc = Linear(3, 4)\n  output y = enc(x)\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:5:18: argument 'x' of Linear.forward must be f32[..., in_features], got f32[2, 5]: dimension 1 is 5, but in_features is 3",
    ],
    notes: ['f32[2, 5] (input x) comes from test/nodevice/errors-virtual.lovt:3:9', 'the type is declared at models/std/nn.lovt:23:17'],
  },
  {
    name: 'a signature dim bound twice differently',
    main: 'fn mm(a: f32[N, K], b: f32[K, M]) -> f32[N, M] {\n  return matmul(a, b)\n}\nmodel M {\n  input a: f32[2, 3]\n  input b: f32[4, 5]\n  output y = mm(a, b)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:7:20: argument 'b' of mm must be f32[K, M], got f32[4, 5]: dimension 0 is 4, but K is 3"],
    notes: [
      'f32[4, 5] (input b) comes from test/nodevice/errors-virtual.lovt:6:9',
      'the type is declared at test/nodevice/errors-virtual.lovt:1:24',
      "K = 3 was bound by argument 'a' of mm",
    ],
  },
  {
    name: 'result type mismatch',
    main: 'fn f(x: f32[N, D]) -> f32[N] {\n  return x\n}\nmodel M {\n  input x: f32[2, 3]\n  output y = f(x)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:10: the result of f must be f32[N], got f32[2, 3]: rank 2, expected 1'],
    notes: ['f32[2, 3] (input x) comes from test/nodevice/errors-virtual.lovt:5:9', 'the type is declared at test/nodevice/errors-virtual.lovt:1:23'],
  },
  {
    name: 'reshape element count',
    main: 'model M {\n  input x: f32[2, 3]\n  output y = reshape(x, [4, 2])\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:14: shape mismatch in reshape: cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)'],
    notes: ['f32[2, 3] (input x) comes from test/nodevice/errors-virtual.lovt:2:9'],
  },
  {
    name: 'concat mismatch',
    main: 'model M {\n  input a: f32[2, 3]\n  input b: f32[3, 3]\n  output y = concat([a, b], axis: 1)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:4:14: shape mismatch in concat: concat along axis 1: [2, 3] and [3, 3] differ off that axis'],
    notes: ['f32[2, 3] (input a) comes from test/nodevice/errors-virtual.lovt:2:9', 'f32[3, 3] (input b) comes from test/nodevice/errors-virtual.lovt:3:9'],
  },
  {
    name: 'dtype mismatch',
    main: 'model M {\n  input ids: i32[2, 3]\n  input x: f32[2, 3]\n  output y = ids * x\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:4:18: type mismatch in '*': i32[2, 3] and f32[2, 3] have different dtypes"],
    hint: 'convert one side with cast(x, f32)',
    notes: ['i32[2, 3] (input ids) comes from test/nodevice/errors-virtual.lovt:2:9', 'f32[2, 3] (input x) comes from test/nodevice/errors-virtual.lovt:3:9'],
  },
  {
    name: 'loss that is not a scalar',
    main: 'model M {\n  input x: f32[2, 3]\n  loss l = x * 2\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:12: loss 'l' must be a scalar f32[], got f32[2, 3]"],
    hint: 'reduce it, e.g. sum(x) / numel(x)',
    notes: ['f32[2, 3] (x * 2) comes from test/nodevice/errors-virtual.lovt:3:12'],
  },
  {
    name: 'output that is not a tensor',
    main: 'model M {\n  output n = 3\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:14: output 'n' must be a tensor, got int 3"],
  },
  {
    name: 'axis out of range',
    main: 'model M {\n  input x: f32[2, 3]\n  output y = softmax(x, axis: 2)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:31: axis 2 is out of range for a tensor of rank 2'],
  },
  {
    name: 'if on a tensor',
    main: 'model M {\n  input x: f32[]\n  output y = if x > 0 then x else -x\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:17: the condition of if ... then ... else must be a compile-time bool, got tensor f32[]'],
    hint: 'use where(mask, a, b) to select between tensors',
  },
  {
    name: 'config value of the wrong type',
    main: 'model M {\n  config n: int = 1.5\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:19: config 'n' must be an int, got float 1.5"],
  },
  {
    name: 'argument of the wrong type',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear("three", 4)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:16: argument \'in_features\' of Linear must be an int, got string "three"'],
  },
  {
    name: '--set value of the wrong type',
    main: 'model M {\n  config batch: int = 4\n}\n',
    opts: { set: { batch: 'abc' } },
    expect: ["--set batch=abc: config 'batch' is an int; 'abc' is not a number"],
  },
  {
    name: 'param without an initialiser',
    main: 'model M {\n  param w: f32[3]\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:3: param 'w' needs an initialiser, e.g. = zeros()"],
  },
  {
    name: 'initialiser that is not one',
    main: 'model M {\n  param w: f32[3] = 3\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:21: the initialiser of 'w' must be an initialiser such as zeros() or normal(0, 0.02), got int 3"],
  },
  {
    name: 'kaiming on a vector',
    main: 'model M {\n  param w: f32[3] = kaiming_normal()\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:21: kaiming_normal needs a weight of rank 2 or more (it uses the fans), but 'w' is f32[3]"],
  },
  {
    name: 'indexing a tensor',
    main: 'model M {\n  input x: f32[2, 3]\n  output y = x[0]\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:14: tensors cannot be indexed with [ ]'],
    hint: 'use slice(x, axis: a, start: i, end: i + 1) or gather(table, idx)',
  },
  {
    name: 'duplicate fn',
    main: 'fn f() { }\nfn f() { }\nmodel M { }\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:4: duplicate definition of 'f' (first defined at test/nodevice/errors-virtual.lovt:1:4)"],
  },
  {
    name: 'duplicate param in a block',
    main: 'block B() {\n  param w: f32[2] = zeros()\n  param w: f32[2] = ones()\n}\nmodel M {\n  b = B()\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:9: duplicate definition of 'w' (first defined at test/nodevice/errors-virtual.lovt:2:9)"],
    notes: ['in B (instantiated as b), called from test/nodevice/errors-virtual.lovt:6:7'],
  },
  {
    name: 'duplicate let in a fn',
    main: 'fn f() {\n  let a = 1\n  let a = 2\n}\nmodel M {\n  let x = f()\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:7: 'a' is already defined at test/nodevice/errors-virtual.lovt:2:7"],
    hint: 'rebind it with a = ...',
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:6:11'],
  },
  {
    name: 'duplicate model item',
    main: 'model M {\n  config n: int = 1\n  let n = 2\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:7: duplicate definition of 'n' (first defined at test/nodevice/errors-virtual.lovt:2:10)"],
  },
  {
    name: 'duplicate parameter name',
    main: 'fn f(a: int, a: int) { }\nmodel M { }\n',
    expect: ["test/nodevice/errors-virtual.lovt:1:14: duplicate parameter 'a' of f (first at test/nodevice/errors-virtual.lovt:1:6)"],
  },
  {
    name: 'redefining a built-in',
    main: 'fn relu(x: f32[...]) -> f32[...] { return x }\nmodel M { }\n',
    expect: ["test/nodevice/errors-virtual.lovt:1:4: 'relu' is a built-in name and cannot be redefined"],
    hint: 'choose another name',
  },
  {
    name: 'import not found',
    main: 'import "std/nope.lovt"\nmodel M { }\n',
    expect: ['test/nodevice/errors-virtual.lovt:1:1: cannot find import "std/nope.lovt"'],
    hint: 'searched test/nodevice, models',
  },
  {
    name: 'import cycle',
    path: '/virtual/a.lovt',
    main: 'import "b.lovt"\nmodel M { }\n',
    files: { '/virtual/b.lovt': 'import "c.lovt"\n', '/virtual/c.lovt': 'import "a.lovt"\n' },
    expect: ['/virtual/c.lovt:1:1: import cycle: /virtual/a.lovt -> /virtual/b.lovt -> /virtual/c.lovt -> /virtual/a.lovt'],
    chain: ['/virtual/b.lovt:1:1', '/virtual/a.lovt:1:1'],
  },
  {
    name: 'escaping import',
    path: '/virtual/sub/main.lovt',
    main: 'import "../secret.lovt"\nmodel M { }\n',
    files: { '/virtual/secret.lovt': 'fn s() { }\n' },
    expect: ['/virtual/sub/main.lovt:1:1: import "../secret.lovt" escapes the import roots (it resolves to /virtual/secret.lovt)'],
    hint: 'imports may only name files under /virtual/sub, models',
  },
  {
    name: 'absolute import',
    main: 'import "/etc/passwd"\nmodel M { }\n',
    expect: ['test/nodevice/errors-virtual.lovt:1:1: import path "/etc/passwd" must be relative to the import roots'],
    hint: 'write e.g. import "std/nn.lovt"',
  },
  {
    name: 'error in an imported file shows the import chain',
    path: '/virtual/main.lovt',
    main: 'import "lib.lovt"\nmodel M {\n  let x = helper()\n}\n',
    files: { '/virtual/lib.lovt': 'fn helper() {\n  return undefined_name\n}\n' },
    expect: ["/virtual/lib.lovt:2:10: unknown name 'undefined_name'"],
    notes: ['in helper, called from /virtual/main.lovt:3:11'],
    chain: ['/virtual/main.lovt:1:1'],
  },
  {
    name: 'duplicate across files',
    path: '/virtual/main.lovt',
    main: 'import "lib.lovt"\nfn helper() { }\nmodel M { }\n',
    files: { '/virtual/lib.lovt': 'fn helper() { }\n' },
    expect: ["/virtual/lib.lovt:1:4: duplicate definition of 'helper' (first defined at /virtual/main.lovt:2:4)"],
    chain: ['/virtual/main.lovt:1:1'],
  },
  {
    name: 'extends an unknown model',
    main: 'model Base { }\nmodel V extends Bsae { }\n',
    opts: { model: 'V' },
    expect: ["test/nodevice/errors-virtual.lovt:2:17: unknown model 'Bsae' in extends"],
    hint: "did you mean 'Base'?",
  },
  {
    name: 'cyclic extends',
    main: 'model A extends B { }\nmodel B extends A { }\n',
    opts: { model: 'A' },
    expect: ['test/nodevice/errors-virtual.lovt:1:7: cyclic extends: A extends B extends A'],
  },
  {
    name: 'override of a different kind',
    main: 'model A {\n  config n: int = 1\n}\nmodel B extends A {\n  let n = 2\n}\n',
    opts: { model: 'B' },
    expect: [
      "test/nodevice/errors-virtual.lovt:5:7: bad override: 'n' is a config in A (test/nodevice/errors-virtual.lovt:2:10) and cannot be redefined as a let",
    ],
  },
  {
    name: 'weight-only override of an unknown loss',
    main: 'model A {\n  input x: f32[]\n  loss main = x\n}\nmodel B extends A {\n  loss mian(weight: 2)\n}\n',
    opts: { model: 'B' },
    expect: ["test/nodevice/errors-virtual.lovt:6:8: loss 'mian' has no expression and no parent of B defines it"],
    hint: "did you mean 'main'?",
  },
  {
    name: 'drop of an unknown loss',
    main: 'model A {\n  input x: f32[]\n  loss main = x\n}\nmodel B extends A {\n  drop loss mains\n}\n',
    opts: { model: 'B' },
    expect: ["test/nodevice/errors-virtual.lovt:6:13: cannot drop loss 'mains': no such loss"],
    hint: "did you mean 'main'?",
  },
  {
    name: 'untyped config that overrides nothing',
    main: 'model A { }\nmodel B extends A {\n  config size = 3\n}\n',
    opts: { model: 'B' },
    expect: ["test/nodevice/errors-virtual.lovt:3:10: config 'size' needs a type"],
    hint: "no parent of B has a config 'size' to override",
  },
  {
    name: 'if at model level',
    main: 'model M {\n  config a: bool = true\n  if a { }\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:3: 'if' statements are not allowed in a model body"],
    hint: 'use a conditional expression (if c then a else b), or move the logic into a fn or block',
  },
  {
    name: 'freeze of a missing prefix',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(2, 2)\n  freeze enc.wieght\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:4:10: freeze: no parameter or buffer is named 'enc.wieght' or starts with 'enc.wieght.'"],
    hint: "did you mean 'enc.weight'?",
  },
  {
    name: 'duplicate state key (as)',
    main: 'import "std/nn.lovt"\nblock H() {\n  first = Linear(2, 2) as 0\n  second = Linear(2, 2) as 0\n}\nmodel M {\n  h = H()\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:4:28: duplicate state key '0': sub-module 'first' already uses it (first defined at test/nodevice/errors-virtual.lovt:3:3)",
    ],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:7:7'],
  },
  {
    name: "state key clashing with another sub-module's name",
    main: 'import "std/nn.lovt"\nblock H() {\n  norm = BatchNorm(2)\n  extra = Linear(2, 2) as "norm"\n}\nmodel M {\n  h = H()\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:4:27: duplicate state key 'norm': sub-module 'norm' already uses it (first defined at test/nodevice/errors-virtual.lovt:3:3)",
    ],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:7:7'],
  },
  {
    name: 'sub-module name clashing with an earlier state key',
    main: 'import "std/nn.lovt"\nblock H() {\n  extra = Linear(2, 2) as "norm"\n  norm = BatchNorm(2)\n}\nmodel M {\n  h = H()\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:4:3: duplicate state key 'norm': sub-module 'extra' already uses it (first defined at test/nodevice/errors-virtual.lovt:3:3)",
    ],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:7:7'],
  },
  {
    name: 'state key clashing with an indexed sub-module list',
    main: 'import "std/nn.lovt"\nblock H() {\n  for i in 0..2 { layer[i] = Linear(2, 2) }\n  proj = Linear(2, 2) as "layer"\n}\nmodel M {\n  h = H()\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:4:26: duplicate state key 'layer': sub-module list 'layer' already uses it (first defined at test/nodevice/errors-virtual.lovt:3:19)",
    ],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:7:7'],
  },
  {
    name: 'state key clashing with a param',
    main: 'import "std/nn.lovt"\nblock H() {\n  param scale: f32[2] = ones()\n  extra = Linear(2, 2) as "scale"\n}\nmodel M {\n  h = H()\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:4:27: duplicate state key 'scale': param 'scale' already uses it (first defined at test/nodevice/errors-virtual.lovt:3:9)",
    ],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:7:7'],
  },
  {
    name: 'negative state key',
    main: 'import "std/nn.lovt"\nblock H() {\n  first = Linear(2, 2) as -1\n}\nmodel M {\n  h = H()\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:27: a state key must be an int >= 0 (an nn.Sequential index) or a name, got int -1'],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:6:7'],
  },
  {
    name: 'state key with a dot',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(2, 2) as "enc.0"\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:25: a state key must be an int >= 0 (an nn.Sequential index) or a name, got string "enc.0"'],
    hint: 'a key is one segment of the state name: digits, or letters, digits and _ (no dots)',
  },
  {
    name: 'fractional state key',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(2, 2) as 1.5\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:25: a state key must be an int >= 0 (an nn.Sequential index) or a name, got float 1.5'],
  },
  {
    name: 'state key on an indexed sub-module',
    main: 'import "std/nn.lovt"\nblock H() {\n  layer[0] = Linear(2, 2) as 0\n}\nmodel M {\n  h = H()\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:30: 'as' cannot be combined with an index: layer[i] already gives the state key layer.i"],
    notes: ['in H (instantiated as h), called from test/nodevice/errors-virtual.lovt:6:7'],
  },
  {
    name: 'state key in a fn',
    main: 'fn f(x: f32[2]) -> f32[2] {\n  let y = x\n  y = x as 0\n  return y\n}\nmodel M {\n  input x: f32[2]\n  output y = f(x)\n}\n',
    expect: [
      "test/nodevice/errors-virtual.lovt:3:12: 'as KEY' gives a sub-module its state key; it belongs on NAME = Block(...) at block or model level, not in a fn",
    ],
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:8:14'],
  },
  {
    name: 'state key on a let',
    main: 'import "std/nn.lovt"\nmodel M {\n  let enc = Linear(2, 2) as 0\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:26: expected '}' but found 'as'"],
    hint: "'as KEY' follows a sub-module declaration NAME = Block(...) at block or model level",
  },
  {
    name: 'reserved state key at model level',
    main: 'import "std/nn.lovt"\nmodel M {\n  enc = Linear(2, 2) as "optim"\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:3:25: 'optim' is reserved at model level: the training programs name their state optim.*"],
  },
  {
    name: 'freeze range that ends before it starts',
    main: 'import "std/nn.lovt"\nblock E() {\n  for i in 0..4 { layer[i] = Linear(2, 2) }\n}\nmodel M {\n  config n: int = 1\n  enc = E()\n  freeze enc.layer[3..n]\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:8:19: freeze range [3..1] ends before it starts'],
  },
  {
    name: 'freeze range bound that is not an int',
    main: 'import "std/nn.lovt"\nblock E() {\n  for i in 0..4 { layer[i] = Linear(2, 2) }\n}\nmodel M {\n  config frac: float = 0.5\n  enc = E()\n  freeze enc.layer[0..frac * 3]\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:8:23: the end of a freeze range must be an int, got float 1.5'],
  },
  {
    name: 'freeze range with an unknown config',
    main: 'import "std/nn.lovt"\nblock E() {\n  for i in 0..4 { layer[i] = Linear(2, 2) }\n}\nmodel M {\n  config frozen_layers: int = 2\n  enc = E()\n  freeze enc.layer[0..frozen_layer]\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:8:23: unknown name 'frozen_layer'"],
    hint: "did you mean 'frozen_layers'?",
  },
  {
    name: 'negative freeze index',
    main: 'import "std/nn.lovt"\nblock E() {\n  for i in 0..4 { layer[i] = Linear(2, 2) }\n}\nmodel M {\n  enc = E()\n  freeze enc.layer[0 - 1]\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:7:20: a freeze index must be at least 0, got -1'],
  },
  {
    name: 'freeze range past the last layer (--set)',
    main: 'import "std/nn.lovt"\nblock E() {\n  for i in 0..4 { layer[i] = Linear(2, 2) }\n}\nmodel M {\n  config n: int = 2\n  enc = E()\n  freeze enc.layer[0..n]\n}\n',
    opts: { set: { n: '5' } },
    expect: ["test/nodevice/errors-virtual.lovt:8:10: freeze: no parameter or buffer is named 'enc.layer.4' or starts with 'enc.layer.4.'"],
    hint: "did you mean 'enc.layer.0'?",
  },
  {
    name: 'update of a param',
    main: 'block B() {\n  param w: f32[2] = zeros()\n  fn forward(x: f32[2]) -> f32[2] {\n    update w = x\n    return x\n  }\n}\nmodel M {\n  input x: f32[2]\n  b = B()\n  output y = b(x)\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:4:12: 'w' is a param; only buffers can be updated"],
    hint: 'declare it with buffer instead of param',
    notes: ['in B.forward, called from test/nodevice/errors-virtual.lovt:11:14'],
  },
  {
    name: 'block instantiated inside a fn',
    main: 'import "std/nn.lovt"\nfn f(x: f32[2, 3]) -> f32[2, 4] {\n  let l = Linear(3, 4)\n  return l(x)\n}\nmodel M {\n  input x: f32[2, 3]\n  output y = f(x)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:11: block Linear can only be instantiated as a sub-module: NAME = Linear(...) at block or model level'],
    hint: 'so that its parameters get a stable name',
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:8:14'],
  },
  {
    name: 'sub-module that is not a block instance',
    main: 'model M {\n  enc = 3\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:9: a sub-module must be a block instance, got int 3'],
    hint: 'bind other values with let enc = ...',
  },
  {
    name: 'reserved input name',
    main: 'model M {\n  input seed: i32[]\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:9: the input name 'seed' is reserved for the dropout seed"],
  },
  {
    name: 'unbounded recursion',
    main: 'fn f(n: int) -> int {\n  return f(n + 1)\n}\nmodel M {\n  let x = f(0)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:10: calls nested more than 200 deep (unbounded recursion?)'],
    hint: 'the innermost call is f',
  },
  {
    name: 'loop too long',
    main: 'fn f() {\n  for i in 0..1000000000 { }\n}\nmodel M {\n  let x = f()\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:15: the loop 0..1000000000 has more than 100000 iterations'],
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:5:11'],
  },
  {
    name: 'tensor too large',
    main: 'model M {\n  input x: f32[65536, 65536]\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:12: input 'x' produces a tensor of 4294967296 elements ([65536, 65536]), more than the limit 2147483648"],
  },
  {
    name: 'failed assert',
    main: 'fn f(d: int, h: int) {\n  assert(d % h == 0, "dim must be divisible by heads")\n}\nmodel M {\n  let x = f(10, 3)\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:3: dim must be divisible by heads'],
    notes: ['in f, called from test/nodevice/errors-virtual.lovt:5:11'],
  },
  {
    name: 'several errors in one run',
    main: 'model M {\n  let a = nope1\n  let b = a + 1\n  let c = nope2\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:11: unknown name 'nope1'", "test/nodevice/errors-virtual.lovt:4:11: unknown name 'nope2'"],
  },
  {
    name: 'exponentially nested lists are bounded',
    main: 'fn f() {\n  let l = [1]\n  for i in 0..60 { l = [l, l] }\n  let b = l == l\n}\nmodel M {\n  let x = f()\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:24: list larger than 100000 values'],
  },
  {
    name: 'string doubling is bounded',
    main: 'fn f() {\n  let s = "ab"\n  for i in 0..60 { s = s + s }\n}\nmodel M {\n  let x = f()\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:3:24: string longer than 100000 characters'],
  },
  {
    name: 'a learning rate that reads as Infinity',
    main: 'model M {\n  config tau: float = 0.1\n  input x: f32[2]\n  loss l = sum(x) / tau\n  train { optimizer = adamw(lr: 1e999) }\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:5:33: number out of range: it reads as Infinity'],
    hint: 'a number must be finite (at most about 1.8e308)',
  },
  {
    name: 'a config default that reads as -Infinity',
    main: 'model M {\n  config tau: float = -1e999\n  input x: f32[2]\n  loss l = sum(x) / tau\n}\n',
    expect: ['test/nodevice/errors-virtual.lovt:2:23: number out of range: it reads as -Infinity'],
    hint: 'a number must be finite (at most about 1.8e308)',
  },
  {
    name: '--set train.optimizer.lr=1e999',
    main: 'model M {\n  config tau: float = 0.1\n  input x: f32[2]\n  loss l = sum(x) / tau\n}\n',
    opts: { set: { 'train.optimizer.lr': '1e999' } },
    expect: ['--set train.optimizer.lr=1e999: number out of range: it reads as Infinity'],
    hint: 'a number must be finite (at most about 1.8e308)',
  },
  {
    name: '--set of a float config to 1e999',
    main: 'model M {\n  config tau: float = 0.1\n  input x: f32[2]\n  loss l = sum(x) / tau\n}\n',
    opts: { set: { tau: '1e999' } },
    expect: ["--set tau=1e999: config 'tau': number out of range: '1e999' reads as Infinity"],
    hint: 'a number must be finite (at most about 1.8e308)',
  },
  {
    name: 'a config default that breaks its where constraint (nothing computes with it)',
    main: 'model M {\n  config tau: float = 0.0 where tau > 0\n  let s = 1 / tau\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:33: config 'tau' is 0, which breaks its constraint tau > 0"],
    notes: ['the value comes from test/nodevice/errors-virtual.lovt:2:23'],
  },
  {
    name: "a --set value that breaks a config's where constraint is located at the constraint",
    main: 'model M {\n  config p: float = 0.1 where p >= 0 and p < 1\n}\n',
    opts: { set: { p: '1.5' } },
    expect: ["test/nodevice/errors-virtual.lovt:2:31: --set p=1.5: config 'p' must satisfy p >= 0 and p < 1, got 1.5"],
    hint: 'give --set p a value with p >= 0 and p < 1',
  },
  {
    name: "a variant's config override keeps the parent's constraint",
    main: 'model A {\n  config n: int = 4 where n % 2 == 0\n}\nmodel B extends A {\n  config n = 3\n}\n',
    opts: { model: 'B' },
    expect: ["test/nodevice/errors-virtual.lovt:2:27: config 'n' is 3, which breaks its constraint n % 2 == 0"],
    notes: ['the value comes from test/nodevice/errors-virtual.lovt:5:14'],
  },
  {
    name: 'a where constraint must be a bool',
    main: 'model M {\n  config n: int = 4 where n + 1\n}\n',
    expect: ["test/nodevice/errors-virtual.lovt:2:27: the constraint of config 'n' must be a bool, got int 5"],
  },
  {
    name: 'the std temperatures must be positive (--set tau_global=0)',
    path: 'models/convirt-tiny.lovt',
    main: readFileSync('models/convirt-tiny.lovt', 'utf8'),
    opts: { set: { tau_global: '0' } },
    expect: ["models/std/global-contrastive.lovt:61:40: --set tau_global=0: config 'tau_global' must satisfy tau_global > 0, got 0"],
    hint: 'give --set tau_global a value with tau_global > 0',
    chain: ['models/convirt.lovt:9:1', 'models/convirt-tiny.lovt:3:1'],
  },
];

test('echoed input is clipped: a megabyte-long name, a long --set value', () => {
  const long = compileCase({ name: '', main: `model M {\n  let ${'a'.repeat(1_000_000)} = nope + 1\n}\n`, expect: [] });
  assert.equal(
    long.diagnostics.map((d) => `${d.line}:${d.col}: ${d.message}`),
    ["2:1000010: unknown name 'nope'"],
  );
  const lines = renderDiagnostic(long.diagnostics[0]).split('\n');
  assert.is(lines[1], ` 2 | … ${'a'.repeat(149)} = nope + 1`);
  assert.is(lines[2].indexOf('^'), lines[1].indexOf('nope'));
  const set = compileCase({ name: '', main: 'model M {\n  config tau: float = 0.1\n}\n', opts: { set: { tau: 'x'.repeat(100_000) } }, expect: [] });
  assert.equal(
    set.diagnostics.map((d) => d.message),
    [`--set tau=${'x'.repeat(76)}… (100004 characters): config 'tau' is a float; '${'x'.repeat(80)}… (100000 characters)' is not a number`],
  );
});

test(`at least 40 malformed programs`, () => {
  assert.ok(CASES.length >= 40, `${CASES.length} cases`);
});

for (const c of CASES) {
  test(c.name, () => {
    const r = compileCase(c);
    assert.is(r.ok, false);
    const got = r.diagnostics.map((d) => (d.line > 0 ? `${d.file}:${d.line}:${d.col}: ${d.message}` : d.message));
    assert.equal(got, c.expect);
    const d = r.diagnostics[0];
    assert.is(d.hint, c.hint);
    if (c.notes) assert.equal(d.notes, c.notes);
    if (c.chain)
      assert.equal(
        d.importChain?.map((l) => `${l.file}:${l.line}:${l.col}`),
        c.chain,
      );
    // Rendering shows the location, the source line and a caret under the problem.
    const text = renderDiagnostic(d);
    assert.ok(!/\bat .*\.ts:\d+/.test(text), 'no JavaScript stack in messages');
    if (d.line > 0) {
      const lines = text.split('\n');
      assert.ok(lines[0].startsWith(`${d.file}:${d.line}:${d.col}: error: `), lines[0]);
      assert.match(lines[2], /^ +\| +\^+$/);
      assert.is(lines[2].indexOf('^') - lines[2].indexOf('|') - 2, d.col - 1);
    }
  });
}

test.run();
