// The evaluation protocol (runtime/eval/protocol.ts) and its results files
// (runtime/eval/results.ts), driven by a real head: the closed-form least-squares probe
// of eval-probe.ts on a tiny SynthCXR segmentation task. Grid → chosen LR → seeds → CI
// is checked against the probe called directly and a hand-computed interval; an
// interrupted suite resumes with only the missing runs and ends with the same numbers;
// changed settings are refused with the difference named.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decode } from 'fast-png';
import { MemoryFileSource } from '../../runtime/data/fs.ts';
import { generateSynthCXR } from '../../runtime/data/synth/dataset.ts';
import {
  checkSettings,
  PROTOCOL_LOG,
  runProtocol,
  ValidationControl,
  type ProtocolOutcome,
  type ProtocolSettings,
  type RunResult,
  type TrainRequest,
} from '../../runtime/eval/protocol.ts';
import { differencesLine, RESULTS_JSON, RESULTS_MD, writeResults, type EncoderResult, type SuiteResults } from '../../runtime/eval/results.ts';
import { openSynthTask, synthTaskSpec } from '../../runtime/eval/synth-tasks.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';
import { PALETTE } from '../../runtime/report/plot.ts';
import { loadProbeData, trainProbe, type ProbeData, type ProbeEncoder } from './eval-probe.ts';

const probe: Promise<ProbeData> = (async () => {
  const files = new MemoryFileSource();
  await generateSynthCXR(files, { studies: 40, seed: 3, imageSize: 48 });
  return loadProbeData(await openSynthTask(files, synthTaskSpec('synth-seg'), { imageSize: 32 }), 4);
})();

const GRID = [0.1, 10, 100];
const SETTINGS: ProtocolSettings = {
  tasks: [{ name: 'synth-seg', metric: 'Dice', lrGrid: GRID }],
  encoders: [
    { name: 'pixels', hash: 'pixels:v1' },
    { name: 'random', hash: 'random-projection:7' },
  ],
  seeds: 3,
  context: { fraction: 100, imageSize: 32 },
};

const dirs: string[] = [];
function tempStorage(): NodeStorage {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-eval-'));
  dirs.push(dir);
  return new NodeStorage(dir);
}

/** The probe as the injected trainer; `calls` records every request. */
function probeTrainer(d: ProbeData, calls: TrainRequest[], opts: { interruptAt?: number } = {}) {
  return async (run: TrainRequest): Promise<RunResult> => {
    calls.push(run);
    if (calls.length === opts.interruptAt) throw new Error('interrupted');
    return trainProbe(d, run.encoder as ProbeEncoder, run.lr, run.seed);
  };
}

/** The outcome without wall times (which differ between runs of the same computation). */
const numbers = (o: ProtocolOutcome) =>
  o.cells.map((c) => ({
    task: c.task,
    encoder: c.encoder.name,
    grid: c.grid,
    chosenLr: c.chosenLr,
    test: c.test,
    val: c.val,
    runs: c.runs.map((r) => [r.lr, r.seed, r.result.valMetric, r.result.testMetric]),
  }));

const rejection = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (e: Error) => e.message,
  );

test('grid (seed 0) → LR with the best validation Dice → N seeds → mean ± 1.96·s/√N, as the probe computes directly', async () => {
  const d = await probe;
  const calls: TrainRequest[] = [];
  const storage = tempStorage();
  const outcome = await runProtocol({ storage, settings: SETTINGS, trainOne: probeTrainer(d, calls) });
  const expectedCalls: string[] = [];
  for (const encoder of ['pixels', 'random'] as const) {
    // Independently: the grid at seed 0, the arg-max of the validation metric, the seeds' test metrics.
    const grid = GRID.map((lr) => trainProbe(d, encoder, lr, 0));
    const best = grid.reduce((b, r, i) => (r.valMetric > grid[b].valMetric ? i : b), 0);
    const lr = GRID[best];
    const tests = [0, 1, 2].map((seed) => trainProbe(d, encoder, lr, seed).testMetric);
    const mean = (tests[0] + tests[1] + tests[2]) / 3;
    const s = Math.sqrt(((tests[0] - mean) ** 2 + (tests[1] - mean) ** 2 + (tests[2] - mean) ** 2) / 2);
    const cell = outcome.cells.find((c) => c.encoder.name === encoder)!;
    assert.equal(
      cell.grid,
      grid.map((r, i) => ({ lr: GRID[i], valMetric: r.valMetric, testMetric: r.testMetric })),
    );
    assert.is(cell.chosenLr, lr);
    assert.equal(
      cell.runs.map((r) => [r.lr, r.seed, r.result.testMetric]),
      tests.map((t, seed) => [lr, seed, t]),
    );
    assert.ok(
      Math.abs(cell.test.mean - mean) < 1e-15 && Math.abs(cell.test.std - s) < 1e-15,
      `${encoder}: ${cell.test.mean} ± s ${cell.test.std} vs ${mean} ± ${s}`,
    );
    assert.ok(Math.abs(cell.test.halfWidth - (1.96 * s) / Math.sqrt(3)) < 1e-15);
    assert.ok(s > 0, 'different seeds give different runs');
    // Grid at seed 0 in order, then seeds 1 and 2 at the chosen LR (the grid run is seed 0).
    expectedCalls.push(...GRID.map((g) => `${encoder} ${g} 0 grid`), `${encoder} ${lr} 1 seed`, `${encoder} ${lr} 2 seed`);
    assert.ok(cell.wallSeconds > 0);
  }
  assert.equal(
    calls.map((c) => `${c.encoder} ${c.lr} ${c.seed} ${c.phase}`),
    expectedCalls,
  );
  assert.is(outcome.trained, 10);
  assert.is(outcome.reused, 0);
  const lines = readFileSync(storage.pathOf(PROTOCOL_LOG), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.is(lines.length, 11);
  assert.equal(lines[0], { kind: 'settings', version: 1, settings: SETTINGS });
  assert.equal(
    lines.slice(1).map((l) => `${l.encoder} ${l.lr} ${l.seed} ${l.phase}`),
    expectedCalls,
  );
});

test('an interrupted suite keeps its finished runs, resumes with only the missing ones, and ends with the same numbers', async () => {
  const d = await probe;
  const reference = await runProtocol({ storage: tempStorage(), settings: SETTINGS, trainOne: probeTrainer(d, []) });
  const storage = tempStorage();
  const first: TrainRequest[] = [];
  assert.is(await rejection(runProtocol({ storage, settings: SETTINGS, trainOne: probeTrainer(d, first, { interruptAt: 4 }) })), 'interrupted');
  const log = readFileSync(storage.pathOf(PROTOCOL_LOG), 'utf8');
  assert.is(log.split('\n').length, 1 + 3 + 1, 'the settings, the 3 finished runs, a final newline');
  const second: TrainRequest[] = [];
  const resumed = await runProtocol({ storage, settings: SETTINGS, trainOne: probeTrainer(d, second), resume: true });
  const key = (c: TrainRequest) => `${c.encoder} ${c.lr} ${c.seed}`;
  assert.is(key(second[0]), key(first[3]), 'the interrupted run is the first one redone');
  assert.ok(
    second.every((c) => !first.slice(0, 3).some((f) => key(f) === key(c))),
    'no finished run is redone',
  );
  assert.is(second.length, 7);
  assert.equal([resumed.trained, resumed.reused], [7, 3]);
  assert.equal(numbers(resumed), numbers(reference));
  // Resuming a finished suite trains nothing.
  const third: TrainRequest[] = [];
  const again = await runProtocol({ storage, settings: SETTINGS, trainOne: probeTrainer(d, third), resume: true });
  assert.equal([third.length, again.trained, again.reused], [0, 0, 10]);
  assert.equal(numbers(again), numbers(reference));
});

test('a resume with other settings is refused with the difference named; a used directory needs --resume', async () => {
  const d = await probe;
  const storage = tempStorage();
  const dir = storage.description;
  const quick: ProtocolSettings = { ...SETTINGS, lr: 10, seeds: 2 };
  await runProtocol({ storage, settings: quick, trainOne: probeTrainer(d, []) });
  const resume = (settings: ProtocolSettings) => rejection(runProtocol({ storage, settings, trainOne: probeTrainer(d, []), resume: true }));
  const refused = (diff: string) =>
    `cannot resume ${dir} with other settings: ${diff}. Resume with the settings it was started with, or start a new suite with --out DIR`;
  assert.is(await resume({ ...quick, seeds: 3 }), refused('seeds: started with 2, now 3'));
  assert.is(
    await resume({ ...quick, encoders: [quick.encoders[0], { name: 'random', hash: 'random-projection:8' }] }),
    refused('encoder random: its weights changed (identity random-projection:7 when started, now random-projection:8)'),
  );
  assert.is(await resume({ ...quick, encoders: [quick.encoders[1]] }), refused('encoders: started with pixels, random, now random'));
  assert.is(
    await resume({ ...quick, tasks: [...quick.tasks, { name: 'synth-det', metric: 'mAP', lrGrid: [1e-3] }] }),
    refused('tasks: started with synth-seg, now synth-seg, synth-det'),
  );
  assert.is(await resume({ ...quick, lr: null }), refused('learning rate: started with 10, now the grid'));
  assert.is(await resume({ ...quick, context: { fraction: 10, imageSize: 32 } }), refused('fraction: started with 100, now 10'));
  assert.is(
    await rejection(runProtocol({ storage, settings: quick, trainOne: probeTrainer(d, []) })),
    `${dir}/${PROTOCOL_LOG} already exists: ${dir} holds an evaluation suite; resume it with --resume ${dir}, or choose another --out`,
  );
  const edited = tempStorage();
  await runProtocol({ storage: edited, settings: quick, trainOne: probeTrainer(d, []) });
  appendFileSync(edited.pathOf(PROTOCOL_LOG), '{"kind":"run","task":\n');
  assert.match(
    await rejection(runProtocol({ storage: edited, settings: quick, trainOne: probeTrainer(d, []), resume: true })),
    new RegExp(`^${edited.description}/${PROTOCOL_LOG}:6: not a JSON record \\(.*\\); the file was edited or damaged — delete that line to redo its run$`),
  );
  const empty = tempStorage();
  assert.is(
    await rejection(runProtocol({ storage: empty, settings: quick, trainOne: probeTrainer(d, []), resume: true })),
    `nothing to resume: ${empty.description} has no ${PROTOCOL_LOG} (start the suite with --out ${empty.description})`,
  );
  // The grid differs only when the grid is used.
  const gridded = tempStorage();
  await runProtocol({ storage: gridded, settings: { ...SETTINGS, seeds: 2 }, trainOne: probeTrainer(d, []) });
  assert.match(
    await rejection(
      runProtocol({
        storage: gridded,
        settings: { ...SETTINGS, seeds: 2, tasks: [{ ...SETTINGS.tasks[0], lrGrid: [0.1, 10] }] },
        trainOne: probeTrainer(d, []),
        resume: true,
      }),
    ),
    /: task synth-seg: learning-rate grid was 0.1, 10, 100, now 0.1, 10\./,
  );
  assert.throws(
    () => checkSettings({ ...SETTINGS, seeds: 1 }),
    /--seeds must be a whole number ≥ 2 \(the confidence interval needs a standard deviation\), got 1/,
  );
  assert.throws(() => checkSettings({ ...SETTINGS, encoders: [SETTINGS.encoders[0], SETTINGS.encoders[0]] }), /evaluation: encoder 'pixels' is given twice/);
  assert.throws(() => checkSettings({ ...SETTINGS, tasks: [{ ...SETTINGS.tasks[0], lrGrid: [] }] }), /task synth-seg: the learning-rate grid is empty/);
});

test('a diverged LR (NaN validation metric) is never chosen, survives the log as NaN; an all-NaN grid is an error', async () => {
  const d = await probe;
  const settings: ProtocolSettings = { ...SETTINGS, encoders: [SETTINGS.encoders[0]], seeds: 2 };
  // The probe at λ = 0.1 with its validation metric replaced by NaN, as a diverged run reports it.
  const diverging = (nanAt: number[]) => async (run: TrainRequest) => {
    const r = trainProbe(d, 'pixels', run.lr, run.seed);
    return nanAt.includes(run.lr) ? { ...r, valMetric: NaN } : r;
  };
  const storage = tempStorage();
  const outcome = await runProtocol({ storage, settings, trainOne: diverging([0.1]) });
  const direct = [10, 100].map((lr) => trainProbe(d, 'pixels', lr, 0).valMetric);
  assert.is(outcome.cells[0].chosenLr, direct[0] >= direct[1] ? 10 : 100);
  assert.ok(Number.isNaN(outcome.cells[0].grid![0].valMetric));
  assert.match(readFileSync(storage.pathOf(PROTOCOL_LOG), 'utf8'), /"lr":0.1,"seed":0,"phase":"grid","result":\{"valMetric":null,/);
  const resumed = await runProtocol({ storage, settings, trainOne: diverging([]), resume: true });
  assert.equal(numbers(resumed), numbers(outcome));
  assert.is(
    await rejection(runProtocol({ storage: tempStorage(), settings, trainOne: diverging(GRID) })),
    'task synth-seg, encoder pixels: every learning rate of the grid (0.1, 10, 100) gave a NaN validation metric',
  );
});

test('validation control: ReduceLROnPlateau on the loss (patience 3, × 0.5), early stopping on the metric, best epoch', () => {
  const c = new ValidationControl({ lr: 1e-3, stopPatience: 4, metric: 'val Dice' });
  // loss: better, better, then 4 epochs not better by the relative 1e-4 → the 4th bad one halves the LR (PyTorch: bad > patience).
  const steps: [number, number][] = [
    [1.0, 0.1],
    [0.9, 0.3],
    [0.91, 0.3],
    [0.9, 0.25],
    [0.95, 0.2],
    [0.9, 0.29],
  ];
  const got = steps.map(([loss, metric]) => c.update(loss, metric));
  assert.equal(
    got.map((g) => g.lr),
    [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 5e-4],
  );
  // The metric improves at epochs 1 and 2 (0.3 again is not an improvement); 4 epochs without one stop at epoch 6.
  assert.equal(
    got.map((g) => g.improved),
    [true, true, false, false, false, false],
  );
  assert.equal(
    got.map((g) => g.stop),
    [false, false, false, false, false, true],
  );
  assert.is(got[5].reason, 'val Dice did not improve for 4 epochs (best 0.300000 at epoch 2)');
  assert.equal(c.bestValidation, { value: 0.3, epoch: 1 });
  const nan = new ValidationControl({ lr: 0.1 });
  nan.update(1, 0.5);
  assert.equal(nan.update(NaN, NaN), { lr: 0.1, improved: false, stop: true, reason: 'validation metric is NaN at epoch 2' });
});

test('results: results.json holds every number, results.md the table and the differences, one PNG chart per task', async () => {
  const d = await probe;
  const storage = tempStorage();
  const outcome = await runProtocol({ storage, settings: SETTINGS, trainOne: probeTrainer(d, []) });
  await writeResults(storage, outcome);
  const json = JSON.parse(readFileSync(storage.pathOf(RESULTS_JSON), 'utf8')) as SuiteResults;
  assert.is(json.format, 'lovt evaluation results 1');
  assert.equal(json.settings, SETTINGS);
  assert.is(json.tasks.length, 1);
  const task = json.tasks[0];
  for (const cell of outcome.cells) {
    const e = task.encoders.find((x) => x.encoder === cell.encoder.name)!;
    assert.equal([e.mean, e.std, e.n, e.halfWidth, e.low, e.high], [cell.test.mean, cell.test.std, 3, cell.test.halfWidth, cell.test.low, cell.test.high]);
    assert.equal(
      e.testMetrics,
      cell.runs.map((r) => r.result.testMetric),
    );
    assert.equal([e.chosenLr, e.seeds, e.hash], [cell.chosenLr, [0, 1, 2], cell.encoder.hash]);
    assert.equal(e.grid, cell.grid);
  }
  const pct = (v: number) => (100 * v).toFixed(1);
  const [p, r] = ['pixels', 'random'].map((n) => outcome.cells.find((c) => c.encoder.name === n)!.test);
  const md = readFileSync(storage.pathOf(RESULTS_MD), 'utf8');
  assert.ok(
    md.includes(
      `| Task | Metric | pixels | random |\n|---|---|---|---|\n| synth-seg | Dice | ${pct(p.mean)} ± ${pct(p.halfWidth)} | ${pct(r.mean)} ± ${pct(r.halfWidth)} |\n`,
    ),
    md,
  );
  const disjoint = p.low > r.high || r.low > p.high;
  const better = p.mean > r.mean ? 'pixels > random' : 'random > pixels';
  assert.ok(
    md.includes(`\n${disjoint ? `synth-seg: ${better} (95% intervals disjoint).` : 'synth-seg: no two encoders differ beyond their 95% intervals.'}\n`),
    md,
  );
  assert.ok(md.includes('![synth-seg](figures/synth-seg.png)'));
  assert.ok(md.includes('This command trained 10 runs and reused 0 recorded ones.'));
  const pixelsCell = outcome.cells[0];
  assert.ok(md.includes(`| pixels | ${pct(p.mean)} ± ${pct(p.halfWidth)} | [${pct(p.low)}, ${pct(p.high)}] | `), md);
  assert.ok(
    md.includes(
      ` | ${pixelsCell.chosenLr} | 0.1 → ${pct(pixelsCell.grid![0].valMetric)}, 10 → ${pct(pixelsCell.grid![1].valMetric)}, 100 → ${pct(pixelsCell.grid![2].valMetric)} | 0–2 | `,
    ),
    md,
  );
  const png = decode(readFileSync(storage.pathOf('figures/synth-seg.png')));
  assert.equal([png.width, png.height], [420, 340]);
  const has = (rgb: number[]) => {
    for (let i = 0; i < png.data.length; i += png.channels) if (png.data[i] === rgb[0] && png.data[i + 1] === rgb[1] && png.data[i + 2] === rgb[2]) return true;
    return false;
  };
  assert.ok(has(PALETTE[0]) && has(PALETTE[1]), 'one bar per encoder in its colour');
  assert.ok(has([0, 0, 0]), 'whiskers and text');
});

test('the differences line names each pair whose intervals are disjoint, better one first', () => {
  const enc = (encoder: string, low: number, high: number) => ({ encoder, low, high, mean: (low + high) / 2 }) as EncoderResult;
  const a = enc('imagenet', 0.5, 0.6);
  const b = enc('lovt', 0.7, 0.8);
  const c = enc('random', 0.55, 0.75);
  assert.equal(differencesLine('t', [a, b, c]), {
    differences: [{ better: 'lovt', worse: 'imagenet' }],
    summary: 't: lovt > imagenet (95% intervals disjoint); the other pairs overlap.',
  });
  assert.is(differencesLine('t', [a, b]).summary, 't: lovt > imagenet (95% intervals disjoint).');
  assert.is(differencesLine('t', [a, enc('x', 0.6, 0.9)]).summary, 't: no two encoders differ beyond their 95% intervals.', 'touching intervals overlap');
  assert.is(differencesLine('t', [a]).summary, 't: one encoder, nothing to compare.');
});

test('cleanup', () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test.run();
