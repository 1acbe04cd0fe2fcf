// dawn.node (the `webgpu` package) resolves its promises -- mapAsync,
// onSubmittedWorkDone, createComputePipelineAsync -- by polling: while any is
// pending it calls instance.ProcessEvents() from a callback that re-arms
// itself with the global setImmediate on every turn of the event loop. A
// process waiting for the GPU therefore keeps one CPU core at 100%. On a CPU
// adapter (lavapipe: Mesa compiles every pipeline with LLVM at its first
// dispatch and runs the kernels on the same cores) that core is taken from
// the driver: measured on the 2-core CI machine, compiling and first-running
// 46 kernels took 9.3 s with the busy poll and 4.2 s with this throttle.
//
// throttleDawnPolling() wraps globalThis.setImmediate (which dawn.node looks
// up on every tick) so that dawn's native poll callback is re-armed with
// setImmediate for the first POLL_FAST_MS of a wait -- short waits keep their
// latency -- and with a 1 ms setTimeout after that (under load the timer fires
// later still, which is the point: the core goes to the driver). A wait ends
// when a tick runs and dawn does not re-arm it; the next wait starts fast.
// JavaScript callbacks are passed through untouched.

/** A wait shorter than this polls at full speed. */
const POLL_FAST_MS = 2;

let installed = false;

function isNativeFunction(fn: unknown): boolean {
  return typeof fn === 'function' && Function.prototype.toString.call(fn).includes('[native code]');
}

/** Installs the throttle once per process (idempotent). */
export function throttleDawnPolling(): void {
  if (installed) return;
  installed = true;
  const original = globalThis.setImmediate;
  let waitStart = -1; // when the current chain of poll ticks began; -1: no wait in progress
  let rearmed = false;
  const throttled = (fn: (...args: unknown[]) => void, ...args: unknown[]) => {
    if (!isNativeFunction(fn)) return original(fn, ...args);
    const now = performance.now();
    if (waitStart < 0) waitStart = now;
    rearmed = true;
    const tick = () => {
      rearmed = false;
      fn(...args);
      if (!rearmed) waitStart = -1; // dawn has nothing left to poll for
    };
    return now - waitStart > POLL_FAST_MS ? setTimeout(tick, 1) : original(tick);
  };
  Object.assign(throttled, original); // keeps util.promisify's custom hook
  globalThis.setImmediate = throttled as unknown as typeof setImmediate;
}
