// Browser platform: WebGPU through `navigator.gpu`. Like platform/node.ts it
// only supplies the GPU object; limits, features and error reporting are the
// shared openDevice() in runtime/device.ts. It is the only runtime module that
// touches `navigator`, and it never touches Node: scripts/bundle-browser.ts
// bundles it with runtime/index.ts and fails on any Node-only import.

/// <reference types="@webgpu/types" />
import { openDevice, type LovtDevice } from '../device.ts';

/** What a page can tell about why WebGPU is missing, for the error message. */
function missingWebGPUReason(): string {
  const g = globalThis as { isSecureContext?: boolean; location?: { origin?: string }; navigator?: { userAgent?: string } };
  if (g.navigator === undefined) return 'there is no `navigator` here: this is not a browser page or worker (under Node.js use runtime/platform/node.ts)';
  if (g.isSecureContext === false)
    return `this page (${g.location?.origin ?? 'unknown origin'}) is not a secure context, and browsers only expose WebGPU to secure contexts: serve it from https:// or from http://localhost / http://127.0.0.1`;
  return (
    `this browser (${g.navigator.userAgent ?? 'unknown user agent'}) does not expose navigator.gpu: use a browser with WebGPU ` +
    '(Chromium/Chrome/Edge 113+, Firefox 141+ on Windows, Safari 26+) or enable it (Chromium on Linux: --enable-unsafe-webgpu)'
  );
}

/** `navigator.gpu`, or an error that says why WebGPU is unavailable in this page. */
export function browserGPU(): GPU {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) throw new Error(`WebGPU is not available: ${missingWebGPUReason()}.`);
  return gpu;
}

let cached: Promise<LovtDevice> | undefined;

/**
 * One device per page, like getNodeDevice(): every Program and StateStore of a
 * page must share it (GPU buffers cannot cross devices). A failed request is
 * not cached, so a page can retry (e.g. after the user enables a flag).
 */
export function getBrowserDevice(options: GPURequestAdapterOptions = {}): Promise<LovtDevice> {
  if (!cached) {
    const opening = Promise.resolve().then(() => openDevice(browserGPU(), options));
    cached = opening;
    opening.catch(() => {
      if (cached === opening) cached = undefined;
    });
  }
  return cached;
}
