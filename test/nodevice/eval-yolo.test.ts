// The YOLOv3 heads (models/eval/yolov3.lovt) and their host side (runtime/eval/yolo.ts):
// the std functions they use (leaky_relu, bce_with_logits) against float64 formulas and
// finite differences; target building and decoding on worked examples derived by hand in
// the comments; targets → logits → detections round trips; the head's loss on the float64
// reference interpreter against the reference's loss written out here (BCELoss / MSELoss
// on masked tensors, summed over scales); the neck's state against the reference's modules.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate } from '../../compiler/reference.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { GraphBuilder } from '../../compiler/builder.ts';
import type { Graph } from '../../compiler/ir.ts';
import { boxIoU, type Box, type LabelledBox } from '../../runtime/eval/boxes.ts';
import { YOLO_OUTPUTS, yoloDetections, yoloScales, yoloTargets } from '../../runtime/eval/yolo.ts';
import { compile, randomArray, randomState, rng, type StateEntry } from './model-helpers.ts';

function close(got: number, want: number, tol: number, what: string) {
  assert.ok(Math.abs(got - want) <= tol, `${what}: got ${got}, expected ${want} (|diff| ${Math.abs(got - want)} > ${tol})`);
}

// ---------------------------------------------------------------- std functions

const FN_PROBE = `
import "std/nn.lovt"
import "std/losses.lovt"

model FnProbe {
  config n: int = 12
  input x: f32[n]
  input y: f32[n]
  input c: f32[n]
  output bce = bce_with_logits(x, y)
  output leaky = leaky_relu(x, 0.1)
  loss weighted = sum(c * bce_with_logits(x, y)) + sum(c * c * leaky_relu(x, 0.1))
}
`;

// Logits across the range, saturated ones included, and exactly 0 (the kink of both forms).
const XS = [-100, -30, -17.5, -3, -0.5, 0, 0, 1e-3, 0.7, 4, 30, 100];
const YS = [0, 0, 1, 0.3, 1, 0, 0.25, 1, 0, 0.6, 1, 0];

/** Float64 BCE written the textbook way, −y·log σ(x) − (1 − y)·log(1 − σ(x)), with log1p for accuracy. */
function bceFormula(x: number, y: number): number {
  // −log σ(x) = log1p(e^{−x}); −log(1 − σ(x)) = log1p(e^{x}); for |x| ≤ 100 neither overflows in float64.
  return y * Math.log1p(Math.exp(-x)) + (1 - y) * Math.log1p(Math.exp(x));
}

/** The probe with dL/dx as an output. */
function probeWithGradient(n: number): Graph {
  const { graph } = compile({ text: FN_PROBE, name: 'fn-probe.lovt' }, { set: { n } });
  const b = new GraphBuilder(structuredClone(graph));
  const g = gradients(b, graph.outputs['loss.total'], [graph.inputs.x]).get(graph.inputs.x)!;
  b.graph.outputs['grad.x'] = g;
  return b.graph;
}

test('bce_with_logits and leaky_relu: float64 formula values, finite at ±30 and ±100, exact at the saturated ends', () => {
  const graph = probeWithGradient(XS.length);
  const c = Float64Array.from(XS, (_, i) => 0.5 + i / 7);
  const out = evaluate(graph, { inputs: { x: Float64Array.from(XS), y: Float64Array.from(YS), c } }).outputs;
  XS.forEach((x, i) => {
    const want = bceFormula(x, YS[i]);
    assert.ok(Number.isFinite(out.bce[i]), `bce(${x}, ${YS[i]}) is finite`);
    // log(1 + e^{-|x|}) instead of log1p: an absolute error of at most one ulp of 1.
    close(out.bce[i], want, 1e-15 + 1e-13 * Math.abs(want), `bce(${x}, ${YS[i]})`);
    close(out.leaky[i], x > 0 ? x : 0.1 * x, 0, `leaky_relu(${x})`);
    // d/dx: c·(σ(x) − y) + c²·(1 or 0.1); at x = 0 BCE's is ½ − y and leaky's 0.1 (PyTorch's).
    const sig = 1 / (1 + Math.exp(-x));
    close(out['grad.x'][i], c[i] * (sig - YS[i]) + c[i] * c[i] * (x > 0 ? 1 : 0.1), 1e-14, `d/dx at ${x}`);
  });
  // The saturated values by hand: bce(100, 0) = 100 + log1p(e^-100) = 100; bce(−100, 0) ≈ e^-100.
  close(out.bce[0], 0, 1e-40, 'bce(-100, 0) = log1p(e^-100)');
  assert.is(out.bce[11], 100, 'bce(100, 0) = 100');
  close(out.bce[10], Math.exp(-30), 1e-16, 'bce(30, 1) = e^-30 to within one ulp of 1');
});

test('bce_with_logits and leaky_relu: gradients match central finite differences (float64)', () => {
  const graph = probeWithGradient(XS.length);
  const r = rng(3);
  // Away from the kinks (FD straddling 0 would average the two slopes of leaky_relu).
  const x = Float64Array.from(XS, (v) => (v === 0 ? 0.3 : v) + (r() - 0.5) * 0.01);
  const y = Float64Array.from(YS);
  const c = randomArray(x.length, r);
  const grad = evaluate(graph, { inputs: { x, y, c } }).outputs['grad.x'];
  const h = 1e-6;
  for (let i = 0; i < x.length; i++) {
    const at = (d: number) => {
      const xi = Float64Array.from(x);
      xi[i] += d;
      return evaluate(graph, { inputs: { x: xi, y, c } }).outputs['loss.total'][0];
    };
    const fd = (at(h) - at(-h)) / (2 * h);
    close(grad[i], fd, 1e-6 * (1 + Math.abs(fd)) + 1e-8 * Math.abs(x[i]), `finite difference at x = ${x[i]}`);
  }
});

// ---------------------------------------------------------------- anchors and scales

test('scales: grids 7/14/28 at 224 with the paper anchors; anchors scale with the image size', () => {
  const s224 = yoloScales(224);
  assert.equal(
    s224.map((s) => [s.layer, s.grid, s.stride, s.output, s.target]),
    [
      ['layer4', 7, 32, 'raw_layer4', 'target_layer4'],
      ['layer3', 14, 16, 'raw_layer3', 'target_layer3'],
      ['layer2', 28, 8, 'raw_layer2', 'target_layer2'],
    ],
  );
  // method §6, in pixels at 224: layer4, layer3, layer2 (w, h) × 3
  assert.equal(
    s224.flatMap((s) => s.anchors.flat()),
    [64.64, 48.6, 84.24, 106.92, 201.42, 176.04, 16.2, 32.94, 33.48, 24.3, 31.86, 64.26, 5.4, 7.02, 8.64, 16.2, 17.82, 12.42],
  );
  const s64 = yoloScales(64);
  assert.equal(
    s64.map((s) => s.grid),
    [2, 4, 8],
  );
  close(s64[0].anchors[2][0], (201.42 * 64) / 224, 1e-12, '201.42 px at 224 → 57.55 px at 64');
  assert.equal(YOLO_OUTPUTS, ['raw_layer4', 'raw_layer3', 'raw_layer2']);
  assert.throws(() => yoloScales(100), /image size 100 must be a positive multiple of 32/);
});

// ---------------------------------------------------------------- targets

const C0 = 6; // first class channel
/** target value of scale tensor t at [b, a, k, j, i]. */
function tv(t: Float32Array, g: number, classes: number, b: number, a: number, k: number, j: number, i: number): number {
  return t[(((b * 3 + a) * (6 + classes) + k) * g + j) * g + i];
}

test('targets, worked example: a 64×48 box centred at (72, 84) at 224, per scale its cell, best anchor, offsets and ignored anchors', () => {
  // Box [40, 60, 104, 108]: w 64, h 48, centre (72, 84). Image 1 of the batch is padding.
  const t = yoloTargets([[{ box: [40, 60, 104, 108], label: 0 }]], { imageSize: 224, classes: 1, batch: 2 });
  assert.equal(Object.keys(t).sort(), ['target_layer2', 'target_layer3', 'target_layer4']);
  const cases = [
    // layer4, g 7 (stride 32): size (2, 1.5) cells, centre (2.25, 2.625) → cell i 2, j 2, tx .25, ty .625.
    // Anchors in cells (2.02, 1.51875), (2.6325, 3.34125), (6.294375, 5.50125). Shape IoU with +1:
    //   a0: (3·2.5) / (3.02·2.51875) = 7.5 / 7.6066 = 0.986 > 0.5 (best, ignored)
    //   a1: 7.5 / (3.6325·4.34125) = 7.5 / 15.770 = 0.476 (a negative)
    //   a2: 7.5 / (7.294375·6.50125) = 0.158
    { name: 'target_layer4', g: 7, i: 2, j: 2, best: 0, tx: 0.25, ty: 0.625, tw: Math.log(64 / 64.64), th: Math.log(48 / 48.6), ignored: [0] },
    // layer3, g 14: size (4, 3), centre (4.5, 5.25) → cell i 4, j 5, tx .5, ty .25. Box area with +1: 5·4 = 20.
    //   a0 (1.0125, 2.05875): inter = 2.0125·3.05875 = 6.156 = its area → 6.156 / 20 = 0.308
    //   a1 (2.0925, 1.51875): inter = 3.0925·2.51875 = 7.789 = its area → 0.389
    //   a2 (1.99125, 4.01625): inter = 2.99125·4 = 11.965; area 2.99125·5.01625 = 15.005;
    //      union 20 + 15.005 − 11.965 = 23.040 → 0.519 > 0.5 (best, ignored)
    { name: 'target_layer3', g: 14, i: 4, j: 5, best: 2, tx: 0.5, ty: 0.25, tw: Math.log(64 / 31.86), th: Math.log(48 / 64.26), ignored: [2] },
    // layer2, g 28: size (8, 6), centre (9, 10.5) → cell i 9, j 10, tx 0, ty .5. Box area 9·7 = 63; anchors lie inside:
    //   a0 (0.675, 0.8775): 1.675·1.8775 / 63 = 0.050; a1 (1.08, 2.025): 2.08·3.025 / 63 = 0.100;
    //   a2 (2.2275, 1.5525): 3.2275·2.5525 / 63 = 0.131 (best; none ignored, and the best stays a negative too)
    { name: 'target_layer2', g: 28, i: 9, j: 10, best: 2, tx: 0, ty: 0.5, tw: Math.log(64 / 17.82), th: Math.log(48 / 12.42), ignored: [] as number[] },
  ];
  for (const c of cases) {
    const tt = t[c.name];
    assert.is(tt.length, 2 * 3 * 7 * c.g * c.g, `${c.name} size`);
    const f = Math.fround;
    for (let b = 0; b < 2; b++)
      for (let a = 0; a < 3; a++)
        for (let j = 0; j < c.g; j++)
          for (let i = 0; i < c.g; i++) {
            const here = b === 0 && j === c.j && i === c.i;
            const positive = here && a === c.best;
            const at = (k: number) => tv(tt, c.g, 1, b, a, k, j, i);
            assert.is(at(0), positive ? 1 : 0, `${c.name} obj [${b},${a},${j},${i}]`);
            assert.is(at(1), here && c.ignored.includes(a) ? 0 : 1, `${c.name} noobj [${b},${a},${j},${i}]`);
            assert.is(at(C0), positive ? 1 : 0, `${c.name} class [${b},${a},${j},${i}]`);
            const want = positive ? [c.tx, c.ty, c.tw, c.th] : [0, 0, 0, 0];
            for (let k = 0; k < 4; k++) close(at(2 + k), f(want[k]), 1e-6 * Math.abs(want[k]), `${c.name} t${'xywh'[k]} [${b},${a},${j},${i}]`);
          }
  }
});

test('targets: class one-hot with several classes, a centre on a cell corner, a zero-width box on the right edge, the later box in a cell and anchor wins', () => {
  // 64² image, 3 classes. layer4 g 2 (stride 32); anchors in cells (0.5771, 0.4339), (0.7522, 0.9547), (1.7984, 1.5718).
  // Box A [0, 0, 64, 64] (label 2): size (2, 2) cells, centre (1, 1), exactly the grid's middle corner → cell
  //   (1, 1) with tx = ty = 0. Shape IoU (+1), area 3·3 = 9: a0 1.5771·1.4339 / 9 = 0.251, a1 1.7522·1.9547 / 9
  //   = 0.381, a2 2.7984·2.5718 / 9 = 0.800 → best a2, ignored.
  // Box B [40, 40, 62, 63] (label 1): size (0.6875, 0.71875), centre (1.25 + 0.34375, 1.25 + 0.359375) =
  //   (1.59375, 1.609375) → cell (1, 1) too. Area 1.6875·1.71875 = 2.9004: a0 inside B: 2.2614 / 2.9004 = 0.780
  //   (ignored), B inside a1: 2.9004 / 3.4251 = 0.847 (best, ignored), B inside a2: 2.9004 / 7.197 = 0.403.
  const t = yoloTargets(
    [
      [
        { box: [0, 0, 64, 64], label: 2 },
        { box: [40, 40, 62, 63], label: 1 },
      ],
    ],
    { imageSize: 64, classes: 3, batch: 1 },
  ).target_layer4;
  const at = (a: number, k: number) => tv(t, 2, 3, 0, a, k, 1, 1);
  assert.equal([at(0, 0), at(1, 0), at(2, 0)], [0, 1, 1], 'A on anchor 2, B on anchor 1');
  assert.equal([at(2, C0), at(2, C0 + 1), at(2, C0 + 2)], [0, 0, 1], 'A: class 2');
  assert.equal([at(1, C0), at(1, C0 + 1), at(1, C0 + 2)], [0, 1, 0], 'B: class 1');
  assert.equal([at(2, 2), at(2, 3)], [0, 0], 'A: centre on the cell corner');
  close(at(1, 2), 0.59375, 1e-7, 'B tx');
  close(at(1, 3), 0.609375, 1e-7, 'B ty');
  // Both ignore their matching anchors (> 0.5): a2 (A), a1 and a0 (B): every noobj of the cell is 0.
  assert.equal([at(0, 1), at(1, 1), at(2, 1)], [0, 0, 0]);

  // The same box twice with different labels: one positive, the offsets of the (identical)
  // later box, and both class bits (the reference sets the later one without clearing).
  const twice = yoloTargets(
    [
      [
        { box: [40, 40, 62, 63], label: 0 },
        { box: [40, 40, 62, 63], label: 2 },
      ],
    ],
    { imageSize: 64, classes: 3, batch: 1 },
  ).target_layer4;
  assert.equal(
    [0, 1, 2].map((c) => tv(twice, 2, 3, 0, 1, C0 + c, 1, 1)),
    [1, 0, 1],
  );

  // A zero-width box on the right border, [64, 8, 64, 24] (one class): centre (2, 0.5) cells → column trunc(2) = 2
  // clamped to 1 with tx = 1, row 0 with ty = 0.5; size (0, 0.5). IoU (+1), area 1·1.5: a0 inter 1·1.4339,
  // union 1.5 + 2.2614 − 1.4339 → 0.616 (best, ignored); a1 1.5 / 3.4251 = 0.438; a2 0.208.
  // tw = log(0 / 0.5771 + 1e-16) = log 1e-16 (the reference's epsilon), th = log(16 px / 13.886 px).
  const edge = yoloTargets([[{ box: [64, 8, 64, 24] }]], { imageSize: 64, classes: 1, batch: 1 }).target_layer4;
  const e = (a: number, k: number) => tv(edge, 2, 1, 0, a, k, 0, 1);
  assert.equal([e(0, 0), e(1, 0), e(2, 0)], [1, 0, 0]);
  assert.equal([e(0, 1), e(1, 1), e(2, 1)], [0, 1, 1]);
  assert.equal([e(0, 2), e(0, 3)], [1, 0.5]);
  close(e(0, 4), Math.log(1e-16), 1e-5, 'tw of a zero-width box');
  close(e(0, 5), Math.log(16 / ((48.6 * 64) / 224)), 1e-6, 'th');
});

test('targets: bad input is named', () => {
  const opts = { imageSize: 64, classes: 2, batch: 1 };
  assert.throws(() => yoloTargets([[], []], opts), /2 images of boxes for a batch of 1/);
  assert.throws(() => yoloTargets([[{ box: [10, 10, 5, 20], label: 0 }]], opts), /image 0, box 0: negative width/);
  assert.throws(() => yoloTargets([[{ box: [1, 1, 5, 5] }, { box: [1, 1, 5, 5], label: 2 }]], opts), /image 0, box 1: label 2 is not a class index in 0..1/);
  assert.throws(() => yoloTargets([], { ...opts, classes: 0 }), /classes must be a whole number ≥ 1/);
});

// ---------------------------------------------------------------- decoding

/** A raw output set of the head at `imageSize`, every value `fill`. */
function rawOutputs(imageSize: number, classes: number, batch: number, fill: number): Record<string, Float32Array> {
  return Object.fromEntries(yoloScales(imageSize).map((s) => [s.output, new Float32Array(batch * 3 * (5 + classes) * s.grid * s.grid).fill(fill)]));
}
function setRaw(
  raw: Record<string, Float32Array>,
  imageSize: number,
  classes: number,
  scale: number,
  b: number,
  a: number,
  j: number,
  i: number,
  values: number[],
) {
  const s = yoloScales(imageSize)[scale];
  const g = s.grid;
  values.forEach((v, k) => (raw[s.output][(((b * 3 + a) * (5 + classes) + k) * g + j) * g + i] = v));
}

test('decoding, worked example: box from offsets, anchor and cell; confidence cut; NMS with the +1 IoU; argmax class', () => {
  // 64² image, 2 classes, batch 2 of which 1 valid. Every logit −10: σ(−10) = 4.5e-5, nothing passes.
  const raw = rawOutputs(64, 2, 2, -10);
  // layer3 (g 4, stride 16), anchor 1 = (33.48, 24.3)·64/224 = (9.565714…, 6.942857…), cell row 2, column 1:
  // x = y = 0 → centre ((0.5 + 1)·16, (0.5 + 2)·16) = (24, 40); w = h = 0 → the anchor's size;
  // objectness 2 → σ = 0.880797; class logits (−1, 3) → class 1.
  setRaw(raw, 64, 2, 1, 0, 1, 2, 1, [0, 0, 0, 0, 2, -1, 3]);
  // Nearby on layer2 (g 8, stride 8), anchor 2 = (5.091429, 3.548571), cell row 4, column 2, x = y = ln 3
  // (σ = 0.75): centre (2.75·8, 4.75·8) = (22, 38); w = h = ln 2: size (10.182857, 7.097143). IoU (+1) with
  // the first box: x [16.909, 27.091] ∩ [19.217, 28.783] → 7.874 + 1; y [34.451, 41.549] ∩ [36.529, 43.471]
  // → 5.020 + 1; 53.42 / (11.183·8.097 + 10.566·7.943 − 53.42) = 53.42 / 121.06 = 0.441 ≥ 0.4, and a
  // lower score σ(1) → suppressed.
  setRaw(raw, 64, 2, 2, 0, 2, 4, 2, [Math.log(3), Math.log(3), Math.log(2), Math.log(2), 1, -1, 3]);
  // Class 0 (logits (4, 3)): layer2 anchor 1 = (2.468571, 4.628571), cell (5, 2): centre (20, 44). It
  // overlaps the suppressed box, but NMS is per class, so it stays.
  setRaw(raw, 64, 2, 2, 0, 1, 5, 2, [0, 0, 0, 0, 1.5, 4, 3]);
  // Score σ(−1.4) = 0.1978 < 0.2: dropped. σ(−1.38) = 0.2010: kept (a box of its own, far away).
  setRaw(raw, 64, 2, 0, 0, 0, 0, 0, [0, 0, 0, 0, -1.4, 0, 1]);
  setRaw(raw, 64, 2, 0, 0, 0, 1, 1, [-20, 20, 0, 0, -1.38, 0, 1]);
  // In image 1 (not valid) a confident box: must not appear.
  setRaw(raw, 64, 2, 1, 1, 0, 0, 0, [0, 0, 0, 0, 5, 0, 0]);

  const dets = yoloDetections(raw, { imageSize: 64, classes: 2, batch: 2, valid: 1 });
  assert.is(dets.length, 1);
  const [d] = dets;
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const [w1, h1] = [(33.48 * 64) / 224, (24.3 * 64) / 224];
  const [w0, h0] = [(8.64 * 64) / 224, (16.2 * 64) / 224];
  const [w4, h4] = [(64.64 * 64) / 224, (48.6 * 64) / 224];
  // The surviving far box: layer4 cell (1, 1), x → σ(−20) ≈ 2e-9, y → σ(20) ≈ 1 − 2e-9: centre ≈ (32, 64).
  const want: [Box, number, number][] = [
    [[20 - w0 / 2, 44 - h0 / 2, 20 + w0 / 2, 44 + h0 / 2], sig(1.5), 0],
    [[24 - w1 / 2, 40 - h1 / 2, 24 + w1 / 2, 40 + h1 / 2], sig(2), 1],
    [[32 + 32 * sig(-20) - w4 / 2, 32 + 32 * sig(20) - h4 / 2, 32 + 32 * sig(-20) + w4 / 2, 32 + 32 * sig(20) + h4 / 2], sig(-1.38), 1],
  ];
  assert.is(d.length, want.length, JSON.stringify(d));
  d.forEach((got, n) => {
    const [box, score, label] = want[n];
    assert.is(got.label, label, `detection ${n} label`);
    close(got.score, score, 1e-6, `detection ${n} score`);
    got.box.forEach((v, k) => close(v, box[k], 1e-5, `detection ${n} coordinate ${k}`));
  });
  // The suppressed box's IoU with the kept one, as computed above.
  const suppressed: Box = [22 - 5.091429, 38 - 3.548571, 22 + 5.091429, 38 + 3.548571];
  close(boxIoU(suppressed, want[1][0], 1), 0.441, 5e-4, 'IoU of the suppressed box');

  assert.throws(
    () => yoloDetections({ ...raw, raw_layer3: new Float32Array(5) }, { imageSize: 64, classes: 2, batch: 2, valid: 1 }),
    /output 'raw_layer3' has 5 values, expected 672 = \[2, 21, 4, 4\]/,
  );
  assert.throws(() => yoloDetections({ raw_layer4: raw.raw_layer4 }, { imageSize: 64, classes: 2, batch: 2, valid: 1 }), /output 'raw_layer3' is missing/);
  assert.throws(() => yoloDetections(raw, { imageSize: 64, classes: 2, batch: 2, valid: 3 }), /valid = 3 must be a whole number in 0..2/);
  // A diverged head (NaN everywhere) detects nothing rather than failing.
  assert.equal(yoloDetections(rawOutputs(64, 2, 2, NaN), { imageSize: 64, classes: 2, batch: 2, valid: 2 }), [[], []]);
});

/** Logits whose decoding is the target: σ⁻¹ of the offsets, the log sizes as they are, a confident positive. */
function logitsFromTargets(t: Record<string, Float32Array>, imageSize: number, classes: number, batch: number): Record<string, Float32Array> {
  const raw: Record<string, Float32Array> = {};
  const logit = (p: number) => Math.log(p / (1 - p));
  for (const s of yoloScales(imageSize)) {
    const g = s.grid;
    const out = new Float32Array(batch * 3 * (5 + classes) * g * g).fill(-20);
    for (let b = 0; b < batch; b++)
      for (let a = 0; a < 3; a++)
        for (let j = 0; j < g; j++)
          for (let i = 0; i < g; i++) {
            const target = (k: number) => tv(t[s.target], g, classes, b, a, k, j, i);
            const set = (k: number, v: number) => (out[(((b * 3 + a) * (5 + classes) + k) * g + j) * g + i] = v);
            if (target(0) !== 1) continue;
            set(0, logit(target(2)));
            set(1, logit(target(3)));
            set(2, target(4));
            set(3, target(5));
            set(4, 3);
            for (let c = 0; c < classes; c++) set(5 + c, target(C0 + c) ? 5 : -5);
          }
    raw[s.output] = out;
  }
  return raw;
}

test('round trip: boxes → targets → the logits they prescribe → detections = the boxes (each once after NMS)', () => {
  const r = rng(7);
  for (const [imageSize, classes] of [
    [224, 1],
    [128, 3],
  ]) {
    const batch = 3;
    // Boxes of random sizes and places, well apart (no two of a class overlap ≥ 0.4, no shared cell).
    const boxes: LabelledBox[][] = [];
    for (let b = 0; b < batch - 1; b++) {
      const image: LabelledBox[] = [];
      for (let tries = 0; image.length < 4 && tries < 1000; tries++) {
        const w = 4 + r() * imageSize * 0.4;
        const h = 4 + r() * imageSize * 0.4;
        const x = r() * (imageSize - w);
        const y = r() * (imageSize - h);
        const box: Box = [x, y, x + w, y + h];
        const centre = (bx: Box) => [(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2];
        const far = image.every((o) => boxIoU(o.box, box, 1) === 0 && Math.hypot(centre(o.box)[0] - centre(box)[0], centre(o.box)[1] - centre(box)[1]) > 48);
        if (far) image.push({ box, label: Math.floor(r() * classes) });
      }
      boxes.push(image);
    }
    boxes.push([]); // an image without boxes
    const targets = yoloTargets(boxes, { imageSize, classes, batch });
    const dets = yoloDetections(logitsFromTargets(targets, imageSize, classes, batch), { imageSize, classes, batch, valid: batch });
    dets.forEach((d, b) => {
      // every box comes back once (three scales decode to the same box; NMS keeps one), in class order
      const want = [...boxes[b]].sort((p, q) => (p.label ?? 0) - (q.label ?? 0));
      assert.is(d.length, want.length, `${imageSize}px image ${b}: ${d.length} detections for ${want.length} boxes`);
      for (const truth of want) {
        const match = d.find((x) => x.label === truth.label && x.box.every((v, k) => Math.abs(v - truth.box[k]) < 1e-3));
        assert.ok(match, `${imageSize}px image ${b}: box ${truth.box} (class ${truth.label}) comes back`);
        close(match!.score, 1 / (1 + Math.exp(-3)), 1e-6, 'score σ(3)');
      }
    });
  }
});

// ---------------------------------------------------------------- the head's loss

const SMALL = { batch: 2, image_size: 64, layer2_channels: 8, layer3_channels: 16, layer4_channels: 32, classes: 2 };

/** The reference YOLOv3Loss for one scale: BCELoss / MSELoss means over all anchor positions of the masked tensors. */
function referenceScaleLoss(raw: ArrayLike<number>, t: ArrayLike<number>, g: number, classes: number, batch: number) {
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const bce = (p: number, y: number) => -(y * Math.max(Math.log(p), -100) + (1 - y) * Math.max(Math.log(1 - p), -100));
  const n = batch * 3 * g * g;
  const sums = { x: 0, y: 0, w: 0, h: 0, obj: 0, noobj: 0, cls: 0 };
  for (let b = 0; b < batch; b++)
    for (let a = 0; a < 3; a++)
      for (let j = 0; j < g; j++)
        for (let i = 0; i < g; i++) {
          const p = (k: number) => raw[(((b * 3 + a) * (5 + classes) + k) * g + j) * g + i];
          const q = (k: number) => t[(((b * 3 + a) * (6 + classes) + k) * g + j) * g + i];
          const mask = q(0);
          const noobj = q(1);
          // BCE(x·mask, tx·mask): with mask 0 it is BCE(0, 0) = 0 (log clamped at −100, times 0).
          sums.x += bce(sig(p(0)) * mask, q(2) * mask);
          sums.y += bce(sig(p(1)) * mask, q(3) * mask);
          sums.w += (p(2) * mask - q(4) * mask) ** 2;
          sums.h += (p(3) * mask - q(5) * mask) ** 2;
          sums.obj += bce(sig(p(4)) * mask, mask);
          sums.noobj += bce(sig(p(4)) * noobj, noobj * 0);
          for (let c = 0; c < classes; c++) sums.cls += bce(sig(p(5 + c)) * mask, q(6 + c) * mask);
        }
  return {
    x: sums.x / n,
    y: sums.y / n,
    w: sums.w / n,
    h: sums.h / n,
    obj: sums.obj / n,
    noobj: sums.noobj / n,
    cls: classes === 1 ? 0 : sums.cls / (n * classes),
  };
}

const WEIGHTS = { x: 2.5, y: 2.5, w: 2.5, h: 2.5, obj: 1, noobj: 0.5, cls: 1 };

function smallBoxes(seed: number, imageSize: number, classes: number, images: number): LabelledBox[][] {
  const r = rng(seed);
  return Array.from({ length: images }, () =>
    Array.from({ length: 3 }, () => {
      const w = 2 + r() * imageSize * 0.6;
      const h = 2 + r() * imageSize * 0.6;
      const x = r() * (imageSize - w);
      const y = r() * (imageSize - h);
      return { box: [x, y, x + w, y + h] as Box, label: Math.floor(r() * classes) };
    }),
  );
}

test('YoloV3Frozen: every loss term on the reference interpreter = the reference YOLOv3Loss written out, summed over scales', () => {
  for (const classes of [1, 2]) {
    const set = { ...SMALL, classes };
    const { graph, model } = compile({ file: 'eval/yolov3.lovt' }, { model: 'YoloV3Frozen', set });
    assert.equal(Object.fromEntries(model.losses.map((l: any) => [l.name, l.weight])), WEIGHTS);
    const r = rng(11 + classes);
    const targets = yoloTargets(smallBoxes(5, 64, classes, 1), { imageSize: 64, classes, batch: 2 });
    const inputs: Record<string, Float64Array> = { ...Object.fromEntries(Object.entries(targets).map(([k, v]) => [k, Float64Array.from(v)])) };
    for (const [name, c, g] of [
      ['layer2', 8, 8],
      ['layer3', 16, 4],
      ['layer4', 32, 2],
    ] as const)
      inputs[name] = randomArray(2 * c * g * g, r, 2);
    const out = evaluate(graph, { inputs, state: randomState(graph, 3) }).outputs;
    const want = { x: 0, y: 0, w: 0, h: 0, obj: 0, noobj: 0, cls: 0 };
    for (const s of yoloScales(64)) {
      assert.equal(graph.nodes[graph.outputs[s.output]].shape, [2, 3 * (5 + classes), s.grid, s.grid], `${s.output} shape`);
      const l = referenceScaleLoss(out[s.output], targets[s.target], s.grid, classes, 2);
      for (const k of Object.keys(want) as (keyof typeof want)[]) want[k] += l[k];
    }
    let total = 0;
    for (const [k, v] of Object.entries(want)) {
      close(out[`loss.${k}`][0], v, 1e-12 * (1 + v), `${classes} classes: loss.${k}`);
      total += WEIGHTS[k as keyof typeof WEIGHTS] * v;
    }
    close(out['loss.total'][0], total, 1e-12 * (1 + total), `${classes} classes: loss.total`);
    assert.ok(want.x > 0 && want.w > 0 && want.obj > 0 && want.noobj > 0 && (classes === 1 ? want.cls === 0 : want.cls > 0), 'every term is exercised');
  }
});

/** The reference's neck on (c2, c3, c4) channels: state names and shapes of YOLOv3WithResNetBackbone without the backbone. */
function referenceNeckState(c2: number, c3: number, c4: number, out: number, widths: number[]): StateEntry[] {
  const cbl = (p: string, i: number, o: number, k: number): StateEntry[] => [
    [`${p}.conv.weight`, [o, i, k, k]],
    [`${p}.bn.weight`, [o]],
    [`${p}.bn.bias`, [o]],
    [`${p}.bn.running_mean`, [o]],
    [`${p}.bn.running_var`, [o]],
    [`${p}.bn.num_batches_tracked`, []],
  ];
  const embedding = (p: string, inF: number, [f0, f1]: number[]): StateEntry[] => [
    ...cbl(`${p}.0`, inF, f0, 1),
    ...cbl(`${p}.1`, f0, f1, 3),
    ...cbl(`${p}.2`, f1, f0, 1),
    ...cbl(`${p}.3`, f0, f1, 3),
    ...cbl(`${p}.4`, f1, f0, 1),
    ...cbl(`${p}.5`, f0, f1, 3),
    [`${p}.conv_out.weight`, [out, f1, 1, 1]],
    [`${p}.conv_out.bias`, [out]],
  ];
  const [w0, w1, w2] = widths;
  return [
    ...embedding('yolo.embedding0', c4, [w0, 2 * w0]),
    ...cbl('yolo.embedding1_cbl', w0, w1, 1),
    ...embedding('yolo.embedding1', c3 + w1, [w1, 2 * w1]),
    ...cbl('yolo.embedding2_cbl', w1, w2, 1),
    ...embedding('yolo.embedding2', c2 + w2, [w2, 2 * w2]),
  ];
}

test('neck: ResNet-50 features give the reference modules (widths 512/256/128), a narrow encoder proportionally narrower ones', () => {
  const state = (set: Record<string, string | number>, model = 'YoloV3Frozen') => {
    const { graph } = compile({ file: 'eval/yolov3.lovt' }, { model, set });
    return Object.values(graph.state).map((s) => [s.name, s.shape] as StateEntry);
  };
  assert.equal(
    state({ layer2_channels: 512, layer3_channels: 1024, layer4_channels: 2048, image_size: 224, classes: 1, batch: 1 }),
    referenceNeckState(512, 1024, 2048, 18, [512, 256, 128]),
  );
  // The tiny ResNet-18 of width 32: layer2/3/4 = 64/128/256 channels → widths 64/32/16; 4 classes → 27 outputs.
  assert.equal(state({ classes: 4, batch: 1 }), referenceNeckState(64, 128, 256, 27, [64, 32, 16]));
  // The fine-tune heads: the same neck after the backbone's state, which the warm-up freezes.
  const fine = compile(
    { file: 'eval/yolov3.lovt' },
    { model: 'YoloV3FinetuneWarmup', set: { resnet: 'resnet50', resnet_width: 16, image_size: 64, batch: 2 } },
  );
  const neck = Object.values(fine.graph.state).filter((s) => s.name.startsWith('yolo.'));
  assert.equal(
    neck.map((s) => [s.name, s.shape]),
    referenceNeckState(128, 256, 512, 18, [128, 64, 32]),
  );
  for (const s of Object.values(fine.graph.state))
    if (!/running_|num_batches/.test(s.name)) assert.is(s.trainable, s.name.startsWith('yolo.'), `${s.name} trainable`);
  const plain = compile({ file: 'eval/yolov3.lovt' }, { model: 'YoloV3Finetune', set: { image_size: 64, batch: 2 } });
  assert.ok(Object.values(plain.graph.state).some((s) => s.name === 'backbone.conv1.weight' && s.trainable));
  assert.is(fine.model.train.optimizer.lr, 1e-3, 'warm-up at lr 1e-3');
  for (const m of [fine.model, plain.model]) {
    assert.equal(
      [m.train.optimizer.kind, m.train.optimizer.weight_decay, m.train.accumulate, m.train.early_stopping, m.train.seed],
      ['adam', 1e-6, 1, null, 0],
    );
  }
  assert.equal(Object.keys(plain.graph.inputs).sort(), ['image', 'target_layer2', 'target_layer3', 'target_layer4']);
});

test.run();
