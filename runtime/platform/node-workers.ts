// Image jobs (runtime/data/image-jobs.ts) on Node worker threads: decoding, resizing and
// augmentation of training images off the main thread, so that the data loader keeps up
// with the GPU (a batch of 32 is ~2 s of one core).
//
// Jobs whose FileSource is a local directory (NodeFileSource, or a SubdirFileSource of one)
// go to the workers with the directory, and the worker reads the files itself; any other
// source (files in memory, wrappers) runs its jobs in the calling thread. Each job goes to
// the worker with the fewest jobs in flight; callers reassemble results in their own order,
// and a job's result does not depend on the thread, so the output is the same for any count.
//
// Lifetime: workers start with the first job. They hold the process open only while they
// have jobs in flight, so a forgotten close() never keeps Node alive; close() terminates
// them. A worker that dies (a crash, running out of memory) fails its jobs, and every later
// one, with an error saying so: nothing waits forever.
//
// The worker module is TypeScript: each worker registers tsx itself (tsx/esm/api) before
// importing it, because Node 20 does not pass `--import tsx` hooks, nor the ones
// bin/lovt-run.js registers, to worker threads.
import { availableParallelism } from 'node:os';
import * as nodePath from 'node:path';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { SubdirFileSource, type FileSource } from '../data/fs.ts';
import { IN_PROCESS, runImageJob, type ImageJob, type ImageJobResult, type ImageWorkers } from '../data/image-jobs.ts';
import { NodeFileSource } from './node-fs.ts';
import type { ImageJobMessage, ImageResultMessage } from './node-image-worker.ts';

/** The default number of image workers: every core but one (for the main thread), at least 1. */
export function defaultImageWorkerCount(): number {
  return Math.max(1, availableParallelism() - 1);
}

/**
 * The thread count for `--data-workers N`: the default without one, else N capped at
 * the machine's cores (more threads than cores only take turns), with a note saying so.
 */
export function imageWorkerThreads(requested?: number): { threads: number; note?: string } {
  if (requested === undefined) return { threads: defaultImageWorkerCount() };
  const cores = availableParallelism();
  if (requested <= cores) return { threads: requested };
  return { threads: cores, note: `--data-workers ${requested} is more than this machine's ${cores} cores: using ${cores} worker threads` };
}

export interface NodeImageWorkerOptions {
  /** Per-worker V8 limits (Node's Worker resourceLimits). */
  resourceLimits?: ResourceLimits;
}

/** `threads` worker threads, or the calling thread when 0. */
export function createImageWorkers(threads = defaultImageWorkerCount(), options: NodeImageWorkerOptions = {}): ImageWorkers {
  if (!(Number.isInteger(threads) && threads >= 0)) throw new Error(`image workers: the thread count must be a non-negative integer, got ${threads}`);
  return threads === 0 ? IN_PROCESS : new NodeImageWorkerPool(threads, options);
}

/** The local directory a source reads from, or undefined when it is not one. */
export function localDirectory(source: FileSource): string | undefined {
  if (source instanceof NodeFileSource) return source.root;
  if (source instanceof SubdirFileSource) {
    const base = localDirectory(source.base);
    return base === undefined ? undefined : nodePath.join(base, ...source.dir.split('/'));
  }
  return undefined;
}

const WORKER_MODULE = new URL('./node-image-worker.ts', import.meta.url).href;

/** Registers tsx in the new thread (when the worker module is TypeScript), then imports it. */
function bootstrapSource(): string {
  const steps = WORKER_MODULE.endsWith('.ts')
    ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_MODULE)}); })`
    : `import(${JSON.stringify(WORKER_MODULE)})`;
  // An import that fails is the worker's uncaught error: the pool reports it.
  return `${steps}.catch((err) => { setImmediate(() => { throw err; }); });`;
}

interface PendingJob {
  resolve: (result: ImageJobResult) => void;
  reject: (err: Error) => void;
  /** What the job reads, for messages. */
  what: string;
}

interface WorkerSlot {
  index: number;
  worker: Worker;
  pending: Map<number, PendingJob>;
  /** The uncaught error that is ending the thread, if any. */
  error?: Error;
}

export class NodeImageWorkerPool implements ImageWorkers {
  readonly threads: number;
  private readonly options: NodeImageWorkerOptions;
  private slots: WorkerSlot[] = [];
  private nextId = 0;
  private closed = false;
  /** Set when a worker died: every later job fails with it. */
  private failure: Error | null = null;

  constructor(threads: number, options: NodeImageWorkerOptions = {}) {
    if (!(Number.isInteger(threads) && threads > 0)) throw new Error(`image worker pool: the thread count must be a positive integer, got ${threads}`);
    this.threads = threads;
    this.options = options;
  }

  run<J extends ImageJob>(source: FileSource, job: J): Promise<ImageJobResult<J>> {
    const root = localDirectory(source);
    if (root === undefined) return runImageJob(source, job);
    if (this.closed) return Promise.reject(new Error('image workers: a job was submitted after close()'));
    if (this.failure) return Promise.reject(this.failure);
    if (this.slots.length === 0) this.slots = Array.from({ length: this.threads }, (_, i) => this.startWorker(i));
    const slot = this.slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    return new Promise<ImageJobResult<J>>((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (r: ImageJobResult) => void, reject, what: describeJob(job) });
      if (slot.pending.size === 1) slot.worker.ref();
      slot.worker.postMessage({ id, root, job } satisfies ImageJobMessage);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots;
    this.slots = [];
    for (const slot of slots) this.rejectPending(slot, new Error('image workers were closed while jobs were in flight'));
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  private startWorker(index: number): WorkerSlot {
    const worker = new Worker(bootstrapSource(), {
      eval: true,
      name: `lovt image worker ${index + 1}`,
      resourceLimits: this.options.resourceLimits,
    });
    const slot: WorkerSlot = { index, worker, pending: new Map() };
    worker.unref();
    worker.on('message', (message: ImageResultMessage) => {
      const job = slot.pending.get(message.id);
      if (!job) return;
      slot.pending.delete(message.id);
      if (slot.pending.size === 0) worker.unref();
      if ('error' in message) job.reject(new Error(message.error));
      else job.resolve(message.result);
    });
    worker.on('error', (err: unknown) => {
      slot.error = err instanceof Error ? err : new Error(String(err));
    });
    worker.on('exit', (code) => {
      if (this.closed) return;
      const jobs = [...slot.pending.values()];
      const cause = slot.error ? slot.error.message : `exit code ${code}`;
      this.failure = new Error(
        `image worker thread ${index + 1} of ${this.threads} stopped unexpectedly (${cause})` +
          (jobs.length > 0 ? ` while loading ${jobs[0].what}${jobs.length > 1 ? ` and ${jobs.length - 1} more` : ''}` : ''),
        { cause: slot.error },
      );
      this.rejectPending(slot, this.failure);
    });
    return slot;
  }

  private rejectPending(slot: WorkerSlot, err: Error): void {
    const jobs = [...slot.pending.values()];
    slot.pending.clear();
    slot.worker.unref();
    for (const job of jobs) job.reject(err);
  }
}

function describeJob(job: ImageJob): string {
  return job.kind === 'sample' ? job.paths.join(' or ') : job.path;
}
