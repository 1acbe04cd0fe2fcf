// RUN_DIR/metrics.jsonl: one JSON object per line, one line per optimizer step
// ({kind:'train', step, epoch, lr, samples_per_s, <every loss term>, ...}) and one per
// validation ({kind:'val', step, epoch, val_<term>...}). Lines are appended as the run
// goes; a resume first drops lines past the checkpoint so the log reads like one
// uninterrupted run.

import { utf8, type Storage } from './storage.ts';

export const METRICS_FILE = 'metrics.jsonl';

export type MetricsRecord = {
  kind: 'train' | 'val' | 'event';
  step: number;
  epoch: number;
  [key: string]: number | string | null;
};

export class MetricsLog {
  private constructor(
    private readonly storage: Storage,
    private readonly path: string,
  ) {}

  /**
   * Opens the log for appending. With `resumeAtStep`, records of steps after it
   * (written after the checkpoint the run resumes from) are removed first; a fresh
   * run (no resume step) starts an empty log.
   */
  static async open(storage: Storage, opts: { resumeAtStep?: number; path?: string } = {}): Promise<MetricsLog> {
    const path = opts.path ?? METRICS_FILE;
    if (opts.resumeAtStep === undefined) {
      await storage.writeFileAtomic(path, new Uint8Array(0));
    } else {
      const kept = (await readMetrics(storage, path)).filter((r) => r.step <= opts.resumeAtStep!);
      await storage.writeFileAtomic(path, utf8(kept.map((r) => JSON.stringify(r) + '\n').join('')));
    }
    return new MetricsLog(storage, path);
  }

  async append(record: MetricsRecord): Promise<void> {
    // Non-finite numbers become null (JSON cannot hold them); the 'nonfinite' event says which.
    const clean: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(record)) clean[k] = typeof v === 'number' && !Number.isFinite(v) ? null : v;
    await this.storage.appendFile(this.path, utf8(JSON.stringify(clean) + '\n'));
  }
}

/** Reads every record; a torn last line (a crash mid-append) is skipped. */
export async function readMetrics(storage: Storage, path = METRICS_FILE): Promise<MetricsRecord[]> {
  if (!(await storage.exists(path))) return [];
  const lines = new TextDecoder().decode(await storage.readFile(path)).split('\n');
  const out: MetricsRecord[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push(JSON.parse(line));
    } catch (err) {
      if (i < lines.length - 1 && lines.slice(i + 1).some((l) => l.trim() !== '')) {
        throw new Error(`${storage.description}/${path}:${i + 1}: not a JSON record: ${(err as Error).message}`);
      }
    }
  });
  return out;
}

/** One named series out of the records of one kind, as (step, value) points; null values are skipped. */
export function metricSeries(records: MetricsRecord[], kind: MetricsRecord['kind'], key: string): { x: number[]; y: number[] } {
  const x: number[] = [];
  const y: number[] = [];
  for (const r of records) {
    const v = r[key];
    if (r.kind === kind && typeof v === 'number' && Number.isFinite(v)) {
      x.push(r.step);
      y.push(v);
    }
  }
  return { x, y };
}

/**
 * Samples per second over a sliding window of recent optimizer steps, from each
 * step's own duration (so pauses between steps — validation, checkpoints — do not
 * count against it).
 */
export class Throughput {
  private readonly samples: number[] = [];
  private readonly seconds: number[] = [];
  constructor(private readonly window = 20) {}

  /** Records one step of `samples` samples that took `seconds`; returns samples/s over the window. */
  record(samples: number, seconds: number): number {
    this.samples.push(samples);
    this.seconds.push(seconds);
    if (this.samples.length > this.window) {
      this.samples.shift();
      this.seconds.shift();
    }
    const t = this.seconds.reduce((a, b) => a + b, 0);
    return t > 0 ? this.samples.reduce((a, b) => a + b, 0) / t : NaN;
  }
}
