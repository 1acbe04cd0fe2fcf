// The worker-thread side of node-workers.ts: runs image jobs (runtime/data/image-jobs.ts)
// against directories it reads itself, and posts each result back with its pixel or JPEG
// buffer transferred, not copied.
import { parentPort } from 'node:worker_threads';
import type { ImageJob, ImageJobResult } from '../data/image-jobs.ts';
import { runImageJob } from '../data/image-jobs.ts';
import { NodeFileSource } from './node-fs.ts';

export interface ImageJobMessage {
  id: number;
  /** The directory the job's paths are relative to. */
  root: string;
  job: ImageJob;
}

export type ImageResultMessage = { id: number; result: ImageJobResult } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('node-image-worker.ts runs as a worker thread of node-workers.ts');

const sources = new Map<string, NodeFileSource>();

function sourceAt(root: string): NodeFileSource {
  let source = sources.get(root);
  if (!source) sources.set(root, (source = new NodeFileSource(root)));
  return source;
}

/** The buffers a result owns alone (fresh per job), handed over without a copy. */
function transferList(result: ImageJobResult): ArrayBuffer[] {
  const view = 'image' in result ? result.image?.data : 'jpeg' in result ? result.jpeg : null;
  return view && view.buffer instanceof ArrayBuffer ? [view.buffer] : [];
}

port.on('message', async ({ id, root, job }: ImageJobMessage) => {
  let result: ImageJobResult;
  try {
    result = await runImageJob(sourceAt(root), job);
  } catch (err) {
    // A bug or a bad option (a bad file is a failure inside the result): the caller rejects
    // with the message it would have thrown in-process.
    port.postMessage({ id, error: err instanceof Error ? err.message : String(err) } satisfies ImageResultMessage);
    return;
  }
  port.postMessage({ id, result } satisfies ImageResultMessage, transferList(result));
});
