// Checkpoint format, round trip, corruption detection and crash safety.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { HostTensor } from '../../runtime/safetensors.ts';
import { loadCheckpoint, readManifest, saveCheckpoint, hasCheckpoint, type CheckpointInfo } from '../../runtime/train/checkpoint.ts';
import { NodeStorage } from '../../runtime/platform/node-storage.ts';
import { readSafetensors, writeSafetensors } from '../../runtime/safetensors.ts';
import { exportPrefixed, matchInitWeights, parseInitArg, WeightsMismatchError } from '../../runtime/train/weights.ts';
import type { StateInfo } from '../../compiler/ir.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'lovt-ckpt-'));
}

function stateAt(step: number, n = 1000): Map<string, HostTensor> {
  const w = new Float32Array(n).map((_, i) => Math.sin(i + step));
  return new Map<string, HostTensor>([
    ['enc.weight', { dtype: 'f32', shape: [n / 10, 10], data: w }],
    ['enc.bn.num_batches_tracked', { dtype: 'i32', shape: [], data: Int32Array.of(step) }],
    ['optim.enc.weight.exp_avg', { dtype: 'f32', shape: [n / 10, 10], data: w.map((x) => x * 0.1) }],
  ]);
}

function infoAt(step: number): CheckpointInfo {
  return {
    model: { name: 'Tiny', path: 'models/tiny.lovt', sourceHash: 'abc123' },
    set: { tau_local: '0.2' },
    config: { batch: 4 },
    train: { accumulate: 2 },
    data: { kind: 'synth', studies: 8 },
    seed: 7,
    step,
    epoch: Math.floor(step / 3),
    dataPosition: { epoch: 0, cursor: step * 2 },
    schedule: { kind: 'plateau', lr: 0.5, best: null, numBadEpochs: 1, cooldownCounter: 0 },
    earlyStop: { best: 1.5, bestEpoch: 0, wait: 1 },
    metrics: { 'loss.total': 2.5, val_total: null },
  };
}

test('round trip: tensors bit-exact, manifest fields preserved, best and last share one file', async () => {
  const dir = tempDir();
  try {
    const storage = new NodeStorage(dir);
    await saveCheckpoint(storage, ['last', 'best'], stateAt(3), infoAt(3));
    const { manifest, tensors } = await loadCheckpoint(storage, 'last');
    assert.is(manifest.step, 3);
    assert.equal(manifest.dataPosition, { epoch: 0, cursor: 6 });
    assert.equal(manifest.schedule, infoAt(3).schedule);
    assert.equal(manifest.earlyStop, infoAt(3).earlyStop);
    assert.equal(manifest.set, { tau_local: '0.2' });
    assert.is(manifest.weights.tensors, 3);
    assert.match(manifest.weights.sha256, /^[0-9a-f]{64}$/);
    const want = stateAt(3);
    for (const [name, t] of want) {
      const got = tensors.get(name)!;
      assert.equal(got.shape, t.shape, name);
      assert.is(got.dtype, t.dtype, name);
      assert.equal(Array.from(got.data), Array.from(t.data), name);
    }
    assert.is((await readManifest(storage, 'best')).weights.file, manifest.weights.file);
    // A later 'last' keeps the file 'best' still points at and drops nothing else it needs.
    await saveCheckpoint(storage, ['last'], stateAt(6), infoAt(6));
    await saveCheckpoint(storage, ['last'], stateAt(9), infoAt(9));
    assert.equal(readdirSync(path.join(dir, 'checkpoints')).sort(), ['step-00000003.safetensors', 'step-00000009.safetensors']);
    assert.is((await loadCheckpoint(storage, 'best')).manifest.step, 3);
    assert.is((await loadCheckpoint(storage, 'last')).manifest.step, 9);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a modified weights file or a missing manifest is a clear error', async () => {
  const dir = tempDir();
  try {
    const storage = new NodeStorage(dir);
    assert.not.ok(await hasCheckpoint(storage, 'last'));
    let msg = '';
    try {
      await loadCheckpoint(storage, 'best');
    } catch (e) {
      msg = (e as Error).message;
    }
    assert.match(msg, /no best checkpoint \(best\.json is missing\)/);

    await saveCheckpoint(storage, ['last'], stateAt(1), infoAt(1));
    const file = path.join(dir, 'checkpoints', 'step-00000001.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(file, bytes);
    msg = '';
    try {
      await loadCheckpoint(storage, 'last');
    } catch (e) {
      msg = (e as Error).message;
    }
    assert.match(msg, /step-00000001\.safetensors does not match last\.json .*modified or is corrupt/);

    writeFileSync(path.join(dir, 'last.json'), '{"format":"something-else"}');
    msg = '';
    try {
      await loadCheckpoint(storage, 'last');
    } catch (e) {
      msg = (e as Error).message;
    }
    assert.match(msg, /last\.json is not a lovt checkpoint manifest/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A storage whose rename fails once armed: the failure lands between the durable temp write and its publication. */
class FailingStorage extends NodeStorage {
  failOn: RegExp | null = null;
  protected override async publish(temp: string, target: string): Promise<void> {
    if (this.failOn?.test(target)) throw new Error('injected failure before rename');
    return super.publish(temp, target);
  }
}

test('an injected failure between temp write and rename keeps the previous checkpoint loadable', async () => {
  const dir = tempDir();
  try {
    const storage = new FailingStorage(dir);
    await saveCheckpoint(storage, ['last'], stateAt(2), infoAt(2));
    for (const failOn of [/\.safetensors$/, /last\.json$/]) {
      storage.failOn = failOn;
      let msg = '';
      try {
        await saveCheckpoint(storage, ['last'], stateAt(4), infoAt(4));
      } catch (e) {
        msg = (e as Error).message;
      }
      assert.match(msg, /injected failure before rename/);
      storage.failOn = null;
      const { manifest, tensors } = await loadCheckpoint(new NodeStorage(dir), 'last');
      assert.is(manifest.step, 2);
      assert.equal(Array.from(tensors.get('enc.weight')!.data), Array.from(stateAt(2).get('enc.weight')!.data));
      assert.ok(
        readdirSync(dir).every((f) => !f.includes('.tmp-')),
        'no temp file left behind',
      );
    }
    // The next successful save cleans up the orphan weights file of the failed attempt.
    await saveCheckpoint(storage, ['last'], stateAt(5), infoAt(5));
    assert.equal(readdirSync(path.join(dir, 'checkpoints')), ['step-00000005.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a writer killed (SIGKILL) mid-checkpoint leaves the last complete checkpoint loadable', async () => {
  const dir = tempDir();
  try {
    // The child saves 4 MB checkpoints in a loop, printing each completed step.
    const storageUrl = pathToFileURL(path.join(root, 'runtime/platform/node-storage.ts')).href;
    const ckptUrl = pathToFileURL(path.join(root, 'runtime/train/checkpoint.ts')).href;
    const code = `
      const { NodeStorage } = await import(${JSON.stringify(storageUrl)});
      const { saveCheckpoint } = await import(${JSON.stringify(ckptUrl)});
      const info = JSON.parse(process.env.INFO);
      const storage = new NodeStorage(${JSON.stringify(dir)});
      for (let step = 1; ; step++) {
        const w = new Float32Array(1 << 20).fill(step);
        await saveCheckpoint(storage, ['last'], new Map([['w', { dtype: 'f32', shape: [w.length], data: w }]]), { ...info, step });
        process.stdout.write(step + '\\n');
      }`;
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        cwd: root,
        env: { ...process.env, INFO: JSON.stringify(infoAt(0)) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let completed = 0;
      await new Promise<void>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          completed = Math.max(completed, ...String(chunk).trim().split('\n').map(Number));
          // Kill at a varying moment inside a later write.
          if (completed >= 2 + round) setTimeout(() => child.kill('SIGKILL'), 3 + 7 * round);
        });
        child.on('exit', () => resolve());
      });
      assert.ok(completed >= 2, `the writer completed ${completed} checkpoints before the kill`);
      const { manifest, tensors } = await loadCheckpoint(new NodeStorage(dir), 'last');
      assert.ok(manifest.step >= completed, `manifest step ${manifest.step} vs ${completed} reported`);
      const w = tensors.get('w')!.data;
      assert.ok(w[0] === manifest.step && w[w.length - 1] === manifest.step, 'the weights are the ones the manifest describes');
    }
    assert.ok(existsSync(path.join(dir, 'last.json')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --init and export -----------------------------------------------------------------

function stateInfos(entries: [string, number[], 'f32' | 'i32'][]): Record<string, StateInfo> {
  const out: Record<string, StateInfo> = {};
  entries.forEach(([name, shape, dtype], node) => {
    out[name] = { node, name, shape, dtype, trainable: dtype === 'f32', init: { kind: 'zeros' } };
  });
  return out;
}

const modelState = stateInfos([
  ['image_encoder.conv1.weight', [4, 3, 3, 3], 'f32'],
  ['image_encoder.bn1.weight', [4], 'f32'],
  ['image_encoder.bn1.running_mean', [4], 'f32'],
  ['image_encoder.bn1.num_batches_tracked', [], 'i32'],
  ['report_encoder.embeddings.LayerNorm.weight', [8], 'f32'],
  ['report_encoder.embeddings.LayerNorm.bias', [8], 'f32'],
  ['optim.image_encoder.conv1.weight.exp_avg', [4, 3, 3, 3], 'f32'],
]);

function f32(shape: number[], start = 0) {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Float32Array.from({ length: n }, (_, i) => start + i * 0.5) };
}

test('--init loads a torchvision-style file under a prefix: fc ignored, int64 counters converted', () => {
  const bytes = writeSafetensors({
    'conv1.weight': f32([4, 3, 3, 3]),
    'bn1.weight': f32([4], 1),
    'bn1.running_mean': f32([4], 2),
    'bn1.num_batches_tracked': { shape: [], data: Int32Array.of(17), dtype: 'I64' },
    'fc.weight': f32([10, 4]),
    'fc.bias': f32([10]),
  });
  const { tensors, ignored } = matchInitWeights(modelState, 'image_encoder', readSafetensors(bytes).tensors, 'r.safetensors');
  assert.equal([...tensors.keys()].sort(), [
    'image_encoder.bn1.num_batches_tracked',
    'image_encoder.bn1.running_mean',
    'image_encoder.bn1.weight',
    'image_encoder.conv1.weight',
  ]);
  assert.equal(ignored.sort(), ['fc.bias', 'fc.weight']);
  assert.equal(Array.from(tensors.get('image_encoder.bn1.num_batches_tracked')!.data), [17]);
  assert.equal(Array.from(tensors.get('image_encoder.bn1.running_mean')!.data), [2, 2.5, 3, 3.5]);
});

test('--init accepts BertFor* names (bert. prefix, LayerNorm gamma/beta, cls head)', () => {
  const file = readSafetensors(
    writeSafetensors({
      'bert.embeddings.LayerNorm.gamma': f32([8]),
      'bert.embeddings.LayerNorm.beta': f32([8]),
      'cls.predictions.bias': f32([30]),
      'bert.embeddings.position_ids': { shape: [1, 8], data: new Int32Array(8), dtype: 'I64' },
    }),
  ).tensors;
  const { tensors, ignored } = matchInitWeights(modelState, 'report_encoder', file, 'bert.safetensors');
  assert.equal([...tensors.keys()].sort(), ['report_encoder.embeddings.LayerNorm.bias', 'report_encoder.embeddings.LayerNorm.weight']);
  assert.is(ignored.length, 2);
});

test('--init errors name every missing, unexpected and mis-shaped tensor at once', () => {
  const file = readSafetensors(
    writeSafetensors({
      'conv1.weight': f32([4, 3, 5, 5]),
      'bn1.weight': f32([4]),
      'layer9.conv.weight': f32([2]),
    }),
  ).tensors;
  let err: WeightsMismatchError | undefined;
  try {
    matchInitWeights(modelState, 'image_encoder', file, 'bad.safetensors');
  } catch (e) {
    err = e as WeightsMismatchError;
  }
  assert.instance(err, WeightsMismatchError);
  assert.equal(err!.missing.sort(), ['image_encoder.bn1.num_batches_tracked', 'image_encoder.bn1.running_mean']);
  assert.equal(err!.unexpected, ['layer9.conv.weight']);
  assert.equal(err!.misshaped, ['conv1.weight [4, 3, 5, 5] vs model [4, 3, 3, 3]']);
  assert.match(
    err!.message,
    /^--init image_encoder=bad\.safetensors does not match.*missing 2 .*unexpected 1 .*layer9\.conv\.weight.*mis-shaped 1: conv1\.weight \[4, 3, 5, 5\] vs model \[4, 3, 3, 3\]/,
  );
  assert.throws(() => matchInitWeights(modelState, 'text_encoder', file, 'x'), /no state under 'text_encoder\.' \(modules: image_encoder, report_encoder\)/);
  assert.throws(() => parseInitArg('image_encoder'), /PREFIX=FILE/);
  assert.equal(parseInitArg('image_encoder=a=b.safetensors'), { prefix: 'image_encoder', file: 'a=b.safetensors' });
});

test('export writes the prefix under torchvision names (counters as I64) and loads back through --init', () => {
  const state = new Map<string, HostTensor>([
    ['image_encoder.conv1.weight', { dtype: 'f32', ...f32([4, 3, 3, 3], 1) }],
    ['image_encoder.bn1.weight', { dtype: 'f32', ...f32([4], 3) }],
    ['image_encoder.bn1.running_mean', { dtype: 'f32', ...f32([4], -1) }],
    ['image_encoder.bn1.num_batches_tracked', { dtype: 'i32', shape: [], data: Int32Array.of(42) }],
    ['report_encoder.embeddings.LayerNorm.weight', { dtype: 'f32', ...f32([8]) }],
    ['optim.image_encoder.conv1.weight.exp_avg', { dtype: 'f32', ...f32([4, 3, 3, 3]) }],
  ]);
  const bytes = exportPrefixed(state, 'image_encoder');
  const read = readSafetensors(bytes);
  assert.equal([...read.tensors.keys()].sort(), ['bn1.num_batches_tracked', 'bn1.running_mean', 'bn1.weight', 'conv1.weight']);
  assert.is(read.storedDtypes.get('bn1.num_batches_tracked'), 'I64');
  assert.is(read.storedDtypes.get('conv1.weight'), 'F32');
  assert.is(read.metadata.format, 'pt');
  const { tensors } = matchInitWeights(modelState, 'image_encoder', read.tensors, 'exported');
  for (const [name, t] of tensors) assert.equal(Array.from(t.data), Array.from(state.get(name)!.data), name);
  assert.throws(() => exportPrefixed(state, 'nothing'), /no state under 'nothing\.'/);
});

test('finite or stop: non-finite state is never saved over the last good checkpoint, never loaded by --init, never exported', async () => {
  const dir = tempDir();
  try {
    const storage = new NodeStorage(dir);
    await saveCheckpoint(storage, ['last', 'best'], stateAt(3), infoAt(3));
    const poisoned = stateAt(4);
    (poisoned.get('optim.enc.weight.exp_avg')!.data as Float32Array)[17] = Infinity;
    (poisoned.get('enc.weight')!.data as Float32Array).fill(NaN, 990);
    const err = await saveCheckpoint(storage, ['last'], poisoned, infoAt(4)).then(
      () => null,
      (e: Error) => e,
    );
    assert.match(
      String(err),
      /^Error: refusing to save the checkpoint of step 4 \(the existing ones stay\): the state has NaN or infinite values in 2 tensors: enc\.weight \(10 of 1,000 values\), optim\.enc\.weight\.exp_avg \(1 of 1,000 values\)$/,
    );
    assert.is((await loadCheckpoint(storage, 'last')).manifest.step, 3);
    assert.equal(readdirSync(path.join(dir, 'checkpoints')), ['step-00000003.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const bad = readSafetensors(
    writeSafetensors({
      'conv1.weight': { shape: [4, 3, 3, 3], data: new Float32Array(108).fill(NaN) },
      'bn1.weight': { shape: [4], data: Float32Array.of(1, -Infinity, 1, 1) },
      'bn1.running_mean': f32([4]),
      'bn1.num_batches_tracked': { shape: [], data: Int32Array.of(1), dtype: 'I64' },
    }),
  ).tensors;
  assert.throws(
    () => matchInitWeights(modelState, 'image_encoder', bad, 'nan.safetensors'),
    /^--init image_encoder=nan\.safetensors has NaN or infinite values in 2 tensors: conv1\.weight \(108 of 108 values\), bn1\.weight \(1 of 4 values\)$/,
  );
  const state = new Map<string, HostTensor>([
    ['image_encoder.conv1.weight', { dtype: 'f32', shape: [2], data: Float32Array.of(1, NaN) }],
    ['report_encoder.x', { dtype: 'f32', shape: [1], data: Float32Array.of(NaN) }],
  ]);
  assert.throws(
    () => exportPrefixed(state, 'image_encoder'),
    /^refusing to export: the checkpoint's image_encoder\.\* state has NaN or infinite values in 1 tensor: image_encoder\.conv1\.weight \(1 of 2 values\)$/,
  );
});

test.run();
