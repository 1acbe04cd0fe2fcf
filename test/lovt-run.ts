// Runs bin/lovt-run.js in a child process, as a user would, for the CLI tests
// (test/nodevice/cli.test.ts, test/gpu/cli-train.test.ts).
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface RunResult {
  code: number;
  stdout: string;
  /** stderr without Dawn's own start-up "Warning: ..." lines. */
  stderr: string;
}

export function lovtRun(args: string[], timeoutMs = 120_000): RunResult {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin/lovt-run.js'), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: timeoutMs });
  const stderr = (r.stderr ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('Warning: '))
    .join('\n');
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr };
}

/** Exit code 1, exactly one stderr line starting "lovt-run: " and matching `pattern`, no stack trace. */
export function assertOneLineError(r: RunResult, pattern: RegExp): void {
  assert.is(r.code, 1, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.split('\n');
  assert.is(lines.length, 1, `one line of error, got:\n${r.stderr}`);
  assert.match(lines[0], /^lovt-run: /);
  assert.match(lines[0], pattern);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
}
