// A minimal way to run ONE generated Kernel on the device, independent of the
// executor: upload the read bindings, dispatch, read the written binding back.
// Used by the contraction tests (matmul, conv) and by bench/run.ts, which
// re-dispatches a prepared kernel to time it. Also the contraction tests'
// shared setup: the templates the device runs, seeded test data, the f32 bound.

import * as assert from 'uvu/assert';
import { type Kernel, paramsBytes } from '../../compiler/codegen/kernel.ts';
import { type ContractionOptions, PORTABLE_TARGET } from '../../compiler/codegen/gemm.ts';
import { type LovtDevice, contractionTarget } from '../../runtime/device.ts';

/**
 * The contraction templates this device can run: 'tiled' always, 'subgroup'
 * where the device has fixed-size subgroups (subgroupSize 0 otherwise).
 */
export function contractionTemplates(lovt: LovtDevice): { templates: [string, ContractionOptions][]; subgroupSize: number } {
  const info = lovt.adapter.info as any;
  const subgroupSize = contractionTarget(lovt).subgroupSize || (lovt.features.has('subgroups') ? Number(info.subgroupMinSize) || 0 : 0);
  const templates: [string, ContractionOptions][] = [['tiled', { maxWorkgroupsPerDim: 65535, target: PORTABLE_TARGET }]];
  if (lovt.features.has('subgroups') && info.subgroupMinSize === info.subgroupMaxSize && subgroupSize > 0)
    templates.push(['subgroup', { maxWorkgroupsPerDim: 65535, target: { kind: 'simd-cpu', subgroupSize } }]);
  return { templates, subgroupSize };
}

/** A deterministic generator of f32 arrays uniform in [-1, 1) (a 32-bit LCG from `seed`). */
export function seededUniform(seed: number): (n: number) => Float32Array {
  return (n) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      a[i] = (seed / 2 ** 32) * 2 - 1;
    }
    return a;
  };
}

export interface PreparedKernel {
  /** Dispatches once and waits until the device has finished. */
  run(): Promise<void>;
  /** Dispatches `times` times in one submission and waits. */
  runMany(times: number): Promise<void>;
  /** The written (last) binding's contents. */
  read(): Promise<Float32Array>;
  destroy(): void;
}

/**
 * Compiles `kernel` and binds fresh buffers: `inputs[i]` fills read binding i
 * (a number means that many uninitialised f32), the read_write binding gets
 * `outputSize` f32. Compilation errors throw with the offending WGSL line.
 */
export async function prepareKernel(device: GPUDevice, kernel: Kernel, inputs: (Float32Array | number)[], outputSize: number): Promise<PreparedKernel> {
  const reads = kernel.bindings.filter((b) => b.access === 'read').length;
  if (inputs.length !== reads) throw new Error(`${kernel.name} has ${reads} read bindings, ${inputs.length} inputs given`);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: kernel.wgsl });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    const lines = kernel.wgsl.split('\n');
    throw new Error(`${kernel.name}: WGSL errors:\n${errors.map((m) => `  ${m.lineNum}: ${m.message}\n    ${lines[m.lineNum - 1]?.trim()}`).join('\n')}`);
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: kernel.entryPoint } });
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffers = kernel.bindings.map((b, i) => {
    const src = i < inputs.length ? inputs[i] : outputSize;
    const n = typeof src === 'number' ? src : src.length;
    const buffer = device.createBuffer({ size: Math.max(16, Math.ceil((n * 4) / 16) * 16), usage });
    if (typeof src !== 'number') device.queue.writeBuffer(buffer, 0, src);
    return buffer;
  });
  const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
  // Kernel.params: the uniform block after the storage bindings.
  const params = kernel.params && device.createBuffer({ size: paramsBytes(kernel.params), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  if (params) {
    device.queue.writeBuffer(params, 0, new Uint32Array(kernel.params!));
    entries.push({ binding: buffers.length, resource: { buffer: params } });
  }
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const error = await device.popErrorScope();
  if (error) throw new Error(`${kernel.name}: ${error.message}`);
  const out = buffers[buffers.length - 1];

  const runMany = async (times: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let i = 0; i < times; i++) pass.dispatchWorkgroups(...kernel.workgroups);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  return {
    run: () => runMany(1),
    runMany,
    async read() {
      const staging = device.createBuffer({ size: outputSize * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(out, 0, staging, 0, outputSize * 4);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const result = new Float32Array(staging.getMappedRange().slice(0));
      staging.destroy();
      return result;
    },
    destroy() {
      for (const b of buffers) b.destroy();
      params?.destroy();
    },
  };
}

/** Runs a kernel once on the given inputs and returns its output. */
export async function runKernel(device: GPUDevice, kernel: Kernel, inputs: Float32Array[], outputSize: number): Promise<Float32Array> {
  const k = await prepareKernel(device, kernel, inputs, outputSize);
  try {
    await k.run();
    return await k.read();
  } finally {
    k.destroy();
  }
}

/**
 * The f32 summation bound for a sum of `terms` products whose magnitude Σ|a·b| is
 * `mag`: 1.5·(terms + 2)·2^-24·mag (plus a hair for the exact-zero case).
 */
export function f32SumTolerance(terms: number, mag: number): number {
  return 1.5 * (terms + 2) * 2 ** -24 * mag + 1e-30;
}

/** Asserts |got - want| is within the f32 summation bound (f32SumTolerance) for `terms` products, mag[i] = Σ|a·b|. */
export function assertWithinF32Bound(got: Float32Array, want: ArrayLike<number>, mag: ArrayLike<number>, terms: number, what: string) {
  assert.is(got.length, want.length, `${what}: output length`);
  for (let i = 0; i < got.length; i++) {
    const tol = f32SumTolerance(terms, mag[i]);
    if (!(Math.abs(got[i] - want[i]) <= tol)) assert.unreachable(`${what}: element ${i} is ${got[i]}, expected ${want[i]} (tolerance ${tol.toExponential(2)})`);
  }
}
