// lovt-run grounding end to end: a one-step LoVT-tiny run (at 64 px)
// on a small SynthCXR, then the grounding of its test split. The pairs it scores are
// counted again from synth-annotations.json and the split file, and the attention column
// of every scored sentence is compared with the eval program's output on the batches the
// training data pipeline (BatchLoader) prepares for the same studies.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { optimize } from '../../compiler/passes/index.ts';
import { collateBatch } from '../../runtime/data/batch.ts';
import { decodeMaybeGzip, parseCsv } from '../../runtime/data/csv.ts';
import { BatchLoader } from '../../runtime/data/loader.ts';
import { Program } from '../../runtime/executor.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';
import { NodeFileSource, writeSynthDataset } from '../../runtime/platform/node-fs.ts';
import { nodeStorage } from '../../runtime/platform/node-storage.ts';
import { StateStore } from '../../runtime/state.ts';
import { loadCheckpoint } from '../../runtime/train/checkpoint.ts';
import { openTrainingData } from '../../runtime/train/data-setup.ts';
import { programInputs } from '../../runtime/train/trainer.ts';
import { lovtRun } from '../lovt-run.ts';
import { compile } from '../nodevice/model-helpers.ts';

// LoVT-tiny at 64 px (a 2×2 region grid), its other sizes as they are: batch 8, T = 64, S = 8.
const SET = { batch: 8, image_size: 64, max_tokens: 64, max_sentences: 8 };

const work = mkdtempSync(path.join(tmpdir(), 'lovt-grounding-'));
const dataDir = path.join(work, 'synth');
const run = path.join(work, 'run');
const jsonFile = path.join(work, 'grounding.json');

test.before(async () => {
  await writeSynthDataset(dataDir, { studies: 40, seed: 8, imageSize: 64, splitFractions: [0.5, 0.2, 0.3] });
});

test.after(() => rmSync(work, { recursive: true, force: true }));

test('lovt-run grounding scores every test-split sentence naming a drawn finding, as the annotations count them', () => {
  const sets = ['--set', `image_size=${SET.image_size}`];
  const trained = lovtRun(['train', 'models/lovt-tiny.lovt', '--data', `mimic:${dataDir}`, ...sets, '--steps', '1', '--out', run, '--no-report'], 900_000);
  assert.is(trained.code, 0, trained.stderr);
  const r = lovtRun(['grounding', run, '--json', jsonFile], 600_000);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^finding\s+n\s+pointing game\s+chance\s+CNR \(n\)$/m);
  assert.match(r.stdout, /^overall\s+\d+\s+\d+\.\d %\s+\d+\.\d %\s+(\d+\.\d\d|–) \(\d+\)$/m);
  const result = JSON.parse(readFileSync(jsonFile, 'utf8'));
  assert.match(
    r.stdout,
    new RegExp(
      `pointing game \\d+\\.\\d % \\(chance \\d+\\.\\d %\\), CNR .*, over ${result.overall.n} sentence–finding pairs \\(\\d+ findings\\) in ${result.images} test images`,
    ),
  );

  // Independently: test-split studies (split file), their images' visible findings (area > 0), each linked sentence.
  const split = parseCsv(decodeMaybeGzip(readFileSync(path.join(dataDir, 'mimic-cxr-2.0.0-split.csv.gz')), 'split.csv.gz'));
  const testStudies = new Set(split.rows.filter((row) => row.split === 'test').map((row) => row.study_id));
  const ann = JSON.parse(readFileSync(path.join(dataDir, 'synth-annotations.json'), 'utf8'));
  const pairs = new Map<string, string>();
  for (const study of ann.studies) {
    if (!testStudies.has(study.study_id)) continue;
    for (const image of study.images) {
      for (const drawn of image.findings) {
        if (drawn.area === 0) continue;
        for (const s of study.findings[drawn.finding].sentences)
          pairs.set(`p${study.subject_id}/s${study.study_id}/${image.dicom_id}|${s}`, study.sentences[s]);
      }
    }
  }
  assert.ok(result.overall.n > 0, 'something was scored');
  assert.is(result.overall.n + result.truncated, pairs.size);
  for (const s of result.sentences) {
    assert.is(pairs.get(`${s.image}|${s.sentence}`), s.text, `${s.image} sentence ${s.sentence}`);
    // Slots beyond max_sentences never hold a sentence.
    assert.ok(s.sentence < SET.max_sentences);
  }
  assert.is(result.images, new Set(result.sentences.map((s: { image: string }) => s.image)).size);
  assert.is(result.grid, 2);
});

test('the attention columns are the eval program’s attention_r2i on the data pipeline’s batches of the same studies', async () => {
  const result = JSON.parse(readFileSync(jsonFile, 'utf8'));
  const { manifest, tensors } = await loadCheckpoint(nodeStorage(run), 'last');
  const model = compile({ file: 'lovt-tiny.lovt' }, { mode: 'eval', set: manifest.set });
  // As training opened the data: --data mimic:DIR reads the copies in DIR/lovt-cache.
  const data = await openTrainingData(new NodeFileSource(dataDir), {
    batch: SET.batch,
    seed: manifest.seed,
    imageSize: SET.image_size,
    maxTokens: SET.max_tokens,
    maxSentences: SET.max_sentences,
    imageCache: new NodeFileSource(path.join(dataDir, 'lovt-cache')),
  });
  const device = await getNodeDevice();
  const store = new StateStore(device);
  const program = await Program.create(device, optimize(model.graph), store, { label: 'eval' });
  try {
    for (const s of Object.values(model.graph.state)) store.upload(s.name, tensors.get(s.name)!.data);
    // Studies with one frontal image: the loader's image draw cannot pick another one.
    const scored = new Set(result.sentences.map((s: { image: string }) => s.image.split('/').slice(0, 2).join('/')));
    const studies = data.dataset.split('test').filter((st) => st.imagePaths.length === 1 && scored.has(`p${st.subjectId}/s${st.studyId}`));
    assert.ok(studies.length > 0);
    const loader = new BatchLoader(data.dataset, studies, data.tokenizer, {
      batchSize: SET.batch,
      seed: manifest.seed,
      train: false,
      norm: data.norm,
      imageSize: SET.image_size,
      maxLength: SET.max_tokens,
      maxSentences: SET.max_sentences,
    });
    let compared = 0;
    for (let start = 0; start < studies.length; start += SET.batch) {
      const chunk = studies.slice(start, start + SET.batch);
      const samples = await Promise.all(chunk.map((st) => loader.prepare(st, 0)));
      while (samples.length < SET.batch) samples.push(samples[0]);
      const batch = collateBatch(
        samples.map((s) => s!),
        { maxLength: SET.max_tokens, maxSentences: SET.max_sentences, clsId: data.tokenizer.clsId, sepId: data.tokenizer.sepId, padId: data.tokenizer.padId },
      );
      const P = (await program.run(programInputs(program.graph, batch), ['attention_r2i'])).attention_r2i;
      const [, K, S] = [SET.batch, 4, SET.max_sentences];
      chunk.forEach((st, b) => {
        for (const s of result.sentences.filter((x: { image: string }) => x.image.startsWith(`p${st.subjectId}/s${st.studyId}/`))) {
          const want = Array.from({ length: K }, (_, k) => P[(b * K + k) * S + s.sentence]);
          for (let k = 0; k < K; k++)
            assert.ok(Math.abs(s.attention[k] - want[k]) <= 1e-6, `${s.image} sentence ${s.sentence} region ${k}: ${s.attention[k]} vs ${want[k]}`);
          compared++;
        }
      });
    }
    assert.ok(compared > 0);
  } finally {
    program.destroy();
    store.destroy();
    await data.close();
  }
});

test.run();
