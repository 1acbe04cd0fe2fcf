// Pipeline warming on lavapipe (Node only). llvmpipe compiles each compute
// pipeline with LLVM at its first dispatch, serially on the device queue's
// thread, so a program's first run pays for all its distinct pipelines on one
// core -- minutes for lovt-tiny's training step when Mesa's shader cache is
// cold. Helper devices (more VkDevices of the same driver, one per spare
// core) compile the same pipelines from the other end of the program by
// dispatching each once with one workgroup on dummy buffers; Mesa stores the
// machine code in its on-disk cache, where the main device finds it at its own
// first dispatch. Measured on the 2-core CI machine: 12 pipelines, 6.1 s on
// one device, 3.4 s split over two; a pipeline a helper has compiled costs
// the main device ~1 ms. Nothing is shared when the cache is disabled
// (MESA_SHADER_CACHE_DISABLE), so warming is off then; LOVT_PIPELINE_WARMING=0
// turns it off too.

import os from 'node:os';
import { type Kernel, paramsBytes } from '../../compiler/codegen/kernel.ts';
import { openDevice, type LovtDevice } from '../device.ts';
import { layoutFor, pipelineFor, registerPipelineWarmer, type PipelineWarmer } from '../executor.ts';

/** Bytes of each dummy buffer: the helper runs one workgroup and discards what it computes (accesses are bounds-checked). */
const DUMMY_BYTES = 256;

function flagOff(value: string | undefined): boolean {
  const v = (value ?? '').trim().toLowerCase();
  return ['0', 'false', 'no', 'n', 'off'].includes(v);
}

function flagOn(value: string | undefined): boolean {
  const v = (value ?? '').trim().toLowerCase();
  return v !== '' && !flagOff(v);
}

interface Helper {
  dev: LovtDevice;
  /** One buffer per binding slot (distinct: a buffer may not be bound read-only and writable at once). */
  dummies: GPUBuffer[];
  /** Zeros for a kernel's uniform params. */
  params: GPUBuffer;
}

/** Compiles queued kernels on helper devices, one kernel at a time per helper. */
class HelperWarmer implements PipelineWarmer {
  private queue: { kernel: Kernel; ticket: number }[] = [];
  private queued = new Set<string>();
  private nextTicket = 0;
  private helpers: Promise<Helper | undefined>[] = [];
  private busy = 0;

  constructor(
    private gpu: GPU,
    private count: number,
  ) {}

  warm(kernels: Kernel[]): () => void {
    const ticket = this.nextTicket++;
    for (const kernel of kernels) {
      if (this.queued.has(kernel.wgsl)) continue;
      this.queued.add(kernel.wgsl);
      this.queue.push({ kernel, ticket });
    }
    while (this.busy < Math.min(this.count, this.queue.length)) this.work(this.busy++);
    // Kernels dropped here are the ones the program's first run compiled on the main device.
    return () => {
      this.queue = this.queue.filter((e) => e.ticket !== ticket);
    };
  }

  private helper(slot: number): Promise<Helper | undefined> {
    this.helpers[slot] ??= openDevice(this.gpu).then(
      (dev) => {
        const slots = dev.limits.maxStorageBuffersPerShaderStage;
        const dummies = Array.from({ length: slots }, (_v, i) =>
          dev.device.createBuffer({ label: `lovt warmer dummy ${i}`, size: DUMMY_BYTES, usage: GPUBufferUsage.STORAGE }),
        );
        const params = dev.device.createBuffer({ label: 'lovt warmer params', size: DUMMY_BYTES, usage: GPUBufferUsage.UNIFORM });
        return { dev, dummies, params };
      },
      () => undefined, // no second device: no warming
    );
    return this.helpers[slot];
  }

  private async work(slot: number): Promise<void> {
    try {
      const helper = await this.helper(slot);
      while (helper && this.queue.length) await compileOn(helper, this.queue.shift()!.kernel);
    } finally {
      this.busy--;
    }
  }
}

/** Compiles one kernel on a helper by dispatching one workgroup; failures are left for the main device to report. */
async function compileOn(helper: Helper, k: Kernel): Promise<void> {
  const device = helper.dev.device;
  if (k.bindings.length > helper.dummies.length || (k.params && paramsBytes(k.params) > DUMMY_BYTES)) return;
  device.pushErrorScope('validation');
  try {
    const pipeline = await pipelineFor(device, k);
    const bindGroup = device.createBindGroup({
      layout: layoutFor(device, k),
      entries: [
        ...k.bindings.map((_b, i) => ({ binding: i, resource: { buffer: helper.dummies[i] } })),
        // All-zero params: every loop of the one workgroup runs zero times.
        ...(k.params ? [{ binding: k.bindings.length, resource: { buffer: helper.params, size: paramsBytes(k.params) } }] : []),
      ],
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  } catch {
    // The main device compiles and reports this kernel itself.
  } finally {
    await device.popErrorScope().catch(() => undefined);
  }
}

/**
 * Registers helper-device warming for `dev` when it is lavapipe with Mesa's
 * shader cache on (one helper per spare core, at most 3).
 */
export function enablePipelineWarming(dev: LovtDevice, gpu: GPU): void {
  if (!/llvmpipe|lavapipe/i.test(dev.description)) return;
  if (flagOn(process.env.MESA_SHADER_CACHE_DISABLE) || flagOff(process.env.LOVT_PIPELINE_WARMING)) return;
  const helpers = Math.max(1, Math.min(3, os.availableParallelism() - 1));
  registerPipelineWarmer(dev.device, new HelperWarmer(gpu, helpers));
}
