// Shared WGSL building blocks for the engine's generators (elementwise, reduce,
// layout, nn): typed literals, the storage-binding builder, the flat dispatch
// prologue, and the small math library (erf, tanh, pow, dropout's hash) that
// WGSL lacks or implements too loosely for f32 parity with the reference.

import type { DType, Graph, NodeOf, OpName } from '../ir.ts';
import { type Epilogue, type Kernel, foldWorkgroups } from './kernel.ts';
import type { ContractionTarget } from './gemm.ts';

/** What every generator receives besides the graph and node. Matches H4's renderer signature (plus scratch). */
export interface RenderOptions {
  maxWorkgroupsPerDim: number;
  epilogue?: Epilogue;
  /** Allocates a planner-managed scratch tensor (live only across this node's kernels) and returns its id. */
  scratch?: (elements: number, dtype: DType) => number;
  /**
   * The device's fixed subgroup size on SIMD CPU devices (ContractionTarget
   * 'simd-cpu'): reductions then give each row one subgroup-sized workgroup
   * and combine with subgroup operations instead of shared memory and a barrier.
   */
  subgroupSize?: number;
}

/** What an anchor's renderer (a reduction, contraction or nn kernel) receives. */
export interface AnchorOptions extends RenderOptions {
  /** The device's contraction kernel family (PORTABLE_TARGET when absent). */
  target?: ContractionTarget;
  /** The group's nodes computed in place: a reduction evaluates its input's producers among them while loading. */
  inline: Set<number>;
}

/** The kernels of one anchored op (with an optional epilogue); an entry of the renderer table (codegen/index.ts). */
export interface KernelRenderer<P extends OpName> {
  kernel(graph: Graph, node: NodeOf<P>, opts: AnchorOptions): Kernel | Kernel[];
}

export function wgslType(dtype: DType): string {
  return dtype === 'i32' ? 'i32' : 'f32';
}

/** A WGSL literal of the given dtype. Infinities and NaN go through runtime bitcasts (const-eval forbids them). */
export function literal(value: number, dtype: DType): string {
  if (dtype === 'i32') {
    const v = Math.trunc(value) | 0;
    return v === -2147483648 ? '(-2147483647i - 1i)' : `${v}i`;
  }
  if (Number.isNaN(value)) return 'lovt_nan()';
  const f = Math.fround(value);
  if (f === Infinity) return 'lovt_inf()';
  if (f === -Infinity) return '(-lovt_inf())';
  // String() of an exact f32 value parses back to exactly that value.
  let s = String(f);
  if (!/[.e]/.test(s)) s += '.0';
  return f < 0 || Object.is(f, -0) ? `(${Object.is(f, -0) ? '-0.0' : s})` : s;
}

/** The dtype's additive identity and lowest value, as WGSL expressions. */
export function zeroOf(dtype: DType): string {
  return dtype === 'i32' ? '0i' : '0.0';
}
export function lowestOf(dtype: DType): string {
  return dtype === 'i32' ? '(-2147483647i - 1i)' : '(-lovt_inf())';
}

/** Helper functions emitted on demand. Each may depend on others (listed in DEPS). */
const HELPERS: Record<string, string> = {
  lovt_inf: `var<private> lovt_INF_BITS: u32 = 0x7f800000u;
fn lovt_inf() -> f32 { return bitcast<f32>(lovt_INF_BITS); }`,
  lovt_nan: `var<private> lovt_NAN_BITS: u32 = 0x7fc00000u;
fn lovt_nan() -> f32 { return bitcast<f32>(lovt_NAN_BITS); }`,
  // erf: N. Juffa's f32 minimax approximation, max abs error 6e-8 (checked against a float64 erf).
  lovt_erf: `fn lovt_erf(a: f32) -> f32 {
  let t = abs(a);
  let s = a * a;
  if (t > 0.927734375) {
    var r = fma(-1.72853470e-5, t, 3.83197126e-4);
    let u = fma(-3.88396438e-3, t, 2.42546219e-2);
    r = fma(r, s, u);
    r = fma(r, t, -1.06777877e-1);
    r = fma(r, t, -6.34846687e-1);
    r = fma(r, t, -1.28717512e-1);
    r = fma(r, t, -t);
    r = 1.0 - exp(r);
    return select(r, -r, a < 0.0);
  }
  var r = -5.96761703e-4;
  r = fma(r, s, 4.99119423e-3);
  r = fma(r, s, -2.67681349e-2);
  r = fma(r, s, 1.12819925e-1);
  r = fma(r, s, -3.76125336e-1);
  r = fma(r, s, 1.28379166e-1);
  return fma(r, a, a);
}`,
  // tanh: odd Taylor series near 0 (where (1-t)/(1+t) cancels), exp form elsewhere; never overflows.
  lovt_tanh: `fn lovt_tanh(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.125) {
    let s = x * x;
    return x * (1.0 + s * (-0.33333333333 + s * (0.13333333333 + s * (-0.05396825397 + s * 0.02186948854))));
  }
  let t = exp(-2.0 * a);
  let r = (1.0 - t) / (1.0 + t);
  return select(r, -r, x < 0.0);
}`,
  lovt_sigmoid: `fn lovt_sigmoid(x: f32) -> f32 {
  // exp of a non-positive number only, so neither branch overflows.
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}`,
  // pow with Math.pow's behaviour for negative bases (integer exponents) and zero.
  lovt_pow: `fn lovt_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (x == 0.0) { return select(lovt_inf(), 0.0, y > 0.0); }
  let r = pow(abs(x), y);
  if (x > 0.0) { return r; }
  if (floor(y) != y) { return lovt_nan(); }
  let odd = abs(y - 2.0 * floor(y * 0.5)) == 1.0;
  return select(r, -r, odd);
}`,
  // f32 -> i32 as docs/ir.md defines it: truncate, saturate at the i32 range, NaN -> 0
  // (WGSL's own conversion clamps at 2^31 - 128, the largest f32 below 2^31).
  lovt_to_i32: `fn lovt_to_i32(x: f32) -> i32 {
  if (x != x) { return 0i; }
  if (x >= 2147483648.0) { return 2147483647i; }
  return i32(x);
}`,
  // Online softmax state (running max m, sum of exp(x - m)): fold one element / merge two states.
  // exp(-inf) = 0 makes the first element and empty partials work without branches, except
  // that -inf - -inf is NaN: an all--inf state stays (-inf, 0). A NaN state's sum is NaN, so
  // merges (whose max may drop the NaN) still give NaN.
  lovt_online: `fn lovt_online_step(a: vec2<f32>, x: f32) -> vec2<f32> {
  if (lovt_isnan(x)) { return vec2<f32>(x, x); } // NaN poisons the row (the max alone would skip it)
  if (x > a.x) { return vec2<f32>(x, a.y * exp(a.x - x) + 1.0); }
  if (a.x == -lovt_inf()) { return a; }
  return vec2<f32>(a.x, a.y + exp(x - a.x));
}
fn lovt_online_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  if (m == -lovt_inf()) { return vec2<f32>(m, 0.0); }
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}`,
  // The online softmax state of a whole subgroup (module must `enable subgroups`).
  lovt_online_subgroup: `fn lovt_online_subgroup(a: vec2<f32>) -> vec2<f32> {
  let m = subgroupMax(a.x);
  // No branch: subgroup operations must stay in uniform control flow. An all -inf row sums 0, not NaN.
  return vec2<f32>(m, subgroupAdd(select(a.y * exp(a.x - m), 0.0, m == -lovt_inf())));
}`,
  // NaN and finiteness tests on the bits: WGSL lets a compiler assume that float
  // operations never see NaN or infinity, so x != x may fold to false.
  lovt_isnan: `fn lovt_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }`,
  lovt_isfinite: `fn lovt_isfinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }`,
  // max/min that propagate NaN (PyTorch's maximum, minimum, relu, amax); WGSL's max(NaN, x) may give x.
  lovt_max: `fn lovt_max(a: f32, b: f32) -> f32 { return select(select(max(a, b), b, lovt_isnan(b)), a, lovt_isnan(a)); }
fn lovt_min(a: f32, b: f32) -> f32 { return select(select(min(a, b), b, lovt_isnan(b)), a, lovt_isnan(a)); }`,
  lovt_max_subgroup: `fn lovt_max_subgroup(a: f32) -> f32 { return select(subgroupMax(a), lovt_nan(), subgroupAny(lovt_isnan(a))); }`,
  // Dropout's hash; must match compiler/random.ts bit for bit.
  lovt_pcg: `fn lovt_pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}`,
};
const DEPS: Record<string, string[]> = {
  lovt_pow: ['lovt_inf', 'lovt_nan'],
  lovt_online: ['lovt_inf', 'lovt_isnan'],
  lovt_online_subgroup: ['lovt_inf'],
  lovt_max: ['lovt_isnan'],
  lovt_max_subgroup: ['lovt_nan', 'lovt_isnan'],
};

/**
 * Collects the storage bindings and helper functions of one WGSL module.
 * Reads are numbered first (from `firstBinding`), then writes, as Kernel requires.
 */
export class KernelBuilder {
  private reads = new Map<number, { name: string; dtype: DType }>();
  private writes = new Map<number, { name: string; dtype: DType }>();
  private aliases = new Map<number, string>();
  private vectors = new Set<number>();
  private helpers = new Set<string>();

  constructor(
    private prefix = '',
    private firstBinding = 0,
  ) {}

  /** The variable name of a read-only binding of `tensor` (deduplicated), or the variable it is aliased to. */
  read(tensor: number, dtype: DType): string {
    return this.aliases.get(tensor) ?? this.binding(this.reads, 'in', tensor, dtype);
  }

  /**
   * Reads of `tensor` go through the existing variable `name` (a read_write
   * binding) instead of a binding of their own: an in-place update reads the
   * old value where it writes the new one (WebGPU forbids binding one buffer
   * both read-only and writable in a dispatch).
   */
  alias(tensor: number, name: string): void {
    this.aliases.set(tensor, name);
  }

  isAliased(tensor: number): boolean {
    return this.aliases.has(tensor);
  }

  /** Declares `tensor`'s binding as an array of 4-vectors (its length must be a multiple of 4). */
  vectorize(tensor: number): void {
    this.vectors.add(tensor);
  }

  isVector(tensor: number): boolean {
    return this.vectors.has(tensor);
  }

  /** The variable name of a read_write binding of `tensor` (deduplicated). */
  write(tensor: number, dtype: DType): string {
    return this.binding(this.writes, 'out', tensor, dtype);
  }

  private binding(map: Map<number, { name: string; dtype: DType }>, kind: string, tensor: number, dtype: DType): string {
    let b = map.get(tensor);
    if (!b) {
      b = { name: `${this.prefix}${kind}${map.size}`, dtype };
      map.set(tensor, b);
    }
    return b.name;
  }

  use(helper: string): void {
    if (!(helper in HELPERS)) throw new Error(`internal: unknown WGSL helper ${helper}`);
    for (const d of DEPS[helper] ?? []) this.use(d);
    this.helpers.add(helper);
  }

  /** Merges another builder's helpers (for an epilogue rendered separately). */
  useAll(names: Iterable<string>): void {
    for (const n of names) this.use(n);
  }

  helperNames(): string[] {
    return [...this.helpers];
  }

  readTensors(): number[] {
    return [...this.reads.keys()];
  }

  /**
   * Declarations and binding list of the finished module: own reads, then the
   * epilogue's extra reads (declared by the epilogue itself), then writes --
   * the layout every renderer shares (Kernel: written tensors come last).
   * Helpers the epilogue already declares are not repeated.
   */
  finish(epilogue?: Epilogue): { decls: string; bindings: Kernel['bindings'] } {
    const lines: string[] = [];
    let b = this.firstBinding;
    const elem = (tensor: number, dtype: DType) => (this.vectors.has(tensor) ? `vec4<${wgslType(dtype)}>` : wgslType(dtype));
    for (const [tensor, { name, dtype }] of this.reads) lines.push(`@group(0) @binding(${b++}) var<storage, read> ${name}: array<${elem(tensor, dtype)}>;`);
    const epilogueHelpers = new Set<string>((epilogue as { helpers?: string[] } | undefined)?.helpers ?? []);
    if (epilogue) {
      const { decls, code } = epilogue.render(b);
      lines.push(decls, code);
      b += epilogue.extra.length;
    }
    for (const [tensor, { name, dtype }] of this.writes)
      lines.push(`@group(0) @binding(${b++}) var<storage, read_write> ${name}: array<${elem(tensor, dtype)}>;`);
    for (const h of this.helpers) if (!epilogueHelpers.has(h)) lines.push(HELPERS[h]);
    const bindings = [
      ...[...this.reads.keys()].map((tensor) => ({ tensor, access: 'read' as const })),
      ...(epilogue?.extra ?? []).map((tensor) => ({ tensor, access: 'read' as const })),
      ...[...this.writes.keys()].map((tensor) => ({ tensor, access: 'read_write' as const })),
    ];
    return { decls: lines.join('\n'), bindings };
  }
}

/** The workgroup grid for `count` workgroups, and the WGSL expression of the flat workgroup id. */
export function flatGrid(count: number, maxPerDim: number): { workgroups: [number, number, number]; flatId: string } {
  const workgroups = foldWorkgroups(count, maxPerDim);
  const flatId = workgroups[1] === 1 ? 'wid.x' : `(wid.y * ${workgroups[0]}u + wid.x)`;
  return { workgroups, flatId };
}

/** The entry point signature every engine kernel uses. */
export function entry(workgroupSize: number, body: string): string {
  return `@compute @workgroup_size(${workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${body}
}`;
}

/**
 * A one-thread-per-element kernel skeleton: `body` sees `i: u32`, the flat
 * element index in [0, count). Returns the WGSL main and the dispatch size.
 * `bound` replaces the baked count in the range check (a WGSL u32 expression
 * such as `arrayLength(&out0)`, for kernels that serve any size).
 */
export function perElement(
  count: number,
  maxPerDim: number,
  body: string,
  workgroupSize = 256,
  bound = `${count}u`,
): { main: string; workgroups: [number, number, number] } {
  const { workgroups, flatId } = flatGrid(Math.ceil(count / workgroupSize), maxPerDim);
  const main = entry(
    workgroupSize,
    `  let i = ${flatId} * ${workgroupSize}u + lid;
  if (i >= ${bound}) { return; }
${body}`,
  );
  return { main, workgroups };
}

/** A readable kernel name: op and output shape, e.g. "add_3x5x7". */
export function kernelName(op: string, shape: number[]): string {
  return `${op}_${shape.length ? shape.join('x') : 'scalar'}`;
}

/** Applies an optional epilogue to an f32 value expression at flat output index `index`. */
export function applyEpilogue(epilogue: Epilogue | undefined, value: string, index: string): string {
  return epilogue ? `epilogue(${value}, ${index})` : value;
}
