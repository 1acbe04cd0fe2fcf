// Detection metrics of the downstream evaluation (method §6): mAP over IoU thresholds
// 0.40:0.05:0.75 with COCO's 101-point interpolation (RSNA YOLOv3 tasks), and the
// Object-CXR FROC (mean sensitivity at 0.125 … 8 false positives per image). Exact
// definitions, tie-breaking and where the LoVT reference differs: docs/evaluation.md.

import {
  boxCentre,
  boxIoU,
  checkBox,
  checkLabel,
  checkScoredBox,
  pointInBox,
  rankByScore,
  type LabelledBox,
  type PixelOffset,
  type ScoredBox,
} from './boxes.ts';

/** One test image: its predicted boxes (after NMS) and its ground truth (possibly none). */
export interface DetectionImage {
  detections: readonly ScoredBox[];
  truths: readonly LabelledBox[];
}

/** The paper's IoU thresholds 0.40, 0.45, …, 0.75 (written out: no accumulated float steps). */
export const MAP_IOU_THRESHOLDS: readonly number[] = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75];

/** Recall points 0, 0.01, …, 1 of COCO's interpolated AP. */
export const RECALL_POINTS = 101;

/**
 * 'coco': IoU in continuous coordinates, a match needs IoU ≥ t, classes without ground
 * truth are left out of the mean. 'lovt-reference': as the reference's
 * mean_average_precision library ("soft" policy): +1 pixel IoU, IoU > t, and a class
 * without ground truth counts as AP 0.
 */
export type MapConvention = 'coco' | 'lovt-reference';

export interface MapOptions {
  iouThresholds?: readonly number[];
  /** Number of classes; default 1 + the largest label seen. Labels must be below it. */
  classes?: number;
  convention?: MapConvention;
}

export interface MapResult {
  /** Mean over IoU thresholds and classes (the paper's number); NaN when no class has ground truth under 'coco'. */
  map: number;
  iouThresholds: number[];
  /** ap[t][c]: AP of class c at iouThresholds[t]; null for a class without ground truth (left out, 'coco'). */
  ap: (number | null)[][];
  /** Per IoU threshold: mean AP over the counted classes. */
  mapPerThreshold: number[];
  /** Per class: mean AP over the thresholds (null: no ground truth, 'coco'). */
  apPerClass: (number | null)[];
  /** Ground-truth boxes per class. */
  truthsPerClass: number[];
}

function checkImages(images: readonly DetectionImage[], what: string, classes?: number): void {
  images.forEach((img, i) => {
    if (!img || !Array.isArray(img.detections) || !Array.isArray(img.truths)) {
      throw new Error(`${what}: image ${i} needs 'detections' and 'truths' arrays (empty when there are none)`);
    }
    img.detections.forEach((d, j) => checkScoredBox(d, `${what}: image ${i}, detection ${j}`, classes));
    img.truths.forEach((g, j) => {
      checkBox(g.box, `${what}: image ${i}, ground-truth box ${j}`);
      checkLabel(g.label ?? 0, `${what}: image ${i}, ground-truth box ${j}`, classes);
    });
  });
}

/**
 * COCO's 101-point interpolated AP of one ranked detection list: `tp[i]` says whether the
 * i-th detection (by descending score) matched; `truths` > 0 is the number of ground-truth
 * boxes. AP = (1/101) Σ_k p̂(k/100) with p̂(r) = max{precision_i : recall_i ≥ r} (0 if no
 * detection reaches recall r). Recall is compared exactly: 100·TP_i ≥ k·truths.
 */
export function interpolatedAP(tp: readonly boolean[], truths: number): number {
  if (!(Number.isInteger(truths) && truths > 0)) throw new Error(`AP: the number of ground-truth boxes must be a whole number ≥ 1, got ${truths}`);
  const n = tp.length;
  const cumTp = new Float64Array(n);
  const envelope = new Float64Array(n);
  let hits = 0;
  for (let i = 0; i < n; i++) {
    if (tp[i]) hits++;
    cumTp[i] = hits;
    envelope[i] = hits / (i + 1);
  }
  // Precision envelope: the best precision at this rank or any later (higher-recall) one.
  for (let i = n - 2; i >= 0; i--) envelope[i] = Math.max(envelope[i], envelope[i + 1]);
  let sum = 0;
  let i = 0;
  for (let k = 0; k < RECALL_POINTS; k++) {
    while (i < n && 100 * cumTp[i] < k * truths) i++;
    if (i === n) break;
    sum += envelope[i];
  }
  return sum / RECALL_POINTS;
}

/**
 * Greedy matching of one class at one IoU threshold: detections by descending score (ties:
 * image order, then detection order), each matched to the unmatched ground-truth box of
 * its image with the highest IoU passing the threshold (IoU ties: the lower box index).
 * Returns the ranked TP flags.
 */
function matchClass(
  ranked: readonly { image: number; ious: Float64Array }[],
  truthsPerImage: readonly number[],
  threshold: number,
  strict: boolean,
): boolean[] {
  const matched = truthsPerImage.map((n) => new Uint8Array(n));
  return ranked.map(({ image, ious }) => {
    let best = -1;
    let bestIoU = -Infinity;
    for (let g = 0; g < ious.length; g++) {
      const iou = ious[g];
      if (matched[image][g] || (strict ? !(iou > threshold) : !(iou >= threshold))) continue;
      if (iou > bestIoU) {
        best = g;
        bestIoU = iou;
      }
    }
    if (best < 0) return false;
    matched[image][best] = 1;
    return true;
  });
}

/** Mean average precision over IoU thresholds (default: the paper's 0.40:0.05:0.75). */
export function detectionMAP(images: readonly DetectionImage[], opts: MapOptions = {}): MapResult {
  const convention = opts.convention ?? 'coco';
  const offset: PixelOffset = convention === 'lovt-reference' ? 1 : 0;
  const thresholds = [...(opts.iouThresholds ?? MAP_IOU_THRESHOLDS)];
  thresholds.forEach((t, i) => {
    if (!(t >= 0 && t <= 1)) throw new Error(`mAP: IoU threshold ${i} is ${t}; thresholds lie in [0, 1]`);
  });
  if (thresholds.length === 0) throw new Error('mAP: no IoU thresholds given');
  if (opts.classes !== undefined && !(Number.isInteger(opts.classes) && opts.classes >= 1)) {
    throw new Error(`mAP: classes must be a whole number ≥ 1, got ${opts.classes}`);
  }
  checkImages(images, 'mAP', opts.classes);
  let classes = opts.classes ?? 1;
  for (const img of images) for (const b of [...img.detections, ...img.truths]) classes = Math.max(classes, (b.label ?? 0) + 1);

  const truthsPerClass = new Array<number>(classes).fill(0);
  const ap: (number | null)[][] = thresholds.map(() => []);
  for (let c = 0; c < classes; c++) {
    // Per image: this class's ground truth; per detection of this class: its IoU with each of them.
    const truthBoxes = images.map((img) => img.truths.filter((g) => (g.label ?? 0) === c).map((g) => g.box));
    const truthsPerImage = truthBoxes.map((t) => t.length);
    truthsPerClass[c] = truthsPerImage.reduce((a, b) => a + b, 0);
    const dets: { image: number; score: number; ious: Float64Array }[] = [];
    images.forEach((img, i) => {
      for (const d of img.detections) {
        if ((d.label ?? 0) !== c) continue;
        dets.push({ image: i, score: d.score, ious: Float64Array.from(truthBoxes[i], (g) => boxIoU(d.box, g, offset)) });
      }
    });
    const ranked = rankByScore(dets.map((d) => d.score)).map((i) => dets[i]);
    thresholds.forEach((t, ti) => {
      if (truthsPerClass[c] === 0) {
        // COCO leaves the class out; the reference's recall is TP / max(n, 1) = 0, so AP 0.
        ap[ti].push(convention === 'coco' ? null : 0);
        return;
      }
      ap[ti].push(interpolatedAP(matchClass(ranked, truthsPerImage, t, convention === 'lovt-reference'), truthsPerClass[c]));
    });
  }
  const meanOf = (xs: (number | null)[]): number => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length === 0 ? NaN : v.reduce((a, b) => a + b, 0) / v.length;
  };
  const mapPerThreshold = ap.map(meanOf);
  const apPerClass = truthsPerClass.map((n, c) => (n === 0 && convention === 'coco' ? null : meanOf(ap.map((row) => row[c]))));
  return { map: meanOf(mapPerThreshold), iouThresholds: thresholds, ap, mapPerThreshold, apPerClass, truthsPerClass };
}

/** The Object-CXR operating points, in false positives per image. */
export const FROC_FPS_PER_IMAGE: readonly number[] = [0.125, 0.25, 0.5, 1, 2, 4, 8];

/**
 * 'reference': exactly the Object-CXR challenge script (and the LoVT reference's copy):
 * a sensitivity is recorded when the false-positive count first reaches t·N, at most one
 * operating point per detection, and operating points never reached repeat the last
 * recorded value (or take the final sensitivity if none was recorded).
 * 'corrected': S(t) = sensitivity of the longest ranked prefix with FP < t·N, i.e. with
 * all detections when t·N is never reached.
 */
export type FrocVariant = 'reference' | 'corrected';

export interface FrocOptions {
  fpsPerImage?: readonly number[];
  variant?: FrocVariant;
}

export interface FrocResult {
  /** Mean of `sensitivities`. */
  froc: number;
  fpsPerImage: number[];
  sensitivities: number[];
  /** Ground-truth boxes hit by all detections, of `truths`. */
  hits: number;
  truths: number;
  /** Detections whose centre lies in no ground-truth box of their image. */
  falsePositives: number;
  images: number;
}

/**
 * FROC over all images (labels are ignored: Object-CXR has one class). Detections are
 * ranked by descending score over the whole set (ties: image order, then detection order).
 * A detection whose centre lies inside (border included) one or more ground-truth boxes of
 * its image hits each of those not hit before; if it lies in none it is a false positive;
 * a detection only inside already-hit boxes is neither.
 */
export function froc(images: readonly DetectionImage[], opts: FrocOptions = {}): FrocResult {
  const fps = [...(opts.fpsPerImage ?? FROC_FPS_PER_IMAGE)];
  const variant = opts.variant ?? 'reference';
  fps.forEach((t, i) => {
    if (!(t > 0) || (i > 0 && !(t > fps[i - 1]))) throw new Error(`FROC: false positives per image must be positive and increasing, got [${fps.join(', ')}]`);
  });
  if (fps.length === 0) throw new Error('FROC: no operating points given');
  checkImages(images, 'FROC');
  const n = images.length;
  if (n === 0) throw new Error('FROC: no images');
  const truths = images.reduce((a, img) => a + img.truths.length, 0);
  if (truths === 0) throw new Error(`FROC: the ${n} images hold no ground-truth box, so sensitivity is undefined`);

  const dets = images.flatMap((img, i) => img.detections.map((d) => ({ image: i, score: d.score, centre: boxCentre(d.box) })));
  const hitSets = images.map((img) => new Uint8Array(img.truths.length));
  let hits = 0;
  let falsePositives = 0;
  const recorded: number[] = []; // 'reference': one value per operating point reached
  const corrected: number[] = new Array(fps.length).fill(NaN);
  for (const d of rankByScore(dets.map((x) => x.score)).map((i) => dets[i])) {
    const [x, y] = d.centre;
    let inside = false;
    images[d.image].truths.forEach((g, j) => {
      if (!pointInBox(x, y, g.box)) return;
      inside = true;
      if (!hitSets[d.image][j]) {
        hitSets[d.image][j] = 1;
        hits++;
      }
    });
    if (!inside) {
      // Corrected: every operating point this false positive reaches keeps the sensitivity before it.
      for (let k = 0; k < fps.length; k++) if (Number.isNaN(corrected[k]) && (falsePositives + 1) / n >= fps[k]) corrected[k] = hits / truths;
      falsePositives++;
    }
    if (recorded.length < fps.length && falsePositives / n >= fps[recorded.length]) recorded.push(hits / truths);
  }
  let sensitivities: number[];
  if (variant === 'reference') {
    sensitivities = [...recorded];
    const fill = recorded.length > 0 ? recorded[recorded.length - 1] : hits / truths;
    while (sensitivities.length < fps.length) sensitivities.push(fill);
  } else {
    sensitivities = corrected.map((s) => (Number.isNaN(s) ? hits / truths : s));
  }
  return {
    froc: sensitivities.reduce((a, b) => a + b, 0) / sensitivities.length,
    fpsPerImage: fps,
    sensitivities,
    hits,
    truths,
    falsePositives,
    images: n,
  };
}
