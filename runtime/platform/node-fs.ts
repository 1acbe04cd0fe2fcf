// Node.js FileSource over a directory, and the Node entry point that writes SynthCXR to disk.
// This is the only file in runtime/ that touches node:fs.
import { promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
import { normalizePath, type WritableFileSource } from '../data/fs.ts';
import { generateSynthCXR, type SynthOptions, type SynthSummary } from '../data/synth/dataset.ts';

export class NodeFileSource implements WritableFileSource {
  readonly description: string;
  readonly root: string;

  constructor(root: string) {
    this.root = nodePath.resolve(root);
    this.description = this.root;
  }

  private resolve(path: string): string {
    return nodePath.join(this.root, ...normalizePath(path).split('/'));
  }

  async readFile(path: string): Promise<Uint8Array> {
    try {
      const buffer = await fsp.readFile(this.resolve(path));
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } catch (err) {
      throw new Error(`cannot read ${this.resolve(path)}: ${(err as Error).message}`);
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      return (await fsp.stat(this.resolve(path))).isFile();
    } catch {
      return false;
    }
  }

  async list(dir: string): Promise<string[]> {
    try {
      return (await fsp.readdir(this.resolve(dir))).sort();
    } catch {
      return [];
    }
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    const full = this.resolve(path);
    await fsp.mkdir(nodePath.dirname(full), { recursive: true });
    // Write then rename so that an interrupted write never leaves a half file behind
    // (the pixel-statistics cache is rewritten while other processes may read it).
    const tmp = `${full}.tmp-${process.pid}`;
    await fsp.writeFile(tmp, data);
    await fsp.rename(tmp, full);
  }
}

export function nodeFileSource(root: string): NodeFileSource {
  return new NodeFileSource(root);
}

/** Writes a SynthCXR dataset in the MIMIC-CXR-JPG layout under outDir (created if needed). */
export async function writeSynthDataset(outDir: string, opts: SynthOptions): Promise<SynthSummary> {
  await fsp.mkdir(outDir, { recursive: true });
  return generateSynthCXR(new NodeFileSource(outDir), opts);
}
