// Node.js FileSource over a directory, the Node entry point that writes SynthCXR to disk,
// the one safe way to create a directory a user named (makeDirectory), and bounded reads of
// user-named files (regular files only, safetensors checked against their size).
// This is the only file in runtime/ that touches node:fs.
import { constants as bufferConstants } from 'node:buffer';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
import { fileKind } from '../../compiler/frontend/file-kind.ts';
import { SafetensorsError, decodeSafetensors, parseSafetensorsHeader, safetensorsHeaderLength, type SafetensorsContents } from '../safetensors.ts';
import { normalizePath, type FileStatus, type WritableFileSource } from '../data/fs.ts';
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

  readFile(path: string): Promise<Uint8Array> {
    return readRegularFile(this.resolve(path));
  }

  async exists(path: string): Promise<boolean> {
    try {
      return (await fsp.stat(this.resolve(path))).isFile();
    } catch {
      return false;
    }
  }

  async status(path: string): Promise<FileStatus> {
    try {
      const st = await fsp.stat(this.resolve(path));
      return st.isFile() ? { kind: 'file', size: st.size, mtimeMs: st.mtimeMs } : { kind: 'unreadable', detail: `it is ${fileKind(st)}, not a regular file` };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'ENOENT' || code === 'ENOTDIR' ? { kind: 'missing' } : { kind: 'unreadable', detail: fsErrorText(err) };
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
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x1cd1, 'devpts'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'],
  [0xde5e81e4, 'efivarfs'],
  [0x42494e4d, 'binfmt_misc'],
  [0x19800202, 'mqueue'],
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

// ---------------------------------------------------------------------------
// Bounded reads

/** "ENOENT: no such file or directory" from a Node fs error (without the repeated path). */
function fsErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const m = /^(\w+): (.*?), \w+ '.*'$/s.exec(e.message);
  return m ? `${m[1]}: ${m[2]}` : (e.code ?? e.message);
}

/**
 * Opens `path` for reading if it is a regular file, with its size. A FIFO would block the
 * open or the read forever and /dev/zero never ends, so anything else is refused; the open is
 * non-blocking so that a FIFO without a writer cannot hang it. `label` names the file in
 * errors ("--weights /x.safetensors").
 */
export async function openRegularFile(path: string, label = path): Promise<{ handle: fsp.FileHandle; size: number }> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new Error(`cannot read ${label}: ${fsErrorText(err)}`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`cannot read ${label}: it is ${fileKind(st)}, not a regular file`);
    if (st.size > bufferConstants.MAX_LENGTH)
      throw new Error(`cannot read ${label}: it is ${st.size} bytes, more than the ${bufferConstants.MAX_LENGTH} bytes lovt reads at once`);
    return { handle, size: st.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Reads bytes [0, n) of an open file; a file that shrank meanwhile is an error. */
async function readPrefix(handle: fsp.FileHandle, n: number, label: string): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const { bytesRead } = await handle.read(out, at, n - at, at);
    if (bytesRead === 0) throw new Error(`cannot read ${label}: it ended after ${at} of ${n} bytes (changed while being read?)`);
    at += bytesRead;
  }
  return out;
}

/** A whole regular file (see openRegularFile). */
export async function readRegularFile(path: string, label = path): Promise<Uint8Array> {
  const { handle, size } = await openRegularFile(path, label);
  try {
    return await readPrefix(handle, size, label);
  } catch (err) {
    throw (err as Error).message.startsWith('cannot read') ? err : new Error(`cannot read ${label}: ${fsErrorText(err)}`);
  } finally {
    await handle.close();
  }
}

/**
 * A safetensors file, read in bounded steps: the file type, then its 8-byte header length
 * against the file size, then the header, validated against the file size (the tensors must
 * tile the data section exactly), and only then the data. `label` names the file in errors.
 */
export async function readSafetensorsFile(path: string, label = path): Promise<SafetensorsContents> {
  const { handle, size } = await openRegularFile(path, label);
  try {
    try {
      const headerLength = safetensorsHeaderLength(await readPrefix(handle, Math.min(size, 8), label), size);
      const header = parseSafetensorsHeader(await readPrefix(handle, 8 + headerLength, label), { fileLength: size });
      return decodeSafetensors(await readPrefix(handle, size, label), header);
    } catch (err) {
      if (err instanceof SafetensorsError) throw new Error(`${label}: ${err.message}`);
      throw (err as Error).message.startsWith('cannot read') ? err : new Error(`cannot read ${label}: ${fsErrorText(err)}`);
    }
  } finally {
    await handle.close();
  }
}
