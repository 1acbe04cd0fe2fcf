// Evaluation metrics (runtime/eval): hand-worked examples derived step by step in the
// comments, brute-force oracles evaluated a different way (rasterised IoU, AP from every
// ranked prefix, FROC from every prefix), edge cases and input errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '../../runtime/data/random.ts';
import {
  boxIoU,
  cellsInMask,
  contrastToNoiseRatio,
  cxcywhToXyxy,
  DiceAccumulator,
  detectionMAP,
  froc,
  groundingCNR,
  interpolatedAP,
  intervalsOverlap,
  meanInterval,
  nonMaxSuppression,
  pointingGame,
  softDiceLoss,
  xywhToXyxy,
  xyxyToCxcywh,
  xyxyToXywh,
  type Box,
  type DetectionImage,
  type GroundingSample,
  type ScoredBox,
} from '../../runtime/eval/metrics.ts';

const close = (actual: number, expected: number, what: string, tol = 1e-12): void => {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} vs ${expected}`);
};

// ---------------------------------------------------------------- boxes, IoU, NMS

test('box formats convert both ways; negative sizes are errors', () => {
  assert.equal(xywhToXyxy([10, 20, 30, 40]), [10, 20, 40, 60]);
  assert.equal(xyxyToXywh([10, 20, 40, 60]), [10, 20, 30, 40]);
  assert.equal(cxcywhToXyxy([25, 40, 30, 40]), [10, 20, 40, 60]);
  assert.equal(xyxyToCxcywh([10, 20, 40, 60]), [25, 40, 30, 40]);
  assert.throws(() => xywhToXyxy([0, 0, -1, 5]), /\[x, y, w, h\] box \[0, 0, -1, 5\]: width and height must be finite and ≥ 0/);
  assert.throws(() => cxcywhToXyxy([0, 0, 5, NaN]), /\[cx, cy, w, h\] box \[0, 0, 5, NaN\]: width and height must be finite/);
  assert.throws(() => xyxyToXywh([5, 0, 1, 5]), /xyxyToXywh: negative width in \[5, 0, 1, 5\] \(x2 < x1\)/);
});

test('IoU by hand, in both pixel conventions', () => {
  // [0,0,10,10] vs [5,0,15,10]: intersection 5·10 = 50, union 100 + 100 − 50 = 150.
  close(boxIoU([0, 0, 10, 10], [5, 0, 15, 10]), 1 / 3, 'continuous');
  // +1 convention: widths 11, intersection x 5..10 → 6·11 = 66, union 121 + 121 − 66 = 176.
  close(boxIoU([0, 0, 10, 10], [5, 0, 15, 10], 1), 66 / 176, 'inclusive');
  assert.is(boxIoU([0, 0, 10, 10], [10, 0, 20, 10]), 0, 'touching edges share no area');
  close(boxIoU([0, 0, 10, 10], [10, 0, 20, 10], 1), 11 / 231, 'touching edges share one pixel column with +1');
  assert.is(boxIoU([3, 3, 3, 3], [3, 3, 3, 3]), 0, 'two degenerate boxes: zero union → 0');
  assert.is(boxIoU([0, 0, 4, 4], [0, 0, 4, 4]), 1);
});

/** IoU by counting covered unit pixels: pixel (x, y) lies in a box when x1 ≤ x < x2 (offset 0) or x1 ≤ x ≤ x2 (offset 1). */
function rasterIoU(a: Box, b: Box, offset: 0 | 1): number {
  const inBox = (x: number, y: number, r: Box): boolean => x >= r[0] && x < r[2] + offset && y >= r[1] && y < r[3] + offset;
  let inter = 0;
  let union = 0;
  for (let y = 0; y <= 21; y++) {
    for (let x = 0; x <= 21; x++) {
      const ia = inBox(x, y, a);
      const ib = inBox(x, y, b);
      if (ia && ib) inter++;
      if (ia || ib) union++;
    }
  }
  return union === 0 ? 0 : inter / union;
}

function randomIntBox(rng: Rng): Box {
  const x1 = rng.intBetween(0, 18);
  const y1 = rng.intBetween(0, 18);
  return [x1, y1, x1 + rng.intBetween(0, 20 - x1), y1 + rng.intBetween(0, 20 - y1)];
}

test('IoU equals pixel counting on 500 random integer boxes (both conventions)', () => {
  const rng = new Rng(7);
  for (let i = 0; i < 500; i++) {
    const a = randomIntBox(rng);
    const b = randomIntBox(rng);
    for (const offset of [0, 1] as const) close(boxIoU(a, b, offset), rasterIoU(a, b, offset), `[${a}] vs [${b}] offset ${offset}`);
  }
});

test('NMS by hand: greedy per class, score ≥ 0.2 kept, IoU ≥ 0.4 suppressed, suppressed boxes suppress nothing', () => {
  const dets: ScoredBox[] = [
    { box: [3, 0, 13, 10], score: 0.8 }, // b: IoU with a = 7·10 / (200 − 70) = 0.538 ≥ 0.4 → suppressed by a
    { box: [0, 0, 10, 10], score: 0.9 }, // a: best of class 0 → kept
    { box: [6, 0, 16, 10], score: 0.7 }, // c: IoU with a = 40/160 = 0.25 → kept (b, IoU 0.538 with c, was already suppressed)
    { box: [0, 0, 10, 10], score: 0.1 }, // d: below the 0.2 confidence cut → dropped
    { box: [20, 20, 30, 30], score: 0.2 }, // e: exactly 0.2 → kept (≥)
    { box: [0, 0, 10, 4], score: 0.3, label: 1 }, // h: IoU with f = 40/100 = 0.4 exactly → suppressed (≥)
    { box: [0, 0, 10, 10], score: 0.5, label: 1 }, // f: class 1 is separate: kept despite a
    { box: [0, 0, 10, 6], score: 0.45, label: 1 }, // g: IoU with f = 0.6 → suppressed
  ];
  const kept = nonMaxSuppression(dets);
  // Output: class 0 by score (a, c, e), then class 1 (f).
  assert.equal(
    kept.map((d) => [d.label ?? 0, d.score]),
    [
      [0, 0.9],
      [0, 0.7],
      [0, 0.2],
      [1, 0.5],
    ],
  );
  // A looser IoU threshold keeps h (0.4 < 0.5) but still drops g (0.6).
  assert.equal(
    nonMaxSuppression(dets, { iouThreshold: 0.5 }).map((d) => d.score),
    [0.9, 0.7, 0.2, 0.5, 0.3],
  );
  // Equal scores keep input order: the first of two identical boxes survives.
  const tie = nonMaxSuppression([
    { box: [0, 0, 2, 2], score: 0.5, label: 0 },
    { box: [0, 0, 2, 2], score: 0.5, label: 0 },
  ]);
  assert.is(tie.length, 1);
  assert.is(nonMaxSuppression([]).length, 0);
  assert.throws(() => nonMaxSuppression([{ box: [0, 0, 1, 1], score: NaN }]), /nms: detection 0: score is NaN/);
  assert.throws(() => nonMaxSuppression([{ box: [0, 5, 1, 1], score: 0.5 }]), /nms: detection 0: negative height in \[0, 5, 1, 1\]/);
});

// ---------------------------------------------------------------- mAP

/*
 * Worked example: one class, 3 images, 7 ground-truth boxes.
 *   A: a1 [0,0,10,10], a2 [20,20,30,30]
 *   B: b1 [0,0,10,10], b2 [50,50,60,60], b3 [100,100,120,120]
 *   C: c1 [0,0,20,10], c2 [40,0,50,10]
 * Detections by score, with the IoU of their best box:
 *   d1 .95 A [0,0,10,10]      a1 IoU 1                         TP
 *   d2 .90 B [50,50,60,60]    b2 IoU 1                         TP
 *   d3 .85 A [1,0,11,10]      a1 IoU 90/110 = .818, taken      FP (duplicate)
 *   d4 .80 C [0,0,20,10]      c1 IoU 1                         TP
 *   d5 .75 B [200,200,210,210] nothing                         FP
 *   d6 .70 A [20,20,30,35]    a2 IoU 100/150 = .667            TP for t ≤ .65
 *   d7 .60 C [40,0,55,10]     c2 IoU 100/150 = .667            TP for t ≤ .65
 *   d8 .50 B [100,100,115,120] b3 IoU 300/400 = .75            TP for t ≤ .75 (≥)
 *   d9 .40 B [0,0,10,25]      b1 IoU 100/250 = .4              TP only at t = .40 (≥)
 * At t = 0.5: T T F T F T T T F; cumulative TP 1 2 2 3 3 4 5 6 6;
 *   precision 1, 1, 2/3, 3/4, 3/5, 4/6, 5/7, 6/8, 6/9; recall TP/7.
 *   Envelope (max from each rank on): 1, 1, .75, .75, .75, .75, .75, .75, 2/3.
 *   Recall point k reaches rank i when 100·TP_i ≥ 7k: k 0–14 → rank 0 (p̂ 1), 15–28 → rank 1 (1),
 *   29–42 → rank 3 (.75), 43–57 → rank 5 (.75), 58–71 → rank 6 (.75), 72–85 → rank 7 (.75),
 *   86–100 → never (0). AP = (29·1 + 57·.75) / 101 = 71.75/101.
 * At t = 0.4 d9 is a TP, recall reaches 1: envelope from rank 2 on is 7/9;
 *   AP = (29 + 72·7/9) / 101 = 85/101.
 * At t = 0.7 and 0.75 d6, d7 are FPs (d8's IoU .75 still counts at .75): T T F T F F F T F,
 *   TP 1 2 2 3 3 3 3 4 4, precision 1, 1, 2/3, 3/4, 3/5, 3/6, 3/7, 4/8, 4/9,
 *   envelope 1, 1, .75, .75, .6, .5, .5, .5, 4/9.
 *   Points: 0–28 → 1 (29), 29–42 → rank 3 (.75, 14), 43–57 → rank 7 (.5, 15), 58–100 → 0.
 *   AP = (29 + 10.5 + 7.5) / 101 = 47/101.
 * mAP over the 8 thresholds = (85 + 5·71.75 + 2·47) / (8·101) = 537.75/808.
 */
const WORKED: DetectionImage[] = [
  {
    truths: [{ box: [0, 0, 10, 10] }, { box: [20, 20, 30, 30] }],
    detections: [
      { box: [0, 0, 10, 10], score: 0.95 },
      { box: [1, 0, 11, 10], score: 0.85 },
      { box: [20, 20, 30, 35], score: 0.7 },
    ],
  },
  {
    truths: [{ box: [0, 0, 10, 10] }, { box: [50, 50, 60, 60] }, { box: [100, 100, 120, 120] }],
    detections: [
      { box: [0, 0, 10, 25], score: 0.4 },
      { box: [50, 50, 60, 60], score: 0.9 },
      { box: [200, 200, 210, 210], score: 0.75 },
      { box: [100, 100, 115, 120], score: 0.5 },
    ],
  },
  {
    truths: [{ box: [0, 0, 20, 10] }, { box: [40, 0, 50, 10] }],
    detections: [
      { box: [0, 0, 20, 10], score: 0.8 },
      { box: [40, 0, 55, 10], score: 0.6 },
    ],
  },
];

test('mAP worked example: AP per threshold and the mean over 0.40:0.05:0.75', () => {
  const r = detectionMAP(WORKED);
  assert.equal(r.iouThresholds, [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]);
  const expected = [85, 71.75, 71.75, 71.75, 71.75, 71.75, 47, 47].map((s) => s / 101);
  r.ap.forEach((row, t) => close(row[0]!, expected[t], `AP at ${r.iouThresholds[t]}`));
  close(r.map, 537.75 / 808, 'mAP');
  close(r.apPerClass[0]!, 537.75 / 808, 'class 0 mean AP');
  assert.equal(r.truthsPerClass, [7]);
  // One threshold: the AP@0.5 alone.
  close(detectionMAP(WORKED, { iouThresholds: [0.5] }).map, 71.75 / 101, 'AP@0.5');
});

test('interpolatedAP directly: the precision envelope and exact recall points', () => {
  // The t = 0.5 ranking above.
  close(interpolatedAP([true, true, false, true, false, true, true, true, false], 7), 71.75 / 101, 'worked ranking');
  // 2 GT, one TP at rank 2: precision ½ for recall ½; points 0–50 → ½, 51–100 → 0: 25.5/101.
  close(interpolatedAP([false, true], 2), 25.5 / 101, 'late hit');
  // Recall exactly 7/100 with 100 GT reaches point 7 (numpy's arange would give 0.07000000000000001 and miss it).
  const tp = new Array<boolean>(7).fill(true);
  close(interpolatedAP(tp, 100), 8 / 101, 'exact recall point');
  assert.is(interpolatedAP([], 3), 0, 'no detections → 0');
  assert.is(interpolatedAP([false, false], 3), 0, 'all false positives → 0');
  assert.throws(() => interpolatedAP([true], 0), /AP: the number of ground-truth boxes must be a whole number ≥ 1, got 0/);
});

test('mAP conventions: ≥ vs > at the threshold, +1 pixels, classes without ground truth', () => {
  // [0,0,10,10] vs [0,0,10,20]: continuous IoU 100/200 = .5 exactly, a match at .5 under COCO (≥);
  // with +1 pixels 11·11 / (11·21) = .5238, so at t = .52 only the reference matches.
  const img: DetectionImage = { truths: [{ box: [0, 0, 10, 10] }], detections: [{ box: [0, 0, 10, 20], score: 0.9 }] };
  assert.equal(detectionMAP([img], { iouThresholds: [0.5, 0.52] }).ap, [[1], [0]]);
  assert.equal(detectionMAP([img], { iouThresholds: [0.5, 0.52], convention: 'lovt-reference' }).ap, [[1], [1]]);
  // [0,0,9,9] vs [0,0,9,19] with +1 pixels: 100/200 = .5 exactly: no match at .5 under the reference (>).
  const img1: DetectionImage = { truths: [{ box: [0, 0, 9, 9] }], detections: [{ box: [0, 0, 9, 19], score: 0.9 }] };
  assert.equal(detectionMAP([img1], { iouThresholds: [0.45, 0.5], convention: 'lovt-reference' }).ap, [[1], [0]]);
  // Class 1 has detections but no ground truth: COCO leaves it out (null), the reference counts 0.
  const two: DetectionImage[] = [
    {
      truths: [{ box: [0, 0, 10, 10], label: 0 }],
      detections: [
        { box: [0, 0, 10, 10], score: 0.9, label: 0 },
        { box: [0, 0, 5, 5], score: 0.8, label: 1 },
      ],
    },
  ];
  const coco = detectionMAP(two, { iouThresholds: [0.5] });
  assert.equal(coco.ap, [[1, null]]);
  assert.equal(coco.apPerClass, [1, null]);
  assert.is(coco.map, 1);
  const ref = detectionMAP(two, { iouThresholds: [0.5], convention: 'lovt-reference' });
  assert.equal(ref.ap, [[1, 0]]);
  assert.is(ref.map, 0.5);
  // Declared classes beyond those seen count under the reference (AP 0), not under COCO.
  assert.is(detectionMAP(two, { iouThresholds: [0.5], classes: 3, convention: 'lovt-reference' }).map, 1 / 3);
  assert.is(detectionMAP(two, { iouThresholds: [0.5], classes: 3 }).map, 1);
});

test('mAP edge cases: no detections, images without ground truth, all false positives, no ground truth at all', () => {
  const noDets = WORKED.map((img) => ({ truths: img.truths, detections: [] }));
  assert.is(detectionMAP(noDets).map, 0);
  // An image with no ground truth: its detections are false positives. One TP ranked after one FP: precision ½ at recall 1 → AP ½.
  const withEmpty: DetectionImage[] = [
    { truths: [{ box: [0, 0, 10, 10] }], detections: [{ box: [0, 0, 10, 10], score: 0.5 }] },
    { truths: [], detections: [{ box: [0, 0, 10, 10], score: 0.9 }] },
  ];
  assert.is(detectionMAP(withEmpty, { iouThresholds: [0.5] }).map, 0.5);
  // Same images without the empty one's detection → AP 1: empty images matter only through their detections.
  assert.is(detectionMAP([withEmpty[0], { truths: [], detections: [] }], { iouThresholds: [0.5] }).map, 1);
  const allFp: DetectionImage[] = [
    {
      truths: [{ box: [0, 0, 10, 10] }],
      detections: [
        { box: [50, 50, 60, 60], score: 0.9 },
        { box: [80, 80, 90, 90], score: 0.8 },
      ],
    },
  ];
  assert.is(detectionMAP(allFp).map, 0);
  // No ground truth anywhere: COCO's mAP is undefined (NaN), the reference's is 0.
  const none: DetectionImage[] = [{ truths: [], detections: [{ box: [0, 0, 1, 1], score: 0.3 }] }];
  assert.ok(Number.isNaN(detectionMAP(none).map));
  assert.is(detectionMAP(none, { convention: 'lovt-reference' }).map, 0);
  assert.ok(Number.isNaN(detectionMAP([]).map));
});

test('mAP ties: equal scores rank in image order, then detection order', () => {
  // Two detections with score 0.5: the FP in image 0 ranks before the TP in image 1, so precision is ½ at recall 1.
  const imgs: DetectionImage[] = [
    { truths: [], detections: [{ box: [0, 0, 10, 10], score: 0.5 }] },
    { truths: [{ box: [0, 0, 10, 10] }], detections: [{ box: [0, 0, 10, 10], score: 0.5 }] },
  ];
  assert.is(detectionMAP(imgs, { iouThresholds: [0.5] }).map, 0.5);
  assert.is(detectionMAP([imgs[1], imgs[0]], { iouThresholds: [0.5] }).map, 1);
  // Within an image: two equal-score boxes on one GT, the worse-fitting listed first takes it (IoU 0.6 ≥ 0.5),
  // the exact one is then a duplicate FP; at t = 0.7 the first misses and the second matches.
  const within: DetectionImage = {
    truths: [{ box: [0, 0, 10, 10] }],
    detections: [
      { box: [0, 0, 10, 6], score: 0.5 },
      { box: [0, 0, 10, 10], score: 0.5 },
    ],
  };
  assert.equal(detectionMAP([within], { iouThresholds: [0.5, 0.7] }).ap, [[1], [0.5]]);
});

test('mAP input errors name the image and box', () => {
  assert.throws(() => detectionMAP([{ truths: [], detections: [{ box: [0, 0, 1, 1], score: NaN }] }]), /mAP: image 0, detection 0: score is NaN/);
  assert.throws(
    () =>
      detectionMAP([
        { truths: [{ box: [0, 0, 1, 1] }], detections: [] },
        { truths: [{ box: [4, 0, 1, 1] }], detections: [] },
      ]),
    /mAP: image 1, ground-truth box 0: negative width in \[4, 0, 1, 1\] \(x2 < x1\)/,
  );
  assert.throws(
    () => detectionMAP([{ truths: [], detections: [{ box: [0, 0, 1, 1], score: 0.5, label: 2 }] }], { classes: 2 }),
    /mAP: image 0, detection 0: label 2 is not a class index in 0\.\.1/,
  );
  assert.throws(() => detectionMAP([{ truths: [{ box: [0, 0, 1, 1], label: 0.5 }], detections: [] }]), /label 0\.5 is not a class index/);
  assert.throws(() => detectionMAP([{ detections: [] } as unknown as DetectionImage]), /mAP: image 0 needs 'detections' and 'truths' arrays/);
  assert.throws(
    () => detectionMAP([{ truths: [{ box: [0, 0, 1] as unknown as Box }], detections: [] }]),
    /mAP: image 0, ground-truth box 0: a box must be \[x1, y1, x2, y2\], got \[0,0,1\]/,
  );
  assert.throws(() => detectionMAP([{ truths: [{ box: [0, 0, Infinity, 1] }], detections: [] }]), /box coordinate 2 is Infinity/);
  assert.throws(() => detectionMAP(WORKED, { iouThresholds: [0.5, 1.5] }), /mAP: IoU threshold 1 is 1\.5/);
});

// Brute force: AP from its definition over every ranked prefix, matching redone from scratch per prefix,
// IoU by pixel counting, recall compared as floats. `reference`: +1 pixels, IoU > t, no ground truth → 0.
function bruteForceAP(images: readonly DetectionImage[], cls: number, t: number, reference: boolean): number | null {
  const dets: { img: number; idx: number; d: ScoredBox }[] = [];
  images.forEach((im, img) =>
    im.detections.forEach((d, idx) => {
      if ((d.label ?? 0) === cls) dets.push({ img, idx, d });
    }),
  );
  dets.sort((a, b) => b.d.score - a.d.score || a.img - b.img || a.idx - b.idx);
  const gt = images.map((im) => im.truths.filter((g) => (g.label ?? 0) === cls).map((g) => g.box));
  const nGt = gt.reduce((a, g) => a + g.length, 0);
  if (nGt === 0) return reference ? 0 : null;
  const offset = reference ? 1 : 0;
  const points: { precision: number; recall: number }[] = [];
  for (let m = 1; m <= dets.length; m++) {
    const used = gt.map((g) => g.map(() => false));
    let tp = 0;
    for (const { img, d } of dets.slice(0, m)) {
      let best = -1;
      for (let g = 0; g < gt[img].length; g++) {
        const iou = rasterIoU(d.box, gt[img][g], offset);
        const passes = reference ? iou > t : iou >= t;
        if (!used[img][g] && passes && (best < 0 || iou > rasterIoU(d.box, gt[img][best], offset))) best = g;
      }
      if (best >= 0) {
        used[img][best] = true;
        tp++;
      }
    }
    points.push({ precision: tp / m, recall: tp / nGt });
  }
  let sum = 0;
  for (let k = 0; k <= 100; k++) {
    const reach = points.filter((p) => p.recall >= k / 100).map((p) => p.precision);
    sum += reach.length ? Math.max(...reach) : 0;
  }
  return sum / 101;
}

function randomImages(rng: Rng, classes: number): DetectionImage[] {
  const images: DetectionImage[] = [];
  for (let i = rng.intBetween(1, 5); i > 0; i--) {
    const truths = Array.from({ length: rng.intBetween(0, 4) }, () => ({ box: randomIntBox(rng), label: rng.int(classes) }));
    const detections: ScoredBox[] = [];
    for (let j = rng.intBetween(0, 7); j > 0; j--) {
      const score = rng.intBetween(1, 6) / 6; // few distinct scores: many ties
      if (truths.length > 0 && rng.bernoulli(0.6)) {
        const g = truths[rng.int(truths.length)];
        const b = g.box.map((v) => Math.min(20, Math.max(0, v + rng.intBetween(-2, 2)))) as unknown as [number, number, number, number];
        if (b[2] < b[0]) b[2] = b[0];
        if (b[3] < b[1]) b[3] = b[1];
        detections.push({ box: b, score, label: rng.bernoulli(0.9) ? g.label : rng.int(classes) });
      } else {
        detections.push({ box: randomIntBox(rng), score, label: rng.int(classes) });
      }
    }
    images.push({ truths, detections });
  }
  return images;
}

test('mAP equals the brute-force definition on 300 random sets (2 classes, ties, empty images, both conventions)', () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 300; trial++) {
    const images = randomImages(rng, 2);
    for (const convention of ['coco', 'lovt-reference'] as const) {
      const r = detectionMAP(images, { classes: 2, convention });
      r.iouThresholds.forEach((t, ti) => {
        for (let c = 0; c < 2; c++) {
          const want = bruteForceAP(images, c, t, convention === 'lovt-reference');
          const got = r.ap[ti][c];
          if (want === null) assert.is(got, null, `trial ${trial} class ${c}`);
          else close(got!, want, `${convention} trial ${trial} class ${c} t ${t}`);
        }
      });
    }
  }
});

// ---------------------------------------------------------------- FROC

/*
 * Worked example: 8 images (N = 8, so t·N = 1, 2, 4, 8, 16, 32, 64 false positives), 5 GT boxes:
 *   img0 g0a [0,0,10,10], g0b [5,5,20,20] (overlapping); img1 g1 [30,30,40,40];
 *   img2 g2 [0,0,4,4]; img3 g3 [50,50,60,60]; img4–7 none.
 * Ranked detections (centre):
 *   p1  .9  img0 (7,7)     inside g0a and g0b → 2 hits            hits 2, FP 0
 *   p2  .8  img4 (1,1)     FP                                      FP 1 ≥ 1 → S(0.125) = 2/5
 *   p3  .7  img1 (35,35)   hit g1                                  hits 3
 *   p4  .65 img0 (2,2)     inside g0a, already hit → neither       hits 3, FP 1
 *   p5  .6  img1 (105,105) FP                                      FP 2 ≥ 2 → S(0.25) = 3/5
 *   p6  .5  img5           FP                                      FP 3
 *   p7  .45 img2 (4,4)     on g2's corner: inside → hit            hits 4
 *   p8  .4  img6           FP                                      FP 4 ≥ 4 → S(0.5) = 4/5
 *   p9  .3  img3 (205,205) FP                                      FP 5
 *   p10 .2  img3 (55,55)   hit g3                                  hits 5 (all)
 * 8 FPs (1 per image) are never reached. Reference: the rest repeat 4/5:
 *   (.4 + .6 + 5·.8)/7 = 5/7. Corrected: the rest take the final sensitivity 1: (.4 + .6 + .8 + 4)/7 = 5.8/7.
 */
const FROC_IMAGES: DetectionImage[] = [
  {
    truths: [{ box: [0, 0, 10, 10] }, { box: [5, 5, 20, 20] }],
    detections: [
      { box: [6, 6, 8, 8], score: 0.9 },
      { box: [0, 0, 4, 4], score: 0.65 },
    ],
  },
  {
    truths: [{ box: [30, 30, 40, 40] }],
    detections: [
      { box: [28, 28, 42, 42], score: 0.7 },
      { box: [100, 100, 110, 110], score: 0.6 },
    ],
  },
  { truths: [{ box: [0, 0, 4, 4] }], detections: [{ box: [3, 3, 5, 5], score: 0.45 }] },
  {
    truths: [{ box: [50, 50, 60, 60] }],
    detections: [
      { box: [200, 200, 210, 210], score: 0.3 },
      { box: [52, 52, 58, 58], score: 0.2 },
    ],
  },
  { truths: [], detections: [{ box: [0, 0, 2, 2], score: 0.8 }] },
  { truths: [], detections: [{ box: [0, 0, 2, 2], score: 0.5 }] },
  { truths: [], detections: [{ box: [0, 0, 2, 2], score: 0.4 }] },
  { truths: [], detections: [] },
];

test('FROC worked example: hits, a shared centre, border points, and unreached operating points', () => {
  const ref = froc(FROC_IMAGES);
  assert.equal(ref.sensitivities, [0.4, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8]);
  close(ref.froc, 5 / 7, 'reference FROC');
  assert.is(ref.hits, 5);
  assert.is(ref.truths, 5);
  assert.is(ref.falsePositives, 5);
  assert.is(ref.images, 8);
  const cor = froc(FROC_IMAGES, { variant: 'corrected' });
  assert.equal(cor.sensitivities, [0.4, 0.6, 0.8, 1, 1, 1, 1]);
  close(cor.froc, 5.8 / 7, 'corrected FROC');
});

test('FROC with few images: the reference records one operating point per detection', () => {
  // N = 1, GT [0,0,10,10]. p1 .9 FP (FP 1): reference records S(0.125) = 0; p2 .8 hit: FP/N = 1 ≥ 0.25 → records S = 1;
  // p3 .7 FP (FP 2 ≥ 0.5) → 1; then padded with 1: [0,1,1,1,1,1,1] → 6/7.
  // Corrected: S(t) for FP < t: t ≤ 1 allows no FP → prefix before p1 → 0; t = 2 → up to p2 → 1; 4, 8 unreached → 1: 3/7.
  const imgs: DetectionImage[] = [
    {
      truths: [{ box: [0, 0, 10, 10] }],
      detections: [
        { box: [20, 20, 30, 30], score: 0.9 },
        { box: [2, 2, 4, 4], score: 0.8 },
        { box: [40, 40, 50, 50], score: 0.7 },
      ],
    },
  ];
  assert.equal(froc(imgs).sensitivities, [0, 1, 1, 1, 1, 1, 1]);
  assert.equal(froc(imgs, { variant: 'corrected' }).sensitivities, [0, 0, 0, 0, 1, 1, 1]);
});

test('FROC edge cases and errors', () => {
  // No detections: nothing recorded, sensitivity 0 in both variants.
  const none = FROC_IMAGES.map((img) => ({ truths: img.truths, detections: [] }));
  assert.is(froc(none).froc, 0);
  assert.is(froc(none, { variant: 'corrected' }).froc, 0);
  // Only hits, no false positive ever: every point gets the final sensitivity.
  const perfect: DetectionImage[] = [{ truths: [{ box: [0, 0, 10, 10] }, { box: [20, 0, 30, 10] }], detections: [{ box: [4, 4, 6, 6], score: 0.3 }] }];
  assert.equal(froc(perfect).sensitivities, new Array(7).fill(0.5));
  // Ties: equal scores rank in image order: the image-0 FP comes first, so S(0.5 per image = 1 FP of 2 images) sees no hit.
  const tie: DetectionImage[] = [
    { truths: [], detections: [{ box: [0, 0, 2, 2], score: 0.5 }] },
    { truths: [{ box: [0, 0, 10, 10] }], detections: [{ box: [4, 4, 6, 6], score: 0.5 }] },
  ];
  assert.is(froc(tie, { fpsPerImage: [0.5], variant: 'corrected' }).sensitivities[0], 0);
  assert.is(froc([tie[1], tie[0]], { fpsPerImage: [0.5], variant: 'corrected' }).sensitivities[0], 1);
  assert.throws(() => froc([{ truths: [], detections: [] }]), /FROC: the 1 images hold no ground-truth box, so sensitivity is undefined/);
  assert.throws(() => froc([]), /FROC: no images/);
  assert.throws(() => froc(FROC_IMAGES, { fpsPerImage: [1, 0.5] }), /false positives per image must be positive and increasing/);
  assert.throws(() => froc([{ truths: [{ box: [0, 0, 1, 1] }], detections: [{ box: [0, 0, 1, 1], score: NaN }] }]), /FROC: image 0, detection 0: score is NaN/);
});

/** Corrected FROC from its definition: for each t, the largest prefix with FP < t·N, counted from scratch. */
function bruteForceFroc(images: readonly DetectionImage[], fps: readonly number[]): number[] {
  const dets = images.flatMap((im, img) => im.detections.map((d, idx) => ({ img, idx, d })));
  dets.sort((a, b) => b.d.score - a.d.score || a.img - b.img || a.idx - b.idx);
  const nGt = images.reduce((a, im) => a + im.truths.length, 0);
  const prefix = (m: number): { fp: number; hits: number } => {
    const hit = new Set<string>();
    let fp = 0;
    for (const { img, d } of dets.slice(0, m)) {
      const cx = (d.box[0] + d.box[2]) / 2;
      const cy = (d.box[1] + d.box[3]) / 2;
      const inside = images[img].truths.map((g, j) => [g.box[0] <= cx && cx <= g.box[2] && g.box[1] <= cy && cy <= g.box[3], j] as const).filter(([ok]) => ok);
      if (inside.length === 0) fp++;
      for (const [, j] of inside) hit.add(`${img}:${j}`);
    }
    return { fp, hits: hit.size };
  };
  return fps.map((t) => {
    let best = 0;
    for (let m = 0; m <= dets.length; m++) {
      const p = prefix(m);
      if (p.fp / images.length < t) best = p.hits;
    }
    return best / nGt;
  });
}

test('corrected FROC equals the brute-force definition on 300 random sets', () => {
  const rng = new Rng(13);
  let checked = 0;
  for (let trial = 0; trial < 300; trial++) {
    const images = randomImages(rng, 1);
    if (images.every((im) => im.truths.length === 0)) continue;
    const fps = [0.125, 0.25, 0.5, 1, 2, 4, 8];
    const got = froc(images, { variant: 'corrected' }).sensitivities;
    const want = bruteForceFroc(images, fps);
    got.forEach((s, k) => close(s, want[k], `trial ${trial} t ${fps[k]}`));
    checked++;
  }
  assert.ok(checked > 200, `${checked} sets with ground truth`);
});

// ---------------------------------------------------------------- segmentation

/*
 * Dice example, two 2×2 images (threshold 0.5, ≥):
 *   image 1 p [.9 .4 .5 .1], g [1 1 0 0] → predicted [1 0 1 0]: TP 1, FP 1 (the 0.5), FN 1
 *   image 2 p [.2 .7 .6 .0], g [0 1 1 1] → predicted [0 1 1 0]: TP 2, FP 0, FN 1
 * Micro: TP 3, FP 1, FN 2 → 2·3 / (6 + 1 + 2) = 2/3 (the mean of per-image Dice, (.5 + .8)/2 = .65, is not it).
 */
const P1 = [0.9, 0.4, 0.5, 0.1];
const G1 = [1, 1, 0, 0];
const P2 = [0.2, 0.7, 0.6, 0.0];
const G2 = [0, 1, 1, 1];

test('Dice worked example: micro over all pixels, batch splits do not matter', () => {
  const one = new DiceAccumulator();
  one.add([...P1, ...P2], [...G1, ...G2], [2, 1, 2, 2]);
  close(one.dice()[0], 2 / 3, 'one batch');
  const split = new DiceAccumulator();
  split.add(P1, G1);
  split.add(Float32Array.from(P2), Uint8Array.from(G2));
  close(split.meanDice(), 2 / 3, 'two batches');
  assert.equal([split.tp[0], split.fp[0], split.fn[0]], [3, 1, 2]);
});

test('Dice per class: channel-major layout, mean over classes, empty class → 0', () => {
  // Shape [2 images, 3 classes, 2×2]: class 0 = the example above, class 1 = perfect, class 2 = nothing anywhere.
  const perfectP = [0.8, 0, 0, 0];
  const perfectG = [1, 0, 0, 0];
  const empty = [0, 0, 0, 0];
  const preds = [...P1, ...perfectP, ...empty, ...P2, ...perfectP, ...empty];
  const targets = [...G1, ...perfectG, ...empty, ...G2, ...perfectG, ...empty];
  const acc = new DiceAccumulator(3);
  acc.add(preds, targets, [2, 3, 2, 2]);
  const d = acc.dice();
  close(d[0], 2 / 3, 'class 0');
  assert.is(d[1], 1);
  assert.is(d[2], 0, 'no prediction and no target: 0 (torchmetrics zero_division)');
  close(acc.meanDice(), (2 / 3 + 1 + 0) / 3, 'mean');
  // Logits with threshold 0 give the same counts as probabilities with 0.5.
  const logit = (p: number): number => Math.log(p / (1 - p));
  const acc0 = new DiceAccumulator(1, 0);
  acc0.add(
    [...P1, ...P2].map((p) => (p === 0 ? -30 : logit(p))),
    [...G1, ...G2],
  );
  close(acc0.dice()[0], 2 / 3, 'logits');
});

test('Dice input errors', () => {
  const acc = new DiceAccumulator(2);
  assert.throws(() => acc.add([0.5], [1]), /Dice: 2 classes need shape \[batch, 2, \.\.\.pixels\], got no shape/);
  assert.throws(() => acc.add([0.5, 0.5], [1, 0], [1, 3]), /Dice: shape \[1, 3\] holds 3 values but 2 were given/);
  assert.throws(() => new DiceAccumulator().add([0.5, 0.5], [1]), /Dice: 2 predictions but 1 target pixels/);
  assert.throws(() => new DiceAccumulator().add([0.5, NaN], [1, 0]), /Dice: prediction 1 is NaN/);
  assert.throws(() => new DiceAccumulator().add([0.5, 0.5], [1, 0.5]), /Dice: target pixel 1 is 0\.5; masks must be exactly 0 or 1/);
  assert.throws(() => new DiceAccumulator(0), /Dice: classes must be a whole number ≥ 1, got 0/);
});

test('soft Dice loss by hand (the reference DiceLoss: smooth 0, eps 1e-7, no-positive batches give 0)', () => {
  // Σpg = .9 + .4 + .7 + .6 = 2.6, Σp = 3.4, Σg = 5 → D = 5.2/8.4 = 13/21, loss 8/21.
  const p = [...P1, ...P2];
  const g = [...G1, ...G2];
  close(softDiceLoss(p, g), 8 / 21, 'loss', 1e-15);
  // From logits: sigmoid first.
  close(
    softDiceLoss(
      p.map((x) => Math.log(x / (1 - x))),
      g,
      { fromLogits: true },
    ),
    8 / 21,
    'logits',
    1e-12,
  );
  // smooth 1: (5.2 + 1)/(8.4 + 1) → loss 3.2/9.4.
  close(softDiceLoss(p, g, { smooth: 1 }), 3.2 / 9.4, 'smooth 1', 1e-15);
  assert.is(softDiceLoss([0.9, 0.2], [0, 0]), 0, 'no positive pixel: masked out');
  // All-zero predictions on positive targets: D = 0 → loss 1.
  assert.is(softDiceLoss([0, 0], [1, 0]), 1);
  assert.throws(() => softDiceLoss([0.5], [2]), /soft Dice: target 0 is 2; targets lie in \[0, 1\]/);
  assert.throws(() => softDiceLoss([NaN], [1]), /soft Dice: prediction 0 is NaN/);
});

// ---------------------------------------------------------------- statistics

test('mean ± 1.96·s/√N with the sample standard deviation; interval overlap', () => {
  // [.50 .52 .48 .51 .49]: mean .5, squared deviations 0 + 4e-4 + 4e-4 + 1e-4 + 1e-4 = 1e-3,
  // s² = 1e-3/4 = 2.5e-4, s = .0158114, half-width 1.96·s/√5 = 1.96·√(5e-5) = .0138593.
  const a = meanInterval([0.5, 0.52, 0.48, 0.51, 0.49]);
  close(a.mean, 0.5, 'mean');
  close(a.std, Math.sqrt(2.5e-4), 'std');
  close(a.halfWidth, 1.96 * Math.sqrt(5e-5), 'half width');
  close(a.low, 0.5 - 1.96 * Math.sqrt(5e-5), 'low');
  assert.is(a.n, 5);
  // 0.53 ± 0.01 vs 0.5 ± 0.01386: gap 0.03 > 0.02386 → separate; 0.52 ± 0.01: 0.02 ≤ 0.02386 → overlap.
  assert.is(intervalsOverlap(a, { low: 0.52, high: 0.54 }), false);
  assert.is(intervalsOverlap(a, { low: 0.51, high: 0.53 }), true);
  assert.is(intervalsOverlap({ low: 0, high: 1 }, { low: 1, high: 2 }), true, 'touching counts');
  // Identical runs (the reference's repeated seed) give a zero-width interval.
  assert.is(meanInterval([0.3, 0.3, 0.3]).halfWidth, 0);
  assert.throws(() => meanInterval([0.4]), /confidence interval: needs at least 2 runs, got 1/);
  assert.throws(() => meanInterval([0.4, NaN]), /confidence interval: run 1 has value NaN/);
});

// ---------------------------------------------------------------- grounding

/*
 * A 3×3 grid over a 6×6 mask: cell centres sample pixel rows/columns ⌊(i + ½)·2⌋ = 1, 3, 5.
 * The mask is the columns x = 2, 3: only centre column 3 lies in it → cells 1, 4, 7 inside.
 * Attention [0 .1 .2 / 0 .3 .1 / 0 .2 .1]: argmax cell 4 (.3) is inside → hit; chance 3/9.
 * CNR: inside {.1 .3 .2}: mean .2, variance .02/3 = 1/150; outside {0 .2 0 .1 0 .1}: mean 1/15,
 *   variance .06/6 − 1/225 = 1/180; |.2 − 1/15| / √(1/150 + 1/180) = (2/15) / (√11/30) = 4/√11.
 */
const MASK6 = Array.from({ length: 36 }, (_, i) => (i % 6 === 2 || i % 6 === 3 ? 1 : 0));
const SAMPLE: GroundingSample = { attention: [0, 0.1, 0.2, 0, 0.3, 0.1, 0, 0.2, 0.1], gridHeight: 3, gridWidth: 3, mask: MASK6, maskHeight: 6, maskWidth: 6 };

test('grounding worked example: cells by centre pixel, pointing game, chance, CNR', () => {
  assert.equal([...cellsInMask(MASK6, 6, 6, 3, 3)], [0, 1, 0, 0, 1, 0, 0, 1, 0]);
  close(groundingCNR(SAMPLE), 4 / Math.sqrt(11), 'CNR');
  // A second finding whose mask holds only pixel (0, 0): no cell centre inside → a miss, chance 0.
  const tiny = { ...SAMPLE, mask: MASK6.map((_, i) => (i === 0 ? 1 : 0)) };
  const r = pointingGame([SAMPLE, tiny]);
  assert.equal(r, { accuracy: 0.5, chance: (3 / 9 + 0) / 2, hits: 1, samples: 2 });
  assert.throws(() => groundingCNR(tiny), /CNR: the mask covers 0 of 9 values; both inside and outside must be non-empty/);
  // Ties go to the first cell in row-major order: uniform attention points at cell 0 (outside here).
  assert.is(pointingGame([{ ...SAMPLE, attention: new Array(9).fill(1 / 9) }]).hits, 0);
  assert.is(pointingGame([{ ...SAMPLE, attention: [0, 0.5, 0, 0, 0.5, 0, 0, 0, 0] }]).hits, 1);
});

test('7×7 grid over 224²: cell (r, c) samples pixel (16 + 32r, 16 + 32c)', () => {
  const at = (y: number, x: number): Uint8Array => {
    const m = new Uint8Array(224 * 224);
    m[y * 224 + x] = 1;
    return m;
  };
  assert.equal([...cellsInMask(at(16, 16), 224, 224, 7, 7)].indexOf(1), 0);
  assert.equal([...cellsInMask(at(16 + 32 * 6, 16 + 32 * 2), 224, 224, 7, 7)].indexOf(1), 6 * 7 + 2);
  assert.equal([...cellsInMask(at(15, 15), 224, 224, 7, 7)].indexOf(1), -1);
  assert.equal([...cellsInMask(at(17, 16), 224, 224, 7, 7)].indexOf(1), -1);
});

test('CNR directly: equal maps, perfect separation, input errors', () => {
  assert.is(contrastToNoiseRatio([0.2, 0.2, 0.2, 0.2], [1, 0, 1, 0]), 0);
  assert.is(contrastToNoiseRatio([1, 0, 1, 0], [1, 0, 1, 0]), Infinity);
  // Population variances: inside {1, 3} var 1, outside {0, 0} var 0 → |2 − 0| / 1 = 2.
  assert.is(contrastToNoiseRatio([1, 3, 0, 0], [1, 1, 0, 0]), 2);
  assert.throws(() => contrastToNoiseRatio([1, 2], [1]), /CNR: 2 values but 1 mask entries/);
  assert.throws(() => contrastToNoiseRatio([1, NaN], [1, 0]), /CNR: value 1 is NaN/);
  assert.throws(() => pointingGame([{ ...SAMPLE, attention: [1, 2] }]), /pointing game: sample 0: attention has 2 values but the grid is 3×3 = 9/);
  assert.throws(() => pointingGame([{ ...SAMPLE, mask: [1] }]), /pointing game: sample 0: mask has 1 pixels but is declared 6×6 = 36/);
  assert.throws(() => pointingGame([{ ...SAMPLE, attention: [0, NaN, 0, 0, 0, 0, 0, 0, 0] }]), /sample 0: attention value 1 is NaN/);
  assert.throws(() => pointingGame([]), /pointing game: no samples/);
});

test.run();
