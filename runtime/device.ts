// Platform-neutral WebGPU device acquisition. The platform modules
// (platform/node.ts, platform/browser.ts) only supply a GPU object (navigator.gpu
// or Dawn's); everything else -- limits, features, error reporting -- is here.

/// <reference types="@webgpu/types" />

import type { ContractionTarget } from '../compiler/codegen/gemm.ts';

export interface LovtDevice {
  device: GPUDevice;
  adapter: GPUAdapter;
  /** Human-readable adapter description, e.g. "llvmpipe (LLVM 19) / vulkan". */
  description: string;
  limits: GPUSupportedLimits;
  features: Set<string>;
}

/** The limits we raise from WebGPU's defaults to the adapter's own values. */
const RAISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
] as const;

const WANTED_FEATURES = ['shader-f16', 'timestamp-query', 'subgroups'] as const;

export async function openDevice(gpu: GPU, options: GPURequestAdapterOptions = {}): Promise<LovtDevice> {
  let adapter = await gpu.requestAdapter({ powerPreference: 'high-performance', ...options });
  if (!adapter) {
    throw new Error(
      "No WebGPU adapter found. On Debian/Ubuntu without a GPU install Mesa's software Vulkan driver " +
        '(bash scripts/setup-system.sh, which enables bookworm-backports and installs mesa-vulkan-drivers); ' +
        'in a browser enable WebGPU (Chromium: --enable-unsafe-webgpu). Run `lovt-run doctor` for details.',
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const k of RAISED_LIMITS) {
    const v = (adapter.limits as any)[k];
    if (typeof v === 'number') requiredLimits[k] = v;
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter!.features.has(f)) as GPUFeatureName[];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const info: any = (adapter as any).info ?? {};
  const description = [info.description || info.device || info.vendor || 'unknown adapter', info.architecture, info.backendType ?? '']
    .filter(Boolean)
    .join(' / ');
  return { device, adapter, description, limits: device.limits, features: new Set(device.features as any) };
}

/** The adapter facts contractionTarget reads (a LovtDevice satisfies this). */
export interface TargetProbe {
  features: Set<string>;
  adapter: { info?: unknown };
  description?: string;
}

/**
 * The contraction kernel family for an opened device, which the compiler takes
 * as plain data (PlanOptions.target): CPU-emulated adapters
 * (lavapipe/llvmpipe, SwiftShader, WARP) with a fixed subgroup size get the
 * subgroup template, everything else the tiled one.
 */
export function contractionTarget(dev: TargetProbe): ContractionTarget {
  const info = (dev.adapter.info ?? {}) as Record<string, unknown>;
  const min = Number(info.subgroupMinSize ?? 0);
  const max = Number(info.subgroupMaxSize ?? 0);
  const subgroupSize = dev.features.has('subgroups') && min > 0 && min === max && (min & (min - 1)) === 0 ? min : 0;
  const text = [info.architecture, info.device, info.description, info.vendor, dev.description].map((s) => String(s ?? '')).join(' ');
  const cpu = info.isFallbackAdapter === true || /software|llvmpipe|lavapipe|swiftshader|warp/i.test(text);
  return { kind: cpu && subgroupSize >= 4 ? 'simd-cpu' : 'gpu', subgroupSize };
}
