// Runs are never destroyed (runtime/train/run-dir.ts, runtime/platform/node-run-dir.ts):
// a new run is refused in a directory that holds one (or moves it aside with
// --overwrite), one writer holds the lock for the run's life, a stale lock is taken
// over, directories are created without Node's recursive mkdir looping on procfs, and
// checkpoints of another run are refused on load and export.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { checkpointInfo } from './model-helpers.ts';
import { readSafetensors, writeSafetensors } from '../../runtime/safetensors.ts';
import { loadCheckpoint, saveCheckpoint, type CheckpointInfo } from '../../runtime/train/checkpoint.ts';
import { RUN_LOCK } from '../../runtime/train/run-dir.ts';
import { exportImageEncoder } from '../../runtime/train/run-setup.ts';
import { makeDirectory } from '../../runtime/platform/node-fs.ts';
import { openRunDirectory } from '../../runtime/platform/node-run-dir.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';

const work = mkdtempSync(path.join(os.tmpdir(), 'lovt-rundir-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const tensors = (v: number) => new Map<string, HostTensor>([['image_encoder.w', { dtype: 'f32', shape: [2], data: Float32Array.of(v, -v) }]]);

function info(runId: string, step: number): CheckpointInfo {
  return checkpointInfo({ runId, step });
}

/** A run directory as a trainer leaves it: last and best checkpoints and a metrics log. */
async function fakeRun(dir: string, runId = 'run-a'): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await saveCheckpoint(new NodeStorage(dir), ['last', 'best'], tensors(17), info(runId, 17));
  writeFileSync(path.join(dir, 'metrics.jsonl'), '{"kind":"train","step":17,"epoch":0,"loss.total":1.5}\n');
}

/** Every file under dir with its bytes. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = readFileSync(p).toString('base64');
    }
  };
  walk(dir);
  return out;
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a failure');
}

test('a new run in a directory holding a run is refused, naming the run and both ways out; nothing is touched', async () => {
  const dir = path.join(work, 'taken');
  await fakeRun(dir);
  const before = snapshot(dir);
  const msg = await failure(openRunDirectory(dir));
  assert.is(
    msg,
    `${dir} already holds the run of M at step 17 (run run-a) (last.json, best.json, metrics.jsonl, checkpoints/ (1 file)); a new run never replaces it: ` +
      `continue it with --resume ${dir}, or give --overwrite to move it aside to ${dir}.old-<time> and start anew`,
  );
  assert.equal(snapshot(dir), before, 'the run is intact byte for byte (and its lock is released)');
});

test('--overwrite moves the old run aside whole and starts in an empty, locked directory', async () => {
  const dir = path.join(work, 'over');
  await fakeRun(dir);
  const before = snapshot(dir);
  const run = await openRunDirectory(dir, { overwrite: true });
  try {
    const aside = readdirSync(work).filter((n) => /^over\.old-\d{8}-\d{6}$/.test(n));
    assert.is(aside.length, 1, readdirSync(work).join(', '));
    assert.equal(snapshot(path.join(work, aside[0])), before, 'the old run, byte for byte, lock file not left behind');
    assert.equal(run.notes, [`moved the earlier run in ${dir} to ${path.join(work, aside[0])} (--overwrite)`]);
    assert.equal(readdirSync(dir), [RUN_LOCK]);
  } finally {
    await run.release();
  }
  assert.not.ok(existsSync(dir), 'release removes the lock, and the directory it created when nothing was written');
});

test('one writer: a second trainer or resume is refused with the holder; a stale lock is taken over; another host is never judged', async () => {
  const dir = path.join(work, 'locked');
  mkdirSync(dir);
  const first = await openRunDirectory(dir, { command: 'lovt-run train m.lovt' });
  const lock = JSON.parse(readFileSync(path.join(dir, RUN_LOCK), 'utf8'));
  assert.is(lock.pid, process.pid);
  assert.is(lock.host, os.hostname());
  assert.ok(!Number.isNaN(Date.parse(lock.startedAt)));
  assert.is(lock.command, 'lovt-run train m.lovt');
  const holder = `pid ${process.pid} on host ${os.hostname()}, since ${lock.startedAt} (lovt-run train m.lovt)`;
  const held = `${dir} is in use by another lovt-run (${holder}): a run directory has one writer at a time; wait for it to finish`;
  assert.is(await failure(openRunDirectory(dir)), held);
  assert.is(await failure(openRunDirectory(dir, { resume: true })), held);
  await first.release();
  assert.equal(readdirSync(dir), [], 'the lock is gone; a directory that existed stays');

  // A lock whose process is gone (same host) is stale.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout);
  writeFileSync(path.join(dir, RUN_LOCK), JSON.stringify({ pid: deadPid, host: os.hostname(), startedAt: '2025-01-01T00:00:00.000Z' }));
  const second = await openRunDirectory(dir, { resume: true });
  assert.equal(second.notes, [`took over the stale lock of pid ${deadPid} (no longer running on ${os.hostname()})`]);
  assert.is(JSON.parse(readFileSync(path.join(dir, RUN_LOCK), 'utf8')).pid, process.pid);
  await second.release();

  // Another machine's lock (a shared file system) cannot be checked from here.
  writeFileSync(path.join(dir, RUN_LOCK), JSON.stringify({ pid: deadPid, host: 'elsewhere.example', startedAt: '2025-01-01T00:00:00.000Z' }));
  assert.is(
    await failure(openRunDirectory(dir, { resume: true })),
    `${dir} is in use by another lovt-run (pid ${deadPid} on host elsewhere.example, since 2025-01-01T00:00:00.000Z): a run directory has one writer at a time; ` +
      `if that process no longer runs on elsewhere.example, delete ${path.join(dir, RUN_LOCK)}`,
  );
});

test('makeDirectory: nested creation; refuses a path through a file and special file systems, without looping', async () => {
  const nested = path.join(work, 'a', 'b', 'c');
  await makeDirectory(nested, '--out');
  assert.ok(existsSync(nested));
  await makeDirectory(nested, '--out'); // existing: fine
  const file = path.join(work, 'plain');
  writeFileSync(file, 'x');
  assert.is(await failure(makeDirectory(file, '--out')), `--out ${file}: it is a file, not a directory`);
  assert.is(await failure(makeDirectory(path.join(file, 'sub'), '--out')), `--out ${path.join(file, 'sub')}: ${file} is a file, not a directory`);
  // Node's own mkdir(..., { recursive: true }) never returns here.
  assert.is(
    await failure(makeDirectory('/proc/lovt-test/x', '--out')),
    '--out /proc/lovt-test/x: /proc is on the proc file system, which holds no files; choose a directory on a disk',
  );
  assert.match(await failure(makeDirectory('/sys/lovt-test', '--out')), /^--out \/sys\/lovt-test: \/sys is on the sysfs file system/);
  assert.match(await failure(makeDirectory('/dev/lovt-test', '--out')), /^--out \/dev\/lovt-test: \/dev is on the (device|devpts|\w+) file system/);
  assert.not.ok(existsSync('/dev/lovt-test'));
});

test('checkpoints belong to their run: a best.json of another run and weights of another run are refused on load and export', async () => {
  const dir = path.join(work, 'mixed');
  await fakeRun(dir, 'run-old');
  // A later run wrote last.json only (as a run that never validated would).
  await saveCheckpoint(new NodeStorage(dir), ['last'], tensors(2), info('run-new', 2));
  const storage = new NodeStorage(dir);
  const stale = `${dir}/best.json belongs to run run-old, not to the run of last.json (run-new): it was left by another run in this directory; use the last checkpoint (--checkpoint last)`;
  assert.is(await failure(loadCheckpoint(storage, 'best')), stale);
  assert.is(await failure(exportImageEncoder(storage, { prefix: 'image_encoder' })), stale);
  const last = await exportImageEncoder(storage, { prefix: 'image_encoder', checkpoint: 'last' });
  assert.is(last.step, 2);
  assert.equal(readSafetensors(last.bytes).metadata.lovt_run, 'run-new');

  // A weights file whose recorded run differs from its manifest's.
  const m = JSON.parse(readFileSync(path.join(dir, 'last.json'), 'utf8'));
  const weights = path.join(dir, m.weights.file);
  const foreign = writeSafetensors(tensors(2), { run_id: 'run-other' });
  writeFileSync(weights, foreign);
  const { createHash } = await import('node:crypto');
  writeFileSync(
    path.join(dir, 'last.json'),
    JSON.stringify({ ...m, weights: { ...m.weights, bytes: foreign.length, sha256: createHash('sha256').update(foreign).digest('hex') } }),
  );
  assert.is(
    await failure(loadCheckpoint(storage, 'last')),
    `${dir}/${m.weights.file} was written by run run-other, but last.json is run run-new: the weights belong to another run`,
  );
});

test.run();
