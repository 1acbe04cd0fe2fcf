// Liveness-based buffer planning. Kernels run in a fixed order; a tensor is
// live from the step that first writes it to the last step that reads it.
// Once dead, its buffer returns to a pool and a later tensor may take it.
// Pinned tensors (graph outputs, update values, inputs, constants) keep a
// buffer of their own for the whole run; state tensors are not planned here at
// all (the StateStore owns them).
//
// Placement is greedy in execution order: best fit among free buffers; if none
// is large enough, the largest free buffer grows (cheaper than a new one);
// otherwise a new buffer is created. A tensor is released only after the step
// that reads it last, so a kernel never writes a buffer it also reads.

export interface MemoryTensor {
  id: number;
  bytes: number;
  /** Never shares its buffer and stays valid after the run. */
  pinned?: boolean;
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
      if (!info.has(t)) throw new Error(`memory plan: step ${k} reads unknown tensor ${t}`);
      if (!info.get(t)!.pinned && !firstWrite.has(t)) throw new Error(`memory plan: step ${k} reads tensor ${t} before any step writes it`);
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

  // Pinned tensors first: one buffer each.
  for (const t of tensors) if (t.pinned) assignment.set(t.id, { buffer: newBuffer(roundUp(t.bytes)).id, offset: 0 });

  // Transient tensors in order of definition, recycling dead buffers.
  const free: PlannedBuffer[] = [];
  const releaseAt = new Map<number, number[]>();
  for (const [t, k] of lastUse) if (!info.get(t)!.pinned) releaseAt.set(k, [...(releaseAt.get(k) ?? []), t]);
  steps.forEach((s, k) => {
    for (const t of new Set(s.writes)) {
      if (info.get(t)!.pinned || firstWrite.get(t) !== k) continue;
      const need = roundUp(info.get(t)!.bytes);
      let best = -1;
      for (let i = 0; i < free.length; i++) if (free[i].bytes >= need && (best < 0 || free[i].bytes < free[best].bytes)) best = i;
      if (best < 0 && free.length) {
        best = 0;
        for (let i = 1; i < free.length; i++) if (free[i].bytes > free[best].bytes) best = i;
        free[best].bytes = need;
      }
      const b = best >= 0 ? free.splice(best, 1)[0] : newBuffer(need);
      assignment.set(t, { buffer: b.id, offset: 0 });
    }
    for (const t of releaseAt.get(k) ?? []) free.push(buffers[assignment.get(t)!.buffer]);
  });

  // Tensors no step touches (e.g. an unread, unwritten transient) still get a home.
  for (const t of tensors) if (!assignment.has(t.id)) assignment.set(t.id, { buffer: newBuffer(roundUp(t.bytes)).id, offset: 0 });

  const peakBytes = buffers.reduce((s, b) => s + b.bytes, 0);
  const noReuseBytes = tensors.reduce((s, t) => s + roundUp(t.bytes), 0);
  return { buffers, assignment, peakBytes, noReuseBytes };
}
