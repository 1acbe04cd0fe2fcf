// Liveness-based buffer planning. Kernels run in a fixed order; a tensor is
// live from the step that first writes it to the last step that reads it.
// Once dead, its buffer returns to a pool and a later tensor may take it.
// Three kinds of tensors live longer:
//  - persistent (constants, uploaded once at program creation): a buffer of
//    their own, never shared;
//  - live at start (inputs, written by the host before the first step): live
//    from before step 0 to their last reader, then their buffer is reused;
//  - live at end (graph outputs and update values, read by the host or copied
//    into state after the last step): never released once written, but they
//    may take a buffer that an earlier tensor has finished with.
// State tensors are not planned here at all (the StateStore owns them).
//
// Placement is greedy in execution order: best fit among free buffers; if none
// is large enough, the largest free buffer grows (cheaper than a new one);
// otherwise a new buffer is created. A tensor is released only after the step
// that reads it last, so a kernel never writes a buffer it also reads.

export interface MemoryTensor {
  id: number;
  bytes: number;
  /** Holds its value across runs: a buffer of its own. */
  persistent?: boolean;
  /** Valid before the first step (written by the host). */
  liveAtStart?: boolean;
  /** Still needed after the last step (read back or copied into state). */
  liveAtEnd?: boolean;
}

export interface MemoryStep {
  reads: number[];
  writes: number[];
}

export interface PlannedBuffer {
  id: number;
  bytes: number;
}

export interface MemoryPlan {
  buffers: PlannedBuffer[];
  /** tensor id -> where it lives. */
  assignment: Map<number, { buffer: number; offset: number }>;
  /** Sum of all planned buffers. */
  peakBytes: number;
  /** What one buffer per tensor would take. */
  noReuseBytes: number;
}

/** Buffer sizes are multiples of this (storage bindings need 4-byte multiples; 16 keeps vec4 access possible). */
const GRANULE = 16;

function roundUp(bytes: number): number {
  return Math.max(GRANULE, Math.ceil(bytes / GRANULE) * GRANULE);
}

export function planMemory(tensors: MemoryTensor[], steps: MemoryStep[]): MemoryPlan {
  const info = new Map<number, MemoryTensor>();
  for (const t of tensors) {
    if (info.has(t.id)) throw new Error(`memory plan: tensor ${t.id} listed twice`);
    info.set(t.id, t);
  }
  const firstWrite = new Map<number, number>();
  const lastUse = new Map<number, number>();
  steps.forEach((s, k) => {
    for (const t of s.writes) {
      if (!info.has(t)) throw new Error(`memory plan: step ${k} writes unknown tensor ${t}`);
      if (!firstWrite.has(t)) firstWrite.set(t, k);
      lastUse.set(t, k);
    }
    for (const t of s.reads) {
      const ti = info.get(t);
      if (!ti) throw new Error(`memory plan: step ${k} reads unknown tensor ${t}`);
      if (!ti.persistent && !ti.liveAtStart && !firstWrite.has(t)) throw new Error(`memory plan: step ${k} reads tensor ${t} before any step writes it`);
      lastUse.set(t, k);
    }
  });

  const buffers: PlannedBuffer[] = [];
  const assignment = new Map<number, { buffer: number; offset: number }>();
  const newBuffer = (bytes: number): PlannedBuffer => {
    const b = { id: buffers.length, bytes };
    buffers.push(b);
    return b;
  };
  const free: PlannedBuffer[] = [];
  const place = (t: MemoryTensor) => {
    const need = roundUp(t.bytes);
    let best = -1;
    for (let i = 0; i < free.length; i++) if (free[i].bytes >= need && (best < 0 || free[i].bytes < free[best].bytes)) best = i;
    if (best < 0 && free.length) {
      best = 0;
      for (let i = 1; i < free.length; i++) if (free[i].bytes > free[best].bytes) best = i;
      free[best].bytes = need;
    }
    const b = best >= 0 ? free.splice(best, 1)[0] : newBuffer(need);
    assignment.set(t.id, { buffer: b.id, offset: 0 });
  };
  // Released after step k (-1: before the first step, for inputs nobody reads).
  const releaseAt = new Map<number, number[]>();
  const release = (t: MemoryTensor, k: number) => {
    if (t.persistent || t.liveAtEnd) return;
    releaseAt.set(k, [...(releaseAt.get(k) ?? []), t.id]);
  };
  const releaseAfter = (k: number) => {
    for (const id of releaseAt.get(k) ?? []) free.push(buffers[assignment.get(id)!.buffer]);
  };

  for (const t of tensors) if (t.persistent) assignment.set(t.id, { buffer: newBuffer(roundUp(t.bytes)).id, offset: 0 });
  for (const t of tensors) {
    if (t.persistent || !t.liveAtStart) continue;
    place(t);
    release(t, lastUse.get(t.id) ?? -1);
  }
  for (const t of tensors) if (!t.persistent && !t.liveAtStart && firstWrite.has(t.id)) release(t, lastUse.get(t.id)!);
  releaseAfter(-1);
  steps.forEach((s, k) => {
    for (const id of new Set(s.writes)) {
      const t = info.get(id)!;
      if (!t.persistent && !t.liveAtStart && firstWrite.get(id) === k) place(t);
    }
    releaseAfter(k);
  });
  // Tensors no step touches (e.g. an output nothing computes) still get a home.
  for (const t of tensors) if (!assignment.has(t.id)) assignment.set(t.id, { buffer: newBuffer(roundUp(t.bytes)).id, offset: 0 });

  const peakBytes = buffers.reduce((sum, b) => sum + b.bytes, 0);
  const noReuseBytes = tensors.reduce((sum, t) => sum + roundUp(t.bytes), 0);
  return { buffers, assignment, peakBytes, noReuseBytes };
}
