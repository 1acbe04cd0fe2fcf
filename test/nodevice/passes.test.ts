// The graph passes: each removes what it should and preserves the reference
// interpreter's outputs and updates exactly, on hand-built and random graphs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type Graph, type OpName, numel } from '../../compiler/ir.ts';
import { broadcastShapes, validateGraph } from '../../compiler/ops/index.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { optimize, constantFold, commonSubexpressionElimination, deadCodeElimination } from '../../compiler/passes/index.ts';
import { evaluate, type Feeds } from '../../compiler/reference.ts';
import { Rng } from '../../compiler/random.ts';

function ops(g: Graph): OpName[] {
  return g.nodes.map((n) => n.op);
}

function count(g: Graph, op: OpName): number {
  return g.nodes.filter((n) => n.op === op).length;
}

/** Outputs and updates of two graphs agree element for element (NaN equals NaN). */
function sameResults(a: Graph, b: Graph, feeds: Feeds, what: string) {
  const ra = evaluate(a, feeds);
  const rb = evaluate(b, feeds);
  for (const kind of ['outputs', 'updates'] as const) {
    assert.equal(Object.keys(rb[kind]).sort(), Object.keys(ra[kind]).sort(), `${what}: ${kind} names`);
    for (const [name, va] of Object.entries(ra[kind])) {
      const vb = rb[kind][name];
      assert.is(vb.length, va.length, `${what}: ${name} length`);
      for (let i = 0; i < va.length; i++)
        if (!(va[i] === vb[i] || (Number.isNaN(va[i]) && Number.isNaN(vb[i])))) assert.unreachable(`${what}: ${kind} ${name}[${i}] was ${va[i]}, now ${vb[i]}`);
    }
  }
}

test('dce drops unused nodes and keeps every interface leaf', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [3]);
  b.input('unused_input', [2]);
  b.state('unused.param', [4], { kind: 'zeros' }, true);
  b.emit('exp', [b.emit('tanh', [x])]); // dead
  b.output('y', b.neg(x));
  const g = deadCodeElimination(b.graph);
  validateGraph(g);
  assert.equal(ops(g), ['input', 'input', 'param', 'neg']);
  assert.equal(Object.keys(g.inputs).sort(), ['unused_input', 'x']);
  assert.ok(g.state['unused.param']);
  sameResults(b.graph, g, { inputs: { x: [1, 2, 3], unused_input: [0, 0] }, state: { 'unused.param': [0, 0, 0, 0] } }, 'dce');
});

test('cse merges identical pure nodes, commutes add/mul, never merges leaves or dropouts with different salts', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [5]);
  const y = b.input('y', [5]); // same shape as x: must stay distinct
  const p = b.state('p', [5], { kind: 'zeros' }, true);
  const q = b.state('q', [5], { kind: 'zeros' }, true);
  const seed = b.input('seed', [], 'i32');
  const e1 = b.emit('exp', [x]);
  const e2 = b.emit('exp', [x]);
  b.output('s', b.add(b.add(e1, y), b.add(y, e2)));
  b.output('pq', b.mul(p, q));
  b.output('qp', b.mul(q, p));
  b.output('d1', b.emit('dropout', [x, seed], { p: 0.5, salt: 1 }));
  b.output('d1b', b.emit('dropout', [x, seed], { salt: 1, p: 0.5 }));
  b.output('d2', b.emit('dropout', [x, seed], { p: 0.5, salt: 2 }));
  const g = deadCodeElimination(commonSubexpressionElimination(b.graph));
  validateGraph(g);
  assert.is(count(g, 'input'), 3);
  assert.is(count(g, 'param'), 2);
  assert.is(count(g, 'exp'), 1);
  assert.is(count(g, 'add'), 2); // e + y once, then (e + y) + (e + y)
  assert.is(count(g, 'mul'), 1);
  assert.is(count(g, 'dropout'), 2);
  assert.is(g.outputs.d1, g.outputs.d1b);
  assert.is.not(g.outputs.d1, g.outputs.d2);
  const feeds = { inputs: { x: [1, 2, 3, 4, 5], y: [5, 4, 3, 2, 1], seed: [9] }, state: { p: [1, 2, 3, 4, 5], q: [2, 2, 2, 2, 2] } };
  sameResults(b.graph, g, feeds, 'cse');
});

test('fold evaluates constant sub-graphs and removes identities', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [2, 3]);
  const six = b.mul(b.full(2, [2, 3]), b.full(3, [2, 3]));
  const table = b.emit('tensor', [], { data: [1, 2, 3, 4, 5, 6] }, { shape: [2, 3] });
  const colSums = b.sum(table, [0]);
  b.output('a', b.add(b.mul(x, b.full(1, [])), b.scalar(0))); // x
  b.output('b', b.mul(x, six));
  b.output('c', b.add(x, colSums));
  b.output('d', b.transpose(b.transpose(x, [1, 0]), [1, 0])); // x
  b.output('e', b.reshape(b.reshape(x, [3, 2]), [6]));
  b.output('f', b.emit('cast', [x], { to: 'f32' }));
  const big = b.emit('iota', [], { axis: 1 }, { shape: [80, 80] }); // 6400 elements, not uniform: stays a runtime op
  b.output('g', b.sum(b.add(big, b.scalar(1)), [0, 1]));
  const g = optimize(b.graph);
  assert.is(g.outputs.a, g.inputs.x);
  assert.is(g.outputs.d, g.inputs.x);
  assert.is(g.outputs.f, g.inputs.x);
  const bIn = g.nodes[g.outputs.b].inputs.map((i) => g.nodes[i]);
  assert.ok(
    bIn.some((n) => n.op === 'full' && n.attrs.value === 6),
    'full(2) * full(3) folds to full(6)',
  );
  const cIn = g.nodes[g.outputs.c].inputs.map((i) => g.nodes[i]);
  assert.ok(
    cIn.some((n) => n.op === 'tensor' && n.attrs.data.join() === '5,7,9'),
    'sum of a constant folds',
  );
  assert.is(count(g, 'reshape'), 1);
  assert.is(count(g, 'transpose'), 0);
  assert.is(count(g, 'iota'), 1);
  sameResults(b.graph, g, { inputs: { x: [1, -2, 3, 0.5, 7, -1] }, state: {} }, 'fold');
});

/** A random graph of elementwise, broadcasting, reduction, layout and matmul ops with planted redundancy. */
function randomGraph(seed: number): { graph: Graph; feeds: Feeds } {
  const r = new Rng(seed);
  const pickIndex = (n: number) => Math.floor(r.uniform() * n);
  const b = new GraphBuilder();
  const pool: number[] = [
    b.input('x', [3, 5]),
    b.input('v', [5]),
    b.state('w', [3, 5], { kind: 'zeros' }, true),
    b.state('m', [5, 5], { kind: 'zeros' }, false),
  ];
  pool.push(b.full(1, []), b.full(0, [5]), b.full(2, [3, 5]), b.emit('tensor', [], { data: [0.5, -1, 2, 0, 3] }, { shape: [5] }));
  const unary: OpName[] = ['tanh', 'sigmoid', 'neg', 'abs', 'exp', 'relu'];
  const binary: OpName[] = ['add', 'sub', 'mul', 'maximum', 'minimum'];
  const compatible = (a: number, c: number) => {
    try {
      broadcastShapes(b.node(a).shape, b.node(c).shape);
      return true;
    } catch {
      return false;
    }
  };
  for (let step = 0; step < 40; step++) {
    const a = pool[pickIndex(pool.length)];
    const shape = b.node(a).shape;
    const kind = pickIndex(8);
    let id: number;
    if (kind <= 1) id = b.emit(unary[pickIndex(unary.length)], [a]);
    else if (kind <= 3) {
      const c = pool[pickIndex(pool.length)];
      if (!compatible(a, c)) continue;
      id = b.emit(binary[pickIndex(binary.length)], kind === 2 ? [a, c] : [c, a]);
    } else if (kind === 4 && shape.length > 0) id = b.emit(pickIndex(2) ? 'sum' : 'max', [a], { axes: [pickIndex(shape.length)], keepdims: !!pickIndex(2) });
    else if (kind === 5 && shape.length === 2) id = b.transpose(b.transpose(a, [1, 0]), [1, 0]);
    else if (kind === 6 && numel(shape) === 15) id = b.reshape(b.reshape(a, [15]), [3, 5]);
    else if (kind === 7) {
      const dup = b.node(pool[pickIndex(pool.length)]); // re-emit an existing op: work for CSE
      if (dup.inputs.length === 0) continue;
      id = b.emit(dup.op, dup.inputs, dup.attrs);
    } else continue;
    pool.push(id);
  }
  const tail = pool.slice(-6);
  tail.forEach((id, k) => b.output(`out${k}`, id));
  const w35 = pool.filter((id) => b.node(id).shape.join() === '3,5');
  b.update('w', w35[w35.length - 1]);
  const feeds = {
    inputs: { x: Array.from({ length: 15 }, () => r.normal()), v: Array.from({ length: 5 }, () => r.normal()) },
    state: { w: Array.from({ length: 15 }, () => r.normal()), m: Array.from({ length: 25 }, () => r.normal()) },
  };
  return { graph: b.graph, feeds };
}

test('every pass and the pipeline preserve outputs and updates on random graphs', () => {
  let removed = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const { graph, feeds } = randomGraph(seed);
    validateGraph(graph);
    for (const [name, pass] of [
      ['fold', constantFold],
      ['cse', commonSubexpressionElimination],
      ['dce', deadCodeElimination],
    ] as const) {
      const g = pass(graph);
      validateGraph(g);
      sameResults(graph, g, feeds, `${name} on random graph ${seed}`);
    }
    const opt = optimize(graph);
    sameResults(graph, opt, feeds, `optimize on random graph ${seed}`);
    assert.ok(opt.nodes.length <= graph.nodes.length);
    removed += graph.nodes.length - opt.nodes.length;
  }
  assert.ok(removed > 100, `only ${removed} nodes removed over 40 graphs`);
});

test('optimize shrinks an autodiff graph without changing its results', () => {
  const b = new GraphBuilder();
  const x = b.input('x', [4, 3]);
  const w = b.state('w', [3, 5], { kind: 'zeros' }, true);
  const bias = b.state('bias', [5], { kind: 'zeros' }, true);
  const z = b.add(b.emit('matmul', [x, w]), bias);
  const loss = b.sum(b.emit('logsumexp', [b.emit('gelu', [z])], { axis: 1 }), [0]);
  const g = gradients(b, loss, [w, bias]);
  b.output('loss', loss);
  b.output('dw', g.get(w)!);
  b.output('dbias', g.get(bias)!);
  const opt = optimize(b.graph);
  assert.ok(opt.nodes.length < b.graph.nodes.length, `${opt.nodes.length} vs ${b.graph.nodes.length}`);
  const r = new Rng(3);
  const feeds = {
    inputs: { x: Array.from({ length: 12 }, () => r.normal()) },
    state: { w: Array.from({ length: 15 }, () => r.normal()), bias: [0.1, 0.2, 0.3, 0.4, 0.5] },
  };
  sameResults(b.graph, opt, feeds, 'optimize(autodiff)');
});

test.run();
