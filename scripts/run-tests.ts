// The test runner behind scripts/test.js: runs the uvu suites of the selected
// files in ONE process (the WebGPU adapter is requested once), file by file,
// under a watchdog, and prints the closing "N passed, N failed" line CI reads.
//
// What plain uvu does not do, and this runner adds (test/README.md):
//  - a per-file and a whole-run timeout (LOVT_TEST_FILE_TIMEOUT,
//    LOVT_TEST_TIMEOUT, seconds): a test that never finishes (a GPU promise
//    that never resolves) fails the run naming its file and test, and the
//    process exits (Dawn would keep it alive);
//  - errors thrown in test.before / test.after hooks are reported and counted
//    (uvu's runner returns from a `finally`, which drops a before hook's error);
//  - the slowest files and the run's duration.
// The parent (scripts/test.js) gets each deadline over IPC and kills this
// process if it is still alive shortly after one: a synchronous hang (a busy
// loop, a blocking native call) keeps the watchdog's timer from firing.

import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ALL_GROUPS = ['nodevice', 'gpu', 'browser'];
// The slowest file, gpu/train-e2e.test.ts, took 213 s on lavapipe with a cold shader
// cache on a loaded 2-core machine (~60 s warm); CI's job limit is 90 min.
const DEFAULT_FILE_TIMEOUT_S = 600;
const DEFAULT_RUN_TIMEOUT_S = 3600;

export interface Progress {
  /** The file running now (relative to the repository) and its test, '' before the first. */
  file: string;
  test: string;
  /** When this process's own watchdog fires (ms since the epoch). */
  deadline: number;
  passed: number;
  failed: number;
  /** Sent last, right before a normal exit. */
  done?: boolean;
}

/** Exit code 2: a usage error (scripts/test.js passes it on silently). */
function usage(message: string): never {
  process.stderr.write(`run-tests: ${message}\nusage: node scripts/test.js [nodevice|gpu|browser]... [NAME]... [--dir DIR]\n`);
  process.exit(2);
}

function seconds(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!(n > 0)) usage(`${name} must be a positive number of seconds, got '${v}'`);
  return n;
}

const fileTimeoutS = seconds('LOVT_TEST_FILE_TIMEOUT', DEFAULT_FILE_TIMEOUT_S);
const runTimeoutS = seconds('LOVT_TEST_TIMEOUT', DEFAULT_RUN_TIMEOUT_S);

// ---------------------------------------------------------------- the files

const args = process.argv.slice(2);
let dir: string | null = null;
const words: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--dir') {
    dir = args[++i] ?? usage('--dir needs a directory');
  } else words.push(args[i]);
}
const groups = words.filter((a) => ALL_GROUPS.includes(a));
const patterns = words.filter((a) => !ALL_GROUPS.includes(a));
if (dir !== null && groups.length) usage('--dir runs the *.test.ts files of one directory; give no group with it');
// --dir: another directory's *.test.ts (the runner's own tests point it at test/fixtures/runner).
const dirs = dir !== null ? [path.resolve(dir)] : (groups.length ? groups : ALL_GROUPS).map((g) => path.join(root, 'test', g));
if (dir !== null && !existsSync(dirs[0])) usage(`--dir ${dir}: no such directory`);

const files: string[] = [];
for (const d of dirs) {
  if (!existsSync(d)) continue;
  for (const f of readdirSync(d).sort()) {
    if (!f.endsWith('.test.ts')) continue;
    if (patterns.length && !patterns.some((p) => f.includes(p))) continue;
    files.push(path.join(d, f));
  }
}

// ---------------------------------------------------------------- output

let passed = 0,
  failed = 0,
  skipped = 0;
/** uvu's per-test marks ("• " passed, "✘ " failed) of the suite running now: its counts before it returns. */
let marks = { passed: 0, failed: 0 };
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = ((chunk: any, ...rest: any[]) => {
  const s = String(chunk).replace(/\x1b\[[0-9;]*m/g, '');
  if (s === '• ') marks.passed++;
  else if (s === '✘ ') marks.failed++;
  return write(chunk, ...rest);
}) as typeof process.stdout.write;

function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // The stack without the frames of this runner, uvu and Node's internals.
  const lines = (e.stack ?? `${e.name}: ${e.message}`).split('\n').filter((l, i) => i === 0 || !/run-tests\.ts|node_modules[\\/]uvu|\(node:/.test(l));
  return lines.map((l, i) => (i ? '    ' + l.trim() : l)).join('\n');
}

function failure(title: string, detail: string): void {
  write(`\n  FAIL  ${title}\n    ${detail}\n`);
}

function closingLine(): void {
  write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
}

// ---------------------------------------------------------------- watchdog

const current: Progress = { file: '', test: '', deadline: 0, passed: 0, failed: 0 };
const runStarted = Date.now();
const runDeadline = runStarted + runTimeoutS * 1000;
let fileTimer: NodeJS.Timeout | undefined;

function report(extra: Partial<Progress> = {}): void {
  Object.assign(current, { passed: passed + marks.passed, failed: failed + marks.failed }, extra);
  process.send?.(current);
}

let finishing = false;
/** Exits once the parent has the final counts (an IPC message is sent asynchronously). */
function finish(code: number): void {
  finishing = true;
  Object.assign(current, { passed, failed, done: true });
  if (process.send) process.send(current, () => process.exit(code));
  else process.exit(code);
}

function timedOut(reason: string): void {
  if (finishing) return;
  const where = current.test
    ? `in ${current.test === 'before hook' || current.test === 'after hook' ? 'a ' + current.test : `test "${current.test}"`}`
    : 'while loading';
  // The hung test counts as failed, with those of its suite that had finished.
  passed += marks.passed;
  failed += marks.failed + 1;
  marks = { passed: 0, failed: 0 };
  failure(`${current.file} timed out ${where}`, `${reason}; the rest of the run is skipped.`);
  write('\n');
  closingLine();
  finish(1);
}

setTimeout(() => timedOut(`the whole run did not finish within ${runTimeoutS} s (LOVT_TEST_TIMEOUT)`), runTimeoutS * 1000);

function startFile(file: string): void {
  clearTimeout(fileTimer);
  fileTimer = setTimeout(() => timedOut(`the file did not finish within ${fileTimeoutS} s (LOVT_TEST_FILE_TIMEOUT)`), fileTimeoutS * 1000);
  marks = { passed: 0, failed: 0 };
  report({ file, test: '', deadline: Math.min(runDeadline, Date.now() + fileTimeoutS * 1000) });
}

// ---------------------------------------------------------------- uvu

(globalThis as any).UVU_DEFER = 1;
const uvu = await import('uvu');
const queue: unknown[][] = ((globalThis as any).UVU_QUEUE ??= []);
type SuiteRun = () => Promise<[errors: string | true, ran: number, skipped: number, total: number]>;
type Hook = (state: any) => unknown;

// The test files use uvu's default suite (`test`); its hooks are wrapped to
// name what runs and to keep hook errors, and each suite it queues gets a
// before-each hook that records the test's name.
const t = uvu.test as any;
const hookErrors: { hook: string; error: unknown }[] = [];
const register = { before: t.before as (h: Hook) => void, after: t.after as (h: Hook) => void, each: t.before.each as (h: Hook) => void };
function wrapped(kind: 'before' | 'after') {
  return (handler: Hook) => {
    const hook = `${kind} hook${handler.name ? ` '${handler.name}'` : ''}`;
    register[kind](async (state) => {
      report({ test: `${kind} hook` });
      try {
        await handler(state);
      } catch (error) {
        hookErrors.push({ hook, error });
        // A failed before hook must still stop its suite's tests; an after hook's
        // error would otherwise escape uvu's runner together with the suite's results.
        if (kind === 'before') throw error;
      }
    });
  };
}
const trackTests = () => register.each((state) => report({ test: String(state.__test__) }));
t.before = Object.assign(wrapped('before'), { each: t.before.each });
t.after = Object.assign(wrapped('after'), { each: t.after.each });
const run = t.run as () => void;
t.run = () => {
  run();
  trackTests(); // uvu starts a fresh hook list for the next suite
};
trackTests();

// ---------------------------------------------------------------- the run

const durations: [string, number][] = [];
for (const [index, file] of files.entries()) {
  const name = path.relative(root, file);
  const started = Date.now();
  startFile(name);
  write(`${index ? '\n' : ''}\x1b[1m${name}\x1b[22m\n`);
  (globalThis as any).UVU_INDEX = index;
  queue[index] = [];
  try {
    await import(pathToFileURL(file).href);
  } catch (e) {
    failed++;
    failure(`${name} failed to load`, describe(e));
  }
  for (const suite of queue[index] as SuiteRun[]) {
    hookErrors.length = 0;
    marks = { passed: 0, failed: 0 };
    let result: Awaited<ReturnType<SuiteRun>> | null = null;
    try {
      result = await suite();
    } catch (e) {
      hookErrors.push({ hook: 'the suite', error: e });
    }
    const [errors, ran, skips, total] = result ?? [true, marks.passed, 0, marks.passed + marks.failed];
    let suiteFailed = total - ran;
    if (typeof errors === 'string' && errors.length) write('\n' + errors + '\n');
    for (const { hook, error } of hookErrors) failure(`${hook} in ${name} threw`, describe(error));
    // A hook error fails the suite: its tests that did not run (before), or one failure (after).
    if (hookErrors.length && suiteFailed === 0) suiteFailed = 1;
    passed += ran;
    failed += suiteFailed;
    skipped += skips;
    marks = { passed: 0, failed: 0 };
  }
  durations.push([name, (Date.now() - started) / 1000]);
}
clearTimeout(fileTimer);

const slowest = [...durations].sort((a, b) => b[1] - a[1]).slice(0, 5);
write(`\n  Duration: ${((Date.now() - runStarted) / 1000).toFixed(1)} s; slowest files: ${slowest.map(([f, s]) => `${f} ${s.toFixed(1)} s`).join(', ')}\n\n`);
closingLine();
finish(failed > 0 ? 1 : 0);
