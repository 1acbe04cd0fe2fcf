// Axis-aligned boxes for the detection metrics (method §6): formats, IoU and the greedy
// per-class non-maximum suppression of the YOLOv3 decoding. A box is [x1, y1, x2, y2] in
// continuous pixel coordinates (pixel i covers [i, i+1)), COCO's convention: width = x2 − x1.
// The LoVT reference (its YOLOv3 NMS and the mean_average_precision library behind its
// mAP) uses the VOC "+1" convention instead (width = x2 − x1 + 1); `pixelOffset: 1`
// reproduces it. Definitions and conventions: docs/evaluation.md, "Metrics".

/** [x1, y1, x2, y2]. */
export type Box = readonly [number, number, number, number];

/** A ground-truth box; `label` is the class index (0 when absent). */
export interface LabelledBox {
  box: Box;
  label?: number;
}

/** A predicted box with its confidence. */
export interface ScoredBox extends LabelledBox {
  score: number;
}

/** 0: continuous coordinates (COCO, the default); 1: inclusive pixel indices (VOC, the LoVT reference). */
export type PixelOffset = 0 | 1;

/** Throws unless `box` is four finite numbers with x2 ≥ x1 and y2 ≥ y1; `where` locates it in the message. */
export function checkBox(box: Box, where: string): void {
  if (box == null || box.length !== 4) throw new Error(`${where}: a box must be [x1, y1, x2, y2], got ${JSON.stringify(box)}`);
  for (let i = 0; i < 4; i++) {
    if (typeof box[i] !== 'number' || !Number.isFinite(box[i]))
      throw new Error(`${where}: box coordinate ${i} is ${box[i]} in [${box.join(', ')}]; coordinates must be finite`);
  }
  if (box[2] < box[0])
    throw new Error(`${where}: negative width in [${box.join(', ')}] (x2 < x1); boxes are [x1, y1, x2, y2], convert [x, y, w, h] with xywhToXyxy`);
  if (box[3] < box[1])
    throw new Error(`${where}: negative height in [${box.join(', ')}] (y2 < y1); boxes are [x1, y1, x2, y2], convert [x, y, w, h] with xywhToXyxy`);
}

function checkSize(w: number, h: number, given: readonly number[], format: string): void {
  if (!(w >= 0) || !(h >= 0) || !given.every(Number.isFinite)) {
    throw new Error(`${format} box [${given.join(', ')}]: width and height must be finite and ≥ 0`);
  }
}

/** [x, y, w, h] (top-left corner and size: COCO's and the reference datasets' format) → [x1, y1, x2, y2]. */
export function xywhToXyxy(b: readonly number[]): Box {
  checkSize(b[2], b[3], b, '[x, y, w, h]');
  return [b[0], b[1], b[0] + b[2], b[1] + b[3]];
}

/** [cx, cy, w, h] (centre and size: YOLO's output) → [x1, y1, x2, y2]. */
export function cxcywhToXyxy(b: readonly number[]): Box {
  checkSize(b[2], b[3], b, '[cx, cy, w, h]');
  return [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2];
}

export function xyxyToXywh(b: Box): [number, number, number, number] {
  checkBox(b, 'xyxyToXywh');
  return [b[0], b[1], b[2] - b[0], b[3] - b[1]];
}

export function xyxyToCxcywh(b: Box): [number, number, number, number] {
  checkBox(b, 'xyxyToCxcywh');
  return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]];
}

/** The box's centre point (FROC's hit test uses it). */
export function boxCentre(b: Box): [number, number] {
  return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2];
}

/** Closed containment: a point on the border is inside (the Object-CXR FROC script's x1 ≤ x ≤ x2). */
export function pointInBox(x: number, y: number, b: Box): boolean {
  return b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3];
}

/**
 * Intersection over union of two valid boxes (unchecked: callers validate once).
 * Two boxes with zero union (both degenerate) have IoU 0.
 */
export function boxIoU(a: Box, b: Box, pixelOffset: PixelOffset = 0): number {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]) + pixelOffset;
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]) + pixelOffset;
  const inter = iw > 0 && ih > 0 ? iw * ih : 0;
  const areaA = (a[2] - a[0] + pixelOffset) * (a[3] - a[1] + pixelOffset);
  const areaB = (b[2] - b[0] + pixelOffset) * (b[3] - b[1] + pixelOffset);
  const union = areaA + areaB - inter;
  return union > 0 ? inter / union : 0;
}

/** Throws unless `label` is a whole number ≥ 0 (and < classes when given). */
export function checkLabel(label: number, where: string, classes?: number): void {
  if (!Number.isInteger(label) || label < 0 || (classes !== undefined && label >= classes)) {
    throw new Error(`${where}: label ${label} is not a class index${classes !== undefined ? ` in 0..${classes - 1}` : ' (a whole number ≥ 0)'}`);
  }
}

/** Validates a detection's box, score and label. */
export function checkScoredBox(d: ScoredBox, where: string, classes?: number): void {
  checkBox(d.box, where);
  if (typeof d.score !== 'number' || Number.isNaN(d.score)) throw new Error(`${where}: score is ${d.score}; scores must be numbers (not NaN)`);
  checkLabel(d.label ?? 0, where, classes);
}

/**
 * Indices of `scores` from highest to lowest; equal scores keep their input order
 * (a stable sort, as COCO's mergesort), so results never depend on the sort algorithm.
 */
export function rankByScore(scores: readonly number[]): number[] {
  return scores.map((_, i) => i).sort((i, j) => scores[j] - scores[i] || i - j);
}

export interface NmsOptions {
  /** Detections with score < this are dropped first (the reference keeps score ≥ 0.2). */
  scoreThreshold?: number;
  /** A box is suppressed by a kept box of the same class with IoU ≥ this (the reference's 0.4). */
  iouThreshold?: number;
  pixelOffset?: PixelOffset;
}

/** The YOLOv3 decoding of the reference: confidence 0.2, NMS IoU 0.4. */
export const YOLO_SCORE_THRESHOLD = 0.2;
export const YOLO_NMS_IOU = 0.4;

/**
 * Greedy non-maximum suppression of one image's detections, per class: keep the
 * highest-scoring remaining box, drop every remaining box of its class with IoU ≥
 * `iouThreshold` against it, repeat. A suppressed box suppresses nothing. Output: classes
 * in ascending order, within a class by descending score (ties in input order).
 */
export function nonMaxSuppression(detections: readonly ScoredBox[], opts: NmsOptions = {}): ScoredBox[] {
  const scoreThreshold = opts.scoreThreshold ?? YOLO_SCORE_THRESHOLD;
  const iouThreshold = opts.iouThreshold ?? YOLO_NMS_IOU;
  const offset = opts.pixelOffset ?? 0;
  detections.forEach((d, i) => checkScoredBox(d, `nms: detection ${i}`));
  const byClass = new Map<number, ScoredBox[]>();
  for (const d of detections) {
    if (!(d.score >= scoreThreshold)) continue;
    const label = d.label ?? 0;
    if (!byClass.has(label)) byClass.set(label, []);
    byClass.get(label)!.push(d);
  }
  const kept: ScoredBox[] = [];
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
    const group = byClass.get(label)!;
    const order = rankByScore(group.map((d) => d.score));
    const suppressed = new Uint8Array(group.length);
    for (let a = 0; a < order.length; a++) {
      if (suppressed[order[a]]) continue;
      const best = group[order[a]];
      kept.push(best);
      for (let b = a + 1; b < order.length; b++) {
        if (!suppressed[order[b]] && boxIoU(best.box, group[order[b]].box, offset) >= iouThreshold) suppressed[order[b]] = 1;
      }
    }
  }
  return kept;
}
