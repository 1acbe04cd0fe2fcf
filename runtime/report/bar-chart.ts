// Bar charts with interval whiskers (the evaluation results: one bar per encoder, its mean
// and 95 % interval), drawn with plot.ts's canvas, font and ticks. Platform-neutral.
import { AXIS, BLACK, Canvas, drawYTicks, formatTick, niceTicks, PALETTE, type RGB } from './plot.ts';
import { GLYPH_ADVANCE, LINE_HEIGHT, textWidth, wrapText } from './font.ts';

export interface Bar {
  label: string;
  value: number;
  /** Whisker ends (both or neither). */
  low?: number;
  high?: number;
  /** Printed above the whisker (default: the value). */
  caption?: string;
  color?: RGB;
}

export interface BarChartOptions {
  title?: string;
  yLabel?: string;
  width?: number;
  height?: number;
}

export function barChart(bars: Bar[], opts: BarChartOptions = {}): Uint8Array {
  return drawBarChart(bars, opts).toPng();
}

export function drawBarChart(bars: Bar[], opts: BarChartOptions = {}): Canvas {
  const width = opts.width ?? Math.max(420, 110 + 130 * bars.length);
  const slotChars = (w: number) => Math.max(4, Math.floor((w - 8) / GLYPH_ADVANCE));
  const plotW0 = width - 64 - 16;
  const labels = bars.map((b) => wrapText(b.label, slotChars(plotW0 / Math.max(1, bars.length))));
  const labelLines = Math.max(1, ...labels.map((l) => l.length));
  const height = opts.height ?? 340 + (labelLines - 1) * LINE_HEIGHT;
  const c = new Canvas(width, height);
  const margin = { left: 64, right: 16, top: opts.title ? 34 : 14, bottom: 14 + labelLines * LINE_HEIGHT };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  if (opts.title) c.text(Math.max(4, margin.left + (plotW - textWidth(opts.title) * 2) / 2), 10, opts.title, BLACK, 2);
  if (opts.yLabel) c.textVertical(6, margin.top + (plotH + textWidth(opts.yLabel)) / 2, opts.yLabel, BLACK);
  const values = bars.flatMap((b) => [b.value, b.low ?? b.value, b.high ?? b.value]).filter(Number.isFinite);
  // Bars start at 0, so the axis always includes it; headroom above for the captions.
  const lo = Math.min(0, ...values);
  const hi = Math.max(0, ...values);
  const top = hi + (hi - lo) * 0.15 || 1;
  const ticks = niceTicks(lo, top, 6);
  const yLo = Math.min(lo, ticks[0]);
  const yHi = Math.max(top, ticks[ticks.length - 1]);
  const py = (v: number) => margin.top + plotH - ((v - yLo) / (yHi - yLo)) * plotH;
  drawYTicks(c, ticks, py, margin.left, plotW);
  const slot = plotW / Math.max(1, bars.length);
  const barW = Math.min(80, slot * 0.55);
  bars.forEach((b, i) => {
    const cx = margin.left + slot * (i + 0.5);
    const color = b.color ?? PALETTE[i % PALETTE.length];
    if (Number.isFinite(b.value)) {
      const top = Math.min(py(b.value), py(0));
      c.fillRect(cx - barW / 2, top, barW, Math.abs(py(0) - py(b.value)), color);
    }
    let whiskerTop = py(Number.isFinite(b.value) ? Math.max(b.value, 0) : 0);
    if (b.low !== undefined && b.high !== undefined && Number.isFinite(b.low) && Number.isFinite(b.high)) {
      const cap = barW / 3;
      c.line(cx, py(b.low), cx, py(b.high), BLACK, 2);
      c.line(cx - cap / 2, py(b.low), cx + cap / 2, py(b.low), BLACK, 2);
      c.line(cx - cap / 2, py(b.high), cx + cap / 2, py(b.high), BLACK, 2);
      whiskerTop = Math.min(whiskerTop, py(b.high));
    }
    const caption = b.caption ?? (Number.isFinite(b.value) ? formatTick(b.value) : 'n/a');
    c.text(cx - textWidth(caption) / 2, whiskerTop - 12, caption, BLACK);
    labels[i].forEach((line, k) => c.text(cx - textWidth(line) / 2, margin.top + plotH + 6 + k * LINE_HEIGHT, line, BLACK));
  });
  c.line(margin.left, py(0), margin.left + plotW, py(0), AXIS);
  c.strokeRect(margin.left, margin.top, plotW, plotH, AXIS);
  return c;
}
