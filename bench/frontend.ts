// Front-end time against model size: compiles generated programs of growing
// statement counts (test/nodevice/model-helpers.ts largeModelSource: a base
// model and a variant that overrides and drops) and prints the time per 1k
// statements, which stays flat while the front end is linear (a quadratic
// phase doubles it at each size). A benchmark, not a test: nothing asserts on
// numbers.
//   node --import tsx bench/frontend.ts [--max N] [--runs N]

import { performance } from 'node:perf_hooks';
import { compileModel } from '../compiler/frontend/index.ts';
import { largeModelSource } from '../test/nodevice/model-helpers.ts';
import { count, parseOptions } from './args.ts';

let max = 120_000;
let runs = 1;
parseOptions(process.argv.slice(2), {
  '--max': { meta: 'N', value: (v) => (max = count(v, 1000)) },
  '--runs': { meta: 'N', value: (v) => (runs = count(v)) },
});

const sizes: number[] = [];
for (let n = max; n >= 1000 && sizes.length < 4; n = Math.floor(n / 2)) sizes.unshift(n);
console.log('statements   front end ms   ms per 1k statements');
for (const n of sizes) {
  const text = largeModelSource(n);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = compileModel({ text, path: 'bench-frontend.lovt' }, { model: 'Child' });
    times.push(performance.now() - t0);
    if (!r.ok) throw new Error(`the generated model did not compile: ${r.diagnostics[0]?.message}`);
  }
  const ms = times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
  console.log(`${String(n).padStart(10)}   ${ms.toFixed(0).padStart(12)}   ${((ms / n) * 1000).toFixed(1).padStart(20)}`);
}
