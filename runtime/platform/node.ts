// Node.js platform: Dawn through the `webgpu` package. The GPU instance keeps the
// process alive until dropped, so command-line tools call process.exit() when done.
import { readFile } from 'node:fs/promises';
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

/**
 * `lovt-run doctor`: Node, Dawn, the adapter, its features and the limits lovt
 * raises, as lines; without an adapter, an error saying how to get one.
 */
export async function doctorReport(): Promise<string[]> {
  const pkg = JSON.parse(await readFile(new URL('../../node_modules/webgpu/package.json', import.meta.url), 'utf8').catch(() => '{}'));
  const lines = [`node ${process.version} (${process.platform} ${process.arch}), webgpu (Dawn) ${pkg.version ?? '?'}`];
  const adapter = await nodeGPU().requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error(
      'no WebGPU adapter. Dawn needs a Vulkan driver (Linux), Metal (macOS) or D3D12 (Windows). ' +
        "On Debian/Ubuntu without a GPU run `bash scripts/setup-system.sh` (installs Mesa's lavapipe software Vulkan driver " +
        'from bookworm-backports), or install mesa-vulkan-drivers (Mesa >= 24) yourself; then run `lovt-run doctor` again.',
    );
  }
  const d = await openDevice(nodeGPU());
  lines.push(`adapter: ${d.description}`);
  if (/llvmpipe|lavapipe|swiftshader|software/i.test(d.description))
    lines.push('  (a CPU software rasteriser: correct but slow; expect minutes for the tiny models)');
  const wanted = ['shader-f16', 'timestamp-query', 'subgroups'];
  lines.push(`features: ${wanted.map((f) => `${f} ${d.features.has(f) ? 'yes' : 'no'}`).join(', ')}`);
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  const l = d.limits;
  lines.push(
    `limits: maxBufferSize ${mib(l.maxBufferSize)}, maxStorageBufferBindingSize ${mib(l.maxStorageBufferBindingSize)}, ` +
      `maxStorageBuffersPerShaderStage ${l.maxStorageBuffersPerShaderStage}, maxComputeWorkgroupStorageSize ${l.maxComputeWorkgroupStorageSize} B, ` +
      `maxComputeInvocationsPerWorkgroup ${l.maxComputeInvocationsPerWorkgroup}, maxComputeWorkgroupsPerDimension ${l.maxComputeWorkgroupsPerDimension}`,
  );
  lines.push('ok: lovt can train on this device');
  return lines;
}
