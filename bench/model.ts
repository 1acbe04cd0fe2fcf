// Whole-model pieces shared by the bench scripts: compiling a .lovt file and
// timing lovt's training programs (step: forward + backward, apply: optimizer).

import { compileModel } from '../compiler/frontend/index.ts';
import type { Graph } from '../compiler/ir.ts';
import { buildTrainingPrograms, optimizerScalars, type OptimizerOptions } from '../compiler/train-program.ts';
import { optimizerOptions } from '../runtime/train/trainer.ts';
import type { ModelInfo } from '../compiler/frontend/model.ts';

export interface Compiled {
  graph: Graph;
  model: ModelInfo;
}

export function compile(path: string, mode: 'train' | 'eval', set: Record<string, string>, model?: string): Compiled {
  const r = compileModel({ path }, { mode, set, model });
  if (!r.ok || !r.graph || !r.model) throw new Error(`${path} (${mode}): ${r.diagnostics.map((d) => d.message).join('; ')}`);
  return { graph: r.graph, model: r.model };
}

/** The step and apply graphs of a model compiled in train mode, with its own optimizer and accumulation. */
export function trainingGraphs(train: Compiled, opts: { finiteChecks?: boolean } = {}): { step: Graph; apply: Graph; optimizer: OptimizerOptions } {
  const optimizer = optimizerOptions(train.model.train.optimizer);
  const { step, apply } = buildTrainingPrograms(train.graph, { loss: 'loss.total', optimizer, accumulate: train.model.train.accumulate, ...opts });
  return { step, apply, optimizer };
}

/** The apply program's per-step scalar inputs for optimizer step `t` (1-based). */
export function applyInputs(t: number, lr: number, optimizer: OptimizerOptions): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(optimizerScalars(t, lr, optimizer)).map(([k, v]) => [k, Float32Array.of(v)]));
}
