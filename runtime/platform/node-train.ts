// The lovt-run commands that train and evaluate, on Node: everything between the
// parsed command line and the trainer. The run directory is opened and locked
// first (node-run-dir.ts), then the model (a source or a lovtc artifact,
// node-model.ts) is compiled, the data prepared (the SynthCXR cache, or a MIMIC
// directory with its image cache), the vocabulary fitted, and the trainer run; the
// platform-neutral decisions are runtime/train/run-setup.ts's. Output goes through
// the caller's RunOutput, so bin/lovt-run.ts only wires options and draws progress.

import { writeFile } from 'node:fs/promises';
import nodePath from 'node:path';
import { parseSetArgs } from '../../compiler/frontend/index.ts';
import { checkMimicRoot } from '../data/mimic.ts';
import { ReportTokenizer } from '../data/tokenizer.ts';
import { writeSafetensors, type HostTensor } from '../safetensors.ts';
import { loadCheckpoint, readManifest, type CheckpointTag, type LoadedCheckpoint } from '../train/checkpoint.ts';
import { DEFAULT_RESIZE_MAX_SIDE, DEFAULT_STATS_SAMPLE_SIZE, DEFAULT_VOCAB, openTrainingData } from '../train/data-setup.ts';
import { evaluateLosses } from '../train/evaluate.ts';
import {
  checkDataFits,
  checkResumeModel,
  exportImageEncoder,
  fitVocabulary,
  formatLoss,
  formatLosses,
  intConfig,
  resumeData,
  resumeSet,
  writeRunReport,
  type DataRequest,
  type ModelSource,
} from '../train/run-setup.ts';
import { Trainer, type CompiledModel, type TrainEvent, type TrainResult } from '../train/trainer.ts';
import { matchInitWeights, parseInitArg } from '../train/weights.ts';
import { getNodeDevice } from './node.ts';
import { makeDirectory, NodeFileSource, readRegularFile, readSafetensorsFile as readBoundedSafetensors } from './node-fs.ts';
import { openModel } from './node-model.ts';
import { openRunDirectory, timestamp } from './node-run-dir.ts';
import { cacheRoot, ensureSynthDataset, nodeStorage, type NodeStorage } from './node-storage.ts';
import { createImageWorkers, imageWorkerThreads } from './node-workers.ts';

export { formatLoss, formatLosses, timestamp };

/** Where the commands report: lines, setup-stage progress and the trainer's events. */
export interface RunOutput {
  say(text: string): void;
  /** Progress of a setup stage (generating SynthCXR, resizing images, pixel statistics). */
  stage?(name: string, done: number, total: number): void;
  /** The setup stages are over. */
  stagesDone?(): void;
  onEvent?(e: TrainEvent): void;
}

export interface TrainOptions extends DataRequest {
  model?: string;
  imageCache?: string;
  /** Image decoding threads (default: cores − 1); 0 decodes in the main thread. */
  dataWorkers?: number;
  vocab?: string;
  steps?: number;
  epochs?: number;
  batch?: number;
  accumulate?: number;
  set: string[];
  seed?: number;
  out?: string;
  /** A new run in a directory holding a run first moves that run to DIR.old-<time>. */
  overwrite?: boolean;
  checkpointEvery?: number;
  resume?: string;
  init: string[];
  minutes?: number;
  valBatches?: number;
  report: boolean;
  heatmapStudies: number;
  /** Shown in report.md and in the run directory's lock. */
  command?: string;
}

/** Default image cache of --data mimic:DIR, inside DIR. */
export const IMAGE_CACHE_DIR = 'lovt-cache';

/** `synth` or `mimic:DIR`. */
export function parseDataSpec(spec: string): { kind: 'synth' } | { kind: 'mimic'; dir: string } {
  if (spec === 'synth') return { kind: 'synth' };
  const m = /^mimic:(.+)$/.exec(spec);
  if (m) return { kind: 'mimic', dir: nodePath.resolve(m[1]) };
  throw new Error(`--data expects 'synth' or 'mimic:DIR' (a MIMIC-CXR-JPG root), got '${spec}'`);
}

/** The --set overrides with the --batch, --accumulate and --seed shorthands. */
function requestedSet(o: TrainOptions): Record<string, string> {
  const set = parseSetArgs(o.set);
  if (o.batch !== undefined) set.batch = String(o.batch);
  if (o.accumulate !== undefined) set['train.accumulate'] = String(o.accumulate);
  if (o.seed !== undefined) set['train.seed'] = String(o.seed);
  return set;
}

export async function readSafetensorsFile(file: string, what: string): Promise<Map<string, HostTensor>> {
  return (await readBoundedSafetensors(file, `${what} ${file}`)).tensors;
}

/** The directory of the cached SynthCXR of `--studies` and `--synth-seed` at `imageSize` (generated when missing). */
export async function cachedSynth(
  o: { studies: number; synthSeed: number },
  imageSize: number,
  out: Pick<RunOutput, 'say' | 'stage' | 'stagesDone'>,
): Promise<string> {
  out.say(`SynthCXR: ${o.studies} studies, seed ${o.synthSeed}, ${imageSize} px (cached under ${cacheRoot()})`);
  const r = await ensureSynthDataset(cacheRoot(), {
    studies: o.studies,
    seed: o.synthSeed,
    imageSize,
    onProgress: (d, t) => out.stage?.('generating SynthCXR', d, t),
  });
  out.stagesDone?.();
  if (!r.generated) out.say(`reusing ${r.dir}`);
  return r.dir;
}

/**
 * The data directory (generating SynthCXR when asked), the report encoder's tokenizer, and
 * for MIMIC the image cache (resized copies and pixel statistics, reused by later runs).
 */
export async function prepareData(dataSpec: string, o: TrainOptions, imageSize: number, out: RunOutput) {
  const data = parseDataSpec(dataSpec);
  const statsSample = o.statsSample ?? DEFAULT_STATS_SAMPLE_SIZE;
  const resize = o.resize ?? DEFAULT_RESIZE_MAX_SIDE;
  const info: Record<string, unknown> = { spec: dataSpec, statsSample };
  let dir: string;
  let imageCache: NodeFileSource | undefined;
  if (data.kind === 'synth') {
    if (o.imageCache || o.explicit?.has('resize'))
      throw new Error("--image-cache and --resize apply to --data mimic:DIR (SynthCXR images are generated at the model's size)");
    dir = await cachedSynth(o, imageSize, out);
    Object.assign(info, { kind: 'synth', studies: o.studies, seed: o.synthSeed, imageSize, dir });
  } else {
    dir = data.dir;
    // Nothing (the image cache) is created for a directory that is not a MIMIC root.
    await checkMimicRoot(new NodeFileSource(dir));
    const cacheDir = nodePath.resolve(o.imageCache ?? nodePath.join(dir, IMAGE_CACHE_DIR));
    await makeDirectory(cacheDir, 'the image cache').catch((e: Error) => {
      throw new Error(`${e.message}; choose a writable directory with --image-cache DIR`);
    });
    imageCache = new NodeFileSource(cacheDir);
    out.say(`image cache: ${cacheDir} (images resized to ${resize} px once, reused by later runs)`);
    Object.assign(info, { kind: 'mimic', dir, resize });
  }
  const source = new NodeFileSource(dir);
  let tokenizer: ReportTokenizer;
  let vocabWhere: string;
  if (o.vocab) {
    const text = new TextDecoder().decode(await readRegularFile(o.vocab, `--vocab ${o.vocab}`));
    tokenizer = o.vocab.endsWith('.json') ? ReportTokenizer.fromTokenizerJson(text, {}, o.vocab) : ReportTokenizer.fromVocabText(text, {}, o.vocab);
    vocabWhere = o.vocab;
  } else {
    if (!(await source.exists(DEFAULT_VOCAB))) {
      throw new Error(`${dir} has no ${DEFAULT_VOCAB}: give the report encoder's BERT vocabulary with --vocab FILE (vocab.txt or tokenizer.json)`);
    }
    tokenizer = await ReportTokenizer.load(source, DEFAULT_VOCAB);
    vocabWhere = nodePath.join(dir, DEFAULT_VOCAB);
  }
  return { source, tokenizer, vocabWhere, info, imageCache, resize, statsSample };
}

/** The --init tensors by state name, matched against the model (every mismatch named). */
async function loadInitWeights(args: string[], model: CompiledModel, out: RunOutput): Promise<Map<string, HostTensor>> {
  const init = new Map<string, HostTensor>();
  for (const arg of args) {
    const { prefix, file } = parseInitArg(arg);
    const r = matchInitWeights(model.graph.state, prefix, await readSafetensorsFile(file, '--init file'), file);
    for (const [k, v] of r.tensors) init.set(k, v);
    const ignored = r.ignored.length ? ` (ignored ${r.ignored.length}: ${r.ignored.slice(0, 4).join(', ')}${r.ignored.length > 4 ? ', …' : ''})` : '';
    out.say(`--init ${prefix}: ${r.tensors.size} tensors from ${file}${ignored}`);
  }
  return init;
}

/** `lovt-run train MODEL`: a new run, or a resume; returns when training stopped. */
export async function trainCommand(modelPath: string, o: TrainOptions, out: RunOutput): Promise<TrainResult> {
  if (o.steps !== undefined && o.epochs !== undefined) throw new Error('give --steps or --epochs, not both');
  if (o.resume && o.out && nodePath.resolve(o.out) !== nodePath.resolve(o.resume))
    throw new Error(`--resume ${o.resume} continues in that directory; drop --out ${o.out}`);
  if (o.resume && o.overwrite) throw new Error('--overwrite starts a new run and --resume continues one: give one of them');
  const requested = requestedSet(o);
  if (o.data !== undefined) parseDataSpec(o.data);
  const source = openModel(modelPath, { model: o.model, needsEval: true });
  const workers = imageWorkerThreads(o.dataWorkers);
  if (workers.note) out.say(workers.note);
  const name = nodePath.basename(nodePath.resolve(modelPath)).replace(/\.lovt$/, '');
  const run = await openRunDirectory(o.resume ?? o.out ?? nodePath.join('runs', `${name}-${timestamp()}`), {
    resume: !!o.resume,
    overwrite: o.overwrite,
    command: o.command,
  });
  try {
    for (const note of run.notes) out.say(note);
    return await trainInRun(source, o, requested, run.dir, run.storage, workers, out);
  } finally {
    await run.release();
  }
}

async function trainInRun(
  source: ModelSource,
  options: TrainOptions,
  requested: Record<string, string>,
  runDir: string,
  storage: NodeStorage,
  workers: { threads: number },
  out: RunOutput,
): Promise<TrainResult> {
  let o = options;
  let set = requested;
  let dataSpec = o.data ?? 'synth';
  let resumeFrom: LoadedCheckpoint | null = null;
  // A first compile gives the data shapes; the vocabulary may then change vocab_size.
  let trainModel: CompiledModel;
  if (o.resume) {
    const manifest = await readManifest(storage, 'last');
    ({ dataSpec, request: o } = resumeData(manifest, o, runDir));
    set = resumeSet(manifest, source, requested);
    trainModel = source.compile(set, 'train');
    checkResumeModel(manifest, source, trainModel, runDir);
    // The run keeps its recorded recipe (a restated --set changed no value).
    set = { ...manifest.set };
    resumeFrom = await loadCheckpoint(storage, 'last');
  } else {
    trainModel = source.compile(set, 'train');
  }
  if (source.artifact) set = { ...source.artifact.set };
  const {
    source: files,
    tokenizer,
    vocabWhere,
    info: dataInfo,
    imageCache,
    resize,
    statsSample,
  } = await prepareData(dataSpec, o, intConfig(trainModel, 'image_size'), out);
  ({ model: trainModel, set } = fitVocabulary(source, set, trainModel, { size: tokenizer.vocabSize, where: vocabWhere }));
  checkDataFits(source, trainModel);
  const evalModel = source.compile(set, 'eval');
  const spec = trainModel.model.train;
  // The batches do not depend on the thread count, so a resume may use another one.
  const imageWorkers = createImageWorkers(workers.threads);
  out.say(
    `images decoded, resized and augmented ${imageWorkers.threads > 0 ? `on ${imageWorkers.threads} worker thread${imageWorkers.threads > 1 ? 's' : ''}` : 'in the main thread'} (--data-workers)`,
  );
  const training = await openTrainingData(files, {
    batch: intConfig(trainModel, 'batch'),
    seed: spec.seed,
    imageSize: intConfig(trainModel, 'image_size'),
    maxTokens: intConfig(trainModel, 'max_tokens'),
    maxSentences: intConfig(trainModel, 'max_sentences'),
    vocab: tokenizer,
    reportText: trainModel.model.configs.report_text?.value,
    imageCache,
    resizeMaxSide: resize,
    statsSampleSize: statsSample,
    imageWorkers,
    onProgress: out.stage?.bind(out),
  }).finally(() => out.stagesDone?.());
  try {
    out.say(`data: ${training.description}`);
    const init = o.init.length ? await loadInitWeights(o.init, trainModel, out) : undefined;
    const device = await getNodeDevice();
    out.say(`run directory: ${runDir}`);
    out.say(
      `model ${trainModel.model.name}${source.artifact ? ` (lovtc artifact ${source.path})` : ''}: ${trainModel.model.counts.trainable.toLocaleString('en-US')} trainable parameters, ` +
        `batch ${spec.batch} × accumulate ${spec.accumulate}, ${spec.optimizer.kind} lr ${spec.optimizer.lr}, ${spec.schedule.kind} schedule, seed ${spec.seed}; device ${device.description}`,
    );
    const trainer = await Trainer.create({
      device,
      storage,
      train: trainModel,
      eval: evalModel,
      data: training,
      modelPath: source.path,
      set,
      dataInfo,
      artifact: source.artifact?.sha256,
      maxSteps: o.steps,
      maxEpochs: o.epochs,
      maxSeconds: o.minutes !== undefined ? o.minutes * 60 : undefined,
      checkpointEvery: o.checkpointEvery,
      maxValidationBatches: o.valBatches,
      resume: resumeFrom,
      init,
      onEvent: out.onEvent?.bind(out),
    });
    try {
      const result = await trainer.run();
      out.say(
        `stopped: ${result.stopReason}. ${result.steps} optimizer steps, ${result.samplesSeen} samples in ${formatSeconds(result.wallSeconds)}; ` +
          `last train losses: ${formatLosses(result.lastLosses)}`,
      );
      if (result.bestValidation) out.say(`best validation total ${formatLoss(result.bestValidation.value)} at step ${result.bestValidation.step} (best.json)`);
      if (o.report) {
        await writeRunReport(storage, trainer, result, {
          model: trainModel,
          modelPath: source.path,
          device: device.description,
          data: training.description,
          studyById: training.studyById,
          heatmapStudies: o.heatmapStudies,
          command: o.command,
          dropped: training.dataset.dropReport(),
        });
        out.say(`report: ${nodePath.join(runDir, 'report.md')}`);
      }
      return result;
    } finally {
      trainer.destroy();
    }
  } finally {
    await training.close();
  }
}

export function formatSeconds(seconds: number): string {
  return seconds >= 90 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(0)} s`;
}

/** `lovt-run loss MODEL --weights W --batch X [--grads G]`: every loss term (and the gradients written to G). */
export async function lossCommand(
  modelPath: string,
  o: { model?: string; weights?: string; batch?: string; grads?: string; set: string[] },
): Promise<Record<string, number>> {
  if (!o.weights) throw new Error('give --weights W.safetensors (every parameter and buffer of the model)');
  if (!o.batch) throw new Error('give --batch X.safetensors (the model inputs: image, input_ids, attention_mask, token_sentence)');
  const set = parseSetArgs(o.set);
  const source = openModel(modelPath, { model: o.model });
  const weights = await readSafetensorsFile(o.weights, '--weights');
  const batch = await readSafetensorsFile(o.batch, '--batch');
  const model = source.compile(set, 'train');
  const r = await evaluateLosses(await getNodeDevice(), model, weights, batch, {
    grads: !!o.grads,
    weightsName: `--weights ${o.weights}`,
    batchName: `--batch ${o.batch}`,
  }).catch((err: Error) => {
    // An artifact's input shapes are fixed: say how to rebuild it for this batch.
    throw source.artifact && /does not match the model's inputs/.test(err.message)
      ? new Error(
          `${err.message}; ${source.path} is compiled for fixed sizes: recompile it for this batch (\`${source.artifact.recompile()}\` with --set batch=..., image_size=..., max_tokens=...)`,
        )
      : err;
  });
  if (o.grads && r.grads) {
    await makeDirectory(nodePath.dirname(nodePath.resolve(o.grads)), '--grads');
    await writeFile(o.grads, writeSafetensors(r.grads));
  }
  return r.losses;
}

/** `lovt-run export RUN_DIR --image-encoder OUT`: returns what it wrote, in words. */
export async function exportCommand(runDir: string, opts: { imageEncoder?: string; checkpoint?: CheckpointTag; prefix: string }): Promise<string> {
  if (!opts.imageEncoder) throw new Error('nothing to export: give --image-encoder OUT.safetensors');
  const e = await exportImageEncoder(nodeStorage(runDir), opts);
  await makeDirectory(nodePath.dirname(nodePath.resolve(opts.imageEncoder)), '--image-encoder');
  await writeFile(opts.imageEncoder, e.bytes);
  return `wrote ${opts.imageEncoder}: ${e.count} tensors of ${opts.prefix} from the ${e.tag} checkpoint (step ${e.step}) under torchvision names`;
}
