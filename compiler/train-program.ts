// Turns a forward graph into the two programs a training loop runs:
//   step  — forward + backward; adds dL/dP into a `grad_acc.P` buffer per
//           trainable param (gradient accumulation over micro-batches);
//   apply — one optimizer step with PyTorch's exact update rules on
//           grad_acc.P / accumulate, then zeroes grad_acc.P.
// Both share state with the forward model by name (docs/ir.md, "Training
// programs"); the scalars that change per step are inputs computed on the host
// by optimizerScalars().

import { GraphBuilder } from './builder.ts';
import { type Graph, type StateInfo } from './ir.ts';
import { gradients } from './autodiff.ts';
import { optimize } from './passes/index.ts';
import type { TrainSpec } from './frontend/train.ts';

export type OptimizerKind = 'sgd' | 'adam' | 'adamw';

/** torch.optim hyper-parameters (the learning rate is a per-step input, `lr`). Unset fields take PyTorch's defaults. */
export interface OptimizerOptions {
  kind: OptimizerKind;
  /** Adam/AdamW β₁ (default 0.9) */
  beta1?: number;
  /** Adam/AdamW β₂ (default 0.999) */
  beta2?: number;
  /** Adam/AdamW ε, added after the square root (default 1e-8) */
  eps?: number;
  /** L2 penalty (SGD, Adam) or decoupled decay (AdamW). Default 0, AdamW 1e-2. */
  weightDecay?: number;
  /** SGD momentum (default 0) */
  momentum?: number;
  /** SGD dampening (default 0) */
  dampening?: number;
  /** SGD Nesterov momentum (default false) */
  nesterov?: boolean;
}

/** The optimizer options of a model's train section. */
export function optimizerOptions(spec: TrainSpec['optimizer']): OptimizerOptions {
  return {
    kind: spec.kind,
    beta1: spec.betas[0],
    beta2: spec.betas[1],
    eps: spec.eps,
    weightDecay: spec.weight_decay,
    momentum: spec.momentum,
    nesterov: spec.nesterov,
  };
}

export interface TrainingOptions {
  /** Name of the forward output to minimise (an f32 scalar). */
  loss: string;
  optimizer: OptimizerOptions;
  /** Micro-batches per optimizer step; the applied gradient is grad_acc / accumulate. */
  accumulate: number;
  /** Run optimize() on both programs (default true). */
  optimize?: boolean;
}

export interface TrainingPrograms {
  step: Graph;
  apply: Graph;
}

/** Names of the per-step scalar inputs of the apply program. */
export const LR_INPUT = 'lr';
export const BIAS_CORRECTION1_INPUT = 'bias_correction1';
export const BIAS_CORRECTION2_INPUT = 'bias_correction2';
/** SGD with momentum: 1 on the first step (PyTorch seeds the buffer with the raw gradient), 1 - dampening after. */
export const MOMENTUM_GRAD_SCALE_INPUT = 'momentum_grad_scale';

export const gradAccName = (param: string) => `grad_acc.${param}`;
export const optimStateName = (param: string, slot: 'exp_avg' | 'exp_avg_sq' | 'momentum_buffer') => `optim.${param}.${slot}`;

interface ResolvedOptimizer {
  kind: OptimizerKind;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

function resolveOptimizer(o: OptimizerOptions): ResolvedOptimizer {
  if (!['sgd', 'adam', 'adamw'].includes(o.kind)) throw new Error(`optimizer kind must be 'sgd', 'adam' or 'adamw', got ${JSON.stringify(o.kind)}`);
  const r: ResolvedOptimizer = {
    kind: o.kind,
    beta1: o.beta1 ?? 0.9,
    beta2: o.beta2 ?? 0.999,
    eps: o.eps ?? 1e-8,
    weightDecay: o.weightDecay ?? (o.kind === 'adamw' ? 1e-2 : 0),
    momentum: o.momentum ?? 0,
    dampening: o.dampening ?? 0,
    nesterov: o.nesterov ?? false,
  };
  const inUnit = (v: number, name: string) => {
    if (!(v >= 0 && v < 1)) throw new Error(`optimizer ${name} must be in [0, 1), got ${v}`);
  };
  inUnit(r.beta1, 'beta1');
  inUnit(r.beta2, 'beta2');
  if (!(r.eps >= 0)) throw new Error(`optimizer eps must be >= 0, got ${r.eps}`);
  if (!(r.weightDecay >= 0)) throw new Error(`optimizer weightDecay must be >= 0, got ${r.weightDecay}`);
  if (!(r.momentum >= 0)) throw new Error(`SGD momentum must be >= 0, got ${r.momentum}`);
  if (r.nesterov && (r.momentum <= 0 || r.dampening !== 0)) throw new Error('SGD Nesterov momentum requires momentum > 0 and dampening 0 (as in PyTorch)');
  return r;
}

/**
 * The per-step scalar inputs of the apply program for optimizer step `step`
 * (1 on the first optimizer step) at learning rate `lr`.
 */
export function optimizerScalars(step: number, lr: number, optimizer: OptimizerOptions): Record<string, number> {
  if (!Number.isInteger(step) || step < 1) throw new Error(`optimizer step must be an integer >= 1, got ${step}`);
  const o = resolveOptimizer(optimizer);
  const out: Record<string, number> = { [LR_INPUT]: lr };
  if (o.kind === 'sgd') {
    if (o.momentum !== 0) out[MOMENTUM_GRAD_SCALE_INPUT] = step === 1 ? 1 : 1 - o.dampening;
  } else {
    out[BIAS_CORRECTION1_INPUT] = 1 - Math.pow(o.beta1, step);
    out[BIAS_CORRECTION2_INPUT] = 1 - Math.pow(o.beta2, step);
  }
  return out;
}

function trainableState(forward: Graph): StateInfo[] {
  return Object.values(forward.state).filter((s) => s.trainable);
}

function buildStep(forward: Graph, opts: TrainingOptions, params: StateInfo[]): Graph {
  const b = new GraphBuilder(structuredClone(forward));
  const loss = forward.outputs[opts.loss];
  const ids = params.map((p) => p.node);
  const grads = gradients(b, loss, ids);
  for (const p of params) {
    const accName = gradAccName(p.name);
    const acc = b.state(accName, p.shape, { kind: 'zeros' }, false);
    b.update(accName, b.add(acc, grads.get(p.node)!));
  }
  return b.graph;
}

function buildApply(params: StateInfo[], o: ResolvedOptimizer, accumulate: number): Graph {
  const b = new GraphBuilder();
  const lr = b.input(LR_INPUT, []);
  const adam = o.kind !== 'sgd';
  const bc1 = adam ? b.input(BIAS_CORRECTION1_INPUT, []) : -1;
  const bc2 = adam ? b.input(BIAS_CORRECTION2_INPUT, []) : -1;
  const gradScale = o.kind === 'sgd' && o.momentum !== 0 ? b.input(MOMENTUM_GRAD_SCALE_INPUT, []) : -1;
  const c = (v: number) => b.scalar(v);
  // Per-step scalars shared by every parameter.
  const stepSize = adam ? b.div(lr, bc1) : -1;
  const sqrtBc2 = adam ? b.emit('sqrt', [bc2]) : -1;
  const decoupledScale = o.kind === 'adamw' && o.weightDecay !== 0 ? b.sub(c(1), b.mul(lr, c(o.weightDecay))) : -1;

  for (const info of params) {
    const p = b.state(info.name, info.shape, info.init, true, info.dtype);
    const accName = gradAccName(info.name);
    const acc = b.state(accName, info.shape, { kind: 'zeros' }, false);
    let g = accumulate === 1 ? acc : b.mul(acc, c(1 / accumulate));
    let param = p;
    if (o.weightDecay !== 0 && o.kind !== 'adamw') g = b.add(g, b.mul(p, c(o.weightDecay))); // L2 into the gradient
    if (adam) {
      if (decoupledScale >= 0) param = b.mul(p, decoupledScale); // AdamW: p ← p·(1 - lr·wd) first
      const mName = optimStateName(info.name, 'exp_avg');
      const vName = optimStateName(info.name, 'exp_avg_sq');
      const m = b.state(mName, info.shape, { kind: 'zeros' }, false);
      const v = b.state(vName, info.shape, { kind: 'zeros' }, false);
      const m1 = b.add(m, b.mul(b.sub(g, m), c(1 - o.beta1))); // exp_avg.lerp_(grad, 1 - β₁)
      const v1 = b.add(b.mul(v, c(o.beta2)), b.mul(b.mul(g, g), c(1 - o.beta2)));
      const denom = b.add(b.div(b.emit('sqrt', [v1]), sqrtBc2), c(o.eps));
      param = b.sub(param, b.mul(stepSize, b.div(m1, denom)));
      b.update(mName, m1);
      b.update(vName, v1);
    } else {
      if (o.momentum !== 0) {
        const bufName = optimStateName(info.name, 'momentum_buffer');
        const buf = b.state(bufName, info.shape, { kind: 'zeros' }, false);
        const buf1 = b.add(b.mul(buf, c(o.momentum)), b.mul(g, gradScale));
        b.update(bufName, buf1);
        g = o.nesterov ? b.add(g, b.mul(buf1, c(o.momentum))) : buf1;
      }
      param = b.sub(param, b.mul(lr, g));
    }
    b.update(info.name, param);
    b.update(accName, b.full(0, info.shape));
  }
  return b.graph;
}

/** Builds the step (forward + backward + accumulate) and apply (optimizer) programs of a forward graph. */
export function buildTrainingPrograms(forward: Graph, opts: TrainingOptions): TrainingPrograms {
  const lossId = forward.outputs[opts.loss];
  if (lossId === undefined) throw new Error(`training: the forward graph has no output '${opts.loss}' (outputs: ${Object.keys(forward.outputs).join(', ') || 'none'})`);
  if (!Number.isInteger(opts.accumulate) || opts.accumulate < 1) throw new Error(`training: accumulate must be an integer >= 1, got ${opts.accumulate}`);
  const o = resolveOptimizer(opts.optimizer);
  const params = trainableState(forward);
  if (params.length === 0) throw new Error('training: the forward graph has no trainable parameters');
  for (const p of params) if (p.dtype !== 'f32') throw new Error(`training: trainable parameter ${p.name} is ${p.dtype}; only f32 state can be trained`);
  for (const name of Object.keys(forward.state))
    if (name.startsWith('grad_acc.') || name.startsWith('optim.')) throw new Error(`training: state name ${name} collides with the training programs' buffers (grad_acc.*, optim.*)`);
  let step = buildStep(forward, opts, params);
  let apply = buildApply(params, o, opts.accumulate);
  if (opts.optimize ?? true) {
    step = optimize(step);
    apply = optimize(apply);
  }
  return { step, apply };
}
