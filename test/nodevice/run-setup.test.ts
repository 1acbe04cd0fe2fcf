// Run setup without a GPU, calling the modules the CLI calls (runtime/train/run-setup.ts,
// runtime/platform/node-model.ts): the MODEL argument (a source, a lovtc artifact, or
// something else named as what it is), artifacts equal to the source's compile, their
// IR version and data checks with the lovtc command that fixes them, and the resume
// rules (same content, same resolved values, same artifact).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLovtc } from '../../bin/lovtc.ts';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import { IR_VERSION } from '../../compiler/ir.ts';
import { openModel } from '../../runtime/platform/node-model.ts';
import { imageWorkerThreads } from '../../runtime/platform/node-workers.ts';
import type { CheckpointManifest } from '../../runtime/train/checkpoint.ts';
import { checkDataFits, checkResumeModel, fitVocabulary, resumeData, resumeSet, setKeepsValue, type DataRequest } from '../../runtime/train/run-setup.ts';
import type { CompiledModel } from '../../runtime/train/trainer.ts';

const MODEL = fileURLToPath(new URL('../gpu/tiny-clip.lovt', import.meta.url));
const work = mkdtempSync(path.join(os.tmpdir(), 'lovt-setup-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

async function lovtc(...args: string[]): Promise<void> {
  let err = '';
  const code = await runLovtc(args, { stdout: () => {}, stderr: (s) => (err += s) });
  if (code !== 0) throw new Error(`lovtc ${args.join(' ')}: ${err}`);
}

function failure(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a failure');
}

/** The manifest fields a resume compares, as the trainer records them for `model` trained with `set`. */
function manifestOf(model: CompiledModel, set: Record<string, string>, path: string, artifact?: string): CheckpointManifest {
  return {
    model: { name: model.model.name, path, sourceHash: model.model.sourceHash, ...(artifact ? { artifact } : {}) },
    set,
    config: Object.fromEntries(Object.entries(model.model.configs).map(([k, v]) => [k, v.value])),
    train: { ...model.model.train, stepsPerEpoch: 3 },
    data: { spec: 'synth', kind: 'synth', studies: 24, seed: 3, statsSample: 4000 },
  } as unknown as CheckpointManifest;
}

test('MODEL: a missing path, a device and a directory without graph.json are named as what they are', () => {
  assert.is(
    failure(() => openModel(path.join(work, 'nope.lovt'))),
    `cannot read the model ${path.join(work, 'nope.lovt')}: no such file or directory`,
  );
  assert.is(
    failure(() => openModel('/dev/null')),
    'the model /dev/null is a character device, not a .lovt file or a lovtc artifact directory',
  );
  assert.is(
    failure(() => openModel(work)),
    `${work} is a directory without graph.json: neither a .lovt file nor a lovtc artifact (write one with \`lovtc MODEL.lovt -o ${work}\`)`,
  );
});

test('a lovtc artifact trains the graphs the source compiles to (train and eval), and records its options', async () => {
  const dir = path.join(work, 'art');
  await lovtc(MODEL, '-o', dir, '--set', 'vocab_size=40', '--set', 'tau=0.2');
  const art = openModel(dir, { needsEval: true });
  assert.equal(art.artifact!.set, { vocab_size: '40', tau: '0.2' });
  assert.match(art.artifact!.sha256, /^[0-9a-f]{64}$/);
  const set = { vocab_size: '40', tau: '0.2' };
  for (const mode of ['train', 'eval'] as const) {
    const fromSource = compileModelOrThrow({ path: MODEL }, { mode, set });
    const fromArtifact = art.compile({}, mode);
    assert.equal(fromArtifact.graph, JSON.parse(JSON.stringify(fromSource.graph)), `${mode} graph`);
    assert.equal(fromArtifact.model.configs, fromSource.model.configs);
    assert.is(fromArtifact.model.mode, mode);
  }
  // A --set that restates a value is fine; one that changes it names the lovtc command.
  assert.ok(art.compile({ tau: '0.20', vocab_size: '40', 'train.seed': '7' }, 'train'));
  assert.is(
    failure(() => art.compile({ tau: '0.5' }, 'train')),
    `${dir} is compiled already and --set tau=0.5 would change it: recompile with \`lovtc ${MODEL} -o ${dir} --set vocab_size=40 --set tau=0.5\``,
  );
  assert.is(
    failure(() => openModel(dir, { model: 'Other' })),
    `${dir} holds the model TinyClip, not Other (--model): compile Other with lovtc --model Other`,
  );
});

test('an artifact of another IR version, or compiled for eval, is refused with the command that rebuilds it', async () => {
  const dir = path.join(work, 'old-ir');
  await lovtc(MODEL, '-o', dir, '--set', 'vocab_size=40');
  const file = path.join(dir, 'graph.json');
  const art = JSON.parse(readFileSync(file, 'utf8'));
  writeFileSync(file, JSON.stringify({ ...art, irVersion: IR_VERSION + 1, compiler: 'lovtc 9.9.9' }));
  assert.is(
    failure(() => openModel(dir)),
    `${file} was compiled by lovtc 9.9.9 for IR version ${IR_VERSION + 1}; this lovt reads IR version ${IR_VERSION}: recompile with \`lovtc ${MODEL} -o ${dir} --set vocab_size=40\``,
  );
  writeFileSync(file, '{"format": "lovt-graph", "irVers');
  assert.match(
    failure(() => openModel(dir)),
    new RegExp(`^${file} is not valid JSON \\(.*\\): rebuild the artifact with \`lovtc MODEL.lovt -o ${dir}\`$`),
  );
  const evalDir = path.join(work, 'eval-art');
  await lovtc(MODEL, '-o', evalDir, '--mode', 'eval');
  assert.is(
    failure(() => openModel(evalDir)),
    `${path.join(evalDir, 'graph.json')} was compiled with --mode eval; lovt-run train and loss need a train-mode artifact: recompile with \`lovtc ${MODEL} -o ${evalDir}\``,
  );
});

test('the data must fit an artifact: vocabulary and input sizes, each error with the lovtc command', async () => {
  const dir = path.join(work, 'vocab');
  await lovtc(MODEL, '-o', dir);
  const art = openModel(dir);
  const model = art.compile({}, 'train');
  assert.is(
    failure(() => fitVocabulary(art, {}, model, { size: 57, where: 'DATA/vocab.txt' })),
    `${dir} was compiled with vocab_size 64, but the data's vocabulary (DATA/vocab.txt) has 57 tokens: recompile with \`lovtc ${MODEL} -o ${dir} --set vocab_size=57\``,
  );
  assert.is(fitVocabulary(art, {}, model, { size: 64, where: 'v' }).model, model);
  // A source is refitted instead (recompiled with the vocabulary's size).
  const src = openModel(MODEL);
  const refit = fitVocabulary(src, {}, src.compile({}, 'train'), { size: 57, where: 'v' });
  assert.equal(refit.set, { vocab_size: '57' });
  assert.is(refit.model.model.configs.vocab_size.value, 57);
  assert.is(
    failure(() => fitVocabulary(src, { vocab_size: '50' }, src.compile({ vocab_size: '50' }, 'train'), { size: 57, where: 'v' })),
    "vocab_size 50 is smaller than the vocabulary's 57 tokens (v)",
  );

  // An artifact whose configs disagree with its inputs (edited by hand): the data would not fit.
  const file = path.join(dir, 'graph.json');
  const json = JSON.parse(readFileSync(file, 'utf8'));
  json.model.configs.image_size.value = 32;
  writeFileSync(file, JSON.stringify(json));
  const edited = openModel(dir);
  assert.is(
    failure(() => checkDataFits(edited, edited.compile({}, 'train'))),
    `the data does not fit ${dir} (batch 4, image_size 32, max_tokens 16): image is [4, 3, 16, 16] in the model, [4, 3, 32, 32] from the data: ` +
      `recompile with \`lovtc ${MODEL} -o ${dir}\` and the sizes you want`,
  );
});

test('resume: the same model content at another path and a --set restating a value continue; a change is refused', () => {
  const set = { vocab_size: '40' };
  const original = openModel(MODEL).compile(set, 'train');
  const manifest = manifestOf(original, set, MODEL);
  // The same file elsewhere (and its std imports from the same library) is the same model.
  const moved = path.join(work, 'moved', 'clip.lovt');
  mkdirSync(path.dirname(moved), { recursive: true });
  copyFileSync(MODEL, moved);
  const copy = openModel(moved);
  const restated = resumeSet(manifest, copy, { tau: '0.10', batch: '4' });
  assert.equal(restated, { vocab_size: '40', tau: '0.10', batch: '4' });
  checkResumeModel(manifest, copy, copy.compile(restated, 'train'), 'RUN');
  assert.is(
    failure(() => checkResumeModel(manifest, copy, copy.compile(resumeSet(manifest, copy, { tau: '0.5', 'train.optimizer.lr': '0.001' }), 'train'), 'RUN')),
    'RUN was started with tau = 0.1, train.optimizer.lr = 0.01; a resume cannot change it to tau = 0.5, train.optimizer.lr = 0.001 (drop the --set, or start a new run)',
  );
  writeFileSync(moved, readFileSync(MODEL, 'utf8').replace('config p_drop: float = 0.2', 'config p_drop: float = 0.2 // edited'));
  assert.is(
    failure(() => checkResumeModel(manifest, openModel(moved), openModel(moved).compile(set, 'train'), 'RUN')),
    `RUN was trained from the source ${MODEL}; ${moved} (or one of its imports) has different content: resume needs the same model source`,
  );
});

test('resume: an artifact run continues only with the same artifact (by hash, wherever it is), never with a source', async () => {
  const a = path.join(work, 'res-a');
  const b = path.join(work, 'res-b');
  await lovtc(MODEL, '-o', a, '--set', 'vocab_size=40');
  await lovtc(MODEL, '-o', b, '--set', 'vocab_size=41');
  const artA = openModel(a);
  const model = artA.compile({}, 'train');
  const manifest = manifestOf(model, artA.artifact!.set, a, artA.artifact!.sha256);
  const copy = path.join(work, 'res-a-copy');
  mkdirSync(copy);
  copyFileSync(path.join(a, 'graph.json'), path.join(copy, 'graph.json'));
  checkResumeModel(manifest, openModel(copy), openModel(copy).compile({}, 'train'), 'RUN');
  const sha = (h: string) => `${h.slice(0, 12)}…`;
  const artB = openModel(b);
  assert.is(
    failure(() => checkResumeModel(manifest, artB, artB.compile({}, 'train'), 'RUN')),
    `RUN was trained from the lovtc artifact ${a} (sha256 ${sha(artA.artifact!.sha256)}); this resume gives the lovtc artifact ${b} (sha256 ${sha(artB.artifact!.sha256)}): resume with the model the run trained`,
  );
  const src = openModel(MODEL);
  assert.is(
    failure(() => checkResumeModel(manifest, src, src.compile({ vocab_size: '40' }, 'train'), 'RUN')),
    `RUN was trained from the lovtc artifact ${a} (sha256 ${sha(artA.artifact!.sha256)}); this resume gives the source ${MODEL}: resume with the model the run trained`,
  );
  // And the other way round: a source run resumed with an artifact.
  const srcManifest = manifestOf(src.compile({ vocab_size: '40' }, 'train'), { vocab_size: '40' }, MODEL);
  assert.match(
    failure(() => checkResumeModel(srcManifest, artA, model, 'RUN')),
    /^RUN was trained from the source .*tiny-clip\.lovt; this resume gives the lovtc artifact /,
  );
});

test('resume keeps the data it was trained on; --init and another data set are refused', () => {
  const manifest = manifestOf(openModel(MODEL).compile({}, 'train'), {}, MODEL);
  const req: DataRequest & { init: string[] } = { studies: 200, synthSeed: 0, init: [], explicit: new Set<string>() };
  const r = resumeData(manifest, req, 'RUN');
  assert.is(r.dataSpec, 'synth');
  assert.equal([r.request.studies, r.request.synthSeed, r.request.statsSample], [24, 3, 4000]);
  assert.is(
    failure(() => resumeData(manifest, { ...req, init: ['image_encoder=x.safetensors'] }, 'RUN')),
    '--init only applies to a new run (the checkpoint already holds every weight)',
  );
  assert.is(
    failure(() => resumeData(manifest, { ...req, data: 'mimic:/x' }, 'RUN')),
    'RUN was trained on --data synth, not mimic:/x',
  );
  assert.is(
    failure(() => resumeData(manifest, { ...req, studies: 50, explicit: new Set(['studies']) }, 'RUN')),
    'RUN was trained with --studies 24, not 50',
  );
});

test('setKeepsValue compares resolved values, not spellings', () => {
  const { model } = openModel(MODEL).compile({}, 'train');
  assert.ok(setKeepsValue(model, 'tau', '0.1') && setKeepsValue(model, 'tau', '1e-1') && setKeepsValue(model, 'batch', '4'));
  assert.ok(setKeepsValue(model, 'train.optimizer.lr', '0.01') && setKeepsValue(model, 'train.seed', '7'));
  assert.not.ok(setKeepsValue(model, 'tau', '0.2') || setKeepsValue(model, 'tau', '') || setKeepsValue(model, 'train.optimizer', 'adamw(lr: 1e-2)'));
});

test('--data-workers is capped at the core count, saying so', () => {
  const cores = os.availableParallelism();
  assert.equal(imageWorkerThreads(1000), {
    threads: cores,
    note: `--data-workers 1000 is more than this machine's ${cores} cores: using ${cores} worker threads`,
  });
  assert.equal(imageWorkerThreads(0), { threads: 0 });
  assert.equal(imageWorkerThreads(cores), { threads: cores });
});

test.run();
