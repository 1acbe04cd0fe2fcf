// Node.js platform: Dawn through the `webgpu` package. The GPU instance keeps the
// process alive until dropped, so command-line tools call process.exit() when done.
import { create, globals } from 'webgpu';
import { openDevice, type LovtDevice } from '../device.ts';
import { throttleDawnPolling } from './node-poll.ts';
import { enablePipelineWarming } from './node-warm.ts';

let gpuInstance: GPU | undefined;
let cached: Promise<LovtDevice> | undefined;

export function nodeGPU(flags: string[] = []): GPU {
  if (!gpuInstance) {
    Object.assign(globalThis, globals);
    throttleDawnPolling(); // dawn.node busy-polls while waiting for the GPU; see node-poll.ts
    gpuInstance = create(flags) as unknown as GPU;
  }
  return gpuInstance;
}

/** One device per process: Dawn adapters must be requested once, on the main thread. */
export function getNodeDevice(): Promise<LovtDevice> {
  cached ??= openDevice(nodeGPU()).then((dev) => {
    enablePipelineWarming(dev, nodeGPU()); // lavapipe: compile pipelines on a spare core too; see node-warm.ts
    return dev;
  });
  return cached;
}

/**
 * A device of its own, on a fresh adapter of the same GPU instance (an
 * adapter yields one device): for helpers and for tests that destroy their
 * device. Call getNodeDevice() first so the main device keeps the first adapter.
 */
export function openSeparateNodeDevice(): Promise<LovtDevice> {
  return openDevice(nodeGPU());
}
