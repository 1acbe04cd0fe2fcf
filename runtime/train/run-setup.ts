// Setting up a training run, platform-neutral: which recipe a resume continues
// (its --set, data and model, compared by resolved values and content hashes),
// fitting the model to the data's vocabulary, checking that the data fits the
// compiled inputs, the report with its attention heatmaps, and the image-encoder
// export. The model arrives as a ModelSource: a .lovt file compiled on demand or a
// lovtc artifact (runtime/platform/node-model.ts); files, the run directory's lock
// and the data directory are the platform's (runtime/platform/node-train.ts).

import type { ModelInfo } from '../../compiler/frontend/index.ts';
import { studyHeatmaps, writeReport, type StudyHeatmaps } from '../report/report.ts';
import type { DropReport, Study } from '../data/mimic.ts';
import { hasCheckpoint, loadCheckpoint, type CheckpointManifest, type CheckpointTag } from './checkpoint.ts';
import { readMetrics } from './metrics.ts';
import type { Storage } from './storage.ts';
import type { CompiledModel, Trainer, TrainResult } from './trainer.ts';
import { exportPrefixed } from './weights.ts';

/** A model to train: a .lovt source compiled on demand, or a lovtc artifact compiled already. */
export interface ModelSource {
  /** As the user gave it: the .lovt file or the artifact directory. */
  path: string;
  /** Set for a lovtc artifact. */
  artifact?: {
    /** SHA-256 of its graph.json: the artifact's identity in checkpoints. */
    sha256: string;
    /** The --set overrides it was compiled with. */
    set: Record<string, string>;
    /** The lovtc command that rebuilds it with `set` added. */
    recompile(set?: Record<string, string>): string;
  };
  /** The model compiled with `set` (throws CompileFailed or a message naming the problem). */
  compile(set: Record<string, string>, mode: 'train' | 'eval'): CompiledModel;
}

/** What the command line asks of the data. */
export interface DataRequest {
  /** 'synth' or 'mimic:DIR'. */
  data?: string;
  studies: number;
  synthSeed: number;
  resize?: number;
  statsSample?: number;
  /** Options given on the command line (not defaults). */
  explicit?: Set<string>;
}

/** The resolved value of a config or `train.` key of a compiled model. */
function resolvedValue(model: ModelInfo, key: string): unknown {
  if (!key.startsWith('train.')) return model.configs[key]?.value;
  let v: unknown = model.train;
  for (const k of key.slice('train.'.length).split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/**
 * Whether `--set key=text` leaves the compiled model as it is: the text denotes the
 * value it already has (`0.10` for 0.1, `1,2` for [1, 2]). Expressions (e.g.
 * `adam(lr: 1e-3)`) never match: only a compile could tell.
 */
export function setKeepsValue(model: ModelInfo, key: string, text: string): boolean {
  const value = resolvedValue(model, key);
  const same = (v: unknown, t: string): boolean =>
    typeof v === 'number' ? t.trim() !== '' && Number(t) === v : (typeof v === 'string' || typeof v === 'boolean') && String(v) === t.trim();
  if (Array.isArray(value)) {
    const parts = text.split(',');
    return parts.length === value.length && value.every((v, i) => same(v, parts[i]));
  }
  return same(value, text);
}

/** The keys whose values differ between a checkpoint's recorded config/train section and a compiled model. */
function recipeChanges(manifest: CheckpointManifest, model: ModelInfo): { key: string; was: unknown; now: unknown }[] {
  const changes: { key: string; was: unknown; now: unknown }[] = [];
  for (const [k, { value }] of Object.entries(model.configs)) {
    if (k in manifest.config && JSON.stringify(manifest.config[k]) !== JSON.stringify(value)) changes.push({ key: k, was: manifest.config[k], now: value });
  }
  const walk = (was: unknown, now: unknown, key: string) => {
    if (now !== null && typeof now === 'object' && !Array.isArray(now) && was !== null && typeof was === 'object') {
      for (const k of Object.keys(now)) walk((was as Record<string, unknown>)[k], (now as Record<string, unknown>)[k], `${key}.${k}`);
    } else if (JSON.stringify(was) !== JSON.stringify(now)) changes.push({ key, was, now });
  };
  walk(manifest.train, model.train, 'train');
  return changes;
}

/**
 * A resume continues the run's recipe: refuses --init and another data set, and
 * takes the data options the run was trained with (whatever this invocation's
 * defaults). Returns the data spec and the request with the restored options.
 */
export function resumeData<R extends DataRequest>(manifest: CheckpointManifest, req: R & { init: string[] }, runDir: string): { dataSpec: string; request: R } {
  if (req.init.length) throw new Error('--init only applies to a new run (the checkpoint already holds every weight)');
  const saved = manifest.data as { spec?: string; kind?: string; studies?: number; seed?: number; resize?: number; statsSample?: number };
  if (req.data && saved.spec && req.data !== saved.spec) throw new Error(`${runDir} was trained on --data ${saved.spec}, not ${req.data}`);
  type Restored = [flag: string, key: 'studies' | 'synthSeed' | 'resize' | 'statsSample', value: number | undefined];
  const restored: Restored[] = [
    ['--stats-sample', 'statsSample', saved.statsSample],
    ...(saved.kind === 'synth'
      ? ([
          ['--studies', 'studies', saved.studies],
          ['--synth-seed', 'synthSeed', saved.seed],
        ] satisfies Restored[])
      : ([['--resize', 'resize', saved.resize]] satisfies Restored[])),
  ];
  let request = req;
  for (const [flag, key, value] of restored) {
    if (value === undefined) continue;
    if (req.explicit?.has(key) && req[key] !== value) throw new Error(`${runDir} was trained with ${flag} ${value}, not ${req[key]}`);
    request = { ...request, [key]: value };
  }
  return { dataSpec: saved.spec ?? req.data ?? 'synth', request };
}

/**
 * The --set a resume compiles with: a source takes the run's overrides with the
 * requested ones on top (checkResumeModel then refuses any that change a value);
 * an artifact is compiled already and only checks the requested ones.
 */
export function resumeSet(manifest: CheckpointManifest, source: ModelSource, requested: Record<string, string>): Record<string, string> {
  return source.artifact ? { ...requested } : { ...manifest.set, ...requested };
}

const short = (hash: string) => `${hash.slice(0, 12)}…`;

/**
 * A resume trains the same model: the same artifact (by hash) or a source with the
 * same content (wherever the file is now), and the same resolved configs and train
 * keys (a --set that restates a value is fine; one that changes it is refused).
 */
export function checkResumeModel(manifest: CheckpointManifest, source: ModelSource, model: CompiledModel, runDir: string): void {
  const was = manifest.model;
  const trained = was.artifact ? `the lovtc artifact ${was.path} (sha256 ${short(was.artifact)})` : `the source ${was.path}`;
  const given = source.artifact ? `the lovtc artifact ${source.path} (sha256 ${short(source.artifact.sha256)})` : `the source ${source.path}`;
  if ((was.artifact ?? null) !== (source.artifact?.sha256 ?? null)) {
    throw new Error(`${runDir} was trained from ${trained}; this resume gives ${given}: resume with the model the run trained`);
  }
  if (!was.artifact && was.sourceHash !== model.model.sourceHash) {
    throw new Error(`${runDir} was trained from ${trained}; ${source.path} (or one of its imports) has different content: resume needs the same model source`);
  }
  const changes = recipeChanges(manifest, model.model);
  if (changes.length) {
    const show = (v: unknown) => JSON.stringify(v);
    throw new Error(
      `${runDir} was started with ${changes.map((c) => `${c.key} = ${show(c.was)}`).join(', ')}; a resume cannot change it to ` +
        `${changes.map((c) => `${c.key} = ${show(c.now)}`).join(', ')} (drop the --set, or start a new run)`,
    );
  }
}

/** An int config training needs (batch, image_size, ...), or an error naming it. */
export function intConfig(model: CompiledModel, name: string): number {
  const v = model.model.configs[name]?.value;
  if (typeof v !== 'number') throw new Error(`model ${model.model.name} has no int config '${name}', which training needs`);
  return v;
}

/**
 * The model fitted to the data's vocabulary: a source without an explicit
 * vocab_size is recompiled with the vocabulary's size; an artifact must have
 * been compiled with it (else the error gives the lovtc command that does).
 */
export function fitVocabulary(
  source: ModelSource,
  set: Record<string, string>,
  model: CompiledModel,
  vocab: { size: number; where: string },
): { model: CompiledModel; set: Record<string, string> } {
  if (!('vocab_size' in model.model.configs)) return { model, set };
  const have = intConfig(model, 'vocab_size');
  if (source.artifact) {
    if (have === vocab.size || ('vocab_size' in source.artifact.set && have > vocab.size)) return { model, set };
    throw new Error(
      `${source.path} was compiled with vocab_size ${have}, but the data's vocabulary (${vocab.where}) has ${vocab.size} tokens: ` +
        `recompile with \`${source.artifact.recompile({ vocab_size: String(vocab.size) })}\``,
    );
  }
  if (set.vocab_size === undefined && have !== vocab.size) {
    const refit = { ...set, vocab_size: String(vocab.size) };
    return { model: source.compile(refit, 'train'), set: refit };
  }
  if (have < vocab.size) throw new Error(`vocab_size ${have} is smaller than the vocabulary's ${vocab.size} tokens (${vocab.where})`);
  return { model, set };
}

/**
 * The model inputs the data pipeline fills, with the shapes it makes from the
 * model's configs, checked against the compiled graph (an artifact's inputs were
 * fixed when it was compiled).
 */
export function checkDataFits(source: ModelSource, model: CompiledModel): void {
  const B = intConfig(model, 'batch');
  const px = intConfig(model, 'image_size');
  const T = intConfig(model, 'max_tokens');
  const made: Record<string, number[]> = { image: [B, 3, px, px], input_ids: [B, T], attention_mask: [B, T], token_sentence: [B, T] };
  const { graph } = model;
  const wrong = Object.entries(made)
    .filter(([name, shape]) => name in graph.inputs && graph.nodes[graph.inputs[name]].shape.join() !== shape.join())
    .map(([name, shape]) => `${name} is [${graph.nodes[graph.inputs[name]].shape.join(', ')}] in the model, [${shape.join(', ')}] from the data`);
  if (!wrong.length) return;
  throw new Error(
    `the data does not fit ${source.path} (batch ${B}, image_size ${px}, max_tokens ${T}): ${wrong.join('; ')}` +
      (source.artifact ? `: recompile with \`${source.artifact.recompile()}\` and the sizes you want` : ''),
  );
}

/** The heatmap output the report draws when the model has it (models/lovt.lovt). */
export const ATTENTION_OUTPUT = 'attention_r2i';

/** The report's heatmaps: the model's `attention_r2i` output on the first validation batch (if it has one). */
export async function attentionHeatmaps(
  trainer: Trainer,
  studyById: Map<string, Study>,
  studies: number,
): Promise<{ heatmaps: StudyHeatmaps[]; heatmapSource?: string }> {
  const graph = trainer.evalGraph;
  if (!(ATTENTION_OUTPUT in graph.outputs) || studies <= 0) return { heatmaps: [] };
  const shape = graph.nodes[graph.outputs[ATTENTION_OUTPUT]].shape;
  const [first] = await trainer.inspect([ATTENTION_OUTPUT]);
  if (!first) return { heatmaps: [] };
  return {
    heatmaps: studyHeatmaps(first.batch, first.outputs[ATTENTION_OUTPUT] as Float32Array, shape, 'regions-sentences', studyById, studies),
    heatmapSource:
      `Each panel shows, for one sentence of the report, the alignment model's report→image attention \`${ATTENTION_OUTPUT}\` ` +
      `(for every image region, the softmax weight it gives that sentence) on the ${shape[1]} regions, upsampled and overlaid on the validation image (eval mode, last weights).`,
  };
}

/** Writes RUN_DIR/report.md and its figures for a finished run. */
export async function writeRunReport(
  storage: Storage,
  trainer: Trainer,
  result: TrainResult,
  run: {
    model: CompiledModel;
    modelPath: string;
    device: string;
    data: string;
    studyById: Map<string, Study>;
    heatmapStudies: number;
    command?: string;
    dropped?: DropReport;
  },
): Promise<void> {
  const { model } = run.model;
  const { heatmaps, heatmapSource } = await attentionHeatmaps(trainer, run.studyById, run.heatmapStudies);
  await writeReport(storage, {
    summary: {
      model: model.name,
      modelPath: run.modelPath,
      device: run.device,
      data: run.data,
      command: run.command,
      seed: model.train.seed,
      steps: result.steps,
      epochs: result.epochs,
      samplesSeen: result.samplesSeen,
      wallSeconds: result.wallSeconds,
      stopReason: result.stopReason,
      bestValidation: result.bestValidation,
      parameters: { trainable: model.counts.trainable, total: model.counts.params },
    },
    lossTerms: trainer.lossTerms,
    records: await readMetrics(storage),
    heatmaps,
    heatmapSource,
    dropped: run.dropped,
  });
}

/**
 * The image encoder of a run's best (else last) checkpoint as torchvision-named
 * safetensors bytes. loadCheckpoint refuses checkpoints of another run.
 */
export async function exportImageEncoder(storage: Storage, opts: { checkpoint?: CheckpointTag; prefix: string }) {
  const tag = opts.checkpoint ?? ((await hasCheckpoint(storage, 'best')) ? 'best' : 'last');
  const { manifest, tensors } = await loadCheckpoint(storage, tag);
  const bytes = exportPrefixed(tensors, opts.prefix, {
    lovt_model: manifest.model.name,
    lovt_step: String(manifest.step),
    lovt_checkpoint: tag,
    ...(manifest.runId ? { lovt_run: manifest.runId } : {}),
  });
  const count = [...tensors.keys()].filter((n) => n.startsWith(`${opts.prefix}.`)).length;
  return { bytes, tag, step: manifest.step, count };
}

/** A loss value as the progress lines print it. */
export function formatLoss(v: number | undefined): string {
  if (v === undefined) return '?';
  return Number.isFinite(v) ? (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(2)) : String(v);
}

/** "total 5.1203, global_i2r 2.0794, ..." */
export function formatLosses(losses: Record<string, number>, keys?: string[]): string {
  return (keys ?? Object.keys(losses)).map((k) => `${k.replace(/^loss\./, '')} ${formatLoss(losses[k])}`).join(', ');
}
