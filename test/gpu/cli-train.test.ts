// lovt-run train / loss / export / --init as a user runs them, on the GPU, with
// the tiny fixture model (test/gpu/tiny-clip.lovt) and a small SynthCXR.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { readSafetensors, writeSafetensors } from '../../runtime/safetensors.ts';
import { runLovtc } from '../../bin/lovtc.ts';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';

const work = mkdtempSync(path.join(tmpdir(), 'lovt-cli-train-'));
const modelPath = fileURLToPath(new URL('./tiny-clip.lovt', import.meta.url));
const dataDir = path.join(work, 'synth');
const run = path.join(work, 'run');
let vocabSize = 0;

test.before(async () => {
  vocabSize = (await writeSynthDataset(dataDir, { studies: 24, seed: 3, imageSize: 32, splitFractions: [0.5, 0.5, 0] })).vocabSize;
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test('lovt-run train writes checkpoints, metrics and report.md with its figures', () => {
  const r = lovtRun(['train', modelPath, '--data', `mimic:${dataDir}`, '--steps', '3', '--out', run, '--heatmap-studies', '2']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /stopped: reached 3 optimizer steps/);
  const report = readFileSync(path.join(run, 'report.md'), 'utf8');
  for (const f of [...report.matchAll(/\]\((figures\/[^)]+)\)/g)].map((m) => m[1])) assert.ok(existsSync(path.join(run, f)), f);
  assert.match(report, /attention-p\d+-s\d+\.png/);
  assert.ok(existsSync(path.join(run, 'best.json')) && existsSync(path.join(run, 'metrics.jsonl')));
  // --data mimic: images resized once into DIR/lovt-cache, statistics beside them.
  assert.match(r.stdout, /images resized into \S*lovt-cache\/resized-512 \(\d+ new, 0 reused, 0 unreadable\)/);
  assert.ok(existsSync(path.join(dataDir, 'lovt-cache', 'resized-512', 'lovt-resized.json')));
  assert.ok(existsSync(path.join(dataDir, 'lovt-cache', 'resized-512', 'lovt-pixel-stats.json')));
  assert.not.ok(existsSync(path.join(run, 'lovt-run.lock')), 'the lock is gone with the run');

  // A second run pointed at it is refused; the run stays as it was, byte for byte.
  const files = ['last.json', 'best.json', 'metrics.jsonl', JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).weights.file];
  const before = files.map((f) => readFileSync(path.join(run, f)).toString('base64'));
  assertOneLineError(
    lovtRun(['train', modelPath, '--data', `mimic:${dataDir}`, '--steps', '2', '--out', run]),
    /already holds the run of TinyClip at step 3 \(run [0-9a-f-]{36}\) .*--resume .*--overwrite/,
  );
  assert.equal(
    files.map((f) => readFileSync(path.join(run, f)).toString('base64')),
    before,
  );
  // Dropped data: counted in the data line every run, listed by reason in the report.
  assert.match(r.stdout, /^data: .*; dropped: \d+ stud(y|ies).*, \d+ images?.*, \d+ CSV rows?/m);
  assert.match(report, /## Dropped data\n\n.*\n\n\| reason \| drops a \| count \| meaning \| first paths \|/);
  assert.is([...report.matchAll(/^\| [a-z-]+ \| (CSV row|image|study) \| \d+ \|/gm)].length, 13);
});

test('lovt-run train --resume continues the run (the same model file elsewhere, a restated --set); a resume cannot change the recipe', () => {
  // Content, not path, identifies the model; resolved values, not spellings, the recipe.
  const moved = path.join(work, 'moved-clip.lovt');
  copyFileSync(modelPath, moved);
  const r = lovtRun(['train', moved, '--steps', '4', '--resume', run, '--no-report', '--set', 'tau=0.10']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /resuming at step 3/);
  assert.match(r.stdout, /images, cached\), images resized into \S* \(0 new, \d+ reused, 0 unreadable\)/);
  assert.match(r.stdout, /stopped: reached 4 optimizer steps/);
  assert.is(JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).step, 4);
  assertOneLineError(
    lovtRun(['train', modelPath, '--steps', '5', '--resume', run, '--set', 'tau=0.5']),
    /was started with tau = 0\.1; a resume cannot change it to tau = 0\.5/,
  );
  assertOneLineError(lovtRun(['train', modelPath, '--resume', run, '--out', path.join(work, 'elsewhere')]), /continues in that directory; drop --out/);
  assertOneLineError(lovtRun(['train', modelPath, '--steps', '5', '--resume', run, '--resize', '256']), /was trained with --resize 512, not 256/);
});

test('lovt-run train trains a lovtc artifact and records it; resume refuses another model, naming both', async () => {
  const art = path.join(work, 'art');
  assert.is(await runLovtc([modelPath, '-o', art, '--set', `vocab_size=${vocabSize}`], { stdout: () => {}, stderr: () => {} }), 0);
  const artRun = path.join(work, 'art-run');
  const r = lovtRun(['train', art, '--data', `mimic:${dataDir}`, '--steps', '1', '--out', artRun, '--no-report']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`model TinyClip \\(lovtc artifact ${art}\\)`));
  assert.match(r.stdout, /stopped: reached 1 optimizer steps/);
  const last = JSON.parse(readFileSync(path.join(artRun, 'last.json'), 'utf8'));
  const sha = createHash('sha256')
    .update(readFileSync(path.join(art, 'graph.json')))
    .digest('hex');
  assert.equal([last.model.path, last.model.artifact, last.set], [art, sha, { vocab_size: String(vocabSize) }]);
  assertOneLineError(
    lovtRun(['train', modelPath, '--steps', '2', '--resume', artRun]),
    new RegExp(
      `was trained from the lovtc artifact ${art} \\(sha256 ${sha.slice(0, 12)}…\\); this resume gives the source ${modelPath}: resume with the model the run trained`,
    ),
  );
  assertOneLineError(
    lovtRun(['train', art, '--steps', '5', '--resume', run]),
    /was trained from the source .*moved-clip\.lovt; this resume gives the lovtc artifact /,
  );
});

test('lovt-run loss prints every term as JSON and writes gradients', () => {
  // loss: weights from the run's checkpoint, a batch written to safetensors.
  const ckpt = readSafetensors(new Uint8Array(readFileSync(path.join(run, JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).weights.file))));
  const weightsFile = path.join(work, 'w.safetensors');
  writeFileSync(weightsFile, writeSafetensors(new Map([...ckpt.tensors].filter(([k]) => !k.startsWith('optim.')))));
  const batchFile = path.join(work, 'x.safetensors');
  const vocab = JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).set.vocab_size;
  const B = 4,
    T = 16;
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i % T < 5 ? 5 + ((i * 7) % (Number(vocab) - 5)) : 0));
  const sentence = Int32Array.from({ length: B * T }, (_, i) => (i % T >= 1 && i % T < 4 ? 0 : -1));
  writeFileSync(
    batchFile,
    writeSafetensors({
      image: { shape: [B, 3, 16, 16], data: Float32Array.from({ length: B * 768 }, (_, i) => Math.sin(i)) },
      input_ids: { shape: [B, T], data: ids, dtype: 'I64' },
      attention_mask: { shape: [B, T], data: ids.map((v) => (v ? 1 : 0)) },
      token_sentence: { shape: [B, T], data: sentence },
    }),
  );
  const gradsFile = path.join(work, 'g.safetensors');
  const l = lovtRun(['loss', modelPath, '--weights', weightsFile, '--batch', batchFile, '--grads', gradsFile, '--set', `vocab_size=${vocab}`]);
  assert.is(l.code, 0, l.stderr);
  const losses = JSON.parse(l.stdout);
  assert.equal(Object.keys(losses), ['total', 'i2r', 'r2i']);
  assert.ok(Number.isFinite(losses.total));
  assert.ok(readSafetensors(new Uint8Array(readFileSync(gradsFile))).tensors.has('image_proj.weight'));
  // Mismatched weights or batch are named by evaluateLosses (test/gpu/train.test.ts).
});

test('export writes the image encoder; a mis-shaped --init file is one error naming every problem', () => {
  const enc = path.join(work, 'enc.safetensors');
  const e = lovtRun(['export', run, '--image-encoder', enc]);
  assert.is(e.code, 0, e.stderr);
  assert.equal([...readSafetensors(new Uint8Array(readFileSync(enc))).tensors.keys()].sort(), ['bias', 'weight']);
  // (Loading a good file is checked in process in train.test.ts.)
  const badFile = path.join(work, 'bad-enc.safetensors');
  writeFileSync(badFile, writeSafetensors({ weight: { shape: [8, 4], data: new Float32Array(32) }, extra: { shape: [1], data: new Float32Array(1) } }));
  assertOneLineError(
    lovtRun(['train', modelPath, '--data', `mimic:${dataDir}`, '--steps', '1', '--out', path.join(work, 'bad-run'), '--init', `image_encoder=${badFile}`]),
    /--init image_encoder=.*bad-enc\.safetensors does not match the model's image_encoder\.\* state: missing 1 .*image_encoder\.bias; unexpected 1 .*extra; mis-shaped 1: weight \[8, 4\] vs model \[8, 3\]/,
  );
});

test('finite or stop: a ConVIRT whose loss sat at ln B on a NaN network stops naming the step and the tensor; checkpoint and export stay finite', () => {
  // The finding: lr 1e9 made the activations NaN, relu turned them into 0, every embedding became the
  // projection head's bias and every similarity equal, so the loss was exactly ln B and the run exited 0
  // with NaN weights in its checkpoint, which export then wrote.
  const out = path.join(work, 'diverged');
  const r = lovtRun(
    [
      'train',
      'models/convirt-tiny.lovt',
      '--data',
      `mimic:${dataDir}`,
      '--batch',
      '2',
      '--set',
      'train.optimizer.lr=1e9',
      '--steps',
      '4',
      '--checkpoint-every',
      '1',
      '--out',
      out,
      '--no-report',
    ],
    900_000,
  );
  assertOneLineError(
    r,
    /^lovt-run: at optimizer step \d+ \(epoch 1(, micro-batch 1 of 1, samples [^)]+)?\): (the new value|the gradient|the optimizer update) of \S+ .*NaN or infinite.*; (nothing of this step was applied|the update was not applied) and training stopped\. The last good checkpoint is step \d+ \(.*last\.json\)\.$/,
  );
  const step = Number(/at optimizer step (\d+)/.exec(r.stderr)![1]);
  const manifest = JSON.parse(readFileSync(path.join(out, 'last.json'), 'utf8'));
  assert.is(manifest.step, step - 1);
  for (const [name, t] of readSafetensors(new Uint8Array(readFileSync(path.join(out, manifest.weights.file)))).tensors)
    assert.ok(t.data.every(Number.isFinite), `checkpoint ${name}`);
  const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(metrics.at(-1).event, 'non-finite');
  const enc = path.join(work, 'diverged-enc.safetensors');
  const e = lovtRun(['export', out, '--image-encoder', enc]);
  assert.is(e.code, 0, e.stderr);
  for (const [name, t] of readSafetensors(new Uint8Array(readFileSync(enc))).tensors) assert.ok(t.data.every(Number.isFinite), `export ${name}`);
});

test('finite or stop: NaN --init and --weights files, NaN images and out-of-range token ids are refused, naming them', () => {
  const vocab = Number(JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).set.vocab_size);
  const nanEnc = path.join(work, 'nan-enc.safetensors');
  writeFileSync(
    nanEnc,
    writeSafetensors({
      weight: { shape: [8, 3], data: new Float32Array(24).fill(NaN) },
      bias: { shape: [8], data: Float32Array.from([0, 1, Infinity, 3, 4, 5, 6, 7]) },
    }),
  );
  assertOneLineError(
    lovtRun(['train', modelPath, '--data', `mimic:${dataDir}`, '--steps', '1', '--out', path.join(work, 'nan-init-run'), '--init', `image_encoder=${nanEnc}`]),
    /--init image_encoder=.*nan-enc\.safetensors has NaN or infinite values in 2 tensors: weight \(24 of 24 values\), bias \(1 of 8 values\)$/,
  );

  const ckpt = readSafetensors(new Uint8Array(readFileSync(path.join(run, JSON.parse(readFileSync(path.join(run, 'last.json'), 'utf8')).weights.file))));
  const weights = new Map([...ckpt.tensors].filter(([k]) => !k.startsWith('optim.')));
  const weightsFile = path.join(work, 'w-finite.safetensors');
  writeFileSync(weightsFile, writeSafetensors(weights));
  const B = 4,
    T = 16;
  const batch = (image: Float32Array, ids: Int32Array) => {
    const file = path.join(work, `batch-${Math.random().toString(36).slice(2)}.safetensors`);
    writeFileSync(
      file,
      writeSafetensors({
        image: { shape: [B, 3, 16, 16], data: image },
        input_ids: { shape: [B, T], data: ids },
        attention_mask: { shape: [B, T], data: Int32Array.from(ids, (v, i) => (i % T < 5 ? 1 : 0)) },
        token_sentence: { shape: [B, T], data: Int32Array.from({ length: B * T }, (_, i) => (i % T >= 1 && i % T < 4 ? 0 : -1)) },
      }),
    );
    return file;
  };
  const image = Float32Array.from({ length: B * 768 }, (_, i) => Math.sin(i));
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i % T < 5 ? 5 : 0));
  const loss = (w: string, x: string) => lovtRun(['loss', modelPath, '--weights', w, '--batch', x, '--set', `vocab_size=${vocab}`]);
  assert.is(loss(weightsFile, batch(image, ids)).code, 0, 'the finite batch and weights');

  const nanImage = Float32Array.from(image);
  nanImage.fill(NaN, 300);
  assertOneLineError(
    loss(weightsFile, batch(nanImage, ids)),
    /--batch .*: input 'image' has 2,772 NaN or infinite values \(the first: image\[0, 1, 2, 12\] = NaN\)$/,
  );
  for (const bad of [1_000_000, -5]) {
    const badIds = Int32Array.from(ids);
    badIds[T + 2] = bad;
    assertOneLineError(
      loss(weightsFile, batch(image, badIds)),
      new RegExp(
        `--batch .*: input_ids\\[1, 2\\] = ${bad} is out of range: input_ids indexes the rows of token_embedding\\.weight, so with vocabulary size ${vocab} it must be in 0\\.\\.${vocab - 1}$`,
      ),
    );
  }
  const nanWeights = path.join(work, 'w-nan.safetensors');
  writeFileSync(
    nanWeights,
    writeSafetensors(new Map([...weights].map(([k, t]) => [k, t.dtype === 'f32' ? { ...t, data: new Float32Array(t.data.length).fill(NaN) } : t]))),
  );
  assertOneLineError(
    loss(nanWeights, batch(image, ids)),
    /--weights .*w-nan\.safetensors has NaN or infinite values in 11 tensors: image_bn\.bias \(8 of 8 values\), image_bn\.running_mean \(8 of 8 values\), .*, … \(3 more\)$/,
  );
});

test.run();
