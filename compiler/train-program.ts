// Turns a forward graph into the two programs a training loop runs:
//   step  — forward + backward; adds dL/dP into a `grad_acc.P` buffer per
//           trainable param (gradient accumulation over micro-batches);
//   apply — one optimizer step with PyTorch's exact update rules on
//           grad_acc.P / accumulate, then zeroes grad_acc.P.
// Both share state with the forward model by name (docs/ir.md, "Training
// programs"); the scalars that change per step are inputs computed on the host
// by optimizerScalars().
//
// Finite or stop: each program also outputs `nonfinite`, the number of NaN/±inf
// elements of every value it checks (the losses, every gradient, every state
// update; `checks` names them, in computation order). The host reads it with
// the losses. A program that finds one writes no state: each state update
// selects the old value (the gradient accumulators excepted: nothing applies
// them after a failed step).

import { GraphBuilder } from './builder.ts';
import { numel, type Graph, type StateInfo } from './ir.ts';
import { gradients } from './autodiff.ts';
import { optimize } from './passes/index.ts';
import type { TrainSpec } from './frontend/train.ts';
import { copyNode } from './passes/rewrite.ts';

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
  /** Check for NaN/inf and make the updates conditional (default true; false only to measure what the checks cost). */
  finiteChecks?: boolean;
}

/** A value a training program checks for NaN and infinities. */
export interface FiniteCheck {
  /**
   * 'output': the forward output `name` (the loss, the loss terms); 'gradient': dL/d`name`
   * summed into its accumulator; 'update': the new value of state `name` (a buffer in the
   * step program); 'optimizer': the new value of parameter `name` and of its optimizer state.
   */
  kind: 'output' | 'gradient' | 'update' | 'optimizer';
  name: string;
}

export interface TrainingPrograms {
  step: Graph;
  apply: Graph;
  /** What each program's NONFINITE_OUTPUT entries count, in order. */
  checks: { step: FiniteCheck[]; apply: FiniteCheck[] };
}

/** The output of both programs: f32[checks], the number of NaN/±inf elements of each checked value. */
export const NONFINITE_OUTPUT = 'nonfinite';

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

/** Tensors larger than this are checked in two passes (rows, then their sums), so that the first pass spreads over many workgroups. */
const SPLIT_CHECK_ELEMENTS = 65536;

/** 1 where `v` (f32) is NaN or ±inf, else 0. */
function nonFiniteMask(b: GraphBuilder, v: number): number {
  return b.sub(b.scalar(1), b.emit('isfinite', [v]));
}

/** The number of non-zero elements of `mask` (a nonFiniteMask or a sum of them) as an f32[1]; the mask is computed inside the count's kernel. */
function nonFiniteCount(b: GraphBuilder, mask: number): number {
  const shape = b.node(mask).shape;
  const split = shape.length >= 2 && shape[0] >= 16 && numel(shape) >= SPLIT_CHECK_ELEMENTS;
  const count = split
    ? b.sum(
        b.sum(
          mask,
          shape.slice(1).map((_, i) => i + 1),
        ),
        [0],
      )
    : b.sum(
        mask,
        shape.map((_, i) => i),
      );
  return b.reshape(count, [1]);
}

/**
 * The counts as one f32[K] tensor (NONFINITE_OUTPUT). A concat, rather than a
 * chain through the count kernels, which would take a storage binding the
 * optimizer's fused prologues need under WebGPU's default limit of 8.
 */
function concatCounts(b: GraphBuilder, counts: number[]): number {
  return b.emit('concat', counts, { axis: 0 });
}

/** 1 when every count is 0 (the selector of the conditional updates). */
function allFinite(b: GraphBuilder, counts: number): number {
  return b.emit('eq', [b.sum(counts, [0]), b.scalar(0)]);
}

function buildStep(forward: Graph, opts: TrainingOptions, params: StateInfo[]): { graph: Graph; checks: FiniteCheck[] } {
  const b = new GraphBuilder(structuredClone(forward));
  const loss = forward.outputs[opts.loss];
  const ids = params.map((p) => p.node);
  const grads = gradients(b, loss, ids);
  const checked: { node: number; check: FiniteCheck; order?: number }[] = [];
  const checks = opts.finiteChecks ?? true;
  for (const [name, id] of Object.entries(forward.outputs)) {
    const n = forward.nodes[id];
    if (id === loss || (n.dtype === 'f32' && n.shape.length === 0)) checked.push({ node: id, check: { kind: 'output', name } });
  }
  const bufferUpdates = Object.entries(forward.updates);
  for (const [name, id] of bufferUpdates) if (forward.nodes[id].dtype === 'f32') checked.push({ node: id, check: { kind: 'update', name } });
  for (const p of params) {
    const accName = gradAccName(p.name);
    const acc = b.state(accName, p.shape, { kind: 'zeros' }, false);
    const grad = grads.get(p.node)!;
    const sum = b.add(acc, grad);
    b.update(accName, sum);
    checked.push({ node: sum, check: { kind: 'gradient', name: p.name }, order: grad });
  }
  if (!checks) return { graph: b.graph, checks: [] };
  // In computation order (a gradient where it was computed), so that the first one named is where the trouble started.
  checked.sort((x, y) => (x.order ?? x.node) - (y.order ?? y.node));
  const counts = concatCounts(
    b,
    checked.map((c) => nonFiniteCount(b, nonFiniteMask(b, c.node))),
  );
  b.output(NONFINITE_OUTPUT, counts);
  const ok = allFinite(b, counts);
  for (const [name, id] of bufferUpdates) b.update(name, b.emit('where', [ok, id, forward.state[name].node]));
  return { graph: b.graph, checks: checked.map((c) => c.check) };
}

/**
 * Emits the optimizer's new value of every state tensor it writes, parameter by
 * parameter; `select(name, value)` is what later expressions and the update see
 * (the conditional update of the apply program), `done` gets each parameter's
 * selected values once they are emitted. Returns, per parameter, the selected
 * new values in computation order.
 */
function optimizerStep(
  b: GraphBuilder,
  params: StateInfo[],
  o: ResolvedOptimizer,
  accumulate: number,
  select: (name: string, value: number) => number,
  done: (updates: { name: string; value: number }[]) => void = () => {},
): { param: string; updates: { name: string; value: number }[] }[] {
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

  return params.map((info) => {
    const updates: { name: string; value: number }[] = [];
    const emit = (name: string, value: number) => {
      const v = select(name, value);
      updates.push({ name, value: v });
      return v;
    };
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
      const m1 = emit(mName, b.add(m, b.mul(b.sub(g, m), c(1 - o.beta1)))); // exp_avg.lerp_(grad, 1 - β₁)
      const v1 = emit(vName, b.add(b.mul(v, c(o.beta2)), b.mul(b.mul(g, g), c(1 - o.beta2))));
      const denom = b.add(b.div(b.emit('sqrt', [v1]), sqrtBc2), c(o.eps));
      param = b.sub(param, b.mul(stepSize, b.div(m1, denom)));
    } else {
      if (o.momentum !== 0) {
        const bufName = optimStateName(info.name, 'momentum_buffer');
        const buf = b.state(bufName, info.shape, { kind: 'zeros' }, false);
        const buf1 = emit(bufName, b.add(b.mul(buf, c(o.momentum)), b.mul(g, gradScale)));
        g = o.nesterov ? b.add(g, b.mul(buf1, c(o.momentum))) : buf1;
      }
      param = b.sub(param, b.mul(lr, g));
    }
    emit(info.name, param);
    done(updates);
    return { param: info.name, updates };
  });
}

/** Writes a parameter's new values and clears its gradient accumulator. */
function zeroAfterUpdate(b: GraphBuilder, param: string, updates: { name: string; value: number }[]): void {
  for (const x of updates) b.update(x.name, x.value);
  b.update(gradAccName(param), b.full(0, b.graph.state[param].shape));
}

/** The input of the apply program's update half that joinPrograms binds to the check half's verdict. */
const FINITE_PLACEHOLDER = '__finite';

/**
 * The apply program: a check half, then an update half. The check half
 * computes every new value inside its count reductions (one per parameter,
 * fused: nothing is stored); the update half computes them again, each
 * selecting the old value unless every check passed, in place as before. The
 * halves are optimised separately and joined, because optimize() would merge
 * the two copies of each value into one stored tensor (memory for every
 * parameter and moment at once).
 */
function buildApply(
  params: StateInfo[],
  o: ResolvedOptimizer,
  accumulate: number,
  optimizeHalves: boolean,
  checks: boolean,
): { graph: Graph; checks: FiniteCheck[] } {
  if (!checks) {
    const u = new GraphBuilder();
    for (const p of optimizerStep(u, params, o, accumulate, (_name, v) => v)) zeroAfterUpdate(u, p.param, p.updates);
    return { graph: optimizeHalves ? optimize(u.graph) : u.graph, checks: [] };
  }
  const c = new GraphBuilder();
  // Each parameter's count right after its values, so that they are dead before the next parameter's.
  const counts: number[] = [];
  optimizerStep(
    c,
    params,
    o,
    accumulate,
    (_name, v) => v,
    (updates) => {
      counts.push(
        nonFiniteCount(
          c,
          updates.map((x) => nonFiniteMask(c, x.value)).reduce((x, y) => c.add(x, y)),
        ),
      );
    },
  );
  c.output(NONFINITE_OUTPUT, concatCounts(c, counts));
  const u = new GraphBuilder();
  const ok = u.input(FINITE_PLACEHOLDER, []);
  for (const p of optimizerStep(u, params, o, accumulate, (name, v) => u.emit('where', [ok, v, u.graph.state[name].node])))
    zeroAfterUpdate(u, p.param, p.updates);
  const [check, update] = optimizeHalves ? [optimize(c.graph), optimize(u.graph)] : [c.graph, u.graph];
  const graph = joinPrograms(check, update, (b) => ({ [FINITE_PLACEHOLDER]: allFinite(b, b.graph.outputs[NONFINITE_OUTPUT]) }));
  return { graph, checks: params.map((p) => ({ kind: 'optimizer', name: p.name })) };
}

/** Builds the step (forward + backward + accumulate) and apply (optimizer) programs of a forward graph. */
export function buildTrainingPrograms(forward: Graph, opts: TrainingOptions): TrainingPrograms {
  const lossId = forward.outputs[opts.loss];
  if (lossId === undefined)
    throw new Error(`training: the forward graph has no output '${opts.loss}' (outputs: ${Object.keys(forward.outputs).join(', ') || 'none'})`);
  if (!Number.isInteger(opts.accumulate) || opts.accumulate < 1) throw new Error(`training: accumulate must be an integer >= 1, got ${opts.accumulate}`);
  const o = resolveOptimizer(opts.optimizer);
  const params = trainableState(forward);
  if (params.length === 0) throw new Error('training: the forward graph has no trainable parameters');
  for (const p of params) if (p.dtype !== 'f32') throw new Error(`training: trainable parameter ${p.name} is ${p.dtype}; only f32 state can be trained`);
  for (const name of Object.keys(forward.state))
    if (name.startsWith('grad_acc.') || name.startsWith('optim.'))
      throw new Error(`training: state name ${name} collides with the training programs' buffers (grad_acc.*, optim.*)`);
  const optimizeGraphs = opts.optimize ?? true;
  const step = buildStep(forward, opts, params);
  const apply = buildApply(params, o, opts.accumulate, optimizeGraphs, opts.finiteChecks ?? true);
  return { step: optimizeGraphs ? optimize(step.graph) : step.graph, apply: apply.graph, checks: { step: step.checks, apply: apply.checks } };
}

/**
 * `first` then `then` as one program (nodes in that order, so `then`'s kernels
 * run after `first`'s): state and inputs are shared by name, except the inputs
 * of `then` that `bind` maps to nodes it emits after `first`'s.
 */
function joinPrograms(first: Graph, then: Graph, bind: (b: GraphBuilder) => Record<string, number>): Graph {
  const b = new GraphBuilder(structuredClone(first));
  const bound = bind(b);
  const map: number[] = [];
  for (const n of then.nodes) {
    if (n.op === 'input') map[n.id] = bound[n.attrs.name] ?? b.input(n.attrs.name, n.shape, n.dtype, n.loc);
    else if (n.op === 'param' || n.op === 'buffer') {
      const s = then.state[n.attrs.name];
      map[n.id] = b.state(s.name, s.shape, s.init, s.trainable, s.dtype, n.loc);
    } else
      map[n.id] = copyNode(
        b,
        n,
        n.inputs.map((i) => map[i]),
      );
  }
  for (const [name, id] of Object.entries(then.outputs)) b.output(name, map[id]);
  for (const [name, id] of Object.entries(then.updates)) b.update(name, map[id]);
  return b.graph;
}
