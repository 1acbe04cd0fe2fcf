// TF.js runners for bench/run.ts, implementing the same BenchRunner interface
// as lovt's own kernels:
//  - 'tfjs-webgpu': @tensorflow/tfjs-backend-webgpu handed OUR GPUDevice, so it
//    runs on the very adapter and device lovt uses;
//  - 'tfjs-wasm': @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD; single-threaded
//    under Node) as a CPU reference, for the ops it implements.
// TF.js computes convolutions in its native NHWC layout (same FLOPs as NCHW).

import path from 'node:path';
import { createRequire } from 'node:module';
import type { LovtDevice } from '../runtime/device.ts';
import { type ResNetContrastiveCase, tfTrainStep } from './resnet-contrastive.ts';

/** One benchmark problem: a kernel, or a whole model's training step. */
export type BenchCase =
  { kind: 'matmul'; M: number; K: number; N: number } | { kind: 'conv3x3'; N: number; C: number; H: number; W: number; O: number } | ResNetContrastiveCase;

/** The steps of each case, in order ('forward', 'grad input', 'grad weight' for conv3x3). */
export function stepNames(c: BenchCase): string[] {
  return c.kind === 'matmul' ? ['matmul'] : c.kind === 'conv3x3' ? ['forward', 'grad input', 'grad weight'] : ['training step'];
}

/**
 * A prepared problem: its steps run in order each iteration and are timed one
 * by one; `run` is null for a step the runner cannot do (`unavailable` says why).
 */
export interface PreparedCase {
  steps: { name: string; run: (() => Promise<void>) | null; unavailable?: string }[];
  /** Makes the runner current before its steps run (TF.js: the active backend); not timed. */
  activate?(): Promise<void>;
  /** Model cases: the loss of the first forward pass (same weights and inputs in every runner). */
  initialLoss?: number;
  /** Model cases that train: the loss of a forward pass on the current weights. */
  loss?(): Promise<number>;
  /** Model cases: the trainable parameter count. */
  parameters?: number;
  /** Checks the runner's output against float64 before timing (bench/verify.ts): what is wrong, if anything. */
  verify?(): Promise<string[]>;
  dispose(): void;
}

export interface BenchRunner {
  name: string;
  prepare(c: BenchCase): Promise<PreparedCase>;
}

type TF = typeof import('@tensorflow/tfjs-core');
type Tensor = import('@tensorflow/tfjs-core').Tensor;

let tfPromise: Promise<TF> | undefined;
async function loadTF(): Promise<TF> {
  tfPromise ??= (async () => {
    const tf = await import('@tensorflow/tfjs-core');
    // tfjs-core's Node bundle registers no gradient functions (the tfjs union package does); training
    // needs them. Their ES module sources use directory imports, which only require() resolves.
    createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');
    // tfjs-core warns about missing tfjs-node on every Node import; the peers are the browser backends on purpose.
    tf.env().set('IS_NODE', true);
    return tf;
  })();
  return tfPromise;
}

async function useBackend(tf: TF, name: string): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`TF.js backend ${name} failed to initialise`);
  await tf.ready();
}

const random = (tf: TF, shape: number[]) => tf.randomUniform(shape, -1, 1, 'float32');

/** TF.js ops of a case as steps; `settle` waits until a step's work is finished. */
async function tfSteps(tf: TF, backend: string, c: BenchCase, settle: (t: Tensor) => Promise<void>): Promise<PreparedCase> {
  const keep: Tensor[] = [];
  const activate = () => useBackend(tf, backend);
  if (c.kind === 'resnet-contrastive') return { ...(await tfTrainStep(tf, backend, c, settle)), activate };
  const step = (name: string, kernel: string, f: () => Tensor) =>
    tf.getKernel(kernel, backend as any)
      ? {
          name,
          run: async () => {
            const r = f();
            await settle(r);
            r.dispose();
          },
        }
      : { name, run: null, unavailable: `no ${kernel} kernel` };
  if (c.kind === 'matmul') {
    const a = random(tf, [c.M, c.K]);
    const b = random(tf, [c.K, c.N]);
    keep.push(a, b);
    return { steps: [step('matmul', 'BatchMatMul', () => tf.matMul(a, b))], activate, dispose: () => tf.dispose(keep) };
  }
  const x = random(tf, [c.N, c.H, c.W, c.C]);
  const w = random(tf, [3, 3, c.C, c.O]);
  const dy = random(tf, [c.N, c.H, c.W, c.O]);
  keep.push(x, w, dy);
  const conv = { strides: 1, pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined } as const;
  return {
    steps: [
      step('forward', 'Conv2D', () => tf.conv2d(x as any, w as any, 1, 'same')),
      step(
        'grad input',
        'Conv2DBackpropInput',
        () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...conv, inputShape: [c.N, c.H, c.W, c.C] } as any) as Tensor,
      ),
      step(
        'grad weight',
        'Conv2DBackpropFilter',
        () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...conv, filterShape: [3, 3, c.C, c.O] } as any) as Tensor,
      ),
    ],
    activate,
    dispose: () => tf.dispose(keep),
  };
}

/** TF.js's WebGPU backend on lovt's own device (same adapter, same queue). */
export async function tfjsWebGPU(lovt: LovtDevice, gpu: GPU): Promise<BenchRunner> {
  // The backend checks navigator.gpu; Node 20 has no navigator, Node 21+ a read-only one.
  const nav = (globalThis as any).navigator ?? {};
  Object.defineProperty(globalThis, 'navigator', { value: Object.assign(Object.create(nav), { gpu }), configurable: true, writable: true });
  const tf = await loadTF();
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(lovt.device, (lovt.adapter as any).info));
  await useBackend(tf, 'webgpu');
  // Finish a step without reading back: flush TF.js's pending command encoder, then wait for the queue.
  const settle = async (t: Tensor) => {
    const backend = tf.backend() as any;
    if (typeof backend.submitQueue === 'function' && typeof backend.endComputePassEncoder === 'function') {
      backend.ensureCommandEncoderReady();
      backend.endComputePassEncoder();
      backend.submitQueue();
      await lovt.device.queue.onSubmittedWorkDone();
    } else await t.data();
  };
  return {
    name: 'tfjs-webgpu',
    async prepare(c) {
      await useBackend(tf, 'webgpu');
      return tfSteps(tf, 'webgpu', c, settle);
    },
  };
}

/** TF.js's WASM backend (CPU reference); it has no Conv2DBackpropFilter kernel, so that step is missing. */
export async function tfjsWasm(): Promise<BenchRunner> {
  const tf = await loadTF();
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  wasm.setWasmPaths(path.join(dist, 'dist') + path.sep);
  await useBackend(tf, 'wasm');
  const settle = async (t: Tensor) => void t.dataSync();
  return {
    name: 'tfjs-wasm',
    async prepare(c) {
      await useBackend(tf, 'wasm');
      return tfSteps(tf, 'wasm', c, settle);
    },
  };
}
