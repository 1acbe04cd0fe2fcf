// A small raster plotter for run reports: an RGBA canvas with lines, rectangles
// and bitmap-font text, encoded to PNG with fast-png. Two figure kinds:
//   linePlot        loss curves (axes with "nice" ticks, legend, optional log y)
//   heatmapFigure   an X-ray with one attention heatmap per sentence overlaid,
//                   each panel captioned with its sentence
// Platform-neutral (returns PNG bytes), so reports can be drawn in a browser too.

import { encode } from 'fast-png';
import { resizeBilinear, type GrayImage } from '../data/image.ts';
import { GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, LINE_HEIGHT, glyph, textWidth, wrapText } from './font.ts';

export type RGB = [number, number, number];

export const WHITE: RGB = [255, 255, 255];
export const BLACK: RGB = [0, 0, 0];
export const GRID: RGB = [228, 228, 228];
export const AXIS: RGB = [60, 60, 60];

/** Distinguishable line colours (matplotlib's tab10). */
export const PALETTE: RGB[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

export class Canvas {
  readonly data: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: RGB = WHITE,
  ) {
    if (!(width >= 1 && height >= 1 && Number.isInteger(width) && Number.isInteger(height))) {
      throw new Error(`canvas size must be positive integers, got ${width}×${height}`);
    }
    this.data = new Uint8Array(width * height * 4);
    this.fillRect(0, 0, width, height, background);
  }

  /** Blends `color` over the pixel with opacity `alpha` in [0, 1]; outside pixels are ignored. */
  blend(x: number, y: number, color: RGB, alpha = 1): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    const d = this.data;
    d[i] = Math.round(d[i] * (1 - alpha) + color[0] * alpha);
    d[i + 1] = Math.round(d[i + 1] * (1 - alpha) + color[1] * alpha);
    d[i + 2] = Math.round(d[i + 2] * (1 - alpha) + color[2] * alpha);
    d[i + 3] = 255;
  }

  pixel(x: number, y: number): RGB {
    const i = (y * this.width + x) * 4;
    return [this.data[i], this.data[i + 1], this.data[i + 2]];
  }

  fillRect(x: number, y: number, w: number, h: number, color: RGB, alpha = 1): void {
    const x0 = Math.max(0, Math.round(x));
    const y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + w));
    const y1 = Math.min(this.height, Math.round(y + h));
    for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) this.blend(xx, yy, color, alpha);
  }

  strokeRect(x: number, y: number, w: number, h: number, color: RGB): void {
    this.line(x, y, x + w, y, color);
    this.line(x + w, y, x + w, y + h, color);
    this.line(x + w, y + h, x, y + h, color);
    this.line(x, y + h, x, y, color);
  }

  /** A straight line of the given thickness (a square brush stepped along it). */
  line(x0: number, y0: number, x1: number, y1: number, color: RGB, thickness = 1): void {
    const steps = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    const r = (thickness - 1) / 2;
    for (let s = 0; s <= steps; s++) {
      const x = x0 + ((x1 - x0) * s) / steps;
      const y = y0 + ((y1 - y0) * s) / steps;
      if (thickness <= 1) this.blend(x, y, color);
      else this.fillRect(x - r, y - r, thickness, thickness, color);
    }
  }

  /** Draws one line of text with its top-left corner at (x, y), each font pixel `scale`×`scale`. */
  text(x: number, y: number, str: string, color: RGB = BLACK, scale = 1): void {
    let cx = Math.round(x);
    for (const ch of str) {
      const rows = glyph(ch);
      for (let r = 0; r < GLYPH_HEIGHT; r++) {
        for (let c = 0; c < GLYPH_WIDTH; c++) {
          if (rows[r] & (1 << (GLYPH_WIDTH - 1 - c))) this.fillRect(cx + c * scale, y + r * scale, scale, scale, color);
        }
      }
      cx += GLYPH_ADVANCE * scale;
    }
  }

  /** Text rotated 90° counter-clockwise (reads bottom to top), for y-axis labels; (x, y) is its bottom-left. */
  textVertical(x: number, y: number, str: string, color: RGB = BLACK): void {
    let cy = Math.round(y);
    for (const ch of str) {
      const rows = glyph(ch);
      for (let r = 0; r < GLYPH_HEIGHT; r++) {
        for (let c = 0; c < GLYPH_WIDTH; c++) if (rows[r] & (1 << (GLYPH_WIDTH - 1 - c))) this.blend(x + r, cy - c, color);
      }
      cy -= GLYPH_ADVANCE;
    }
  }

  /** Copies an RGB image (w×h, 3 bytes per pixel) with its top-left corner at (x, y). */
  drawRgb(x: number, y: number, w: number, h: number, rgb: Uint8Array): void {
    for (let yy = 0; yy < h; yy++) {
      for (let xx = 0; xx < w; xx++) {
        const i = (yy * w + xx) * 3;
        this.blend(x + xx, y + yy, [rgb[i], rgb[i + 1], rgb[i + 2]]);
      }
    }
  }

  toPng(): Uint8Array {
    return encode({ width: this.width, height: this.height, data: this.data, channels: 4, depth: 8 });
  }
}

// ---------------------------------------------------------------------------
// Axes

/** "Nice" tick positions (1, 2, 5 × 10^k) covering [lo, hi] with about `count` ticks. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  // Multiples of the step computed one by one (not accumulated) and rounded, so 0.6 stays 0.6.
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(k === 0 ? 0 : Number((k * step).toPrecision(12)));
  return ticks;
}

/** A short label for a tick value: no float noise, exponent form for very large/small values. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/** Horizontal grid lines across the plot at the y ticks, labelled left of `left`; `py` maps a value to a canvas row. */
export function drawYTicks(
  c: Canvas,
  ticks: number[],
  py: (v: number) => number,
  left: number,
  plotW: number,
  label: (v: number) => string = formatTick,
): void {
  for (const t of ticks) {
    c.line(left, py(t), left + plotW, py(t), GRID);
    const text = label(t);
    c.text(left - 6 - textWidth(text), py(t) - GLYPH_HEIGHT / 2, text, AXIS);
  }
}

export interface Series {
  name: string;
  x: number[];
  y: number[];
  color?: RGB;
  /** Draw each point as a small square too (sparse series such as per-epoch validation). */
  markers?: boolean;
}

export interface LinePlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  /** Logarithmic y axis (non-positive values are skipped). */
  logY?: boolean;
}

/** Loss curves as a PNG: one polyline per series, shared axes, a legend at the top right. */
export function linePlot(series: Series[], opts: LinePlotOptions = {}): Uint8Array {
  return drawLinePlot(series, opts).toPng();
}

export function drawLinePlot(series: Series[], opts: LinePlotOptions = {}): Canvas {
  const width = opts.width ?? 720;
  const height = opts.height ?? 420;
  const c = new Canvas(width, height);
  const ty = opts.logY ? (v: number) => Math.log10(v) : (v: number) => v;
  const usable = series.map((s) => {
    const pts: [number, number][] = [];
    for (let i = 0; i < Math.min(s.x.length, s.y.length); i++) {
      if (Number.isFinite(s.x[i]) && Number.isFinite(s.y[i]) && (!opts.logY || s.y[i] > 0)) pts.push([s.x[i], ty(s.y[i])]);
    }
    return pts;
  });
  const all = usable.flat();
  const margin = { left: 64, right: 16, top: opts.title ? 30 : 12, bottom: opts.xLabel ? 40 : 28 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  if (opts.title) c.text(margin.left + (plotW - textWidth(opts.title) * 2) / 2, 8, opts.title, BLACK, 2);
  if (all.length === 0) {
    c.strokeRect(margin.left, margin.top, plotW, plotH, AXIS);
    c.text(margin.left + 10, margin.top + 10, 'no data', AXIS);
    return c;
  }
  let [xLo, xHi] = extent(all.map((p) => p[0]));
  let [yLo, yHi] = extent(all.map((p) => p[1]));
  // A little headroom so curves do not run along the frame.
  const yPad = (yHi - yLo) * 0.04;
  yLo -= yPad;
  yHi += yPad;
  const xTicks = niceTicks(xLo, xHi);
  const yTicks = opts.logY ? logTicks(yLo, yHi) : niceTicks(yLo, yHi);
  [xLo, xHi] = extent([xLo, xHi, ...xTicks]);
  [yLo, yHi] = extent([yLo, yHi, ...yTicks]);
  if (xHi === xLo) {
    xLo -= 0.5;
    xHi += 0.5;
  }
  if (yHi === yLo) {
    yLo -= 0.5;
    yHi += 0.5;
  }
  const px = (x: number) => margin.left + ((x - xLo) / (xHi - xLo)) * plotW;
  const py = (y: number) => margin.top + plotH - ((y - yLo) / (yHi - yLo)) * plotH;

  for (const t of xTicks) {
    c.line(px(t), margin.top, px(t), margin.top + plotH, GRID);
    const label = formatTick(t);
    c.text(px(t) - textWidth(label) / 2, margin.top + plotH + 6, label, AXIS);
  }
  drawYTicks(c, yTicks, py, margin.left, plotW, opts.logY ? (t) => formatTick(10 ** t) : formatTick);
  c.strokeRect(margin.left, margin.top, plotW, plotH, AXIS);
  if (opts.xLabel) c.text(margin.left + (plotW - textWidth(opts.xLabel)) / 2, height - 14, opts.xLabel, BLACK);
  if (opts.yLabel) c.textVertical(6, margin.top + (plotH + textWidth(opts.yLabel)) / 2, opts.yLabel, BLACK);

  usable.forEach((pts, si) => {
    const color = series[si].color ?? PALETTE[si % PALETTE.length];
    for (let i = 1; i < pts.length; i++) c.line(px(pts[i - 1][0]), py(pts[i - 1][1]), px(pts[i][0]), py(pts[i][1]), color, 2);
    if (series[si].markers || pts.length === 1) for (const [x, y] of pts) c.fillRect(px(x) - 2, py(y) - 2, 5, 5, color);
  });

  // Legend: a white box with one coloured swatch per series.
  const named = series.map((s, i) => ({ name: s.name, color: s.color ?? PALETTE[i % PALETTE.length] })).filter((s) => s.name);
  if (named.length > 0) {
    const boxW = Math.max(...named.map((s) => textWidth(s.name))) + 30;
    const boxH = named.length * LINE_HEIGHT + 8;
    const bx = margin.left + plotW - boxW - 6;
    const by = margin.top + 6;
    c.fillRect(bx, by, boxW, boxH, WHITE, 0.9);
    c.strokeRect(bx, by, boxW, boxH, GRID);
    named.forEach((s, i) => {
      const y = by + 5 + i * LINE_HEIGHT;
      c.fillRect(bx + 5, y + 2, 14, 3, s.color);
      c.text(bx + 24, y, s.name, BLACK);
    });
  }
  return c;
}

function extent(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** Ticks at whole decades (in log10 units) when the range spans one, else nice linear ticks of log10. */
function logTicks(lo: number, hi: number): number[] {
  const decades: number[] = [];
  for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) decades.push(d);
  return decades.length >= 2 ? decades : niceTicks(lo, hi, 4);
}

// ---------------------------------------------------------------------------
// Heatmaps

/** Viridis at 9 control points, interpolated linearly: perceptually uniform, colour-blind safe. */
const VIRIDIS: RGB[] = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
];

export function colormap(t: number): RGB {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i];
  const b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f].map(Math.round) as RGB;
}

/**
 * A map over the image's region grid (e.g. 7×7 attention of one sentence), as a
 * GrayImage whose values are any non-negative scale.
 */
export type RegionMap = GrayImage;

/**
 * Draws the image (any scale, e.g. normalised; min–max rescaled to gray) with the region map upsampled
 * bilinearly and overlaid in viridis at opacity up to `alpha`; the map is scaled so its
 * maximum is the top of the colour map. Drawn into `c` at (x, y) with size w×h.
 */
export function drawOverlay(c: Canvas, x: number, y: number, w: number, h: number, image: GrayImage, map: RegionMap | null, alpha = 0.7): void {
  const gray = resizeBilinear(image, w, h).data;
  const [lo, hi] = extent(Array.from(gray));
  const heat = map ? resizeBilinear(map, w, h).data : null;
  const heatMax = map ? Math.max(...Array.from(map.data)) : 1;
  for (let Y = 0; Y < h; Y++) {
    for (let X = 0; X < w; X++) {
      const g = hi > lo ? Math.round((255 * (gray[Y * w + X] - lo)) / (hi - lo)) : 0;
      c.blend(x + X, y + Y, [g, g, g]);
      if (heat) {
        // Opacity grows with attention so the anatomy stays visible where attention is low.
        const t = heatMax > 0 ? heat[Y * w + X] / heatMax : 0;
        c.blend(x + X, y + Y, colormap(t), alpha * (0.3 + 0.7 * t));
      }
    }
  }
}

export interface HeatmapPanel {
  caption: string;
  map: RegionMap;
}

/**
 * One figure per study: the plain image, then one panel per sentence with that
 * sentence's attention overlaid and the sentence wrapped underneath.
 */
export function heatmapFigure(
  image: GrayImage,
  panels: HeatmapPanel[],
  opts: { title?: string; panelSize?: number; columns?: number; imageCaption?: string } = {},
): Uint8Array {
  const size = opts.panelSize ?? 192;
  const columns = Math.max(1, Math.min(opts.columns ?? 4, panels.length + 1));
  const pad = 10;
  const maxChars = Math.floor(size / GLYPH_ADVANCE);
  const captions = [wrapText(opts.imageCaption ?? 'image', maxChars), ...panels.map((p) => wrapText(p.caption, maxChars))];
  const captionLines = Math.max(...captions.map((l) => l.length));
  const cellH = size + 6 + captionLines * LINE_HEIGHT + pad;
  const rows = Math.ceil((panels.length + 1) / columns);
  const titleH = opts.title ? 26 : 0;
  const c = new Canvas(pad + columns * (size + pad), titleH + pad + rows * cellH);
  if (opts.title) c.text(pad, 8, opts.title, BLACK, 2);
  for (let k = 0; k <= panels.length; k++) {
    const cx = pad + (k % columns) * (size + pad);
    const cy = titleH + pad + Math.floor(k / columns) * cellH;
    drawOverlay(c, cx, cy, size, size, image, k === 0 ? null : panels[k - 1].map);
    captions[k].forEach((line, i) => c.text(cx, cy + size + 6 + i * LINE_HEIGHT, line, BLACK));
  }
  return c.toPng();
}
