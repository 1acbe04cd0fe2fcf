// Graph -> ExecutionPlan: fusion, codegen, memory planning. The plan is plain
// data (kernels with their WGSL, buffer sizes, which tensor lives where) so
// that `lovtc -o out/` can write it as JSON and the runtime executor (or a
// browser) can run it without the compiler.

import type { DType, Graph, Node, Shape } from './ir.ts';
import { numel, shapeStr } from './ir.ts';
import type { Kernel } from './codegen/kernel.ts';
import { renderGroup } from './codegen/index.ts';
import type { ContractionTarget } from './codegen/gemm.ts';
import { consumersOf, flatReadInputs, fuseGraph, pinnedNodes, type FusionResult, type Group } from './passes/fusion.ts';
import { planMemory, type MemoryStep, type MemoryTensor } from './passes/memory.ts';
import { validateGraph } from './ops/index.ts';

/** The device limits planning depends on (a GPUSupportedLimits satisfies it). */
export interface EngineLimits {
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

/** WebGPU's guaranteed minimums: a plan made with these runs on any device. */
export const DEFAULT_LIMITS: EngineLimits = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
};

/**
 * The device-independent target `lovtc` plans against: WebGPU's default
 * limits, except that bindings and buffers have no size limit, so a plan is
 * always made. Tensors over WebGPU's default 128 MiB binding limit are listed
 * in `stats.oversized` instead of refusing the graph.
 */
export const GENERIC_TARGET: EngineLimits = {
  ...DEFAULT_LIMITS,
  maxStorageBufferBindingSize: Number.POSITIVE_INFINITY,
  maxBufferSize: Number.POSITIVE_INFINITY,
};

/** The EngineLimits keys, for command-line overrides (lovtc --limit KEY=VALUE). */
export const ENGINE_LIMIT_KEYS = Object.keys(DEFAULT_LIMITS) as (keyof EngineLimits)[];

export function engineLimits(limits: Partial<EngineLimits>): EngineLimits {
  return {
    maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage ?? DEFAULT_LIMITS.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension ?? DEFAULT_LIMITS.maxComputeWorkgroupsPerDimension,
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize ?? DEFAULT_LIMITS.maxStorageBufferBindingSize,
    maxBufferSize: limits.maxBufferSize ?? DEFAULT_LIMITS.maxBufferSize,
  };
}

export type BufferKind = 'scratch' | 'input' | 'state' | 'const';

export interface PlanBuffer {
  id: number;
  bytes: number;
  kind: BufferKind;
  /** Input or state name (kind 'input' / 'state'). */
  name?: string;
  /** The const node whose value is uploaded once (kind 'const'). */
  node?: number;
}

/** Where a tensor lives: a plan buffer, a byte offset, and its own size. */
export interface TensorPlace {
  buffer: number;
  offset: number;
  bytes: number;
}

export interface PlanIO {
  node: number;
  shape: Shape;
  dtype: DType;
  place: TensorPlace;
  /**
   * Updates only: the value is all zeros (a 'full' 0 that nothing else reads),
   * so the executor clears the state buffer after the dispatches and `place`
   * is unused (buffer -1).
   */
  zero?: boolean;
}

/** A tensor over WebGPU's default storage-buffer binding limit (128 MiB). */
export interface OversizedTensor {
  tensor: number;
  /** e.g. "%812 (softmax attn, f32[32, 12, 512, 512])" */
  description: string;
  bytes: number;
}

export interface PlanStats {
  /** Distinct WGSL modules (pipelines). */
  kernels: number;
  /** Dispatches per run. */
  dispatches: number;
  /** Bytes of all buffers the program allocates (state excluded: the StateStore owns it). */
  peakBytes: number;
  /** What one buffer per tensor would need. */
  noReuseBytes: number;
  /** Bytes of state tensors (owned by the StateStore). */
  stateBytes: number;
  flops: number;
  /** Fusion: groups formed and nodes computed inside another op's kernel. */
  fusedNodes: number;
  /** State updates whose kernel writes the state buffer in place (no copy, no extra buffer). */
  inPlaceUpdates: number;
  /** Tensors (state included) larger than WebGPU's default 128 MiB binding limit, largest first. */
  oversized: OversizedTensor[];
}

export interface ExecutionPlan {
  /** In dispatch order. */
  kernels: Kernel[];
  buffers: PlanBuffer[];
  /** Every tensor a kernel binds (IR node ids and scratch ids), views included. */
  tensorBuffer: Map<number, TensorPlace>;
  inputs: Record<string, PlanIO>;
  outputs: Record<string, PlanIO>;
  /** State name -> its new value, copied into the state buffer after the dispatches. */
  updates: Record<string, PlanIO>;
  state: Record<string, { shape: Shape; dtype: DType; buffer: number }>;
  stats: PlanStats;
}

export interface PlanOptions {
  /** Fuse elementwise chains, prologues and epilogues (default true). */
  fuse?: boolean;
  /** Contraction kernel family for the device (contractionTarget(dev)); the portable tiled one when absent. */
  target?: ContractionTarget;
}

function bytesOf(n: { shape: Shape }): number {
  return numel(n.shape) * 4;
}

function describe(n: Node): string {
  return `%${n.id} (${n.op}${n.name ? ' ' + n.name : ''}, ${n.dtype}${shapeStr(n.shape)})`;
}

/**
 * State updates that can be computed in place: update value U (the root of an
 * elementwise or reduction group G) is written straight into state S's buffer
 * when the old value of S is dead once G ran. That holds when every reader of
 * S is either G itself, reading S only at the element it writes
 * (flatReadInputs), or a group that runs before G; S is not an output, not a
 * view's source and not another update's value; and U updates only S.
 * Returns U -> S.
 */
function inPlaceUpdates(graph: Graph, fusion: FusionResult): Map<number, number> {
  const nodes = graph.nodes;
  const consumers = consumersOf(graph, fusion.needed);
  const groupOf = new Map<number, Group>();
  for (const g of fusion.groups) {
    groupOf.set(g.root, g);
    for (const m of g.inline) groupOf.set(m, g);
    if (g.anchor !== undefined) groupOf.set(g.anchor, g);
  }
  const outputs = new Set(Object.values(graph.outputs));
  const updateValues = new Map<number, number>();
  for (const u of Object.values(graph.updates)) updateValues.set(u, (updateValues.get(u) ?? 0) + 1);
  const result = new Map<number, number>();
  for (const [name, u] of Object.entries(graph.updates)) {
    const s = graph.state[name].node;
    const g = groupOf.get(u);
    if (!g || g.root !== u || (g.kind !== 'elementwise' && g.kind !== 'reduce')) continue;
    if (updateValues.get(u) !== 1 || outputs.has(s) || updateValues.has(s)) continue;
    if (nodes[u].dtype !== nodes[s].dtype || numel(nodes[u].shape) !== numel(nodes[s].shape)) continue;
    const flat = flatReadInputs(graph, g, consumers);
    const readersOk = consumers[s].every((c) => {
      const cg = groupOf.get(c);
      if (cg === g) return flat.has(s);
      return cg !== undefined && cg.root < g.root; // an earlier group (views and consts have no group: refuse)
    });
    if (readersOk) result.set(u, s);
  }
  return result;
}

/** Update values that are an all-zero 'full' nothing else reads: the executor clears the state instead. */
function zeroUpdates(graph: Graph, fusion: FusionResult): Set<number> {
  const consumers = consumersOf(graph, fusion.needed);
  const outputs = new Set(Object.values(graph.outputs));
  const zeros = new Set<number>();
  for (const u of Object.values(graph.updates)) {
    const n = graph.nodes[u];
    if (n.op === 'full' && n.attrs.value === 0 && !outputs.has(u) && consumers[u].length === 0) zeros.add(u);
  }
  return zeros;
}

export function planGraph(graph: Graph, limitsIn: Partial<EngineLimits> = DEFAULT_LIMITS, options: PlanOptions = {}): ExecutionPlan {
  validateGraph(graph);
  const limits = engineLimits(limitsIn);
  const fusion = fuseGraph(graph, { enabled: options.fuse !== false, maxStorageBuffers: limits.maxStorageBuffersPerShaderStage });
  const nodes = graph.nodes;

  // Storage roots: in-place update values live in their state's buffer, views share their input's storage.
  const storage = new Map<number, number>();
  const rootOf = (id: number): number => storage.get(id) ?? id;
  const inPlace = inPlaceUpdates(graph, fusion);
  for (const [u, s] of inPlace) storage.set(u, s);
  for (const v of fusion.views) storage.set(v, rootOf(nodes[v].inputs[0]));
  const zeros = zeroUpdates(graph, fusion);

  // Kernels, in group order.
  const kernels: Kernel[] = [];
  const scratchInfo = new Map<number, { elements: number; dtype: DType }>();
  let nextScratch = nodes.length;
  for (const group of fusion.groups) {
    if (numel(nodes[group.root].shape) === 0) continue; // nothing to compute
    const r = renderGroup(
      graph,
      group,
      { maxWorkgroupsPerDim: limits.maxComputeWorkgroupsPerDimension, maxStorageBuffers: limits.maxStorageBuffersPerShaderStage, target: options.target },
      () => nextScratch++,
      inPlace.get(group.root),
    );
    for (const s of r.scratch) scratchInfo.set(s.id, s);
    for (const k of r.kernels) {
      const bufferCount = k.bindings.length;
      if (bufferCount > limits.maxStorageBuffersPerShaderStage)
        throw new Error(
          `kernel ${k.name} binds ${bufferCount} storage buffers but the device allows ${limits.maxStorageBuffersPerShaderStage} (maxStorageBuffersPerShaderStage)`,
        );
      kernels.push(k);
    }
  }

  // Which storage each tensor needs, and its size limit.
  const pinned = pinnedNodes(graph);
  const stateNodes = new Map<number, string>(Object.values(graph.state).map((s) => [s.node, s.name]));
  const inputNodes = new Map<number, string>(Object.entries(graph.inputs).map(([name, id]) => [id, name]));
  const constNodes = new Set(fusion.consts);
  const tensorBytes = (t: number) => (t < nodes.length ? bytesOf(nodes[t]) : scratchInfo.get(t)!.elements * 4);
  const oversized = new Map<number, OversizedTensor>();
  const describeTensor = (t: number) => (t < nodes.length ? describe(nodes[t]) : `scratch tensor of ${scratchInfo.get(t)!.elements} elements`);
  const checkSize = (t: number) => {
    const bytes = tensorBytes(t);
    if (bytes > DEFAULT_LIMITS.maxStorageBufferBindingSize) oversized.set(t, { tensor: t, description: describeTensor(t), bytes });
    const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    if (bytes > limit) {
      const what = t < nodes.length ? `tensor ${describe(nodes[t])}` : describeTensor(t);
      throw new Error(
        `${what} needs ${bytes} bytes (${(bytes / 2 ** 20).toFixed(1)} MiB), over this device's storage-buffer binding limit of ${limit} bytes ` +
          `(${(limit / 2 ** 20).toFixed(1)} MiB). Reduce the batch size or the sizes that produce this tensor, or split it.`,
      );
    }
  };

  // Memory planning over storage roots. State is external: the StateStore owns it.
  const memTensors = new Map<number, MemoryTensor>();
  const addTensor = (root: number) => {
    if (memTensors.has(root) || stateNodes.has(root)) return;
    checkSize(root);
    memTensors.set(root, { id: root, bytes: tensorBytes(root), liveAtStart: inputNodes.has(root), persistent: constNodes.has(root) });
  };
  const steps: MemoryStep[] = kernels.map((k) => {
    const reads: number[] = [];
    const writes: number[] = [];
    for (const b of k.bindings) {
      const root = rootOf(b.tensor);
      addTensor(root);
      if (stateNodes.has(root)) continue;
      (b.access === 'read' ? reads : writes).push(root);
    }
    return { reads, writes };
  });
  // Outputs and update values are read after the last dispatch: never released.
  for (const id of pinned) {
    if (zeros.has(id)) continue; // cleared by the executor, never stored
    const root = rootOf(id);
    addTensor(root);
    const t = memTensors.get(root);
    if (t) t.liveAtEnd = true;
  }
  for (const id of inputNodes.keys()) addTensor(id);
  for (const id of constNodes) if (!zeros.has(id)) addTensor(id);
  const mem = planMemory([...memTensors.values()], steps);

  // Plan buffers: memory-planned ones first (ids as planned), then one per state tensor.
  const buffers: PlanBuffer[] = mem.buffers.map((b) => ({ id: b.id, bytes: b.bytes, kind: 'scratch' as BufferKind }));
  for (const [root, place] of mem.assignment) {
    const b = buffers[place.buffer];
    if (inputNodes.has(root)) Object.assign(b, { kind: 'input', name: inputNodes.get(root) });
    else if (constNodes.has(root)) Object.assign(b, { kind: 'const', node: root });
  }
  const state: ExecutionPlan['state'] = {};
  const stateBuffer = new Map<number, number>();
  let stateBytes = 0;
  for (const s of Object.values(graph.state)) {
    const bytes = Math.max(4, numel(s.shape) * 4);
    checkSize(s.node);
    const id = buffers.length;
    buffers.push({ id, bytes, kind: 'state', name: s.name });
    stateBuffer.set(s.node, id);
    state[s.name] = { shape: s.shape, dtype: s.dtype, buffer: id };
    stateBytes += bytes;
  }

  const placeOf = (t: number): TensorPlace => {
    const root = rootOf(t);
    const bytes = Math.max(4, tensorBytes(t));
    if (stateBuffer.has(root)) return { buffer: stateBuffer.get(root)!, offset: 0, bytes };
    const a = mem.assignment.get(root);
    if (!a) throw new Error(`internal: tensor ${t} has no planned storage`);
    return { buffer: a.buffer, offset: a.offset, bytes };
  };
  const tensorBuffer = new Map<number, TensorPlace>();
  for (const k of kernels) for (const b of k.bindings) tensorBuffer.set(b.tensor, placeOf(b.tensor));
  const io = (id: number): PlanIO => {
    const place = placeOf(id);
    tensorBuffer.set(id, place);
    return { node: id, shape: nodes[id].shape, dtype: nodes[id].dtype, place };
  };
  const mapIO = (rec: Record<string, number>) => Object.fromEntries(Object.entries(rec).map(([name, id]) => [name, io(id)]));
  const updateIO = (id: number): PlanIO =>
    zeros.has(id)
      ? { node: id, shape: nodes[id].shape, dtype: nodes[id].dtype, place: { buffer: -1, offset: 0, bytes: Math.max(4, tensorBytes(id)) }, zero: true }
      : io(id);

  const fusedNodes = fusion.groups.reduce((s, g) => s + g.inline.length + (g.anchor !== undefined ? 1 : 0) - 1, 0);
  return {
    kernels,
    buffers,
    tensorBuffer,
    inputs: mapIO(graph.inputs),
    outputs: mapIO(graph.outputs),
    updates: Object.fromEntries(Object.entries(graph.updates).map(([name, id]) => [name, updateIO(id)])),
    state,
    stats: {
      kernels: new Set(kernels.map((k) => k.wgsl)).size,
      dispatches: kernels.length,
      peakBytes: mem.peakBytes,
      noReuseBytes: mem.noReuseBytes,
      stateBytes,
      flops: kernels.reduce((s, k) => s + k.flops, 0),
      fusedNodes,
      inPlaceUpdates: inPlace.size,
      oversized: [...oversized.values()].sort((a, b) => b.bytes - a.bytes),
    },
  };
}

/** JSON form of a plan (the Map becomes an object keyed by tensor id). */
export function planToJSON(plan: ExecutionPlan): string {
  return JSON.stringify({ ...plan, tensorBuffer: Object.fromEntries(plan.tensorBuffer) });
}

export function planFromJSON(text: string): ExecutionPlan {
  const raw = JSON.parse(text);
  return { ...raw, tensorBuffer: new Map(Object.entries(raw.tensorBuffer).map(([k, v]) => [Number(k), v as TensorPlace])) };
}

export type { FusionResult };
