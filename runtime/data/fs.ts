// The file access the data pipeline needs, kept behind a tiny interface so that the same
// reader runs on Node (runtime/platform/node-fs.ts), in a browser (files the user picked,
// fetched URLs) and in tests (memory). Paths are relative to the dataset root and always use
// '/' separators.

export interface FileSource {
  /** A short description for messages (e.g. the root directory). */
  readonly description: string;
  /** The whole file. Rejects with an error naming the path when it cannot be read. */
  readFile(path: string): Promise<Uint8Array>;
  /** Whether a regular file exists at the path. */
  exists(path: string): Promise<boolean>;
  /** Names (not paths) of the entries directly inside a directory; [] when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** What is at the path (optional: fileStatus() answers from exists() for sources without it). */
  status?(path: string): Promise<FileStatus>;
}

/**
 * What is at a path: a regular file (with its size and modification time when the source
 * knows them), nothing, or something that cannot be read as a file (a directory, a symlink
 * loop, a FIFO: `detail` says which).
 */
export type FileStatus = { kind: 'file'; size?: number; mtimeMs?: number } | { kind: 'missing' } | { kind: 'unreadable'; detail: string };

export async function fileStatus(source: FileSource, path: string): Promise<FileStatus> {
  if (source.status) return source.status(path);
  return (await source.exists(path)) ? { kind: 'file' } : { kind: 'missing' };
}

/** A FileSource that can also store files (caches, generated datasets). */
export interface WritableFileSource extends FileSource {
  /** Writes the whole file, creating parent directories as needed. */
  writeFile(path: string, data: Uint8Array): Promise<void>;
}

export function isWritable(source: FileSource): source is WritableFileSource {
  return typeof (source as Partial<WritableFileSource>).writeFile === 'function';
}

/** Normalises a relative dataset path: '/' separators, no leading './' or '/', no '..'. */
export function normalizePath(path: string): string {
  const parts: string[] = [];
  for (const part of path.replace(/\\/g, '/').split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new Error(`path "${path}" leaves the dataset root`);
    parts.push(part);
  }
  return parts.join('/');
}

export function joinPath(...parts: string[]): string {
  return normalizePath(parts.filter((p) => p !== '').join('/'));
}

let memoryWrites = 0;

/** In-memory files: for browsers (user-provided files) and tests. */
export class MemoryFileSource implements WritableFileSource {
  readonly description: string;
  private readonly files = new Map<string, Uint8Array>();
  /** Each file's place in the order of all writes to memory sources: stands in for a modification time. */
  private readonly versions = new Map<string, number>();

  constructor(initial: Record<string, Uint8Array | string> = {}, description = 'memory') {
    this.description = description;
    for (const [path, data] of Object.entries(initial)) {
      this.files.set(normalizePath(path), typeof data === 'string' ? new TextEncoder().encode(data) : data);
    }
  }

  async readFile(path: string): Promise<Uint8Array> {
    const data = this.files.get(normalizePath(path));
    if (!data) throw new Error(`${this.description}: no file "${path}"`);
    return data;
  }

  async exists(path: string): Promise<boolean> {
    return this.files.has(normalizePath(path));
  }

  async status(path: string): Promise<FileStatus> {
    const p = normalizePath(path);
    const data = this.files.get(p);
    return data ? { kind: 'file', size: data.length, mtimeMs: this.versions.get(p) ?? 0 } : { kind: 'missing' };
  }

  async list(dir: string): Promise<string[]> {
    const prefix = normalizePath(dir);
    const names = new Set<string>();
    for (const path of this.files.keys()) {
      if (prefix !== '' && !path.startsWith(prefix + '/')) continue;
      const rest = prefix === '' ? path : path.slice(prefix.length + 1);
      names.add(rest.split('/')[0]);
    }
    return [...names].sort();
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    this.files.set(normalizePath(path), data.slice());
    this.versions.set(normalizePath(path), ++memoryWrites);
  }

  /** All stored paths, sorted. */
  paths(): string[] {
    return [...this.files.keys()].sort();
  }
}

/** Reads a UTF-8 text file. */
export async function readText(source: FileSource, path: string): Promise<string> {
  return new TextDecoder('utf-8').decode(await source.readFile(path));
}

/** The files below `dir` of another source, as a source of their own (e.g. one cache per image size). */
export class SubdirFileSource implements WritableFileSource {
  readonly description: string;

  constructor(
    readonly base: WritableFileSource,
    readonly dir: string,
  ) {
    this.dir = normalizePath(dir);
    this.description = `${base.description}/${this.dir}`;
  }

  readFile(path: string): Promise<Uint8Array> {
    return this.base.readFile(joinPath(this.dir, path));
  }

  exists(path: string): Promise<boolean> {
    return this.base.exists(joinPath(this.dir, path));
  }

  status(path: string): Promise<FileStatus> {
    return fileStatus(this.base, joinPath(this.dir, path));
  }

  list(dir: string): Promise<string[]> {
    return this.base.list(joinPath(this.dir, dir));
  }

  writeFile(path: string, data: Uint8Array): Promise<void> {
    return this.base.writeFile(joinPath(this.dir, path), data);
  }
}
