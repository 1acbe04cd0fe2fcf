// One training-mode forward on given weights and a given batch, for checking a
// model against an independent implementation (`lovt-run loss`): BatchNorm uses
// batch statistics, dropout is disabled (p forced to 0), and the result is every
// loss term, the total and optionally the gradient of every trainable parameter.
// Nothing is persisted: the state lives only for this call.

import { buildTrainingPrograms, gradAccName } from '../../compiler/train-program.ts';
import { optimize } from '../../compiler/passes/index.ts';
import type { LovtDevice } from '../device.ts';
import { Program } from '../executor.ts';
import type { HostTensor } from '../safetensors.ts';
import { StateStore } from '../state.ts';
import { DROPOUT_SEED_INPUT, withoutDropout, type CompiledModel } from './trainer.ts';
import { describeDiff, diffTensors, hasDifferences, type ExpectedTensor } from './weights.ts';
import { refuseNonFinite } from './finite.ts';
import { checkBatch } from './inputs.ts';

export interface LossEvaluation {
  /** 'total' and every loss term by name (unweighted values, as the model defines them). */
  losses: Record<string, number>;
  /** d total / d parameter for every trainable parameter, by state name (when asked for). */
  grads?: Map<string, HostTensor>;
}

/**
 * Checks names and shapes of weights and batch against the model (every problem
 * named at once) and their values (no NaN or infinity, token ids inside the
 * vocabulary), then runs the forward (and backward when `grads`). A non-finite
 * loss or gradient is an error, not a result.
 */
export async function evaluateLosses(
  device: LovtDevice,
  compiled: CompiledModel,
  weights: Map<string, HostTensor>,
  batch: Map<string, HostTensor>,
  opts: { grads?: boolean; weightsName?: string; batchName?: string } = {},
): Promise<LossEvaluation> {
  const graph = withoutDropout(compiled.graph);
  const weightsName = opts.weightsName ?? 'weights';
  const stateExpected: ExpectedTensor[] = Object.values(graph.state).map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype }));
  const w = diffTensors(stateExpected, weights);
  if (hasDifferences(w)) throw new Error(`${weightsName} does not match the model's state: ${describeDiff(w)}`);
  refuseNonFinite(
    [...w.matched].map(([name, m]) => [name, m.tensor]),
    weightsName,
  );
  const inputs = checkBatch(graph, batch, opts.batchName ?? 'batch', [DROPOUT_SEED_INPUT]);
  if (DROPOUT_SEED_INPUT in graph.inputs) inputs[DROPOUT_SEED_INPUT] = Int32Array.of(0);

  const lossOutputs = ['loss.total', ...compiled.model.losses.map((l) => l.output)];
  const program = opts.grads ? buildTrainingPrograms(graph, { loss: 'loss.total', optimizer: { kind: 'sgd' }, accumulate: 1 }).step : optimize(graph);
  const store = new StateStore(device);
  let run: Program | undefined;
  try {
    run = await Program.create(device, program, store, { label: opts.grads ? 'loss + gradients' : 'loss' });
    for (const [name, m] of w.matched) store.upload(name, m.tensor.data);
    const out = await run.run(inputs, lossOutputs);
    const losses: Record<string, number> = { total: out['loss.total'][0] };
    for (const l of compiled.model.losses) losses[l.name] = out[l.output][0];
    const bad = Object.entries(losses).filter(([, v]) => !Number.isFinite(v));
    if (bad.length) throw new Error(`the loss is not finite on these weights and this batch: ${bad.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    if (!opts.grads) return { losses };
    const grads = new Map<string, HostTensor>();
    for (const s of Object.values(graph.state)) {
      if (!s.trainable) continue;
      grads.set(s.name, { dtype: 'f32', shape: s.shape, data: (await store.download(gradAccName(s.name))) as Float32Array });
    }
    refuseNonFinite(grads, 'the gradient on these weights and this batch');
    return { losses, grads };
  } finally {
    run?.destroy();
    store.destroy();
  }
}
