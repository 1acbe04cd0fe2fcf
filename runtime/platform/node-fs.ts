// Node.js FileSource over a directory, the Node entry point that writes SynthCXR to disk,
// and the one safe way to create a directory a user named (makeDirectory).
import { promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
import { fileKind } from '../../compiler/frontend/file-kind.ts';
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
  await makeDirectory(outDir, 'the data set directory');
  return generateSynthCXR(new NodeFileSource(outDir), opts);
}

/** Linux statfs magic numbers of kernel file systems that hold no user files. */
const SPECIAL_FILE_SYSTEMS = new Map<number, string>([
  [0x9fa0, 'proc'], [0x62656572, 'sysfs'], [0x1cd1, 'devpts'], [0x64626720, 'debugfs'], [0x74726163, 'tracefs'],
  [0x27e0eb, 'cgroup'], [0x63677270, 'cgroup2'], [0x73636673, 'securityfs'], [0xcafe4a11, 'bpf'], [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'], [0xde5e81e4, 'efivarfs'], [0x42494e4d, 'binfmt_misc'], [0x19800202, 'mqueue'],
]);

/**
 * Creates `dir` and its missing parents, one level at a time: Node's recursive
 * mkdir never returns on procfs (it retries the parent forever). Refuses a path
 * through a file, and special file systems (/proc, /sys, /dev and the like), with
 * `what` (e.g. "--out") and the reason in the message. Resolves to whether it
 * created `dir`.
 */
export async function makeDirectory(dir: string, what: string): Promise<boolean> {
  const target = nodePath.resolve(dir);
  const missing: string[] = [];
  let existing = target;
  for (;;) {
    try {
      const st = await fsp.stat(existing);
      if (!st.isDirectory()) throw new Error(`${what} ${dir}: ${existing === target ? 'it' : existing} is ${fileKind(st)}, not a directory`);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === undefined) throw err;
      const parent = nodePath.dirname(existing);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === existing) throw new Error(`${what} ${dir}: cannot use ${existing} (${code})`);
      missing.push(existing);
      existing = parent;
    }
  }
  const fs = await fsp.statfs(existing).catch(() => undefined);
  const special = fs && SPECIAL_FILE_SYSTEMS.get(fs.type);
  const real = await fsp.realpath(existing);
  const underDev = (real === '/dev' || real.startsWith('/dev/')) && !real.startsWith('/dev/shm');
  if (special || underDev) {
    throw new Error(`${what} ${dir}: ${real} is on the ${special ?? 'device'} file system, which holds no files; choose a directory on a disk`);
  }
  for (const d of missing.reverse()) {
    try {
      await fsp.mkdir(d);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Created meanwhile by another process: fine when it is a directory.
      if (code === 'EEXIST' && (await fsp.stat(d)).isDirectory()) continue;
      throw new Error(`${what} ${dir}: cannot create ${d} (${code ?? (err as Error).message})`);
    }
  }
  return missing.length > 0;
}
