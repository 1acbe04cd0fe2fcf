// The evaluation protocol of method §6, independent of how one head is trained: for every
// task and encoder, a learning-rate grid (one run per LR, seed 0), the LR with the best
// validation metric, then N runs at that LR with seeds 0 … N−1 (the grid's seed-0 run at
// that LR is one of them), reported as mean ± 1.96·s/√N of the test metric (stats.ts).
// The head training is injected (`trainOne`), so the same engine drives the real heads,
// the tests' closed-form probe and anything else.
//
// Resume: every finished run is recorded in OUT/runs.jsonl — the settings on the first
// line, then one line per run, each added by atomically replacing the file (Storage's
// writeFileAtomic: temp file, fsync, rename), so a crash leaves the file as it was before
// or after that run, never torn. A resumed suite skips the recorded runs, so an
// interruption loses at most the run in progress; a resume with other settings is refused.
//
// Also here: the per-validation control of one head's training (ReduceLROnPlateau on the
// validation loss, early stopping on the validation metric, the best-validation epoch).
// Definitions: docs/evaluation.md, "Protocol".
import { EarlyStopping } from '../train/early-stop.ts';
import { createSchedule, plateauSpec, type LrSchedule } from '../train/lr-schedule.ts';
import { utf8, type Storage } from '../train/storage.ts';
import { meanInterval, type MeanInterval } from './stats.ts';

// ---------------------------------------------------------------------------------------
// Settings

export interface ProtocolTask {
  name: string;
  /** Name of the reported metric (e.g. 'Dice', 'mAP'); higher is better. */
  metric: string;
  /** Learning rates tried, in order (ties go to the earlier one). */
  lrGrid: number[];
}

export interface EncoderRef {
  name: string;
  /** Identity of the weights (e.g. a hash of the checkpoint, or 'random:<seed>'): a changed encoder cannot resume. */
  hash: string;
}

export interface ProtocolSettings {
  tasks: ProtocolTask[];
  encoders: EncoderRef[];
  /** N runs at the chosen LR (≥ 2: the interval needs a standard deviation). */
  seeds: number;
  /** A fixed LR for every task: no grid. */
  lr?: number | null;
  /** Anything else that changes the numbers (data set, fraction, image size, …): compared on resume. */
  context?: Record<string, string | number | boolean>;
}

export function checkSettings(s: ProtocolSettings): void {
  if (s.tasks.length === 0) throw new Error('evaluation: no task given');
  if (s.encoders.length === 0) throw new Error('evaluation: no encoder given (--init)');
  if (!(Number.isInteger(s.seeds) && s.seeds >= 2)) {
    throw new Error(`--seeds must be a whole number ≥ 2 (the confidence interval needs a standard deviation), got ${s.seeds}`);
  }
  const dup = (names: string[], what: string) => {
    const seen = new Set<string>();
    for (const n of names) {
      if (seen.has(n)) throw new Error(`evaluation: ${what} '${n}' is given twice`);
      seen.add(n);
    }
  };
  dup(
    s.tasks.map((t) => t.name),
    'task',
  );
  dup(
    s.encoders.map((e) => e.name),
    'encoder',
  );
  const checkLr = (lr: number, where: string) => {
    if (!(Number.isFinite(lr) && lr > 0)) throw new Error(`${where}: learning rates must be positive numbers, got ${lr}`);
  };
  if (s.lr != null) checkLr(s.lr, '--lr');
  else {
    for (const t of s.tasks) {
      if (t.lrGrid.length === 0) throw new Error(`task ${t.name}: the learning-rate grid is empty`);
      t.lrGrid.forEach((lr) => checkLr(lr, `task ${t.name}'s grid`));
      dup(t.lrGrid.map(String), `task ${t.name}: learning rate`);
    }
  }
}

/** The first difference between the settings a suite was started with and new ones, in words; null when equal. */
export function settingsDifference(before: ProtocolSettings, now: ProtocolSettings): string | null {
  const list = (xs: string[]) => (xs.length ? xs.join(', ') : '(none)');
  const taskNames = (s: ProtocolSettings) => s.tasks.map((t) => t.name);
  if (taskNames(before).join('\n') !== taskNames(now).join('\n')) return `tasks: started with ${list(taskNames(before))}, now ${list(taskNames(now))}`;
  const encNames = (s: ProtocolSettings) => s.encoders.map((e) => e.name);
  if (encNames(before).join('\n') !== encNames(now).join('\n')) return `encoders: started with ${list(encNames(before))}, now ${list(encNames(now))}`;
  for (let i = 0; i < now.encoders.length; i++) {
    const a = before.encoders[i];
    const b = now.encoders[i];
    if (a.hash !== b.hash) return `encoder ${b.name}: its weights changed (identity ${a.hash} when started, now ${b.hash})`;
  }
  if (before.seeds !== now.seeds) return `seeds: started with ${before.seeds}, now ${now.seeds}`;
  if ((before.lr ?? null) !== (now.lr ?? null)) return `learning rate: started with ${before.lr ?? 'the grid'}, now ${now.lr ?? 'the grid'}`;
  for (let i = 0; i < now.tasks.length; i++) {
    const a = before.tasks[i];
    const b = now.tasks[i];
    if (a.metric !== b.metric) return `task ${b.name}: metric was ${a.metric}, now ${b.metric}`;
    if (now.lr == null && a.lrGrid.join(',') !== b.lrGrid.join(','))
      return `task ${b.name}: learning-rate grid was ${a.lrGrid.join(', ')}, now ${b.lrGrid.join(', ')}`;
  }
  const ca = before.context ?? {};
  const cb = now.context ?? {};
  for (const key of [...new Set([...Object.keys(ca), ...Object.keys(cb)])].sort()) {
    if (ca[key] !== cb[key]) return `${key}: started with ${ca[key] ?? '(unset)'}, now ${cb[key] ?? '(unset)'}`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// The run log

export const PROTOCOL_LOG = 'runs.jsonl';

/** What `trainOne` returns: the best-validation head's metrics (higher is better) and its time. */
export interface RunResult {
  valMetric: number;
  testMetric: number;
  wallSeconds: number;
  /** Anything else worth keeping (epochs, stop reason, validation loss, …); JSON values. */
  [key: string]: unknown;
}

export interface RunKey {
  task: string;
  encoder: string;
  lr: number;
  seed: number;
}

export interface RecordedRun extends RunKey {
  /** 'grid' for a grid run, 'seed' for the further seeds at the chosen LR. */
  phase: 'grid' | 'seed';
  result: RunResult;
}

type LogLine = { kind: 'settings'; version: 1; settings: ProtocolSettings } | ({ kind: 'run' } & RecordedRun);

const keyOf = (k: RunKey) => JSON.stringify([k.task, k.encoder, k.lr, k.seed]);

/** JSON has no NaN or Infinity: such metrics are stored as null and read back as NaN. */
function finiteOrNull(result: RunResult): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(result)) out[k] = typeof v === 'number' && !Number.isFinite(v) ? null : v;
  return out;
}

export class RunLog {
  private readonly runs = new Map<string, RecordedRun>();

  private constructor(
    private readonly storage: Storage,
    private text: string,
    readonly settings: ProtocolSettings,
  ) {}

  /**
   * Starts a new log (`resume` false: the directory must not hold one) or reopens one
   * (`resume` true: it must exist and have been started with the same settings).
   */
  static async open(storage: Storage, settings: ProtocolSettings, resume: boolean): Promise<RunLog> {
    const where = `${storage.description}/${PROTOCOL_LOG}`;
    const exists = await storage.exists(PROTOCOL_LOG);
    if (!resume) {
      if (exists) {
        throw new Error(
          `${where} already exists: ${storage.description} holds an evaluation suite; resume it with --resume ${storage.description}, or choose another --out`,
        );
      }
      const log = new RunLog(storage, '', settings);
      await log.write({ kind: 'settings', version: 1, settings });
      return log;
    }
    if (!exists) throw new Error(`nothing to resume: ${storage.description} has no ${PROTOCOL_LOG} (start the suite with --out ${storage.description})`);
    let text = new TextDecoder().decode(await storage.readFile(PROTOCOL_LOG));
    const lines = text.split('\n');
    if (text !== '' && !text.endsWith('\n')) text += '\n'; // a hand-edited file: the next record starts a line of its own
    let started: ProtocolSettings | null = null;
    const log = new RunLog(storage, text, settings);
    lines.forEach((line, i) => {
      if (line.trim() === '') return;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch (err) {
        throw new Error(`${where}:${i + 1}: not a JSON record (${(err as Error).message}); the file was edited or damaged — delete that line to redo its run`);
      }
      if (i === 0) {
        if (parsed.kind !== 'settings' || parsed.version !== 1)
          throw new Error(`${where}:1: expected the suite's settings (version 1), found ${line.slice(0, 80)}`);
        started = parsed.settings;
        return;
      }
      if (parsed.kind !== 'run') throw new Error(`${where}:${i + 1}: expected a run record, found kind ${JSON.stringify((parsed as { kind: unknown }).kind)}`);
      const r = parsed.result;
      for (const k of ['valMetric', 'testMetric', 'wallSeconds'] as const) if (r[k] === null) r[k] = NaN;
      log.runs.set(keyOf(parsed), { task: parsed.task, encoder: parsed.encoder, lr: parsed.lr, seed: parsed.seed, phase: parsed.phase, result: r });
    });
    if (started === null) throw new Error(`${where} is empty: nothing to resume`);
    const diff = settingsDifference(started, settings);
    if (diff !== null) {
      throw new Error(
        `cannot resume ${storage.description} with other settings: ${diff}. Resume with the settings it was started with, or start a new suite with --out DIR`,
      );
    }
    return log;
  }

  get(key: RunKey): RecordedRun | undefined {
    return this.runs.get(keyOf(key));
  }

  /** Records a finished run (the file is replaced atomically with one more line). */
  async add(run: RecordedRun): Promise<void> {
    await this.write({ kind: 'run', ...run, result: finiteOrNull(run.result) as RunResult });
    this.runs.set(keyOf(run), run);
  }

  get size(): number {
    return this.runs.size;
  }

  private async write(line: LogLine): Promise<void> {
    const text = this.text + JSON.stringify(line) + '\n';
    await this.storage.writeFileAtomic(PROTOCOL_LOG, utf8(text));
    this.text = text;
  }
}

// ---------------------------------------------------------------------------------------
// The engine

export interface TrainRequest extends RunKey {
  phase: 'grid' | 'seed';
}

export interface GridPoint {
  lr: number;
  valMetric: number;
  testMetric: number;
}

/** One task × encoder. */
export interface CellOutcome {
  task: string;
  metric: string;
  encoder: EncoderRef;
  /** The grid runs in grid order; null with a fixed LR. */
  grid: GridPoint[] | null;
  chosenLr: number;
  /** The N runs at the chosen LR, seed order. */
  runs: RecordedRun[];
  /** Of the runs' test metrics. */
  test: MeanInterval;
  /** Of the runs' validation metrics. */
  val: MeanInterval;
  /** Sum over every run of this cell, grid included. */
  wallSeconds: number;
}

export interface ProtocolOutcome {
  settings: ProtocolSettings;
  cells: CellOutcome[];
  /** Runs trained now and runs taken from the log. */
  trained: number;
  reused: number;
}

export type ProtocolEvent =
  | { kind: 'start'; run: TrainRequest; index: number; total: number }
  | { kind: 'done' | 'recorded'; run: TrainRequest; result: RunResult; index: number; total: number }
  | { kind: 'chosen'; task: string; encoder: string; lr: number; grid: GridPoint[] };

export interface ProtocolOptions {
  storage: Storage;
  settings: ProtocolSettings;
  /** Trains one head and returns its best-validation metrics. */
  trainOne: (run: TrainRequest) => Promise<RunResult>;
  /** Continue the suite recorded in `storage` (default: start a new one there). */
  resume?: boolean;
  onEvent?: (e: ProtocolEvent) => void;
}

/** The index of the best validation metric (NaN counts as worst; ties go to the first). */
export function chooseLr(grid: readonly GridPoint[], where: string): number {
  let best = -1;
  grid.forEach((p, i) => {
    if (!Number.isNaN(p.valMetric) && (best < 0 || p.valMetric > grid[best].valMetric)) best = i;
  });
  if (best < 0) throw new Error(`${where}: every learning rate of the grid (${grid.map((p) => p.lr).join(', ')}) gave a NaN validation metric`);
  return best;
}

export async function runProtocol(opts: ProtocolOptions): Promise<ProtocolOutcome> {
  const { settings } = opts;
  checkSettings(settings);
  const log = await RunLog.open(opts.storage, settings, opts.resume ?? false);
  const gridSize = (t: ProtocolTask) => (settings.lr != null ? 0 : t.lrGrid.length);
  // Distinct runs: the grid's run at the chosen LR doubles as seed 0.
  const total = settings.tasks.reduce((n, t) => n + (gridSize(t) + settings.seeds - (gridSize(t) > 0 ? 1 : 0)) * settings.encoders.length, 0);
  let index = 0;
  let trained = 0;
  let reused = 0;
  const done = new Set<string>();
  const run = async (request: TrainRequest): Promise<RecordedRun> => {
    const recorded = log.get(request);
    if (recorded) {
      // Recorded by an earlier command, or by this one (the grid's run at the chosen LR is seed 0).
      if (!done.has(keyOf(request))) {
        done.add(keyOf(request));
        reused++;
        opts.onEvent?.({ kind: 'recorded', run: request, result: recorded.result, index: index++, total });
      }
      return recorded;
    }
    opts.onEvent?.({ kind: 'start', run: request, index, total });
    const result = await opts.trainOne(request);
    for (const k of ['valMetric', 'testMetric', 'wallSeconds'] as const) {
      if (typeof result[k] !== 'number')
        throw new Error(`task ${request.task}, encoder ${request.encoder}, lr ${request.lr}, seed ${request.seed}: the trainer returned no numeric ${k}`);
    }
    const finished: RecordedRun = { ...request, result };
    await log.add(finished);
    done.add(keyOf(request));
    trained++;
    opts.onEvent?.({ kind: 'done', run: request, result, index: index++, total });
    return finished;
  };

  const cells: CellOutcome[] = [];
  for (const task of settings.tasks) {
    for (const encoder of settings.encoders) {
      const base = { task: task.name, encoder: encoder.name };
      const where = `task ${task.name}, encoder ${encoder.name}`;
      const gridRuns: RecordedRun[] = [];
      let chosenLr: number;
      let grid: GridPoint[] | null = null;
      if (settings.lr != null) {
        chosenLr = settings.lr;
      } else {
        for (const lr of task.lrGrid) gridRuns.push(await run({ ...base, lr, seed: 0, phase: 'grid' }));
        grid = gridRuns.map((r) => ({ lr: r.lr, valMetric: r.result.valMetric, testMetric: r.result.testMetric }));
        chosenLr = task.lrGrid[chooseLr(grid, where)];
        opts.onEvent?.({ kind: 'chosen', task: task.name, encoder: encoder.name, lr: chosenLr, grid });
      }
      const runs: RecordedRun[] = [];
      for (let seed = 0; seed < settings.seeds; seed++) runs.push(await run({ ...base, lr: chosenLr, seed, phase: 'seed' }));
      const interval = (key: 'testMetric' | 'valMetric') => {
        try {
          return meanInterval(runs.map((r) => r.result[key]));
        } catch (err) {
          throw new Error(`${where} at lr ${chosenLr}: ${(err as Error).message}`);
        }
      };
      // The grid's run at the chosen LR is also seed 0: count its time once.
      const counted = new Map([...gridRuns, ...runs].map((r) => [keyOf(r), r.result.wallSeconds]));
      cells.push({
        task: task.name,
        metric: task.metric,
        encoder,
        grid,
        chosenLr,
        runs,
        test: interval('testMetric'),
        val: interval('valMetric'),
        wallSeconds: [...counted.values()].reduce((a, b) => a + b, 0),
      });
    }
  }
  return { settings, cells, trained, reused };
}

// ---------------------------------------------------------------------------------------
// One head's training control

export interface ValidationControlOptions {
  /** The task LR the head starts at. */
  lr: number;
  /** ReduceLROnPlateau on the validation loss (method §6: patience 3, factor 0.5). */
  lrPatience?: number;
  lrFactor?: number;
  /** Early stopping on the validation metric (method §6: 10; 20 for 1 % and small tasks). */
  stopPatience?: number;
  /** Name of the metric, for the stop reason. */
  metric?: string;
}

export interface ValidationDecision {
  /** The LR for the next epoch. */
  lr: number;
  /** The best validation metric so far: keep these head weights for the test. */
  improved: boolean;
  stop: boolean;
  reason?: string;
}

/**
 * The per-validation decisions of one head's training (method §6): the LR follows
 * ReduceLROnPlateau on the validation loss (runtime/train/lr-schedule.ts, PyTorch's
 * semantics); training stops when the validation metric (higher is better) has not
 * improved for `stopPatience` validations in a row, or is not finite (Lightning's
 * EarlyStopping, mode 'max', runtime/train/early-stop.ts on the negated metric); the
 * weights of the best validation are the ones tested.
 */
export class ValidationControl {
  private readonly schedule: LrSchedule;
  private readonly stopping: EarlyStopping;
  private best = -Infinity;
  private bestEpoch = -1;
  private epochs = 0;
  readonly metric: string;

  constructor(opts: ValidationControlOptions) {
    this.metric = opts.metric ?? 'validation metric';
    this.schedule = createSchedule(plateauSpec({ patience: opts.lrPatience ?? 3, factor: opts.lrFactor ?? 0.5 }), opts.lr);
    this.stopping = new EarlyStopping({ monitor: this.metric, patience: opts.stopPatience ?? 10, minDelta: 0 });
  }

  get lr(): number {
    return this.schedule.lrAt(0);
  }

  /** The best validation metric so far and its epoch (0-based; −1 before any). */
  get bestValidation(): { value: number; epoch: number } {
    return { value: this.best, epoch: this.bestEpoch };
  }

  /** Feeds one epoch's validation loss and metric. */
  update(valLoss: number, valMetric: number): ValidationDecision {
    const epoch = this.epochs++;
    this.schedule.onValidation(valLoss);
    const d = this.stopping.update(-valMetric, epoch);
    if (d.improved) {
      this.best = valMetric;
      this.bestEpoch = epoch;
    }
    // The reason is written here: EarlyStopping's would show the negated metric.
    const reason = !d.stop
      ? undefined
      : !Number.isFinite(valMetric)
        ? `${this.metric} is ${valMetric} at epoch ${epoch + 1}`
        : `${this.metric} did not improve for ${epoch - this.bestEpoch} epochs (best ${this.best.toPrecision(6)} at epoch ${this.bestEpoch + 1})`;
    return { lr: this.lr, improved: d.improved, stop: d.stop, ...(reason ? { reason } : {}) };
  }
}
