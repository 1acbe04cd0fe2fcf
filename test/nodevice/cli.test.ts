// lovt-run as a user meets it: exit codes, one-line errors, no stack traces.
// Commands that need a GPU (train, loss) are exercised in test/gpu/cli-train.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, rmSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { saveCheckpoint } from '../../runtime/train/checkpoint.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';
import { writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { runLovtc } from '../../bin/lovtc.ts';
import { assertOneLineError, lovtRun, repoRoot } from '../lovt-run.ts';
import { checkpointInfo } from './model-helpers.ts';

test('usage errors: unknown command, unknown option, missing argument', () => {
  assertOneLineError(lovtRun(['tain']), /unknown command 'tain'/);
  assertOneLineError(lovtRun(['export', 'x', '--bogus']), /unknown option '--bogus'/);
  assertOneLineError(lovtRun(['export']), /missing required argument 'RUN_DIR'/);
  const help = lovtRun(['--help']);
  assert.is(help.code, 0);
  for (const cmd of ['train', 'loss', 'synth', 'export', 'doctor', 'demo']) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`));
});

test('export: missing run directory, nothing requested, and a real export', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-'));
  try {
    assertOneLineError(
      lovtRun(['export', path.join(dir, 'nope'), '--image-encoder', path.join(dir, 'x.safetensors')]),
      /has no last checkpoint \(last\.json is missing\)/,
    );
    assertOneLineError(lovtRun(['export', dir]), /give --image-encoder/);
    const tensors = new Map<string, HostTensor>([
      ['image_encoder.conv1.weight', { dtype: 'f32', shape: [2, 1, 1, 1], data: Float32Array.of(1.5, -2) }],
      ['image_encoder.bn1.num_batches_tracked', { dtype: 'i32', shape: [], data: Int32Array.of(9) }],
      ['report_encoder.x', { dtype: 'f32', shape: [1], data: Float32Array.of(3) }],
    ]);
    await saveCheckpoint(new NodeStorage(dir), ['last'], tensors, checkpointInfo({ step: 4, dataPosition: { epoch: 0, cursor: 8 } }));
    const out = path.join(dir, 'enc.safetensors');
    const r = lovtRun(['export', dir, '--image-encoder', out]);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /2 tensors of image_encoder from the last checkpoint \(step 4\)/);
    const read = readSafetensors(new Uint8Array(readFileSync(out)));
    assert.equal([...read.tensors.keys()].sort(), ['bn1.num_batches_tracked', 'conv1.weight']);
    assert.equal(Array.from(read.tensors.get('conv1.weight')!.data), [1.5, -2]);
    assert.is(read.storedDtypes.get('bn1.num_batches_tracked'), 'I64');
    assertOneLineError(lovtRun(['export', dir, '--image-encoder', out, '--checkpoint', 'best']), /has no best checkpoint/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train and loss: bad arguments and a bad model are one clear error before any GPU work', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-'));
  try {
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--data', 'imagenet']), /--data expects 'synth' or 'mimic:DIR'.*got 'imagenet'/);
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--steps', '3', '--epochs', '2']), /--steps or --epochs, not both/);
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--set', 'tau_local']), /--set expects key=value.*got 'tau_local'/);
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--steps', '-2']), /--steps must be a positive whole number, got '-2'/);
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--resume', dir]), /has no last checkpoint/);
    assertOneLineError(lovtRun(['loss', 'models/lovt-tiny.lovt', '--batch', 'x.safetensors']), /give --weights/);
    assertOneLineError(
      lovtRun(['loss', 'models/lovt-tiny.lovt', '--weights', path.join(dir, 'nope.safetensors'), '--batch', 'x']),
      /cannot read --weights .*nope\.safetensors: ENOENT/,
    );
    assertOneLineError(lovtRun(['synth', '--studies', '3']), /give --out DIR/);
    // A --data directory that is not a MIMIC root fails before anything is created for it.
    const missing = path.join(dir, 'nonexistent');
    assertOneLineError(
      lovtRun(['train', 'models/convirt-tiny.lovt', '--data', `mimic:${missing}`, '--out', path.join(dir, 'run')]),
      new RegExp(`^lovt-run: ${missing}: no such directory, or it is empty \\(expected a MIMIC-CXR-JPG root with mimic-cxr-2\\.0\\.0-split\\.csv\\.gz\\)$`),
    );
    assert.not.ok(existsSync(missing), 'no directory created for the data');
    assert.not.ok(existsSync(path.join(dir, 'run')), 'no run directory');

    // A compile error is the rendered diagnostic: location, source line, caret; still exit 1.
    const bad = path.join(dir, 'bad.lovt');
    writeFileSync(bad, 'import "std/nn.lovt"\nmodel Bad {\n  config batch: int = 2\n  let x = undefined_thing(3)\n}\n');
    const r = lovtRun(['train', bad]);
    assert.is(r.code, 1);
    assert.match(r.stderr, /^\S*bad\.lovt:4:\d+: error: .*undefined_thing/);
    assert.match(r.stderr, /\n\s*4 \| +let x = undefined_thing\(3\)\n\s*\| +\^+/);
    assert.not.match(r.stderr, /\n\s+at /);
    assertOneLineError(
      lovtRun(['train', 'models/lovt-tiny.lovt', '--set', 'no_such_config=1']),
      /^lovt-run: error: --set no_such_config=1: the model LoVT_Tiny has no config 'no_such_config'/,
    );
    // A temperature of 0 makes the model undefined: the config's constraint says so, at its source.
    const tau = lovtRun(['train', 'models/convirt-tiny.lovt', '--set', 'tau_global=0']);
    assert.is(tau.code, 1);
    assert.match(
      tau.stderr,
      /^models\/std\/global-contrastive\.lovt:61:40: error: --set tau_global=0: config 'tau_global' must satisfy tau_global > 0, got 0\n/,
    );
    const lr = lovtRun(['train', 'models/convirt-tiny.lovt', '--set', 'train.optimizer.lr=1e999']);
    assert.is(lr.code, 1);
    assert.match(lr.stderr, /^lovt-run: error: --set train\.optimizer\.lr=1e999: number out of range: it reads as Infinity\nhint: a number must be finite/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a run directory is never replaced: an existing run, a locked one, a file or /proc as --out are refused before any compile', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-run-'));
  try {
    const run = path.join(dir, 'run');
    await saveCheckpoint(
      new NodeStorage(run),
      ['last', 'best'],
      new Map<string, HostTensor>([['w', { dtype: 'f32', shape: [1], data: Float32Array.of(1) }]]),
      checkpointInfo({ runId: 'r1', model: { name: 'LoVT_Tiny', path: 'models/lovt-tiny.lovt', sourceHash: 'h' }, step: 17 }),
    );
    writeFileSync(path.join(run, 'metrics.jsonl'), Array.from({ length: 13 }, (_, i) => `{"kind":"train","step":${i + 1}}\n`).join(''));
    const files = ['last.json', 'best.json', 'metrics.jsonl', JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).weights.file];
    const bytes = () => files.map((f) => readFileSync(path.join(run, f)).toString('base64'));
    const before = bytes();
    assertOneLineError(
      lovtRun(['train', 'models/lovt-tiny.lovt', '--out', run, '--steps', '2']),
      new RegExp(
        `^lovt-run: ${run} already holds the run of LoVT_Tiny at step 17 \\(run r1\\) .*continue it with --resume ${run}, or give --overwrite to move it aside`,
      ),
    );
    assert.equal(bytes(), before, 'the run is intact byte for byte');

    // A live writer holds the lock: a second trainer or a resume is refused naming it.
    writeFileSync(path.join(run, 'lovt-run.lock'), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: '2025-01-01T00:00:00.000Z' }));
    const holder = `is in use by another lovt-run \\(pid ${process.pid} on host ${hostname()}, since 2025-01-01T00:00:00.000Z\\)`;
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--resume', run]), new RegExp(holder));
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--out', run, '--overwrite']), new RegExp(holder));
    assert.equal(bytes(), before);

    // --out checks come before the model is compiled (this model does not compile).
    const bad = path.join(dir, 'bad.lovt');
    writeFileSync(bad, 'model Bad {\n  let x = nope\n}\n');
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'x');
    assertOneLineError(lovtRun(['train', bad, '--out', file]), new RegExp(`^lovt-run: --out ${file}: it is a file, not a directory$`));
    assertOneLineError(
      lovtRun(['train', bad, '--out', '/proc/lovt-run/x'], 30_000),
      /^lovt-run: --out \/proc\/lovt-run\/x: \/proc is on the proc file system, which holds no files; choose a directory on a disk$/,
    );
    assertOneLineError(lovtRun(['train', bad, '--resume', run, '--overwrite']), /--overwrite starts a new run and --resume continues one/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('MODEL may be a lovtc artifact: other IR versions and data that does not fit are refused with the lovtc command; other paths are named', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-art-'));
  try {
    assertOneLineError(
      lovtRun(['train', '/dev/null']),
      /^lovt-run: the model \/dev\/null is a character device, not a \.lovt file or a lovtc artifact directory$/,
    );
    assertOneLineError(
      lovtRun(['loss', dir, '--weights', 'w', '--batch', 'b']),
      new RegExp(`^lovt-run: ${dir} is a directory without graph\\.json: neither a \\.lovt file nor a lovtc artifact`),
    );
    const model = path.join(repoRoot, 'test/gpu/tiny-clip.lovt');
    const art = path.join(dir, 'art');
    assert.is(await runLovtc([model, '-o', art], { stdout: () => {}, stderr: () => {} }), 0);
    // Data that does not fit: SynthCXR's vocabulary is not the compiled vocab_size.
    const data = path.join(dir, 'synth');
    const s = await writeSynthDataset(data, { studies: 8, seed: 1, imageSize: 32 });
    const r = lovtRun(['train', art, '--data', `mimic:${data}`, '--out', path.join(dir, 'run'), '--data-workers', '1000']);
    assertOneLineError(
      r,
      new RegExp(
        `^lovt-run: ${art} was compiled with vocab_size 64, but the data's vocabulary \\(${data}/vocab\\.txt\\) has ${s.vocabSize} tokens: recompile with \`lovtc ${model} -o ${art} --set vocab_size=${s.vocabSize}\`$`,
      ),
    );
    assert.match(r.stdout, /--data-workers 1000 is more than this machine's \d+ cores: using \d+ worker threads/);
    // Another IR version.
    const graph = path.join(art, 'graph.json');
    writeFileSync(graph, readFileSync(graph, 'utf8').replace(/"irVersion":\d+/, '"irVersion":0'));
    const stale = new RegExp(
      `^lovt-run: ${graph} was compiled by lovtc \\S+ for IR version 0; this lovt reads IR version \\d+: recompile with \`lovtc ${model} -o ${art}\`$`,
    );
    assertOneLineError(lovtRun(['train', art]), stale);
    assertOneLineError(lovtRun(['loss', art, '--weights', 'w.safetensors', '--batch', 'x.safetensors']), stale);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loss: --weights and --batch must be regular, well-formed safetensors files; refused before any GPU work, naming the path', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-files-'));
  try {
    const loss = (weights: string) => lovtRun(['loss', 'models/convirt-tiny.lovt', '--weights', weights, '--batch', weights], 60_000);
    const fifo = path.join(dir, 'w.fifo');
    assert.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
    assertOneLineError(loss(fifo), new RegExp(`^lovt-run: cannot read --weights ${fifo}: it is a named pipe \\(FIFO\\), not a regular file$`));
    assertOneLineError(loss('/dev/zero'), /^lovt-run: cannot read --weights \/dev\/zero: it is a character device, not a regular file$/);
    assertOneLineError(loss(dir), new RegExp(`^lovt-run: cannot read --weights ${dir}: it is a directory, not a regular file$`));
    const loop = path.join(dir, 'loop.safetensors');
    symlinkSync(loop, loop);
    assertOneLineError(loss(loop), /ELOOP: too many symbolic links encountered$/);
    // A 30 MB tensor name is echoed clipped, not whole.
    const header = new TextEncoder().encode(JSON.stringify({ ['n'.repeat(30_000_000)]: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }));
    const file = new Uint8Array(8 + header.length + 8);
    new DataView(file.buffer).setUint32(0, header.length, true);
    file.set(header, 8);
    const big = path.join(dir, 'big.safetensors');
    writeFileSync(big, file);
    const r = loss(big);
    assertOneLineError(r, /safetensors: tensor "n+"… \(30000000 characters\): unsupported dtype "F64"/);
    assert.ok(r.stderr.length < 500, `stderr of ${r.stderr.length} characters`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('synth writes a MIMIC-layout data set with its vocabulary', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-cli-synth-'));
  try {
    const r = lovtRun(['synth', '--out', dir, '--studies', '6', '--seed', '2', '--image-size', '32']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote .*: 6 studies of \d+ subjects \(train \d+, validate \d+, test \d+\)/);
    for (const f of ['vocab.txt', 'mimic-cxr-2.0.0-split.csv.gz', 'mimic-cxr-2.0.0-metadata.csv.gz']) assert.ok(existsSync(path.join(dir, f)), f);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('doctor reports the adapter and exits 0', () => {
  const r = lovtRun(['doctor']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /adapter: /);
  assert.match(r.stdout, /maxStorageBufferBindingSize \d+ MiB/);
});

test.run();
