#!/usr/bin/env node
// Runs the uvu suites under test/<group>/ in ONE process (so the WebGPU adapter
// is requested once), prints a closing "N passed, N failed" line, and exits
// explicitly: Dawn's instance would otherwise keep the process alive.
//   node scripts/test.js                 all groups (nodevice, gpu, browser)
//   node scripts/test.js nodevice gpu    only these groups
//   node scripts/test.js gpu matmul      files in group gpu whose name contains "matmul"
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
const here = path.dirname(fileURLToPath(import.meta.url));
const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'run-tests.ts'), ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
