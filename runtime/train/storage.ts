// Where a run directory lives: a platform-neutral interface so the trainer,
// checkpoints and metrics run unchanged on Node (runtime/platform/node-storage.ts)
// and in a browser (an OPFS- or memory-backed implementation).
// Paths are relative to the run directory and use '/' separators.

import type { WritableFileSource } from '../data/fs.ts';

export interface Storage extends WritableFileSource {
  /**
   * Replaces the file so that a crash at any moment leaves either the complete old
   * content or the complete new content, never a mix: write a temporary file in the
   * same directory, flush it to disk, rename it over the target, flush the directory.
   */
  writeFileAtomic(path: string, data: Uint8Array): Promise<void>;
  /** Appends to a file (created if missing). Used for the metrics log. */
  appendFile(path: string, data: Uint8Array): Promise<void>;
  /** Deletes a file; deleting a missing file is not an error. */
  remove(path: string): Promise<void>;
}

export async function readJson<T>(storage: Storage, path: string): Promise<T> {
  const text = new TextDecoder().decode(await storage.readFile(path));
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new Error(`${storage.description}/${path} is not valid JSON: ${(err as Error).message}`);
  }
}

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
