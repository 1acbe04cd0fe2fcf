// The models of models/: every .lovt file compiles in train and eval mode, and
// the tiny LoVT / CLIP* / ConVIRT match the independent float64 implementation
// (float64-lovt.ts) end to end — every loss term, the shared BatchNorm's
// running statistics — and finite differences of the total loss.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { evaluate } from '../../compiler/reference.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import { MODELS, compile, randomArray, randomState, rng } from './model-helpers.ts';
import { referenceModel, type ModelInputs, type ModelSpec } from './float64-lovt.ts';

function lovtFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? lovtFiles(p) : p.endsWith('.lovt') ? [p] : [];
  });
}

test('every .lovt file in models/ compiles, in train and in eval mode', () => {
  const files = lovtFiles(MODELS);
  assert.ok(files.length >= 20, `found ${files.length} files`);
  let models = 0;
  for (const file of files) {
    const rel = path.relative(MODELS, file);
    const names = [...readFileSync(file, 'utf8').matchAll(/^model\s+(\w+)/gm)].map((m) => m[1]);
    // library files (no model): compile a probe that imports them
    const targets = names.length
      ? names.map((model) => ({ source: { file: rel }, model }))
      : [{ source: { text: `import "${rel}"\nmodel Probe {\n  config unused: int = 0\n}\n`, name: 'probe.lovt' }, model: 'Probe' }];
    for (const { source, model } of targets)
      for (const mode of ['train', 'eval'] as const) {
        const { graph, model: info } = compile(source as any, { model, mode });
        assert.ok(graph.nodes.length > 0 || !names.length, `${rel} ${model} ${mode}`);
        if (names.length) {
          // A model without losses (the evaluation's feature extractor) has no loss.total.
          assert.is('loss.total' in graph.outputs, info.losses.length > 0, `${rel} ${model} ${mode} has loss.total`);
          models++;
        }
      }
  }
  assert.ok(models >= 2 * 15, `compiled ${models} model/mode pairs`);
});

test('ResNet features: stem and layer1-4 maps (strides 2, 4, 8, 16, 32) and regions = the flattened layer4 map', () => {
  const probe = (arch: string, width: number) => `
import "std/resnet.lovt"
model Probe {
  input x: f32[2, 3, 64, 64]
  net = ResNet(arch: ${arch}, base_width: ${width})
  let maps = net.features(x)
  output stem = maps[0]
  output layer1 = maps[1]
  output layer2 = maps[2]
  output layer3 = maps[3]
  output layer4 = maps[4]
  output regions = net.regions(x)
}
`;
  const shapes = (g: any) => Object.fromEntries(Object.entries(g.outputs).map(([k, id]) => [k, g.nodes[id as number].shape]));
  assert.equal(shapes(compile({ text: probe('resnet50', 64), name: 'probe.lovt' }, { mode: 'eval' }).graph), {
    stem: [2, 64, 32, 32],
    layer1: [2, 256, 16, 16],
    layer2: [2, 512, 8, 8],
    layer3: [2, 1024, 4, 4],
    layer4: [2, 2048, 2, 2],
    regions: [2, 4, 2048],
  });
  const { graph } = compile({ text: probe('resnet18', 8), name: 'probe.lovt' }, { mode: 'eval' });
  assert.equal(shapes(graph).layer4, [2, 64, 2, 2]);
  const r = rng(4);
  const out = evaluate(graph, { inputs: { x: randomArray(2 * 3 * 64 * 64, r) }, state: randomState(graph, 8) }).outputs;
  for (let b = 0; b < 2; b++)
    for (let k = 0; k < 4; k++) for (let c = 0; c < 64; c++) assert.is(out.regions[(b * 4 + k) * 64 + c], out.layer4[(b * 64 + c) * 4 + k]);
});

// ---------------------------------------------------------------- tiny models vs float64

const B = 3,
  T = 12,
  S = 4,
  IMAGE = 64,
  VOCAB = 40;
// The tiny models at a small batch and 64×64 images (2×2 regions), dropout off so that
// the float64 implementation sees the same function. THIN also narrows the ResNet to
// base width 8 for the tests that evaluate many times (the reference interpreter is slow).
const TINY_SET = {
  vocab_size: VOCAB,
  max_tokens: T,
  max_sentences: S,
  batch: B,
  image_size: IMAGE,
  bert_max_position: 16,
  bert_dropout: 0,
  bert_attention_dropout: 0,
};
const THIN = { resnet_width: 8 };

function tinySpec(over: Partial<ModelSpec> = {}): ModelSpec {
  return {
    arch: 'resnet18',
    resnetWidth: 32,
    bert: { hidden: 128, layers: 2, heads: 2, intermediate: 512 },
    maxSentences: S,
    poolHeads: 8,
    projectionHidden: 256,
    projectionDim: 128,
    projectionBN: true,
    imageAggregator: 'attention',
    reportAggregator: 'attention',
    tauGlobal: 0.1,
    local: { tauLocal: 0.3, imageTarget: 'smooth', localWeights: 'attention' },
    ...over,
  };
}

/** A batch: sample b has sentences of the given token lengths; [CLS]=2 … [SEP]=3, padding 0. */
function batch(sentenceLengths: number[][], seed: number, batchSize = B, imageSize = IMAGE): { feeds: Record<string, Float64Array>; inputs: ModelInputs } {
  const r = rng(seed);
  const ids = new Int32Array(batchSize * T),
    mask = new Int32Array(batchSize * T),
    sent = new Int32Array(batchSize * T).fill(-1);
  sentenceLengths.forEach((lengths, b) => {
    let t = 0;
    ids[b * T] = 2;
    mask[b * T + t++] = 1;
    lengths.forEach((len, s) => {
      for (let i = 0; i < len; i++, t++) {
        ids[b * T + t] = 5 + Math.floor(r() * (VOCAB - 5));
        mask[b * T + t] = 1;
        sent[b * T + t] = s;
      }
    });
    ids[b * T + t] = 3;
    mask[b * T + t] = 1;
  });
  const image = randomArray(batchSize * 3 * imageSize * imageSize, r);
  return {
    feeds: { image, input_ids: Float64Array.from(ids), attention_mask: Float64Array.from(mask), token_sentence: Float64Array.from(sent) },
    inputs: { B: batchSize, T, imageSize, image, inputIds: ids, attentionMask: mask, tokenSentence: sent },
  };
}

const SENTENCES = [[3, 2, 3], [4, 3], [5]]; // 3, 2 and 1 valid sentence slots of 4

function close(actual: number, expected: number, tol: number, what: string) {
  assert.ok(Number.isFinite(actual), `${what}: ${actual} is not finite`);
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} vs float64 reference ${expected}`);
}

function compareLosses(file: string, spec: ModelSpec, mode: 'train' | 'eval', set: Record<string, string | number> = {}) {
  const { graph } = compile({ file }, { mode, set: { ...TINY_SET, ...set, resnet_width: spec.resnetWidth } });
  const state = randomState(graph, 17);
  const { feeds, inputs } = batch(SENTENCES, 5);
  const run = evaluate(graph, { inputs: feeds, state });
  const want = referenceModel(spec, state, inputs, mode === 'train');
  const terms = Object.keys(want.losses);
  assert.equal(
    Object.keys(run.outputs)
      .filter((k) => k.startsWith('loss.') && k !== 'loss.total')
      .sort(),
    terms.map((t) => `loss.${t}`).sort(),
    `${file}: loss terms`,
  );
  for (const t of terms) close(run.outputs[`loss.${t}`][0], want.losses[t], 1e-9, `${file} ${mode} loss.${t}`);
  return { graph, run, want, state };
}

test('lovt-tiny (train mode): every loss term equals the float64 implementation', () => {
  const { run, want, state } = compareLosses('lovt-tiny.lovt', tinySpec(), 'train');
  // the shared BatchNorm of the alignment model: two calls, both update the running statistics
  assert.is(want.alignmentNorm.length, 2);
  const m = 0.1;
  const rm0 = state['alignment.norm.running_mean'],
    rv0 = state['alignment.norm.running_var'];
  const [first, second] = want.alignmentNorm;
  const rm = run.updates['alignment.norm.running_mean'],
    rv = run.updates['alignment.norm.running_var'];
  for (let c = 0; c < 128; c++) {
    close(rm[c], (1 - m) * ((1 - m) * rm0[c] + m * first.mean[c]) + m * second.mean[c], 1e-9, `alignment.norm.running_mean[${c}]`);
    close(rv[c], (1 - m) * ((1 - m) * rv0[c] + m * first.varUnbiased[c]) + m * second.varUnbiased[c], 1e-9, `alignment.norm.running_var[${c}]`);
  }
  assert.is(run.updates['alignment.norm.num_batches_tracked'][0], state['alignment.norm.num_batches_tracked'][0] + 2);
  assert.is(run.updates['image_encoder.bn1.num_batches_tracked'][0], state['image_encoder.bn1.num_batches_tracked'][0] + 1);
});

test('lovt-tiny (eval mode, running statistics): every loss term equals the float64 implementation; no updates', () => {
  const { graph } = compareLosses('lovt-tiny.lovt', tinySpec(), 'eval');
  assert.equal(Object.keys(graph.updates), []);
});

test('lovt-tiny with the ablation settings: uniform target, uniform ω, average-pool / token-max aggregators', () => {
  compareLosses('lovt-tiny.lovt', tinySpec({ resnetWidth: 8, local: { tauLocal: 0.3, imageTarget: 'uniform', localWeights: 'uniform' } }), 'train', {
    image_target: 'uniform',
    local_weights: 'uniform',
  });
  compareLosses(
    'lovt-tiny.lovt',
    tinySpec({
      resnetWidth: 8,
      imageAggregator: 'average',
      reportAggregator: 'token_max',
      local: { tauLocal: 0.2, imageTarget: 'smooth', localWeights: 'uniform' },
    }),
    'train',
    { image_aggregator: 'average', report_aggregator: 'token_max', local_weights: 'uniform', tau_local: 0.2 },
  );
});

test('clip-tiny and convirt-tiny: the global losses equal the float64 implementation', () => {
  compareLosses('clip-tiny.lovt', tinySpec({ resnetWidth: 8, reportAggregator: 'token_max', local: null }), 'train');
  const convirt = tinySpec({ resnetWidth: 8, imageAggregator: 'average', reportAggregator: 'token_max', projectionBN: false, local: null });
  compareLosses('convirt-tiny.lovt', convirt, 'train');
  compareLosses('convirt-tiny.lovt', convirt, 'eval');
});

test('lovt-tiny outputs: report→image attention sums to 1 over the valid sentences, ω sums to 1', () => {
  const { graph } = compile({ file: 'lovt-tiny.lovt' }, { set: { ...TINY_SET, ...THIN } });
  const { feeds } = batch(SENTENCES, 9);
  const out = evaluate(graph, { inputs: feeds, state: randomState(graph, 3) }).outputs;
  const K = (IMAGE / 32) ** 2;
  const att = out.attention_r2i;
  assert.is(att.length, B * K * S);
  for (let b = 0; b < B; b++)
    for (let k = 0; k < K; k++) {
      const row = Array.from(att.slice((b * K + k) * S, (b * K + k + 1) * S));
      close(
        row.reduce((a, v) => a + v, 0),
        1,
        1e-12,
        'attention row sum',
      );
      row.forEach((v, s) => s >= SENTENCES[b].length && assert.ok(v < 1e-300, `padded sentence ${s} gets attention ${v}`));
    }
  for (let b = 0; b < B; b++)
    close(
      Array.from(out.image_weights.slice(b * K, (b + 1) * K)).reduce((a, v) => a + v, 0),
      1,
      1e-12,
      'ω row sum',
    );
});

/** autodiff gradients of `loss` at the picked state elements, and central differences of `objective`. */
function gradientCheck(set: Record<string, string | number>, picks: [string, number][], objective: (outputs: Record<string, Float64Array>) => number) {
  const { graph } = compile({ file: 'lovt-tiny.lovt' }, { set: { ...TINY_SET, ...THIN, batch: 2, ...set } });
  const state = randomState(graph, 23);
  const { feeds } = batch(SENTENCES.slice(0, 2), 31, 2);
  const b = new GraphBuilder(graph);
  const grads = gradients(b, graph.outputs['loss.total'], [...new Set(picks.map(([n]) => graph.state[n].node))]);
  for (const [n] of picks) graph.outputs[`grad.${n}`] = grads.get(graph.state[n].node)!;
  const run = evaluate(graph, { inputs: feeds, state });
  const value = (st: Record<string, Float64Array>) => objective(evaluate(graph, { inputs: feeds, state: st }).outputs);
  for (const [n, i] of picks) {
    const h = 1e-6;
    const plus = { ...state, [n]: state[n].slice() };
    const minus = { ...state, [n]: state[n].slice() };
    plus[n][i] += h;
    minus[n][i] -= h;
    const fd = (value(plus) - value(minus)) / (2 * h);
    const g = run.outputs[`grad.${n}`][i];
    assert.ok(Math.abs(g - fd) <= 1e-5 * Math.max(1e-2, Math.abs(fd)), `d loss / d ${n}[${i}]: autodiff ${g}, finite differences ${fd}`);
  }
}

test('lovt-tiny end to end (uniform ω): gradients of the total loss agree with central finite differences', () => {
  gradientCheck(
    { local_weights: 'uniform' },
    [
      ['image_encoder.conv1.weight', 11],
      ['image_encoder.layer2.0.downsample.1.weight', 5],
      ['image_encoder.layer4.1.bn2.bias', 3],
      ['report_encoder.embeddings.word_embeddings.weight', 7 * 128 + 9],
      ['report_encoder.encoder.layer.1.attention.self.query.weight', 300],
      ['report_encoder.encoder.layer.0.output.LayerNorm.weight', 4],
      ['image_pool.in_proj_weight', 17],
      ['report_global_head.1.weight', 6],
      ['alignment.key_projection.weight', 77],
    ],
    (o) => o['loss.total'][0],
  );
});

test("lovt-tiny (attention ω): ω carries no gradient — the pooling gets exactly the global losses' gradient", () => {
  // The local losses depend on the attention pooling only through ω, which is detached:
  // d total / d pooling = d (0.75·L_I→R + 0.25·L_R→I) / d pooling. Downstream of ω, the total.
  const global = (o: Record<string, Float64Array>) => 0.75 * o['loss.global_i2r'][0] + 0.25 * o['loss.global_r2i'][0];
  gradientCheck(
    {},
    [
      ['image_pool.in_proj_bias', 40],
      ['report_pool.in_proj_weight', 130],
      ['report_pool.out_proj.weight', 3],
    ],
    global,
  );
  gradientCheck(
    {},
    [
      ['alignment.value_projection.weight', 5],
      ['report_local_head.3.bias', 2],
    ],
    (o) => o['loss.total'][0],
  );
});

test.run();
