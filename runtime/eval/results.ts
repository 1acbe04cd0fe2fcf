// The files an evaluation suite leaves in its output directory (besides runs.jsonl):
//   results.json          every number: per task and encoder the chosen LR, the grid, the
//                         seeds' metrics, mean ± 1.96·s/√N, wall time
//   results.md            the tasks × encoders table, per task the details, a line saying
//                         which encoders differ beyond their intervals, and the charts
//   figures/<task>.png    one bar per encoder with its 95 % interval as whiskers
// Metrics are fractions in results.json and percentages (one decimal, as the paper) in
// results.md and the charts. Definitions: docs/evaluation.md, "Results files".
import { barChart } from '../report/bar-chart.ts';
import { formatDuration, formatNumber, safeName } from '../report/report.ts';
import { utf8, type Storage } from '../train/storage.ts';
import type { GridPoint, ProtocolOutcome, ProtocolSettings } from './protocol.ts';
import { intervalsOverlap, Z_95, type MeanInterval } from './stats.ts';

export const RESULTS_JSON = 'results.json';
export const RESULTS_MD = 'results.md';
export const RESULTS_FORMAT = 'lovt evaluation results 1';

/** One task and encoder; the MeanInterval fields are of the test metric. */
export interface EncoderResult extends MeanInterval {
  encoder: string;
  /** The encoder's identity (EncoderRef.hash). */
  hash: string;
  chosenLr: number;
  /** Grid runs (seed 0) in grid order; null when the LR was fixed. */
  grid: GridPoint[] | null;
  seeds: number[];
  /** Per seed, same order as `seeds`. */
  testMetrics: number[];
  valMetrics: number[];
  /** Every run of this task and encoder, grid included. */
  wallSeconds: number;
}

export interface TaskResult {
  task: string;
  metric: string;
  encoders: EncoderResult[];
  /** Pairs whose intervals do not overlap, better one first. */
  differences: { better: string; worse: string }[];
  /** One line: which encoders differ beyond their intervals. */
  summary: string;
  /** The chart, relative to the output directory. */
  chart: string;
}

export interface SuiteResults {
  format: typeof RESULTS_FORMAT;
  settings: ProtocolSettings;
  tasks: TaskResult[];
  /** Runs trained by the command that wrote these files, and runs taken from runs.jsonl. */
  trained: number;
  reused: number;
}

/** Which encoders' intervals are disjoint, as one line (encoders in the settings' order). */
export function differencesLine(task: string, encoders: readonly EncoderResult[]): { differences: TaskResult['differences']; summary: string } {
  if (encoders.length < 2) return { differences: [], summary: `${task}: one encoder, nothing to compare.` };
  const differences: TaskResult['differences'] = [];
  for (let i = 0; i < encoders.length; i++) {
    for (let j = i + 1; j < encoders.length; j++) {
      const [a, b] = [encoders[i], encoders[j]];
      if (intervalsOverlap(a, b)) continue;
      differences.push(a.mean > b.mean ? { better: a.encoder, worse: b.encoder } : { better: b.encoder, worse: a.encoder });
    }
  }
  const summary =
    differences.length === 0
      ? `${task}: no two encoders differ beyond their 95% intervals.`
      : `${task}: ${differences.map((d) => `${d.better} > ${d.worse}`).join('; ')} (95% intervals disjoint)` +
        (differences.length < (encoders.length * (encoders.length - 1)) / 2 ? '; the other pairs overlap.' : '.');
  return { differences, summary };
}

export function buildResults(outcome: ProtocolOutcome): SuiteResults {
  const tasks: TaskResult[] = outcome.settings.tasks.map((t) => {
    const encoders: EncoderResult[] = outcome.cells
      .filter((c) => c.task === t.name)
      .map((c) => ({
        encoder: c.encoder.name,
        hash: c.encoder.hash,
        chosenLr: c.chosenLr,
        grid: c.grid,
        seeds: c.runs.map((r) => r.seed),
        testMetrics: c.runs.map((r) => r.result.testMetric),
        valMetrics: c.runs.map((r) => r.result.valMetric),
        ...c.test,
        wallSeconds: c.wallSeconds,
      }));
    return { task: t.name, metric: t.metric, encoders, ...differencesLine(t.name, encoders), chart: `figures/${safeName(t.name)}.png` };
  });
  return { format: RESULTS_FORMAT, settings: outcome.settings, tasks, trained: outcome.trained, reused: outcome.reused };
}

/** A fraction as a percentage with one decimal. */
export function percent(v: number): string {
  return Number.isFinite(v) ? (100 * v).toFixed(1) : String(v);
}

const meanCi = (e: EncoderResult) => `${percent(e.mean)} ± ${percent(e.halfWidth)}`;

function seedList(seeds: number[]): string {
  const contiguous = seeds.every((s, i) => i === 0 || s === seeds[i - 1] + 1);
  return contiguous && seeds.length > 2 ? `${seeds[0]}–${seeds[seeds.length - 1]}` : seeds.join(', ');
}

/** The tasks × encoders table alone (for the console and the top of results.md). */
export function resultsTable(results: SuiteResults): string {
  const encoders = results.settings.encoders.map((e) => e.name);
  const lines = [`| Task | Metric | ${encoders.join(' | ')} |`, `|---|---|${encoders.map(() => '---|').join('')}`];
  for (const t of results.tasks) {
    const cells = encoders.map((name) => {
      const e = t.encoders.find((x) => x.encoder === name);
      return e ? meanCi(e) : '';
    });
    lines.push(`| ${t.task} | ${t.metric} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function resultsMarkdown(results: SuiteResults): string {
  const s = results.settings;
  const lines: string[] = ['# Evaluation results', ''];
  lines.push(
    `Test metric in percent, mean ± ${Z_95}·s/√N over N = ${s.seeds} runs with different seeds at the learning rate chosen ` +
      (s.lr != null ? `(fixed: ${formatNumber(s.lr)}).` : 'by the validation metric of a grid search (one run per LR, seed 0).'),
    '',
    resultsTable(results),
    '',
  );
  for (const t of results.tasks) {
    lines.push(`## ${t.task} (${t.metric})`, '', t.summary, '');
    lines.push(
      '| Encoder | Test % (mean ± CI) | 95% interval | Validation % | LR | Grid: LR → validation % | Seeds | Wall time |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const e of t.encoders) {
      const val = e.valMetrics.reduce((a, b) => a + b, 0) / e.valMetrics.length;
      const grid = e.grid ? e.grid.map((g) => `${formatNumber(g.lr)} → ${percent(g.valMetric)}`).join(', ') : 'fixed';
      lines.push(
        `| ${e.encoder} | ${meanCi(e)} | [${percent(e.low)}, ${percent(e.high)}] | ${percent(val)} | ${formatNumber(e.chosenLr)} | ${grid} | ${seedList(e.seeds)} | ${formatDuration(e.wallSeconds)} |`,
      );
    }
    lines.push('', `![${t.task}](${t.chart})`, '');
  }
  lines.push('Encoders: ' + s.encoders.map((e) => `${e.name} (\`${e.hash}\`)`).join(', ') + '.');
  if (s.context && Object.keys(s.context).length > 0) {
    lines.push(
      '',
      'Settings: ' +
        Object.entries(s.context)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') +
        '.',
    );
  }
  lines.push(
    '',
    `Every run: \`runs.jsonl\`; every number: \`${RESULTS_JSON}\`. This command trained ${results.trained} runs and reused ${results.reused} recorded ones.`,
    '',
  );
  return lines.join('\n');
}

/** One task's bar chart: a bar per encoder at its mean, whiskers at the interval (percent). */
export function taskChart(task: TaskResult, seeds: number): Uint8Array {
  return barChart(
    task.encoders.map((e) => ({ label: e.encoder, value: 100 * e.mean, low: 100 * e.low, high: 100 * e.high, caption: meanCi(e) })),
    { title: `${task.task}: ${task.metric}`, yLabel: `test ${task.metric} %, mean and 95% interval, N = ${seeds}` },
  );
}

/** Writes results.json, results.md and the charts into `storage`; returns the results. */
export async function writeResults(storage: Storage, outcome: ProtocolOutcome): Promise<SuiteResults> {
  const results = buildResults(outcome);
  for (const t of results.tasks) await storage.writeFileAtomic(t.chart, taskChart(t, results.settings.seeds));
  await storage.writeFileAtomic(RESULTS_JSON, utf8(JSON.stringify(results, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1) + '\n'));
  await storage.writeFileAtomic(RESULTS_MD, utf8(resultsMarkdown(results)));
  return results;
}
