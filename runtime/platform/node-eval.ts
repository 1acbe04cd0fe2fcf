// `lovt-run eval` on Node: the encoders (--init: pre-training run directories,
// torchvision .safetensors, random), the tasks (--task / --suite, runtime/eval/tasks.ts),
// the SynthCXR data (the cached `--data synth` or a `lovt-run synth` directory), then the
// protocol (runtime/eval/protocol.ts) with the head trainer (runtime/eval/head-trainer.ts)
// and the results files (runtime/eval/results.ts). Every input error surfaces before the
// device is opened. bin/lovt-run.ts only wires the options.
import { readFile, stat } from 'node:fs/promises';
import nodePath from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';
import { formatDuration } from '../report/report.ts';
import { hasCheckpoint, loadCheckpoint, sha256Hex } from '../train/checkpoint.ts';
import type { CompiledModel } from '../train/trainer.ts';
import {
  checkEncodersFit,
  encoderFromCheckpoint,
  encoderFromTorchvision,
  HeadTrainer,
  parseInitSpec,
  randomEncoder,
  resolveArch,
  type Encoder,
} from '../eval/head-trainer.ts';
import { checkSettings, runProtocol, type ProtocolSettings, type TrainRequest } from '../eval/protocol.ts';
import { RESULTS_JSON, RESULTS_MD, resultsTable, writeResults, type SuiteResults } from '../eval/results.ts';
import { openSynthTask, readTaskSamples, synthTaskSpec, type SynthTaskData } from '../eval/synth-tasks.ts';
import { resolveTasks, type EvalTask } from '../eval/tasks.ts';
import { getNodeDevice } from './node.ts';
import { makeDirectory, NodeFileSource, readSafetensorsFile } from './node-fs.ts';
import { timestamp } from './node-run-dir.ts';
import { nodeStorage } from './node-storage.ts';
import { cachedSynth, type RunOutput } from './node-train.ts';
import { createImageWorkers, imageWorkerThreads } from './node-workers.ts';

/** models/eval/, where the heads and the feature model live. */
export const EVAL_MODELS_DIR = fileURLToPath(new URL('../../models/eval/', import.meta.url));

/** The image size of an evaluation when no encoder says (lovt-tiny's, and the cached SynthCXR's). */
export const DEFAULT_EVAL_IMAGE_SIZE = 128;

export interface EvalOptions {
  init: string[];
  task: string[];
  suite?: string;
  /** 'synth' (default) or a directory written by `lovt-run synth`. */
  data?: string;
  studies: number;
  synthSeed: number;
  /** Percent of the training split (1, 10, 100). */
  fraction: number;
  seeds: number;
  lr?: number;
  maxEpochs?: number;
  imageSize?: number;
  out?: string;
  resume?: string;
  dataWorkers?: number;
}

/** Lines and setup-stage progress (no trainer events). */
export type EvalOutput = Pick<RunOutput, 'say' | 'stage' | 'stagesDone'>;

async function kindOf(path: string): Promise<'file' | 'directory' | 'missing' | 'other'> {
  try {
    const s = await stat(path);
    return s.isFile() ? 'file' : s.isDirectory() ? 'directory' : 'other';
  } catch {
    return 'missing';
  }
}

/** Loads one --init encoder (before any device work). */
export async function loadEncoder(arg: string): Promise<Encoder> {
  const spec = parseInitSpec(arg);
  if (spec.kind === 'random') return randomEncoder();
  const kind = await kindOf(spec.path);
  if (spec.kind === 'safetensors') {
    if (kind !== 'file') throw new Error(`--init ${arg}: ${kind === 'missing' ? 'no such file' : 'not a regular file'}`);
    const { tensors } = await readSafetensorsFile(spec.path, `--init ${spec.path}`);
    return encoderFromTorchvision(spec.name, spec.path, tensors, await sha256Hex(new Uint8Array(await readFile(spec.path))));
  }
  if (kind !== 'directory') {
    throw new Error(
      `--init ${arg}: ${kind === 'missing' ? 'no such run directory' : 'not a directory'}; give a pre-training run directory, a .safetensors file under torchvision names, or 'random'`,
    );
  }
  const storage = nodeStorage(spec.path);
  const tag = (await hasCheckpoint(storage, 'best')) ? 'best' : 'last';
  if (!(await hasCheckpoint(storage, 'last')) && tag === 'last') throw new Error(`--init ${arg}: ${spec.path} holds no checkpoint (best.json or last.json)`);
  const { manifest, tensors } = await loadCheckpoint(storage, tag);
  return encoderFromCheckpoint(spec.name, spec.path, manifest, tensors);
}

/** `lovt-run eval`: trains the heads, writes the results; returns them and the output directory. */
export async function evalCommand(o: EvalOptions, out: EvalOutput): Promise<{ results: SuiteResults; dir: string }> {
  if (o.resume && o.out && nodePath.resolve(o.out) !== nodePath.resolve(o.resume))
    throw new Error(`--resume ${o.resume} continues in that directory; drop --out ${o.out}`);
  if (!(Number.isFinite(o.fraction) && o.fraction > 0 && o.fraction <= 100))
    throw new Error(`--fraction must be a percentage in (0, 100] (the paper uses 1, 10, 100), got ${o.fraction}`);
  const tasks = resolveTasks(o.task, o.suite);
  if (o.init.length === 0) throw new Error('give at least one encoder: --init RUN_DIR | FILE.safetensors | random (repeatable)');
  const encoders: Encoder[] = [];
  for (const arg of o.init) encoders.push(await loadEncoder(arg));
  for (const e of encoders)
    out.say(
      `encoder ${e.ref.name}: ${e.arch ? e.description : `${e.description}, ${resolveArch(e, encoders).resnet} width ${resolveArch(e, encoders).width}`}`,
    );

  // The data; the eval image size: --image-size, else the encoders' pre-training size, else the data set's image size (128 for --data synth).
  const dataSpec = o.data ?? 'synth';
  let imageSize = o.imageSize ?? encoders.find((e) => e.imageSize)?.imageSize;
  let dir: string;
  if (dataSpec === 'synth') {
    imageSize ??= DEFAULT_EVAL_IMAGE_SIZE;
    dir = await cachedSynth(o, imageSize, out);
  } else {
    if ((await kindOf(dataSpec)) !== 'directory')
      throw new Error(`--data ${dataSpec}: no such directory; give 'synth' or a directory written by \`lovt-run synth --out DIR\``);
    dir = nodePath.resolve(dataSpec);
    if (imageSize === undefined) {
      const first = (await readTaskSamples(new NodeFileSource(dir), synthTaskSpec(tasks[0].data)))[0];
      imageSize = first ? Math.max(first.width, first.height) : DEFAULT_EVAL_IMAGE_SIZE;
    }
  }
  const size = imageSize;
  const workers = createImageWorkers(imageWorkerThreads(o.dataWorkers).threads);
  try {
    const source = new NodeFileSource(dir);
    const data = new Map<string, SynthTaskData>();
    for (const t of tasks) {
      if (data.has(t.data)) continue;
      const d = await openSynthTask(source, synthTaskSpec(t.data), {
        imageSize: size,
        fraction: o.fraction,
        workers,
        onProgress: (stage, done, total) => out.stage?.(stage, done, total),
      });
      out.stagesDone?.();
      out.say(`data: ${d.description}`);
      data.set(t.data, d);
    }

    const settings: ProtocolSettings = {
      tasks: tasks.map((t) => ({ name: t.name, metric: t.metric, lrGrid: t.lrGrid })),
      encoders: encoders.map((e) => e.ref),
      seeds: o.seeds,
      lr: o.lr ?? null,
      context: {
        data: dataSpec === 'synth' ? `synth (${o.studies} studies, seed ${o.synthSeed})` : dir,
        fraction: o.fraction,
        imageSize: size,
        maxEpochs: o.maxEpochs ?? 'task default',
      },
    };
    const runsPerCell = (t: EvalTask) => (settings.lr != null ? o.seeds : t.lrGrid.length + o.seeds - 1);

    const compileCache = new Map<string, CompiledModel>();
    const compile = (file: string, model: string, set: Record<string, string>, mode: 'train' | 'eval') => {
      const key = JSON.stringify([file, model, set, mode]);
      let m = compileCache.get(key);
      if (!m) compileCache.set(key, (m = compileModelOrThrow({ path: nodePath.join(EVAL_MODELS_DIR, file) }, { model, set, mode })));
      return m;
    };
    checkSettings(settings);
    checkEncodersFit(compile, encoders, size);
    const outDir = o.resume ?? o.out ?? nodePath.join('runs', `eval-${timestamp()}`);
    await makeDirectory(outDir, '--out');
    const storage = nodeStorage(outDir);

    const device = await getNodeDevice();
    out.say(`device: ${device.description}; output: ${outDir}`);
    const trainer = new HeadTrainer({
      device,
      compile,
      tasks,
      encoders,
      data,
      maxEpochs: o.maxEpochs,
      runsPerCell,
      say: out.say,
    });
    const t0 = performance.now();
    try {
      const label = (r: TrainRequest) => `${r.task} · ${r.encoder} · ${r.phase} · lr ${r.lr} · seed ${r.seed}`;
      const outcome = await runProtocol({
        storage,
        settings,
        resume: !!o.resume,
        trainOne: trainer.trainOne,
        onEvent: (e) => {
          if (e.kind === 'done' || e.kind === 'recorded') {
            const r = e.result;
            const pct = (v: number) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : 'NaN');
            const epochs = typeof r.epochs === 'number' ? `, ${r.epochs} epochs (best ${r.bestEpoch ?? '-'})` : '';
            out.say(
              `[${e.index + 1}/${e.total}] ${label(e.run)}: val ${pct(r.valMetric)}, test ${pct(r.testMetric)}` +
                (e.kind === 'recorded' ? ' (recorded in runs.jsonl)' : `${epochs}, ${r.wallSeconds.toFixed(1)} s`),
            );
          } else if (e.kind === 'chosen') out.say(`${e.task} · ${e.encoder}: chose lr ${e.lr} (best validation metric of the grid)`);
        },
      });
      const results = await writeResults(storage, outcome);
      out.say(`\n${resultsTable(results)}\n`);
      out.say(`trained ${outcome.trained} runs, reused ${outcome.reused} in ${formatDuration((performance.now() - t0) / 1000)}`);
      out.say(
        `wrote ${nodePath.join(outDir, RESULTS_MD)}, ${nodePath.join(outDir, RESULTS_JSON)}, ${results.tasks.map((t) => nodePath.join(outDir, t.chart)).join(', ')}`,
      );
      return { results, dir: outDir };
    } finally {
      trainer.destroy();
    }
  } finally {
    await workers.close();
  }
}
