#!/usr/bin/env node
// Runs the uvu suites under test/<group>/ in ONE process (scripts/run-tests.ts,
// so the WebGPU adapter is requested once), which prints a closing
// "N passed, N failed" line and exits explicitly: Dawn's instance would
// otherwise keep the process alive.
//   node scripts/test.js                 all groups (nodevice, gpu, browser)
//   node scripts/test.js nodevice gpu    only these groups
//   node scripts/test.js gpu matmul      files in group gpu whose name contains "matmul"
//   node scripts/test.js --dir DIR       the *.test.ts files of DIR instead
// Timeouts (seconds): LOVT_TEST_FILE_TIMEOUT per file (default 600),
// LOVT_TEST_TIMEOUT for the whole run (default 3600); see test/README.md.
//
// The runner's own watchdog reports a hung test and exits. This process is the
// backstop for what a timer in the runner cannot catch (a synchronous hang, a
// crash): the runner sends its progress and its next deadline over IPC, and is
// killed LOVT_TEST_KILL_GRACE seconds (default 30) past a deadline.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const grace = Number(process.env.LOVT_TEST_KILL_GRACE || 30);
if (!(grace >= 0)) {
  console.error(`LOVT_TEST_KILL_GRACE must be a number of seconds >= 0, got '${process.env.LOVT_TEST_KILL_GRACE}'`);
  process.exit(2);
}
const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'run-tests.ts'), ...process.argv.slice(2)], {
  stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
});

/** The runner's last Progress (scripts/run-tests.ts). */
let last = { file: '', test: '', deadline: 0, passed: 0, failed: 0, done: false };
let killer;
let killed = '';
child.on('message', (m) => {
  last = m;
  clearTimeout(killer);
  if (!m.done) killer = setTimeout(kill, Math.max(0, m.deadline - Date.now()) + grace * 1000);
});

function where() {
  return last.file
    ? `in ${last.file}${last.test ? ` (${last.test.endsWith(' hook') ? 'in a ' + last.test : `test "${last.test}"`})` : ''}`
    : 'before the first test file';
}

function kill() {
  killed = `the test process was still running ${grace} s past its deadline, ${where()} (a synchronous hang?): killed it`;
  child.kill('SIGKILL');
}

child.on('exit', (code, signal) => {
  clearTimeout(killer);
  if (last.done || code === 2) process.exit(code ?? 1); // 2: a usage error, already explained
  // The runner did not finish by itself: say where it stopped and close with the counts it had sent.
  console.log(`\n  FAIL  ${killed || `the test process ${signal ? `was killed by ${signal}` : `exited with code ${code}`} ${where()}`}\n`);
  console.log(`${last.passed} passed, ${last.failed + 1} failed`);
  process.exit(1);
});
