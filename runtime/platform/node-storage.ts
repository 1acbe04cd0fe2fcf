// Node.js Storage for run directories: node-fs.ts's NodeFileSource (read, list,
// plain write) plus durable atomic replacement (temp file + fsync + rename +
// directory fsync), append and delete; and the SynthCXR cache behind --data synth.
import { promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
import * as os from 'node:os';
import { normalizePath } from '../data/fs.ts';
import type { Storage } from '../train/storage.ts';
import { NodeFileSource, writeSynthDataset } from './node-fs.ts';

let tempCounter = 0;

export class NodeStorage extends NodeFileSource implements Storage {
  /** Absolute path of a run-relative path. */
  pathOf(path: string): string {
    return nodePath.join(this.root, ...normalizePath(path).split('/'));
  }

  async writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
    const target = this.pathOf(path);
    await fsp.mkdir(nodePath.dirname(target), { recursive: true });
    const temp = await this.writeDurableTemp(target, data);
    try {
      await this.publish(temp, target);
    } catch (err) {
      await fsp.rm(temp, { force: true });
      throw new Error(`cannot write ${target}: ${(err as Error).message}`);
    }
  }

  /** Writes `data` next to `target` under a temporary name and flushes it to disk. */
  protected async writeDurableTemp(target: string, data: Uint8Array): Promise<string> {
    const temp = `${target}.tmp-${process.pid}-${tempCounter++}`;
    const handle = await fsp.open(temp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } catch (err) {
      await handle.close();
      await fsp.rm(temp, { force: true });
      throw new Error(`cannot write ${target}: ${(err as Error).message}`);
    }
    await handle.close();
    return temp;
  }

  /** Renames the flushed temp file over the target, then flushes the directory entry. */
  protected async publish(temp: string, target: string): Promise<void> {
    await fsp.rename(temp, target);
    await syncDirectory(nodePath.dirname(target));
  }

  async appendFile(path: string, data: Uint8Array): Promise<void> {
    const target = this.pathOf(path);
    await fsp.mkdir(nodePath.dirname(target), { recursive: true });
    await fsp.appendFile(target, data);
  }

  async remove(path: string): Promise<void> {
    await fsp.rm(this.pathOf(path), { force: true });
  }
}

async function syncDirectory(dir: string): Promise<void> {
  // Directory fsync makes the rename itself durable; some platforms (Windows) refuse
  // to open directories, where rename durability is the file system's business.
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(dir, 'r');
    await handle.sync();
  } catch {
    /* not supported here */
  } finally {
    await handle?.close();
  }
}

export function nodeStorage(runDir: string): NodeStorage {
  return new NodeStorage(runDir);
}

// ---------------------------------------------------------------------------
// The SynthCXR cache behind `--data synth`

export interface SynthCacheOptions {
  studies: number;
  seed: number;
  imageSize: number;
  onProgress?: (done: number, total: number) => void;
}

/** Where generated data sets are kept: $LOVT_CACHE, else ~/.cache/lovt. */
export function cacheRoot(): string {
  return process.env.LOVT_CACHE || nodePath.join(os.homedir(), '.cache', 'lovt');
}

const SYNTH_COMPLETE = '.lovt-synth-complete.json';

/**
 * A SynthCXR data set for (studies, seed, image size): reused when a complete one
 * is cached, else generated into a temporary directory that is renamed into place
 * when done (so an interrupted generation is never mistaken for a data set).
 * Returns its directory and whether it was generated now.
 */
export async function ensureSynthDataset(root: string, opts: SynthCacheOptions): Promise<{ dir: string; generated: boolean }> {
  const dir = nodePath.join(root, `synth-n${opts.studies}-seed${opts.seed}-px${opts.imageSize}`);
  if (await isFile(nodePath.join(dir, SYNTH_COMPLETE))) return { dir, generated: false };
  await fsp.mkdir(root, { recursive: true });
  const temp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    const summary = await writeSynthDataset(temp, { studies: opts.studies, seed: opts.seed, imageSize: opts.imageSize, onProgress: opts.onProgress });
    await fsp.writeFile(nodePath.join(temp, SYNTH_COMPLETE), JSON.stringify({ ...opts, onProgress: undefined, summary }, null, 2) + '\n');
    await fsp.rm(dir, { recursive: true, force: true }); // an incomplete leftover
    await fsp.rename(temp, dir);
  } catch (err) {
    await fsp.rm(temp, { recursive: true, force: true });
    // Another process may have finished the same data set meanwhile.
    if (await isFile(nodePath.join(dir, SYNTH_COMPLETE))) return { dir, generated: false };
    throw err;
  }
  return { dir, generated: true };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await fsp.stat(path)).isFile();
  } catch {
    return false;
  }
}
