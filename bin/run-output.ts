// What lovt-run prints while a command runs: progress bars on a terminal, and
// plain lines (every tenth of a stage, every 5 % of training) in logs and CI.

import cliProgress from 'cli-progress';
import type { RunOutput } from '../runtime/platform/node-train.ts';
import type { TrainEvent } from '../runtime/train/trainer.ts';

/** The formatting helpers of the commands module (loaded lazily by lovt-run). */
export interface LossFormat {
  formatLoss(v: number): string;
  formatLosses(l: Record<string, number>): string;
  formatSeconds(s: number): string;
}

export function say(text: string): void {
  process.stdout.write(text + '\n');
}

/**
 * A cli-progress bar on an interactive terminal (counting steps, or seconds with
 * unit 's'); elsewhere a no-op with `tty: false` whose log() just prints.
 */
export function progressBar(label: string, total = 1, start = 0, unit: '' | 's' = '') {
  if (!process.stderr.isTTY) return { tty: false, total, update: (_v: number, _t?: number, _p?: object) => {}, log: say, stop: () => {} };
  const counter = unit === 's' ? '{value}/{total} s | step {step}' : '{value}/{total}';
  const format =
    label === 'train'
      ? `${label} {bar} ${counter} | epoch {epoch} | loss {loss} | {sps} samples/s | ETA {eta_formatted}`
      : `${label} {bar} {value}/{total} | ETA {eta_formatted}`;
  const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true, etaBuffer: 20 }, cliProgress.Presets.shades_classic);
  bar.start(total, start, { loss: '-', sps: '-', epoch: 1, step: 0 });
  const handle = {
    tty: true,
    total,
    update: (v: number, t?: number, payload?: object) => {
      if (t !== undefined) bar.setTotal((handle.total = t));
      bar.update(v, payload);
    },
    // Clear the bar's line, print, and let the next update redraw it.
    log: (t: string) => (process.stderr.write('\r\x1b[K'), say(t)),
    stop: () => bar.stop(),
  };
  return handle;
}

/**
 * The commands' output: a bar per setup stage (without a terminal a line per tenth
 * of a long stage: resizing MIMIC takes hours), and the training bar or, without a
 * terminal, a line every 5 % of the run.
 */
export function runOutput({ formatLoss, formatLosses, formatSeconds }: LossFormat, steps?: number): RunOutput & { stop(): void } {
  let bar: ReturnType<typeof progressBar> | null = null;
  let stage = '';
  let nextLine = 0;
  let logEvery = 1;
  let timeBar = false;
  const stop = () => (bar?.stop(), (bar = null));
  const onEvent = (e: TrainEvent): void => {
    if (e.kind === 'start') {
      // With a time budget (and no step limit) the bar counts seconds, else steps.
      timeBar = e.maxSeconds !== null && steps === undefined;
      const limit = timeBar ? `for ${formatSeconds(e.maxSeconds!)}` : e.totalSteps ? `until step ${e.totalSteps}` : '';
      say(`${e.resumed ? `resuming at step ${e.step}` : 'training'}: ${e.stepsPerEpoch} optimizer steps per epoch${limit ? `, ${limit}` : ''}`);
      bar = timeBar ? progressBar('train', Math.round(e.maxSeconds!), 0, 's') : progressBar('train', e.totalSteps ?? undefined, e.step);
      logEvery = timeBar ? 10 : Math.max(1, Math.round((e.totalSteps ?? 100) / 20));
    } else if (e.kind === 'step' && bar) {
      const sps = Number.isFinite(e.samplesPerSecond) ? e.samplesPerSecond.toFixed(1) : '-';
      bar.update(timeBar ? Math.min(Math.round(e.elapsedSeconds), bar.total) : e.step, undefined, {
        loss: formatLoss(e.losses['loss.total']),
        sps,
        epoch: e.epoch + 1,
        step: e.step,
      });
      if (!bar.tty && e.step % logEvery === 0) {
        say(
          `step ${e.step} epoch ${e.epoch + 1}: loss ${formatLoss(e.losses['loss.total'])}, lr ${e.lr.toExponential(2)}, ${sps} samples/s, ${formatSeconds(e.elapsedSeconds)}`,
        );
      }
    } else if (e.kind === 'validation') {
      (bar ?? { log: say }).log(`epoch ${e.epoch + 1} validation (step ${e.step}): ${formatLosses(e.losses)}${e.improved ? '  (best so far)' : ''}`);
    } else if (e.kind === 'message') {
      (bar ?? { log: say }).log(e.text);
    }
  };
  return {
    say: (text) => (stop(), say(text)),
    stage: (name, done, total) => {
      if (name !== stage) {
        stop();
        [stage, bar, nextLine] = [name, progressBar(name, total), 0];
      }
      bar!.update(done, total);
      if (!bar!.tty && total >= 1000 && done >= nextLine) {
        say(`${name}: ${done}/${total}`);
        nextLine = done + Math.ceil(total / 10);
      }
    },
    stagesDone: () => (stop(), (stage = '')),
    onEvent,
    stop,
  };
}
