// The loss functions of models/std/losses.lovt on hand-built inputs, evaluated
// by the float64 reference interpreter, against the independent float64
// formulas of lovt-method.md §3 in float64-lovt.ts: each loss term, the image
// target's properties, padding invariance, and which inputs get gradients.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate } from '../../compiler/reference.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import { compile, randomArray, rng } from './model-helpers.ts';
import { globalLosses, gridTarget, identityTarget, localLosses, tensor, type TargetMode } from './float64-lovt.ts';

const LOSS_PROBE = `
import "std/losses.lovt"

// Every loss term of LoVT on hand-fed projections (no encoders).
model LossProbe {
  config batch: int = 3
  config grid_h: int = 3
  config grid_w: int = 3
  config sentences: int = 5
  config dim: int = 6
  config image_target: enum(smooth, uniform, identity) = smooth

  input image_local: f32[batch, grid_h * grid_w, dim]
  input image_attended: f32[batch, grid_h * grid_w, dim]
  input report_local: f32[batch, sentences, dim]
  input report_attended: f32[batch, sentences, dim]
  input image_global: f32[batch, dim]
  input report_global: f32[batch, dim]
  input image_pool_weights: f32[batch, grid_h * grid_w]
  input report_pool_weights: f32[batch, sentences]
  input sentence_mask: f32[batch, sentences]

  let region_valid = full([batch, grid_h * grid_w], 1.0)
  let similarity = global_similarities(image_global, report_global, 0.1)
  loss global_i2r(weight: 0.75) = infonce(similarity, axis: 1)
  loss global_r2i(weight: 0.25) = infonce(similarity, axis: 0)
  let image_losses = local_losses(image_local, image_attended, grid_target(grid_h, grid_w, image_target), region_valid,
                                  attention_omega(image_pool_weights, region_valid), 0.3)
  let report_losses = local_losses(report_local, report_attended, eye(sentences), sentence_mask,
                                   attention_omega(report_pool_weights, sentence_mask), 0.3)
  loss local_image_l2a(weight: 0.375) = image_losses[0]
  loss local_image_a2l(weight: 0.375) = image_losses[1]
  loss local_report_l2a(weight: 0.375) = report_losses[0]
  loss local_report_a2l(weight: 0.375) = report_losses[1]
}
`;

const TARGET_PROBE = `
import "std/losses.lovt"

model TargetProbe {
  config h: int = 7
  config w: int = 7
  config mode: enum(smooth, uniform, identity) = smooth
  let g = grid_target(h, w, mode)
  output target = g / sum(g, axes: [1], keepdims: true)
}
`;

const TERMS = ['global_i2r', 'global_r2i', 'local_image_l2a', 'local_image_a2l', 'local_report_l2a', 'local_report_a2l'];
const WEIGHTS: Record<string, number> = {
  global_i2r: 0.75,
  global_r2i: 0.25,
  local_image_l2a: 0.375,
  local_image_a2l: 0.375,
  local_report_l2a: 0.375,
  local_report_a2l: 0.375,
};

interface ProbeData {
  B: number;
  K: number;
  S: number;
  D: number;
  inputs: Record<string, Float64Array>;
}

/** Random projections; sample b has validCounts[b] sentences; padded slots hold large garbage. */
function probeData(seed: number, B: number, K: number, S: number, D: number, validCounts: number[]): ProbeData {
  const r = rng(seed);
  const mask = new Float64Array(B * S);
  for (let b = 0; b < B; b++) for (let s = 0; s < validCounts[b]; s++) mask[b * S + s] = 1;
  const positive = (n: number) => randomArray(n, r).map((v) => Math.abs(v) + 0.05);
  return {
    B,
    K,
    S,
    D,
    inputs: {
      image_local: randomArray(B * K * D, r),
      image_attended: randomArray(B * K * D, r),
      report_local: randomArray(B * S * D, r, 3),
      report_attended: randomArray(B * S * D, r, 3),
      image_global: randomArray(B * D, r),
      report_global: randomArray(B * D, r),
      image_pool_weights: positive(B * K),
      report_pool_weights: positive(B * S),
      sentence_mask: mask,
    },
  };
}

function expectedLosses(d: ProbeData, gridH: number, gridW: number, mode: TargetMode): Record<string, number> {
  const { B, K, S, D, inputs: x } = d;
  const g = globalLosses(tensor([B, D], x.image_global), tensor([B, D], x.report_global), 0.1);
  const img = localLosses(
    tensor([B, K, D], x.image_local),
    tensor([B, K, D], x.image_attended),
    gridTarget(gridH, gridW, mode),
    new Float64Array(B * K).fill(1),
    x.image_pool_weights,
    0.3,
  );
  const rep = localLosses(
    tensor([B, S, D], x.report_local),
    tensor([B, S, D], x.report_attended),
    identityTarget(S),
    x.sentence_mask,
    x.report_pool_weights,
    0.3,
  );
  return { global_i2r: g.i2r, global_r2i: g.r2i, local_image_l2a: img.l2a, local_image_a2l: img.a2l, local_report_l2a: rep.l2a, local_report_a2l: rep.a2l };
}

function close(actual: number, expected: number, tol: number, what: string) {
  assert.ok(Number.isFinite(actual), `${what}: ${actual} is not finite`);
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} vs expected ${expected}`);
}

test('every loss term and the total equal the float64 formulas (3×3 grid, padded sentences)', () => {
  for (const mode of ['smooth', 'uniform', 'identity'] as const) {
    const { graph, model } = compile({ text: LOSS_PROBE, name: 'loss-probe.lovt' }, { set: { image_target: mode } });
    const d = probeData(7, 3, 9, 5, 6, [5, 3, 1]);
    const out = evaluate(graph, { inputs: d.inputs }).outputs;
    const want = expectedLosses(d, 3, 3, mode);
    let total = 0;
    for (const t of TERMS) {
      close(out[`loss.${t}`][0], want[t], 1e-12, `${mode} loss.${t}`);
      total += WEIGHTS[t] * want[t];
    }
    close(out['loss.total'][0], total, 1e-12, `${mode} loss.total`);
    if (model?.losses) assert.equal(Object.fromEntries(model.losses.map((l: any) => [l.name, l.weight])), WEIGHTS);
  }
});

test('non-square grid (2×4) and batch 1 of one sentence', () => {
  const { graph } = compile({ text: LOSS_PROBE, name: 'loss-probe.lovt' }, { set: { grid_h: 2, grid_w: 4, batch: 1, sentences: 1 } });
  const d = probeData(11, 1, 8, 1, 6, [1]);
  const out = evaluate(graph, { inputs: d.inputs }).outputs;
  const want = expectedLosses(d, 2, 4, 'smooth');
  for (const t of TERMS) close(out[`loss.${t}`][0], want[t], 1e-12, `loss.${t}`);
  // batch 1: the only negative is the positive itself
  close(out['loss.global_i2r'][0], 0, 1e-12, 'global loss with one sample');
});

test('image target on the 7×7 grid: the centre cell puts ≈2.7% on itself and ≥1.7% on every other region', () => {
  const { graph } = compile({ text: TARGET_PROBE, name: 'target-probe.lovt' });
  const t = evaluate(graph, {}).outputs.target;
  assert.is(t.length, 49 * 49);
  const centre = Array.from(t.slice(24 * 49, 25 * 49));
  close(
    centre.reduce((a, b) => a + b, 0),
    1,
    1e-12,
    'row sum',
  );
  assert.ok(centre[24] > 0.0255 && centre[24] < 0.0275, `self weight ${centre[24]}`);
  assert.ok(Math.min(...centre.filter((_, i) => i !== 24)) >= 0.017, 'every other region ≥ 1.7%');
  assert.ok(
    centre.every((v) => v > 0),
    'all 49 regions receive mass',
  );
  const g = gridTarget(7, 7, 'smooth');
  for (let n = 0; n < 49; n++) {
    const s = g[n].reduce((a, b) => a + b, 0);
    for (let m = 0; m < 49; m++) close(t[n * 49 + m], g[n][m] / s, 1e-14, `T[${n},${m}]`);
  }
  // a corner cell: mass only within half the diagonal (4.95 cells)
  const corner = Array.from(t.slice(0, 49));
  assert.is(corner[6 * 7 + 6], 0, 'the opposite corner gets nothing');
  assert.ok(corner[4 * 7 + 0] > 0 && corner[4 * 7 + 3] === 0, 'offset (4,0) inside, (4,3) outside');
});

test('image target on the tiny 4×4 grid: offset (2,2) lies exactly on the radius and is inside; uniform and identity modes', () => {
  const smooth = evaluate(compile({ text: TARGET_PROBE, name: 'target-probe.lovt' }, { set: { h: 4, w: 4 } }).graph, {}).outputs.target;
  assert.ok(smooth[0 * 16 + 2 * 4 + 2] > 0, 'd = √8/√32 = 0.5 is inside');
  assert.is(smooth[0 * 16 + 2 * 4 + 3], 0, 'offset (2,3) is outside');
  const uniform = evaluate(compile({ text: TARGET_PROBE, name: 'target-probe.lovt' }, { set: { h: 4, w: 4, mode: 'uniform' } }).graph, {}).outputs.target;
  const row0 = Array.from(uniform.slice(0, 16)).filter((v) => v > 0);
  assert.is(row0.length, 9, 'cell 0 has 9 cells within the radius (offsets up to (2,2))');
  for (const v of row0) close(v, 1 / 9, 1e-15, 'uniform weight');
  const identity = evaluate(compile({ text: TARGET_PROBE, name: 'target-probe.lovt' }, { set: { h: 4, w: 4, mode: 'identity' } }).graph, {}).outputs.target;
  for (let n = 0; n < 16; n++) for (let m = 0; m < 16; m++) assert.is(identity[n * 16 + m], n === m ? 1 : 0);
});

test('padded sentences contribute nothing: adding padding slots (with garbage in them) changes no loss value', () => {
  const small = compile({ text: LOSS_PROBE, name: 'loss-probe.lovt' }, { set: { sentences: 3 } }).graph;
  const large = compile({ text: LOSS_PROBE, name: 'loss-probe.lovt' }, { set: { sentences: 7 } }).graph;
  const d3 = probeData(21, 3, 9, 3, 6, [3, 2, 1]);
  const d7 = probeData(99, 3, 9, 7, 6, [3, 2, 1]); // different garbage everywhere...
  // ...then copy the real (valid) slots and the image side over
  for (const k of ['image_local', 'image_attended', 'image_global', 'report_global', 'image_pool_weights']) d7.inputs[k] = d3.inputs[k];
  for (const k of ['report_local', 'report_attended', 'report_pool_weights']) {
    const per = k === 'report_pool_weights' ? 1 : 6;
    for (let b = 0; b < 3; b++)
      for (let s = 0; s < 3; s++) for (let e = 0; e < per; e++) d7.inputs[k][(b * 7 + s) * per + e] = d3.inputs[k][(b * 3 + s) * per + e];
  }
  // garbage in the padded slots of the small graph too (sample 1 slot 2, sample 2 slots 1-2 keep random values)
  const a = evaluate(small, { inputs: d3.inputs }).outputs;
  const b = evaluate(large, { inputs: d7.inputs }).outputs;
  for (const t of [...TERMS, 'total']) close(b[`loss.${t}`][0], a[`loss.${t}`][0], 1e-13, `loss.${t} with 4 more padded slots`);
});

test('gradients: none into padded slots or the pooling weights (ω is detached), finite differences agree elsewhere', () => {
  const { graph } = compile({ text: LOSS_PROBE, name: 'loss-probe.lovt' });
  const d = probeData(5, 3, 9, 5, 6, [5, 3, 1]);
  const b = new GraphBuilder(graph);
  const names = ['report_local', 'report_attended', 'report_pool_weights', 'image_local', 'image_global'];
  const grads = gradients(
    b,
    graph.outputs['loss.total'],
    names.map((n) => graph.inputs[n]),
  );
  names.forEach((n) => (graph.outputs[`grad.${n}`] = grads.get(graph.inputs[n])!));
  const out = evaluate(graph, { inputs: d.inputs }).outputs;
  const mask = d.inputs.sentence_mask;
  const sentencesOf = (b: number) => mask.slice(b * 5, (b + 1) * 5).reduce((a, v) => a + v, 0);
  for (const n of ['report_local', 'report_attended'])
    for (let i = 0; i < 3 * 5; i++) {
      const row = Array.from(out[`grad.${n}`].slice(i * 6, (i + 1) * 6));
      // a report of one sentence has local report losses ≡ 0 (its only candidate is the positive)
      if (!mask[i] || sentencesOf(Math.floor(i / 5)) === 1)
        assert.ok(
          row.every((v) => v === 0),
          `${n} slot ${i} has gradient ${row}`,
        );
      else
        assert.ok(
          row.some((v) => v !== 0),
          `${n} slot ${i} is valid but has no gradient`,
        );
    }
  assert.ok(
    out['grad.report_pool_weights'].every((v) => v === 0),
    'ω carries no gradient into the pooling weights',
  );
  // central differences of the total on a few coordinates
  const total = (inputs: Record<string, Float64Array>) => evaluate(graph, { inputs }).outputs['loss.total'][0];
  for (const [n, i] of [
    ['image_local', 4],
    ['image_local', 50],
    ['image_global', 7],
    ['report_local', 2],
    ['report_attended', 40],
  ] as const) {
    const h = 1e-6;
    const plus = { ...d.inputs, [n]: d.inputs[n].slice() };
    const minus = { ...d.inputs, [n]: d.inputs[n].slice() };
    plus[n][i] += h;
    minus[n][i] -= h;
    const fd = (total(plus) - total(minus)) / (2 * h);
    close(out[`grad.${n}`][i], fd, 1e-6, `d total / d ${n}[${i}]`);
  }
});

test.run();
