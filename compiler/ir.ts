// The graph IR: one flat, typed, topologically ordered list of primitive ops with
// concrete shapes. The front end elaborates a .lovt model into it; autodiff,
// passes, the WGSL codegen, the float64 reference interpreter and the runtime
// all consume it. docs/ir.md documents every op; compiler/ops/ defines each one
// (the op table: shape rule, gradient, float64 evaluation, FLOPs, fusion class).

export type DType = 'f32' | 'i32';
export type Shape = number[];

/** Where a node came from in .lovt source, for error messages. */
export interface SourceLoc {
  file: string;
  line: number; // 1-based
  col: number; // 1-based
}

/** How a parameter or buffer is initialised (PyTorch semantics). */
export type InitSpec =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'constant'; value: number }
  | { kind: 'normal'; mean: number; std: number }
  | { kind: 'uniform'; low: number; high: number }
  /** torch.nn.init.kaiming_normal_(mode, nonlinearity='relu'): std = gain / sqrt(fan). */
  | { kind: 'kaiming_normal'; mode: 'fan_in' | 'fan_out'; gain: number }
  /** torch.nn.init.kaiming_uniform_: bound = gain * sqrt(3 / fan). PyTorch's Linear/Conv default uses gain = sqrt(2/(1+5)) with fan_in. */
  | { kind: 'kaiming_uniform'; mode: 'fan_in' | 'fan_out'; gain: number }
  /** truncated normal in [-2std, 2std] around 0 (BERT's initializer_range). */
  | { kind: 'trunc_normal'; std: number };

/** A per-axis size or step of a 2-D window: one int for both axes, or [h, w]. */
export type IntOrPair = number | [number, number];

/** The geometry shared by conv2d and its two gradients (PyTorch's Conv2d arguments). */
export interface ConvAttrs {
  stride: IntOrPair;
  padding: IntOrPair;
  dilation: IntOrPair;
  /** Default 1. */
  groups?: number;
}

/** The window of max_pool2d / avg_pool2d and their gradients. */
export interface PoolAttrs {
  kernel: IntOrPair;
  stride: IntOrPair;
  padding: IntOrPair;
}

export interface UpsampleAttrs {
  /** Output [height, width]. */
  size: [number, number];
  mode: 'nearest' | 'bilinear';
  alignCorners: boolean;
}

/** The attributes of an op that takes none. */
export type NoAttrs = Record<string, never>;

/**
 * Every primitive op and its attributes. Semantics: docs/ir.md; everything
 * else about an op (shape rule, gradient, float64 evaluation, FLOPs, kernel
 * family) is its entry in the op table, OPS in compiler/ops/index.ts.
 */
export interface OpAttrs {
  // leaves
  input: { name: string };
  param: { name: string };
  buffer: { name: string };
  full: { value: number };
  tensor: { data: number[] };
  iota: { axis: number };
  // elementwise unary
  neg: NoAttrs;
  exp: NoAttrs;
  log: NoAttrs;
  sqrt: NoAttrs;
  rsqrt: NoAttrs;
  abs: NoAttrs;
  relu: NoAttrs;
  sigmoid: NoAttrs;
  tanh: NoAttrs;
  gelu: NoAttrs;
  erf: NoAttrs;
  recip: NoAttrs;
  square: NoAttrs;
  sign: NoAttrs;
  isfinite: NoAttrs;
  cast: { to: DType };
  stop_gradient: NoAttrs;
  /** `salt` defaults to 0. */
  dropout: { p: number; salt?: number };
  // elementwise binary (numpy broadcasting) and select
  add: NoAttrs;
  sub: NoAttrs;
  mul: NoAttrs;
  div: NoAttrs;
  pow: NoAttrs;
  maximum: NoAttrs;
  minimum: NoAttrs;
  gt: NoAttrs;
  ge: NoAttrs;
  lt: NoAttrs;
  le: NoAttrs;
  eq: NoAttrs;
  ne: NoAttrs;
  where: NoAttrs;
  // reductions
  sum: { axes: number[]; keepdims?: boolean };
  max: { axes: number[]; keepdims?: boolean };
  logsumexp: { axis: number; keepdims?: boolean };
  softmax: { axis: number };
  log_softmax: { axis: number };
  // layout
  reshape: { shape: Shape };
  transpose: { perm: number[] };
  expand: { shape: Shape };
  slice: { starts: number[]; ends: number[] };
  concat: { axis: number };
  /** `value` defaults to 0. */
  pad: { pads: number[]; value?: number };
  // contractions
  matmul: { transA?: boolean; transB?: boolean };
  conv2d: ConvAttrs;
  conv2d_grad_input: ConvAttrs & { inputSize: [number, number] };
  conv2d_grad_weight: ConvAttrs & { kernelSize: [number, number] };
  // pooling and resampling
  max_pool2d: PoolAttrs;
  max_pool2d_grad: PoolAttrs;
  avg_pool2d: PoolAttrs;
  avg_pool2d_grad: PoolAttrs & { inputSize: [number, number] };
  upsample2d: UpsampleAttrs;
  upsample2d_grad: UpsampleAttrs & { inputSize: [number, number] };
  // indexing
  gather: NoAttrs;
  scatter_add: { numRows: number };
  segment_max: { numSegments: number };
  segment_max_grad: NoAttrs;
}

export type OpName = keyof OpAttrs;

/** The attributes of any op (what a node of unknown op carries). */
export type Attrs = OpAttrs[OpName];
/** Any attribute value (JSON). */
export type AttrValue = number | string | boolean | number[] | null;

/** A node of op P: `switch (node.op)` on a Node narrows its attrs. */
export interface NodeOf<P extends OpName> {
  id: number;
  op: P;
  inputs: number[];
  attrs: OpAttrs[P];
  shape: Shape;
  dtype: DType;
  /** A readable name (a .lovt binding, a parameter's dotted name); not semantic except on leaves. */
  name?: string;
  loc?: SourceLoc;
}

export type Node = { [P in OpName]: NodeOf<P> }[OpName];

export interface StateInfo {
  /** Node id of the 'param' or 'buffer' leaf. */
  node: number;
  name: string; // stable dotted name, e.g. image_encoder.layer1.0.conv1.weight
  shape: Shape;
  dtype: DType;
  trainable: boolean;
  init: InitSpec;
}

/**
 * A whole program: a pure function of (inputs, state) to (outputs, new state).
 * After a run, every update's value is written into its target state tensor.
 */
export interface Graph {
  nodes: Node[];
  /** name -> node id of each 'input' leaf. */
  inputs: Record<string, number>;
  /** Every 'param' and 'buffer' leaf by its dotted name. */
  state: Record<string, StateInfo>;
  /** Named results read back by the host (loss terms, the total, metrics). */
  outputs: Record<string, number>;
  /** State written at the end of a run: state name -> node id of the new value. */
  updates: Record<string, number>;
}

export const IR_VERSION = 1;

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function stridesOf(shape: Shape): number[] {
  const s = new Array(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}
