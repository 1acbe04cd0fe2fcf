// The host side of the YOLOv3 heads (models/eval/yolov3.lovt): anchors, the target tensors
// fed to the head and the decoding of its raw outputs into detections, as the LoVT
// reference's YOLOv3Loss.get_targets / forward and non_max_suppression
// (src/models/downstream/detection.py, after BobLiu20/YOLOv3_PyTorch). Platform-neutral.
//
// Target building follows the reference, quirks included (docs/evaluation.md, "Heads:
// YOLOv3"): every scale assigns every box to the best of *its own* three anchors (so a box
// is a positive at all three scales); the anchor match and the ignore mask use the IoU of
// the box's and the anchors' shapes (both placed at the origin) in grid units with the
// VOC +1; the ignore mask clears only the box's own cell; a later box in the same cell and
// anchor overwrites the earlier one's offsets (its class bit is added, not replaced).

import {
  boxIoU,
  checkBox,
  checkLabel,
  cxcywhToXyxy,
  nonMaxSuppression,
  YOLO_NMS_IOU,
  YOLO_SCORE_THRESHOLD,
  type LabelledBox,
  type ScoredBox,
} from './boxes.ts';

/** Anchor sizes [w, h] in pixels at 224², per scale, coarsest first (the reference's order). */
export const YOLO_ANCHORS_224: readonly (readonly (readonly [number, number])[])[] = [
  [
    [64.64, 48.6],
    [84.24, 106.92],
    [201.42, 176.04],
  ],
  [
    [16.2, 32.94],
    [33.48, 24.3],
    [31.86, 64.26],
  ],
  [
    [5.4, 7.02],
    [8.64, 16.2],
    [17.82, 12.42],
  ],
];

/** Anchors per scale. */
export const YOLO_ANCHORS_PER_SCALE = 3;

/** The reference's ignore threshold: anchors whose shape IoU with a box exceeds it are no negatives there. */
export const YOLO_IGNORE_IOU = 0.5;

/** Channels of a target tensor per anchor, before the one-hot class channels. */
export const YOLO_TARGET_CHANNELS = ['obj', 'noobj', 'tx', 'ty', 'tw', 'th'] as const;

/** The three scales: the feature map each reads, its stride, and the head's output and target names. */
export const YOLO_SCALES = [
  { layer: 'layer4', stride: 32, output: 'raw_layer4', target: 'target_layer4' },
  { layer: 'layer3', stride: 16, output: 'raw_layer3', target: 'target_layer3' },
  { layer: 'layer2', stride: 8, output: 'raw_layer2', target: 'target_layer2' },
] as const;

/** The head's raw outputs to read back, [batch, 3·(5 + classes), g, g] each. */
export const YOLO_OUTPUTS: readonly string[] = YOLO_SCALES.map((s) => s.output);

export interface YoloScale {
  layer: string;
  output: string;
  target: string;
  stride: number;
  /** Cells per side: imageSize / stride. */
  grid: number;
  /** [w, h] in pixels of this image size: the 224² anchors · imageSize / 224. */
  anchors: [number, number][];
}

/** The scales of a head at `imageSize` (a multiple of 32), anchors scaled from 224². */
export function yoloScales(imageSize: number): YoloScale[] {
  if (!Number.isInteger(imageSize) || imageSize <= 0 || imageSize % 32 !== 0)
    throw new Error(`YOLOv3: image size ${imageSize} must be a positive multiple of 32 (the layer4 stride)`);
  return YOLO_SCALES.map((s, i) => ({
    ...s,
    grid: imageSize / s.stride,
    anchors: YOLO_ANCHORS_224[i].map(([w, h]) => [w * (imageSize / 224), h * (imageSize / 224)] as [number, number]),
  }));
}

export interface YoloOptions {
  imageSize: number;
  classes: number;
  batch: number;
}

function checkOptions({ imageSize, classes, batch }: YoloOptions): YoloScale[] {
  if (!Number.isInteger(classes) || classes < 1) throw new Error(`YOLOv3: classes must be a whole number ≥ 1, got ${classes}`);
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`YOLOv3: batch must be a whole number ≥ 1, got ${batch}`);
  return yoloScales(imageSize);
}

/**
 * The head's target inputs for one batch: per scale `target_<layer>` f32[batch, 3, 6 + classes,
 * g, g], channels obj mask, noobj mask, tx, ty (offset of the box centre in its cell, 0..1),
 * tw, th (log of box size / anchor size), one-hot class. `boxes[b]` are image b's boxes in
 * eval-image pixels [x1, y1, x2, y2]; images past boxes.length (padding) have none.
 */
export function yoloTargets(boxes: readonly (readonly LabelledBox[])[], opts: YoloOptions): Record<string, Float32Array> {
  const scales = checkOptions(opts);
  const { imageSize, classes, batch } = opts;
  if (boxes.length > batch) throw new Error(`yoloTargets: ${boxes.length} images of boxes for a batch of ${batch}`);
  const attrs = YOLO_TARGET_CHANNELS.length + classes;
  const out: Record<string, Float32Array> = {};
  for (const scale of scales) {
    const g = scale.grid;
    const t = new Float32Array(batch * YOLO_ANCHORS_PER_SCALE * attrs * g * g);
    const at = (b: number, a: number, k: number, j: number, i: number) => (((b * YOLO_ANCHORS_PER_SCALE + a) * attrs + k) * g + j) * g + i;
    for (let b = 0; b < batch; b++) for (let a = 0; a < YOLO_ANCHORS_PER_SCALE; a++) t.fill(1, at(b, a, 1, 0, 0), at(b, a, 2, 0, 0));
    // The reference works in grid units: boxes and anchors divided by the stride.
    const rescale = g / imageSize;
    const anchors = scale.anchors.map(([w, h]) => [w * rescale, h * rescale]);
    boxes.forEach((image, b) =>
      image.forEach(({ box, label = 0 }, n) => {
        const where = `yoloTargets: image ${b}, box ${n}`;
        checkBox(box, where);
        checkLabel(label, where, classes);
        const gw = (box[2] - box[0]) * rescale;
        const gh = (box[3] - box[1]) * rescale;
        const gx = box[0] * rescale + gw / 2;
        const gy = box[1] * rescale + gh / 2;
        // The reference truncates and clamps to the last cell only; a centre left of or
        // above the image (impossible for boxes inside it) goes to the first cell here.
        const gi = Math.max(0, Math.min(Math.trunc(gx), g - 1));
        const gj = Math.max(0, Math.min(Math.trunc(gy), g - 1));
        const ious = anchors.map(([aw, ah]) => boxIoU([0, 0, gw, gh], [0, 0, aw, ah], 1));
        let best = 0;
        ious.forEach((v, a) => {
          if (v > YOLO_IGNORE_IOU) t[at(b, a, 1, gj, gi)] = 0;
          if (v > ious[best]) best = a; // the first maximum, as torch.argmax
        });
        t[at(b, best, 0, gj, gi)] = 1;
        t[at(b, best, 2, gj, gi)] = gx - gi;
        t[at(b, best, 3, gj, gi)] = gy - gj;
        // + 1e-16 as the reference: a zero-size box gets a finite target.
        t[at(b, best, 4, gj, gi)] = Math.log(gw / anchors[best][0] + 1e-16);
        t[at(b, best, 5, gj, gi)] = Math.log(gh / anchors[best][1] + 1e-16);
        t[at(b, best, YOLO_TARGET_CHANNELS.length + label, gj, gi)] = 1;
      }),
    );
    out[scale.target] = t;
  }
  return out;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Detections of the first `valid` images of a batch from the head's raw outputs: box centre
 * (σ(x) + column, σ(y) + row)·stride, size e^w·anchor, score σ(objectness), class the arg-max
 * of the class logits (0 with one class); then confidence ≥ 0.2 and per-class NMS at IoU 0.4
 * with the reference's +1-pixel IoU. Boxes are not clipped to the image (nor are the
 * reference's). A box that is not finite (NaN, or e^w overflowing, in a diverged head) is dropped.
 */
export function yoloDetections(outputs: Record<string, Float32Array | Int32Array>, opts: YoloOptions & { valid: number }): ScoredBox[][] {
  const scales = checkOptions(opts);
  const { classes, batch, valid } = opts;
  if (!Number.isInteger(valid) || valid < 0 || valid > batch) throw new Error(`yoloDetections: valid = ${valid} must be a whole number in 0..${batch}`);
  const attrs = 5 + classes;
  for (const s of scales) {
    const raw = outputs[s.output];
    const want = batch * YOLO_ANCHORS_PER_SCALE * attrs * s.grid * s.grid;
    if (!(raw instanceof Float32Array))
      throw new Error(`yoloDetections: output '${s.output}' ${raw ? 'is not f32' : 'is missing'}; the YOLOv3 head's outputs are ${YOLO_OUTPUTS.join(', ')}`);
    if (raw.length !== want)
      throw new Error(
        `yoloDetections: output '${s.output}' has ${raw.length} values, expected ${want} = [${batch}, ${YOLO_ANCHORS_PER_SCALE * attrs}, ${s.grid}, ${s.grid}] (batch ${batch}, ${classes} classes, image size ${opts.imageSize})`,
      );
  }
  const result: ScoredBox[][] = [];
  for (let b = 0; b < valid; b++) {
    const candidates: ScoredBox[] = [];
    for (const s of scales) {
      const raw = outputs[s.output];
      const g = s.grid;
      const cells = g * g;
      for (let a = 0; a < YOLO_ANCHORS_PER_SCALE; a++) {
        const base = (b * YOLO_ANCHORS_PER_SCALE + a) * attrs * cells;
        for (let j = 0; j < g; j++) {
          for (let i = 0; i < g; i++) {
            const v = (k: number) => raw[base + k * cells + j * g + i];
            const score = sigmoid(v(4));
            if (!(score >= YOLO_SCORE_THRESHOLD)) continue;
            const centreSize = [
              (sigmoid(v(0)) + i) * s.stride,
              (sigmoid(v(1)) + j) * s.stride,
              Math.exp(v(2)) * s.anchors[a][0],
              Math.exp(v(3)) * s.anchors[a][1],
            ];
            if (!centreSize.every(Number.isFinite)) continue;
            let label = 0;
            for (let c = 1; c < classes; c++) if (v(5 + c) > v(5 + label)) label = c;
            candidates.push({ box: cxcywhToXyxy(centreSize), score, label });
          }
        }
      }
    }
    result.push(nonMaxSuppression(candidates, { scoreThreshold: YOLO_SCORE_THRESHOLD, iouThreshold: YOLO_NMS_IOU, pixelOffset: 1 }));
  }
  return result;
}
