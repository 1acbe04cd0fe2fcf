// The training-step case of `npm run bench`: models/bench/resnet-contrastive.lovt
// (a ResNet-18-topology encoder shared by two views, a projection head with
// BatchNorm, symmetric InfoNCE, Adam), run by lovt from the .lovt file and by
// TF.js as the same computation written by hand in its NHWC layout. Both start
// from the same initial weights (lovt's initialiser, transposed for TF.js) and
// train on the same inputs, so their first losses must agree (the forward pass),
// and so must their losses after the same number of steps (backward and Adam):
// the bench prints both checks.

import { graphStats } from '../compiler/frontend/stats.ts';
import { optimizerScalars } from '../compiler/train-program.ts';
import { evaluate } from '../compiler/reference.ts';
import { initialTrainingState, opDepths } from '../test/gpu/reference-check.ts';
import { Program } from '../runtime/executor.ts';
import { initState } from '../runtime/init.ts';
import type { LovtDevice } from '../runtime/device.ts';
import { StateStore } from '../runtime/state.ts';
import { applyInputs, compile, trainingGraphs, type Compiled } from './model.ts';
import type { PreparedCase } from './peers.ts';

export const RESNET_CONTRASTIVE_FILE = 'models/bench/resnet-contrastive.lovt';

/** The model's configs the bench sets (the rest keep the file's defaults). */
export interface ResNetContrastiveCase {
  kind: 'resnet-contrastive';
  batch: number;
  imageSize: number;
  width: number;
}

const INIT_SEED = 1;
const INPUT_SEED = 7;

const cache = new Map<string, Compiled>();
function compiled(c: ResNetContrastiveCase): Compiled {
  const set = { batch: String(c.batch), image_size: String(c.imageSize), resnet_width: String(c.width) };
  const key = JSON.stringify(set);
  let m = cache.get(key);
  if (!m) cache.set(key, (m = compile(RESNET_CONTRASTIVE_FILE, 'train', set)));
  return m;
}

/** Estimated FLOPs of one training step (3× forward, compiler/frontend/stats.ts). */
export function trainStepFlops(c: ResNetContrastiveCase): number {
  return graphStats(compiled(c).graph, 'train').stepFlops;
}

/** The two views, NCHW, uniform in [-1, 1) from a fixed seed (the same for every runner). */
function views(c: ResNetContrastiveCase): { view_a: Float32Array; view_b: Float32Array } {
  let s = INPUT_SEED;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const n = c.batch * 3 * c.imageSize * c.imageSize;
  return { view_a: Float32Array.from({ length: n }, rand), view_b: Float32Array.from({ length: n }, rand) };
}

/**
 * lovt: one step = the step program (forward + backward) and the apply program
 * (Adam), until the queue is idle. The first step, run here, reads the loss:
 * the forward pass on the initial weights. `loss` runs the step program once
 * more for its loss (the gradient it accumulates is never applied).
 */
export async function lovtTrainStep(dev: LovtDevice, c: ResNetContrastiveCase): Promise<PreparedCase> {
  const train = compiled(c);
  const { step, apply, optimizer } = trainingGraphs(train);
  const store = new StateStore(dev);
  const stepProgram = await Program.create(dev, step, store, { label: 'step' });
  const applyProgram = await Program.create(dev, apply, store, { label: 'apply' });
  for (const [name, data] of Object.entries(initState(train.graph, INIT_SEED))) store.upload(name, data);
  const inputs = views(c);
  const lr = train.model.train.optimizer.lr;
  let t = 0;
  const trainStep = async (read: string[]) => {
    const out = await stepProgram.run(inputs, read);
    await applyProgram.run(applyInputs(++t, lr, optimizer), []);
    await dev.device.queue.onSubmittedWorkDone();
    return out;
  };
  const first = await trainStep(['loss.total']);
  return {
    steps: [{ name: 'training step', run: async () => void (await trainStep([])) }],
    initialLoss: first['loss.total'][0],
    loss: async () => (await stepProgram.run(inputs, ['loss.total']))['loss.total'][0],
    parameters: train.model.counts.trainable,
    dispose: () => {
      stepProgram.destroy();
      applyProgram.destroy();
      store.destroy();
    },
  };
}

/**
 * The bench's check of the training step before it is timed (bench/verify.ts):
 * lovt's first loss and its loss after one step (forward, backward, Adam) against
 * the float64 reference interpreter running the same step and apply graphs on the
 * same weights and inputs. Float64 at the timed size would take the host minutes,
 * so this runs the same model at a smaller size: at most batch 4 and width 8 (the
 * image size stays: at 32 px layer4's map is 1×1, its BatchNorm normalises 8
 * values, and the loss after Adam's first ±lr step is ill-conditioned).
 * A loss may be off by 2·2^-24·D·|loss|, D the longest chain of ops from the
 * weights to it (one rounding of the running magnitude per op, doubled for the
 * sums inside ops). Returns what is wrong (nothing when both losses agree).
 */
export async function verifyTrainStep(dev: LovtDevice, timed: ResNetContrastiveCase): Promise<string[]> {
  const c: ResNetContrastiveCase = { ...timed, batch: Math.min(timed.batch, 4), width: Math.min(timed.width, 8) };
  const ours = await lovtTrainStep(dev, c);
  let after: number;
  try {
    after = await ours.loss!();
  } finally {
    ours.dispose();
  }
  const train = compiled(c);
  const { step, apply, optimizer } = trainingGraphs(train);
  const inputs = views(c);
  let state = initialTrainingState(train.graph, [step, apply], INIT_SEED);
  const first = evaluate(step, { inputs, state });
  state = { ...state, ...first.updates };
  state = { ...state, ...evaluate(apply, { inputs: optimizerScalars(1, train.model.train.optimizer.lr, optimizer), state }).updates };
  const second = evaluate(step, { inputs, state }).outputs['loss.total'][0];
  const dStep = opDepths(step);
  const lossDepth = dStep[step.outputs['loss.total']];
  const stepDepth = Math.max(...Object.values(step.updates).map((id) => dStep[id]));
  const applyDepth = Math.max(0, ...opDepths(apply));
  const errors: string[] = [];
  const check = (what: string, got: number, want: number, depth: number) => {
    const tol = 2 * 2 ** -24 * depth * Math.abs(want);
    if (!(Math.abs(got - want) <= tol))
      errors.push(
        `${what} ${got} vs float64 ${want} (|diff| ${Math.abs(got - want).toExponential(2)} > ${tol.toExponential(2)}) at batch ${c.batch}, ${c.imageSize} px, width ${c.width}`,
      );
  };
  check('training step: first loss', ours.initialLoss!, first.outputs['loss.total'][0], lossDepth);
  check('training step: loss after one step', after, second, stepDepth + applyDepth + lossDepth);
  return errors;
}

type TF = typeof import('@tensorflow/tfjs-core');
type Tensor = import('@tensorflow/tfjs-core').Tensor;
type Tensor4D = import('@tensorflow/tfjs-core').Tensor4D;
type Tensor2D = import('@tensorflow/tfjs-core').Tensor2D;
type Variable = import('@tensorflow/tfjs-core').Variable;

/** The TF.js kernels a training step needs beyond the forward pass. */
const BACKWARD_KERNELS = ['Conv2DBackpropInput', 'Conv2DBackpropFilter', 'MaxPoolGrad'];

/**
 * TF.js: the same model, weights and inputs. One step = tf.train.adam's
 * minimize (forward, tf.variableGrads, applyGradients) with BatchNorm in
 * training mode updating its running statistics, until `settle` says the
 * backend is done; the first, run here as lovt's, gives the initial loss. A
 * backend without a backward kernel gets no step (the reason is in
 * `unavailable`) but still computes the initial loss. The caller makes
 * `backend` current first (the variables are created on it).
 */
export async function tfTrainStep(tf: TF, backend: string, c: ResNetContrastiveCase, settle: (t: Tensor) => Promise<void>): Promise<PreparedCase> {
  const train = compiled(c);
  const init = initState(train.graph, INIT_SEED);
  const state = train.graph.state;
  const made: Variable[] = [];
  const trainable: Variable[] = [];
  const variable = (name: string, layout?: (t: Tensor) => Tensor): Variable => {
    const info = state[name];
    if (!info) throw new Error(`${RESNET_CONTRASTIVE_FILE} has no state ${name}: the TF.js model no longer matches it`);
    const v = tf.tidy(() => {
      const t = tf.tensor(init[name], info.shape, info.dtype === 'i32' ? 'int32' : 'float32');
      return tf.variable(layout ? layout(t) : t, info.trainable);
    });
    made.push(v);
    if (info.trainable) trainable.push(v);
    return v;
  };
  const oihwToHwio = (t: Tensor) => tf.transpose(t, [2, 3, 1, 0]);

  const conv = (name: string, stride: number, pad: number) => {
    const w = variable(`${name}.weight`, oihwToHwio) as unknown as Tensor4D;
    return (x: Tensor4D) => tf.conv2d(x, w, stride, pad);
  };
  // BatchNorm in training mode over every axis but the channels (last in NHWC), as std/nn.lovt's.
  const batchNorm = (name: string, eps = 1e-5, momentum = 0.1) => {
    const [gamma, beta, runningMean, runningVar, tracked] = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'].map((s) =>
      variable(`${name}.${s}`),
    );
    return <T extends Tensor>(x: T): T => {
      const axes = x.shape.slice(0, -1).map((_, i) => i);
      const n = x.size / x.shape[x.rank - 1];
      const { mean, variance } = tf.moments(x, axes);
      runningMean.assign(tf.add(tf.mul(runningMean, 1 - momentum), tf.mul(mean, momentum)));
      runningVar.assign(tf.add(tf.mul(runningVar, 1 - momentum), tf.mul(variance, (momentum * n) / (n - 1))));
      tracked.assign(tf.add(tracked, tf.scalar(1, 'int32')));
      return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), gamma), beta) as T;
    };
  };
  const linear = (name: string) => {
    const w = variable(`${name}.weight`) as unknown as Tensor2D; // [out, in], as lovt's Linear
    const b = variable(`${name}.bias`);
    return (x: Tensor2D) => tf.add(tf.matMul(x, w, false, true), b) as Tensor2D;
  };
  // torchvision's BasicBlock, as std/resnet.lovt's.
  const basicBlock = (name: string, inplanes: number, planes: number, stride: number) => {
    const conv1 = conv(`${name}.conv1`, stride, 1);
    const bn1 = batchNorm(`${name}.bn1`);
    const conv2 = conv(`${name}.conv2`, 1, 1);
    const bn2 = batchNorm(`${name}.bn2`);
    const downsample = stride !== 1 || inplanes !== planes ? ([conv(`${name}.downsample.0`, stride, 0), batchNorm(`${name}.downsample.1`)] as const) : null;
    return (x: Tensor4D) => {
      const out = bn2(conv2(tf.relu(bn1(conv1(x)))));
      const identity = downsample ? downsample[1](downsample[0](x)) : x;
      return tf.relu(tf.add(out, identity)) as Tensor4D;
    };
  };

  // ResNet-18 at base width c.width (the .lovt file's `resnet18`).
  const w = c.width;
  const stem = conv('encoder.conv1', 2, 3);
  const stemBn = batchNorm('encoder.bn1');
  const blocks: ((x: Tensor4D) => Tensor4D)[] = [];
  [w, 2 * w, 4 * w, 8 * w].forEach((planes, layer) => {
    for (let i = 0; i < 2; i++) {
      const inplanes = i === 0 ? (layer === 0 ? w : planes / 2) : planes;
      blocks.push(basicBlock(`encoder.layer${layer + 1}.${i}`, inplanes, planes, i === 0 && layer > 0 ? 2 : 1));
    }
  });
  const hidden = linear('head.0');
  const headBn = batchNorm('head.1');
  const out = linear('head.3');
  const tau = train.model.configs.tau.value as number;

  const parameters = trainable.reduce((s, v) => s + v.size, 0);
  const expected = Object.values(state).filter((s) => s.trainable).length;
  if (trainable.length !== expected) throw new Error(`the TF.js model has ${trainable.length} trainable tensors, ${RESNET_CONTRASTIVE_FILE} ${expected}`);

  const toNhwc = (data: Float32Array) => tf.tidy(() => tf.transpose(tf.tensor4d(data, [c.batch, 3, c.imageSize, c.imageSize]), [0, 2, 3, 1]));
  const { view_a, view_b } = views(c);
  const x = tf.tidy(() => tf.concat([toNhwc(view_a), toNhwc(view_b)], 0)) as Tensor4D; // one batch of both views, as the .lovt's concat
  const eye = tf.eye(c.batch);
  const l2Normalize = (z: Tensor2D) => tf.mul(z, tf.rsqrt(tf.maximum(tf.sum(tf.square(z), -1, true), 1e-24)));
  const loss = (): import('@tensorflow/tfjs-core').Scalar => {
    let h = tf.maxPool(tf.relu(stemBn(stem(x))), 3, 2, 1) as Tensor4D;
    for (const block of blocks) h = block(h);
    const z = out(tf.relu(headBn(hidden(tf.mean(h, [1, 2]) as Tensor2D))));
    const za = l2Normalize(tf.slice(z, [0, 0], [c.batch, -1]));
    const zb = l2Normalize(tf.slice(z, [c.batch, 0], [c.batch, -1]));
    const s = tf.div(tf.matMul(za, zb, false, true), tau);
    const diagonal = tf.sum(tf.mul(s, eye), 1);
    const a2b = tf.mean(tf.sub(tf.logSumExp(s, 1), diagonal));
    const b2a = tf.mean(tf.sub(tf.logSumExp(s, 0), diagonal));
    return tf.add(tf.mul(a2b, 0.5), tf.mul(b2a, 0.5));
  };

  const o = train.model.train.optimizer;
  if (o.kind !== 'adam' || o.weight_decay !== 0)
    throw new Error(`the TF.js peer implements Adam without weight decay; ${RESNET_CONTRASTIVE_FILE} asks for ${o.kind}`);
  const optimizer = tf.train.adam(o.lr, o.betas[0], o.betas[1], o.eps);
  const minimize = () => optimizer.minimize(loss, true, trainable)!; // returns the loss before the update
  const read = async (t: Tensor) => {
    const value = (await t.data())[0];
    t.dispose();
    return value;
  };
  const missing = BACKWARD_KERNELS.filter((k) => !tf.getKernel(k, backend));
  return {
    steps: [
      missing.length
        ? { name: 'training step', run: null, unavailable: `no ${missing.join(', ')} kernel` }
        : {
            name: 'training step',
            run: async () => {
              const cost = minimize();
              await settle(cost);
              cost.dispose();
            },
          },
    ],
    initialLoss: await read(missing.length ? tf.tidy(loss) : minimize()),
    loss: missing.length ? undefined : () => read(tf.tidy(loss)),
    parameters,
    dispose: () => {
      tf.dispose([x, eye, ...made]);
      optimizer.dispose();
    },
  };
}
