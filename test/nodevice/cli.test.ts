// lovt-run as a user meets it: exit codes, one-line errors, no stack traces.
// Commands that need a GPU (train, loss, demo) are exercised in test/gpu/train.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { readSafetensors } from '../../runtime/safetensors.ts';
import { saveCheckpoint } from '../../runtime/train/checkpoint.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function lovtRun(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/lovt-run.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** stderr without Dawn's own start-up warnings. */
function ourStderr(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('Warning: '));
}

function assertOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.is(r.code, 1, `exit code (stderr: ${r.stderr})`);
  const lines = ourStderr(r.stderr);
  assert.is(lines.length, 1, `one line of error, got:\n${lines.join('\n')}`);
  assert.match(lines[0], /^lovt-run: /);
  assert.match(lines[0], pattern);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
}

test('usage errors: unknown command, unknown option, missing argument', () => {
  assertOneLineError(lovtRun(['tain']), /unknown command 'tain'/);
  assertOneLineError(lovtRun(['export', 'x', '--bogus']), /unknown option '--bogus'/);
  assertOneLineError(lovtRun(['export']), /missing required argument 'RUN_DIR'/);
  const help = lovtRun(['--help']);
  assert.is(help.code, 0);
  for (const cmd of ['doctor', 'export']) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`));
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

test('doctor reports the adapter and exits 0', () => {
  const r = lovtRun(['doctor']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /adapter: /);
  assert.match(r.stdout, /maxStorageBufferBindingSize \d+ MiB/);
});

test.run();
