// Each ablation of lovt-method.md §5 (models/ablations/*.lovt) against LoVT:
// the compiled graphs differ only where intended — state names and shapes,
// loss terms and weights, configs, the train recipe — and, node by node
// (structural hashes), every difference in the computation starts in the
// intended place: the "roots" of the difference (changed nodes whose inputs are
// unchanged, in either direction) lie in the functions the ablation is about,
// never in the encoders, the heads or the alignment model.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Graph, Node, NodeOf } from '../../compiler/ir.ts';
import { ROOT, compile, structuralHashes } from './model-helpers.ts';

/** Which nodes depend on state or inputs at all (constants do not). */
function dependsOnData(graph: Graph): boolean[] {
  const out: boolean[] = [];
  for (const n of graph.nodes) out.push(n.op === 'input' || n.op === 'param' || n.op === 'buffer' || n.inputs.some((i) => out[i]));
  return out;
}

const fnLines = new Map<string, string[]>();
/** "file.lovt:fn" (or "file.lovt:Block.method", or "file.lovt:model") enclosing a source line. */
function placeOf(file: string, line: number): string {
  let lines = fnLines.get(file);
  if (!lines) fnLines.set(file, (lines = readFileSync(path.join(ROOT, file), 'utf8').split('\n')));
  let fn = '',
    block = '';
  for (let i = line - 1; i >= 0; i--) {
    const m = /^(\s*)fn\s+(\w+)/.exec(lines[i]);
    if (m && !fn) {
      fn = m[2];
      if (!m[1]) break;
    }
    const b = /^(block|model)\s+(\w+)/.exec(lines[i]);
    if (b) {
      block = b[1] === 'model' ? 'model' : b[2];
      break;
    }
  }
  const where = block === 'model' ? 'model' : block ? `${block}.${fn || 'body'}` : fn;
  return `${path.basename(file)}:${where}`;
}

/** The places where the computation of `a` and `b` starts to differ, as "file:fn" strings. */
function differenceRoots(a: Graph, b: Graph): { added: string[]; removed: string[] } {
  const roots = (x: Graph, y: Graph) => {
    const hx = structuralHashes(x),
      hy = new Set(structuralHashes(y));
    const data = dependsOnData(x);
    const changed = x.nodes.map((n) => data[n.id] && !hy.has(hx[n.id]));
    const places = new Set<string>();
    for (const n of x.nodes) {
      if (!changed[n.id] || n.inputs.some((i) => changed[i])) continue;
      // a library layer (nn.lovt) is named with the module whose weights it applies: nn.lovt:Linear.forward@image_global_head
      const isState = (m: Node): m is NodeOf<'param' | 'buffer'> => m.op === 'param' || m.op === 'buffer';
      const weights = isState(n) ? n : n.inputs.map((i) => x.nodes[i]).find(isState);
      const owner = n.loc?.file.endsWith('nn.lovt') && weights ? `@${String(weights.attrs.name).split('.')[0]}` : '';
      places.add(n.loc ? placeOf(n.loc.file, n.loc.line) + owner : `(no location: ${n.op} ${n.name ?? ''})`);
    }
    return [...places].sort();
  };
  return { added: roots(b, a), removed: roots(a, b) };
}

interface Expectation {
  file: string;
  model: string;
  removedState: RegExp | null;
  losses: string[];
  /** where the difference may start ("file:fn"); everything else must compute the same nodes */
  roots: string[];
  lr?: number;
  configs: Record<string, string>;
}

const GLOBAL = ['global_i2r', 'global_r2i'];
const LOCAL_IMAGE = ['local_image_l2a', 'local_image_a2l'];
const LOCAL_REPORT = ['local_report_l2a', 'local_report_a2l'];
// the loss total is a chain of weighted sums located at the loss expressions
const TOTAL = ['losses.lovt:local_losses', 'losses.lovt:infonce'];
const POOLING = [
  'masks.lovt:additive_mask',
  'pooling.lovt:GlobalPool.body',
  'pooling.lovt:GlobalPool.attention_pool',
  'pooling.lovt:MhaOutProj.body',
  'pooling.lovt:average_pool',
  'pooling.lovt:masked_max',
  'pooling.lovt:uniform_weights',
  'pooling.lovt:token_valid',
];
// ω: uniform weights over always-valid regions are a constant, consumed in local_losses
const OMEGA = ['pooling.lovt:uniform_weights', 'losses.lovt:attention_omega', 'losses.lovt:local_losses'];
// the global heads applied to another aggregator's vector
const GLOBAL_HEADS = ['nn.lovt:Linear.forward@image_global_head', 'nn.lovt:Linear.forward@report_global_head'];

const ABLATIONS: Expectation[] = [
  { file: 'ablations/no-local.lovt', model: 'LoVT_NoLocal', removedState: null, losses: GLOBAL, roots: TOTAL, configs: {} },
  {
    file: 'ablations/no-global.lovt',
    model: 'LoVT_NoGlobal',
    removedState: /^report_pool\./,
    losses: [...LOCAL_IMAGE, ...LOCAL_REPORT],
    roots: [...TOTAL, ...POOLING, ...OMEGA, ...GLOBAL_HEADS],
    configs: { local_weights: 'uniform', report_aggregator: 'token_max' },
  },
  {
    file: 'ablations/no-smoothing.lovt',
    model: 'LoVT_NoSmoothing',
    removedState: null,
    losses: [...GLOBAL, ...LOCAL_IMAGE, ...LOCAL_REPORT],
    roots: ['losses.lovt:local_losses'],
    configs: { image_target: 'uniform' },
  },
  {
    file: 'ablations/uniform-weights.lovt',
    model: 'LoVT_UniformWeights',
    removedState: null,
    losses: [...GLOBAL, ...LOCAL_IMAGE, ...LOCAL_REPORT],
    roots: OMEGA,
    configs: { local_weights: 'uniform' },
  },
  {
    file: 'ablations/avgpool-tokenmax.lovt',
    model: 'LoVT_AvgPoolTokenMax',
    removedState: /^(image_pool|report_pool)\./,
    losses: [...GLOBAL, ...LOCAL_IMAGE, ...LOCAL_REPORT],
    roots: [...POOLING, ...OMEGA, ...GLOBAL_HEADS],
    lr: 3e-5,
    configs: { image_aggregator: 'average', report_aggregator: 'token_max', local_weights: 'uniform' },
  },
  {
    file: 'ablations/global-only-avgpool.lovt',
    model: 'LoVT_GlobalOnlyAvgPool',
    removedState: /^(image_pool|report_pool)\./,
    losses: GLOBAL,
    roots: [...TOTAL, ...POOLING, ...OMEGA, ...GLOBAL_HEADS],
    lr: 3e-4,
    configs: { image_aggregator: 'average', report_aggregator: 'token_max', local_weights: 'uniform' },
  },
  { file: 'ablations/image-local-only.lovt', model: 'LoVT_ImageLocalOnly', removedState: null, losses: [...GLOBAL, ...LOCAL_IMAGE], roots: TOTAL, configs: {} },
  {
    file: 'ablations/report-local-only.lovt',
    model: 'LoVT_ReportLocalOnly',
    removedState: null,
    losses: [...GLOBAL, ...LOCAL_REPORT],
    roots: TOTAL,
    configs: {},
  },
];

const base = compile({ file: 'lovt.lovt' }, { mode: 'train' });

function lossOutputs(graph: Graph): string[] {
  return Object.keys(graph.outputs)
    .filter((k) => k.startsWith('loss.') && k !== 'loss.total')
    .map((k) => k.slice(5))
    .sort();
}

function assertRootsWithin(a: Graph, b: Graph, allowed: string[], what: string) {
  const { added, removed } = differenceRoots(a, b);
  const bad = [...added, ...removed].filter((p) => !allowed.includes(p));
  assert.equal(bad, [], `${what}: the computation differs from LoVT at ${bad.join(', ')}`);
  return { added, removed };
}

test('LoVT itself: six loss terms with the reference weights and recipe', () => {
  assert.equal(lossOutputs(base.graph), [...GLOBAL, ...LOCAL_IMAGE, ...LOCAL_REPORT].sort());
  const weights = Object.fromEntries(base.model.losses.map((l: any) => [l.name, l.weight]));
  assert.equal(weights, {
    global_i2r: 0.75,
    global_r2i: 0.25,
    local_image_l2a: 0.375,
    local_image_a2l: 0.375,
    local_report_l2a: 0.375,
    local_report_a2l: 0.375,
  });
  const train = base.model.train;
  assert.is(train.optimizer.kind, 'adamw');
  assert.is(train.optimizer.lr, 1e-4);
  assert.is(train.optimizer.weight_decay, 1e-6);
  assert.is(train.accumulate, 16);
  assert.is(train.epochs, 100);
  assert.is(train.seed, 12345);
  assert.equal(train.schedule, { kind: 'cosine', period: 'epoch', eta_min: 0, warmup_steps: 0 });
  assert.equal(train.early_stopping, { patience: 10, monitor: 'val_total' });
});

for (const ex of ABLATIONS) {
  test(`${ex.model} (${ex.file}) differs from LoVT only where intended`, () => {
    const v = compile({ file: ex.file }, { model: ex.model, mode: 'train' });
    // state: identical names, shapes and trainability, minus the intended removals
    const expected = Object.values(base.graph.state)
      .filter((s) => !ex.removedState?.test(s.name))
      .map((s) => `${s.name} [${s.shape}] ${s.trainable}`);
    const actual = Object.values(v.graph.state).map((s) => `${s.name} [${s.shape}] ${s.trainable}`);
    assert.equal(actual, expected, 'state');
    if (ex.removedState)
      assert.ok(
        Object.keys(base.graph.state).some((n) => ex.removedState!.test(n)),
        'the removed state existed in LoVT',
      );
    // loss terms and their weights
    assert.equal(lossOutputs(v.graph), [...ex.losses].sort(), 'loss terms');
    const baseWeights = Object.fromEntries(base.model.losses.map((l: any) => [l.name, l.weight]));
    for (const l of v.model.losses) assert.is(l.weight, baseWeights[l.name], `weight of ${l.name}`);
    // configs: only the intended ones differ
    const bc = base.model.configs,
      vc = v.model.configs;
    const changed = Object.keys({ ...bc, ...vc })
      .filter((k) => JSON.stringify(bc[k]) !== JSON.stringify(vc[k]))
      .sort();
    assert.equal(changed, Object.keys(ex.configs).sort(), 'changed configs');
    for (const [k, want] of Object.entries(ex.configs)) assert.is(String(vc[k].value), want, `config ${k}`);
    // the train recipe: only the learning rate may differ
    assert.equal(
      { ...v.model.train, optimizer: { ...v.model.train.optimizer, lr: 0 } },
      { ...base.model.train, optimizer: { ...base.model.train.optimizer, lr: 0 } },
      'train recipe',
    );
    assert.is(v.model.train.optimizer.lr, ex.lr ?? base.model.train.optimizer.lr, 'learning rate');
    // the computation differs only in the intended functions
    const { added, removed } = assertRootsWithin(base.graph, v.graph, ex.roots, ex.model);
    assert.ok(added.length + removed.length > 0, 'the graphs differ somewhere');
  });
}

test('ConVIRT and CLIP* against LoVT: aggregators, heads, text and recipe; the encoders compute the same nodes', () => {
  const convirt = compile({ file: 'convirt.lovt' });
  const clip = compile({ file: 'clip.lovt' });
  for (const m of [convirt, clip]) {
    assert.equal(lossOutputs(m.graph), GLOBAL);
    assert.not.ok(
      Object.keys(m.graph.state).some((n) => /^(alignment|image_local_head|report_local_head|report_pool)\./.test(n)),
      'no local parts, no report pooling state',
    );
    assert.is(String(m.model.configs.report_text.value), 'one_random_sentence');
  }
  assert.ok('image_pool.in_proj_weight' in clip.graph.state, 'CLIP* keeps attention pooling on the image side');
  assert.ok('image_global_head.1.running_var' in clip.graph.state, 'CLIP* heads have BatchNorm (nn.Sequential index 1)');
  assert.not.ok(
    Object.keys(convirt.graph.state).some((n) => n.startsWith('image_pool.') || /_head\.1\./.test(n)),
    'ConVIRT: average pool, heads without BatchNorm',
  );
  assert.ok('image_global_head.2.weight' in convirt.graph.state, "ConVIRT's second Linear is nn.Sequential index 2");
  assert.is(convirt.model.train.optimizer.kind, 'adam');
  assert.equal(convirt.model.train.schedule, { kind: 'plateau', patience: 12, factor: 0.5, monitor: 'val_total', min_lr: 0 });
  assert.is(convirt.model.train.accumulate, 1);
  assert.equal(clip.model.train, base.model.train);
  // relative to LoVT, the differences start only in pooling, the heads (ConVIRT: no BN) and the loss total
  const removedLocal = ['alignment', 'image_local_head', 'report_local_head']
    .flatMap((m) => [`nn.lovt:Linear.body@${m}`, `nn.lovt:BatchNorm.body@${m}`])
    .concat('alignment.lovt:AlignmentModel.forward');
  const allowed = [...TOTAL, ...POOLING, ...OMEGA, ...GLOBAL_HEADS, ...removedLocal];
  assertRootsWithin(base.graph, clip.graph, allowed, 'CLIP*');
  // ConVIRT's heads have no BatchNorm (and so their second Linear is index 2, not 3: other weights)
  const noBN = ['image_global_head', 'report_global_head']
    .flatMap((m) => [`nn.lovt:BatchNorm.body@${m}`, `nn.lovt:BatchNorm.forward@${m}`, `nn.lovt:Linear.body@${m}`])
    .concat('heads.lovt:ProjectionHead.forward');
  assertRootsWithin(base.graph, convirt.graph, [...allowed, ...noBN], 'ConVIRT');
});

test.run();
