// A run directory belongs to one run for its whole life. The rules, platform-neutral
// (runtime/platform/node-run-dir.ts applies them to a directory on disk: creation,
// --overwrite, the lock):
//  - a run has a random id, recorded in every checkpoint manifest and weights file;
//    checkpoint.ts refuses files of another run on load;
//  - a directory that holds a run (a manifest, metrics or checkpoints) is never the
//    target of a new run: `--resume` continues it, `--overwrite` moves it aside first;
//  - one writer at a time: RUN_DIR/lovt-run.lock names the process that holds it.

import { CHECKPOINT_DIR, manifestPath, readManifest } from './checkpoint.ts';
import { METRICS_FILE } from './metrics.ts';
import type { Storage } from './storage.ts';

export const RUN_LOCK = 'lovt-run.lock';

/** The content of RUN_DIR/lovt-run.lock. */
export interface RunLockInfo {
  pid: number;
  host: string;
  /** ISO time the holder took the lock. */
  startedAt: string;
  /** The holder's command line. */
  command?: string;
}

export function newRunId(): string {
  return globalThis.crypto.randomUUID();
}

/** The files that make `storage` a run directory; empty when it holds no run. */
export async function runFiles(storage: Storage): Promise<string[]> {
  const found: string[] = [];
  for (const f of [manifestPath('last'), manifestPath('best'), METRICS_FILE]) if (await storage.exists(f)) found.push(f);
  const weights = await storage.list(CHECKPOINT_DIR);
  if (weights.length) found.push(`${CHECKPOINT_DIR}/ (${weights.length} file${weights.length === 1 ? '' : 's'})`);
  return found;
}

/**
 * Why a new run may not start in `storage` ("… already holds a run …" naming it and
 * the two ways out), or null when it holds no run.
 */
export async function existingRunMessage(storage: Storage, shown = storage.description): Promise<string | null> {
  const files = await runFiles(storage);
  if (!files.length) return null;
  const last = await readManifest(storage, 'last').catch(() => null);
  const run = last ? `the run of ${last.model.name} at step ${last.step}${last.runId ? ` (run ${last.runId})` : ''}` : 'a run';
  return (
    `${shown} already holds ${run} (${files.join(', ')}); a new run never replaces it: ` +
    `continue it with --resume ${shown}, or give --overwrite to move it aside to ${shown}.old-<time> and start anew`
  );
}

export function describeLockHolder(l: RunLockInfo): string {
  return `pid ${l.pid} on host ${l.host}, since ${l.startedAt}${l.command ? ` (${l.command})` : ''}`;
}
