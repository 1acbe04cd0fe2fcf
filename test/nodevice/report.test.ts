// The raster plotter, its bitmap font, metrics log and the run report.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decode } from 'fast-png';
import { Canvas, colormap, drawLinePlot, formatTick, heatmapFigure, linePlot, niceTicks, PALETTE } from '../../runtime/report/plot.ts';
import { glyph, textWidth, wrapText } from '../../runtime/report/font.ts';
import { writeReport } from '../../runtime/report/report.ts';
import { MetricsLog, readMetrics, metricSeries, Throughput, type MetricsRecord } from '../../runtime/train/metrics.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';

test('font: every printable ASCII character has its own 5×7 glyph; wrapping respects the width', () => {
  const seen = new Set<string>();
  for (let c = 33; c < 127; c++) {
    const rows = glyph(String.fromCharCode(c));
    assert.is(rows.length, 7);
    assert.ok(
      rows.some((r) => r !== 0),
      `glyph ${String.fromCharCode(c)} has ink`,
    );
    seen.add(rows.join(','));
  }
  assert.is(seen.size, 94, 'no two glyphs are identical');
  assert.equal(glyph('\u00e9'), glyph('?'));
  assert.is(textWidth('abc'), 17);
  const lines = wrapText('There is a small left pleural effusion, unchanged.', 16);
  assert.ok(lines.every((l) => l.length <= 16));
  assert.is(lines.join(' '), 'There is a small left pleural effusion, unchanged.');
  assert.equal(wrapText('pneumomediastinum', 8), ['pneumome', 'diastinu', 'm']);
});

test('ticks are 1/2/2.5/5 × 10^k steps covering the range', () => {
  assert.equal(niceTicks(0, 10, 6), [0, 2, 4, 6, 8, 10]);
  assert.equal(niceTicks(0.13, 0.91, 5), [0.2, 0.4, 0.6, 0.8]);
  assert.equal(niceTicks(3, 3).length > 0, true);
  assert.is(formatTick(0.30000000000000004), '0.3');
  assert.is(formatTick(1e-5), '1.0e-5');
});

test('line plot PNG: right size, series colours drawn, text drawn', () => {
  const x = Array.from({ length: 50 }, (_, i) => i);
  const c = drawLinePlot(
    [
      { name: 'a', x, y: x.map((i) => i * i) },
      { name: 'b', x, y: x.map((i) => 2500 - i * 40) },
    ],
    { title: 'T', xLabel: 'step', width: 400, height: 300 },
  );
  const count = (rgb: number[]) => {
    let n = 0;
    for (let i = 0; i < c.data.length; i += 4) if (c.data[i] === rgb[0] && c.data[i + 1] === rgb[1] && c.data[i + 2] === rgb[2]) n++;
    return n;
  };
  assert.ok(count(PALETTE[0]) > 200, 'series a drawn');
  assert.ok(count(PALETTE[1]) > 200, 'series b drawn');
  assert.ok(count([0, 0, 0]) > 50, 'title and labels drawn');
  const png = decode(linePlot([{ name: 'a', x, y: x }], { width: 321, height: 123 }));
  assert.is(png.width, 321);
  assert.is(png.height, 123);
  // Empty and non-finite data still give a figure (with "no data").
  assert.ok(decode(linePlot([{ name: 'nan', x: [0, 1], y: [NaN, Infinity] }])).width > 0);
});

test('heatmap overlay: the attended region takes the top of the colour map', () => {
  const image = { width: 70, height: 70, data: new Float32Array(70 * 70).fill(0.5) };
  const map = { width: 7, height: 7, data: new Float32Array(49) };
  map.data[0] = 1; // top-left region
  const png = decode(heatmapFigure(image, [{ caption: 'Left apical opacity.', map }], { panelSize: 140, columns: 2 }));
  // Panel 2 starts at x = 10 + 140 + 10 = 160, y = 10: its top-left pixel is the hot one.
  const px = (x: number, y: number) => Array.from(png.data.slice((y * png.width + x) * png.channels, (y * png.width + x) * png.channels + 3));
  const hot = px(162, 12);
  const cold = px(160 + 130, 10 + 130);
  const top = colormap(1);
  assert.ok(hot[0] > 150 && hot[1] > 150 && hot[2] < 100, `hot pixel ${hot} is yellowish like ${top}`);
  assert.ok(Math.abs(cold[0] - cold[2]) < 60, `cold pixel ${cold} stays near gray`);
  assert.throws(() => new Canvas(0, 5), /canvas size/);
});

test('metrics log: append, resume truncation, torn last line, series', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-metrics-'));
  try {
    const storage = new NodeStorage(dir);
    const log = await MetricsLog.open(storage);
    for (let step = 1; step <= 5; step++) await log.append({ kind: 'train', step, epoch: 0, 'loss.total': 10 - step, lr: 1e-4 });
    await log.append({ kind: 'val', step: 5, epoch: 0, 'loss.total': 4.5 });
    await log.append({ kind: 'train', step: 6, epoch: 1, 'loss.total': NaN, lr: 1e-4 });
    writeFileSync(path.join(dir, 'metrics.jsonl'), readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8') + '{"kind":"tra');
    const all = await readMetrics(storage);
    assert.is(all.length, 7);
    assert.is(all[6]['loss.total'], null);
    assert.equal(metricSeries(all, 'train', 'loss.total'), { x: [1, 2, 3, 4, 5], y: [9, 8, 7, 6, 5] });
    await MetricsLog.open(storage, { resumeAtStep: 3 });
    const kept = await readMetrics(storage);
    assert.equal(
      kept.map((r: MetricsRecord) => r.step),
      [1, 2, 3],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('throughput: samples over step durations in a sliding window', () => {
  const t = new Throughput(2);
  assert.is(t.record(8, 2), 4);
  assert.is(t.record(8, 6), 2);
  assert.is(t.record(16, 2), 3); // the first step left the window: (8 + 16) / (6 + 2)
  assert.ok(Number.isNaN(new Throughput().record(8, 0)));
});

test('report.md links every figure it writes', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-report-'));
  try {
    const storage = new NodeStorage(dir);
    const records: MetricsRecord[] = [];
    for (let step = 1; step <= 20; step++)
      records.push({ kind: 'train', step, epoch: Math.floor(step / 10), lr: 1e-4, 'loss.total': 5 / step, 'loss.global_i2r': 3 / step });
    records.push({ kind: 'val', step: 10, epoch: 0, 'loss.total': 0.7, 'loss.global_i2r': 0.4 });
    const image = { width: 32, height: 32, data: Float32Array.from({ length: 1024 }, (_, i) => (i % 32) / 32) };
    const map = { width: 7, height: 7, data: Float32Array.from({ length: 49 }, (_, i) => i) };
    const text = await writeReport(storage, {
      summary: {
        model: 'LoVT_Tiny',
        modelPath: 'models/lovt-tiny.lovt',
        device: 'test',
        data: 'synth',
        seed: 1,
        steps: 20,
        epochs: 2,
        samplesSeen: 160,
        wallSeconds: 75,
        stopReason: 'step budget reached',
        bestValidation: { value: 0.7, step: 10, epoch: 1 },
      },
      lossTerms: [{ name: 'global_i2r', weight: 0.75 }],
      records,
      heatmaps: [{ study: 's123', image, sentences: ['No effusion.', 'Heart normal.'], maps: [map, map] }],
    });
    const figures = [...text.matchAll(/\]\((figures\/[^)]+)\)/g)].map((m) => m[1]);
    assert.equal(figures, ['figures/loss-total.png', 'figures/loss-terms.png', 'figures/loss-global_i2r.png', 'figures/lr.png', 'figures/attention-s123.png']);
    for (const f of figures) assert.ok(existsSync(path.join(dir, f)), f);
    assert.match(text, /\| global_i2r \| 0\.75 \| 0\.15 \| 0\.4 \|/);
    assert.match(text, /1 min 15 s/);
    assert.match(text, /1\. No effusion\.\n2\. Heart normal\./);
    assert.is(readFileSync(path.join(dir, 'report.md'), 'utf8'), text);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
