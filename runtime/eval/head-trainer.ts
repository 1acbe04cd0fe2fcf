// Trains one task head for the evaluation protocol: the real `trainOne` that runProtocol
// (protocol.ts) injects. Platform-neutral: the caller gives the device, a compile
// function for models/eval/*.lovt, the opened task data and the encoders.
//
// Three things keep a suite fast on a software rasteriser:
//   - frozen encoders run once: EncoderFeatures (models/eval/features.lovt, eval mode:
//     BatchNorm on running statistics) computes the maps a head reads for every image of
//     the train / validate / test splits, which stay on the host; every run of every
//     frozen head on that encoder trains on them;
//   - one compilation per (task, encoder architecture): the head's step, apply and eval
//     programs are built and their kernels compiled once, and every LR and seed reuses
//     them with the state re-initialised;
//   - the images and targets of a task's splits are loaded once.
// A run: head state from the run seed (fine-tune heads: the encoder's weights on top),
// Adam at the task LR (the head's train section otherwise: weight decay 1e-6), epochs
// over the train split shuffled per (seed, epoch), after each a validation pass (mean loss
// and metric) fed to ValidationControl (ReduceLROnPlateau on the loss, early stopping on
// the metric; the best epoch's weights are kept on the host), then the best weights are
// tested. A non-finite loss or update ends the run with NaN metrics and a message.
// Definitions: docs/evaluation.md, "Running an evaluation".
import type { Graph } from '../../compiler/ir.ts';
import { buildTrainingPrograms, NONFINITE_OUTPUT, optimizerOptions, optimizerScalars, type FiniteCheck } from '../../compiler/train-program.ts';
import { optimize } from '../../compiler/passes/index.ts';
import type { LovtDevice } from '../device.ts';
import { Program } from '../executor.ts';
import { initState } from '../init.ts';
import type { HostTensor } from '../safetensors.ts';
import { StateStore } from '../state.ts';
import { SPLITS, type Split } from '../data/mimic.ts';
import { formatDuration } from '../report/report.ts';
import type { CheckpointManifest } from '../train/checkpoint.ts';
import { describeCheck, DROPOUT_SEED_INPUT, dropoutSeed, firstNonFinite, warmUpPrograms, zeroState, type CompiledModel } from '../train/trainer.ts';
import { describeDiff, diffTensors, hasDifferences } from '../train/weights.ts';
import { ValidationControl, type EncoderRef, type RunResult, type TrainRequest } from './protocol.ts';
import { collateTaskBatch, loadTaskSample, taskEpochOrder, type LoadedTaskSample, type SynthTaskData } from './synth-tasks.ts';
import { taskAdapter, type EvalTask, type SampleTargets, type TaskAdapter } from './tasks.ts';

// ---------------------------------------------------------------------------------------
// Encoders

export type ResNetArch = 'resnet18' | 'resnet34' | 'resnet50';

export interface EncoderArch {
  resnet: ResNetArch;
  /** torchvision's base width (64; the tiny models 32). */
  width: number;
}

/** An image encoder to evaluate: its name and identity, its architecture and its `backbone.*` weights. */
export interface Encoder {
  ref: EncoderRef;
  /** null: the architecture of the other encoders (random weights are compared with them). */
  arch: EncoderArch | null;
  /** `backbone.X` tensors; null: the backbone's own initialisation (seed 0). */
  weights: Map<string, HostTensor> | null;
  /** The image size the encoder was pre-trained at, when known (a run's config). */
  imageSize?: number;
  /** Where the weights come from, in words. */
  description: string;
}

/** The architecture a head's backbone gets when no encoder fixes one: EncoderFeatures' defaults (lovt-tiny's encoder). */
export const DEFAULT_ENCODER_ARCH: EncoderArch = { resnet: 'resnet18', width: 32 };

export const BACKBONE_PREFIX = 'backbone.';

export type InitSpec = { kind: 'random'; name: string } | { kind: 'safetensors'; path: string; name: string } | { kind: 'run'; path: string; name: string };

/** One `--init` value: `random`, a `.safetensors` file (named by its stem) or a pre-training run directory (named by its base name). */
export function parseInitSpec(arg: string): InitSpec {
  const text = arg.trim();
  if (text === '') throw new Error("--init expects RUN_DIR, FILE.safetensors or 'random', got ''");
  if (text === 'random') return { kind: 'random', name: 'random' };
  const base =
    text
      .replace(/[/\\]+$/, '')
      .split(/[/\\]/)
      .pop() ?? text;
  if (/\.safetensors$/i.test(text)) return { kind: 'safetensors', path: text, name: base.replace(/\.safetensors$/i, '') };
  return { kind: 'run', path: text, name: base };
}

/** The random encoder: the backbone's own initialisation with seed 0 (hash 'random'). */
export function randomEncoder(): Encoder {
  return { ref: { name: 'random', hash: 'random' }, arch: null, weights: null, description: "random weights (the backbone's initialisation, seed 0)" };
}

const RESNET_ARCHES: readonly ResNetArch[] = ['resnet18', 'resnet34', 'resnet50'];

/** The image encoder of a pre-training checkpoint: `image_encoder.X` → `backbone.X`, the architecture from its config. */
export function encoderFromCheckpoint(name: string, where: string, manifest: CheckpointManifest, tensors: Map<string, HostTensor>): Encoder {
  const { resnet, resnet_width: width, image_size: imageSize } = manifest.config as { resnet?: unknown; resnet_width?: unknown; image_size?: unknown };
  if (typeof resnet !== 'string' || !RESNET_ARCHES.includes(resnet as ResNetArch) || typeof width !== 'number') {
    throw new Error(
      `${where}: the model ${manifest.model.name} has no std ResNet image encoder (configs resnet = ${JSON.stringify(resnet)}, resnet_width = ${JSON.stringify(width)}); ` +
        'the evaluation needs one (image_encoder = ResNet(arch: resnet, base_width: resnet_width))',
    );
  }
  const weights = new Map<string, HostTensor>();
  for (const [k, t] of tensors) if (k.startsWith('image_encoder.')) weights.set(BACKBONE_PREFIX + k.slice('image_encoder.'.length), t);
  if (weights.size === 0) throw new Error(`${where}: the checkpoint has no image_encoder.* tensors`);
  return {
    ref: { name, hash: manifest.weights.sha256 },
    arch: { resnet: resnet as ResNetArch, width },
    weights,
    ...(typeof imageSize === 'number' ? { imageSize } : {}),
    description: `${where}: ${manifest.model.name}, ${manifest.tag} checkpoint (step ${manifest.step}), ${resnet} width ${width}`,
  };
}

/**
 * A torchvision ResNet state dict's architecture from its tensor names and shapes:
 * Bottleneck blocks (`layer1.0.conv3.weight`) are ResNet-50; BasicBlocks with 2 blocks in
 * layer3 ResNet-18, with 6 ResNet-34; the base width is conv1's output channels.
 */
export function inferResNetArch(tensors: Map<string, HostTensor>, where: string): EncoderArch {
  const conv1 = tensors.get('conv1.weight');
  if (!conv1 || conv1.shape.length !== 4) {
    throw new Error(`${where} has no conv1.weight [width, 3, 7, 7]: not a torchvision ResNet state dict (names such as conv1.weight, layer1.0.conv1.weight)`);
  }
  const blocks = (layer: number) => {
    let n = 0;
    for (const k of tensors.keys()) {
      const m = new RegExp(`^layer${layer}\\.(\\d+)\\.`).exec(k);
      if (m) n = Math.max(n, Number(m[1]) + 1);
    }
    return n;
  };
  const counts = [1, 2, 3, 4].map(blocks);
  const bottleneck = tensors.has('layer1.0.conv3.weight');
  const layout = counts.join(', ');
  const resnet: ResNetArch | null = bottleneck
    ? layout === '3, 4, 6, 3'
      ? 'resnet50'
      : null
    : layout === '2, 2, 2, 2'
      ? 'resnet18'
      : layout === '3, 4, 6, 3'
        ? 'resnet34'
        : null;
  if (!resnet) {
    throw new Error(
      `${where}: ${bottleneck ? 'Bottleneck' : 'BasicBlock'} ResNet with [${layout}] blocks in layer1..layer4; ` +
        'the evaluation supports ResNet-18 (BasicBlock [2, 2, 2, 2]), ResNet-34 (BasicBlock [3, 4, 6, 3]) and ResNet-50 (Bottleneck [3, 4, 6, 3])',
    );
  }
  return { resnet, width: conv1.shape[0] };
}

/** An encoder from a `.safetensors` under torchvision names (what `lovt-run export` writes); the architecture is inferred (inferResNetArch). */
export function encoderFromTorchvision(name: string, where: string, tensors: Map<string, HostTensor>, hash: string): Encoder {
  const arch = inferResNetArch(tensors, where);
  const weights = new Map<string, HostTensor>();
  for (const [k, t] of tensors) weights.set(BACKBONE_PREFIX + k, t);
  return { ref: { name, hash }, arch, weights, description: `${where}: torchvision names, ${arch.resnet} width ${arch.width} (inferred from the tensors)` };
}

/** The architecture every encoder runs at: each its own; random encoders take the first known one (else the default). */
export function resolveArch(encoder: Encoder, all: readonly Encoder[]): EncoderArch {
  return encoder.arch ?? all.find((e) => e.arch)?.arch ?? DEFAULT_ENCODER_ARCH;
}

/**
 * The encoder's weights matched to a model's `backbone.*` state: every tensor there, of
 * the same shape (torchvision's classifier `fc.*` is ignored). A mismatch names the
 * first mismatching tensor, then every difference.
 */
export function matchBackbone(graph: Graph, encoder: Encoder, model: string): Map<string, HostTensor> {
  if (!encoder.weights) return new Map();
  const expected = Object.values(graph.state)
    .filter((s) => s.name.startsWith(BACKBONE_PREFIX))
    .map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype }));
  const d = diffTensors(expected, encoder.weights, { ignorable: (n) => n.startsWith(`${BACKBONE_PREFIX}fc.`) });
  if (hasDifferences(d)) {
    const first = d.misshaped[0] ?? (d.missing[0] ? `${d.missing[0]} (missing)` : `${d.unexpected[0]} (unexpected)`);
    throw new Error(
      `encoder ${encoder.ref.name} (${encoder.description}) does not fit the backbone of ${model}: first mismatch ${first}; ` +
        describeDiff(d, { missing: 'in the backbone, not in the weights', unexpected: 'in the weights, not in the backbone' }),
    );
  }
  return new Map([...d.matched].map(([k, m]) => [k, m.tensor]));
}

// ---------------------------------------------------------------------------------------
// The trainer

/** EncoderFeatures' outputs, which frozen heads read as inputs of the same names. */
export const FEATURE_MAPS: readonly string[] = ['stem', 'layer1', 'layer2', 'layer3', 'layer4'];
export const FEATURE_MODEL = { file: 'features.lovt', model: 'EncoderFeatures' };

/**
 * Checks, before any device work, that every encoder's weights fit the std ResNet of
 * its architecture (EncoderFeatures compiled at it): the first mismatch is named.
 */
export function checkEncodersFit(compile: HeadTrainerOptions['compile'], encoders: readonly Encoder[], imageSize: number): void {
  for (const e of encoders) {
    if (!e.weights) continue;
    const arch = resolveArch(e, encoders);
    const { graph } = compile(
      FEATURE_MODEL.file,
      FEATURE_MODEL.model,
      { batch: '1', image_size: String(imageSize), resnet: arch.resnet, resnet_width: String(arch.width) },
      'eval',
    );
    matchBackbone(graph, e, FEATURE_MODEL.model);
  }
}

/**
 * The configs a head is compiled with, from the task and the encoder: `batch`,
 * `image_size`, each `<map>_channels` it declares (EncoderFeatures' output channels at the
 * encoder's architecture), `resnet` and `resnet_width`, and a detection head's `classes`.
 */
export function headConfigs(
  task: EvalTask,
  compile: HeadTrainerOptions['compile'],
  data: { imageSize: number; classes: number },
  arch: EncoderArch,
  featureGraph: Graph,
): Record<string, string> {
  const declared = compile(task.head.file, task.head.model, {}, 'train').model.configs;
  const set: Record<string, string> = { batch: String(task.batch), image_size: String(data.imageSize) };
  for (const map of FEATURE_MAPS) {
    if (`${map}_channels` in declared) set[`${map}_channels`] = String(featureGraph.nodes[featureGraph.outputs[map]].shape[1]);
  }
  if ('resnet' in declared) set.resnet = arch.resnet;
  if ('resnet_width' in declared) set.resnet_width = String(arch.width);
  if ('classes' in declared && taskAdapter(task).kind === 'detection') set.classes = String(data.classes);
  return set;
}

export interface HeadTrainerOptions {
  device: LovtDevice;
  /** Compiles a model of models/eval/ (`file` relative to that directory). */
  compile(file: string, model: string, set: Record<string, string>, mode: 'train' | 'eval'): CompiledModel;
  tasks: readonly EvalTask[];
  encoders: readonly Encoder[];
  /** Each task's opened data (by EvalTask.data). */
  data: ReadonlyMap<string, SynthTaskData>;
  /** Caps every run's epochs (default: the task's maxEpochs). */
  maxEpochs?: number;
  /** How many runs a task × encoder makes (grid + seeds), for the caching message. */
  runsPerCell?: (task: EvalTask) => number;
  /** Images per feature-extraction batch (default 16). */
  featureBatch?: number;
  say?(text: string): void;
}

interface SplitSamples {
  loaded: LoadedTaskSample[];
  targets: SampleTargets[];
}

/** Per split: each map's values for all its images, [N, ...map shape] flattened. */
type CachedMaps = Record<Split, Record<string, Float32Array>>;

/** A task's compiled programs for one encoder architecture, shared by all its runs. */
interface HeadPrograms {
  store: StateStore;
  train: CompiledModel;
  step: Program;
  apply: Program;
  eval: Program;
  checks: { step: FiniteCheck[]; apply: FiniteCheck[] };
  warmup: { step: Program; apply: Program; checks: { step: FiniteCheck[]; apply: FiniteCheck[] }; model: CompiledModel } | null;
  /** The encoder inputs it reads (maps, or `image`), and how many floats per sample each. */
  inputs: { name: string; perSample: number }[];
  /** The forward state: what a run initialises and snapshots. */
  stateNames: string[];
}

/** A run that hit a NaN or infinity: its metrics are NaN. */
class Diverged extends Error {}

const seconds = (t0: number) => (performance.now() - t0) / 1000;

export class HeadTrainer {
  private readonly samples = new Map<string, Record<Split, SplitSamples>>();
  private readonly features = new Map<string, CachedMaps>();
  private readonly programs = new Map<string, HeadPrograms>();
  private readonly say: (text: string) => void;

  constructor(private readonly opts: HeadTrainerOptions) {
    this.say = opts.say ?? (() => {});
  }

  /** The injected `trainOne` of runProtocol. */
  readonly trainOne = (req: TrainRequest): Promise<RunResult> => this.run(req);

  private task(name: string): EvalTask {
    const t = this.opts.tasks.find((x) => x.name === name);
    if (!t) throw new Error(`head trainer: task ${name} was not given`);
    return t;
  }

  private encoder(name: string): Encoder {
    const e = this.opts.encoders.find((x) => x.ref.name === name);
    if (!e) throw new Error(`head trainer: encoder ${name} was not given`);
    return e;
  }

  private dataOf(task: EvalTask): SynthTaskData {
    const d = this.opts.data.get(task.data);
    if (!d) throw new Error(`head trainer: the data of task ${task.name} (${task.data}) was not opened`);
    return d;
  }

  /** Every image and target of a task's splits, loaded once. */
  private async splitSamples(task: EvalTask): Promise<Record<Split, SplitSamples>> {
    let s = this.samples.get(task.data);
    if (!s) {
      const data = this.dataOf(task);
      const t0 = performance.now();
      s = {} as Record<Split, SplitSamples>;
      for (const split of SPLITS) {
        const loaded = await Promise.all(data.splits[split].map((x) => loadTaskSample(data, x)));
        s[split] = { loaded, targets: loaded.map((l) => ({ mask: l.mask, boxes: l.boxes })) };
      }
      this.samples.set(task.data, s);
      this.say(`${task.data}: loaded ${SPLITS.map((n) => `${s![n].loaded.length} ${n}`).join(', ')} images in ${formatDuration(seconds(t0))}`);
    }
    return s;
  }

  private headSet(task: EvalTask, arch: EncoderArch, featureGraph: Graph): Record<string, string> {
    const data = this.dataOf(task);
    return headConfigs(task, this.opts.compile, { imageSize: data.imageSize, classes: data.spec.findings.length }, arch, featureGraph);
  }

  private featureModel(task: EvalTask, arch: EncoderArch, batch: number): CompiledModel {
    const data = this.dataOf(task);
    return this.opts.compile(
      FEATURE_MODEL.file,
      FEATURE_MODEL.model,
      { batch: String(batch), image_size: String(data.imageSize), resnet: arch.resnet, resnet_width: String(arch.width) },
      'eval',
    );
  }

  /** The head's programs for this task and encoder architecture: compiled once, reused by every run. */
  private async headPrograms(task: EvalTask, encoder: Encoder): Promise<HeadPrograms> {
    const arch = resolveArch(encoder, this.opts.encoders);
    const key = JSON.stringify([task.name, arch]);
    const cached = this.programs.get(key);
    if (cached) return cached;
    const t0 = performance.now();
    const features = this.featureModel(task, arch, task.batch);
    const set = this.headSet(task, arch, features.graph);
    const train = this.opts.compile(task.head.file, task.head.model, set, 'train');
    const evalModel = this.opts.compile(task.head.file, task.head.model, set, 'eval');
    const frozen = task.encoder === 'frozen';
    const inputs: HeadPrograms['inputs'] = [];
    for (const [name, id] of Object.entries(train.graph.inputs)) {
      const shape = train.graph.nodes[id].shape;
      const isMap = FEATURE_MAPS.includes(name);
      if (!isMap && name !== 'image') continue;
      if (isMap && !frozen)
        throw new Error(`task ${task.name}: the fine-tune head ${task.head.model} reads the feature map '${name}'; fine-tune heads read 'image'`);
      const want = isMap ? features.graph.nodes[features.graph.outputs[name]].shape : [task.batch, 3, this.dataOf(task).imageSize, this.dataOf(task).imageSize];
      if (shape.join() !== want.join()) {
        throw new Error(
          `task ${task.name}: ${task.head.model}'s input '${name}' is [${shape.join(', ')}] but the encoder (${arch.resnet} width ${arch.width}) gives [${want.join(', ')}] ` +
            `(image size ${this.dataOf(task).imageSize}); check the head's configs`,
        );
      }
      inputs.push({ name, perSample: shape.slice(1).reduce((a, b) => a * b, 1) });
    }
    if (inputs.length === 0) throw new Error(`task ${task.name}: ${task.head.model} reads neither 'image' nor a feature map (${FEATURE_MAPS.join(', ')})`);
    this.say(`compiling ${task.head.model} for ${task.name} (${arch.resnet} width ${arch.width}): once, reused by every run…`);
    const { device } = this.opts;
    const store = new StateStore(device);
    const build = async (model: CompiledModel, label: string) => {
      const p = buildTrainingPrograms(model.graph, { loss: 'loss.total', optimizer: optimizerOptions(model.model.train.optimizer), accumulate: 1 });
      return {
        step: await Program.create(device, p.step, store, { label: `${label} step` }),
        apply: await Program.create(device, p.apply, store, { label: `${label} apply` }),
        checks: p.checks,
      };
    };
    const main = await build(train, task.head.model);
    const evalProgram = await Program.create(device, optimize(evalModel.graph), store, { label: `${task.head.model} eval` });
    let warmup: HeadPrograms['warmup'] = null;
    if (task.warmup) {
      const model = this.opts.compile(task.head.file, task.warmup.model, set, 'train');
      warmup = { ...(await build(model, task.warmup.model)), model };
    }
    const all = [main.step, main.apply, evalProgram, ...(warmup ? [warmup.step, warmup.apply] : [])];
    await warmUpPrograms(all, store);
    const programs: HeadPrograms = {
      store,
      train,
      step: main.step,
      apply: main.apply,
      eval: evalProgram,
      checks: main.checks,
      warmup,
      inputs,
      stateNames: Object.keys(train.graph.state),
    };
    this.programs.set(key, programs);
    this.say(`compiled ${task.head.model} in ${formatDuration(seconds(t0))}`);
    return programs;
  }

  /**
   * The encoder's maps that frozen heads of this task read, for every image of every
   * split: EncoderFeatures in eval mode, run once per encoder and data.
   */
  private async cachedMaps(task: EvalTask, encoder: Encoder, names: string[]): Promise<CachedMaps> {
    const key = JSON.stringify([encoder.ref.name, task.data]);
    const have = this.features.get(key);
    if (have && names.every((n) => n in have.train)) return have;
    const samples = await this.splitSamples(task);
    const arch = resolveArch(encoder, this.opts.encoders);
    const B = this.opts.featureBatch ?? 16;
    const model = this.featureModel(task, arch, B);
    const weights = matchBackbone(model.graph, encoder, FEATURE_MODEL.model);
    const t0 = performance.now();
    const store = new StateStore(this.opts.device);
    const program = await Program.create(this.opts.device, optimize(model.graph), store, { label: 'encoder features' });
    const wanted = [...new Set([...names, ...(have ? Object.keys(have.train) : [])])];
    const out = {} as CachedMaps;
    let images = 0;
    let passSeconds = 0;
    try {
      await warmUpPrograms([program], store); // kernels compiled here, so that the pass below is timed alone
      for (const [name, data] of Object.entries(initState(model.graph, 0))) store.upload(name, data);
      for (const [name, t] of weights) store.upload(name, t.data);
      const compiled = seconds(t0);
      const t1 = performance.now();
      for (const split of SPLITS) {
        const loaded = samples[split].loaded;
        const maps: Record<string, Float32Array> = {};
        const per = (n: string) => model.graph.nodes[model.graph.outputs[n]].shape.slice(1).reduce((a, b) => a * b, 1);
        for (const n of wanted) maps[n] = new Float32Array(loaded.length * per(n));
        for (let start = 0; start < loaded.length; start += B) {
          const idx = paddedIndices(loaded.length, start, B);
          const batch = collateTaskBatch(
            idx.map((i) => loaded[i]),
            3,
          );
          const res = await program.run({ image: batch.images.data }, wanted);
          const valid = Math.min(B, loaded.length - start);
          for (const n of wanted) maps[n].set((res[n] as Float32Array).subarray(0, valid * per(n)), start * per(n));
        }
        out[split] = maps;
        images += loaded.length;
      }
      passSeconds = seconds(t1);
      const runs = this.opts.tasks.filter((t) => t.encoder === 'frozen' && t.data === task.data).reduce((n, t) => n + (this.opts.runsPerCell?.(t) ?? 1), 0);
      this.say(
        `encoder ${encoder.ref.name}: ${wanted.join(', ')} of ${images} images cached in ${formatDuration(compiled + passSeconds)} ` +
          `(compile ${formatDuration(compiled)}, one pass ${formatDuration(passSeconds)}); recomputing them in each of ${runs} runs would have cost ~${formatDuration(runs * passSeconds)}`,
      );
    } finally {
      program.destroy();
      store.destroy();
    }
    this.features.set(key, out);
    return out;
  }

  /** One run; its wall time leaves out what every run shares (loading, compiling, feature caching: printed once). */
  private async run(req: TrainRequest): Promise<RunResult> {
    const task = this.task(req.task);
    const encoder = this.encoder(req.encoder);
    const adapter = taskAdapter(task);
    const data = this.dataOf(task);
    const samples = await this.splitSamples(task);
    const p = await this.headPrograms(task, encoder);
    const frozen = task.encoder === 'frozen';
    const maps = frozen
      ? await this.cachedMaps(
          task,
          encoder,
          p.inputs.filter((i) => i.name !== 'image').map((i) => i.name),
        )
      : null;
    const started = performance.now();
    const B = task.batch;
    const aopts = { imageSize: data.imageSize, batch: B, classes: data.spec.kind === 'detection' ? data.spec.findings.length : 1 };
    const where = `task ${task.name}, encoder ${encoder.ref.name}, lr ${req.lr}, seed ${req.seed}`;

    /** The head's inputs for the samples `idx` of a split. */
    const inputsFor = (graph: Graph, split: Split, idx: number[], seed: number): Record<string, Float32Array | Int32Array> => {
      const s = samples[split];
      const inputs: Record<string, Float32Array | Int32Array> = adapter.targets(
        idx.map((i) => s.targets[i]),
        aopts,
      );
      for (const { name, perSample } of p.inputs) {
        if (name === 'image')
          inputs.image = collateTaskBatch(
            idx.map((i) => s.loaded[i]),
            3,
          ).images.data;
        else {
          const all = maps![split][name];
          const x = new Float32Array(idx.length * perSample);
          idx.forEach((i, k) => x.set(all.subarray(i * perSample, (i + 1) * perSample), k * perSample));
          inputs[name] = x;
        }
      }
      if (DROPOUT_SEED_INPUT in graph.inputs) inputs[DROPOUT_SEED_INPUT] = Int32Array.of(seed);
      for (const name of Object.keys(inputs)) if (!(name in graph.inputs)) delete inputs[name];
      return inputs;
    };

    /** Mean loss and the metric over a split (padded last batch; the repeats are not counted). */
    const evaluate = async (split: Split): Promise<{ loss: number; metric: number }> => {
      const n = samples[split].loaded.length;
      const acc = adapter.accumulator(aopts);
      let loss = 0;
      let batches = 0;
      for (let start = 0; start < n; start += B) {
        const idx = paddedIndices(n, start, B);
        const out = await p.eval.run(inputsFor(p.eval.graph, split, idx, 0), ['loss.total', ...adapter.outputs]);
        acc.add(
          out,
          idx.map((i) => samples[split].targets[i]),
          Math.min(B, n - start),
        );
        loss += out['loss.total'][0];
        batches++;
      }
      return { loss: loss / batches, metric: acc.value() };
    };

    // Fresh state: the head from the run seed, the encoder's weights for fine-tune heads.
    zeroState(p.store);
    for (const [name, values] of Object.entries(initState(p.train.graph, req.seed))) p.store.upload(name, values);
    if (!frozen) {
      // The encoder's weights; a random encoder's are the backbone's initialisation with seed 0, whatever the run seed.
      const backbone = encoder.weights
        ? [...matchBackbone(p.train.graph, encoder, task.head.model)].map(([name, t]) => [name, t.data] as const)
        : Object.entries(initState(p.train.graph, 0)).filter(([name]) => name.startsWith(BACKBONE_PREFIX));
      for (const [name, values] of backbone) p.store.upload(name, values);
    }

    const control = new ValidationControl({ lr: req.lr, stopPatience: task.stopPatience, metric: `validation ${task.metric}` });
    const maxEpochs = this.opts.maxEpochs ?? task.maxEpochs;
    const nTrain = samples.train.loaded.length;
    // Full batches only (the head's batch is fixed), unless the split is smaller than one.
    const perEpoch = Math.max(1, Math.floor(nTrain / B));
    let steps = 0;
    /** Time in training steps alone (validation left out): the bench's samples/s. */
    let trainSeconds = 0;
    let phaseSteps = 0;
    let inWarmup = !!p.warmup && (task.warmup?.steps ?? 0) > 0;
    let best: Map<string, HostTensor> | null = null;
    let epochs = 0;
    let stopReason = `reached ${maxEpochs} epochs`;
    const trainLosses: number[] = [];
    const valLosses: number[] = [];
    const valMetrics: number[] = [];
    let pending: { counts: Promise<Record<string, Float32Array | Int32Array>>; checks: FiniteCheck[]; step: number; epoch: number } | null = null;
    const settle = async () => {
      if (!pending) return;
      const { counts, checks, step, epoch } = pending;
      pending = null;
      const bad = firstNonFinite((await counts)[NONFINITE_OUTPUT], checks);
      if (bad)
        throw new Diverged(`${where}: at optimizer step ${step} (epoch ${epoch + 1}), ${describeCheck(bad.check)} has ${bad.count} NaN or infinite values`);
    };
    try {
      for (let epoch = 0; epoch < maxEpochs; epoch++) {
        const order = taskEpochOrder(nTrain, { seed: req.seed, epoch });
        const epochStarted = performance.now();
        let lossSum = 0;
        for (let k = 0; k < perEpoch; k++) {
          const idx = Array.from({ length: B }, (_, j) => order[(k * B + j) % nTrain]);
          if (inWarmup && phaseSteps >= task.warmup!.steps) {
            // The warm-up is over: the whole model trains from here with a fresh Adam.
            await settle();
            inWarmup = false;
            phaseSteps = 0;
            for (const name of p.store.names())
              if (name.startsWith('optim.')) p.store.upload(name, new Float32Array(p.store.info(name).shape.reduce((a, b) => a * b, 1)));
          }
          const prog = inWarmup ? p.warmup! : p;
          const [out] = await Promise.all([
            prog.step.run(inputsFor(prog.step.graph, 'train', idx, dropoutSeed(req.seed, steps, 0)), ['loss.total', NONFINITE_OUTPUT]),
            settle(),
          ]);
          const bad = firstNonFinite(out[NONFINITE_OUTPUT], prog.checks.step);
          if (bad) {
            const value = bad.check.kind === 'output' ? ` is ${out[bad.check.name][0]}` : ` has ${bad.count} NaN or infinite values`;
            throw new Diverged(`${where}: at optimizer step ${steps + 1} (epoch ${epoch + 1}), ${describeCheck(bad.check)}${value}`);
          }
          lossSum += out['loss.total'][0];
          phaseSteps++;
          steps++;
          const lr = inWarmup ? task.warmup!.lr : control.lr;
          const scalars = optimizerScalars(phaseSteps, lr, optimizerOptions((inWarmup ? p.warmup!.model : p.train).model.train.optimizer));
          const counts = prog.apply.run(Object.fromEntries(Object.entries(scalars).map(([k2, v]) => [k2, Float32Array.of(v)])), [NONFINITE_OUTPUT]);
          counts.catch(() => {}); // awaited by settle()
          pending = { counts, checks: prog.checks.apply, step: steps, epoch };
        }
        await settle();
        trainSeconds += seconds(epochStarted);
        trainLosses.push(lossSum / perEpoch);
        const val = await evaluate('validate');
        valLosses.push(val.loss);
        valMetrics.push(val.metric);
        epochs = epoch + 1;
        if (!Number.isFinite(val.loss)) throw new Diverged(`${where}: the validation loss is ${val.loss} at epoch ${epoch + 1}`);
        const d = control.update(val.loss, val.metric);
        if (d.improved) best = await this.snapshot(p);
        if (d.stop) {
          stopReason = d.reason ?? 'early stopping';
          break;
        }
      }
    } catch (err) {
      if (!(err instanceof Diverged)) throw err;
      await pending?.counts.catch(() => {});
      this.say(`${err.message}; the run ends with NaN metrics`);
      return {
        valMetric: NaN,
        testMetric: NaN,
        wallSeconds: seconds(started),
        epochs,
        steps,
        stopReason: `diverged: ${err.message}`,
        trainLosses,
        valLosses,
        valMetrics,
      };
    }
    if (!best) return { valMetric: NaN, testMetric: NaN, wallSeconds: seconds(started), epochs, steps, stopReason, trainLosses, valLosses, valMetrics };
    for (const [name, t] of best) p.store.upload(name, t.data);
    const test = await evaluate('test');
    const { value, epoch } = control.bestValidation;
    return {
      valMetric: value,
      testMetric: test.metric,
      wallSeconds: seconds(started),
      bestEpoch: epoch + 1,
      epochs,
      steps,
      trainSeconds,
      stopReason,
      testLoss: test.loss,
      trainLosses,
      valLosses,
      valMetrics,
    };
  }

  /** The head's current forward state for a task and encoder: after a run, the best epoch's weights that were tested. */
  async headState(task: string, encoder: string): Promise<Map<string, HostTensor>> {
    const p = this.programs.get(JSON.stringify([task, resolveArch(this.encoder(encoder), this.opts.encoders)]));
    if (!p) throw new Error(`head trainer: no run of task ${task} with encoder ${encoder} yet`);
    return this.snapshot(p);
  }

  /** The head's forward state (parameters and buffers) on the host: the best epoch's weights. */
  private async snapshot(p: HeadPrograms): Promise<Map<string, HostTensor>> {
    const out = new Map<string, HostTensor>();
    for (const name of p.stateNames) {
      const { shape, dtype } = p.store.info(name);
      const data = await p.store.download(name);
      out.set(name, (dtype === 'i32' ? { dtype, shape, data } : { dtype: 'f32', shape, data }) as HostTensor);
    }
    return out;
  }

  destroy(): void {
    for (const p of this.programs.values()) {
      for (const prog of [p.step, p.apply, p.eval, ...(p.warmup ? [p.warmup.step, p.warmup.apply] : [])]) prog.destroy();
      p.store.destroy();
    }
    this.programs.clear();
  }
}

/** `B` sample indices from `start`, the last batch filled up by repeating its own samples. */
export function paddedIndices(n: number, start: number, B: number): number[] {
  const valid = Math.min(B, n - start);
  return Array.from({ length: B }, (_, j) => start + (j % valid));
}
