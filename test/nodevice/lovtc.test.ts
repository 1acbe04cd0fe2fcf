// The lovtc command: exit codes, --check, --params, --stats, -o (the versioned
// artifact), --set, --model, --mode, and error output (located, with a caret,
// never a JS stack trace). Most cases call runLovtc() in-process; two run the
// real `node bin/lovtc.js` as a user would.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runLovtc } from '../../bin/lovtc.ts';
import { IR_VERSION } from '../../compiler/ir.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'lovtc-test-'));
const GOOD = path.join(dir, 'good.lovt');
const BAD = path.join(dir, 'bad.lovt');

writeFileSync(
  GOOD,
  `import "std/nn.lovt"
model Small {
  config batch: int = 4
  config dim: int = 6
  input x: f32[batch, dim]
  enc = Linear(dim, 3)
  bn = BatchNorm(3)
  let y = bn(enc(x))
  loss energy(weight: 0.5) = sum(square(y)) / batch
  output y = y
  freeze enc.bias
  train { accumulate = 2 }
}
model Other extends Small {
  config dim = 2
}
`,
);
writeFileSync(
  BAD,
  `import "std/nn.lovt"
model Bad {
  input x: f32[4, 6]
  enc = Linear(5, 3)
  let y = enc(x)
  let z = undefined_thing
}
`,
);

/** The real command in a child process (a hang fails the test instead of stopping the suite). */
function spawnLovtc(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/lovtc.js', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The same command in this process. */
async function lovtc(...args: string[]) {
  let out = '';
  let err = '';
  const code = await runLovtc(args, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

function noStack(s: string) {
  assert.not.match(s, /\n\s+at .+:\d+:\d+\)?\n/, 'no JavaScript stack trace');
}

test('--help prints the usage and exits 0; a missing file argument is a usage error (2)', async () => {
  const h = await lovtc('--help');
  assert.is(h.code, 0);
  for (const flag of ['--check', '--params', '--stats', '--model', '--set', '--mode', '--output']) assert.ok(h.out.includes(flag), `help mentions ${flag}`);
  const none = await lovtc();
  assert.is(none.code, 2);
  noStack(none.err);
  const badMode = await lovtc(GOOD, '--mode', 'fast');
  assert.is(badMode.code, 2);
  assert.match(badMode.err, /fast/);
  const badSet = await lovtc(GOOD, '--model', 'Small', '--set', 'nonsense');
  assert.is(badSet.code, 2);
  assert.match(badSet.err, /^lovtc: --set expects key=value \(e\.g\. --set tau_local=0\.2\), got 'nonsense'\n$/);
});

test('--check: silent success with exit 0; --model is required when a file has several models', async () => {
  const ok = await lovtc(GOOD, '--check', '--model', 'Other');
  assert.is(ok.code, 0);
  assert.is(ok.out, '');
  const which = await lovtc(GOOD, '--check');
  assert.is(which.code, 1);
  assert.match(which.err, /defines several models \(Small, Other\); pick one with --model NAME/);
});

test('errors: located messages with the source line and a caret, several per run, exit 1, no stack trace', () => {
  const r = spawnLovtc(BAD, '--check');
  assert.is(r.code, 1);
  noStack(r.err);
  const shown = path.relative(process.cwd(), BAD).startsWith('..') ? BAD : path.relative(process.cwd(), BAD);
  assert.ok(
    r.err.includes(`${shown}:5:15: error: argument 'x' of Linear.forward must be f32[..., in_features], got f32[4, 6]: dimension 1 is 6, but in_features is 5`),
    r.err,
  );
  assert.ok(r.err.includes(' 5 |   let y = enc(x)\n   |               ^'), r.err);
  assert.ok(r.err.includes(`${shown}:6:11: error: unknown name 'undefined_thing'`), r.err);
  assert.match(r.err, /2 errors\n$/);
});

test('a missing file and an unknown --set key are errors (exit 1)', async () => {
  const missing = await lovtc(path.join(dir, 'nope.lovt'));
  assert.is(missing.code, 1);
  assert.match(missing.err, /cannot read .*nope\.lovt: no such file/);
  // What is there instead of a .lovt file is named.
  assert.match((await lovtc('/dev/null')).err, /^lovtc: error: cannot read \/dev\/null: it is a character device, not a \.lovt file\n/);
  assert.match((await lovtc(dir)).err, /^lovtc: error: cannot read .*: it is a directory, not a \.lovt file\n/);
  const badKey = await lovtc(GOOD, '--model', 'Small', '--check', '--set', 'dimm=3');
  assert.is(badKey.code, 1);
  assert.match(badKey.err, /lovtc: error: --set dimm=3: the model Small has no config 'dimm'\nhint: did you mean 'dim'\?/);
});

test('--params, --stats and -o in one run of the real command: tables, estimates and the versioned artifact', () => {
  const out = path.join(dir, 'out');
  const r = spawnLovtc(GOOD, '--model', 'Small', '--params', '--stats', '-o', out, '--set', 'dim=8', '--set', 'train.optimizer.lr=3e-4');
  assert.is(r.code, 0, r.err);
  // --params
  assert.match(r.out, /name\s+shape\s+count\s+trainable/);
  assert.match(r.out, /enc\.weight\s+\[3, 8\]\s+24\s+yes/);
  assert.match(r.out, /enc\.bias\s+\[3\]\s+3\s+frozen/);
  assert.match(r.out, /bn\.running_mean\s+\[3\]\s+3\s+buffer/);
  assert.match(r.out, /total: 7 tensors; 33 parameters \(30 trainable, 3 frozen\); 7 buffer elements/);
  // --stats
  assert.match(r.out, /model\s+Small \(train mode\)/);
  assert.match(r.out, /ops\s+\d+ nodes/);
  assert.match(r.out, /FLOPs\/step\s+[\d.]+ k?FLOP/);
  assert.match(r.out, /front end\s+[\d.]+ ms/);
  // the artifact
  const art = JSON.parse(readFileSync(path.join(out, 'graph.json'), 'utf8'));
  assert.is(art.format, 'lovt-graph');
  assert.is(art.irVersion, IR_VERSION);
  assert.match(art.compiler, /^lovtc \d+\.\d+\.\d+/);
  assert.is(art.model.name, 'Small');
  assert.equal(art.options, { source: GOOD, model: 'Small', mode: 'train', set: { dim: '8', 'train.optimizer.lr': '3e-4' }, lib: [] });
  // Every loaded file with the SHA-256 of its content (the main file first, then std imports).
  assert.equal(art.model.sources[0], { path: GOOD, sha256: createHash('sha256').update(readFileSync(GOOD, 'utf8')).digest('hex') });
  assert.ok(art.model.sources.some((f: { path: string }) => f.path.endsWith('std/nn.lovt')));
  // Train-mode artifacts carry the eval-mode graph that validation runs.
  assert.is(art.eval.model.mode, 'eval');
  assert.equal(art.eval.graph.updates, {});
  assert.is(art.model.train.optimizer.lr, 3e-4);
  assert.is(art.model.train.accumulate, 2);
  assert.equal(art.model.configs.dim, { type: 'int', value: 8 });
  assert.equal(Object.keys(art.graph.outputs), ['loss.energy', 'loss.total', 'y']);
  assert.equal(art.graph.state['enc.weight'].shape, [3, 8]);
  assert.ok(art.model.params.some((p: { name: string }) => p.name === 'bn.num_batches_tracked'));
  if (existsSync(path.join(out, 'plan.json'))) {
    const plan = JSON.parse(readFileSync(path.join(out, 'plan.json'), 'utf8'));
    assert.is(plan.format, 'lovt-plan');
    assert.ok(existsSync(path.join(out, 'kernels')));
    // Each training program says what its `nonfinite` output counts.
    for (const name of ['step', 'apply']) assert.equal(plan.programs[name].outputs.nonfinite.shape, [plan.programs[name].checks.length]);
    assert.ok(plan.programs.apply.checks.every((c: { kind: string }) => c.kind === 'optimizer'));
  }
});

test('-o onto a file or into /proc is a usage error (exit 2) before anything is written, never a hang', () => {
  const d = mkdtempSync(path.join(tmpdir(), 'lovtc-out-'));
  try {
    const file = path.join(d, 'taken');
    writeFileSync(file, 'mine');
    const onFile = spawnLovtc(GOOD, '--model', 'Small', '-o', file);
    assert.is(onFile.code, 2, onFile.err);
    assert.is(onFile.err, `lovtc: -o ${file}: it is a file, not a directory\n`);
    assert.is(readFileSync(file, 'utf8'), 'mine');
    const below = spawnLovtc(GOOD, '--model', 'Small', '-o', path.join(file, 'sub'));
    assert.is(below.err, `lovtc: -o ${path.join(file, 'sub')}: ${file} is a file, not a directory\n`);
    // Node's recursive mkdir never returns on procfs; lovtc refuses special file systems.
    const proc = spawnLovtc(GOOD, '--model', 'Small', '-o', '/proc/lovt-no/such');
    assert.is(proc.code, 2, `exit ${proc.code}: ${proc.err}`);
    assert.match(proc.err, /^lovtc: -o \/proc\/lovt-no\/such: \/proc is on the proc file system, which holds no files; choose a directory on a disk\n$/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('--mode eval compiles without state updates', async () => {
  const out = path.join(dir, 'out-eval');
  const r = await lovtc(GOOD, '--model', 'Small', '--mode', 'eval', '-o', out);
  assert.is(r.code, 0, r.err);
  const art = JSON.parse(readFileSync(path.join(out, 'graph.json'), 'utf8'));
  assert.is(art.model.mode, 'eval');
  assert.equal(art.graph.updates, {});
  rmSync(dir, { recursive: true, force: true });
});

test('--check passes on every .lovt file in models/, library files included; a library syntax error fails', async () => {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.lovt')) files.push(p);
    }
  };
  walk('models');
  assert.ok(files.length >= 20, `found ${files.length} model files`);
  for (const f of files) {
    // A file of several models (a head and its variants) needs --model: check each.
    const models = [...readFileSync(f, 'utf8').matchAll(/^model\s+(\w+)/gm)].map((m) => m[1]);
    for (const model of models.length > 1 ? models : [undefined]) {
      const r = await lovtc(f, '--check', ...(model ? ['--model', model] : []));
      assert.is(r.code, 0, `${f} ${model ?? ''}: ${r.err}`);
    }
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'lovtc-lib-'));
  const bad = path.join(dir, 'lib.lovt');
  writeFileSync(bad, 'block A() {\n  fn forward(x: f32[N]) -> f32[N] { return x + }\n}\n');
  const r = await lovtc(bad, '--check');
  assert.is(r.code, 1);
  assert.match(r.err, `${bad}:2:`);
  rmSync(dir, { recursive: true, force: true });
});

test.run();
