// SynthCXR images: a procedural frontal chest radiograph "phantom" with findings at named
// anatomical locations, plus an exact pixel mask for each finding.
//
// Coordinates: anatomy is described in patient coordinates (x, y) ∈ [0, 1]², x to the image
// right, y downwards, in the PA convention (the patient's RIGHT lung is on the image LEFT).
// Each image places the patient with a small similarity transform (rotation, scale, shift),
// so the frontal images of one study differ; every pixel is mapped back to patient
// coordinates and evaluated there. A finding's effect has compact support and its mask is
// exactly the set of pixels where the effect is non-zero, so masks and bounding boxes match
// what is drawn (the tests render with and without findings and compare).
import type { Rng } from '../random.ts';
import { Rng as SeededRng, deriveSeed } from '../random.ts';
import { makeImage, type GrayImage } from '../image.ts';

export type Side = 'right' | 'left';
export type Zone = 'upper' | 'middle' | 'lower';

export type FindingType = 'consolidation' | 'nodule' | 'effusion' | 'pneumothorax' | 'cardiomegaly' | 'line' | 'device';

export interface Finding {
  type: FindingType;
  side?: Side;
  zone?: Zone;
  /** Extra descriptors used by the report: severity, size, line kind. */
  severity?: 'small' | 'moderate' | 'large';
  sizeCm?: number;
  lineKind?: 'cvc' | 'ett';
  /** Shape parameters in patient coordinates (finding-specific). */
  shape: number[];
}

export interface PatientAnatomy {
  thoraxCx: number;
  thoraxHalfWidth: number;
  lungTop: number;
  /** Diaphragm level at the costophrenic angles, right and left. */
  baseRight: number;
  baseLeft: number;
  domeHeight: number;
  lungWidth: number;
  mediastinumHalfWidth: number;
  /** Cardiothoracic ratio without cardiomegaly. */
  normalCtr: number;
  heartHeight: number;
  ribCount: number;
  ribPhase: number;
  textureSeed: number;
  softTissue: number;
  lungDensity: number;
}

export interface ImagePlacement {
  view: 'PA' | 'AP';
  rotationDeg: number;
  scale: number;
  shiftX: number;
  shiftY: number;
  gamma: number;
  contrast: number;
  offset: number;
  noiseSigma: number;
  noiseSeed: number;
}

/** Draws a patient's normal anatomy. */
export function drawAnatomy(rng: Rng): PatientAnatomy {
  const baseRight = rng.uniform(0.7, 0.76);
  return {
    thoraxCx: rng.uniform(0.48, 0.52),
    thoraxHalfWidth: rng.uniform(0.36, 0.41),
    lungTop: rng.uniform(0.13, 0.18),
    baseRight,
    baseLeft: baseRight + rng.uniform(0.01, 0.03),
    domeHeight: rng.uniform(0.05, 0.08),
    lungWidth: rng.uniform(0.25, 0.29),
    mediastinumHalfWidth: rng.uniform(0.045, 0.06),
    normalCtr: rng.uniform(0.4, 0.47),
    heartHeight: rng.uniform(0.1, 0.13),
    ribCount: 9,
    ribPhase: rng.uniform(0, 1),
    textureSeed: rng.nextU32(),
    softTissue: rng.uniform(0.42, 0.5),
    lungDensity: rng.uniform(0.1, 0.16),
  };
}

export function drawPlacement(rng: Rng, view: 'PA' | 'AP'): ImagePlacement {
  return {
    view,
    rotationDeg: rng.uniform(-4, 4),
    scale: rng.uniform(0.94, 1.04),
    shiftX: rng.uniform(-0.035, 0.035),
    shiftY: rng.uniform(-0.035, 0.035),
    gamma: rng.uniform(0.85, 1.15),
    contrast: rng.uniform(0.9, 1.1),
    offset: rng.uniform(-0.03, 0.03),
    noiseSigma: rng.uniform(0.008, 0.02),
    noiseSeed: rng.nextU32(),
  };
}

// ---------------------------------------------------------------------------------------
// Anatomy geometry (patient coordinates).

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** A compact bump: (1 − r²)² inside r < 1, else 0. */
function bump(r2: number): number {
  return r2 < 1 ? (1 - r2) * (1 - r2) : 0;
}

interface LungGeometry {
  side: Side;
  medialX: number; // medial edge
  sign: number; // −1: lung extends to smaller x (right lung), +1: larger x (left lung)
  top: number;
  base: number; // diaphragm at the costophrenic angle
  dome: number;
  width: number;
}

function lungGeometry(a: PatientAnatomy, side: Side, inset = 0, topInset = 0): LungGeometry {
  const right = side === 'right';
  return {
    side,
    medialX: a.thoraxCx + (right ? -1 : 1) * a.mediastinumHalfWidth,
    sign: right ? -1 : 1,
    top: a.lungTop + topInset,
    base: right ? a.baseRight : a.baseLeft,
    dome: a.domeHeight,
    width: a.lungWidth - inset,
  };
}

/** Lung half-width profile: narrow rounded apex widening to full width by mid-height. */
function lungWidthAt(g: LungGeometry, y: number): number {
  const t = (y - g.top) / (g.base - g.top);
  if (t < 0) return 0;
  return g.width * (0.3 + 0.7 * Math.sin((Math.min(1, t / 0.75) * Math.PI) / 2));
}

/** Diaphragm height under x: a dome peaking medially-central, deepest at the lateral angle. */
function diaphragmAt(g: LungGeometry, x: number): number {
  const u = clamp01(((x - g.medialX) * g.sign) / g.width); // 0 medial … 1 lateral
  const peak = 0.45;
  const d = (u - peak) / (u < peak ? peak : 1 - peak);
  return g.base - g.dome * (1 - d * d);
}

/** Position across the lung, 0 at the medial edge, 1 at the lateral edge (NaN outside). */
function lungFraction(g: LungGeometry, x: number, y: number): number {
  if (y < g.top) return NaN;
  const w = lungWidthAt(g, y);
  const u = ((x - g.medialX) * g.sign) / w;
  if (!(u >= 0 && u <= 1)) return NaN;
  if (y > diaphragmAt(g, x)) return NaN;
  return u;
}

function inLung(g: LungGeometry, x: number, y: number): boolean {
  return !Number.isNaN(lungFraction(g, x, y));
}

interface HeartShape {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
}

/**
 * The cardiac silhouette for a cardiothoracic ratio. An enlarged heart keeps the normal
 * heart's centre and grows in both radii, so it always contains the normal silhouette.
 */
function heartShape(a: PatientAnatomy, ctr: number, view: 'PA' | 'AP'): HeartShape {
  const magnify = view === 'AP' ? 1.08 : 1; // AP projection magnifies the heart
  const normalRx = a.normalCtr * a.thoraxHalfWidth * magnify;
  const rx = ctr * a.thoraxHalfWidth * magnify;
  return {
    cx: a.thoraxCx + 0.3 * normalRx,
    cy: a.baseRight - a.domeHeight * 0.4 - a.heartHeight * magnify * 0.85,
    rx,
    ry: a.heartHeight * magnify * (1 + 0.5 * (rx / normalRx - 1)),
  };
}

function inEllipse(x: number, y: number, cx: number, cy: number, rx: number, ry: number): boolean {
  const dx = (x - cx) / rx;
  const dy = (y - cy) / ry;
  return dx * dx + dy * dy < 1;
}

/** Lung zone bounds as fractions of the lung's height (top → diaphragm). */
export const ZONE_RANGE: Record<Zone, [number, number]> = { upper: [0.05, 0.35], middle: [0.35, 0.65], lower: [0.65, 0.92] };

/** A point inside the given lung zone: (x, y) in patient coordinates. */
export function pointInZone(a: PatientAnatomy, side: Side, zone: Zone, rng: Rng): [number, number] {
  const g = lungGeometry(a, side);
  const [lo, hi] = ZONE_RANGE[zone];
  for (let attempt = 0; attempt < 100; attempt++) {
    const t = rng.uniform(lo + 0.04, hi - 0.04);
    const y = g.top + t * (g.base - g.dome - g.top);
    const u = rng.uniform(0.3, 0.75);
    const x = g.medialX + g.sign * u * lungWidthAt(g, y);
    if (inLung(g, x, y)) return [x, y];
  }
  throw new Error(`no point found in the ${side} ${zone} zone`);
}

// ---------------------------------------------------------------------------------------
// Findings: each returns its intensity effect at a point (0 outside its support).

/** Shape parameter layouts, by finding type (all in patient coordinates):
 *  consolidation: [x1, y1, r1, x2, y2, r2, x3, y3, r3, amplitude]
 *  nodule:        [x, y, r, amplitude]
 *  effusion:      [level y at the lateral wall, meniscus rise]
 *  pneumothorax:  [rim width]
 *  cardiomegaly:  [enlarged cardiothoracic ratio]
 *  line:          [x0, y0, cx, cy, x1, y1, half-width]  (quadratic Bézier)
 *  device:        [x, y, r]
 */
export function drawFindingShape(a: PatientAnatomy, f: Omit<Finding, 'shape'>, rng: Rng): number[] {
  switch (f.type) {
    case 'consolidation': {
      const [x, y] = pointInZone(a, f.side!, f.zone!, rng);
      const out: number[] = [];
      for (let k = 0; k < 3; k++) {
        const r = rng.uniform(0.035, 0.06);
        out.push(x + rng.uniform(-0.03, 0.03), y + rng.uniform(-0.03, 0.03), r);
      }
      out.push(rng.uniform(0.22, 0.35));
      return out;
    }
    case 'nodule': {
      const [x, y] = pointInZone(a, f.side!, f.zone!, rng);
      return [x, y, (f.sizeCm ?? 1.5) * 0.009, rng.uniform(0.25, 0.4)];
    }
    case 'effusion': {
      const g = lungGeometry(a, f.side!);
      const depth = f.severity === 'small' ? 0.06 : f.severity === 'moderate' ? 0.12 : 0.2;
      return [g.base - depth, rng.uniform(0.02, 0.05)];
    }
    case 'pneumothorax':
      return [f.severity === 'small' ? rng.uniform(0.025, 0.035) : rng.uniform(0.045, 0.06)];
    case 'cardiomegaly':
      return [rng.uniform(0.57, 0.66)];
    case 'line': {
      if (f.lineKind === 'ett') {
        const tipY = a.lungTop + rng.uniform(0.1, 0.14);
        return [a.thoraxCx, 0, a.thoraxCx + rng.uniform(-0.01, 0.01), tipY * 0.5, a.thoraxCx + rng.uniform(-0.005, 0.005), tipY, 0.007];
      }
      // Right internal jugular catheter: down the right neck, turning into the SVC.
      const x0 = a.thoraxCx - rng.uniform(0.09, 0.13);
      const tipX = a.thoraxCx - a.mediastinumHalfWidth * 0.6;
      const tipY = a.lungTop + rng.uniform(0.13, 0.18);
      return [x0, 0.02, x0 + 0.01, tipY * 0.75, tipX, tipY, 0.0045];
    }
    case 'device': {
      const [x, y] = pointInZone(a, f.side!, f.zone ?? 'upper', rng);
      return [x, y, rng.uniform(0.025, 0.04)];
    }
  }
}

/** Squared distance from (x, y) to a quadratic Bézier, by dense sampling (lines are short). */
function bezierDistance2(s: number[], x: number, y: number): number {
  let best = Infinity;
  const steps = 96;
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    const a = (1 - t) * (1 - t);
    const b = 2 * (1 - t) * t;
    const c = t * t;
    const px = a * s[0] + b * s[2] + c * s[4];
    const py = a * s[1] + b * s[3] + c * s[5];
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < best) best = d;
  }
  return best;
}

// ---------------------------------------------------------------------------------------
// Rendering.

class PhantomEvaluator {
  private readonly a: PatientAnatomy;
  private readonly findings: readonly Finding[];
  private readonly view: 'PA' | 'AP';
  private readonly lungs: Record<Side, LungGeometry>;
  private readonly heart: HeartShape;
  private readonly texture: { fx: number; fy: number; phase: number; amp: number }[];
  private readonly lineBoxes: ([number, number, number, number] | null)[];
  /** Per pneumothorax finding: the collapsed lung and its inner edge (pleural line width 0.006). */
  private readonly collapsedLungs: ([LungGeometry, LungGeometry] | null)[];

  constructor(a: PatientAnatomy, findings: readonly Finding[], view: 'PA' | 'AP') {
    this.a = a;
    this.findings = findings;
    this.view = view;
    this.lungs = { right: lungGeometry(a, 'right'), left: lungGeometry(a, 'left') };
    const cardiomegaly = findings.find((f) => f.type === 'cardiomegaly');
    this.heart = heartShape(a, cardiomegaly ? cardiomegaly.shape[0] : a.normalCtr, view);
    const trng = new SeededRng(a.textureSeed);
    this.texture = Array.from({ length: 6 }, () => ({
      fx: trng.uniform(15, 45),
      fy: trng.uniform(15, 45),
      phase: trng.uniform(0, 2 * Math.PI),
      amp: trng.uniform(0.008, 0.018),
    }));
    this.collapsedLungs = findings.map((f) => {
      if (f.type !== 'pneumothorax') return null;
      const rim = f.shape[0];
      const lineWidth = 0.006;
      return [lungGeometry(a, f.side!, rim, rim * 1.2), lungGeometry(a, f.side!, rim + lineWidth, rim * 1.2 + lineWidth)];
    });
    this.lineBoxes = findings.map((f) => {
      if (f.type !== 'line') return null;
      const s = f.shape;
      const pad = s[6];
      return [Math.min(s[0], s[2], s[4]) - pad, Math.min(s[1], s[3], s[5]) - pad, Math.max(s[0], s[2], s[4]) + pad, Math.max(s[1], s[3], s[5]) + pad];
    });
  }

  /**
   * Intensity (before placement contrast and noise) at (x, y); sets inFinding[k] to 1 where
   * finding k changes the image (the caller clears it; reused across pixels to avoid
   * allocation in this per-pixel path).
   */
  sample(x: number, y: number, inFinding: Uint8Array): number {
    const a = this.a;
    // Body outline: a rounded-rectangle torso (superellipse) with sloping shoulders, and the
    // neck above.
    const bx = Math.abs(x - a.thoraxCx) / (a.thoraxHalfWidth + 0.08);
    const by = Math.abs(y - 0.62) / 0.55;
    const shoulderDrop = (0.06 * Math.max(0, bx - 0.55)) / 0.45;
    const inBody = (y > 0.1 + shoulderDrop && bx ** 4 + by ** 4 < 1) || (y < 0.2 && Math.abs(x - a.thoraxCx) < 0.085);
    if (!inBody) return this.drawLines(x, y, inFinding, 0.03);
    let v = a.softTissue;
    // Lungs (air: dark) with vascular texture that fades laterally.
    let lungSide: Side | null = null;
    let lungU = NaN;
    for (const side of ['right', 'left'] as Side[]) {
      const u = lungFraction(this.lungs[side], x, y);
      if (!Number.isNaN(u)) {
        lungSide = side;
        lungU = u;
      }
    }
    const inHeart = inEllipse(x, y, this.heart.cx, this.heart.cy, this.heart.rx, this.heart.ry);
    if (lungSide && !inHeart) {
      let tex = 0;
      for (const t of this.texture) tex += t.amp * Math.sin(t.fx * x + t.phase) * Math.sin(t.fy * y + 0.7 * t.phase);
      v = a.lungDensity + (1 - lungU) * 0.05 + tex * (1 - 0.7 * lungU);
    }
    // Abdomen below the diaphragm is denser than the chest wall; mediastinum and spine.
    const sideG = this.lungs[x < a.thoraxCx ? 'right' : 'left'];
    if (!lungSide && Math.abs(x - a.thoraxCx) < a.mediastinumHalfWidth + a.lungWidth && y > diaphragmAt(sideG, x)) v += 0.05;
    if (Math.abs(x - a.thoraxCx) < a.mediastinumHalfWidth && y > 0.1) v = Math.max(v, 0.58);
    if (Math.abs(x - a.thoraxCx) < 0.012 && y > 0.05 && y < a.lungTop + 0.12) v = 0.4; // trachea
    if (inHeart) v = 0.62;
    // Ribs: posterior rib arcs over the hemithoraces.
    if (y > a.lungTop - 0.05 && y < Math.max(a.baseRight, a.baseLeft) - 0.5 * a.domeHeight) {
      const dx = Math.abs(x - a.thoraxCx);
      if (dx > a.mediastinumHalfWidth * 0.5 && dx < a.thoraxHalfWidth + 0.02) {
        const arc = y - 0.18 * (dx / a.thoraxHalfWidth) ** 2;
        const spacing = (Math.max(a.baseRight, a.baseLeft) - a.lungTop) / a.ribCount;
        const phase = ((arc - a.lungTop) / spacing + a.ribPhase) % 1;
        if (phase > 0 && phase < 0.28) v += 0.09 * Math.sin((Math.PI * phase) / 0.28);
      }
    }
    // Clavicles.
    for (const sgn of [-1, 1]) {
      const cx = a.thoraxCx + sgn * 0.15;
      const cy = a.lungTop + 0.01 + 0.04 * ((x - cx) / 0.16) ** 2;
      if (Math.abs(x - cx) < 0.16 && Math.abs(y - cy) < 0.012) v += 0.14;
    }
    // Findings.
    for (let k = 0; k < this.findings.length; k++) {
      const f = this.findings[k];
      const s = f.shape;
      switch (f.type) {
        case 'consolidation':
        case 'nodule': {
          if (lungSide !== f.side || inHeart) break;
          let e = 0;
          if (f.type === 'consolidation') {
            for (let b = 0; b < 9; b += 3) e = Math.max(e, bump(((x - s[b]) ** 2 + (y - s[b + 1]) ** 2) / (s[b + 2] * s[b + 2])));
            e *= s[9];
          } else {
            const r2 = ((x - s[0]) ** 2 + (y - s[1]) ** 2) / (s[2] * s[2]);
            e = r2 < 1 ? s[3] * Math.min(1, 3 * (1 - r2)) : 0;
          }
          if (e > 0) {
            v += e;
            inFinding[k] = 1;
          }
          break;
        }
        case 'effusion': {
          if (lungSide !== f.side || inHeart) break;
          // Fluid fills the dependent hemithorax below a meniscus rising laterally.
          const level = s[0] - s[1] * lungU * lungU;
          if (y > level) {
            v = Math.max(v, a.softTissue + 0.08);
            inFinding[k] = 1;
          }
          break;
        }
        case 'pneumothorax': {
          if (lungSide !== f.side || inHeart) break;
          // Collapsed lung: the lung shrunk away from the apex and lateral wall by the rim
          // width; the rim holds only air (no markings) and the visceral pleura is a thin line.
          const [collapsed, inner] = this.collapsedLungs[k]!;
          const upper = y < a.lungTop + 0.7 * ((f.side === 'right' ? a.baseRight : a.baseLeft) - a.lungTop);
          if (!upper) break;
          if (!inLung(collapsed, x, y)) {
            v = 0.05;
            inFinding[k] = 1;
          } else if (!inLung(inner, x, y)) {
            v += 0.12;
            inFinding[k] = 1;
          }
          break;
        }
        case 'cardiomegaly': {
          if (inHeart) inFinding[k] = 1;
          // Only the enlargement changes the picture; the mask is the whole enlarged heart.
          break;
        }
        case 'device': {
          const r2 = ((x - s[0]) ** 2 + (y - s[1]) ** 2) / (s[2] * s[2]);
          if (r2 < 1) {
            v = r2 > 0.75 ? 0.97 : 0.9;
            inFinding[k] = 1;
          }
          break;
        }
        case 'line':
          break; // drawn last, over everything
      }
    }
    return this.drawLines(x, y, inFinding, v);
  }

  /** Radiopaque lines and tubes, drawn over everything (also outside the body). */
  private drawLines(x: number, y: number, inFinding: Uint8Array, value: number): number {
    let v = value;
    for (let k = 0; k < this.findings.length; k++) {
      const box = this.lineBoxes[k];
      if (!box || x < box[0] || x > box[2] || y < box[1] || y > box[3]) continue;
      const s = this.findings[k].shape;
      if (bezierDistance2(s, x, y) < s[6] * s[6]) {
        v = 0.92;
        inFinding[k] = 1;
      }
    }
    return v;
  }
}

export interface RenderedImage {
  image: GrayImage;
  /** Per finding: 0/255 mask, width × height. */
  masks: Uint8Array[];
}

/**
 * Renders a frontal image at size × size. `omitFindings` renders the same patient, placement
 * and noise without the findings (for checking the masks).
 */
export function renderFrontal(
  anatomy: PatientAnatomy,
  findings: readonly Finding[],
  placement: ImagePlacement,
  size: number,
  opts: { omitFindings?: boolean } = {},
): RenderedImage {
  const drawn = opts.omitFindings ? [] : findings;
  const evaluator = new PhantomEvaluator(anatomy, drawn, placement.view);
  const image = makeImage(size, size);
  const masks = findings.map(() => new Uint8Array(size * size));
  const theta = (placement.rotationDeg * Math.PI) / 180;
  const cos = Math.cos(theta);
  const sin = Math.sin(theta);
  const noise = new SeededRng(deriveSeed(placement.noiseSeed, size));
  const membership = new Uint8Array(Math.max(1, drawn.length));
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      // Image → patient: undo shift, scale and rotation about the centre.
      const u = (j + 0.5) / size - 0.5 - placement.shiftX;
      const w = (i + 0.5) / size - 0.5 - placement.shiftY;
      const x = 0.5 + (cos * u + sin * w) / placement.scale;
      const y = 0.5 + (-sin * u + cos * w) / placement.scale;
      membership.fill(0);
      let v = clamp01(evaluator.sample(x, y, membership));
      v = Math.pow(v, placement.gamma) * placement.contrast + placement.offset;
      v += placement.noiseSigma * noise.normal();
      image.data[i * size + j] = clamp01(v);
      for (let k = 0; k < drawn.length; k++) if (membership[k]) masks[k][i * size + j] = 255;
    }
  }
  return { image, masks };
}

/** A simple lateral view of the same patient (the reader must drop these). */
export function renderLateral(anatomy: PatientAnatomy, placement: ImagePlacement, size: number): GrayImage {
  const image = makeImage(size, size);
  const noise = new SeededRng(deriveSeed(placement.noiseSeed, size, 7));
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      const x = (j + 0.5) / size;
      const y = (i + 0.5) / size;
      let v = 0.03;
      if (inEllipse(x, y, 0.5, 0.6, 0.36, 0.6)) v = anatomy.softTissue;
      if (inEllipse(x, y, 0.5, 0.47, 0.26, 0.3) && y < anatomy.baseRight) v = anatomy.lungDensity + 0.05;
      if (inEllipse(x, y, 0.38, 0.58, 0.13, 0.12)) v = 0.6; // heart, anterior
      if (Math.abs(x - 0.76) < 0.04 && y > 0.1) v = 0.7 - 0.06 * (Math.floor(y * 14) % 2); // vertebrae
      image.data[i * size + j] = clamp01(v + placement.noiseSigma * noise.normal());
    }
  }
  return image;
}

/** Tight bounding box [x, y, width, height] (pixels) of a mask's non-zero pixels; null if empty. */
export function maskBox(mask: Uint8Array, width: number, height: number): [number, number, number, number] | null {
  let x0 = width,
    y0 = height,
    x1 = -1,
    y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (mask[y * width + x] === 0) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}
