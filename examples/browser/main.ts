// The browser example's page script: downloads compiled training programs
// (training.json, written by serve.ts) and a few batches, initialises the
// model's state in the page from a seed, and trains on the tab's WebGPU device,
// printing the loss of every step. It imports the runtime only through its
// public entry points, which the bundle rewrites to ./lovt-browser.js.

import { getBrowserDevice } from '../../runtime/platform/browser.ts';
import { initState } from '../../runtime/index.ts';
import { checkCompiledTraining, decodeBatches, trainSteps } from './train-loop.ts';

interface ExampleSpec {
  /** The compiled step/apply programs (CompiledTraining). */
  compiled: unknown;
  seed: number;
  lr: number;
  /** Passes over the batches. */
  epochs: number;
}

const logElement = document.getElementById('log')!;
const log = (line: string) => {
  logElement.textContent += line + '\n';
};

async function download(url: string): Promise<Response> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status} (run serve.ts, which writes it)`);
  return r;
}

async function main(): Promise<void> {
  const spec = (await (await download('./training.json')).json()) as ExampleSpec;
  const compiled = checkCompiledTraining(spec.compiled, 'training.json');
  const batches = decodeBatches(new Uint8Array(await (await download('./batches.safetensors')).arrayBuffer()));
  const state = { ...initState(compiled.step, spec.seed), ...initState(compiled.apply, spec.seed) };
  log(
    `model: ${compiled.step.nodes.length} step nodes, ${Object.values(compiled.step.state).filter((s) => s.trainable).length} parameter tensors, ${batches.length} batches`,
  );

  const dev = await getBrowserDevice();
  log(`WebGPU device: ${dev.description}`);
  const epochBatches = Array.from({ length: spec.epochs }, () => batches).flat();
  const started = performance.now();
  const result = await trainSteps(dev, compiled, state, epochBatches, {
    lr: spec.lr,
    onProgress: log,
    onStep: (step, loss) => log(`step ${String(step).padStart(3)}  loss ${loss.toFixed(5)}`),
  });
  log(`trained ${result.losses.length} steps in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((e) => log(`error: ${(e as Error).message}`));
