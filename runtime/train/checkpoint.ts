// Checkpoints of a run directory.
//
//   RUN_DIR/checkpoints/step-00000120.safetensors   every state tensor (parameters,
//                                                   buffers, optimizer moments)
//   RUN_DIR/last.json, RUN_DIR/best.json            manifests: which weights file, its
//                                                   SHA-256, and everything else a resume
//                                                   needs (step, epoch, data position,
//                                                   RNG, schedule, early stopping, config)
//
// Crash safety comes from the order of atomic replacements: the weights file is
// written under a new name (temp + fsync + rename) before the manifest that points
// at it is replaced the same way; only then are weights files that no manifest
// references deleted. A kill at any instant therefore leaves every manifest pointing
// at a complete weights file whose hash it records.
//
// Every manifest and weights file records the id of the run that wrote it
// (runtime/train/run-dir.ts); loading checks that they agree and that best.json
// belongs to the same run as last.json, so no file left by another run is taken
// for this run's.

import { readSafetensors, writeSafetensors, type HostTensor } from '../safetensors.ts';
import type { LoaderPosition } from '../data/loader.ts';
import type { EarlyStopState } from './early-stop.ts';
import type { ScheduleState } from './lr-schedule.ts';
import { readJson, utf8, type Storage } from './storage.ts';
import { refuseNonFinite } from './finite.ts';

export const CHECKPOINT_FORMAT = 'lovt-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const CHECKPOINT_DIR = 'checkpoints';

export type CheckpointTag = 'last' | 'best';

/** Everything about the run that the trainer puts in a manifest. */
export interface CheckpointInfo {
  /** The run that wrote it (absent in checkpoints of older lovt versions). */
  runId?: string;
  model: {
    name: string;
    /** The model file as given on the command line. */
    path: string;
    /** Hash of the model source (ModelInfo.sourceHash): a resume refuses a changed model. */
    sourceHash: string;
    /** SHA-256 of the lovtc artifact's graph.json when the run trained one (`path` is its directory). */
    artifact?: string;
  };
  /** The --set overrides the run was started with. */
  set: Record<string, string>;
  /** Resolved model config values (after --set). */
  config: Record<string, unknown>;
  /** Resolved training options (batch, accumulate, optimizer, schedule, ...). */
  train: Record<string, unknown>;
  /** Dataset description, e.g. { kind: 'synth', dir, studies, seed }. */
  data: Record<string, unknown>;
  /** The run seed; every random stream derives from it and the step/position. */
  seed: number;
  /** Optimizer steps completed. */
  step: number;
  /** Epochs completed. */
  epoch: number;
  /** Where the data loader continues (epoch and samples consumed in it), so a resume continues mid-epoch. */
  dataPosition: LoaderPosition;
  schedule: ScheduleState;
  earlyStop: EarlyStopState | null;
  /** Latest numbers worth seeing in `cat last.json`: train losses, validation losses. */
  metrics: Record<string, number | null>;
}

export interface CheckpointManifest extends CheckpointInfo {
  format: typeof CHECKPOINT_FORMAT;
  version: typeof CHECKPOINT_VERSION;
  tag: CheckpointTag;
  weights: { file: string; sha256: string; bytes: number; tensors: number };
  createdAt: string;
}

export interface LoadedCheckpoint {
  manifest: CheckpointManifest;
  tensors: Map<string, HostTensor>;
}

export function manifestPath(tag: CheckpointTag): string {
  return `${tag}.json`;
}

export function weightsFileName(step: number): string {
  return `${CHECKPOINT_DIR}/step-${String(step).padStart(8, '0')}.safetensors`;
}

/** Hex SHA-256 (WebCrypto: available in Node >= 20 and browsers). */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Saves the state under each of `tags` (one weights file shared by all of them)
 * and deletes weights files that no manifest references any more.
 */
export async function saveCheckpoint(
  storage: Storage,
  tags: CheckpointTag[],
  tensors: Map<string, HostTensor>,
  info: CheckpointInfo,
): Promise<CheckpointManifest[]> {
  if (tags.length === 0) return [];
  // Never replace a good checkpoint with poison (the trainer's device check should make this unreachable).
  refuseNonFinite(tensors, `refusing to save the checkpoint of step ${info.step} (the existing ones stay): the state`);
  const file = weightsFileName(info.step);
  const bytes = writeSafetensors(tensors, {
    format: CHECKPOINT_FORMAT,
    model: info.model.name,
    step: String(info.step),
    ...(info.runId ? { run_id: info.runId } : {}),
  });
  await storage.writeFileAtomic(file, bytes);
  const weights = { file, sha256: await sha256Hex(bytes), bytes: bytes.length, tensors: tensors.size };
  const manifests: CheckpointManifest[] = [];
  for (const tag of tags) {
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      tag,
      ...info,
      weights,
      createdAt: new Date().toISOString(),
    };
    await storage.writeFileAtomic(manifestPath(tag), utf8(JSON.stringify(manifest, null, 2) + '\n'));
    manifests.push(manifest);
  }
  await pruneCheckpoints(storage);
  return manifests;
}

/** Whether the run directory has a manifest for `tag`. */
export function hasCheckpoint(storage: Storage, tag: CheckpointTag): Promise<boolean> {
  return storage.exists(manifestPath(tag));
}

export async function readManifest(storage: Storage, tag: CheckpointTag): Promise<CheckpointManifest> {
  if (!(await hasCheckpoint(storage, tag))) {
    throw new Error(`${storage.description} has no ${tag} checkpoint (${manifestPath(tag)} is missing)`);
  }
  const m = await readJson<CheckpointManifest>(storage, manifestPath(tag));
  const where = `${storage.description}/${manifestPath(tag)}`;
  if (m?.format !== CHECKPOINT_FORMAT) throw new Error(`${where} is not a lovt checkpoint manifest`);
  if (m.version !== CHECKPOINT_VERSION) {
    throw new Error(`${where} has checkpoint format version ${m.version}; this lovt reads version ${CHECKPOINT_VERSION}`);
  }
  if (typeof m.weights?.file !== 'string' || typeof m.weights.sha256 !== 'string') {
    throw new Error(`${where} does not name its weights file and hash`);
  }
  return m;
}

/** Reads a manifest and its weights, verifying the weights' size and SHA-256. */
export async function loadCheckpoint(storage: Storage, tag: CheckpointTag): Promise<LoadedCheckpoint> {
  const manifest = await readManifest(storage, tag);
  const where = `${storage.description}/${manifest.weights.file}`;
  if (!(await storage.exists(manifest.weights.file))) {
    throw new Error(`${manifestPath(tag)} refers to ${where}, which does not exist`);
  }
  const bytes = await storage.readFile(manifest.weights.file);
  const hash = await sha256Hex(bytes);
  if (bytes.length !== manifest.weights.bytes || hash !== manifest.weights.sha256) {
    throw new Error(
      `${where} does not match ${manifestPath(tag)} (size ${bytes.length} vs ${manifest.weights.bytes}, ` +
        `sha256 ${hash.slice(0, 12)}… vs ${manifest.weights.sha256.slice(0, 12)}…): the file was modified or is corrupt`,
    );
  }
  const { tensors, metadata } = readSafetensors(bytes);
  const fileRun = metadata.run_id;
  if (manifest.runId && fileRun && fileRun !== manifest.runId) {
    throw new Error(`${where} was written by run ${fileRun}, but ${manifestPath(tag)} is run ${manifest.runId}: the weights belong to another run`);
  }
  if (tag === 'best' && manifest.runId && (await hasCheckpoint(storage, 'last'))) {
    const last = await readManifest(storage, 'last');
    if (last.runId && last.runId !== manifest.runId) {
      throw new Error(
        `${storage.description}/${manifestPath('best')} belongs to run ${manifest.runId}, not to the run of ${manifestPath('last')} (${last.runId}): ` +
          'it was left by another run in this directory; use the last checkpoint (--checkpoint last)',
      );
    }
  }
  return { manifest, tensors };
}

/**
 * Deletes weights files no manifest refers to, and temp files left by an
 * interrupted write. Only one trainer writes a run directory at a time.
 */
export async function pruneCheckpoints(storage: Storage): Promise<void> {
  const keep = new Set<string>();
  for (const tag of ['last', 'best'] as const) {
    if (await hasCheckpoint(storage, tag)) keep.add((await readManifest(storage, tag)).weights.file);
  }
  for (const name of await storage.list(CHECKPOINT_DIR)) {
    const path = `${CHECKPOINT_DIR}/${name}`;
    if (!keep.has(path)) await storage.remove(path);
  }
  for (const name of await storage.list('')) {
    if (/\.json\.tmp-/.test(name)) await storage.remove(name);
  }
}
