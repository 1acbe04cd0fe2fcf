// Parameter names, shapes, order and counts of the compiled models against
// PyTorch: torchvision's ResNet (no fc), Hugging Face's BertModel (no
// pooler) and nn.Sequential projection heads. The expected lists are generated from the PyTorch module structure
// in model-helpers.ts, and the totals are the published numbers.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initState } from '../../runtime/init.ts';
import { compile, huggingFaceBertState, parameterCount, sequentialHeadState, stateUnder, torchvisionResNetState, type StateEntry } from './model-helpers.ts';

const lovt = compile({ file: 'lovt.lovt' }, { mode: 'train' });

function assertSameState(actual: StateEntry[], expected: StateEntry[], what: string) {
  const a = actual.map(([n, s]) => `${n} [${s}]`);
  const e = expected.map(([n, s]) => `${n} [${s}]`);
  const missing = e.filter((x) => !a.includes(x));
  const extra = a.filter((x) => !e.includes(x));
  assert.equal({ missing: missing.slice(0, 10), extra: extra.slice(0, 10) }, { missing: [], extra: [] }, `${what}: state differs from PyTorch`);
  assert.equal(a, e, `${what}: state_dict order differs from PyTorch`);
}

test('LoVT image_encoder = torchvision ResNet-50 without fc: names, shapes, order, 23,508,032 parameters', () => {
  const state = stateUnder(lovt.graph, 'image_encoder');
  assertSameState(state, torchvisionResNetState('resnet50'), 'image_encoder');
  // torchvision resnet50: 25,557,032 parameters, fc 2048·1000 + 1000 = 2,049,000
  assert.is(parameterCount(state), 25_557_032 - 2_049_000);
  assert.is(parameterCount(state), 23_508_032);
  assert.is(lovt.graph.state['image_encoder.bn1.num_batches_tracked'].dtype, 'i32');
  for (const [n] of state) assert.is(lovt.graph.state[`image_encoder.${n}`].trainable, !/running_|num_batches/.test(n), n);
});

test('LoVT report_encoder = Hugging Face BertModel without pooler (vocab 28996): names, shapes, order, 107,719,680 parameters', () => {
  const state = stateUnder(lovt.graph, 'report_encoder');
  assertSameState(state, huggingFaceBertState(28996), 'report_encoder');
  // embeddings 28996·768 + 512·768 + 2·768 + 2·768 = 22,665,216; a layer 7,087,872;
  // BertModel with pooler 108,310,272; pooler 768·768 + 768 = 590,592
  const embeddings = 28996 * 768 + 512 * 768 + 2 * 768 + 2 * 768;
  const layer = 4 * (768 * 768 + 768) + 2 * (2 * 768) + (768 * 3072 + 3072) + (3072 * 768 + 768);
  assert.is(embeddings, 22_665_216);
  assert.is(layer, 7_087_872);
  assert.is(embeddings + 12 * layer + 590_592, 108_310_272);
  assert.is(parameterCount(state), 108_310_272 - 590_592);
  assert.is(parameterCount(state), 107_719_680);
});

test('LoVT freezes the BERT embeddings and encoder layers 0-5, nothing else', () => {
  for (const s of Object.values(lovt.graph.state)) {
    const frozenBert = /^report_encoder\.(embeddings\.|encoder\.layer\.[0-5]\.)/.test(s.name);
    const bnBuffer = /running_mean|running_var|num_batches_tracked/.test(s.name);
    assert.is(s.trainable, !frozenBert && !bnBuffer, s.name);
  }
});

test('LoVT projection heads = nn.Sequential(Linear, BatchNorm1d, ReLU, Linear): keys 0, 1, 3; ConVIRT without BatchNorm: 0, 2', () => {
  for (const [head, din] of [
    ['image_local_head', 2048],
    ['image_global_head', 2048],
    ['report_local_head', 768],
    ['report_global_head', 768],
  ] as const)
    assertSameState(stateUnder(lovt.graph, head), sequentialHeadState(din, 2048, 512, true), head);
  assert.equal(
    stateUnder(lovt.graph, 'image_global_head').map(([n]) => n),
    ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var', '1.num_batches_tracked', '3.weight', '3.bias'],
  );
  const convirt = compile({ file: 'convirt.lovt' });
  for (const [head, din] of [
    ['image_global_head', 2048],
    ['report_global_head', 768],
  ] as const)
    assertSameState(stateUnder(convirt.graph, head), sequentialHeadState(din, 2048, 512, false), `ConVIRT ${head}`);
  assert.equal(
    stateUnder(convirt.graph, 'report_global_head').map(([n]) => n),
    ['0.weight', '0.bias', '2.weight', '2.bias'],
  );
  // the buffers of the BatchNorm are buffers; the Linear weights and the BatchNorm affine are trainable
  assert.is(lovt.graph.state['image_local_head.1.running_mean'].trainable, false);
  assert.is(lovt.graph.state['image_local_head.1.weight'].trainable, true);
  assert.is(lovt.graph.state['image_local_head.3.weight'].trainable, true);
});

test('LoVT pooling, heads and alignment state: nn.MultiheadAttention / reference names and shapes', () => {
  const g = lovt.graph;
  const shape = (n: string) => g.state[n]?.shape;
  assert.equal(shape('image_pool.in_proj_weight'), [3 * 2048, 2048]);
  assert.equal(shape('image_pool.in_proj_bias'), [3 * 2048]);
  assert.equal(shape('image_pool.out_proj.weight'), [2048, 2048]);
  assert.equal(shape('image_pool.out_proj.bias'), [2048]);
  assert.equal(shape('report_pool.in_proj_weight'), [3 * 768, 768]);
  for (const [head, din] of [
    ['image_local_head', 2048],
    ['image_global_head', 2048],
    ['report_local_head', 768],
    ['report_global_head', 768],
  ] as const) {
    assert.equal(shape(`${head}.0.weight`), [2048, din], head);
    assert.equal(shape(`${head}.0.bias`), [2048], head);
    assert.equal(shape(`${head}.1.weight`), [2048], head);
    assert.equal(shape(`${head}.1.running_var`), [2048], head);
    assert.equal(shape(`${head}.3.weight`), [512, 2048], head);
    assert.equal(shape(`${head}.3.bias`), [512], head);
  }
  for (const p of ['key_projection', 'value_projection', 'output_projection']) {
    assert.equal(shape(`alignment.${p}.weight`), [512, 512]);
    assert.equal(shape(`alignment.${p}.bias`), [512]);
  }
  assert.equal(shape('alignment.norm.weight'), [512]);
  const others = Object.keys(g.state).filter(
    (n) =>
      !/^(image_encoder|report_encoder|image_pool|report_pool|image_local_head|image_global_head|report_local_head|report_global_head|alignment)\./.test(n),
  );
  assert.equal(others, [], 'no state outside the named modules');
});

test('initialisers follow PyTorch: torchvision convs, BERT normal(0.02), MHA xavier, heads Kaiming fan_out', () => {
  const init = (n: string) => lovt.graph.state[n].init;
  assert.equal(init('image_encoder.conv1.weight'), { kind: 'kaiming_normal', mode: 'fan_out', gain: Math.SQRT2 });
  assert.equal(init('image_encoder.bn1.weight'), { kind: 'ones' });
  assert.equal(init('report_encoder.encoder.layer.3.attention.self.query.weight'), { kind: 'normal', mean: 0, std: 0.02 });
  assert.equal(init('report_encoder.embeddings.word_embeddings.weight'), { kind: 'normal', mean: 0, std: 0.02 });
  assert.equal(init('report_encoder.encoder.layer.3.attention.self.query.bias'), { kind: 'zeros' });
  const bound = Math.sqrt(6 / (2048 + 3 * 2048));
  const mha = init('image_pool.in_proj_weight') as any;
  assert.is(mha.kind, 'uniform');
  assert.ok(Math.abs(mha.high - bound) < 1e-12 && Math.abs(mha.low + bound) < 1e-12);
  assert.equal(init('image_global_head.0.weight'), { kind: 'kaiming_normal', mode: 'fan_out', gain: Math.SQRT2 });
  assert.equal(init('image_global_head.3.weight'), { kind: 'kaiming_normal', mode: 'fan_out', gain: 1 });
  assert.equal(init('image_global_head.3.bias'), { kind: 'zeros' });
  assert.equal(init('image_global_head.1.weight'), { kind: 'ones' });
  assert.equal(init('alignment.key_projection.weight'), { kind: 'kaiming_normal', mode: 'fan_out', gain: 1 });
});

test('ResNet-18 and ResNet-34 match torchvision too (11,176,512 and 21,284,672 parameters without fc)', () => {
  for (const [arch, count] of [
    ['resnet18', 11_689_512 - 513_000],
    ['resnet34', 21_797_672 - 513_000],
  ] as const) {
    const m = compile({
      text: `import "std/resnet.lovt"\nmodel Probe {\n  input x: f32[1, 3, 64, 64]\n  net = ResNet(arch: ${arch})\n  output y = net(x)\n}\n`,
    });
    const state = stateUnder(m.graph, 'net');
    assertSameState(state, torchvisionResNetState(arch), arch);
    assert.is(parameterCount(state), count, arch);
  }
});

test("--set scale=tiny on lovt.lovt = LoVT_Tiny (same state), with the reference's frozen token embeddings and 0 frozen layers", () => {
  const viaSet = compile({ file: 'lovt.lovt' }, { set: { scale: 'tiny', vocab_size: 321 } });
  const tiny = compile({ file: 'lovt-tiny.lovt' }, { set: { vocab_size: 321 } });
  const entries = (g: typeof tiny.graph) => Object.values(g.state).map((s): StateEntry => [s.name, s.shape]);
  assertSameState(entries(viaSet.graph), entries(tiny.graph), '--set scale=tiny');
  assert.is(viaSet.model.configs.bert_frozen_layers.value, 0);
  assert.equal(viaSet.model.frozen, ['report_encoder.embeddings']);
  assert.equal(tiny.model.frozen, []);
  for (const s of Object.values(viaSet.graph.state))
    assert.is(s.trainable, !s.name.startsWith('report_encoder.embeddings.') && !/running_|num_batches/.test(s.name), s.name);
  // the reference count is a config too
  const four = compile({ file: 'lovt.lovt' }, { set: { bert_frozen_layers: 4 } });
  assert.equal(four.model.frozen, ['report_encoder.embeddings', ...[0, 1, 2, 3].map((i) => `report_encoder.encoder.layer.${i}`)]);
  assert.is(four.graph.state['report_encoder.encoder.layer.4.output.dense.weight'].trainable, true);
});

test('tiny models: ResNet-18 width 32 and a 2-layer BERT 128/2/512 with PyTorch names', () => {
  const tiny = compile({ file: 'lovt-tiny.lovt' }, { set: { vocab_size: 321 } });
  assertSameState(stateUnder(tiny.graph, 'image_encoder'), torchvisionResNetState('resnet18', 32), 'tiny image_encoder');
  assertSameState(stateUnder(tiny.graph, 'report_encoder'), huggingFaceBertState(321, 128, 2, 512, 64), 'tiny report_encoder');
  assertSameState(stateUnder(tiny.graph, 'image_local_head'), sequentialHeadState(256, 256, 128, true), 'tiny image_local_head');
  assertSameState(stateUnder(tiny.graph, 'report_local_head'), sequentialHeadState(128, 256, 128, true), 'tiny report_local_head');
  assert.ok(
    Object.values(tiny.graph.state)
      .filter((s) => s.name.startsWith('report_encoder.'))
      .every((s) => s.trainable),
    'the tiny BERT is not frozen',
  );
});

test("initialised lovt-tiny state has PyTorch statistics (runtime/init.ts on the models' InitSpecs)", () => {
  const tiny = compile({ file: 'lovt-tiny.lovt' });
  const state = initState(tiny.graph, 12345);
  const std = (v: ArrayLike<number>) => {
    const a = Array.from(v);
    const m = a.reduce((x, y) => x + y, 0) / a.length;
    return Math.sqrt(a.reduce((x, y) => x + (y - m) ** 2, 0) / a.length);
  };
  assert.equal(Object.keys(state), Object.keys(tiny.graph.state));
  for (const [n, v] of Object.entries(state)) assert.ok(Array.from(v).every(Number.isFinite), n);
  const near = (n: string, want: number) => assert.ok(Math.abs(std(state[n]) / want - 1) < 0.1, `${n}: std ${std(state[n])}, PyTorch ${want}`);
  near('image_encoder.layer1.0.conv1.weight', Math.sqrt(2 / (32 * 9))); // kaiming_normal fan_out
  near('report_encoder.encoder.layer.0.intermediate.dense.weight', 0.02); // BERT normal(0, 0.02)
  near('image_local_head.0.weight', Math.sqrt(2 / 256)); // fan_out 256, gain √2
  near('image_local_head.3.weight', Math.sqrt(1 / 128)); // fan_out 128, gain 1
  near('alignment.output_projection.weight', Math.sqrt(1 / 128)); // fan_out 128, gain 1
  near('image_pool.in_proj_weight', Math.sqrt(6 / (4 * 256)) / Math.sqrt(3)); // xavier_uniform
  assert.ok(Array.from(state['image_encoder.bn1.running_var']).every((v) => v === 1));
});

test.run();
