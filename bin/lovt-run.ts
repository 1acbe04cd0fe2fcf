// lovt-run: train, evaluate losses, export and inspect .lovt models on WebGPU.
//
//   lovt-run train MODEL [--data synth|mimic:DIR] [--steps N | --epochs E] ...
//   lovt-run loss MODEL --weights W.safetensors --batch X.safetensors [--grads G.safetensors]
//   lovt-run synth --out DIR --studies N --seed S
//   lovt-run export RUN_DIR --image-encoder out.safetensors
//   lovt-run doctor
//   lovt-run demo [--out RUN_DIR] [--minutes M]
//
// Every failure is one line on stderr (or a rendered compiler diagnostic) and exit
// code 1; the process always exits explicitly because Dawn's GPU instance would
// otherwise keep it alive. docs/training.md describes the commands in full.

import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** An error whose message is the whole story: printed without "internal error" framing. */
class UsageError extends Error {}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number, got '${value}'`);
    return n;
  };
}

function nonNegativeInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${what} must be a whole number >= 0, got '${value}'`);
    return n;
  };
}

function positiveNumber(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${what} must be a positive number, got '${value}'`);
    return n;
  };
}

/** `--set key=value` pairs as a record; a malformed pair is a usage error naming it. */
function parseSets(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set expects key=value (e.g. --set tau_local=0.2), got '${pair}'`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

// ---------------------------------------------------------------------------
// doctor

async function doctor(): Promise<void> {
  const { nodeGPU } = await import('../runtime/platform/node.ts');
  const { openDevice } = await import('../runtime/device.ts');
  const pkg = JSON.parse(await readFile(new URL('../node_modules/webgpu/package.json', import.meta.url), 'utf8').catch(() => '{}'));
  console.log(`node ${process.version} (${process.platform} ${process.arch}), webgpu (Dawn) ${pkg.version ?? '?'}`);
  const gpu = nodeGPU();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new UsageError(
      'no WebGPU adapter. Dawn needs a Vulkan driver (Linux), Metal (macOS) or D3D12 (Windows). ' +
        'On Debian/Ubuntu without a GPU run `bash scripts/setup-system.sh` (installs Mesa\'s lavapipe software Vulkan driver ' +
        'from bookworm-backports), or install mesa-vulkan-drivers (Mesa >= 24) yourself; then run `lovt-run doctor` again.',
    );
  }
  const d = await openDevice(gpu);
  console.log(`adapter: ${d.description}`);
  const software = /llvmpipe|lavapipe|swiftshader|software/i.test(d.description);
  if (software) console.log('  (a CPU software rasteriser: correct but slow; expect minutes for the tiny models)');
  const wanted = ['shader-f16', 'timestamp-query', 'subgroups'];
  console.log(`features: ${wanted.map((f) => `${f} ${d.features.has(f) ? 'yes' : 'no'}`).join(', ')}`);
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  const l = d.limits;
  console.log(`limits: maxBufferSize ${mib(l.maxBufferSize)}, maxStorageBufferBindingSize ${mib(l.maxStorageBufferBindingSize)}, ` +
    `maxStorageBuffersPerShaderStage ${l.maxStorageBuffersPerShaderStage}, maxComputeWorkgroupStorageSize ${l.maxComputeWorkgroupStorageSize} B, ` +
    `maxComputeInvocationsPerWorkgroup ${l.maxComputeInvocationsPerWorkgroup}, maxComputeWorkgroupsPerDimension ${l.maxComputeWorkgroupsPerDimension}`);
  console.log('ok: lovt can train on this device');
}

// ---------------------------------------------------------------------------
// export

async function exportCommand(runDir: string, opts: { imageEncoder?: string; checkpoint?: 'best' | 'last'; prefix: string }): Promise<void> {
  if (!opts.imageEncoder) throw new UsageError('nothing to export: give --image-encoder OUT.safetensors');
  const { nodeStorage } = await import('../runtime/platform/node-storage.ts');
  const { hasCheckpoint, loadCheckpoint } = await import('../runtime/train/checkpoint.ts');
  const { exportPrefixed } = await import('../runtime/train/weights.ts');
  const storage = nodeStorage(runDir);
  const tag = opts.checkpoint ?? ((await hasCheckpoint(storage, 'best')) ? 'best' : 'last');
  const { manifest, tensors } = await loadCheckpoint(storage, tag);
  const bytes = exportPrefixed(tensors, opts.prefix, {
    lovt_model: manifest.model.name,
    lovt_step: String(manifest.step),
    lovt_checkpoint: tag,
  });
  await mkdir(path.dirname(path.resolve(opts.imageEncoder)), { recursive: true });
  await writeFile(opts.imageEncoder, bytes);
  const count = [...tensors.keys()].filter((n) => n.startsWith(`${opts.prefix}.`)).length;
  console.log(`wrote ${opts.imageEncoder}: ${count} tensors of ${opts.prefix} from the ${tag} checkpoint (step ${manifest.step}) under torchvision names`);
}

// ---------------------------------------------------------------------------
// Shared pieces of train, loss and demo

type CompileModule = typeof import('../compiler/frontend/index.ts');

/** Compiles or throws a UsageError carrying the rendered diagnostics. */
async function compile(modelPath: string, opts: { model?: string; set: Record<string, string>; mode: 'train' | 'eval' }) {
  const fe: CompileModule = await import('../compiler/frontend/index.ts');
  const r = fe.compileModel({ path: modelPath }, { model: opts.model, set: opts.set, mode: opts.mode });
  // Command-line diagnostics render with lovtc's name; here they are lovt-run's.
  if (!r.ok || !r.graph || !r.model) throw new UsageError(fe.renderDiagnostics(r.diagnostics).replace(/^lovtc: /gm, ''));
  return { graph: r.graph, model: r.model };
}

async function readSafetensorsFile(file: string, what: string) {
  const { readSafetensorsFile } = await import('../runtime/platform/node-fs.ts');
  try {
    return (await readSafetensorsFile(file, `${what} ${file}`)).tensors;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** `synth` or `mimic:DIR`. */
function parseDataSpec(spec: string): { kind: 'synth' } | { kind: 'mimic'; dir: string } {
  if (spec === 'synth') return { kind: 'synth' };
  const m = /^mimic:(.+)$/.exec(spec);
  if (m) return { kind: 'mimic', dir: path.resolve(m[1]) };
  throw new UsageError(`--data expects 'synth' or 'mimic:DIR' (a MIMIC-CXR-JPG root), got '${spec}'`);
}

function formatLosses(losses: Record<string, number>, keys?: string[]): string {
  return (keys ?? Object.keys(losses)).map((k) => `${k.replace(/^loss\./, '')} ${fmt(losses[k])}`).join(', ');
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '?';
  return Number.isFinite(v) ? (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(2)) : String(v);
}

interface TrainCliOptions {
  model?: string;
  data?: string;
  studies: number;
  synthSeed: number;
  imageCache?: string;
  resize?: number;
  statsSample?: number;
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
  checkpointEvery?: number;
  resume?: string;
  init: string[];
  minutes?: number;
  valBatches?: number;
  report: boolean;
  heatmapStudies: number;
  /** Shown in report.md. */
  command?: string;
  /** Options given on the command line (not defaults). */
  explicit?: Set<string>;
}

/** The heatmap output the report draws when the model has it (models/lovt.lovt). */
const ATTENTION_OUTPUT = 'attention_r2i';

type Checkpoint = Awaited<ReturnType<typeof import('../runtime/train/checkpoint.ts').loadCheckpoint>>;
type CompiledModel = Awaited<ReturnType<typeof compile>>;

/** The run directory, the --set overrides and the data spec, and the checkpoint when resuming. */
async function resolveRun(modelPath: string, o: TrainCliOptions): Promise<{ runDir: string; set: Record<string, string>; dataSpec: string; resumeFrom: Checkpoint | null; o: TrainCliOptions }> {
  let set = parseSets(o.set);
  if (o.batch !== undefined) set.batch = String(o.batch);
  if (o.accumulate !== undefined) set['train.accumulate'] = String(o.accumulate);
  if (o.seed !== undefined) set['train.seed'] = String(o.seed);
  if (!o.resume) {
    const runDir = path.resolve(o.out ?? path.join('runs', `${path.basename(modelPath).replace(/\.lovt$/, '')}-${timestamp()}`));
    return { runDir, set, dataSpec: o.data ?? 'synth', resumeFrom: null, o };
  }
  const { nodeStorage } = await import('../runtime/platform/node-storage.ts');
  const { readManifest, loadCheckpoint } = await import('../runtime/train/checkpoint.ts');
  const runDir = path.resolve(o.resume);
  if (o.out && path.resolve(o.out) !== runDir) throw new UsageError(`--resume ${o.resume} continues in that directory; drop --out ${o.out}`);
  if (o.init.length) throw new UsageError('--init only applies to a new run (the checkpoint already holds every weight)');
  const manifest = await readManifest(nodeStorage(runDir), 'last');
  // A resume keeps the run's recipe: the same --set (vocab_size was derived from the data).
  const conflicts = Object.entries(set).filter(([k, v]) => (k in manifest.set ? manifest.set[k] !== v : k !== 'vocab_size'));
  if (conflicts.length) {
    throw new UsageError(`${runDir} was started with ${JSON.stringify(manifest.set)}; a resume cannot change ${conflicts.map(([k, v]) => `${k}=${v}`).join(', ')}`);
  }
  set = { ...manifest.set };
  const saved = manifest.data as { spec?: string; kind?: string; studies?: number; seed?: number; resize?: number; statsSample?: number };
  if (o.data && saved.spec && o.data !== saved.spec) throw new UsageError(`${runDir} was trained on --data ${saved.spec}, not ${o.data}`);
  // The data the run was trained on (the SynthCXR, the image size and pixel statistics),
  // whatever the defaults of this invocation.
  type Restored = [flag: string, key: 'studies' | 'synthSeed' | 'resize' | 'statsSample', value: number | undefined];
  const restored: Restored[] = [
    ['--stats-sample', 'statsSample', saved.statsSample],
    ...(saved.kind === 'synth'
      ? [['--studies', 'studies', saved.studies], ['--synth-seed', 'synthSeed', saved.seed]] satisfies Restored[]
      : [['--resize', 'resize', saved.resize]] satisfies Restored[]),
  ];
  for (const [flag, key, value] of restored) {
    if (value === undefined) continue;
    if (o.explicit?.has(key) && o[key] !== value) throw new UsageError(`${runDir} was trained with ${flag} ${value}, not ${o[key]}`);
    o = { ...o, [key]: value };
  }
  return { runDir, set, dataSpec: saved.spec ?? o.data ?? 'synth', resumeFrom: await loadCheckpoint(nodeStorage(runDir), 'last'), o };
}

/**
 * The data directory (generating SynthCXR when asked), the report encoder's tokenizer, and
 * for MIMIC the image cache (resized copies and pixel statistics, reused by later runs).
 */
async function prepareData(dataSpec: string, o: TrainCliOptions, imageSize: number) {
  const { ensureSynthDataset, cacheRoot } = await import('../runtime/platform/node-storage.ts');
  const { NodeFileSource } = await import('../runtime/platform/node-fs.ts');
  const { ReportTokenizer } = await import('../runtime/data/tokenizer.ts');
  const { DEFAULT_VOCAB, DEFAULT_RESIZE_MAX_SIDE, DEFAULT_STATS_SAMPLE_SIZE } = await import('../runtime/train/data-setup.ts');
  const data = parseDataSpec(dataSpec);
  const statsSample = o.statsSample ?? DEFAULT_STATS_SAMPLE_SIZE;
  const resize = o.resize ?? DEFAULT_RESIZE_MAX_SIDE;
  const info: Record<string, unknown> = { spec: dataSpec, statsSample };
  let dir: string;
  let imageCache: InstanceType<typeof NodeFileSource> | undefined;
  if (data.kind === 'synth') {
    if (o.imageCache || o.explicit?.has('resize')) throw new UsageError('--image-cache and --resize apply to --data mimic:DIR (SynthCXR images are generated at the model\'s size)');
    say(`SynthCXR: ${o.studies} studies, seed ${o.synthSeed}, ${imageSize} px (cached under ${cacheRoot()})`);
    const bar = progressBar('generating SynthCXR');
    const r = await ensureSynthDataset(cacheRoot(), { studies: o.studies, seed: o.synthSeed, imageSize, onProgress: (d, t) => bar.update(d, t) });
    bar.stop();
    dir = r.dir;
    Object.assign(info, { kind: 'synth', studies: o.studies, seed: o.synthSeed, imageSize, dir });
    if (!r.generated) say(`reusing ${dir}`);
  } else {
    dir = data.dir;
    // Nothing (the image cache) is created for a directory that is not a MIMIC root.
    await (await import('../runtime/data/mimic.ts')).checkMimicRoot(new NodeFileSource(dir));
    const cacheDir = path.resolve(o.imageCache ?? path.join(dir, IMAGE_CACHE_DIR));
    await mkdir(cacheDir, { recursive: true }).catch((e) => {
      throw new UsageError(`cannot create the image cache ${cacheDir}: ${e.code ?? e.message}; choose a writable directory with --image-cache DIR`);
    });
    imageCache = new NodeFileSource(cacheDir);
    say(`image cache: ${cacheDir} (images resized to ${resize} px once, reused by later runs)`);
    Object.assign(info, { kind: 'mimic', dir, resize });
  }
  const source = new NodeFileSource(dir);
  let tokenizer: import('../runtime/data/tokenizer.ts').ReportTokenizer;
  if (o.vocab) {
    const text = await readFile(o.vocab, 'utf8').catch((e) => {
      throw new UsageError(`cannot read --vocab ${o.vocab}: ${e.code ?? e.message}`);
    });
    tokenizer = o.vocab.endsWith('.json') ? ReportTokenizer.fromTokenizerJson(text, {}, o.vocab) : ReportTokenizer.fromVocabText(text, {}, o.vocab);
  } else {
    if (!(await source.exists(DEFAULT_VOCAB))) {
      throw new UsageError(`${dir} has no ${DEFAULT_VOCAB}: give the report encoder's BERT vocabulary with --vocab FILE (vocab.txt or tokenizer.json)`);
    }
    tokenizer = await ReportTokenizer.load(source, DEFAULT_VOCAB);
  }
  return { source, tokenizer, info, imageCache, resize, statsSample };
}

/** Default image cache of --data mimic:DIR, inside DIR. */
const IMAGE_CACHE_DIR = 'lovt-cache';

/**
 * One progress bar per stage of a multi-stage task (reading reports, resizing, statistics);
 * without a terminal, a line per tenth of a long stage (resizing MIMIC takes hours).
 */
function stagedProgress() {
  let stage = '';
  let bar: ReturnType<typeof progressBar> | null = null;
  let nextLine = 0;
  return {
    update: (name: string, done: number, total: number) => {
      if (name !== stage) {
        bar?.stop();
        stage = name;
        bar = progressBar(name, total);
        nextLine = 0;
      }
      bar!.update(done, total);
      if (!bar!.tty && total >= 1000 && done >= nextLine) {
        say(`${name}: ${done}/${total}`);
        nextLine = done + Math.ceil(total / 10);
      }
    },
    stop: () => bar?.stop(),
  };
}

/** The --init tensors by state name, matched against the model (every mismatch named). */
async function loadInitWeights(args: string[], model: CompiledModel) {
  const { parseInitArg, matchInitWeights } = await import('../runtime/train/weights.ts');
  const init = new Map<string, import('../runtime/safetensors.ts').HostTensor>();
  for (const arg of args) {
    const { prefix, file } = parseInitArg(arg);
    const r = matchInitWeights(model.graph.state, prefix, await readSafetensorsFile(file, '--init file'), file);
    for (const [k, v] of r.tensors) init.set(k, v);
    const ignored = r.ignored.length ? ` (ignored ${r.ignored.length}: ${r.ignored.slice(0, 4).join(', ')}${r.ignored.length > 4 ? ', …' : ''})` : '';
    say(`--init ${prefix}: ${r.tensors.size} tensors from ${file}${ignored}`);
  }
  return init;
}

/** Progress output for the trainer's events: a bar on a terminal, periodic lines elsewhere. */
function progressReporter(o: TrainCliOptions) {
  let bar: ReturnType<typeof progressBar> | null = null;
  let logEvery = 1;
  let timeBar = false;
  const onEvent = (e: import('../runtime/train/trainer.ts').TrainEvent): void => {
    switch (e.kind) {
      case 'start': {
        // With a time budget (and no step limit) the bar counts seconds, else steps.
        timeBar = e.maxSeconds !== null && o.steps === undefined;
        const limit = timeBar ? `for ${fmtDuration(e.maxSeconds!)}` : e.totalSteps ? `until step ${e.totalSteps}` : '';
        say(`${e.resumed ? `resuming at step ${e.step}` : 'training'}: ${e.stepsPerEpoch} optimizer steps per epoch${limit ? `, ${limit}` : ''}`);
        bar = timeBar ? progressBar('train', Math.round(e.maxSeconds!), 0, 's') : progressBar('train', e.totalSteps ?? undefined, e.step);
        logEvery = timeBar ? 10 : Math.max(1, Math.round((e.totalSteps ?? 100) / 20));
        break;
      }
      case 'step': {
        const sps = Number.isFinite(e.samplesPerSecond) ? e.samplesPerSecond.toFixed(1) : '-';
        bar!.update(timeBar ? Math.min(Math.round(e.elapsedSeconds), bar!.total) : e.step, undefined, { loss: fmt(e.losses['loss.total']), sps, epoch: e.epoch + 1, step: e.step });
        if (!bar!.tty && e.step % logEvery === 0) {
          say(`step ${e.step} epoch ${e.epoch + 1}: loss ${fmt(e.losses['loss.total'])}, lr ${e.lr.toExponential(2)}, ${sps} samples/s, ${fmtDuration(e.elapsedSeconds)}`);
        }
        break;
      }
      case 'validation':
        bar!.log(`epoch ${e.epoch + 1} validation (step ${e.step}): ${formatLosses(e.losses)}${e.improved ? '  (best so far)' : ''}`);
        break;
      case 'message':
        (bar ?? { log: say }).log(e.text);
        break;
      case 'checkpoint':
        break;
    }
  };
  return { onEvent, stop: () => bar?.stop() };
}

async function trainCommand(modelPath: string, options: TrainCliOptions): Promise<void> {
  if (options.steps !== undefined && options.epochs !== undefined) throw new UsageError('give --steps or --epochs, not both');
  const { runDir, set, dataSpec, resumeFrom, o } = await resolveRun(modelPath, options);

  // A first compile gives the data shapes; the vocabulary may then change vocab_size.
  let trainModel = await compile(modelPath, { model: o.model, set, mode: 'train' });
  const cfg = (name: string): number => {
    const v = trainModel.model.configs[name]?.value;
    if (typeof v !== 'number') throw new UsageError(`model ${trainModel.model.name} has no int config '${name}', which training needs`);
    return v;
  };
  const { source, tokenizer, info: dataInfo, imageCache, resize, statsSample } = await prepareData(dataSpec, o, cfg('image_size'));
  if ('vocab_size' in trainModel.model.configs) {
    if (set.vocab_size === undefined && cfg('vocab_size') !== tokenizer.vocabSize) {
      set.vocab_size = String(tokenizer.vocabSize);
      trainModel = await compile(modelPath, { model: o.model, set, mode: 'train' });
    } else if (cfg('vocab_size') < tokenizer.vocabSize) {
      throw new UsageError(`vocab_size ${cfg('vocab_size')} is smaller than the vocabulary's ${tokenizer.vocabSize} tokens`);
    }
  }
  const evalModel = await compile(modelPath, { model: o.model, set, mode: 'eval' });
  if (resumeFrom && resumeFrom.manifest.model.sourceHash !== trainModel.model.sourceHash) {
    throw new UsageError(`${runDir} was trained with a different version of ${resumeFrom.manifest.model.path} (or its imports); resume needs the same model source`);
  }
  const { openTrainingData } = await import('../runtime/train/data-setup.ts');
  const { createImageWorkers, defaultImageWorkerCount } = await import('../runtime/platform/node-workers.ts');
  const spec = trainModel.model.train;
  const setupProgress = stagedProgress();
  // The batches do not depend on the thread count, so a resume may use another one.
  const imageWorkers = createImageWorkers(o.dataWorkers ?? defaultImageWorkerCount());
  say(`images decoded, resized and augmented ${imageWorkers.threads > 0 ? `on ${imageWorkers.threads} worker thread${imageWorkers.threads > 1 ? 's' : ''}` : 'in the main thread'} (--data-workers)`);
  const training = await openTrainingData(source, {
    batch: cfg('batch'), seed: spec.seed, imageSize: cfg('image_size'), maxTokens: cfg('max_tokens'), maxSentences: cfg('max_sentences'), vocab: tokenizer,
    reportText: trainModel.model.configs.report_text?.value, imageCache, resizeMaxSide: resize, statsSampleSize: statsSample, imageWorkers,
    onProgress: setupProgress.update,
  }).finally(setupProgress.stop);
  say(`data: ${training.description}`);
  const init = o.init.length ? await loadInitWeights(o.init, trainModel) : undefined;

  const { nodeStorage } = await import('../runtime/platform/node-storage.ts');
  const { getNodeDevice } = await import('../runtime/platform/node.ts');
  const { Trainer } = await import('../runtime/train/trainer.ts');
  const device = await getNodeDevice();
  const storage = nodeStorage(runDir);
  say(`run directory: ${runDir}`);
  say(`model ${trainModel.model.name}: ${trainModel.model.counts.trainable.toLocaleString('en-US')} trainable parameters, batch ${spec.batch} × accumulate ${spec.accumulate}, ` +
    `${spec.optimizer.kind} lr ${spec.optimizer.lr}, ${spec.schedule.kind} schedule, seed ${spec.seed}; device ${device.description}`);
  const progress = progressReporter(o);
  const trainer = await Trainer.create({
    device, storage, train: trainModel, eval: evalModel, data: training, modelPath, set, dataInfo,
    maxSteps: o.steps, maxEpochs: o.epochs, maxSeconds: o.minutes !== undefined ? o.minutes * 60 : undefined,
    checkpointEvery: o.checkpointEvery, maxValidationBatches: o.valBatches, resume: resumeFrom, init, onEvent: progress.onEvent,
  });
  let result;
  try {
    result = await trainer.run();
  } finally {
    progress.stop();
  }
  say(`stopped: ${result.stopReason}. ${result.steps} optimizer steps, ${result.samplesSeen} samples in ${fmtDuration(result.wallSeconds)}; ` +
    `last train losses: ${formatLosses(result.lastLosses)}`);
  if (result.bestValidation) say(`best validation total ${fmt(result.bestValidation.value)} at step ${result.bestValidation.step} (best.json)`);
  if (o.report) {
    const { readMetrics } = await import('../runtime/train/metrics.ts');
    const { writeReport } = await import('../runtime/report/report.ts');
    const { heatmaps, heatmapSource } = await attentionHeatmaps(trainer, training.studyById, o.heatmapStudies);
    await writeReport(storage, {
      summary: {
        model: trainModel.model.name, modelPath, device: device.description, data: training.description, command: o.command,
        seed: spec.seed, steps: result.steps, epochs: result.epochs, samplesSeen: result.samplesSeen, wallSeconds: result.wallSeconds,
        stopReason: result.stopReason, bestValidation: result.bestValidation,
        parameters: { trainable: trainModel.model.counts.trainable, total: trainModel.model.counts.params },
      },
      lossTerms: trainer.lossTerms,
      records: await readMetrics(storage),
      heatmaps,
      heatmapSource,
      dropped: training.dataset.dropReport(),
    });
    say(`report: ${path.join(runDir, 'report.md')}`);
  }
  trainer.destroy();
  await training.close();
}

/** The report's heatmaps: the model's `attention_r2i` output on the first validation batch (if it has one). */
async function attentionHeatmaps(
  trainer: import('../runtime/train/trainer.ts').Trainer, studyById: Map<string, import('../runtime/data/mimic.ts').Study>, studies: number,
): Promise<{ heatmaps: import('../runtime/report/report.ts').StudyHeatmaps[]; heatmapSource?: string }> {
  const graph = trainer.evalGraph;
  if (!(ATTENTION_OUTPUT in graph.outputs) || studies <= 0) return { heatmaps: [] };
  const { studyHeatmaps } = await import('../runtime/report/report.ts');
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

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

function say(text: string): void {
  process.stdout.write(text + '\n');
}

function fmtDuration(seconds: number): string {
  return seconds >= 90 ? `${(seconds / 60).toFixed(1)} min` : `${seconds.toFixed(0)} s`;
}

/**
 * A cli-progress bar on an interactive terminal (counting steps, or seconds with
 * unit 's'); elsewhere a no-op with `tty: false` whose log() just prints.
 */
function progressBar(label: string, total?: number, start = 0, unit: '' | 's' = '') {
  const tty = !!process.stderr.isTTY;
  if (!tty) {
    return { tty, total: total ?? 1, update: (_v: number, _t?: number, _p?: object) => {}, log: (t: string) => say(t), stop: () => {} };
  }
  const counter = unit === 's' ? '{value}/{total} s | step {step}' : '{value}/{total}';
  const bar = new cliProgress.SingleBar(
    {
      format: label === 'train'
        ? `${label} {bar} ${counter} | epoch {epoch} | loss {loss} | {sps} samples/s | ETA {eta_formatted}`
        : `${label} {bar} {value}/{total} | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total ?? 1, start, { loss: '-', sps: '-', epoch: 1, step: 0 });
  const handle = {
    tty,
    total: total ?? 1,
    update: (v: number, t?: number, payload?: object) => {
      if (t !== undefined) {
        bar.setTotal(t);
        handle.total = t;
      }
      bar.update(v, payload);
    },
    log: (t: string) => {
      // Clear the bar's line, print, and let the next update redraw it.
      process.stderr.write('\r\x1b[K');
      say(t);
    },
    stop: () => bar.stop(),
  };
  return handle;
}

// ---------------------------------------------------------------------------
// loss

async function lossCommand(modelPath: string, o: { model?: string; weights?: string; batch?: string; grads?: string; set: string[] }): Promise<void> {
  if (!o.weights) throw new UsageError('give --weights W.safetensors (every parameter and buffer of the model)');
  if (!o.batch) throw new UsageError('give --batch X.safetensors (the model inputs: image, input_ids, attention_mask, token_sentence)');
  const weights = await readSafetensorsFile(o.weights, '--weights');
  const batch = await readSafetensorsFile(o.batch, '--batch');
  const model = await compile(modelPath, { model: o.model, set: parseSets(o.set), mode: 'train' });
  const { getNodeDevice } = await import('../runtime/platform/node.ts');
  const { evaluateLosses } = await import('../runtime/train/evaluate.ts');
  const r = await evaluateLosses(await getNodeDevice(), model, weights, batch, { grads: !!o.grads, weightsName: `--weights ${o.weights}`, batchName: `--batch ${o.batch}` });
  if (o.grads && r.grads) {
    const { writeSafetensors } = await import('../runtime/safetensors.ts');
    await mkdir(path.dirname(path.resolve(o.grads)), { recursive: true });
    await writeFile(o.grads, writeSafetensors(r.grads));
  }
  say(JSON.stringify(r.losses));
}

// ---------------------------------------------------------------------------
// synth

async function synthCommand(o: { out?: string; studies: number; seed: number; imageSize: number }): Promise<void> {
  if (!o.out) throw new UsageError('give --out DIR for the data set');
  const { writeSynthDataset } = await import('../runtime/platform/node-fs.ts');
  const bar = progressBar('generating SynthCXR');
  const s = await writeSynthDataset(o.out, { studies: o.studies, seed: o.seed, imageSize: o.imageSize, onProgress: (d, t) => bar.update(d, t) });
  bar.stop();
  say(`wrote ${o.out}: ${s.studies} studies of ${s.subjects} subjects (train ${s.splits.train}, validate ${s.splits.validate}, test ${s.splits.test}), ` +
    `${s.images.frontal} frontal + ${s.images.lateral} lateral images, vocabulary ${s.vocabSize}, ${s.files} files`);
}

// ---------------------------------------------------------------------------
// demo

const DEMO_MODEL = fileURLToPath(new URL('../models/lovt-tiny.lovt', import.meta.url));

async function demoCommand(o: { out?: string; minutes: number; studies: number; dataWorkers?: number }): Promise<void> {
  const out = o.out ?? path.join('runs', `demo-${timestamp()}`);
  say(`lovt demo: pre-training LoVT-tiny on a generated SynthCXR data set for ${o.minutes} min, then ${path.join(out, 'report.md')}`);
  await trainCommand(DEMO_MODEL, {
    // Accumulation 1 and 10× the reference LR, so that a few minutes show learning.
    data: 'synth', studies: o.studies, synthSeed: 0, set: ['train.accumulate=1', 'train.epochs=1000', 'train.optimizer.lr=1e-3'], init: [],
    out, minutes: o.minutes, report: true, heatmapStudies: 4, dataWorkers: o.dataWorkers,
    command: `lovt-run demo --out ${out} --minutes ${o.minutes}`,
  });
}

// ---------------------------------------------------------------------------

/** `--studies N`: the size of a generated SynthCXR (train --data synth, synth, demo). */
function synthStudiesOption(description: string): Option {
  return new Option('--studies <N>', description).argParser(positiveInt('--studies')).default(200);
}

/** `--data-workers N`: threads that decode and augment images (train, demo). */
function dataWorkersOption(): Option {
  return new Option('--data-workers <N>', 'threads decoding, resizing and augmenting images; 0: the main thread (default: cores - 1, at least 1)')
    .argParser(nonNegativeInt('--data-workers'));
}

function buildProgram(): Command {
  const program = new Command('lovt-run')
    .description('Train and inspect .lovt vision-language models on WebGPU')
    // Commander's own errors (unknown option, missing argument) as one line too.
    .configureOutput({
      outputError: (str, write) => write(`lovt-run: ${str.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')} (see lovt-run --help)\n`),
    });

  program
    .command('train')
    .description('train a model (default data: a generated SynthCXR data set)')
    .argument('<MODEL>', '.lovt model file')
    .option('--model <NAME>', 'which model of the file (default: its only model)')
    .option('--data <SPEC>', "'synth' (generated, cached) or 'mimic:DIR' (MIMIC-CXR-JPG layout)")
    .addOption(synthStudiesOption('SynthCXR size for --data synth'))
    .option('--synth-seed <S>', 'SynthCXR generator seed for --data synth', nonNegativeInt('--synth-seed'), 0)
    .option('--image-cache <DIR>', `resized image copies and pixel statistics for --data mimic, reused by later runs (default DATA/${IMAGE_CACHE_DIR})`)
    .option('--resize <PX>', 'longest side of the cached image copies for --data mimic (default 512)', positiveInt('--resize'))
    .option('--stats-sample <N>', 'images sampled for the train-split pixel statistics (default 4000)', positiveInt('--stats-sample'))
    .option('--vocab <FILE>', 'BERT vocabulary (vocab.txt or tokenizer.json); default DATA/vocab.txt')
    .addOption(dataWorkersOption())
    .option('--steps <N>', 'stop after N optimizer steps in total', positiveInt('--steps'))
    .option('--epochs <E>', 'stop after E epochs (default: the train section)', positiveInt('--epochs'))
    .option('--batch <B>', 'batch size (the config batch)', positiveInt('--batch'))
    .option('--accumulate <K>', 'micro-batches per optimizer step (train.accumulate)', positiveInt('--accumulate'))
    .option('--set <key=value>', 'override a config or train key (repeatable)', collect, [])
    .option('--seed <S>', 'run seed (train.seed)', nonNegativeInt('--seed'))
    .option('--out <RUN_DIR>', 'run directory (default runs/<model>-<time>)')
    .option('--checkpoint-every <K>', 'also save the last checkpoint every K optimizer steps', positiveInt('--checkpoint-every'))
    .option('--resume <RUN_DIR>', "continue a run from its last checkpoint (same model, --set and data)")
    .option('--init <PREFIX=FILE>', 'load pretrained weights under a state prefix, e.g. image_encoder=resnet50.safetensors (repeatable)', collect, [])
    .option('--minutes <M>', 'stop after M minutes of training', positiveNumber('--minutes'))
    .option('--val-batches <N>', 'validate on at most N batches', positiveInt('--val-batches'))
    .option('--no-report', 'skip report.md')
    .option('--heatmap-studies <N>', 'validation studies drawn in the report', nonNegativeInt('--heatmap-studies'), 4)
    .action((model: string, opts: TrainCliOptions, cmd: Command) => {
      const explicit = new Set(Object.keys(opts).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
      return trainCommand(model, { ...opts, explicit, command: ['lovt-run', ...process.argv.slice(2)].join(' ') });
    });

  program
    .command('loss')
    .description('one training-mode forward (BN batch statistics, no dropout): print every loss term as JSON')
    .argument('<MODEL>', '.lovt model file')
    .option('--model <NAME>', 'which model of the file')
    .option('--weights <FILE>', 'every parameter and buffer, by state name (.safetensors)')
    .option('--batch <FILE>', 'the model inputs by name (.safetensors)')
    .option('--grads <FILE>', 'also write d total / d parameter of every trainable parameter here')
    .option('--set <key=value>', 'override a config (repeatable)', collect, [])
    .action(lossCommand);

  program
    .command('synth')
    .description('write a SynthCXR data set (MIMIC-CXR-JPG layout, with boxes, masks and a vocabulary)')
    .option('--out <DIR>', 'output directory')
    .addOption(synthStudiesOption('number of studies'))
    .option('--seed <S>', 'generator seed', nonNegativeInt('--seed'), 0)
    .option('--image-size <PX>', 'image side in pixels', positiveInt('--image-size'), 256)
    .action(synthCommand);

  program
    .command('demo')
    .description('pre-train LoVT-tiny on SynthCXR for a few minutes and write a report with loss curves and attention heatmaps')
    .option('--out <RUN_DIR>', 'run directory (default runs/demo-<time>)')
    .option('--minutes <M>', 'training time', positiveNumber('--minutes'), 5)
    .addOption(synthStudiesOption('SynthCXR size'))
    .addOption(dataWorkersOption())
    .action(demoCommand);

  program
    .command('doctor')
    .description('show the WebGPU adapter, its features and limits (or how to get one)')
    .action(doctor);

  program
    .command('export')
    .description('write the image encoder of a run\'s best (else last) checkpoint under torchvision names')
    .argument('<RUN_DIR>', 'run directory written by `lovt-run train`')
    .option('--image-encoder <FILE>', 'output .safetensors for the image encoder')
    .addOption(new Option('--checkpoint <TAG>', 'which checkpoint').choices(['best', 'last']))
    .option('--prefix <NAME>', 'state prefix of the image encoder in the model', 'image_encoder')
    .action(exportCommand);

  return program;
}

function isGpuLike(err: unknown): boolean {
  return err instanceof Error && /GPU|WebGPU|adapter/i.test(err.message);
}

async function main(): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // One line: multi-line messages (rendered diagnostics) are printed as they are.
    process.stderr.write(`lovt-run: ${message}\n`);
    if (process.env.LOVT_DEBUG && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
    else if (!(err instanceof UsageError) && !isGpuLike(err) && err instanceof TypeError) {
      process.stderr.write('lovt-run: (this looks like a bug in lovt; set LOVT_DEBUG=1 to see where)\n');
    }
    return 1;
  }
}

process.exit(await main());
