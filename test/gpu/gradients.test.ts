// Every differentiable primitive's VJP, compiled and run on the WebGPU device,
// against central finite differences of the float64 reference forward
// (compiler/reference.ts), at small shapes whose sizes are not multiples of 4 or
// of any workgroup or tile. For y = op(x…) and a random cotangent c, the
// device computes ∂⟨c, y⟩/∂x; the reference gives the Jacobian column
// J[·, i] = ∂y/∂x_i by central differences, hence the expected gradient
// Σ_j c_j·J_ji and the magnitudes the f32 error bound needs (see
// assertVjpWithinF32Bound). The table covers every primitive: each is either
// checked here or listed, with the reason, as having no gradient -- and that
// listing is checked against autodiff too.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GraphBuilder } from '../../compiler/builder.ts';
import { type Attrs, type ConvAttrs, type DType, type Graph, type OpAttrs, type OpName, type Shape, numel } from '../../compiler/ir.ts';
import { NO_GRADIENT, primitiveOps } from '../../compiler/ops/index.ts';
import { gradients } from '../../compiler/autodiff.ts';
import { optimize } from '../../compiler/passes/index.ts';
import { Rng } from '../../compiler/random.ts';
import { evaluate } from '../../compiler/reference.ts';
import { runGraph } from '../../runtime/executor.ts';
import type { HostTensor } from '../../runtime/state.ts';
import { getNodeDevice } from '../../runtime/platform/node.ts';

interface Leaf {
  shape: Shape;
  dtype?: DType;
  /** Fixed values (indices, masks, a seed); random otherwise. */
  data?: number[];
  /** Range of random values (default [-2, 2)); `awayFromZero` mirrors it onto both signs. */
  range?: [number, number];
  awayFromZero?: boolean;
  /** false: fed as a plain input, not differentiated (default: f32 leaves are differentiated). */
  wrt?: boolean;
}

interface GradCase<P extends OpName> {
  leaves: Leaf[];
  attrs?: OpAttrs[P];
  /**
   * Rounding errors per term of the bound (default 2): more for ops whose f32
   * VJP evaluates a transcendental function or a power (each a few ulp).
   */
  ulps?: number;
}

const f = (...shape: number[]): Leaf => ({ shape });
const positive = (...shape: number[]): Leaf => ({ shape, range: [0.25, 3] });
const nonzero = (...shape: number[]): Leaf => ({ shape, range: [0.5, 2], awayFromZero: true });
const fixed = (shape: Shape, data: number[], dtype: DType = 'f32'): Leaf => ({ shape, data, dtype, wrt: false });

const CONV: ConvAttrs = { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 1 };
const GROUPED: ConvAttrs = { stride: 1, padding: 1, dilation: 1, groups: 3 };
const SEG = [0, 0, 1, 1, 1, -1, 2, /**/ 2, 0, 5, 0, 0, 0, 1];

/**
 * Every primitive: its gradient cases, or why it has none. Typed over OpName,
 * so a new primitive does not type-check until it is classified here; the
 * first test checks the same at run time against the op table.
 */
const COVERAGE: { [P in OpName]: GradCase<P>[] | string } = {
  input: 'a leaf',
  param: 'a leaf',
  buffer: 'a leaf',
  full: 'a constant leaf',
  tensor: 'a constant leaf',
  iota: 'a constant leaf',
  gt: 'piecewise constant',
  ge: 'piecewise constant',
  lt: 'piecewise constant',
  le: 'piecewise constant',
  eq: 'piecewise constant',
  ne: 'piecewise constant',
  sign: 'piecewise constant',
  isfinite: 'piecewise constant (a 1/0 mask)',
  stop_gradient: 'blocks the gradient by definition',
  max_pool2d_grad: 'second-order max pooling is unsupported (autodiff refuses it)',
  segment_max_grad: 'second-order segment max is unsupported (autodiff refuses it)',

  neg: [{ leaves: [f(3, 5, 7)] }],
  exp: [{ leaves: [f(3, 5, 7)], ulps: 4 }],
  log: [{ leaves: [positive(3, 5, 7)] }],
  sqrt: [{ leaves: [positive(3, 5, 7)] }],
  rsqrt: [{ leaves: [positive(3, 5, 7)] }],
  abs: [{ leaves: [f(3, 5, 7)] }],
  relu: [{ leaves: [f(3, 5, 7)] }],
  sigmoid: [{ leaves: [{ shape: [3, 5, 7], range: [-6, 6] }], ulps: 4 }],
  tanh: [{ leaves: [{ shape: [3, 5, 7], range: [-4, 4] }], ulps: 4 }],
  gelu: [{ leaves: [{ shape: [3, 5, 7], range: [-4, 4] }], ulps: 4 }],
  erf: [{ leaves: [{ shape: [3, 5, 7], range: [-3, 3] }], ulps: 4 }],
  recip: [{ leaves: [nonzero(3, 5, 7)] }],
  square: [{ leaves: [f(3, 5, 7)] }],
  cast: [{ leaves: [f(3, 5, 7)], attrs: { to: 'f32' } }],
  dropout: [{ leaves: [f(5, 13), fixed([], [1234], 'i32')], attrs: { p: 0.3, salt: 7 } }],

  add: [{ leaves: [f(3, 1, 5), f(7, 1)] }, { leaves: [f(), f(3, 5)] }],
  sub: [{ leaves: [f(3, 1, 5), f(7, 1)] }],
  mul: [{ leaves: [f(3, 1, 5), f(7, 1)] }, { leaves: [f(), f(3, 5)] }],
  div: [{ leaves: [f(3, 1, 5), nonzero(7, 1)] }],
  pow: [{ leaves: [positive(3, 5), f(5)], ulps: 8 }],
  maximum: [{ leaves: [f(3, 1, 5), f(7, 1)] }],
  minimum: [{ leaves: [f(3, 1, 5), f(7, 1)] }],
  where: [{ leaves: [fixed([3, 1], [1, 0, 1]), f(3, 5), f(5)] }],

  sum: [
    { leaves: [f(3, 5, 7)], attrs: { axes: [0, 2], keepdims: false } },
    { leaves: [f(3, 5, 7)], attrs: { axes: [-2], keepdims: true } },
  ],
  max: [
    { leaves: [f(3, 5, 7)], attrs: { axes: [1], keepdims: false } },
    { leaves: [f(3, 5, 7)], attrs: { axes: [0, 2], keepdims: true } },
  ],
  logsumexp: [
    { leaves: [f(3, 5, 7)], attrs: { axis: 1, keepdims: false }, ulps: 4 },
    { leaves: [f(3, 5, 7)], attrs: { axis: -1, keepdims: true }, ulps: 4 },
  ],
  softmax: [
    { leaves: [f(3, 5, 7)], attrs: { axis: 0 }, ulps: 4 },
    { leaves: [f(3, 5, 7)], attrs: { axis: 2 }, ulps: 4 },
  ],
  log_softmax: [
    { leaves: [f(3, 5, 7)], attrs: { axis: 1 }, ulps: 4 },
    { leaves: [{ shape: [3, 5, 7], range: [-8, 8] }], attrs: { axis: -1 }, ulps: 4 },
  ],

  reshape: [{ leaves: [f(3, 5, 7)], attrs: { shape: [15, 7] } }],
  transpose: [{ leaves: [f(3, 5, 7)], attrs: { perm: [2, 0, 1] } }],
  expand: [{ leaves: [f(3, 1)], attrs: { shape: [5, 3, 7] } }],
  slice: [{ leaves: [f(3, 5, 7)], attrs: { starts: [1, 0, 2], ends: [3, 5, 5] } }],
  concat: [
    { leaves: [f(3, 2), f(3, 5), f(3, 1)], attrs: { axis: 1 } },
    { leaves: [f(1, 3), f(2, 3)], attrs: { axis: 0 } },
  ],
  pad: [
    { leaves: [f(3, 5)], attrs: { pads: [1, 2, 0, 3], value: 1.5 } },
    { leaves: [f(5, 5)], attrs: { pads: [-1, 2, 1, -3], value: 0 } },
  ],

  matmul: [
    { leaves: [f(3, 5), f(5, 7)] },
    { leaves: [f(5, 3), f(7, 5)], attrs: { transA: true, transB: true } },
    { leaves: [f(2, 1, 3, 5), f(3, 5, 2)] },
    { leaves: [f(3, 5), f(2, 7, 5)], attrs: { transB: true } },
  ],
  conv2d: [
    { leaves: [f(2, 3, 7, 5), f(5, 3, 3, 2)], attrs: CONV },
    { leaves: [f(1, 3, 5, 5), f(3, 1, 3, 3)], attrs: GROUPED },
  ],
  conv2d_grad_input: [{ leaves: [f(2, 5, 4, 7), f(5, 3, 3, 2)], attrs: { ...CONV, inputSize: [7, 5] } }],
  conv2d_grad_weight: [{ leaves: [f(2, 3, 7, 5), f(2, 5, 4, 7)], attrs: { ...CONV, kernelSize: [3, 2] } }],

  max_pool2d: [{ leaves: [f(2, 3, 7, 5)], attrs: { kernel: 3, stride: 2, padding: 1 } }],
  avg_pool2d: [{ leaves: [f(2, 3, 7, 5)], attrs: { kernel: [3, 2], stride: [2, 1], padding: [1, 1] } }],
  avg_pool2d_grad: [{ leaves: [f(2, 3, 4, 6)], attrs: { kernel: [3, 2], stride: [2, 1], padding: [1, 1], inputSize: [7, 5] } }],
  upsample2d: [
    { leaves: [f(1, 2, 3, 5)], attrs: { size: [7, 4], mode: 'nearest', alignCorners: false } },
    { leaves: [f(1, 2, 3, 5)], attrs: { size: [7, 4], mode: 'bilinear', alignCorners: false } },
    { leaves: [f(1, 2, 3, 5)], attrs: { size: [7, 4], mode: 'bilinear', alignCorners: true } },
  ],
  upsample2d_grad: [
    { leaves: [f(1, 2, 7, 4)], attrs: { size: [7, 4], mode: 'nearest', alignCorners: false, inputSize: [3, 5] } },
    { leaves: [f(1, 2, 7, 4)], attrs: { size: [7, 4], mode: 'bilinear', alignCorners: true, inputSize: [3, 5] } },
  ],

  gather: [{ leaves: [f(5, 3), fixed([2, 3], [4, 0, 4, 1, 2, 1], 'i32')] }],
  scatter_add: [{ leaves: [fixed([2, 3], [4, 0, 4, 1, 2, 1], 'i32'), f(2, 3, 7)], attrs: { numRows: 5 } }],
  segment_max: [{ leaves: [f(2, 7, 3), fixed([2, 7], SEG, 'i32')], attrs: { numSegments: 3 } }],
};

/** Central-difference step: float64 truncation and rounding errors stay below 1e-9, far under f32's. */
const H = 1e-5;

function leafValues(rng: Rng, leaf: Leaf): Float32Array | Int32Array {
  const n = numel(leaf.shape);
  if (leaf.data) return leaf.dtype === 'i32' ? Int32Array.from(leaf.data) : Float32Array.from(leaf.data);
  const [low, high] = leaf.range ?? [-2, 2];
  return Float32Array.from({ length: n }, () => {
    const v = low + rng.uniform() * (high - low);
    return leaf.awayFromZero && rng.uniform() < 0.5 ? -v : v;
  });
}

/**
 * Asserts the device VJP of one case within the f32 bound, element by element:
 * |got_i - Σ_j c_j·J_ji| ≤ ulps·(terms_i + 2)·2^-24·(Σ_j |c_j·J_ji| + Σ_{J_ji≠0} |c_j|) + fd_i,
 * with terms_i the nonzero entries of the column. The first magnitude is the
 * summation bound of the gradient as a sum of products (as in
 * kernel-runner.ts's assertWithinF32Bound); the second allows for the
 * cancellation inside one Jacobian entry that the VJP forms from O(1)
 * intermediates (tanh' = 1 - y², softmax's g - Σ g·y). fd_i bounds the central
 * difference's own float64 error.
 */
function assertVjpWithinF32Bound(what: string, got: HostTensor, column: (i: number) => Float64Array, cot: Float32Array, ys: Float64Array, ulps: number) {
  for (let i = 0; i < got.length; i++) {
    const J = column(i);
    let want = 0;
    let mag = 0;
    let cmag = 0;
    let fd = 0;
    let terms = 0;
    for (let j = 0; j < J.length; j++) {
      if (J[j] === 0) continue;
      want += cot[j] * J[j];
      mag += Math.abs(cot[j] * J[j]);
      cmag += Math.abs(cot[j]);
      fd += 1e-9 * Math.abs(cot[j]) * (1 + Math.abs(ys[j]));
      terms++;
    }
    const tol = ulps * (terms + 2) * 2 ** -24 * (mag + cmag) + fd;
    if (!(Math.abs(got[i] - want) <= tol))
      assert.unreachable(
        `${what}: element ${i} is ${got[i]}, finite differences give ${want} (|diff| ${Math.abs(got[i] - want).toExponential(2)}, tolerance ${tol.toExponential(2)})`,
      );
  }
}

/** Builds op(leaves), runs its VJP on the device and checks every differentiated leaf against finite differences. */
async function checkDeviceVjp<P extends OpName>(op: P, c: GradCase<P>, seed: number): Promise<void> {
  const what = `${op} ${JSON.stringify(c.attrs ?? {})} of ${c.leaves.map((l) => `[${l.shape}]`).join(', ')}`;
  const rng = new Rng(seed);
  const b = new GraphBuilder();
  const inputs: Record<string, HostTensor> = {};
  const state: Record<string, HostTensor> = {};
  const wrt: { name: string; id: number }[] = [];
  const ids = c.leaves.map((leaf, k) => {
    const name = `x${k}`;
    const value = leafValues(rng, leaf);
    const differentiated = leaf.wrt ?? (leaf.dtype ?? 'f32') === 'f32';
    if (!differentiated) {
      inputs[name] = value;
      return b.input(name, leaf.shape, leaf.dtype ?? 'f32');
    }
    state[name] = value;
    const id = b.state(name, leaf.shape, { kind: 'zeros' }, true);
    wrt.push({ name, id });
    return id;
  });
  const y = b.emit<OpName>(op, ids, c.attrs);
  const yShape = b.node(y).shape;
  const cot = leafValues(rng, { shape: yShape }) as Float32Array;
  inputs.cotangent = cot;
  const forward: Graph = structuredClone(b.graph);
  forward.outputs = { y };
  const loss = b.sum(
    b.mul(y, b.input('cotangent', yShape)),
    yShape.map((_, i) => i),
  );
  const grads = gradients(
    b,
    loss,
    wrt.map((w) => w.id),
  );
  for (const w of wrt) b.output(`grad.${w.name}`, grads.get(w.id)!);

  const dev = await getNodeDevice();
  const got = await runGraph(dev, optimize(b.graph), { inputs, state });
  const ys = evaluate(forward, { inputs, state }).outputs.y;
  for (const w of wrt) {
    const x = state[w.name];
    const column = (i: number) => {
      const at = (delta: number) => {
        const moved = Float64Array.from(x);
        moved[i] += delta;
        return evaluate(forward, { inputs, state: { ...state, [w.name]: moved } }).outputs.y;
      };
      const plus = at(H);
      const minus = at(-H);
      return plus.map((p, j) => (p - minus[j]) / (2 * H));
    };
    assertVjpWithinF32Bound(`${what}: d/d${w.name}`, got.outputs[`grad.${w.name}`], column, cot, ys, c.ulps ?? 2);
  }
}

test('every primitive is either checked here or listed as having no gradient', () => {
  const all = primitiveOps();
  const listed = Object.keys(COVERAGE);
  assert.equal([...listed].sort(), [...all].sort(), 'COVERAGE lists exactly the primitives of the op table');
  for (const [op, entry] of Object.entries(COVERAGE) as [OpName, GradCase<OpName>[] | string][]) {
    if (Array.isArray(entry)) assert.ok(entry.length > 0, `${op}: no cases`);
    // A listed reason matches the op table: no gradient at all, or a VJP that refuses (second order).
    else assert.is(NO_GRADIENT.has(op), !/unsupported/.test(entry), `${op}: '${entry}' vs the op table's gradient`);
  }
});

test('ops listed as having no gradient get none from autodiff (zeros, or a refusal for second order)', () => {
  const inputsOf: Partial<Record<OpName, (b: GraphBuilder, p: number) => number[]>> = {
    max_pool2d_grad: (b, p) => [b.input('img', [1, 1, 4, 6]), p],
    segment_max_grad: (b, p) => [b.input('x', [1, 6, 3]), b.input('seg', [1, 6], 'i32'), p],
  };
  const attrsOf: Partial<Record<OpName, Attrs>> = { max_pool2d_grad: { kernel: 2, stride: 2, padding: 0 } };
  for (const [op, entry] of Object.entries(COVERAGE) as [OpName, GradCase<OpName>[] | string][]) {
    if (Array.isArray(entry) || /leaf/.test(entry)) continue;
    const b = new GraphBuilder();
    const shape = op === 'max_pool2d_grad' ? [1, 1, 2, 3] : op === 'segment_max_grad' ? [1, 2, 3] : [3, 4];
    const p = b.state('p', shape, { kind: 'zeros' }, true);
    const ins = inputsOf[op]?.(b, p) ?? (op === 'sign' || op === 'isfinite' || op === 'stop_gradient' ? [p] : [p, b.input('q', shape)]);
    const y = b.emit(op, ins, attrsOf[op] ?? {});
    const loss = b.sum(
      y,
      b.node(y).shape.map((_, i) => i),
    );
    if (/unsupported/.test(entry)) {
      assert.throws(() => gradients(b, loss, [p]), /not supported/, `${op}: autodiff refuses`);
      continue;
    }
    const g = b.graph.nodes[gradients(b, loss, [p]).get(p)!];
    assert.ok(g.op === 'full' && g.attrs.value === 0, `${op}: the gradient is a zero constant, got ${g.op}`);
  }
});

let seed = 1;
for (const [op, entry] of Object.entries(COVERAGE) as [OpName, GradCase<OpName>[] | string][])
  if (Array.isArray(entry))
    test(`${op}: device VJP matches finite differences of the float64 reference`, async () => {
      for (const c of entry) await checkDeviceVjp(op, c, seed++);
    });

test.run();
