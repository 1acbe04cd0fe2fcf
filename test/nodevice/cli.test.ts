// lovt-run as a user meets it: exit codes, one-line errors, no stack traces.
// Commands that need a GPU (train, loss) are exercised in test/gpu/cli-train.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { saveCheckpoint } from '../../runtime/train/checkpoint.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';

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
    assertOneLineError(lovtRun(['export', path.join(dir, 'nope'), '--image-encoder', path.join(dir, 'x.safetensors')]), /has no last checkpoint \(last\.json is missing\)/);
    assertOneLineError(lovtRun(['export', dir]), /give --image-encoder/);
    const tensors = new Map<string, HostTensor>([
      ['image_encoder.conv1.weight', { dtype: 'f32', shape: [2, 1, 1, 1], data: Float32Array.of(1.5, -2) }],
      ['image_encoder.bn1.num_batches_tracked', { dtype: 'i32', shape: [], data: Int32Array.of(9) }],
      ['report_encoder.x', { dtype: 'f32', shape: [1], data: Float32Array.of(3) }],
    ]);
    await saveCheckpoint(new NodeStorage(dir), ['last'], tensors, {
      model: { name: 'M', path: 'm.lovt', sourceHash: 'h' }, set: {}, config: {}, train: {}, data: {}, seed: 1, step: 4, epoch: 0,
      dataPosition: { epoch: 0, cursor: 8 }, schedule: { kind: 'constant' }, earlyStop: null, metrics: {},
    });
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
    assertOneLineError(lovtRun(['loss', 'models/lovt-tiny.lovt', '--weights', path.join(dir, 'nope.safetensors'), '--batch', 'x']), /cannot read --weights .*nope\.safetensors: ENOENT/);
    assertOneLineError(lovtRun(['synth', '--studies', '3']), /give --out DIR/);

    // A compile error is the rendered diagnostic: location, source line, caret; still exit 1.
    const bad = path.join(dir, 'bad.lovt');
    writeFileSync(bad, 'import "std/nn.lovt"\nmodel Bad {\n  config batch: int = 2\n  let x = undefined_thing(3)\n}\n');
    const r = lovtRun(['train', bad]);
    assert.is(r.code, 1);
    assert.match(r.stderr, /^lovt-run: .*bad\.lovt:4:\d+: error: .*undefined_thing/);
    assert.match(r.stderr, /\n\s*4 \| +let x = undefined_thing\(3\)\n\s*\| +\^+/);
    assert.not.match(r.stderr, /\n\s+at /);
    assertOneLineError(lovtRun(['train', 'models/lovt-tiny.lovt', '--set', 'no_such_config=1']), /^lovt-run: error: --set no_such_config=1: the model LoVT_Tiny has no config 'no_such_config'/);
    // A temperature of 0 makes the model undefined: the config's constraint says so, at its source.
    const tau = lovtRun(['train', 'models/convirt-tiny.lovt', '--set', 'tau_global=0']);
    assert.is(tau.code, 1);
    assert.match(tau.stderr, /^lovt-run: models\/std\/global-contrastive\.lovt:61:40: error: --set tau_global=0: config 'tau_global' must satisfy tau_global > 0, got 0\n/);
    assertOneLineError(lovtRun(['train', 'models/convirt-tiny.lovt', '--set', 'train.optimizer.lr=1e999']), /--set train\.optimizer\.lr=1e999: optimizer\.lr must be a finite number, got Infinity/);
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
