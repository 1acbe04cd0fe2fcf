// Image decoding on worker threads (runtime/platform/node-workers.ts): the loader's batches,
// the problems it records, the resize cache and the pixel statistics are bit-identical for
// 0 (in-process), 1 and 2 workers; a crashed worker is an error, never a hang; a pool never
// keeps the process alive. Fixture: a small SynthCXR in a temp directory with corrupt images
// (truncated, not an image, removed after opening).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryFileSource, SubdirFileSource } from '../../runtime/data/fs.ts';
import { IN_PROCESS, type ImageWorkers } from '../../runtime/data/image-jobs.ts';
import { BatchLoader, type LoadedBatch, type LoaderOptions } from '../../runtime/data/loader.ts';
import { MimicCxrDataset, RESIZE_MANIFEST, writeResizedImages } from '../../runtime/data/mimic.ts';
import { computePixelStats } from '../../runtime/data/stats.ts';
import { generateSynthCXR } from '../../runtime/data/synth/dataset.ts';
import { ReportTokenizer } from '../../runtime/data/tokenizer.ts';
import { nodeFileSource } from '../../runtime/platform/node-fs.ts';
import { createImageWorkers, localDirectory } from '../../runtime/platform/node-workers.ts';
import { openTrainingData } from '../../runtime/train/data-setup.ts';
import { assertOneLineError, lovtRun } from '../lovt-run.ts';

const WORKER_COUNTS = [0, 1, 2];

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await promise;
  } catch (err) {
    assert.match((err as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected a rejection matching ${pattern}`);
}

let root = '';
let tokenizer: ReportTokenizer;
/** Images made unusable: truncated, replaced by text, deleted after the dataset was opened. */
const corrupt = { truncated: '', notAnImage: '', removed: '' };

test.before(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'lovt-workers-'));
  await generateSynthCXR(nodeFileSource(root), { studies: 28, seed: 7, imageSize: 40, splitFractions: [0.75, 0.25, 0] });
  tokenizer = await ReportTokenizer.load(nodeFileSource(root), 'vocab.txt');
  const train = (await MimicCxrDataset.open(nodeFileSource(root), { tokenizer })).split('train');
  const multi = train.filter((s) => s.imagePaths.length >= 2);
  const single = train.filter((s) => s.imagePaths.length === 1);
  assert.ok(multi.length >= 1 && single.length >= 2, 'the fixture has train studies with one and with several frontal images');
  corrupt.truncated = multi[0].imagePaths[0]; // drawn sometimes: the study falls back to its other image
  corrupt.notAnImage = single[0].imagePaths[0]; // the study is skipped whenever it comes up
  corrupt.removed = single[1].imagePaths[0];
  const file = (p: string) => path.join(root, ...p.split('/'));
  truncateSync(file(corrupt.truncated), Math.floor(readFileSync(file(corrupt.truncated)).length / 2));
  writeFileSync(file(corrupt.notAnImage), 'not an image');
});

test.after(() => {
  rmSync(root, { recursive: true, force: true });
});

/** Fresh datasets (their problem lists start empty), opened before `removed` disappears: its reads fail while loading. */
async function openDatasets(count: number): Promise<MimicCxrDataset[] & { restore: () => void }> {
  const file = path.join(root, ...corrupt.removed.split('/'));
  const saved = readFileSync(file);
  const datasets: MimicCxrDataset[] = [];
  for (let i = 0; i < count; i++) datasets.push(await MimicCxrDataset.open(nodeFileSource(root), { tokenizer }));
  unlinkSync(file);
  return Object.assign(datasets, { restore: () => writeFileSync(file, saved) });
}

async function collect(it: AsyncIterable<LoadedBatch>): Promise<LoadedBatch[]> {
  const out: LoadedBatch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

/** Every batch exactly: positions, ids, and the bytes of every input tensor. */
function exactly(batches: LoadedBatch[]): string[] {
  return batches.map((b) => {
    const tensors = Object.entries(b.batch.inputs).map(
      ([name, t]) => `${name}${JSON.stringify(t.shape)}:${Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('base64')}`,
    );
    return JSON.stringify({
      epoch: b.epoch,
      index: b.index,
      next: b.next,
      ids: b.batch.ids,
      counts: b.batch.sentenceCounts,
      truncated: b.batch.truncatedSamples,
      tensors,
    });
  });
}

const NORM = { mean: 0.4, std: 0.25 };

function loaderOf(dataset: MimicCxrDataset, workers: ImageWorkers, split: 'train' | 'validate', overrides: Partial<LoaderOptions> = {}): BatchLoader {
  return new BatchLoader(dataset, dataset.split(split), tokenizer, {
    batchSize: 3,
    seed: 21,
    train: split === 'train',
    norm: NORM,
    imageSize: 24,
    maxLength: 64,
    maxSentences: 8,
    imageWorkers: workers,
    ...overrides,
  });
}

test('batches are bit-identical for 0, 1 and 2 workers (train over epochs, evaluation, one random sentence); corrupt images skipped and counted the same', async () => {
  const datasets = await openDatasets(WORKER_COUNTS.length);
  try {
    const runs: { batches: string[]; problems: string[] }[] = [];
    for (const [i, threads] of WORKER_COUNTS.entries()) {
      const workers = createImageWorkers(threads);
      try {
        const dataset = datasets[i];
        const batches = [
          ...(await collect(loaderOf(dataset, workers, 'train').from({ epoch: 0, cursor: 0 }, 3))),
          ...(await collect(loaderOf(dataset, workers, 'validate', { batchSize: 2 }).epoch(0))),
          ...(await collect(loaderOf(dataset, workers, 'train', { reportText: 'one_random_sentence', prefetch: 1 }).epoch(4))),
        ];
        runs.push({ batches: exactly(batches), problems: dataset.problems.map((p) => `${p.kind} ${p.path} ${p.detail}`) });
      } finally {
        await workers.close();
      }
    }
    const [inProcess, ...others] = runs;
    assert.ok(inProcess.batches.length >= 10, `${inProcess.batches.length} batches`);
    const counts = datasets[0].problemCounts();
    assert.equal([counts['undecodable-image'], counts['missing-image']], [2, 1]);
    assert.equal(
      inProcess.problems
        .filter((p) => p.startsWith('undecodable-image'))
        .map((p) => p.split(' ')[1])
        .sort(),
      [corrupt.notAnImage, corrupt.truncated].sort(),
    );
    assert.ok(inProcess.problems.some((p) => p.startsWith(`missing-image ${corrupt.removed} cannot read`)));
    for (const [k, run] of others.entries()) {
      assert.equal(run.batches, inProcess.batches, `${WORKER_COUNTS[k + 1]} worker(s): the same batches`);
      assert.equal(run.problems, inProcess.problems, `${WORKER_COUNTS[k + 1]} worker(s): the same problems, in the same order`);
      assert.equal(datasets[k + 1].problemCounts(), counts);
    }
  } finally {
    datasets.restore();
  }
});

test('resuming with another worker count continues with exactly the same batches', async () => {
  const dataset = await MimicCxrDataset.open(nodeFileSource(root), { tokenizer });
  const full = await collect(loaderOf(dataset, IN_PROCESS, 'train').from({ epoch: 0, cursor: 0 }, 2));
  const workers = createImageWorkers(2);
  try {
    for (const k of [0, 3]) {
      const resumed = await collect(loaderOf(dataset, workers, 'train').from(full[k].next, 2));
      assert.equal(exactly(resumed), exactly(full.slice(k + 1)), `resume after batch ${k}`);
    }
  } finally {
    await workers.close();
  }
});

test('resize cache and pixel statistics: identical files, manifest, counts and statistics with workers', async () => {
  const caches: string[] = [];
  try {
    const results = [];
    for (const threads of WORKER_COUNTS) {
      const cache = mkdtempSync(path.join(tmpdir(), 'lovt-workers-cache-'));
      caches.push(cache);
      const workers = createImageWorkers(threads);
      try {
        const dataset = await MimicCxrDataset.open(nodeFileSource(root), { tokenizer });
        const progress: number[] = [];
        const resized = await writeResizedImages(dataset, dataset.studies, nodeFileSource(cache), {
          maxSide: 24,
          workers,
          onProgress: (done) => progress.push(done),
        });
        const paths = dataset.studies.flatMap((s) => s.imagePaths);
        assert.equal(
          progress,
          paths.map((_, i) => i + 1),
          'progress in path order',
        );
        const stats = await computePixelStats(nodeFileSource(cache), paths, { workers });
        // The copies of the corrupt originals are missing: skipped, with the reason naming this cache.
        const skipped = stats.skipped.map((s) => ({ ...s, reason: s.reason.replaceAll(cache, 'CACHE') }));
        assert.equal(skipped.map((s) => s.path).sort(), [corrupt.notAnImage, corrupt.truncated].sort());
        results.push({ resized, problems: dataset.problems, stats: { ...stats, skipped } });
      } finally {
        await workers.close();
      }
    }
    const [inProcess, ...others] = results;
    assert.equal([inProcess.resized.failed, [...inProcess.resized.undecodable.keys()].sort()], [2, [corrupt.notAnImage, corrupt.truncated].sort()]);
    assert.ok(inProcess.resized.written > 20);
    const files = (dir: string) =>
      readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
        .sort();
    const expectedFiles = files(caches[0]);
    assert.ok(expectedFiles.includes(RESIZE_MANIFEST));
    for (const [k, run] of others.entries()) {
      const what = `${WORKER_COUNTS[k + 1]} worker(s)`;
      assert.equal(run.resized, inProcess.resized, what);
      assert.equal(run.problems, inProcess.problems, what);
      assert.equal(run.stats, inProcess.stats, what);
      assert.equal(files(caches[k + 1]), expectedFiles, what);
      for (const f of expectedFiles)
        assert.ok(readFileSync(path.join(caches[k + 1], f)).equals(readFileSync(path.join(caches[0], f))), `${what}: ${f} byte for byte`);
    }
  } finally {
    for (const c of caches) rmSync(c, { recursive: true, force: true });
  }
});

test('training data with an image cache on workers: same data as in-process; close() stops the workers', async () => {
  const caches: string[] = [];
  try {
    const runs = [];
    for (const threads of [0, 2]) {
      const cache = mkdtempSync(path.join(tmpdir(), 'lovt-workers-cache-'));
      caches.push(cache);
      const data = await openTrainingData(nodeFileSource(root), {
        batch: 3,
        seed: 4,
        imageSize: 16,
        maxTokens: 48,
        maxSentences: 6,
        imageCache: nodeFileSource(cache),
        resizeMaxSide: 20,
        imageWorkers: createImageWorkers(threads),
      });
      const batches = [...(await collect(data.train.epoch(0))), ...(await collect(data.validate!.epoch(0)))];
      runs.push({ batches: exactly(batches), norm: data.norm, problems: data.dataset.problemCounts(), resized: data.resized });
      await data.close();
      if (threads > 0) await rejectsWith(collect(data.train.epoch(1)), /image workers: a job was submitted after close\(\)/);
    }
    assert.equal(runs[1], runs[0]);
  } finally {
    for (const c of caches) rmSync(c, { recursive: true, force: true });
  }
});

test('a job that throws (not a bad file) rejects with the in-process message', async () => {
  const dataset = await MimicCxrDataset.open(nodeFileSource(root), { tokenizer });
  const study = dataset.split('validate')[0];
  const messages: string[] = [];
  for (const threads of [0, 1]) {
    const workers = createImageWorkers(threads);
    try {
      await loaderOf(dataset, workers, 'validate', { norm: { mean: 0, std: 0 } }).prepare(study, 0);
      assert.unreachable('std 0 is rejected');
    } catch (err) {
      messages.push((err as Error).message);
    } finally {
      await workers.close();
    }
  }
  assert.equal(messages, ['normalization std must be positive, got 0', 'normalization std must be positive, got 0']);
});

test('a worker that dies fails the loader with a clear error instead of hanging, and so does every later job', async () => {
  const dataset = await MimicCxrDataset.open(nodeFileSource(root), { tokenizer });
  // A heap too small to even load the worker module: the thread dies out of memory.
  const workers = createImageWorkers(1, { resourceLimits: { maxOldGenerationSizeMb: 2, maxYoungGenerationSizeMb: 1 } });
  try {
    const started = performance.now();
    await rejectsWith(
      collect(loaderOf(dataset, workers, 'train').epoch(0)),
      /image worker thread 1 of 1 stopped unexpectedly \(.*out of memory\) while loading files\//,
    );
    await rejectsWith(workers.run(nodeFileSource(root), { kind: 'moments', path: corrupt.truncated }), /image worker thread 1 of 1 stopped unexpectedly/);
    assert.ok(performance.now() - started < 30_000);
  } finally {
    await workers.close();
  }
});

const NODE_WORKERS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../runtime/platform/node-workers.ts');

test('a pool never keeps the process alive: it exits after close(), and with idle workers never closed', () => {
  for (const closeIt of [true, false]) {
    const script = `
      import { createImageWorkers } from ${JSON.stringify(NODE_WORKERS)};
      import { nodeFileSource } from ${JSON.stringify(path.join(path.dirname(NODE_WORKERS), 'node-fs.ts'))};
      const workers = createImageWorkers(2);
      const source = nodeFileSource(${JSON.stringify(root)});
      const results = await Promise.all([0, 1, 2, 3].map(() => workers.run(source, { kind: 'moments', path: ${JSON.stringify(corrupt.truncated)} })));
      console.log(results.map((r) => r.failures[0].kind).join(','));
      ${closeIt ? 'await workers.close();' : ''}
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.is(child.signal, null, `${closeIt ? 'closed' : 'unclosed'} pool: the process exited by itself (stderr: ${child.stderr})`);
    assert.is(child.status, 0, child.stderr);
    assert.is(child.stdout.trim(), 'undecodable-image,undecodable-image,undecodable-image,undecodable-image');
  }
});

test('sources that are not a local directory run in the calling thread, with the same results', async () => {
  // Which sources the workers read themselves: a directory, or a subdirectory of one (the resize cache).
  assert.is(localDirectory(nodeFileSource(root)), root);
  assert.is(localDirectory(new SubdirFileSource(nodeFileSource(root), 'cache/resized-8')), path.join(root, 'cache', 'resized-8'));
  assert.is(localDirectory(new SubdirFileSource(new MemoryFileSource(), 'resized-8')), undefined);
  const memory = new MemoryFileSource({ 'a.jpg': readFileSync(path.join(root, ...corrupt.truncated.split('/'))), 'b.txt': 'text' });
  const workers = createImageWorkers(2);
  try {
    for (const p of ['a.jpg', 'b.txt', 'missing.jpg']) {
      assert.equal(await workers.run(memory, { kind: 'moments', path: p }), await IN_PROCESS.run(memory, { kind: 'moments', path: p }));
    }
  } finally {
    await workers.close();
  }
});

test('lovt-run --data-workers takes a whole number >= 0', () => {
  for (const command of ['train', 'demo']) {
    assertOneLineError(
      lovtRun([command, ...(command === 'train' ? ['models/lovt-tiny.lovt'] : []), '--data-workers', '-1']),
      /--data-workers must be a whole number >= 0, got '-1'/,
    );
  }
});

test.run();
