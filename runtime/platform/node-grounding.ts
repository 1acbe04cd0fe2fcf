// `lovt-run grounding RUN_DIR` on Node: opens a run (its best or last checkpoint, and the
// model it was trained from, compiled in eval mode with the run's --set), the data set
// (the run's own, or --data synth|DIR) the way training opens it (node-train.ts
// prepareData, data-setup.ts openTrainingData: the same sentences, tokens and pixel
// statistics), and scores phrase grounding on its test split (runtime/eval/grounding-run.ts).

import { stat, writeFile } from 'node:fs/promises';
import nodePath from 'node:path';
import { hasCheckpoint, loadCheckpoint, type CheckpointManifest, type CheckpointTag } from '../train/checkpoint.ts';
import { DEFAULT_VOCAB, openTrainingData } from '../train/data-setup.ts';
import { ATTENTION_OUTPUT, intConfig, resumeData, type ModelSource } from '../train/run-setup.ts';
import type { CompiledModel } from '../train/trainer.ts';
import { FINDING_TYPES } from '../data/synth/dataset.ts';
import type { RegionRule } from '../eval/grounding.ts';
import { runGrounding, type GroundingResult } from '../eval/grounding-run.ts';
import { getNodeDevice } from './node.ts';
import { makeDirectory } from './node-fs.ts';
import { openModel } from './node-model.ts';
import { nodeStorage } from './node-storage.ts';
import { prepareData, type RunOutput, type TrainOptions } from './node-train.ts';
import { createImageWorkers, imageWorkerThreads } from './node-workers.ts';

export interface GroundingOptions {
  /** 'synth', a SynthCXR directory, or 'mimic:DIR' (default: the data the run trained on). */
  data?: string;
  checkpoint?: CheckpointTag;
  /** Also write the result (rows and every scored sentence) here as JSON. */
  json?: string;
  dataWorkers?: number;
  /** Which regions count as inside a mask (default centre). */
  region?: RegionRule;
}

/** The model a checkpoint was trained from, compiled in `mode` with the run's --set; refused when the file changed since. */
export function openRunModel(manifest: CheckpointManifest, runDir: string, mode: 'train' | 'eval'): { source: ModelSource; model: CompiledModel } {
  const was = manifest.model;
  let source: ModelSource;
  try {
    source = openModel(was.path, { model: was.name });
  } catch (err) {
    throw new Error(
      `${runDir} was trained from ${was.path}: ${(err as Error).message} (paths are as given to lovt-run train: run from the directory it ran in)`,
    );
  }
  const model = source.compile(source.artifact ? {} : manifest.set, mode);
  const same = was.artifact ? was.artifact === source.artifact?.sha256 : !source.artifact && was.sourceHash === model.model.sourceHash;
  if (!same) throw new Error(`${was.path} (or one of its imports) has changed since ${runDir} was trained: its checkpoint may not fit it`);
  return { source, model };
}

/** `lovt-run grounding RUN_DIR`: the result (also written to --json FILE). */
export async function groundingCommand(runDir: string, o: GroundingOptions, out: RunOutput): Promise<GroundingResult> {
  const st = await stat(runDir).catch(() => null);
  if (!st?.isDirectory()) throw new Error(`${runDir}: no such run directory`);
  const storage = nodeStorage(runDir);
  const tag = o.checkpoint ?? ((await hasCheckpoint(storage, 'best')) ? 'best' : 'last');
  if (!o.checkpoint && tag === 'last') out.say(`${runDir} has no best checkpoint (no validation yet): using the last one`);
  const { manifest, tensors } = await loadCheckpoint(storage, tag);
  const { model } = openRunModel(manifest, runDir, 'eval');
  if (!(ATTENTION_OUTPUT in model.graph.outputs)) {
    throw new Error(
      `${runDir} is a run of ${manifest.model.name}, which has no '${ATTENTION_OUTPUT}' output (report→image attention over regions and sentences): ` +
        'phrase grounding needs a LoVT run (e.g. models/lovt-tiny.lovt)',
    );
  }
  const imageSize = intConfig(model, 'image_size');
  // The run's data options (SynthCXR size and seed, statistics sample), as a resume restores them.
  const restored = resumeData(manifest, { studies: 200, synthSeed: 0, init: [] }, runDir);
  const spec = o.data === undefined ? restored.dataSpec : o.data === 'synth' || o.data.startsWith('mimic:') ? o.data : `mimic:${o.data}`;
  const request: TrainOptions = { ...restored.request, set: [], init: [], report: false, heatmapStudies: 0 };
  // Another data set has its own vocabulary: the model reads token ids of the run's.
  const runVocab = typeof manifest.data.dir === 'string' ? nodePath.join(manifest.data.dir, DEFAULT_VOCAB) : undefined;
  if (o.data !== undefined && runVocab) {
    if (await stat(runVocab).catch(() => null)) request.vocab = runVocab;
    else out.say(`the run's vocabulary ${runVocab} is gone: tokenising with the data set's own, which must be the same`);
  }
  out.say(`grounding ${runDir} (${manifest.model.name}, ${tag} checkpoint, step ${manifest.step}) on --data ${spec}`);
  const prepared = await prepareData(spec, request, imageSize, out);
  const workers = imageWorkerThreads(o.dataWorkers);
  const data = await openTrainingData(prepared.source, {
    batch: intConfig(model, 'batch'),
    seed: manifest.seed,
    imageSize,
    maxTokens: intConfig(model, 'max_tokens'),
    maxSentences: intConfig(model, 'max_sentences'),
    vocab: prepared.tokenizer,
    imageCache: prepared.imageCache,
    resizeMaxSide: prepared.resize,
    statsSampleSize: prepared.statsSample,
    imageWorkers: createImageWorkers(workers.threads),
    onProgress: out.stage?.bind(out),
  }).finally(() => out.stagesDone?.());
  try {
    const result = await runGrounding({
      device: await getNodeDevice(),
      model,
      weights: tensors,
      dataset: data.dataset,
      source: prepared.source,
      norm: data.norm,
      tokenIds: { clsId: data.tokenizer.clsId, sepId: data.tokenizer.sepId, padId: data.tokenizer.padId },
      types: FINDING_TYPES,
      rule: o.region,
      onProgress: (d, t) => out.stage?.('grounding test images', d, t),
    });
    out.stagesDone?.();
    if (o.json) {
      await makeDirectory(nodePath.dirname(nodePath.resolve(o.json)), '--json');
      const { sentences, ...summary } = result;
      const json = {
        format: 'lovt phrase grounding 1',
        run: runDir,
        checkpoint: { tag, step: manifest.step },
        data: spec,
        ...summary,
        sentences: sentences.map((s) => ({ image: s.image, ...s.target, hit: s.hit, inside: s.inside, cnr: s.cnr, attention: Array.from(s.sample.attention) })),
      };
      await writeFile(o.json, JSON.stringify(json, null, 1) + '\n');
    }
    return result;
  } finally {
    await data.close();
  }
}
