// The graph IR: one flat, typed, topologically ordered list of primitive ops with
// concrete shapes. The front end elaborates a .lovt model into it; autodiff,
// passes, the WGSL codegen, the float64 reference interpreter and the runtime
// all consume it. docs/ir.md documents every op; ops.ts holds the shape rules.

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

/** Every primitive op. Semantics and attributes: docs/ir.md and OPS in ops.ts. */
export type OpName =
  // leaves
  | 'input' | 'param' | 'buffer' | 'full' | 'tensor' | 'iota'
  // elementwise unary
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'relu' | 'sigmoid' | 'tanh' | 'gelu' | 'erf'
  | 'recip' | 'square' | 'sign' | 'isfinite' | 'cast' | 'stop_gradient' | 'dropout'
  // elementwise binary (numpy broadcasting) and select
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum'
  | 'gt' | 'ge' | 'lt' | 'le' | 'eq' | 'ne' | 'where'
  // reductions
  | 'sum' | 'max' | 'logsumexp' | 'softmax'
  // layout
  | 'reshape' | 'transpose' | 'expand' | 'slice' | 'concat' | 'pad'
  // contractions
  | 'matmul' | 'conv2d' | 'conv2d_grad_input' | 'conv2d_grad_weight'
  // pooling and resampling
  | 'max_pool2d' | 'max_pool2d_grad' | 'avg_pool2d' | 'avg_pool2d_grad' | 'upsample2d' | 'upsample2d_grad'
  // indexing
  | 'gather' | 'scatter_add' | 'segment_max' | 'segment_max_grad';

export type AttrValue = number | string | boolean | number[] | null;
export type Attrs = Record<string, AttrValue>;

export interface Node {
  id: number;
  op: OpName;
  inputs: number[];
  attrs: Attrs;
  shape: Shape;
  dtype: DType;
  /** A readable name (a .lovt binding, a parameter's dotted name); not semantic except on leaves. */
  name?: string;
  loc?: SourceLoc;
}

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
