// The step/apply programs run on the reference interpreter against a
// hand-written float64 training loop with PyTorch's optimizer semantics
// (hand-derived gradients, torch.optim.SGD/Adam/AdamW update rules) over
// several optimizer steps with gradient accumulation.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type Graph } from '../../compiler/ir.ts';
import { validateGraph } from '../../compiler/ops/index.ts';
import { buildTrainingPrograms, optimizerScalars, type OptimizerOptions } from '../../compiler/train-program.ts';
import { evaluate, type FeedValue } from '../../compiler/reference.ts';
import { Rng } from '../../compiler/random.ts';
import { planGraph } from '../../compiler/execution-plan.ts';
import { compileModelOrThrow } from '../../compiler/frontend/index.ts';

const N = 5,
  I = 3,
  O = 2; // batch, in features, out features

/**
 * z = (x @ W + b) · scale (scale a frozen buffer), loss = mean((z - y)²),
 * running_mean ← 0.9 · running_mean + 0.1 · mean_rows(x) (a forward state update, like batch norm).
 */
function forwardGraph(): Graph {
  const b = new GraphBuilder();
  const x = b.input('x', [N, I]);
  const y = b.input('y', [N, O]);
  const w = b.state('lin.weight', [I, O], { kind: 'zeros' }, true);
  const bias = b.state('lin.bias', [O], { kind: 'zeros' }, true);
  const scale = b.state('lin.scale', [O], { kind: 'ones' }, false);
  const rm = b.state('norm.running_mean', [I], { kind: 'zeros' }, false);
  const z = b.mul(b.add(b.emit('matmul', [x, w]), bias), scale);
  const d = b.sub(z, y);
  b.output('loss', b.mul(b.sum(b.mul(d, d), [0, 1]), b.scalar(1 / (N * O))));
  b.output('z', z);
  b.update('norm.running_mean', b.add(b.mul(rm, b.scalar(0.9)), b.mul(b.sum(x, [0]), b.scalar(0.1 / N))));
  return b.graph;
}

type State = Record<string, Float64Array>;

/** Hand-derived gradients of the model above: dz = 2(z - y)/(N·O); dW = xᵀ(dz·s); db = Σ_rows dz·s. */
function handGradients(s: State, x: Float64Array, y: Float64Array): { w: Float64Array; b: Float64Array } {
  const w = s['lin.weight'],
    bias = s['lin.bias'],
    scale = s['lin.scale'];
  const gw = new Float64Array(I * O),
    gb = new Float64Array(O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let lin = bias[o];
      for (let i = 0; i < I; i++) lin += x[n * I + i] * w[i * O + o];
      const dz = (2 * (lin * scale[o] - y[n * O + o])) / (N * O);
      gb[o] += dz * scale[o];
      for (let i = 0; i < I; i++) gw[i * O + o] += x[n * I + i] * dz * scale[o];
    }
  return { w: gw, b: gb };
}

/** One torch.optim step on a single tensor, written from PyTorch's documented algorithms. */
function torchStep(o: Required<OptimizerOptions>, p: Float64Array, grad: Float64Array, slots: Record<string, Float64Array>, t: number, lr: number) {
  for (let i = 0; i < p.length; i++) {
    let g = grad[i];
    if (o.kind === 'sgd') {
      if (o.weightDecay) g += o.weightDecay * p[i];
      if (o.momentum) {
        const buf = slots.momentum_buffer;
        buf[i] = t === 1 ? g : o.momentum * buf[i] + (1 - o.dampening) * g;
        g = o.nesterov ? g + o.momentum * buf[i] : buf[i];
      }
      p[i] -= lr * g;
    } else {
      if (o.kind === 'adamw') p[i] *= 1 - lr * o.weightDecay;
      else if (o.weightDecay) g += o.weightDecay * p[i];
      const m = slots.exp_avg,
        v = slots.exp_avg_sq;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const bc1 = 1 - o.beta1 ** t,
        bc2 = 1 - o.beta2 ** t;
      p[i] -= (lr / bc1) * (m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + o.eps));
    }
  }
}

/** Runs a program on the reference interpreter and applies its updates to `state` after the run. */
function run(g: Graph, inputs: Record<string, FeedValue>, state: State): Record<string, Float64Array> {
  const feedState: State = {};
  for (const name of Object.keys(g.state)) {
    if (!state[name]) state[name] = new Float64Array(g.state[name].shape.reduce((p, q) => p * q, 1)); // zeros init
    feedState[name] = state[name];
  }
  const r = evaluate(g, { inputs, state: feedState });
  for (const [name, v] of Object.entries(r.updates)) state[name] = Float64Array.from(v);
  return r.outputs;
}

function close(a: ArrayLike<number>, e: ArrayLike<number>, what: string, tol = 1e-12) {
  assert.is(a.length, e.length, what);
  for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i] - e[i]) <= tol * Math.max(1, Math.abs(e[i])))) assert.unreachable(`${what}[${i}]: ${a[i]} vs ${e[i]}`);
}

function trainAndCompare(optimizer: Required<OptimizerOptions>, accumulate: number, steps: number) {
  const forward = forwardGraph();
  const { step, apply } = buildTrainingPrograms(forward, { loss: 'loss', optimizer, accumulate });
  validateGraph(step);
  validateGraph(apply);
  const r = new Rng(7);
  const randArr = (n: number) => Float64Array.from({ length: n }, () => r.normal());
  const initial: State = {
    'lin.weight': randArr(I * O),
    'lin.bias': randArr(O),
    'lin.scale': Float64Array.from([1.5, -0.5]),
    'norm.running_mean': new Float64Array(I),
  };
  const state: State = Object.fromEntries(Object.entries(initial).map(([k, v]) => [k, Float64Array.from(v)]));
  const mine: State = Object.fromEntries(Object.entries(initial).map(([k, v]) => [k, Float64Array.from(v)]));
  const slots = {
    w: { exp_avg: new Float64Array(I * O), exp_avg_sq: new Float64Array(I * O), momentum_buffer: new Float64Array(I * O) },
    b: { exp_avg: new Float64Array(O), exp_avg_sq: new Float64Array(O), momentum_buffer: new Float64Array(O) },
  };
  const lrs = [0.1, 0.05, 0.02, 0.01];
  for (let t = 1; t <= steps; t++) {
    const accW = new Float64Array(I * O),
      accB = new Float64Array(O);
    for (let k = 0; k < accumulate; k++) {
      const x = randArr(N * I),
        y = randArr(N * O);
      const out = run(step, { x, y }, state);
      const hg = handGradients(mine, x, y);
      hg.w.forEach((v, i) => (accW[i] += v));
      hg.b.forEach((v, i) => (accB[i] += v));
      close(state['grad_acc.lin.weight'], accW, `grad_acc.lin.weight after micro-batch ${k} of step ${t}`);
      const meanX = new Float64Array(I);
      for (let n = 0; n < N; n++) for (let i = 0; i < I; i++) meanX[i] += x[n * I + i] / N;
      mine['norm.running_mean'] = mine['norm.running_mean'].map((v, i) => 0.9 * v + 0.1 * meanX[i]);
      close(state['norm.running_mean'], mine['norm.running_mean'], 'running mean (forward update kept)');
      assert.ok(out.loss && out.z, 'step outputs every forward output');
    }
    const lr = lrs[(t - 1) % lrs.length];
    run(apply, optimizerScalars(t, lr, optimizer), state);
    torchStep(
      optimizer,
      mine['lin.weight'],
      accW.map((v) => v / accumulate),
      slots.w,
      t,
      lr,
    );
    torchStep(
      optimizer,
      mine['lin.bias'],
      accB.map((v) => v / accumulate),
      slots.b,
      t,
      lr,
    );
    close(state['lin.weight'], mine['lin.weight'], `${optimizer.kind} weight after step ${t}`);
    close(state['lin.bias'], mine['lin.bias'], `${optimizer.kind} bias after step ${t}`);
    close(state['lin.scale'], [1.5, -0.5], 'frozen buffer untouched');
    close(state['grad_acc.lin.weight'], new Float64Array(I * O), 'grad_acc zeroed by apply');
    if (optimizer.kind !== 'sgd') close(state['optim.lin.weight.exp_avg_sq'], slots.w.exp_avg_sq, 'exp_avg_sq');
  }
}

const base = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, momentum: 0, dampening: 0, nesterov: false };

test('AdamW (decoupled weight decay) with accumulation 3', () => {
  trainAndCompare({ ...base, kind: 'adamw', beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 }, 3, 4);
});

test('Adam with L2 weight decay, no accumulation', () => {
  trainAndCompare({ ...base, kind: 'adam', weightDecay: 0.05 }, 1, 4);
});

test('SGD: plain, momentum with dampening, Nesterov', () => {
  trainAndCompare({ ...base, kind: 'sgd' }, 2, 3);
  trainAndCompare({ ...base, kind: 'sgd', momentum: 0.9, dampening: 0.3, weightDecay: 0.01 }, 2, 4);
  trainAndCompare({ ...base, kind: 'sgd', momentum: 0.7, nesterov: true }, 1, 4);
});

test('program interfaces: state names, per-step inputs, optimizerScalars', () => {
  const { step, apply } = buildTrainingPrograms(forwardGraph(), { loss: 'loss', optimizer: { kind: 'adamw' }, accumulate: 2 });
  assert.ok(step.state['grad_acc.lin.weight'] && step.state['grad_acc.lin.bias']);
  assert.not.ok(step.state['grad_acc.lin.scale'], 'no accumulator for a frozen buffer');
  assert.equal(Object.keys(step.updates).sort(), ['grad_acc.lin.bias', 'grad_acc.lin.weight', 'norm.running_mean']);
  assert.equal(Object.keys(apply.inputs).sort(), ['bias_correction1', 'bias_correction2', 'lr']);
  assert.ok(apply.state['optim.lin.weight.exp_avg'] && apply.state['optim.lin.weight.exp_avg_sq']);
  assert.is(apply.state['lin.weight'].trainable, true);
  const s = optimizerScalars(3, 1e-4, { kind: 'adam', beta1: 0.9, beta2: 0.999 });
  close([s.lr, s.bias_correction1, s.bias_correction2], [1e-4, 1 - 0.9 ** 3, 1 - 0.999 ** 3], 'scalars', 1e-15);
  assert.equal(optimizerScalars(1, 0.1, { kind: 'sgd', momentum: 0.9, dampening: 0.5 }), { lr: 0.1, momentum_grad_scale: 1 });
  assert.equal(optimizerScalars(2, 0.1, { kind: 'sgd', momentum: 0.9, dampening: 0.5 }), { lr: 0.1, momentum_grad_scale: 0.5 });
  const sgd = buildTrainingPrograms(forwardGraph(), { loss: 'loss', optimizer: { kind: 'sgd', momentum: 0.9 }, accumulate: 1 });
  assert.equal(Object.keys(sgd.apply.inputs).sort(), ['lr', 'momentum_grad_scale']);
  assert.ok(sgd.apply.state['optim.lin.bias.momentum_buffer']);
});

test('finite or stop: a NaN/inf anywhere is counted per checked value and no state changes', () => {
  for (const optimizer of [{ kind: 'adamw' }, { kind: 'sgd', momentum: 0.9 }] as OptimizerOptions[]) {
    const { step, apply, checks } = buildTrainingPrograms(forwardGraph(), { loss: 'loss', optimizer, accumulate: 1 });
    // Computation order: the loss, the forward's state update, then the gradients (backward order).
    assert.equal(checks.step, [
      { kind: 'output', name: 'loss' },
      { kind: 'update', name: 'norm.running_mean' },
      { kind: 'gradient', name: 'lin.bias' },
      { kind: 'gradient', name: 'lin.weight' },
    ]);
    assert.equal(checks.apply, [
      { kind: 'optimizer', name: 'lin.weight' },
      { kind: 'optimizer', name: 'lin.bias' },
    ]);
    const r = new Rng(3);
    const randArr = (n: number) => Float64Array.from({ length: n }, () => r.normal());
    const fresh = (): State => ({
      'lin.weight': randArr(I * O),
      'lin.bias': randArr(O),
      'lin.scale': Float64Array.from([1, 2]),
      'norm.running_mean': randArr(I),
    });
    const x = randArr(N * I),
      y = randArr(N * O);

    // Finite: every count 0, the programs behave as before.
    const state = fresh();
    assert.equal(Array.from(run(step, { x, y }, state).nonfinite), [0, 0, 0, 0]);
    assert.equal(Array.from(run(apply, optimizerScalars(1, 0.1, optimizer), state).nonfinite), [0, 0]);

    // One NaN input element: the running mean (1 of 3), the loss, both gradients; the running mean keeps its value.
    const before = fresh();
    const poisoned = Object.fromEntries(Object.entries(before).map(([k, v]) => [k, Float64Array.from(v)]));
    const xNaN = Float64Array.from(x);
    xNaN[4] = NaN;
    assert.equal(Array.from(run(step, { x: xNaN, y }, poisoned).nonfinite), [1, 1, 2, 6]);
    assert.equal(Array.from(poisoned['norm.running_mean']), Array.from(before['norm.running_mean']), 'the buffer update is not applied');

    // An overflowing step (lr 1e308 in float64): the parameters and optimizer state keep their values.
    const s2 = fresh();
    run(step, { x, y }, s2);
    const kept = Object.fromEntries(
      Object.entries(s2)
        .filter(([k]) => !k.startsWith('grad_acc.'))
        .map(([k, v]) => [k, Array.from(v)]),
    );
    const counts = run(apply, optimizerScalars(1, 1e308, optimizer), s2).nonfinite;
    assert.ok(counts[0] > 0 && counts[1] > 0, `${optimizer.kind}: counts ${counts}`);
    for (const [k, v] of Object.entries(kept)) assert.equal(Array.from(s2[k]), v, `${optimizer.kind}: ${k} unchanged`);
  }
});

test("the checks cost one count kernel per checked value and no stored copies, even at WebGPU's default 8 bindings", () => {
  const { graph } = compileModelOrThrow({ path: 'test/gpu/tiny-clip.lovt' }, { mode: 'train' });
  const params = Object.values(graph.state).filter((s) => s.trainable);
  const largest = Math.max(...params.map((s) => s.shape.reduce((a, b) => a * b, 1)));
  for (const optimizer of [{ kind: 'adamw' }, { kind: 'adam' }, { kind: 'sgd', momentum: 0.9 }] as OptimizerOptions[]) {
    const plan = (finiteChecks: boolean) => {
      const { step, apply, checks } = buildTrainingPrograms(graph, { loss: 'loss.total', optimizer, accumulate: 2, finiteChecks });
      return { checks, step: planGraph(step, { maxStorageBuffersPerShaderStage: 8 }), apply: planGraph(apply, { maxStorageBuffersPerShaderStage: 8 }) };
    };
    const checked = plan(true);
    const unchecked = plan(false);
    assert.equal(unchecked.checks, { step: [], apply: [] });
    // Apply: one fused count per parameter (the new values computed inside it), then the verdict.
    const counts = checked.apply.kernels.filter((k) => k.name.startsWith('sum')).length;
    assert.is(counts, params.length + 1, `${optimizer.kind}: count kernels`);
    assert.ok(
      checked.apply.stats.peakBytes - unchecked.apply.stats.peakBytes < 4 * largest,
      `${optimizer.kind}: apply scratch ${checked.apply.stats.peakBytes} vs ${unchecked.apply.stats.peakBytes}`,
    );
    assert.is(checked.apply.stats.inPlaceUpdates, unchecked.apply.stats.inPlaceUpdates, 'updates still in place');
    assert.ok(checked.step.stats.peakBytes - unchecked.step.stats.peakBytes < 4 * largest, `${optimizer.kind}: step scratch`);
  }
});

test('clear errors for bad training options', () => {
  assert.throws(
    () => buildTrainingPrograms(forwardGraph(), { loss: 'nope', optimizer: { kind: 'adam' }, accumulate: 1 }),
    /no output 'nope' \(outputs: loss, z\)/,
  );
  assert.throws(() => buildTrainingPrograms(forwardGraph(), { loss: 'z', optimizer: { kind: 'adam' }, accumulate: 1 }), /loss must be a scalar/);
  assert.throws(
    () => buildTrainingPrograms(forwardGraph(), { loss: 'loss', optimizer: { kind: 'adam' }, accumulate: 0 }),
    /accumulate must be an integer >= 1/,
  );
  assert.throws(
    () => buildTrainingPrograms(forwardGraph(), { loss: 'loss', optimizer: { kind: 'adam', beta1: 1 }, accumulate: 1 }),
    /beta1 must be in \[0, 1\)/,
  );
  assert.throws(() => optimizerScalars(0, 0.1, { kind: 'adam' }), /step must be an integer >= 1/);
});

test.run();
