// The test runner itself (scripts/test.js → scripts/run-tests.ts), run as a
// subprocess on the files of test/fixtures/runner/: hook errors are reported
// and counted, a hung test fails the run naming its file and test and the
// process exits within the timeout, a synchronous hang is killed.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './model-helpers.ts';

const FIXTURES = 'test/fixtures/runner';

function runner(names: string[], env: Record<string, string> = {}) {
  const started = Date.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/test.js'), '--dir', FIXTURES, ...names], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  const out = (r.stdout + r.stderr).replace(/\x1b\[[0-9;]*m/g, '');
  const lines = out.trimEnd().split('\n');
  return { status: r.status, out, closing: lines[lines.length - 1], seconds: (Date.now() - started) / 1000 };
}

test('before and after hook errors are reported with the file and hook, and counted as failures', () => {
  const r = runner(['pass', 'before-throws', 'after-throws']);
  assert.is(r.status, 1, r.out);
  assert.match(r.out, `FAIL  before hook in ${FIXTURES}/before-throws.test.ts threw\n    Error: fixture: the data set could not be written`);
  assert.match(r.out, `FAIL  after hook 'cleanUp' in ${FIXTURES}/after-throws.test.ts threw\n    Error: fixture: the temporary directory could not be removed`);
  // pass: 2 passed; before-throws: its 2 tests never ran (2 failed); after-throws: 2 passed and the hook (1 failed).
  assert.is(r.closing, '4 passed, 3 failed');
  const alone = runner(['pass']);
  assert.is(alone.status, 0, alone.out);
  assert.is(alone.closing, '2 passed, 0 failed');
});

test('a test that never finishes fails the run at the per-file timeout, naming its file and test; the process exits', () => {
  // The fixture keeps an interval alive, as Dawn does: only an explicit exit ends the process.
  const r = runner(['hang'], { LOVT_TEST_FILE_TIMEOUT: '2' });
  assert.is(r.status, 1, r.out);
  assert.match(r.out, `FAIL  ${FIXTURES}/hang.test.ts timed out in test "never resolves"\n    the file did not finish within 2 s (LOVT_TEST_FILE_TIMEOUT)`);
  assert.is(r.closing, '1 passed, 1 failed');
  assert.ok(r.seconds < 2 + 20, `took ${r.seconds} s`);
});

test('the whole-run timeout stops the run in the file that is running, and the files after it do not run', () => {
  const r = runner(['hang', 'pass'], { LOVT_TEST_FILE_TIMEOUT: '600', LOVT_TEST_TIMEOUT: '2' });
  assert.is(r.status, 1, r.out);
  assert.match(r.out, `FAIL  ${FIXTURES}/hang.test.ts timed out in test "never resolves"\n    the whole run did not finish within 2 s (LOVT_TEST_TIMEOUT)`);
  assert.not.match(r.out, 'pass.test.ts');
  assert.is(r.closing, '1 passed, 1 failed');
});

test('a synchronous hang, which no timer in the runner can interrupt, is killed by scripts/test.js past the deadline', () => {
  const r = runner(['spin'], { LOVT_TEST_FILE_TIMEOUT: '1', LOVT_TEST_KILL_GRACE: '1' });
  assert.is(r.status, 1, r.out);
  assert.match(r.out, `FAIL  the test process was still running 1 s past its deadline, in ${FIXTURES}/spin.test.ts (test "spins")`);
  assert.is(r.closing, '1 passed, 1 failed');
});

test('bad settings are usage errors (exit code 2) naming the setting', () => {
  const r = runner(['pass'], { LOVT_TEST_FILE_TIMEOUT: '5min' });
  assert.is(r.status, 2);
  assert.match(r.out, "run-tests: LOVT_TEST_FILE_TIMEOUT must be a positive number of seconds, got '5min'");
});

test.run();
