// RUN_DIR/report.md and its figures (RUN_DIR/figures/*.png): what a run did,
// how its losses evolved, and — for the alignment models — where each sentence
// of a few validation reports attends in its image.

import { metricSeries, type MetricsRecord } from '../train/metrics.ts';
import { utf8, type Storage } from '../train/storage.ts';
import type { ModelBatch } from '../data/batch.ts';
import type { GrayImage } from '../data/image.ts';
import type { DropReport, Study } from '../data/mimic.ts';
import { heatmapFigure, linePlot, type RegionMap, type Series } from './plot.ts';
import { clip } from '../../compiler/echo.ts';

export interface LossTerm {
  /** Graph output name without the 'loss.' prefix, e.g. 'global_i2r'. */
  name: string;
  weight: number;
}

export interface StudyHeatmaps {
  /** A label such as the study id. */
  study: string;
  image: GrayImage;
  sentences: string[];
  /** One map over the region grid per sentence (same order as `sentences`). */
  maps: RegionMap[];
}

export interface RunSummary {
  model: string;
  modelPath: string;
  device: string;
  data: string;
  /** Command line that reproduces the run. */
  command?: string;
  seed: number;
  steps: number;
  epochs: number;
  samplesSeen: number;
  wallSeconds: number;
  /** Why training ended: step budget, time budget, early stopping, NaN, ... */
  stopReason: string;
  bestValidation?: { value: number; step: number; epoch: number } | null;
  /** Parameter count, trainable and total. */
  parameters?: { trainable: number; total: number };
}

export interface ReportInput {
  summary: RunSummary;
  lossTerms: LossTerm[];
  records: MetricsRecord[];
  heatmaps: StudyHeatmaps[];
  /** What the heatmaps show, e.g. the output's name and meaning. */
  heatmapSource?: string;
  /** The data dropped while reading and training, by reason (MimicCxrDataset.dropReport()). */
  dropped?: DropReport;
}

const FIGURES = 'figures';

/**
 * Per-sentence region maps of the studies in one evaluated batch. `attention` is
 * the model's sentence–region attention, [B, K, S] (for each region a distribution
 * over the sentences, the alignment model's report→image attention) or [B, S, K];
 * `layout` says which. The K regions form a square grid (row-major). Sentences are
 * the study's, in order, as many as the batch kept.
 */
export function studyHeatmaps(
  batch: ModelBatch,
  attention: Float32Array,
  shape: number[],
  layout: 'regions-sentences' | 'sentences-regions',
  studyById: Map<string, Study>,
  maxStudies: number,
): StudyHeatmaps[] {
  const [B, d1, d2] = shape;
  const [K, S] = layout === 'regions-sentences' ? [d1, d2] : [d2, d1];
  const side = Math.round(Math.sqrt(K));
  if (side * side !== K) throw new Error(`attention has ${K} regions, not a square grid`);
  const [, , H, W] = batch.inputs.image.shape;
  const out: StudyHeatmaps[] = [];
  for (let b = 0; b < Math.min(B, maxStudies); b++) {
    const study = studyById.get(batch.ids[b]);
    const count = Math.min(batch.sentenceCounts[b], S);
    const sentences = study ? study.sentences.slice(0, count) : Array.from({ length: count }, (_, s) => `sentence ${s + 1}`);
    const maps = sentences.map((_, s) => {
      const data = new Float32Array(K);
      for (let k = 0; k < K; k++) {
        data[k] = layout === 'regions-sentences' ? attention[(b * K + k) * S + s] : attention[(b * S + s) * K + k];
      }
      return { width: side, height: side, data };
    });
    // Channel 0 of the normalised input: the three channels are the same grey image.
    const image = { width: W, height: H, data: batch.inputs.image.data.slice(b * 3 * H * W, b * 3 * H * W + H * W) };
    out.push({ study: batch.ids[b].replace(/\//g, '-'), image, sentences, maps });
  }
  return out;
}

/** Writes figures/*.png and report.md into the run directory; returns report.md's text. */
export async function writeReport(storage: Storage, input: ReportInput): Promise<string> {
  const { summary, lossTerms, records, heatmaps } = input;
  const lines: string[] = [];
  lines.push(`# Training report: ${summary.model}`, '');
  lines.push('| | |', '|---|---|');
  const row = (k: string, v: string) => lines.push(`| ${k} | ${v.replace(/\|/g, '\\|')} |`);
  row('model', `${summary.model} (\`${summary.modelPath}\`)`);
  row('data', summary.data);
  row('device', summary.device);
  row('seed', String(summary.seed));
  row('optimizer steps', String(summary.steps));
  row('epochs', formatNumber(summary.epochs));
  row('samples seen', String(summary.samplesSeen));
  row('wall time', formatDuration(summary.wallSeconds));
  if (summary.parameters)
    row('parameters', `${summary.parameters.trainable.toLocaleString('en-US')} trainable of ${summary.parameters.total.toLocaleString('en-US')}`);
  row('stopped because', summary.stopReason);
  if (summary.bestValidation) {
    const b = summary.bestValidation;
    row('best validation total', `${formatNumber(b.value)} (step ${b.step}, epoch ${b.epoch})`);
  }
  if (summary.command) row('command', `\`${summary.command}\``);
  lines.push('');

  if (input.dropped) lines.push(...droppedSection(input.dropped));

  // Final numbers: the last training record and the last validation record.
  const lastTrain = [...records].reverse().find((r) => r.kind === 'train');
  const lastVal = [...records].reverse().find((r) => r.kind === 'val');
  if (lastTrain || lastVal) {
    lines.push('## Final losses', '', '| term | weight | train (last step) | validation (last epoch) |', '|---|---|---|---|');
    for (const term of [{ name: 'total', weight: NaN }, ...lossTerms]) {
      const key = `loss.${term.name}`;
      lines.push(`| ${term.name} | ${Number.isNaN(term.weight) ? '' : formatNumber(term.weight)} | ${cell(lastTrain?.[key])} | ${cell(lastVal?.[key])} |`);
    }
    lines.push('');
  }

  lines.push('## Loss curves', '');
  const total: Series[] = [
    { name: 'train total', ...metricSeries(records, 'train', 'loss.total') },
    { name: 'validation total', ...metricSeries(records, 'val', 'loss.total'), markers: true },
  ];
  await storage.writeFileAtomic(`${FIGURES}/loss-total.png`, linePlot(total, { title: 'Total loss', xLabel: 'optimizer step', yLabel: 'loss' }));
  lines.push('![total loss](figures/loss-total.png)', '');
  if (lossTerms.length > 0) {
    const terms: Series[] = lossTerms.map((t) => ({ name: t.name, ...metricSeries(records, 'train', `loss.${t.name}`) }));
    await storage.writeFileAtomic(
      `${FIGURES}/loss-terms.png`,
      linePlot(terms, { title: 'Loss terms (train, unweighted)', xLabel: 'optimizer step', yLabel: 'loss' }),
    );
    lines.push('![loss terms](figures/loss-terms.png)', '');
    for (const t of lossTerms) {
      const file = `${FIGURES}/loss-${safeName(t.name)}.png`;
      const series: Series[] = [
        { name: 'train', ...metricSeries(records, 'train', `loss.${t.name}`) },
        { name: 'validation', ...metricSeries(records, 'val', `loss.${t.name}`), markers: true },
      ];
      await storage.writeFileAtomic(
        file,
        linePlot(series, { title: `${t.name} (weight ${formatNumber(t.weight)})`, xLabel: 'optimizer step', width: 480, height: 300 }),
      );
      lines.push(`![${t.name}](${file})`);
    }
    lines.push('');
  }
  const lr = metricSeries(records, 'train', 'lr');
  if (lr.x.length > 0) {
    await storage.writeFileAtomic(
      `${FIGURES}/lr.png`,
      linePlot([{ name: '', ...lr }], { title: 'Learning rate', xLabel: 'optimizer step', width: 480, height: 260 }),
    );
    lines.push('![learning rate](figures/lr.png)', '');
  }

  if (heatmaps.length > 0) {
    lines.push('## Sentence–region attention on validation studies', '');
    if (input.heatmapSource) lines.push(input.heatmapSource, '');
    for (const h of heatmaps) {
      const file = `${FIGURES}/attention-${safeName(h.study)}.png`;
      const panels = h.sentences.map((caption, i) => ({ caption, map: h.maps[i] }));
      await storage.writeFileAtomic(file, heatmapFigure(h.image, panels, { title: `study ${h.study}` }));
      lines.push(`### Study ${h.study}`, '', `![attention, study ${h.study}](${file})`, '');
      h.sentences.forEach((s, i) => lines.push(`${i + 1}. ${s}`));
      lines.push('');
    }
  }
  lines.push(`Metrics per step: \`metrics.jsonl\`. Checkpoints: \`last.json\`, \`best.json\` (see docs/training.md).`, '');
  const text = lines.join('\n');
  await storage.writeFileAtomic('report.md', utf8(text));
  return text;
}

/** Every reason data can be dropped for, with its count (0 included) and the first paths. */
function droppedSection(d: DropReport): string[] {
  const total = d.reasons.reduce((n, r) => n + r.count, 0);
  const lines = [
    '## Dropped data',
    '',
    total === 0 ? 'Nothing was dropped.' : `${total} CSV rows, images or studies were dropped; the training used the rest.`,
    '',
  ];
  lines.push('| reason | drops a | count | meaning | first paths |', '|---|---|---|---|---|');
  const esc = (t: string) => t.replace(/\|/g, '\\|');
  for (const r of d.reasons) lines.push(`| ${r.kind} | ${r.unit} | ${r.count} | ${esc(r.what)} | ${r.examples.map((p) => `\`${esc(clip(p))}\``).join(', ')} |`);
  const views = Object.entries(d.droppedViews);
  if (views.length) lines.push('', `Non-frontal images left out (by design): ${views.map(([v, n]) => `${v || '(empty)'} ${n}`).join(', ')}.`);
  lines.push('');
  return lines;
}

function cell(v: unknown): string {
  return typeof v === 'number' ? formatNumber(v) : '';
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(5)));
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${r} s` : `${r} s`;
}

/** A file-name-safe form of a label. */
export function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '_');
}
