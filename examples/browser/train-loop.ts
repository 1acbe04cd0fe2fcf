// Runs compiled training programs (the step and apply graphs of
// buildTrainingPrograms) for a few optimizer steps on any LovtDevice; each
// device plans its own kernels (Program.create picks the kernel templates for
// the device, e.g. subgroup GEMMs on CPU adapters). Platform-neutral: it imports only the
// runtime's public entry, so the same code runs in the browser example, in the
// browser test's page and under Node (the test's other side).

import {
  Program,
  StateStore,
  buildTrainingPrograms,
  optimizerScalars,
  readSafetensors,
  validateGraph,
  writeSafetensors,
  IR_VERSION,
  type Graph,
  type HostTensor,
  type LovtDevice,
  type OptimizerOptions,
} from '../../runtime/index.ts';

/** What a page downloads (plain JSON). */
export interface CompiledTraining {
  format: 'lovt-training';
  irVersion: number;
  step: Graph;
  apply: Graph;
  optimizer: OptimizerOptions;
  /** The step program's output that is minimised. */
  loss: string;
}

export interface TrainRunOptions {
  /** Learning rate of every step. */
  lr: number;
  /** Called after each optimizer step (1-based) with that step's loss, before the next starts. */
  onStep?: (step: number, loss: number) => void;
  /** Called with a line of progress (e.g. before the kernels compile, which is slow on software adapters). */
  onProgress?: (message: string) => void;
}

export interface TrainRunResult {
  /** The loss of each step, computed before that step's update. */
  losses: number[];
  /** Every output of the step program at each step. */
  outputs: Record<string, HostTensor>[];
  /** The value of every state tensor after the last optimizer step. */
  state: Record<string, HostTensor>;
  /** The device that ran it, e.g. "swiftshader / vulkan". */
  device: string;
}

/**
 * Compiles a forward graph for training: autodiff and the optimizer give the
 * step and apply graphs (optimised by the graph passes). The graphs are
 * device-independent; each device plans its kernels when it loads them.
 */
export function compileTraining(forward: Graph, loss: string, optimizer: OptimizerOptions): CompiledTraining {
  const { step, apply } = buildTrainingPrograms(forward, { loss, optimizer, accumulate: 1 });
  return { format: 'lovt-training', irVersion: IR_VERSION, step, apply, optimizer, loss };
}

/** Batches as one safetensors file, tensors named "<batch index>/<input name>"; shapes from `graph`'s inputs. */
export function encodeBatches(graph: Graph, batches: Record<string, HostTensor>[]): Uint8Array {
  const tensors: Record<string, { shape: number[]; data: HostTensor }> = {};
  batches.forEach((batch, i) => {
    for (const [name, data] of Object.entries(batch)) {
      const id = graph.inputs[name];
      if (id === undefined) throw new Error(`batch ${i}: '${name}' is not an input of the graph (inputs: ${Object.keys(graph.inputs).join(', ')})`);
      tensors[`${i}/${name}`] = { shape: graph.nodes[id].shape, data };
    }
  });
  return writeSafetensors(tensors);
}

/** The inverse of encodeBatches. */
export function decodeBatches(bytes: Uint8Array): Record<string, HostTensor>[] {
  const batches: Record<string, HostTensor>[] = [];
  for (const [name, t] of readSafetensors(bytes).tensors) {
    const slash = name.indexOf('/');
    const index = Number(name.slice(0, slash));
    if (slash < 1 || !Number.isInteger(index) || index < 0) throw new Error(`batches file: tensor name '${name}' is not "<batch index>/<input name>"`);
    (batches[index] ??= {})[name.slice(slash + 1)] = t.data;
  }
  if (batches.some((b) => b === undefined)) throw new Error('batches file: batch indices have gaps');
  return batches;
}

/** Checks a downloaded CompiledTraining before anything runs; errors say which field is wrong. */
export function checkCompiledTraining(value: unknown, what = 'compiled training'): CompiledTraining {
  const c = value as Partial<CompiledTraining> | null;
  if (!c || typeof c !== 'object') throw new Error(`${what}: expected a JSON object, got ${value === null ? 'null' : typeof value}`);
  if (c.format !== 'lovt-training') throw new Error(`${what}: format is ${JSON.stringify(c.format)}, expected "lovt-training"`);
  if (c.irVersion !== IR_VERSION) throw new Error(`${what}: IR version ${c.irVersion}, but this runtime reads version ${IR_VERSION}; recompile the model`);
  for (const key of ['step', 'apply'] as const) {
    try {
      validateGraph(c[key] as Graph);
    } catch (e) {
      throw new Error(`${what}: the ${key} graph is invalid: ${(e as Error).message}`);
    }
  }
  if (typeof c.loss !== 'string' || !(c.loss in c.step!.outputs)) throw new Error(`${what}: loss ${JSON.stringify(c.loss)} is not an output of the step graph`);
  if (!c.optimizer || typeof c.optimizer.kind !== 'string') throw new Error(`${what}: missing optimizer`);
  return c as CompiledTraining;
}

/**
 * Trains for `batches.length` optimizer steps (one micro-batch each) starting
 * from `initial` state (every state tensor of both programs, by name), and
 * returns the losses, the outputs and the final state.
 */
export async function trainSteps(
  dev: LovtDevice,
  compiled: CompiledTraining,
  initial: Record<string, HostTensor>,
  batches: Record<string, HostTensor>[],
  opts: TrainRunOptions,
): Promise<TrainRunResult> {
  const store = new StateStore(dev);
  const programs: Program[] = [];
  try {
    for (const graph of [compiled.step, compiled.apply])
      for (const s of Object.values(graph.state)) {
        store.define(s.name, s.shape, s.dtype);
        const value = initial[s.name];
        if (!value) throw new Error(`no initial value for state '${s.name}'`);
        store.upload(s.name, value);
      }
    opts.onProgress?.('compiling the step and apply programs for this device');
    const step = await Program.create(dev, compiled.step, store, { label: 'step' });
    programs.push(step);
    const apply = await Program.create(dev, compiled.apply, store, { label: 'apply' });
    programs.push(apply);
    opts.onProgress?.(`compiled: ${step.stats.kernels + apply.stats.kernels} kernels`);

    const losses: number[] = [];
    const outputs: Record<string, HostTensor>[] = [];
    for (let t = 1; t <= batches.length; t++) {
      const out = await step.run(batches[t - 1]);
      const loss = out[compiled.loss][0];
      if (!Number.isFinite(loss)) throw new Error(`step ${t}: the loss is ${loss}`);
      losses.push(loss);
      outputs.push(out);
      const scalars: Record<string, HostTensor> = {};
      for (const [name, v] of Object.entries(optimizerScalars(t, opts.lr, compiled.optimizer)))
        if (name in compiled.apply.inputs) scalars[name] = Float32Array.of(v);
      await apply.run(scalars, []);
      opts.onStep?.(t, loss);
    }
    const state: Record<string, HostTensor> = {};
    for (const name of store.names()) state[name] = await store.download(name);
    return { losses, outputs, state, device: dev.description };
  } finally {
    for (const p of programs) p.destroy();
    store.destroy();
  }
}
