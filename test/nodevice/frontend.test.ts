// The front end end to end: .lovt text -> graph IR + ModelInfo. Shape
// inference, modes (train/eval: updates, dropout), variants, --set, the train
// section, freeze, PyTorch state names and order, and the numerics of the std
// nn layers checked with the float64 reference interpreter against
// independent loops written here.

import { existsSync, readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type CompileOptions, type CompileResult, compileModel, renderDiagnostics } from '../../compiler/frontend/index.ts';
import type { Graph } from '../../compiler/ir.ts';
import { evaluate } from '../../compiler/reference.ts';
import { CONV_TRANSPOSE_CASES, type ConvTransposeCase, convTransposeProbe, convTransposeScatter, largeModelSource } from './model-helpers.ts';
import { fans } from '../../runtime/init.ts';

const PATH = 'test/nodevice/frontend-virtual.lovt';

function compile(text: string, opts: CompileOptions = {}): CompileResult & { graph: Graph } {
  const r = compileModel({ text, path: PATH }, opts);
  if (!r.ok) throw new Error(`compile failed:\n${renderDiagnostics(r.diagnostics)}`);
  return r as CompileResult & { graph: Graph };
}

function shapeOf(g: Graph, output: string): number[] {
  return g.nodes[g.outputs[output]].shape;
}

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-9, what = '') {
  assert.is(a.length, b.length, `${what}: lengths differ`);
  for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])))) assert.unreachable(`${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

const TINY = `
import "std/nn.lovt"

fn xent(logits: f32[B, C], label: f32[B, C]) -> f32[] {
  return sum(logsumexp(logits, axis: 1) - sum(logits * label, axes: 1)) / B
}

model Tiny {
  config batch: int = 8
  config dim: int = 16
  config hidden: int = 32
  config classes: int = 4
  config p_drop: float = 0.1
  config act: enum(relu, gelu) = relu

  input x: f32[batch, dim]
  input label: f32[batch, classes]

  encoder = Linear(dim, hidden)
  bn = BatchNorm(hidden)
  head = Linear(hidden, classes)
  param temperature: f32[] = constant(1.0)

  let h = dropout(if act == relu then relu(bn(encoder(x))) else gelu(encoder(x)), p: p_drop)
  let logits = head(dropout(h, p: p_drop)) / temperature
  loss xent(weight: 0.5) = xent(logits, label)
  loss l2(weight: 1e-3) = sum(square(encoder.weight))
  output logits = logits
}
`;

test('a small model: outputs, state names in state_dict order, train-mode updates and dropout', () => {
  const r = compile(TINY);
  const g = r.graph;
  assert.equal(Object.keys(g.outputs), ['loss.xent', 'loss.l2', 'loss.total', 'logits']);
  assert.equal(shapeOf(g, 'logits'), [8, 4]);
  assert.equal(shapeOf(g, 'loss.total'), []);
  assert.equal(Object.keys(g.state), [
    'temperature',
    'encoder.weight',
    'encoder.bias',
    'bn.weight',
    'bn.bias',
    'bn.running_mean',
    'bn.running_var',
    'bn.num_batches_tracked',
    'head.weight',
    'head.bias',
  ]);
  assert.is(g.state['bn.num_batches_tracked'].dtype, 'i32');
  assert.is(g.state['bn.running_mean'].trainable, false);
  assert.equal(g.state['encoder.weight'].init, { kind: 'kaiming_uniform', mode: 'fan_in', gain: Math.sqrt(1 / 3) });
  assert.equal(g.state['encoder.bias'].init, { kind: 'uniform', low: -1 / 4, high: 1 / 4 });
  assert.equal(Object.keys(g.updates), ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']);
  // dropout: one seed input, a distinct salt per site
  assert.equal(g.nodes[g.inputs.seed].shape, []);
  assert.is(g.nodes[g.inputs.seed].dtype, 'i32');
  const salts = g.nodes.filter((n) => n.op === 'dropout').map((n) => n.attrs.salt);
  assert.equal(salts, [0, 1]);
  const m = r.model!;
  assert.equal(m.losses, [
    { name: 'xent', weight: 0.5, output: 'loss.xent' },
    { name: 'l2', weight: 1e-3, output: 'loss.l2' },
  ]);
  assert.equal(m.outputs, ['logits']);
  assert.equal(m.inputs, { x: { shape: [8, 16], dtype: 'f32' }, label: { shape: [8, 4], dtype: 'f32' } });
  assert.equal(m.configs.act, { type: 'enum(relu, gelu)', value: 'relu' });
  assert.is(m.counts.params, 1 + 16 * 32 + 32 + 32 + 32 + 32 * 4 + 4);
  assert.is(m.counts.buffers, 32 + 32 + 1);
  assert.match(m.sourceHash, /^[0-9a-f]{64}$/);
});

test('eval mode: no updates, no dropout, no seed input', () => {
  const g = compile(TINY, { mode: 'eval' }).graph;
  assert.equal(g.updates, {});
  assert.is(g.inputs.seed, undefined);
  assert.is(g.nodes.filter((n) => n.op === 'dropout').length, 0);
  assert.equal(shapeOf(g, 'logits'), [8, 4]);
});

test('loss.total is the weighted sum of the unweighted loss outputs', () => {
  const g = compile(TINY, { mode: 'eval' }).graph;
  const state: Record<string, number[]> = {};
  for (const s of Object.values(g.state))
    state[s.name] = values(
      s.shape.reduce((a, b) => a * b, 1),
      s.name.length * 7 + 1,
    );
  state['bn.running_var'] = state['bn.running_var'].map((v) => v * v + 0.5);
  const label = Array.from({ length: 32 }, (_, i) => (i % 4 === Math.floor(i / 4) % 4 ? 1 : 0));
  const ev = evaluate(g, { inputs: { x: values(128, 3), label }, state });
  close([ev.outputs['loss.total'][0]], [0.5 * ev.outputs['loss.xent'][0] + 1e-3 * ev.outputs['loss.l2'][0]], 1e-12, 'total');
  const w = state['encoder.weight'];
  close(ev.outputs['loss.l2'], [w.reduce((s, v) => s + v * v, 0)], 1e-12, 'l2');
});

test('--set overrides configs (ints, enums) and the shapes follow', () => {
  const r = compile(TINY, { set: { batch: '2', act: 'gelu', hidden: '6' } });
  assert.equal(shapeOf(r.graph, 'logits'), [2, 4]);
  assert.equal(r.graph.state['encoder.weight'].shape, [6, 16]);
  assert.is(r.model!.configs.act.value, 'gelu');
  assert.is(r.graph.nodes.filter((n) => n.op === 'gelu').length, 1);
  assert.is(r.model!.train.batch, 2);
});

test('the train section: reference defaults, constructors, dotted keys, --set train.*', () => {
  const base = compile(TINY).model!.train;
  assert.equal(base, {
    optimizer: { kind: 'adamw', lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-6, momentum: 0, nesterov: false },
    schedule: { kind: 'cosine', period: 'epoch', eta_min: 0, warmup_steps: 0 },
    batch: 8,
    accumulate: 16,
    epochs: 100,
    early_stopping: { patience: 10, monitor: 'val_total' },
    seed: 12345,
  });
  const text = TINY.replace(
    /\n}\n$/,
    `
  train {
    optimizer = sgd(lr: 0.1, momentum: 0.9)
    schedule = plateau(patience: 12, factor: 0.5)
    optimizer.weight_decay = 1e-4
    accumulate = 2
    early_stopping = none
  }
}
`,
  );
  const t = compile(text, { set: { 'train.optimizer.lr': '3e-4', 'train.epochs': '7', 'train.schedule.monitor': 'val_xent' } }).model!.train;
  assert.equal(t.optimizer, { kind: 'sgd', lr: 3e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-4, momentum: 0.9, nesterov: false });
  assert.equal(t.schedule, { kind: 'plateau', patience: 12, factor: 0.5, monitor: 'val_xent', min_lr: 0 });
  assert.is(t.accumulate, 2);
  assert.is(t.epochs, 7);
  assert.is(t.early_stopping, null);
  const c = compile(text, { set: { 'train.optimizer': 'adam(lr: 1e-3)', 'train.schedule': 'cosine(period: 500)' } }).model!.train;
  assert.equal(c.optimizer, { kind: 'adam', lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0, momentum: 0, nesterov: false });
  assert.equal(c.schedule, { kind: 'cosine', period: 500, eta_min: 0, warmup_steps: 0 });
});

const VARIANTS = `
import "std/nn.lovt"
model Base {
  config batch: int = 4
  config dim: int = 8
  config target: enum(smooth, uniform) = smooth
  input x: f32[batch, dim]
  enc = Linear(dim, dim)
  let h = enc(x)
  let scale = if target == smooth then 2.0 else 3.0
  loss a(weight: 0.75) = sum(h) * scale
  loss b(weight: 0.25) = sum(square(h))
  output feat = h
  freeze enc.bias
  train { accumulate = 4 }
}
model Child extends Base {
  config target = uniform
  enc = Linear(dim, dim, has_bias: false)
  loss b(weight: 0.5)
  loss c = sum(h) / batch
  drop output feat
  drop freeze
  train { optimizer.lr = 5e-5 }
}
model Grandchild extends Child {
  drop loss a, c
}
`;

test('variants: replace in place, weight-only loss override, drop, config override, train merge', () => {
  const base = compile(VARIANTS, { model: 'Base' });
  assert.equal(Object.keys(base.graph.outputs), ['loss.a', 'loss.b', 'loss.total', 'feat']);
  assert.is(base.graph.state['enc.bias'].trainable, false);
  assert.equal(base.model!.frozen, ['enc.bias']);

  const child = compile(VARIANTS, { model: 'Child' });
  const m = child.model!;
  assert.equal(m.extends, ['Base']);
  assert.equal(
    m.losses.map((l) => [l.name, l.weight]),
    [
      ['a', 0.75],
      ['b', 0.5],
      ['c', 1],
    ],
  );
  assert.equal(m.outputs, []);
  assert.equal(Object.keys(child.graph.state), ['enc.weight']);
  assert.is(m.configs.target.value, 'uniform');
  assert.equal(m.frozen, []);
  assert.is(m.train.accumulate, 4);
  assert.is(m.train.optimizer.lr, 5e-5);
  // the replaced config is seen by the parent's later items: scale = 3
  const x = values(32, 1);
  const w = values(64, 2);
  const ev = evaluate(child.graph, { inputs: { x }, state: { 'enc.weight': w } });
  let sumH = 0;
  for (let i = 0; i < 4; i++) for (let o = 0; o < 8; o++) for (let k = 0; k < 8; k++) sumH += x[i * 8 + k] * w[o * 8 + k];
  close(ev.outputs['loss.a'], [3 * sumH], 1e-12, 'loss.a');

  const gc = compile(VARIANTS, { model: 'Grandchild' });
  assert.equal(
    gc.model!.losses.map((l) => l.name),
    ['b'],
  );
  assert.equal(gc.model!.extends, ['Base', 'Child']);
});

test('a 120k-statement model with a variant flattens and compiles (linear flattening; bench/frontend.ts times it)', () => {
  const groups = 12_000;
  const r = compile(largeModelSource(groups * 10), { model: 'Child' });
  const m = r.model!;
  assert.equal(m.extends, ['Big']);
  // even losses dropped, odd ones re-weighted in place (order kept)
  assert.equal(m.losses.length, groups / 2);
  assert.equal(
    m.losses.slice(0, 2).map((l) => [l.name, l.weight]),
    [
      ['l1', 2],
      ['l3', 2],
    ],
  );
  assert.is(m.losses[groups / 2 - 1].name, `l${groups - 1}`);
  assert.is(m.outputs.length, groups);
  assert.is(m.configs[`c${groups - 1}`].value, groups);
  assert.is(m.frozen.length, groups);
  assert.equal(Object.keys(r.graph.state).length, groups);
  // loss.l1 = sum(x * c1) with c1 overridden to 2
  const ev = evaluate(r.graph, { inputs: { x: [1, 2, 3, 4] }, state: Object.fromEntries(Object.keys(r.graph.state).map((k) => [k, [0, 0]])) });
  close(ev.outputs['loss.l1'], [20], 1e-12, 'loss.l1');
});

test('errors stop after 50: 60k drops of unknown losses against 60k losses', () => {
  const lines = ['model A {', '  input x: f32[4]'];
  for (let i = 0; i < 60_000; i++) lines.push(`  loss l${i} = sum(x)`);
  lines.push('}', 'model B extends A {');
  for (let i = 0; i < 60_000; i++) lines.push(`  drop loss m${i}x`);
  lines.push('}');
  const r = compileModel({ text: lines.join('\n'), path: PATH }, { model: 'B' });
  assert.is(r.ok, false);
  assert.is(r.diagnostics.length, 50);
  assert.is(r.diagnostics[0].message, "cannot drop loss 'm0x': no such loss");
});

test('fn signatures: dims bind, expressions check, results are checked; tuples', () => {
  const r = compile(`
fn merge(x: f32[B, T, D]) -> f32[B * T, D] {
  return reshape(x, [B * T, D])
}
fn split_heads(x: f32[B, T, D], heads: int) -> f32[B, heads, T, D / heads] {
  assert(D % heads == 0, "dim must be divisible by heads")
  return transpose(reshape(x, [B, T, heads, D / heads]), [0, 2, 1, 3])
}
fn two(x: f32[N, M]) -> (f32[N], f32[M]) { return (sum(x, axes: 1), sum(x, axes: 0)) }
model M {
  input x: f32[2, 3, 8]
  let (r, c) = two(merge(x))
  output heads = split_heads(x, 4)
  output rows = r
  output cols = c
  output last = slice(x, axis: -1, start: -2)
  output flat = reshape(x, [-1, 4])
}`);
  assert.equal(shapeOf(r.graph, 'heads'), [2, 4, 3, 2]);
  assert.equal(shapeOf(r.graph, 'rows'), [6]);
  assert.equal(shapeOf(r.graph, 'cols'), [8]);
  assert.equal(shapeOf(r.graph, 'last'), [2, 3, 2]);
  assert.equal(shapeOf(r.graph, 'flat'), [12, 4]);
});

test('compile-time values: arithmetic, lists, enums through conditionals, loops, member access', () => {
  const r = compile(`
block Info(d: int) {
  let out_dim = d * 2
  let ratio = d / 4
  let parts = [1] * 3 + range(2, 4)
}
model M {
  config size: enum(tiny, big) = if 2 > 1 then tiny else big
  config n: int = 7 % 4
  info = Info(10)
  input x: f32[info.out_dim, info.parts[4]]
  output y = full([len(info.parts), int(info.ratio * 2)], 1.5)
}`);
  assert.equal(r.model!.configs.size.value, 'tiny');
  assert.equal(r.model!.configs.n.value, 3);
  assert.equal(r.model!.inputs.x.shape, [20, 3]);
  assert.equal(shapeOf(r.graph, 'y'), [5, 5]);
});

test('compile-time math on numbers is the float64 math of the reference interpreter (gelu, erf, sign of -0)', () => {
  const r = compile(`
model M {
  config g: float = gelu(1.0)
  config e: float = erf(0.5)
  config s: float = sign(-0.0)
  config p: int = pow(2, 10)
  config m: float = maximum(-0.5, 0.25)
  output y = full([1], 1.0)
}`);
  const c = r.model!.configs;
  // Tabulated values (as in reference.test.ts); sign(-0) is 0 like the reference and WGSL, not JavaScript's -0.
  close([Number(c.g.value), Number(c.e.value)], [0.8413447460685429, 0.5204998778130465], 1e-15, 'gelu(1), erf(0.5)');
  assert.ok(Object.is(c.s.value, 0), `sign(-0.0) = ${Object.is(c.s.value, -0) ? '-0' : c.s.value}`);
  assert.is(c.p.value, 1024);
  assert.is(c.m.value, 0.25);
});

test('log_softmax(x, axis:) is the log_softmax op along the normalised axis', () => {
  const r = compile(`
model M {
  input x: f32[2, 5]
  output y = log_softmax(x)
  output z = log_softmax(x, axis: 0)
}`);
  const y = r.graph.nodes[r.graph.outputs.y];
  const z = r.graph.nodes[r.graph.outputs.z];
  assert.equal([y.op, y.op === 'log_softmax' && y.attrs.axis, z.op === 'log_softmax' && z.attrs.axis], ['log_softmax', 1, 0]);
  const x = values(10, 3);
  const out = evaluate(r.graph, { inputs: { x } }).outputs;
  // Each row of e^y sums to 1 (axis 1), each column of e^z (axis 0).
  close(
    [0, 1].map((i) => x.slice(5 * i, 5 * i + 5).reduce((s, _, j) => s + Math.exp(out.y[5 * i + j]), 0)),
    [1, 1],
    1e-12,
    'rows',
  );
  close(
    [0, 1, 2, 3, 4].map((j) => Math.exp(out.z[j]) + Math.exp(out.z[5 + j])),
    [1, 1, 1, 1, 1],
    1e-12,
    'columns',
  );
});

test('PyTorch names: indexed sub-modules, nested blocks, sub-module names that are statement words', () => {
  const r = compile(`
import "std/nn.lovt"
block MultiheadAttention(embed_dim: int, num_heads: int) {
  param in_proj_weight: f32[3 * embed_dim, embed_dim] = normal(0, 0.02)
  param in_proj_bias: f32[3 * embed_dim] = zeros()
  out_proj = Linear(embed_dim, embed_dim)
}
block Attention(d: int) {
  self = MultiheadAttention(d, 2)
  output = Linear(d, d)
}
block Trunk(d: int) {
  for i in 0..2 { layer[i] = Attention(d) }
  downsample[0] = Conv2d(d, d, kernel_size: 1, has_bias: false)
  downsample[1] = BatchNorm(d)
}
model M {
  trunk = Trunk(4)
}`);
  assert.equal(Object.keys(r.graph.state), [
    'trunk.layer.0.self.in_proj_weight',
    'trunk.layer.0.self.in_proj_bias',
    'trunk.layer.0.self.out_proj.weight',
    'trunk.layer.0.self.out_proj.bias',
    'trunk.layer.0.output.weight',
    'trunk.layer.0.output.bias',
    'trunk.layer.1.self.in_proj_weight',
    'trunk.layer.1.self.in_proj_bias',
    'trunk.layer.1.self.out_proj.weight',
    'trunk.layer.1.self.out_proj.bias',
    'trunk.layer.1.output.weight',
    'trunk.layer.1.output.bias',
    'trunk.downsample.0.weight',
    'trunk.downsample.1.weight',
    'trunk.downsample.1.bias',
    'trunk.downsample.1.running_mean',
    'trunk.downsample.1.running_var',
    'trunk.downsample.1.num_batches_tracked',
  ]);
});

test('freeze: dotted prefixes with index ranges; frozen params stay params in the table', () => {
  const r = compile(`
import "std/nn.lovt"
block Enc() {
  emb = Linear(2, 2)
  for i in 0..4 { layer[i] = Linear(2, 2) }
}
model M {
  enc = Enc()
  freeze enc.emb, enc.layer[0..2], enc.layer[3].bias
}`);
  const trainable = Object.fromEntries(Object.values(r.graph.state).map((s) => [s.name, s.trainable]));
  assert.equal(trainable, {
    'enc.emb.weight': false,
    'enc.emb.bias': false,
    'enc.layer.0.weight': false,
    'enc.layer.0.bias': false,
    'enc.layer.1.weight': false,
    'enc.layer.1.bias': false,
    'enc.layer.2.weight': true,
    'enc.layer.2.bias': true,
    'enc.layer.3.weight': true,
    'enc.layer.3.bias': false,
  });
  assert.equal(r.model!.frozen, ['enc.emb', 'enc.layer.0', 'enc.layer.1', 'enc.layer.3.bias']);
  const p = r.model!.params.find((x) => x.name === 'enc.emb.weight')!;
  assert.equal([p.kind, p.trainable], ['param', false]);
  assert.equal([r.model!.counts.params, r.model!.counts.trainable], [30, 10]);
});

test('state keys (as): nn.Sequential indices, a name that is a reserved word, code names stay', () => {
  const r = compile(`
import "std/nn.lovt"
block Wrapped(d: int) {
  inner = Linear(d, d) as "model"
  fn forward(x: f32[N, d]) -> f32[N, d] { return inner(x) }
}
block Seq(d: int, n: int) {
  param scale: f32[d] = ones()
  for i in 0..n { step[i] = Linear(d, d) }
  last = Wrapped(d) as 2 * n + 1
  fn forward(x: f32[N, d]) -> f32[N, d] { return last(step[n - 1](x)) * scale }
}
model M {
  config n: int = 2
  input x: f32[3, 4]
  net = Seq(4, n) as "model"
  output y = net(x)
  output w = net.last.inner.weight
  freeze model[5].model.bias
}`);
  assert.equal(Object.keys(r.graph.state), [
    'model.scale',
    'model.step.0.weight',
    'model.step.0.bias',
    'model.step.1.weight',
    'model.step.1.bias',
    'model.5.model.weight',
    'model.5.model.bias',
  ]);
  assert.equal(shapeOf(r.graph, 'w'), [4, 4]);
  const w = r.graph.nodes[r.graph.outputs.w];
  assert.is(w.op === 'param' ? w.attrs.name : w.op, 'model.5.model.weight');
  assert.is(r.graph.state['model.5.model.bias'].trainable, false);
  assert.is(r.graph.state['model.5.model.weight'].trainable, true);
  assert.equal(r.model!.frozen, ['model.5.model.bias']);
});

test('freeze ranges and indices are compile-time expressions; an empty range freezes nothing', () => {
  const text = `
import "std/nn.lovt"
block Enc(layers: int) {
  emb = Linear(2, 2)
  for i in 0..layers { layer[i] = Linear(2, 2) }
}
model M {
  config layers: int = 4
  config frozen_layers: int = 2
  enc = Enc(layers)
  let last = layers - 1
  freeze enc.layer[0..frozen_layers], enc.layer[last].bias
}`;
  const trainable = (r: CompileResult) =>
    Object.values(r.graph!.state)
      .filter((s) => !s.trainable)
      .map((s) => s.name);
  const r = compile(text);
  assert.equal(trainable(r), ['enc.layer.0.weight', 'enc.layer.0.bias', 'enc.layer.1.weight', 'enc.layer.1.bias', 'enc.layer.3.bias']);
  assert.equal(r.model!.frozen, ['enc.layer.0', 'enc.layer.1', 'enc.layer.3.bias']);
  // frozen params are non-trainable leaves (op buffer) and still params in the table
  const id = r.graph.state['enc.layer.0.weight'].node;
  assert.is(r.graph.nodes[id].op, 'buffer');
  assert.is(r.graph.nodes[r.graph.state['enc.layer.2.weight'].node].op, 'param');
  assert.equal(r.model!.params.find((p) => p.name === 'enc.layer.0.weight')!.kind, 'param');
  const none = compile(text, { set: { frozen_layers: '0', layers: '1' } });
  assert.equal(trainable(none), ['enc.layer.0.bias']);
  assert.equal(none.model!.frozen, ['enc.layer.0.bias']);
});

// ------------------------------------------------------------- numerics

test('Linear and LayerNorm match float64 loops', () => {
  const r = compile(`
import "std/nn.lovt"
model M {
  input x: f32[3, 5]
  lin = Linear(5, 4)
  ln = LayerNorm(4, eps: 1e-5)
  output y = ln(lin(x))
}`);
  const x = values(15, 11);
  const W = values(20, 12);
  const b = values(4, 13);
  const gamma = values(4, 14);
  const beta = values(4, 15);
  const ev = evaluate(r.graph, { inputs: { x }, state: { 'lin.weight': W, 'lin.bias': b, 'ln.weight': gamma, 'ln.bias': beta } });
  const expected: number[] = [];
  for (let i = 0; i < 3; i++) {
    const row = [0, 1, 2, 3].map((o) => b[o] + [0, 1, 2, 3, 4].reduce((s, k) => s + x[i * 5 + k] * W[o * 5 + k], 0));
    const mean = row.reduce((s, v) => s + v, 0) / 4;
    const v = row.reduce((s, q) => s + (q - mean) ** 2, 0) / 4;
    row.forEach((q, o) => expected.push(((q - mean) / Math.sqrt(v + 1e-5)) * gamma[o] + beta[o]));
  }
  close(ev.outputs.y, expected, 1e-10, 'y');
});

test('BatchNorm: batch statistics and running-stat updates in train mode, running stats in eval mode', () => {
  const text = `
import "std/nn.lovt"
model M {
  input x: f32[4, 3, 2, 2]
  bn = BatchNorm(3, momentum: 0.1)
  output y = bn(x)
}`;
  const x = values(48, 21);
  const state = {
    'bn.weight': values(3, 22),
    'bn.bias': values(3, 23),
    'bn.running_mean': values(3, 24),
    'bn.running_var': values(3, 25).map((v) => v * v + 0.5),
    'bn.num_batches_tracked': [5],
  };
  const at = (n: number, c: number, p: number) => x[n * 12 + c * 4 + p];
  const mean = [0, 1, 2].map((c) => [0, 1, 2, 3].reduce((s, n) => s + [0, 1, 2, 3].reduce((t, p) => t + at(n, c, p), 0), 0) / 16);
  const variance = [0, 1, 2].map((c) => [0, 1, 2, 3].reduce((s, n) => s + [0, 1, 2, 3].reduce((t, p) => t + (at(n, c, p) - mean[c]) ** 2, 0), 0) / 16);

  const train = compile(text).graph;
  const ev = evaluate(train, { inputs: { x }, state });
  const yExpected = x.map((v, i) => {
    const c = Math.floor(i / 4) % 3;
    return ((v - mean[c]) / Math.sqrt(variance[c] + 1e-5)) * state['bn.weight'][c] + state['bn.bias'][c];
  });
  close(ev.outputs.y, yExpected, 1e-10, 'train y');
  close(
    ev.updates['bn.running_mean'],
    [0, 1, 2].map((c) => 0.9 * state['bn.running_mean'][c] + 0.1 * mean[c]),
    1e-12,
    'running_mean',
  );
  close(
    ev.updates['bn.running_var'],
    [0, 1, 2].map((c) => 0.9 * state['bn.running_var'][c] + 0.1 * variance[c] * (16 / 15)),
    1e-12,
    'running_var',
  );
  close(ev.updates['bn.num_batches_tracked'], [6], 0, 'num_batches_tracked');

  const evalG = compile(text, { mode: 'eval' }).graph;
  const ev2 = evaluate(evalG, { inputs: { x }, state });
  const yEval = x.map((v, i) => {
    const c = Math.floor(i / 4) % 3;
    return ((v - state['bn.running_mean'][c]) / Math.sqrt(state['bn.running_var'][c] + 1e-5)) * state['bn.weight'][c] + state['bn.bias'][c];
  });
  close(ev2.outputs.y, yEval, 1e-10, 'eval y');
});

test('a BatchNorm applied twice in one step updates its running stats twice, in order', () => {
  const r = compile(`
import "std/nn.lovt"
model M {
  input a: f32[4, 2]
  input b: f32[4, 2]
  bn = BatchNorm(2)
  output ya = bn(a)
  output yb = bn(b)
}`);
  const a = values(8, 31);
  const b = values(8, 32);
  const ev = evaluate(r.graph, {
    inputs: { a, b },
    state: { 'bn.weight': [1, 1], 'bn.bias': [0, 0], 'bn.running_mean': [0, 0], 'bn.running_var': [1, 1], 'bn.num_batches_tracked': [0] },
  });
  const colMean = (x: number[], c: number) => [0, 1, 2, 3].reduce((s, n) => s + x[n * 2 + c], 0) / 4;
  const expected = [0, 1].map((c) => 0.9 * (0.1 * colMean(a, c)) + 0.1 * colMean(b, c));
  close(ev.updates['bn.running_mean'], expected, 1e-12, 'running_mean after two calls');
  close(ev.updates['bn.num_batches_tracked'], [2], 0, 'num_batches_tracked');
});

test('Conv2d (with bias, stride, padding) and Embedding match float64 loops', () => {
  const r = compile(`
import "std/nn.lovt"
model M {
  input x: f32[1, 2, 4, 4]
  input ids: i32[3]
  conv = Conv2d(2, 3, kernel_size: 3, stride: 2, padding: 1)
  emb = Embedding(5, 2)
  output y = conv(x)
  output e = emb(ids)
}`);
  assert.equal(shapeOf(r.graph, 'y'), [1, 3, 2, 2]);
  const x = values(32, 41);
  const w = values(54, 42);
  const b = values(3, 43);
  const table = values(10, 44);
  const ev = evaluate(r.graph, { inputs: { x, ids: [4, 0, 2] }, state: { 'conv.weight': w, 'conv.bias': b, 'emb.weight': table } });
  const y: number[] = [];
  for (let o = 0; o < 3; o++)
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < 2; j++) {
        let s = b[o];
        for (let c = 0; c < 2; c++)
          for (let ki = 0; ki < 3; ki++)
            for (let kj = 0; kj < 3; kj++) {
              const ii = i * 2 - 1 + ki;
              const jj = j * 2 - 1 + kj;
              if (ii >= 0 && ii < 4 && jj >= 0 && jj < 4) s += x[c * 16 + ii * 4 + jj] * w[((o * 2 + c) * 3 + ki) * 3 + kj];
            }
        y.push(s);
      }
  close(ev.outputs.y, y, 1e-10, 'conv');
  close(ev.outputs.e, [table[8], table[9], table[0], table[1], table[4], table[5]], 0, 'embedding');
});

test('conv_transpose2d matches its scatter form; finite differences of its gradients in x and w', () => {
  CONV_TRANSPOSE_CASES.forEach((c, ci) => {
    const graph = convTransposeProbe(c);
    const what = `case ${ci} ${JSON.stringify(c)}`;
    const x = values(c.N * c.C * c.H * c.W, 50 + ci);
    const w = values(c.C * (c.O / c.groups) * c.k[0] * c.k[1], 60 + ci);
    const want = convTransposeScatter(c, x, w);
    assert.equal(shapeOf(graph, 'y'), want.shape, what);
    const r = values(want.y.length, 70 + ci);
    const ev = evaluate(graph, { inputs: { x, w, r } });
    close(ev.outputs.y, want.y, 1e-12, `${what} y`);
    // L = <y, r> is linear in x and in w: central differences are exact up to rounding.
    const h = 1e-3;
    const lossAt = (xv: number[], wv: number[]) => evaluate(graph, { inputs: { x: xv, w: wv, r } }).outputs.loss[0];
    for (const [name, arr] of [
      ['x', x],
      ['w', w],
    ] as const) {
      const fd = arr.map((v, i) => {
        const up = arr.slice();
        const down = arr.slice();
        up[i] = v + h;
        down[i] = v - h;
        return name === 'x' ? (lossAt(up, w) - lossAt(down, w)) / (2 * h) : (lossAt(x, up) - lossAt(x, down)) / (2 * h);
      });
      close(ev.outputs[`grad.${name}`], fd, 1e-8, `${what} grad.${name}`);
    }
  });
});

test("ConvTranspose2d: PyTorch's names, weight layout and default init (fan_in from weight dim 1); forward = scatter + bias", () => {
  const r = compile(`
import "std/nn.lovt"
model M {
  input x: f32[2, 4, 3, 3]
  up = ConvTranspose2d(4, 6, kernel_size: 3, stride: 2, padding: 1, output_padding: 1, groups: 2)
  output y = up(x)
}`);
  const state = Object.values(r.graph.state);
  assert.equal(
    state.map((s) => [s.name, s.shape]),
    [
      ['up.weight', [4, 3, 3, 3]],
      ['up.bias', [6]],
    ],
  );
  // torch.nn.ConvTranspose2d: kaiming_uniform(a = √5) and bias ±1/√fan_in with fan_in = weight.size(1)·k² = 3·9 = 27.
  assert.equal(state[0].init, { kind: 'kaiming_uniform', mode: 'fan_in', gain: Math.sqrt(1 / 3) });
  assert.equal(fans(state[0].shape).fanIn, 27);
  assert.equal(state[1].init, { kind: 'uniform', low: -1 / Math.sqrt(27), high: 1 / Math.sqrt(27) });
  const c = {
    N: 2,
    C: 4,
    H: 3,
    W: 3,
    O: 6,
    k: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
    outputPadding: [1, 1],
    dilation: [1, 1],
    groups: 2,
  } satisfies ConvTransposeCase;
  const x = values(72, 81);
  const w = values(108, 82);
  const bias = values(6, 83);
  const { shape, y } = convTransposeScatter(c, x, w);
  assert.equal(shapeOf(r.graph, 'y'), [2, 6, 6, 6]);
  const plane = shape[2] * shape[3];
  close(
    evaluate(r.graph, { inputs: { x }, state: { 'up.weight': w, 'up.bias': bias } }).outputs.y,
    y.map((v, i) => v + bias[Math.floor(i / plane) % 6]),
    1e-12,
    'ConvTranspose2d',
  );
});

// ------------------------------------------------------------- docs

test('the examples of docs/language.md compile', () => {
  const doc = readFileSync('docs/language.md', 'utf8');
  const blocks = [...doc.matchAll(/```\n([\s\S]*?)```/g)].map((m) => m[1]);
  const fns = blocks.find((b) => b.startsWith('fn l2_normalize'))!;
  const model = blocks.find((b) => b.includes('model TinyClassifier'))!;
  const r = compile(
    `${fns}\n${model.replace('\n}\n', `\n  output n = l2_normalize(logits)\n  output heads = split_heads(reshape(logits, [2, 4, 4]), 2)\n  output nce = infonce(matmul(logits, logits, transpose_b: true), 1)\n}\n`)}`,
  );
  assert.equal(shapeOf(r.graph, 'heads'), [2, 2, 4, 2]);
  assert.is(r.graph.state['encoder.weight'].trainable, false);
  const variants = blocks.find((b) => b.includes('model LoVT_Small extends LoVT'))!;
  assert.ok(variants, 'the variants example is present');
});

test('the state-key example of docs/language.md gives nn.Sequential state names', () => {
  const doc = readFileSync('docs/language.md', 'utf8');
  const head = [...doc.matchAll(/```\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => b.startsWith('block MLPHead'));
  assert.ok(head, 'the MLPHead example is present');
  const r = compile(
    `import "std/nn.lovt"\n${head}\nmodel M {\n  input x: f32[5, 4]\n  head = MLPHead(4, 8, 2)\n  plain = MLPHead(4, 8, 2, batch_norm: false)\n  output y = head(x) + plain(x)\n}\n`,
  );
  assert.equal(
    Object.entries(r.graph.state).map(([n, s]) => `${n} [${s.shape}]`),
    [
      'head.0.weight [8,4]',
      'head.0.bias [8]',
      'head.1.weight [8]',
      'head.1.bias [8]',
      'head.1.running_mean [8]',
      'head.1.running_var [8]',
      'head.1.num_batches_tracked []',
      'head.3.weight [2,8]',
      'head.3.bias [2]',
      'plain.0.weight [8,4]',
      'plain.0.bias [8]',
      'plain.2.weight [2,8]',
      'plain.2.bias [2]',
    ],
  );
  // numerics: Linear → BatchNorm (train mode, batch statistics) → ReLU → Linear, against float64 loops
  const x = values(20, 51);
  const state: Record<string, number[]> = {};
  for (const [n, s] of Object.entries(r.graph.state))
    state[n] = values(
      s.shape.reduce((a, b) => a * b, 1),
      n.length * 7 + 3,
    );
  state['head.1.running_var'] = state['head.1.running_var'].map((v) => v * v + 0.5);
  state['head.1.num_batches_tracked'] = [0];
  const linear = (inp: number[], rows: number, din: number, dout: number, w: number[], b: number[]) =>
    Array.from(
      { length: rows * dout },
      (_, k) => b[k % dout] + Array.from({ length: din }, (_, j) => inp[Math.floor(k / dout) * din + j] * w[(k % dout) * din + j]).reduce((p, q) => p + q, 0),
    );
  const relu = (v: number[]) => v.map((q) => Math.max(0, q));
  let h = linear(x, 5, 4, 8, state['head.0.weight'], state['head.0.bias']);
  const mean = [...Array(8).keys()].map((c) => [0, 1, 2, 3, 4].reduce((p, i) => p + h[i * 8 + c], 0) / 5);
  const variance = [...Array(8).keys()].map((c) => [0, 1, 2, 3, 4].reduce((p, i) => p + (h[i * 8 + c] - mean[c]) ** 2, 0) / 5);
  h = h.map((v, k) => ((v - mean[k % 8]) / Math.sqrt(variance[k % 8] + 1e-5)) * state['head.1.weight'][k % 8] + state['head.1.bias'][k % 8]);
  const yHead = linear(relu(h), 5, 8, 2, state['head.3.weight'], state['head.3.bias']);
  const yPlain = linear(relu(linear(x, 5, 4, 8, state['plain.0.weight'], state['plain.0.bias'])), 5, 8, 2, state['plain.2.weight'], state['plain.2.bias']);
  const ev = evaluate(r.graph, { inputs: { x }, state });
  close(
    ev.outputs.y,
    yHead.map((v, i) => v + yPlain[i]),
    1e-10,
    'MLPHead',
  );
});

// ------------------------------------------------------------- the real models

test('the full LoVT (ResNet-50 + BERT-base) compiles in both modes with torchvision / HF names', () => {
  if (!existsSync('models/lovt.lovt')) return;
  for (const mode of ['train', 'eval'] as const) {
    const r = compileModel({ path: 'models/lovt.lovt' }, { mode });
    assert.ok(r.ok, renderDiagnostics(r.diagnostics));
    const s = r.graph!.state;
    for (const name of [
      'image_encoder.conv1.weight',
      'image_encoder.layer1.0.downsample.0.weight',
      'image_encoder.layer4.2.bn3.running_var',
      'image_encoder.layer4.2.bn3.num_batches_tracked',
      'report_encoder.embeddings.word_embeddings.weight',
      'report_encoder.embeddings.LayerNorm.weight',
      'report_encoder.encoder.layer.11.attention.self.query.weight',
      'report_encoder.encoder.layer.11.attention.output.dense.bias',
      'report_encoder.encoder.layer.11.output.LayerNorm.bias',
    ])
      assert.ok(s[name], `missing ${name}`);
    assert.is(s['report_encoder.embeddings.word_embeddings.weight'].trainable, false);
    assert.is(s['report_encoder.encoder.layer.5.output.dense.weight'].trainable, false);
    assert.is(s['report_encoder.encoder.layer.6.output.dense.weight'].trainable, true);
    assert.is(s['image_encoder.conv1.weight'].trainable, true);
    assert.is(Object.keys(r.graph!.updates).length > 0, mode === 'train');
  }
});

test.run();
