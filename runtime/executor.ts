// The executor: runs an ExecutionPlan on a WebGPU device.
//
// Program.create plans the graph (compiler/execution-plan.ts), allocates the planned
// buffers, uploads constants once, compiles every pipeline (asynchronously, in
// parallel, cached per device by WGSL text) and builds every bind group. A run
// is then: write the inputs, one compute pass with all dispatches, copy the
// requested outputs to staging buffers, copy each update's value into its
// state buffer, submit once, and map the staging buffers.

/// <reference types="@webgpu/types" />
import type { Graph, Node } from '../compiler/ir.ts';
import { numel } from '../compiler/ir.ts';
import { CONSTANT_LEAVES } from '../compiler/ops/index.ts';
import { evalNode } from '../compiler/reference.ts';
import { type Kernel, paramsBytes } from '../compiler/codegen/kernel.ts';
import { planGraph, type ExecutionPlan, type PlanOptions, type PlanStats, type TensorPlace } from '../compiler/execution-plan.ts';
import { type LovtDevice, contractionTarget } from './device.ts';
import { StateStore, checkHostTensor, type HostTensor } from './state.ts';

export interface ProgramOptions extends PlanOptions {
  /** Names the program in errors and GPU debug labels. */
  label?: string;
  /** A plan made earlier (e.g. read from `lovtc -o` output); planned from the graph when absent. */
  plan?: ExecutionPlan;
}

/** Usage of every planned buffer (a function: the GPU* globals exist only once a platform module installed them). */
const storageUsage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

// ---------------------------------------------------------------------------
// Per-device caches and loss tracking

interface DeviceCache {
  layouts: Map<string, GPUBindGroupLayout>;
  pipelines: Map<string, Promise<GPUComputePipeline>>;
  /** Serialises error-scope sections (see scoped). */
  scopeChain: Promise<unknown>;
  lost?: GPUDeviceLostInfo;
}
const caches = new WeakMap<GPUDevice, DeviceCache>();

function cacheOf(device: GPUDevice): DeviceCache {
  let c = caches.get(device);
  if (!c) {
    const cache: DeviceCache = { layouts: new Map(), pipelines: new Map(), scopeChain: Promise.resolve() };
    device.lost.then((info) => (cache.lost = info));
    caches.set(device, cache);
    c = cache;
  }
  return c;
}

function lostError(lost: GPUDeviceLostInfo, what: string): Error {
  return new Error(
    `${what}: the WebGPU device was lost (${lost.reason}): ${lost.message || 'no message'}. Restart the process; state on the GPU is gone (resume from the last checkpoint).`,
  );
}

function checkAlive(device: GPUDevice, what: string): void {
  const lost = cacheOf(device).lost;
  if (lost) throw lostError(lost, what);
}

/** How long a failed GPU operation waits for the device's lost promise, which settles a little after the operations it aborts. */
const LOSS_SETTLE_MS = 200;

/**
 * Runs GPU work `body` (submissions, buffer mapping); if it fails because the
 * device was lost -- which surfaces as a bare AbortError from mapAsync, or
 * as nothing at all from an error scope -- the error says so and names `what`.
 */
async function lossAware<T>(device: GPUDevice, what: string, body: () => Promise<T>): Promise<T> {
  const cache = cacheOf(device);
  try {
    return await body();
  } catch (e) {
    if (!cache.lost) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([device.lost, new Promise((resolve) => (timer = setTimeout(resolve, LOSS_SETTLE_MS)))]);
      clearTimeout(timer);
    }
    if (cache.lost) throw lostError(cache.lost, what);
    throw e;
  }
}

/** The bind-group layout of a kernel's bindings (cached per device by access pattern). */
export function layoutFor(device: GPUDevice, k: Kernel): GPUBindGroupLayout {
  const key = k.bindings.map((b) => (b.access === 'read' ? 'r' : 'w')).join('') + (k.params ? 'u' : '');
  const cache = cacheOf(device).layouts;
  let layout = cache.get(key);
  if (!layout) {
    const entries: GPUBindGroupLayoutEntry[] = k.bindings.map((b, i) => ({
      binding: i,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
    }));
    // Kernel.params: the uniform block after the storage bindings.
    if (k.params) entries.push({ binding: k.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
    layout = device.createBindGroupLayout({ label: `lovt layout ${key}`, entries });
    cache.set(key, layout);
  }
  return layout;
}

/**
 * Starts compiling a kernel's pipeline (cached by WGSL). A failure rejects with
 * an error naming the kernel and showing the offending WGSL lines.
 */
export function pipelineFor(device: GPUDevice, k: Kernel): Promise<GPUComputePipeline> {
  const layout = layoutFor(device, k);
  const key = `${k.bindings.map((b) => b.access[0]).join('')}${k.params ? 'u' : ''}|${k.entryPoint}|${k.wgsl}`;
  const cache = cacheOf(device).pipelines;
  let p = cache.get(key);
  if (!p) {
    const module = device.createShaderModule({ label: k.name, code: k.wgsl });
    p = device
      .createComputePipelineAsync({
        label: k.name,
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: k.entryPoint },
      })
      .catch(async (e) => {
        cache.delete(key);
        const details = await compilationDetails(module, k.wgsl);
        throw new Error(`kernel ${k.name} failed to compile${details || `: ${(e as Error).message}`}`);
      });
    cache.set(key, p);
  }
  return p;
}

async function compilationDetails(module: GPUShaderModule, wgsl: string): Promise<string> {
  const info = await module.getCompilationInfo();
  const lines = wgsl.split('\n');
  return info.messages
    .filter((m) => m.type === 'error')
    .map((m) => `\n  line ${m.lineNum}: ${m.message}\n    > ${lines[m.lineNum - 1]?.trim() ?? ''}`)
    .join('');
}

/**
 * Runs `body` inside validation and out-of-memory error scopes; a captured
 * error becomes an exception naming `what`. Error scopes form one stack per
 * device, so scoped sections of all programs on a device run one at a time.
 */
function scoped<T>(device: GPUDevice, what: string, body: () => T | Promise<T>): Promise<T> {
  const cache = cacheOf(device);
  const run = cache.scopeChain.then(async () => {
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let result: T | undefined;
    let failure: unknown;
    try {
      result = await body();
    } catch (e) {
      failure = e;
    }
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    if (failure) throw failure; // the body's own error is the most specific one
    if (oom) throw new Error(`${what}: out of GPU memory: ${oom.message}. Reduce the batch size.`);
    if (validation) throw new Error(`${what}: WebGPU validation error: ${validation.message}`);
    return result as T;
  });
  cache.scopeChain = run.catch(() => undefined);
  return run;
}

// ---------------------------------------------------------------------------
// Pipeline warming

/**
 * Compiles pipelines ahead of a program's first run somewhere else -- on
 * lavapipe, a second device of the same driver whose compiled code reaches the
 * main device through Mesa's on-disk shader cache (runtime/platform/node-warm.ts).
 * llvmpipe compiles each pipeline at its first dispatch, serially on the
 * queue's thread; a warmer compiles from the other end of the program on
 * another core.
 */
export interface PipelineWarmer {
  /** Queues kernels to compile, in this order; returns a function that drops the ones not started yet. */
  warm(kernels: Kernel[]): () => void;
}

const warmers = new WeakMap<GPUDevice, PipelineWarmer>();

/** Registers the warmer Program.create uses for pipelines of `device` (a platform module calls this); undefined removes it. */
export function registerPipelineWarmer(device: GPUDevice, warmer: PipelineWarmer | undefined): void {
  if (warmer) warmers.set(device, warmer);
  else warmers.delete(device);
}

export function pipelineWarmerOf(device: GPUDevice): PipelineWarmer | undefined {
  return warmers.get(device);
}

/**
 * The distinct kernels of a plan in reverse order of first use: the main
 * device compiles from the first dispatch on, a warmer from the last.
 */
function reverseFirstUse(kernels: Kernel[]): Kernel[] {
  const first = new Map<string, Kernel>();
  for (const k of kernels) if (!first.has(k.wgsl)) first.set(k.wgsl, k);
  return [...first.values()].reverse();
}

// ---------------------------------------------------------------------------
// Constants

/** Host value of a 'full' / 'iota' / 'tensor' node: its float64 evaluation, rounded to the node's dtype. */
export function constValue(node: Node): HostTensor {
  if (!CONSTANT_LEAVES.has(node.op)) throw new Error(`internal: node %${node.id} (${node.op}) is not a constant`);
  const v = evalNode(node, [], [], {});
  return node.dtype === 'i32' ? Int32Array.from(v) : Float32Array.from(v);
}

/**
 * Refuses a plan the device cannot run (one made for other limits, e.g. read
 * from `lovtc -o` output), naming the kernel, before WebGPU validation would
 * reject its dispatch with only the program's name.
 */
function checkPlanFits(plan: ExecutionPlan, limits: GPUSupportedLimits, label: string): void {
  for (const k of plan.kernels) {
    if (k.bindings.length > limits.maxStorageBuffersPerShaderStage)
      throw new Error(
        `${label}: kernel ${k.name} binds ${k.bindings.length} storage buffers, over this device's maxStorageBuffersPerShaderStage (${limits.maxStorageBuffersPerShaderStage}); plan for this device's limits`,
      );
    const over = k.workgroups.findIndex((n) => n > limits.maxComputeWorkgroupsPerDimension);
    if (over >= 0)
      throw new Error(
        `${label}: kernel ${k.name} dispatches ${k.workgroups[over]} workgroups along ${'xyz'[over]}, over this device's maxComputeWorkgroupsPerDimension (${limits.maxComputeWorkgroupsPerDimension}); plan for this device's limits`,
      );
  }
}

// ---------------------------------------------------------------------------
// Program

interface UpdateCopy {
  name: string;
  src: TensorPlace;
  /** Set when the value lives in another state buffer that this run overwrites: copied aside first. */
  snapshot?: GPUBuffer;
  dst: GPUBuffer;
}

export class Program {
  readonly stats: PlanStats;
  private pipelines: GPUComputePipeline[] = [];
  private bindGroups: GPUBindGroup[] = [];
  private owned: GPUBuffer[] = [];
  private staging = new Map<string, GPUBuffer>();
  private updateCopies: UpdateCopy[] = [];
  /** State buffers whose update is all zeros: cleared after the copies. */
  private updateClears: { buffer: GPUBuffer; bytes: number }[] = [];
  private pending: Promise<unknown> = Promise.resolve();
  private destroyed = false;
  /** Drops this program's not-yet-warmed pipelines (after its first run every pipeline is compiled). */
  private stopWarming?: () => void;

  private constructor(
    readonly dev: LovtDevice,
    readonly graph: Graph,
    readonly plan: ExecutionPlan,
    readonly state: StateStore,
    private buffers: GPUBuffer[],
    readonly label: string,
  ) {
    this.stats = plan.stats;
  }

  /** Plans `graph`, allocates its buffers, compiles its pipelines and binds everything. */
  static async create(dev: LovtDevice, graph: Graph, state: StateStore, opts: ProgramOptions = {}): Promise<Program> {
    const device = dev.device;
    const label = opts.label ?? 'program';
    checkAlive(device, `creating ${label}`);
    if (state.dev.device !== device) throw new Error(`creating ${label}: the StateStore belongs to another device`);
    const plan = opts.plan ?? planGraph(graph, dev.limits, { target: contractionTarget(dev), ...opts });
    checkPlanFits(plan, dev.limits, label);
    return lossAware(device, `creating ${label}`, () => Program.allocate(dev, graph, state, plan, label));
  }

  private static async allocate(dev: LovtDevice, graph: Graph, state: StateStore, plan: ExecutionPlan, label: string): Promise<Program> {
    const device = dev.device;
    // Buffers: planned scratch/input/const buffers are the program's own; state comes from the store.
    const buffers: GPUBuffer[] = [];
    const owned: GPUBuffer[] = [];
    await scoped(device, `allocating ${label}'s buffers (${(plan.stats.peakBytes / 2 ** 20).toFixed(1)} MiB)`, () => {
      for (const b of plan.buffers) {
        if (b.kind === 'state') {
          const s = plan.state[b.name!];
          buffers[b.id] = state.define(b.name!, s.shape, s.dtype);
        } else {
          buffers[b.id] = device.createBuffer({ label: `${label} ${b.kind}${b.name ? ' ' + b.name : ''} #${b.id}`, size: b.bytes, usage: storageUsage() });
          owned.push(buffers[b.id]);
        }
      }
      for (const b of plan.buffers) {
        if (b.kind !== 'const') continue;
        const v = constValue(graph.nodes[b.node!]);
        device.queue.writeBuffer(buffers[b.id], 0, v.buffer, v.byteOffset, v.byteLength);
      }
    });
    const program = new Program(dev, graph, plan, state, buffers, label);
    program.owned = owned;
    try {
      await program.build();
      checkAlive(device, `creating ${label}`); // objects made on a lost device are silently invalid
    } catch (e) {
      program.destroy();
      throw e;
    }
    program.stopWarming = warmers.get(device)?.warm(reverseFirstUse(plan.kernels));
    return program;
  }

  /** Every kernel's params (Kernel.params) in one uniform buffer, at the device's offset alignment; by kernel index. */
  private uploadParams(): Map<number, GPUBufferBinding> {
    const device = this.dev.device;
    const align = device.limits.minUniformBufferOffsetAlignment;
    const offsets = new Map<number, number>();
    let bytes = 0;
    this.plan.kernels.forEach((k, i) => {
      if (!k.params) return;
      offsets.set(i, bytes);
      bytes += Math.ceil(paramsBytes(k.params) / align) * align;
    });
    const places = new Map<number, GPUBufferBinding>();
    if (!bytes) return places;
    const buffer = device.createBuffer({
      label: `${this.label} kernel params`,
      size: bytes,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    const words = new Uint32Array(buffer.getMappedRange());
    for (const [i, offset] of offsets) {
      const params = this.plan.kernels[i].params!;
      words.set(params, offset / 4);
      places.set(i, { buffer, offset, size: paramsBytes(params) });
    }
    buffer.unmap();
    this.owned.push(buffer);
    return places;
  }

  private async build(): Promise<void> {
    const device = this.dev.device;
    const plan = this.plan;
    // All pipelines compile in parallel; a failing kernel is named by its own rejection.
    this.pipelines = await scoped(device, `${this.label}: compiling ${plan.kernels.length} kernels`, async () => {
      const settled = await Promise.allSettled(plan.kernels.map((k) => pipelineFor(device, k)));
      const failed = settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      if (failed) throw new Error(`${this.label}: ${(failed.reason as Error).message}`);
      return settled.map((r) => (r as PromiseFulfilledResult<GPUComputePipeline>).value);
    });
    const params = this.uploadParams();
    this.bindGroups = await scoped(device, `${this.label}: binding kernels`, () =>
      plan.kernels.map((k, i) => {
        const entries: GPUBindGroupEntry[] = k.bindings.map((b, j) => {
          const place = plan.tensorBuffer.get(b.tensor);
          if (!place) throw new Error(`internal: kernel ${k.name} binds tensor ${b.tensor}, which has no planned buffer`);
          return { binding: j, resource: { buffer: this.buffers[place.buffer], offset: place.offset, size: place.bytes } };
        });
        const p = params.get(i);
        if (p) entries.push({ binding: k.bindings.length, resource: p });
        return device.createBindGroup({ label: k.name, layout: layoutFor(device, k), entries });
      }),
    );
    // Updates: a value living in a state buffer that this run also overwrites is copied aside first.
    const overwritten = new Set(Object.keys(plan.updates).map((name) => plan.state[name].buffer));
    for (const [name, u] of Object.entries(plan.updates)) {
      const dst = this.buffers[plan.state[name].buffer];
      if (u.zero) {
        this.updateClears.push({ buffer: dst, bytes: u.place.bytes });
        continue;
      }
      if (this.buffers[u.place.buffer] === dst && u.place.offset === 0) continue; // the value is the state itself (an in-place update)
      const copy: UpdateCopy = { name, src: u.place, dst };
      if (overwritten.has(u.place.buffer)) {
        copy.snapshot = device.createBuffer({
          label: `${this.label} snapshot for ${name}`,
          size: Math.max(16, Math.ceil(u.place.bytes / 16) * 16),
          usage: storageUsage(),
        });
        this.owned.push(copy.snapshot);
      }
      this.updateCopies.push(copy);
    }
  }

  /**
   * One step: uploads `inputs` (every graph input, by name), runs all kernels,
   * applies the state updates and returns the outputs named in `read` (all
   * outputs when omitted). Runs of one program are serialised.
   */
  run(inputs: Record<string, HostTensor>, read?: string[]): Promise<Record<string, HostTensor>> {
    const next = this.pending.then(async () => {
      const out = await this.runNow(inputs, read);
      this.stopWarming?.();
      this.stopWarming = undefined;
      return out;
    });
    this.pending = next.catch(() => undefined);
    return next;
  }

  private async runNow(inputs: Record<string, HostTensor>, read: string[] = Object.keys(this.plan.outputs)): Promise<Record<string, HostTensor>> {
    const device = this.dev.device;
    if (this.destroyed) throw new Error(`${this.label}: run() after destroy()`);
    checkAlive(device, `running ${this.label}`);
    const plan = this.plan;
    for (const name of Object.keys(inputs))
      if (!(name in plan.inputs)) throw new Error(`${this.label}: unknown input '${name}' (inputs: ${Object.keys(plan.inputs).join(', ') || 'none'})`);
    for (const [name, io] of Object.entries(plan.inputs)) {
      const data = inputs[name];
      if (data === undefined) throw new Error(`${this.label}: input '${name}' was not given`);
      checkHostTensor(`${this.label}: input '${name}'`, data, io.shape, io.dtype);
    }
    for (const name of read)
      if (!(name in plan.outputs)) throw new Error(`${this.label}: unknown output '${name}' (outputs: ${Object.keys(plan.outputs).join(', ') || 'none'})`);

    const wanted = read.filter((name) => numel(plan.outputs[name].shape) > 0);
    const reading = wanted.length > 4 ? `${wanted.slice(0, 3).join(', ')} and ${wanted.length - 3} more` : wanted.join(', ');
    const what = `running ${this.label} (${plan.kernels.length} dispatches${wanted.length ? `, reading ${reading}` : ''})`;
    return lossAware(device, what, () => this.submitAndRead(inputs, read, wanted, what));
  }

  /** The GPU part of a run: uploads, dispatches, copies, one submission, then maps the outputs. */
  private async submitAndRead(inputs: Record<string, HostTensor>, read: string[], wanted: string[], what: string): Promise<Record<string, HostTensor>> {
    const device = this.dev.device;
    const plan = this.plan;
    await scoped(device, what, () => {
      for (const [name, io] of Object.entries(plan.inputs)) {
        const data = inputs[name];
        if (data.byteLength) device.queue.writeBuffer(this.buffers[io.place.buffer], io.place.offset, data.buffer, data.byteOffset, data.byteLength);
      }
      const enc = device.createCommandEncoder({ label: this.label });
      const pass = enc.beginComputePass({ label: this.label });
      plan.kernels.forEach((k, i) => {
        pass.setPipeline(this.pipelines[i]);
        pass.setBindGroup(0, this.bindGroups[i]);
        pass.dispatchWorkgroups(k.workgroups[0], k.workgroups[1], k.workgroups[2]);
      });
      pass.end();
      // Outputs are read before updates land: they are values of this run, not the new state.
      for (const name of wanted) {
        const io = plan.outputs[name];
        enc.copyBufferToBuffer(this.buffers[io.place.buffer], io.place.offset, this.stagingFor(name, io.place.bytes), 0, io.place.bytes);
      }
      for (const u of this.updateCopies) if (u.snapshot) enc.copyBufferToBuffer(this.buffers[u.src.buffer], u.src.offset, u.snapshot, 0, u.src.bytes);
      for (const u of this.updateCopies) enc.copyBufferToBuffer(u.snapshot ?? this.buffers[u.src.buffer], u.snapshot ? 0 : u.src.offset, u.dst, 0, u.src.bytes);
      for (const c of this.updateClears) enc.clearBuffer(c.buffer, 0, c.bytes);
      device.queue.submit([enc.finish()]);
    });

    const out: Record<string, HostTensor> = {};
    await Promise.all(
      read.map(async (name) => {
        const io = plan.outputs[name];
        const n = numel(io.shape);
        if (n === 0) {
          out[name] = io.dtype === 'i32' ? new Int32Array(0) : new Float32Array(0);
          return;
        }
        const staging = this.staging.get(name)!;
        await staging.mapAsync(GPUMapMode.READ);
        const bytes = staging.getMappedRange(0, n * 4).slice(0);
        staging.unmap();
        out[name] = io.dtype === 'i32' ? new Int32Array(bytes) : new Float32Array(bytes);
      }),
    );
    checkAlive(device, what);
    return out;
  }

  /**
   * Times every dispatch of one run (for benchmarks; the state updates are not
   * applied). With the adapter's 'timestamp-query' feature each dispatch gets
   * its own compute pass with timestamps; otherwise each is submitted alone
   * and timed on the host until the queue is idle (which includes submit
   * overhead, and on the first run the driver's compilation of each pipeline);
   * `hostTimed` forces the latter.
   */
  async profile(inputs: Record<string, HostTensor>, hostTimed = false): Promise<{ method: string; kernels: { name: string; ms: number }[] }> {
    const device = this.dev.device;
    await this.pending;
    const plan = this.plan;
    for (const [name, io] of Object.entries(plan.inputs)) {
      const data = inputs[name];
      if (data === undefined) throw new Error(`${this.label}: input '${name}' was not given`);
      checkHostTensor(`${this.label}: input '${name}'`, data, io.shape, io.dtype);
      if (data.byteLength) device.queue.writeBuffer(this.buffers[io.place.buffer], io.place.offset, data.buffer, data.byteOffset, data.byteLength);
    }
    const n = plan.kernels.length;
    if (this.dev.features.has('timestamp-query') && !hostTimed) {
      const querySet = device.createQuerySet({ type: 'timestamp', count: 2 * n });
      const resolve = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      const read = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const enc = device.createCommandEncoder({ label: `${this.label} profile` });
      plan.kernels.forEach((k, i) => {
        const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
        pass.setPipeline(this.pipelines[i]);
        pass.setBindGroup(0, this.bindGroups[i]);
        pass.dispatchWorkgroups(k.workgroups[0], k.workgroups[1], k.workgroups[2]);
        pass.end();
      });
      enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(read.getMappedRange().slice(0));
      read.unmap();
      read.destroy();
      resolve.destroy();
      querySet.destroy();
      return { method: 'timestamp queries', kernels: plan.kernels.map((k, i) => ({ name: k.name, ms: Number(t[2 * i + 1] - t[2 * i]) / 1e6 })) };
    }
    const kernels: { name: string; ms: number }[] = [];
    for (let i = 0; i < n; i++) {
      const k = plan.kernels[i];
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(this.pipelines[i]);
      pass.setBindGroup(0, this.bindGroups[i]);
      pass.dispatchWorkgroups(k.workgroups[0], k.workgroups[1], k.workgroups[2]);
      pass.end();
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      kernels.push({ name: k.name, ms: performance.now() - t0 });
    }
    return { method: 'one submit per dispatch, host-timed', kernels };
  }

  private stagingFor(name: string, bytes: number): GPUBuffer {
    let s = this.staging.get(name);
    if (!s) {
      s = this.dev.device.createBuffer({
        label: `${this.label} read ${name}`,
        size: Math.max(16, Math.ceil(bytes / 16) * 16),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      this.staging.set(name, s);
    }
    return s;
  }

  /** Frees the program's own buffers (state stays in the StateStore). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.stopWarming?.();
    for (const b of this.owned) b.destroy();
    for (const b of this.staging.values()) b.destroy();
    this.staging.clear();
  }
}

/**
 * Convenience for tests and one-off evaluation: runs `graph` once on a fresh
 * StateStore seeded with `feeds.state`, and returns the outputs and the state
 * after the updates.
 */
export async function runGraph(
  dev: LovtDevice,
  graph: Graph,
  feeds: { inputs?: Record<string, HostTensor>; state?: Record<string, HostTensor> },
  opts: ProgramOptions = {},
): Promise<{ outputs: Record<string, HostTensor>; state: Record<string, HostTensor>; program: PlanStats }> {
  const store = new StateStore(dev);
  try {
    for (const s of Object.values(graph.state)) {
      store.define(s.name, s.shape, s.dtype);
      const v = feeds.state?.[s.name];
      if (v) store.upload(s.name, v);
    }
    const program = await Program.create(dev, graph, store, opts);
    try {
      const outputs = await program.run(feeds.inputs ?? {});
      const state: Record<string, HostTensor> = {};
      for (const name of Object.keys(graph.updates)) state[name] = await store.download(name);
      return { outputs, state, program: program.stats };
    } finally {
      program.destroy();
    }
  } finally {
    store.destroy();
  }
}
