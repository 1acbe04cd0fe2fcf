// Node.js FileSource over a directory, the Node entry point that writes SynthCXR to disk, and
// bounded reads of user-named files (regular files only, safetensors checked against their size).
// This is the only file in runtime/ that touches node:fs.
import { constants as bufferConstants } from 'node:buffer';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as nodePath from 'node:path';
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
      return st.isFile() ? { kind: 'file', size: st.size, mtimeMs: st.mtimeMs } : { kind: 'unreadable', detail: `it is ${kindOf(st)}, not a regular file` };
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
  await fsp.mkdir(outDir, { recursive: true });
  return generateSynthCXR(new NodeFileSource(outDir), opts);
}

// ---------------------------------------------------------------------------
// Bounded reads

/** "ENOENT: no such file or directory" from a Node fs error (without the repeated path). */
function fsErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const m = /^(\w+): (.*?), \w+ '.*'$/s.exec(e.message);
  return m ? `${m[1]}: ${m[2]}` : e.code ?? e.message;
}

function kindOf(st: import('node:fs').Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
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
    if (!st.isFile()) throw new Error(`cannot read ${label}: it is ${kindOf(st)}, not a regular file`);
    if (st.size > bufferConstants.MAX_LENGTH) throw new Error(`cannot read ${label}: it is ${st.size} bytes, more than the ${bufferConstants.MAX_LENGTH} bytes lovt reads at once`);
    return { handle, size: st.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Reads bytes [0, n) of an open file; a file that shrank meanwhile is an error. */
async function readPrefix(handle: fsp.FileHandle, n: number, label: string): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; ) {
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
