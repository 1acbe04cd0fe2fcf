// StateStore: one GPU buffer per state tensor (parameters, optimizer moments,
// batch-norm statistics, gradient accumulators), by dotted name. Several
// programs (a training step, an optimizer apply, an evaluation forward) bind
// the same buffers, so state written by one is seen by the next without
// copies through the host.

/// <reference types="@webgpu/types" />
import type { DType, Shape } from '../compiler/ir.ts';
import { numel, shapeStr } from '../compiler/ir.ts';
import type { LovtDevice } from './device.ts';

export type HostTensor = Float32Array | Int32Array;

interface Entry {
  shape: Shape;
  dtype: DType;
  buffer: GPUBuffer;
}

export class StateStore {
  private entries = new Map<string, Entry>();

  constructor(readonly dev: LovtDevice) {}

  /**
   * Makes sure state `name` exists with this shape and dtype (zero-filled when
   * new). Throws if it exists with a different type: two programs disagree.
   */
  define(name: string, shape: Shape, dtype: DType): GPUBuffer {
    const e = this.entries.get(name);
    if (e) {
      if (shapeStr(e.shape) !== shapeStr(shape) || e.dtype !== dtype)
        throw new Error(`state '${name}' is ${e.dtype}${shapeStr(e.shape)} in the store but a program declares it ${dtype}${shapeStr(shape)}`);
      return e.buffer;
    }
    const bytes = Math.max(16, Math.ceil((numel(shape) * 4) / 16) * 16);
    const buffer = this.dev.device.createBuffer({
      label: `state ${name}`,
      size: bytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.entries.set(name, { shape: [...shape], dtype, buffer });
    return buffer;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  info(name: string): { shape: Shape; dtype: DType } {
    const e = this.get(name);
    return { shape: e.shape, dtype: e.dtype };
  }

  buffer(name: string): GPUBuffer {
    return this.get(name).buffer;
  }

  private get(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`state '${name}' is not in the store (known: ${this.names().slice(0, 8).join(', ')}${this.entries.size > 8 ? ', …' : ''})`);
    return e;
  }

  /** Writes host values into state `name` (Float32Array for f32, Int32Array for i32). */
  upload(name: string, data: HostTensor): void {
    const e = this.get(name);
    checkHostTensor(`state '${name}'`, data, e.shape, e.dtype);
    this.dev.device.queue.writeBuffer(e.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Reads state `name` back to the host. */
  async download(name: string): Promise<HostTensor> {
    const e = this.get(name);
    const bytes = numel(e.shape) * 4;
    if (bytes === 0) return e.dtype === 'i32' ? new Int32Array(0) : new Float32Array(0);
    const device = this.dev.device;
    const staging = device.createBuffer({
      label: `download ${name}`,
      size: Math.ceil(bytes / 4) * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(e.buffer, 0, staging, 0, bytes);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const copy = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    return e.dtype === 'i32' ? new Int32Array(copy) : new Float32Array(copy);
  }

  /** Frees every buffer; the store is unusable afterwards. */
  destroy(): void {
    for (const e of this.entries.values()) e.buffer.destroy();
    this.entries.clear();
  }
}

/** Checks a host array against a tensor's declared type; `what` names it in the error. */
export function checkHostTensor(what: string, data: unknown, shape: Shape, dtype: DType): asserts data is HostTensor {
  const want = dtype === 'i32' ? Int32Array : Float32Array;
  if (!(data instanceof want)) throw new Error(`${what} must be a ${want.name} (${dtype}${shapeStr(shape)}), got ${data?.constructor?.name ?? typeof data}`);
  if (data.length !== numel(shape)) throw new Error(`${what} has ${data.length} values but its shape ${shapeStr(shape)} needs ${numel(shape)}`);
}
