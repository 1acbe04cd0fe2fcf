// The product's workflow: `lovtc models/lovt-tiny.lovt -o X` then `lovt-run train X`
// trains exactly what `lovt-run train models/lovt-tiny.lovt` trains — the same losses at
// every step and bit-identical weights — through trainCommand, the function behind
// `lovt-run train` (both runs in this process, so the second reuses the compiled
// pipelines). test/gpu/cli-train.test.ts runs an artifact through the real command.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLovtc } from '../../bin/lovtc.ts';
import { writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { nodeStorage } from '../../runtime/platform/node-storage.ts';
import { trainCommand, type TrainOptions } from '../../runtime/platform/node-train.ts';
import { loadCheckpoint } from '../../runtime/train/checkpoint.ts';
import { readMetrics } from '../../runtime/train/metrics.ts';

const LOVT_TINY = fileURLToPath(new URL('../../models/lovt-tiny.lovt', import.meta.url));
const work = mkdtempSync(path.join(tmpdir(), 'lovt-artifact-train-'));
const dataDir = path.join(work, 'synth');
let vocabSize = 0;

test.before(async () => {
  // 12 train studies: one batch of 8 per epoch; 12 validate studies: one validation batch.
  vocabSize = (await writeSynthDataset(dataDir, { studies: 24, seed: 3, imageSize: 128, splitFractions: [0.5, 0.5, 0] })).vocabSize;
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test("lovt-tiny: training the lovtc artifact gives the source run's losses at every step and its weights, bit for bit", async () => {
  const art = path.join(work, 'lovt-tiny');
  let err = '';
  const code = await runLovtc([LOVT_TINY, '-o', art, '--set', `vocab_size=${vocabSize}`, '--set', 'train.accumulate=1'], {
    stdout: () => {},
    stderr: (s) => (err += s),
  });
  assert.is(code, 0, err);
  const lines: string[] = [];
  const out = { say: (t: string) => lines.push(t) };
  const common: TrainOptions = {
    data: `mimic:${dataDir}`,
    studies: 200,
    synthSeed: 0,
    set: [],
    init: [],
    steps: 2,
    valBatches: 1,
    report: false,
    heatmapStudies: 0,
  };
  const fromSource = path.join(work, 'run-source');
  const fromArtifact = path.join(work, 'run-artifact');
  await trainCommand(LOVT_TINY, { ...common, accumulate: 1, out: fromSource }, out);
  await trainCommand(art, { ...common, out: fromArtifact }, out);
  assert.ok(
    lines.some((l) => l.startsWith(`model LoVT_Tiny (lovtc artifact ${art})`)),
    lines.join('\n'),
  );

  const losses = async (dir: string) => (await readMetrics(nodeStorage(dir))).filter((r) => r.kind !== 'event').map(({ samples_per_s: _, ...r }) => r);
  const a = await losses(fromSource);
  const b = await losses(fromArtifact);
  assert.is(a.filter((r) => r.kind === 'train').length, 2);
  assert.ok(Object.keys(a[0]).filter((k) => k.startsWith('loss.')).length >= 7, 'every loss term is recorded');
  assert.equal(b, a, 'train and validation losses of every step');

  const [s, t] = await Promise.all([loadCheckpoint(nodeStorage(fromSource), 'last'), loadCheckpoint(nodeStorage(fromArtifact), 'last')]);
  assert.equal([...t.tensors.keys()], [...s.tensors.keys()]);
  for (const [name, x] of s.tensors) {
    const y = t.tensors.get(name)!.data;
    assert.ok(x.data.length === y.length && x.data.every((v, i) => Object.is(v, y[i])), `${name} differs`);
  }
  assert.is(s.manifest.model.artifact, undefined);
  assert.match(t.manifest.model.artifact ?? '', /^[0-9a-f]{64}$/);
  assert.is(t.manifest.model.sourceHash, s.manifest.model.sourceHash, 'the artifact records the source it was compiled from');
});

test.run();
