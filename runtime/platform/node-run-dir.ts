// A run directory on disk, opened for one writer (runtime/train/run-dir.ts has the
// rules): the path checked and created without following Node's recursive mkdir into
// special file systems, an existing run refused or moved aside (--overwrite, never
// deleted), and RUN_DIR/lovt-run.lock held for the life of the run. The lock names
// its holder (pid, host, start time, command); one whose pid no longer runs on this
// host is stale and taken over. A lock of another host is never judged from here.

import { promises as fsp, readFileSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import nodePath from 'node:path';
import { describeLockHolder, existingRunMessage, RUN_LOCK, type RunLockInfo } from '../train/run-dir.ts';
import { makeDirectory } from './node-fs.ts';
import { NodeStorage } from './node-storage.ts';

export interface RunDirectory {
  /** Absolute path. */
  dir: string;
  storage: NodeStorage;
  /** What happened on the way worth telling (the old run moved aside, a stale lock taken over). */
  notes: string[];
  /** Gives the lock up (also done at process exit). */
  release(): Promise<void>;
}

export interface OpenRunOptions {
  /** Continue the run in `dir` (it must exist) instead of starting one. */
  resume?: boolean;
  /** A new run in a directory that holds a run moves that run to DIR.old-<time> first. */
  overwrite?: boolean;
  /** Recorded in the lock, shown to a second writer. */
  command?: string;
}

/** "20250102-030405" (UTC): run directory names and moved-aside runs. */
export function timestamp(date = new Date()): string {
  return date.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/**
 * Opens `dir` for a new run (created if needed; refused when it holds a run, unless
 * `overwrite`) or for a resume (it must exist), and takes its lock.
 */
export async function openRunDirectory(dir: string, opts: OpenRunOptions = {}): Promise<RunDirectory> {
  const abs = nodePath.resolve(dir);
  const notes: string[] = [];
  if (opts.resume) {
    const st = await fsp.stat(abs).catch(() => null);
    if (!st) throw new Error(`--resume ${dir}: no such run directory`);
    if (!st.isDirectory()) throw new Error(`--resume ${dir}: it is not a directory`);
    return locked(abs, await acquireLock(abs, opts.command), notes);
  }
  let created = await makeDirectory(abs, '--out');
  let lock = await acquireLock(abs, opts.command);
  const existing = await existingRunMessage(new NodeStorage(abs), dir);
  if (existing) {
    if (!opts.overwrite) {
      await lock.release();
      throw new Error(existing);
    }
    created = true;
    // Under its lock, so no writer is using it; the lock file moves with it and is dropped there.
    const aside = await freeName(`${abs}.old-${timestamp()}`);
    await fsp.rename(abs, aside);
    await fsp.rm(nodePath.join(aside, RUN_LOCK), { force: true });
    lock.forget();
    notes.push(`moved the earlier run in ${dir} to ${aside} (--overwrite)`);
    await makeDirectory(abs, '--out');
    lock = await acquireLock(abs, opts.command);
  }
  return locked(abs, lock, notes, created);
}

/** `created`: a run that stops before writing anything leaves no empty directory behind. */
function locked(abs: string, lock: Lock, notes: string[], created = false): RunDirectory {
  if (lock.note) notes.push(lock.note);
  const release = async () => {
    await lock.release();
    if (created) await fsp.rmdir(abs).catch(() => undefined); // only when empty
  };
  return { dir: abs, storage: new NodeStorage(abs), notes, release };
}

async function freeName(base: string): Promise<string> {
  for (let i = 1; ; i++) {
    const name = i === 1 ? base : `${base}-${i}`;
    if (!(await fsp.stat(name).catch(() => null))) return name;
  }
}

interface Lock {
  release(): Promise<void>;
  /** Stops tracking a lock file that no longer exists at its path (moved with its directory). */
  forget(): void;
  note?: string;
}

/** Whether a process with this pid runs on this machine (EPERM: it does, as another user). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readLock(file: string): Promise<{ info: RunLockInfo; text: string } | null> {
  try {
    const text = await fsp.readFile(file, 'utf8');
    const info = JSON.parse(text) as RunLockInfo;
    return Number.isInteger(info?.pid) && typeof info.host === 'string' ? { info, text } : null;
  } catch {
    return null;
  }
}

/**
 * Takes RUN_DIR/lovt-run.lock: the complete lock file is written under a temporary
 * name and hard-linked into place, which fails when a lock exists, so a lock file is
 * never seen half written. A stale lock (its pid gone, same host) is renamed away
 * first: of two processes that find the same stale lock, only one rename succeeds.
 */
export async function acquireLock(dir: string, command?: string): Promise<Lock> {
  const file = nodePath.join(dir, RUN_LOCK);
  const info: RunLockInfo = { pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), ...(command ? { command } : {}) };
  const text = JSON.stringify(info, null, 2) + '\n';
  const temp = `${file}.tmp-${process.pid}`;
  await fsp.writeFile(temp, text).catch((err) => {
    throw new Error(`cannot lock the run directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  });
  let note: string | undefined;
  try {
    // Two rounds: the second follows the removal of a stale lock.
    for (let round = 0; round < 2; round++) {
      try {
        await fsp.link(temp, file);
        return ownLock(file, text, note);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot lock the run directory ${dir}: ${(err as NodeJS.ErrnoException).code}`);
      }
      const read = await readLock(file);
      if (!read) throw new Error(`${file} exists but does not name its holder: if no lovt-run uses ${dir}, delete it`);
      const holder = read.info;
      const stale = holder.host === info.host && holder.pid !== process.pid && !pidAlive(holder.pid);
      if (!stale) {
        throw new Error(
          `${dir} is in use by another lovt-run (${describeLockHolder(holder)}): a run directory has one writer at a time; ` +
            (holder.host === info.host ? 'wait for it to finish' : `if that process no longer runs on ${holder.host}, delete ${file}`),
        );
      }
      const aside = `${file}.stale-${process.pid}`;
      if (
        await fsp.rename(file, aside).then(
          () => true,
          () => false,
        )
      ) {
        // Another process may have replaced the stale lock since we read it: put a live one back.
        if ((await fsp.readFile(aside, 'utf8').catch(() => '')) !== read.text) await fsp.link(aside, file).catch(() => undefined);
        await fsp.rm(aside, { force: true });
      }
      note = `took over the stale lock of pid ${holder.pid} (no longer running on ${holder.host})`;
    }
    throw new Error(`cannot lock the run directory ${dir}: another process keeps taking it`);
  } finally {
    await fsp.rm(temp, { force: true });
  }
}

function ownLock(file: string, text: string, note: string | undefined): Lock {
  let held = true;
  // Only our own lock is removed: a lock file with other content is someone else's.
  const removeSync = () => {
    if (!held) return;
    held = false;
    try {
      if (readFileSync(file, 'utf8') === text) unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
  process.once('exit', removeSync);
  return {
    note,
    release: async () => {
      process.off('exit', removeSync);
      removeSync();
    },
    forget: () => {
      held = false;
      process.off('exit', removeSync);
    },
  };
}
