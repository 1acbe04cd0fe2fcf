// `lovt-run demo`: pre-train LoVT-tiny on SynthCXR for a few minutes, then judge the
// encoder it learned: the linear segmentation probe against random weights (the
// evaluation protocol at a reduced number of seeds) and phrase grounding of the
// run's attention, both appended to the run's report.md. docs/training.md, "demo".

import nodePath from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { trainCommand, type RunOutput } from './node-train.ts';
import { evalCommand } from './node-eval.ts';
import { groundingCommand } from './node-grounding.ts';
import { groundingMarkdown } from '../eval/grounding-run.ts';
import { resultsTable, type SuiteResults } from '../eval/results.ts';

export interface DemoOptions {
  out: string;
  overwrite?: boolean;
  /** Pre-training time (kernel compilation not counted). */
  minutes: number;
  studies: number;
  dataWorkers?: number;
  /** Runs per encoder at the chosen LR (the protocol's N). */
  seeds: number;
}

/** The downstream task the demo runs: the cheapest one (a 1×1 conv on cached frozen features). */
export const DEMO_TASK = 'synth-seg-linear';
/**
 * The evaluation reads a second SynthCXR (another generator seed): its test images are
 * new to the pre-trained encoder (the tasks' patient split ignores pre-training's).
 */
export const DEMO_EVAL_SYNTH_SEED = 1;

export async function demoCommand(model: string, o: DemoOptions, out: RunOutput & { stop(): void }): Promise<void> {
  const command = `lovt-run demo --out ${o.out} --minutes ${o.minutes}`;
  await trainCommand(
    model,
    {
      // Accumulation 1 and 10× the reference LR, so that a few minutes show learning.
      data: 'synth',
      studies: o.studies,
      synthSeed: 0,
      set: ['train.accumulate=1', 'train.epochs=1000', 'train.optimizer.lr=1e-3'],
      init: [],
      out: o.out,
      overwrite: o.overwrite,
      minutes: o.minutes,
      report: true,
      heatmapStudies: 4,
      dataWorkers: o.dataWorkers,
      command,
    },
    out,
  );
  out.stop();

  out.say(`evaluating the pre-trained encoder against random weights on ${DEMO_TASK} (${o.seeds} seeds per encoder) and phrase grounding`);
  const grounding = await groundingCommand(o.out, { dataWorkers: o.dataWorkers }, out);
  const evalDir = nodePath.join(o.out, 'eval');
  const { results } = await evalCommand(
    {
      init: [o.out, 'random'],
      task: [DEMO_TASK],
      studies: o.studies,
      synthSeed: DEMO_EVAL_SYNTH_SEED,
      fraction: 100,
      seeds: o.seeds,
      out: evalDir,
      dataWorkers: o.dataWorkers,
    },
    out,
  );
  out.stagesDone?.();
  const evalCommandLine =
    `lovt-run eval --task ${DEMO_TASK} --init ${o.out} --init random --seeds ${o.seeds} --studies ${o.studies} ` +
    `--synth-seed ${DEMO_EVAL_SYNTH_SEED} --out ${evalDir}`;
  const reportPath = nodePath.join(o.out, 'report.md');
  const report = await readFile(reportPath, 'utf8');
  await writeFile(
    reportPath,
    report.trimEnd() + '\n\n' + demoEvaluationMarkdown(results, evalCommandLine) + '\n' + groundingMarkdown(grounding, { run: o.out, checkpoint: 'best' }),
  );
  out.say(resultsTable(results));
  for (const t of results.tasks) out.say(t.summary);
  out.say(`report: ${reportPath}`);
}

/** The report section of the demo's downstream evaluation (charts relative to the run directory). */
export function demoEvaluationMarkdown(results: SuiteResults, commandLine: string): string {
  const lines = [
    '## Downstream evaluation: did pre-training help?',
    '',
    `The pre-trained image encoder (best checkpoint) and the same ResNet with random weights, each frozen, ` +
      `with a linear segmentation head trained on its features (docs/evaluation.md): test Dice in percent, ` +
      `mean ± 1.96·s/√N over N = ${results.settings.seeds} seeds at the learning rate each encoder's grid chose. ` +
      `The task reads a second SynthCXR (generator seed ${DEMO_EVAL_SYNTH_SEED}), so its test images are new to the encoder.`,
    '',
    resultsTable(results),
    '',
  ];
  for (const t of results.tasks) lines.push(t.summary, '', `![${t.task}](eval/${t.chart})`, '');
  lines.push(`Every run and number: \`eval/results.md\`, \`eval/results.json\`. The same evaluation by hand: \`${commandLine}\``, '');
  return lines.join('\n');
}
