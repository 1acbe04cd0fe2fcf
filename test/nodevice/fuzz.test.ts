// Property test: random mutations of valid model files (delete, duplicate or
// swap tokens, replace numbers with extreme values, insert random characters,
// truncate) never make the front end throw, never produce an internal compiler
// error, and always finish (every loop and recursion is bounded). Each run
// compiles from text; imports still resolve against models/.

import { readFileSync, existsSync } from 'node:fs';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileModel } from '../../compiler/frontend/index.ts';
import { tokenize } from '../../grammar/lexer.ts';

const SMALL = `
import "std/nn.lovt"

fn xent(logits: f32[B, C], label: f32[B, C]) -> f32[] {
  let lse = logsumexp(logits, axis: 1)
  return sum(lse - sum(logits * label, axes: 1)) / B
}

block Mlp(d_in: int, d_hidden: int = 8, depth: int = 2, norm: bool = true) {
  first = Linear(d_in, d_hidden)
  for i in 0..depth { layer[i] = Linear(d_hidden, d_hidden, init: kaiming_fan_out) }
  if norm { bn = BatchNorm(d_hidden) }
  fn forward(x: f32[N, d_in]) -> f32[N, d_hidden] {
    let h = relu(first(x))
    for i in 0..depth { h = h + layer[i](h) }
    if norm { h = bn(h) }
    return dropout(h, p: 0.1)
  }
}

model Small {
  config batch: int = 4
  config dim: int = 6
  config classes: int = 3
  config mode: enum(a, b) = a
  input x: f32[batch, dim]
  input label: f32[batch, classes]
  mlp = Mlp(dim, depth: if mode == a then 2 else 1)
  head = Linear(8, classes)
  let logits = head(mlp(x))
  loss xent(weight: 0.5) = xent(logits, label)
  output probs = softmax(logits, axis: -1)
  freeze mlp.layer[0..1]
  train { optimizer = adamw(lr: 1e-3) accumulate = 2 }
}

model Variant extends Small {
  config dim = 5
  loss xent(weight: 1.0)
  drop output probs
}
`;

interface Source {
  text: string;
  model?: string;
}

const SOURCES: Source[] = [
  { text: SMALL, model: 'Small' },
  { text: SMALL, model: 'Variant' },
];
if (existsSync('models/std/nn.lovt'))
  SOURCES.push({
    text: readFileSync('models/std/nn.lovt', 'utf8') + '\nmodel Z {\n  input x: f32[2, 3]\n  l = Linear(3, 2)\n  output y = l(x)\n}\n',
    model: 'Z',
  });

const EXTREME_NUMBERS = ['0', '-1', '1', '3.5', '1e9', '300', '999999999999', '-0.0', '2147483648'];
const NOISE = [
  '{',
  '}',
  '(',
  ')',
  '[',
  ']',
  ',',
  ':',
  '=',
  '..',
  '...',
  '->',
  '"',
  '/*',
  '@',
  'let',
  'if',
  'fn',
  'model',
  'block',
  'x',
  '\n',
  '-',
  '**',
  'training',
  'update',
  'param',
  'return',
];

type Mutation =
  | { kind: 'delete'; at: number }
  | { kind: 'duplicate'; at: number }
  | { kind: 'swap'; a: number; b: number }
  | { kind: 'number'; at: number; value: number }
  | { kind: 'insert'; pos: number; text: string }
  | { kind: 'truncate'; pos: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('swap' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ kind: fc.constant('number' as const), at: fc.nat(), value: fc.nat(EXTREME_NUMBERS.length - 1) }),
  fc.record({ kind: fc.constant('insert' as const), pos: fc.nat(), text: fc.oneof(fc.constantFrom(...NOISE), fc.string({ maxLength: 4 })) }),
  fc.record({ kind: fc.constant('truncate' as const), pos: fc.nat() }),
);

/** Applies mutations on token boundaries of the current text. */
function mutate(text: string, mutations: Mutation[]): string {
  let t = text;
  for (const m of mutations) {
    const toks = tokenize(t).tokens;
    if (toks.length === 0) break;
    const tok = (i: number) => toks[i % toks.length];
    const cut = (a: number, b: number, ins = '') => t.slice(0, a) + ins + t.slice(b);
    switch (m.kind) {
      case 'delete': {
        const k = tok(m.at);
        t = cut(k.startOffset, k.endOffset! + 1);
        break;
      }
      case 'duplicate': {
        const k = tok(m.at);
        t = cut(k.startOffset, k.startOffset, k.image + ' ');
        break;
      }
      case 'swap': {
        let [x, y] = [tok(m.a), tok(m.b)];
        if (x.startOffset > y.startOffset) [x, y] = [y, x];
        if (x === y) break;
        t = t.slice(0, x.startOffset) + y.image + t.slice(x.endOffset! + 1, y.startOffset) + x.image + t.slice(y.endOffset! + 1);
        break;
      }
      case 'number': {
        const nums = toks.filter((k) => k.tokenType.name === 'IntLit' || k.tokenType.name === 'FloatLit');
        if (nums.length === 0) break;
        const k = nums[m.at % nums.length];
        t = cut(k.startOffset, k.endOffset! + 1, EXTREME_NUMBERS[m.value]);
        break;
      }
      case 'insert': {
        const pos = m.pos % (t.length + 1);
        t = cut(pos, pos, m.text);
        break;
      }
      case 'truncate':
        t = t.slice(0, m.pos % (t.length + 1));
        break;
    }
  }
  return t;
}

test('mutated model files never crash or hang the front end', () => {
  let errorsSeen = 0;
  fc.assert(
    fc.property(fc.nat(SOURCES.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 3 }), fc.boolean(), (si, muts, evalMode) => {
      const src = SOURCES[si];
      const text = mutate(src.text, muts);
      const t0 = performance.now();
      let r;
      try {
        r = compileModel({ text, path: 'test/nodevice/fuzz-virtual.lovt' }, { model: src.model, mode: evalMode ? 'eval' : 'train' });
      } catch (e) {
        throw new Error(`compileModel threw ${(e as Error).stack}\n--- input ---\n${text}`);
      }
      const ms = performance.now() - t0;
      if (ms > 5000) throw new Error(`compileModel took ${ms.toFixed(0)} ms\n--- input ---\n${text}`);
      const ice = r.diagnostics.find((d) => d.message.startsWith('internal compiler error'));
      if (ice) throw new Error(`${ice.message}\n--- input ---\n${text}`);
      for (const d of r.diagnostics) {
        if (typeof d.message !== 'string' || d.message.length === 0) throw new Error(`empty diagnostic for\n${text}`);
        if (d.line < 0 || d.col < 0) throw new Error(`bad location ${d.line}:${d.col}`);
      }
      if (!r.ok) errorsSeen++;
      else if (!r.graph || !r.model) throw new Error('ok result without graph');
    }),
    { numRuns: 150, includeErrorInReport: true },
  );
  assert.ok(errorsSeen > 0, 'the mutations should produce some errors');
});

test('random text never crashes the front end', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (text) => {
      const r = compileModel({ text, path: 'test/nodevice/fuzz-virtual.lovt' });
      if (r.diagnostics.some((d) => d.message.startsWith('internal compiler error'))) throw new Error(`ICE on ${JSON.stringify(text)}`);
    }),
    { numRuns: 100, includeErrorInReport: true },
  );
});

test.run();
