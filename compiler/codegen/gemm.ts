// The shared engine of the contraction kernels (matmul.ts, conv.ts). Every
// contraction is described as a batched implicit GEMM
//     Out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]
// whose operands are WGSL index functions into the bound tensors (so a conv's
// im2col matrix is never materialised), and rendered by one of two templates:
//
//  - 'tiled' (GPUs, the portable default): workgroup shared-memory tiles of
//    TM x TN outputs, TK-deep slices of A and B staged with coalesced loads,
//    each invocation accumulating a 4x4 register block from vec4 reads.
//
//  - 'subgroup' (SIMD CPU devices: lavapipe, SwiftShader): a CPU runs one
//    workgroup per thread with the invocations as SIMD lanes, so arithmetic is
//    8-wide but every memory load is a per-lane scalar loop (~8 instructions
//    per lane and component on Mesa 25, bounds checks included), and shared
//    memory is no cheaper than a storage buffer. What pays is loading each
//    value once per subgroup: the lanes of a subgroup load disjoint rows of A
//    cooperatively and hand them to each other with subgroupBroadcast (a
//    register shuffle), each lane loads only its own 4 columns of B, and each
//    lane keeps an RM x 4 register block. Measured on lavapipe (2 cores): a
//    1024^3 matmul runs at ~14 GFLOP/s this way against ~3 for the tiled
//    template and ~2.3 for TF.js's WebGPU backend (bench/).
//    lavapipe compiles shaders with LLVM at first dispatch, and its time grows
//    steeply with the per-lane load/store code, so the template keeps that
//    code small: stores run in a loop, small problems take one k per
//    iteration, and loop trip counts are hidden from LLVM's full unroller.
//
// Problem sizes can be read from a uniform block (ParamBlock, Kernel.params)
// rather than baked into the WGSL, so every problem with the same template,
// tile and structure (transposes, vec4 paths, epilogue, which dimensions need
// bounds checks) shares one pipeline: lavapipe's LLVM spends 0.3-5 s on each
// distinct pipeline at its first dispatch. matmul.ts uses it; conv.ts bakes
// its sizes (see sizes() there). Bounds checks are emitted only
// along dimensions that are not multiples of the tile (a structural variant).

import { type Epilogue, type Kernel, foldWorkgroups } from './kernel.ts';

// ---------------------------------------------------------------------------
// Device target

/** Which kernel family suits the device (plain data: the runtime probes the device, runtime/device.ts contractionTarget). */
export interface ContractionTarget {
  /** 'gpu': shared-memory tiling. 'simd-cpu': subgroup register tiling (needs subgroupSize > 0). */
  kind: 'gpu' | 'simd-cpu';
  /** The device's subgroup size when it has the 'subgroups' feature and one fixed size; else 0. */
  subgroupSize: number;
}

/** What renderers use when the caller does not say: the tiled template, which needs no optional feature. */
export const PORTABLE_TARGET: ContractionTarget = { kind: 'gpu', subgroupSize: 0 };

// ---------------------------------------------------------------------------
// The implicit-GEMM description

/** A tensor bound read-only by the kernel, in node.inputs order. */
export interface GemmInput {
  tensor: number;
  /** WGSL identifier of its storage buffer. */
  name: string;
  numel: number;
}

/**
 * One GEMM operand as an index function. For A the row `r` is m, for B it is n.
 * All arguments and results are u32 WGSL expressions.
 */
export interface GemmOperand {
  /** Name of the GemmInput it reads. */
  input: string;
  /** Flat element index of (b, r, k). Only called with r and k in range. Required unless `load` is given. */
  index?(b: string, r: string, k: string): string;
  /** Optional: false where the element is implicit zero padding (conv borders, skipped strides). */
  valid?(b: string, r: string, k: string): string;
  /**
   * Alternative to index/valid: a complete f32 expression for element (b, r, k),
   * typically a call of a function from GemmSpec.helpers (conv operands decode
   * im2col coordinates and padding there). Vec4 paths need `index`.
   */
  load?(b: string, r: string, k: string): string;
  /** Axis along which 4-runs starting at multiples of 4 are contiguous and 16-byte aligned in memory, if any. */
  vec4?: 'k' | 'r';
  /** Axis that is contiguous in memory (load order of the tiled template, for coalescing). */
  fast: 'k' | 'r';
}

/**
 * The uniform block of a contraction kernel: named u32 values the WGSL reads
 * as `lv_p.<name>`. Fields appear in the order they are first used, so kernels
 * rendered along the same code path get the same struct, whatever the values.
 */
export class ParamBlock {
  private fields = new Map<string, number>();

  /**
   * `baked`: every value is a WGSL constant instead (no uniform block), for
   * kernels whose inner loops run faster specialised than shared (conv.ts).
   */
  constructor(readonly baked = false) {}

  /** The WGSL expression of `value`, registered as field `name` (one name, one value). */
  get(name: string, value: number): string {
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** 32) throw new Error(`internal: param ${name} = ${value} is not a u32`);
    const prev = this.fields.get(name);
    if (prev !== undefined && prev !== value) throw new Error(`internal: param ${name} is both ${prev} and ${value}`);
    if (this.baked) return `${value}u`;
    this.fields.set(name, value);
    return `lv_p.${name}`;
  }

  /**
   * A loop bound, read from the uniform block itself even when the block is
   * baked: WGSL's uniformity analysis needs the uniform (not the private copy)
   * where it bounds a loop with barriers or subgroup operations, and a bound
   * LLVM cannot see keeps it from fully unrolling the loop. Unrolled, a conv's
   * 32-step K loop took lavapipe 121 s to compile; with the bound opaque,
   * 0.65 s.
   */
  loopBound(name: string, value: number): string {
    this.get(name, value);
    this.fields.set(name, value);
    return `lv_params.${name}`;
  }

  /**
   * The struct, its binding and the private copy the code reads (`lv_p`,
   * filled by `copy` at the top of main); call after the kernel body was
   * rendered (rendering registers the fields). The copy matters on lavapipe:
   * read from the uniform block in the inner loop, every use of a size was a
   * memory load per iteration (the conv kernels ran ~1.4x slower); a private
   * copy becomes plain registers.
   */
  declaration(binding: number): { decl: string; copy: string } {
    if (!this.fields.size) return { decl: '', copy: '' };
    const members = [...this.fields.keys()].map((n) => `  ${n}: u32,`).join('\n');
    return {
      decl: `struct LvParams {\n${members}\n}\n@group(0) @binding(${binding}) var<uniform> lv_params: LvParams;\nvar<private> lv_p: LvParams;`,
      copy: '  lv_p = lv_params;\n',
    };
  }

  values(): number[] | undefined {
    return this.fields.size ? [...this.fields.values()] : undefined;
  }
}

export interface GemmSpec {
  /** Kernel name prefix, e.g. "matmul" or "conv2d". */
  op: string;
  /** The problem sizes the operands' index functions read (tiling adds its own). */
  params: ParamBlock;
  batch: number;
  M: number;
  N: number;
  K: number;
  inputs: GemmInput[];
  a: GemmOperand;
  b: GemmOperand;
  /** WGSL functions the operands' load expressions call. */
  helpers?: string;
  /** Flat index into the output tensor of (b, m, n). */
  out(b: string, m: string, n: string): string;
  /**
   * Optional: false where (b, m, n) has no output element (a GEMM whose column
   * range covers a few positions more than the output has, e.g. the phases of
   * a strided conv's input gradient); those results are not stored.
   */
  outValid?(b: string, m: string, n: string): string;
  /** Whether out(b, m, n..n+3) are consecutive and 16-byte aligned when n % 4 == 0 (vec4 stores). */
  outVec4?: boolean;
  outTensor: number;
  outNumel: number;
  /** Floating-point operations of the op (2 per multiply-add of real terms). */
  flops: number;
}

/** A forced template and tile (tests and benchmarks); normally chosen by chooseTile(). */
export type TileConfig =
  | { template: 'tiled'; tm: number; tn: number; tk: number }
  | {
      template: 'subgroup';
      subgroupSize: number;
      rowsPerLane: number;
      colGroups: number;
      subgroupsPerWorkgroup: number;
      /** k per loop iteration: 4 (vec4 loads along k, fastest) or 1 (a quarter of the code: small problems, where LLVM's compile time outweighs the run). */
      kStep?: 1 | 4;
    };

export interface ContractionOptions {
  maxWorkgroupsPerDim: number;
  epilogue?: Epilogue;
  /** The device's kernel family (contractionTarget(device)); PORTABLE_TARGET when absent. */
  target?: ContractionTarget;
  /** Overrides the tile heuristics. */
  tile?: TileConfig;
  /**
   * Allocates a scratch tensor (live across one node's kernels) and returns its
   * id: generators that split K over several kernels need it, and run as one kernel without it.
   */
  scratch?: (elements: number, dtype: 'f32') => number;
  /** Overrides chooseSplitK (tests): the number of K parts, where the generator supports splitting. */
  splitK?: number;
}

// ---------------------------------------------------------------------------
// Tile heuristics

/** Enough workgroups to fill a discrete GPU's SMs/CUs a couple of times over. */
const GPU_MIN_WORKGROUPS = 64;
/** Enough workgroups for a CPU device's threads to balance (lavapipe runs one per core). */
const CPU_MIN_WORKGROUPS = 8;

const cdiv = (a: number, b: number) => Math.ceil(a / b);

/**
 * The subgroup template's register tile before it shrinks to make enough
 * workgroups (chooseTile): rows per lane and 4-column groups per lane.
 */
function subgroupRegisterTile(spec: Pick<GemmSpec, 'batch' | 'M' | 'N' | 'K'>, S: number): { rowsPerLane: number; colGroups: number; kStep: 1 | 4 } {
  const { batch, M, N } = spec;
  // Each B element a lane loads feeds RM = S * rowsPerLane rows and each A
  // element a lane loads feeds 4 * colGroups columns in every lane, so larger
  // register tiles mean fewer of the (expensive, per-lane) loads per
  // multiply-add; the price is spilled accumulators and compile time (LLVM
  // takes 3-6 s for a 64x64 conv tile, ~0.3 s for a small one). Measured on
  // lavapipe (2 cores): 64x64 tiles ran 15-20% faster than 32x32 on the
  // 1024^3 matmul and the 3x3 convs of bench/, which ran ~1.3x faster than 16x32.
  const flops = 2 * batch * M * N * spec.K;
  const big = flops >= 2 ** 30;
  // Below ~64 MFLOP the run takes milliseconds and LLVM's compile a good part
  // of a second: one k per iteration is a quarter of the code.
  const kStep = flops < 2 ** 26 ? 1 : 4;
  return { rowsPerLane: big && M >= 8 * S ? 8 : M >= 4 * S ? 4 : M > S ? 2 : 1, colGroups: big ? 2 : 1, kStep };
}

/** The tiled template's tile edge for a dimension, before it shrinks to make enough workgroups. */
const tiledEdge = (d: number) => (d > 32 ? 64 : d > 16 ? 32 : 16);

/** Fewest k per split-K part: below it the partial sums' stores and the summing pass outweigh the parallelism. */
const SPLIT_K_MIN_CHUNK = 1024;

/**
 * Into how many parts to split a GEMM's K (1: none). A problem with few
 * output tiles and a long reduction (a conv's weight gradient: a few thousand
 * weights summed over every pixel of the batch) either runs few workgroups
 * or, on the subgroup template, shrinks its register tile to make more (each
 * lane's im2col decode then feeds fewer multiply-adds); splitting K keeps the
 * full tile and makes enough workgroups, at the price of storing parts * M * N
 * partial sums and a summing pass (renderPartialSum).
 */
export function chooseSplitK(spec: Pick<GemmSpec, 'batch' | 'M' | 'N' | 'K'>, target: ContractionTarget): number {
  const { batch, M, N, K } = spec;
  let tiles: number;
  let want: number;
  if (target.kind === 'simd-cpu' && target.subgroupSize > 0) {
    const S = target.subgroupSize;
    const { rowsPerLane, colGroups } = subgroupRegisterTile(spec, S);
    tiles = batch * cdiv(M, S * rowsPerLane) * cdiv(N, 4 * S * colGroups);
    // Measured on lavapipe (2 cores), the gain is the full register tile (each
    // decoded im2col element feeds more rows), not more workgroups: the stem's
    // weight gradient ran 1.3x faster in 2 parts, no faster in 4 or 8.
    want = CPU_MIN_WORKGROUPS;
  } else {
    tiles = batch * cdiv(M, tiledEdge(M)) * cdiv(N, tiledEdge(N));
    want = GPU_MIN_WORKGROUPS;
  }
  if (tiles >= want) return 1;
  return Math.max(1, Math.min(cdiv(want, tiles), Math.floor(K / SPLIT_K_MIN_CHUNK)));
}

/** Picks the template and tile for a problem on a target. */
export function chooseTile(spec: Pick<GemmSpec, 'batch' | 'M' | 'N' | 'K'>, target: ContractionTarget): TileConfig {
  const { batch, M, N } = spec;
  if (target.kind === 'simd-cpu' && target.subgroupSize > 0) {
    const S = target.subgroupSize;
    const registerTile = subgroupRegisterTile(spec, S);
    const kStep = registerTile.kStep;
    let { rowsPerLane, colGroups } = registerTile;
    const tiles = () => batch * cdiv(M, S * rowsPerLane) * cdiv(N, 4 * S * colGroups);
    while (tiles() < CPU_MIN_WORKGROUPS && (rowsPerLane > 1 || colGroups > 1)) {
      if (colGroups > 1) colGroups = 1;
      else rowsPerLane >>= 1;
    }
    // Enough workgroups (4 per CPU_MIN_WORKGROUPS) that the device's threads end
    // evenly. The workgroup size is in the WGSL, so it takes one of two values
    // rather than following the tile count (each value is another pipeline).
    const wide = Math.floor(64 / S);
    const subgroupsPerWorkgroup = tiles() >= wide * 4 * CPU_MIN_WORKGROUPS ? wide : 1;
    return { template: 'subgroup', subgroupSize: S, rowsPerLane, colGroups, subgroupsPerWorkgroup, kStep };
  }
  let tm = tiledEdge(M);
  let tn = tiledEdge(N);
  const count = () => batch * cdiv(M, tm) * cdiv(N, tn);
  while (count() < GPU_MIN_WORKGROUPS && (tm > 16 || tn > 16)) {
    if (tm >= tn) tm >>= 1;
    else tn >>= 1;
  }
  return { template: 'tiled', tm, tn, tk: 8 };
}

// ---------------------------------------------------------------------------
// Rendering

/** Renders a GEMM spec as one kernel: bindings are spec.inputs, the epilogue's extras, then the output. */
export function renderGemm(spec: GemmSpec, opts: ContractionOptions): Kernel {
  for (const d of ['batch', 'M', 'N', 'K'] as const)
    if (!Number.isInteger(spec[d]) || spec[d] < 1) throw new Error(`${spec.op}: ${d} must be a positive integer, got ${spec[d]}`);
  const target = opts.target ?? PORTABLE_TARGET;
  // The subgroup template spreads N over the lanes 4 columns at a time; a narrow
  // N with a tall M (a matrix-vector product) runs as its transpose instead.
  if (!opts.tile && target.kind === 'simd-cpu' && spec.N < 4 * target.subgroupSize && spec.M > spec.N) spec = transposed(spec);
  const tile = opts.tile ?? chooseTile(spec, target);
  return tile.template === 'subgroup' ? renderSubgroup(spec, tile, opts) : renderTiled(spec, tile, opts);
}

/**
 * The second pass of a split-K GEMM: out[i] = epilogue(sum over p of
 * partials[p * numel + i]), summed in part order (deterministic, no atomics).
 * Bindings: the partials, the epilogue's extras, the output.
 */
export function renderPartialSum(op: string, partials: number, parts: number, numel: number, outTensor: number, opts: ContractionOptions): Kernel {
  const WG = 64;
  const epilogue = opts.epilogue;
  const ep = epilogue?.render(1);
  const outBinding = 1 + (epilogue?.extra.length ?? 0);
  const workgroups = foldWorkgroups(cdiv(numel, WG), opts.maxWorkgroupsPerDim);
  const wgsl = `@group(0) @binding(0) var<storage, read> lv_parts: array<f32>;
${
  ep
    ? `${ep.decls}
${ep.code}
`
    : ''
}@group(0) @binding(${outBinding}) var<storage, read_write> lv_out: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lv_i = (wid.y * ${u(workgroups[0])} + wid.x) * ${u(WG)} + lid;
  if (lv_i >= ${u(numel)}) { return; }
  var lv_s = 0.0;
  for (var lv_p = 0u; lv_p < ${u(parts)}; lv_p++) { lv_s += lv_parts[lv_p * ${u(numel)} + lv_i]; }
  lv_out[lv_i] = ${ep ? 'epilogue(lv_s, lv_i)' : 'lv_s'};
}
`;
  return {
    name: `${op}_sum${parts}`,
    wgsl,
    entryPoint: 'main',
    bindings: [
      { tensor: partials, access: 'read' },
      ...(epilogue?.extra ?? []).map((tensor) => ({ tensor, access: 'read' as const })),
      { tensor: outTensor, access: 'read_write' },
    ],
    workgroups,
    flops: parts * numel,
  };
}

/** The same product as Out^T = B^T A^T: operands and output dimensions swap roles. */
export function transposed(spec: GemmSpec): GemmSpec {
  const outValid = spec.outValid;
  return {
    ...spec,
    M: spec.N,
    N: spec.M,
    a: spec.b,
    b: spec.a,
    out: (b, m, n) => spec.out(b, n, m),
    outValid: outValid && ((b, m, n) => outValid(b, n, m)),
    outVec4: false,
  };
}

const u = (n: number) => `${n}u`;

/** How each input is declared: vec4 where a template reads it as vec4 (needs numel % 4 == 0). */
class Bindings {
  private vec4 = new Set<string>();
  constructor(private spec: GemmSpec) {}

  useVec4(input: string): boolean {
    const inp = this.spec.inputs.find((i) => i.name === input)!;
    if (inp.numel % 4 !== 0) return false;
    this.vec4.add(input);
    return true;
  }

  /** One f32 element at a flat index expression. */
  elem(input: string, index: string): string {
    return this.vec4.has(input) ? `lv_elem_${input}(${index})` : `${input}[${index}]`;
  }

  /** The aligned vec4 starting at a flat index expression (a multiple of 4). */
  vec(input: string, index: string): string {
    return `${input}[(${index}) >> 2u]`;
  }

  /**
   * Declarations, epilogue code and the Kernel binding list, plus `storeQuad`,
   * the statements that store the vec4 `v` at columns n..n+3 (n a multiple of 4)
   * of row m: one vec4 store when the output rows are contiguous and aligned
   * (spec.outVec4, N % 4 == 0), else four scalar stores. `rowOk` / `colOk(j)`
   * are the bounds conditions the template needs (null: always in bounds).
   */
  finish(epilogue: Epilogue | undefined): {
    decls: string;
    bindings: Kernel['bindings'];
    /** The binding of the params block (after the output). */
    paramsBinding: number;
    storeQuad: (v: string, b: string, m: string, n: string, rowOk: string | null, colOk: (j: number) => string | null) => string;
  } {
    const lines: string[] = [];
    let binding = 0;
    for (const inp of this.spec.inputs) {
      const vec = this.vec4.has(inp.name);
      lines.push(`@group(0) @binding(${binding++}) var<storage, read> ${inp.name}: array<${vec ? 'vec4<f32>' : 'f32'}>;`);
      if (vec) lines.push(`fn lv_elem_${inp.name}(i: u32) -> f32 { return ${inp.name}[i >> 2u][i & 3u]; }`);
    }
    if (this.spec.helpers) lines.push(this.spec.helpers);
    if (epilogue) {
      const { decls, code } = epilogue.render(binding);
      lines.push(decls, code);
      binding += epilogue.extra.length;
    }
    const outVec4 = !!this.spec.outVec4 && !this.spec.outValid && this.spec.N % 4 === 0 && this.spec.outNumel % 4 === 0;
    lines.push(`@group(0) @binding(${binding}) var<storage, read_write> lv_out: array<${outVec4 ? 'vec4<f32>' : 'f32'}>;`);
    const bindings: Kernel['bindings'] = [
      ...this.spec.inputs.map((i) => ({ tensor: i.tensor, access: 'read' as const })),
      ...(epilogue?.extra ?? []).map((tensor) => ({ tensor, access: 'read' as const })),
      { tensor: this.spec.outTensor, access: 'read_write' },
    ];
    const ep = (v: string, i: string) => (epilogue ? `epilogue(${v}, ${i})` : v);
    const guard = (conds: (string | null)[], body: string) => {
      const c = conds.filter(Boolean);
      return c.length ? `if (${c.join(' && ')}) { ${body} }` : body;
    };
    const storeQuad = (v: string, b: string, m: string, n: string, rowOk: string | null, colOk: (j: number) => string | null) => {
      if (outVec4) {
        const value = epilogue ? `vec4<f32>(${[0, 1, 2, 3].map((j) => ep(`lv_v[${j}]`, `lv_o + ${j}u`)).join(', ')})` : 'lv_v';
        return `{ let lv_v = ${v}; let lv_o = ${this.spec.out(b, m, n)}; ${guard([rowOk, colOk(0)], `lv_out[lv_o >> 2u] = ${value};`)} }`;
      }
      return [0, 1, 2, 3]
        .map((j) => {
          const col = `${n} + ${j}u`;
          const exists = this.spec.outValid?.(b, m, col) ?? null;
          return `{ let lv_o = ${this.spec.out(b, m, col)}; ${guard([rowOk, colOk(j), exists], `lv_out[lv_o] = ${ep(`(${v})[${j}]`, 'lv_o')};`)} }`;
        })
        .join('\n    ');
    };
    return { decls: lines.join('\n'), bindings, paramsBinding: binding + 1, storeQuad };
  }
}

/** An operand element with padding validity, out-of-range k read as zero. */
function loadScalar(bind: Bindings, op: GemmOperand, b: string, r: string, k: string, kValid: string | null): string {
  if (op.load) return kValid ? `select(0.0, ${op.load(b, r, k)}, ${kValid})` : op.load(b, r, k);
  const valid = [op.valid?.(b, r, k), kValid].filter(Boolean) as string[];
  const idx = op.index!(b, r, k);
  if (!valid.length) return bind.elem(op.input, idx);
  const cond = valid.map((c) => `(${c})`).join(' && ');
  // The clamped index keeps the (discarded) read in bounds.
  return `select(0.0, ${bind.elem(op.input, `select(0u, ${idx}, ${cond})`)}, ${cond})`;
}

/** Decomposes the flat tile id `t` into (b, tileM, tileN) lets, row-major with N fastest. */
function tileCoords(p: ParamBlock, t: string, tilesM: number, tilesN: number): string {
  const tn = p.get('tilesN', tilesN);
  return `  let lv_tn = ${t} % ${tn};
  let lv_tm = (${t} / ${tn}) % ${p.get('tilesM', tilesM)};
  let lv_b = ${t} / ${p.get('tilesMN', tilesN * tilesM)};`;
}

/** The GEMM's M, N, K as param expressions, and `dim - c` for clamps. */
function dims(spec: GemmSpec) {
  const p = spec.params;
  const M = p.get('M', spec.M);
  const N = p.get('N', spec.N);
  const K = p.get('K', spec.K);
  const less = (d: string, c: number) => `(${d} - ${u(c)})`;
  return { M, N, K, less };
}

/** Where main's body starts in a template (assemble puts the params copy there). */
const MAIN_START = '  // main\n';

/** The kernel's WGSL: `head` (enable directives), the params block, then the body. */
function assemble(spec: GemmSpec, head: string, body: string, paramsBinding: number): { wgsl: string; params?: number[] } {
  const { decl, copy } = spec.params.declaration(paramsBinding);
  return { wgsl: `${head}${decl ? decl + '\n' : ''}${body.replace(MAIN_START, copy)}`, params: spec.params.values() };
}

// ----- tiled (GPU) template ------------------------------------------------

function renderTiled(spec: GemmSpec, tile: Extract<TileConfig, { template: 'tiled' }>, opts: ContractionOptions): Kernel {
  const { batch, a, b } = spec;
  const { tm: TM, tn: TN, tk: TK } = tile;
  if (TM % 4 || TN % 4 || TK < 1) throw new Error(`${spec.op}: tiled template cannot use tile ${TM}x${TN}x${TK}`);
  const P = spec.params;
  const { M, N, K, less } = dims(spec);
  const threads = (TM / 4) * (TN / 4);
  const tilesM = cdiv(spec.M, TM);
  const tilesN = cdiv(spec.N, TN);
  const count = batch * tilesM * tilesN;
  const workgroups = foldWorkgroups(count, opts.maxWorkgroupsPerDim);
  const flat = workgroups[1] === 1 ? 'wid.x' : `(wid.y * ${u(workgroups[0])} + wid.x)`;
  const bind = new Bindings(spec);
  const kEdge = spec.K % TK !== 0;

  // Cooperative staging of one operand's TK x T slice into shared memory (stored
  // k-major, vec4 over r). Consecutive invocations take consecutive elements
  // along the operand's contiguous axis, so global reads coalesce. Written as
  // loops (GPU compilers unroll them; lavapipe's LLVM compiles them faster).
  const stage = (op: GemmOperand, T: number, dimR: number, dimRExpr: string, base: string, shared: string) => {
    // Each item is 4 consecutive r at one k, stored as one vec4 (no dynamic
    // component writes into shared memory).
    const items = (T * TK) / 4;
    const per = cdiv(items, threads);
    const f = `(lid + lv_e * ${u(threads)})`;
    const [r4, kk] = op.fast === 'k' ? [`${f} / ${u(TK)}`, `${f} % ${u(TK)}`] : [`${f} % ${u(T / 4)}`, `${f} / ${u(T / 4)}`];
    const rEdge = dimR % T !== 0;
    const k = kEdge ? `min(lv_k, ${less(K, 1)})` : 'lv_k';
    let item: string;
    if (op.vec4 === 'r' && op.index && !op.valid && dimR % 4 === 0 && bind.useVec4(op.input)) {
      // The 4 r are contiguous and aligned: one 16-byte load (all in or all out of range).
      const conds = [rEdge ? `lv_r < ${dimRExpr}` : '', kEdge ? `lv_k < ${K}` : ''].filter(Boolean);
      const v = bind.vec(op.input, op.index('lv_b', rEdge ? `min(lv_r, ${less(dimRExpr, 4)})` : 'lv_r', k));
      item = conds.length ? `select(vec4<f32>(0.0), ${v}, ${conds.join(' && ')})` : v;
    } else {
      const elems = [0, 1, 2, 3].map((j) => {
        const conds: string[] = [];
        if (rEdge) conds.push(`lv_r + ${u(j)} < ${dimRExpr}`);
        if (kEdge) conds.push(`lv_k < ${K}`);
        const r = rEdge ? `min(lv_r + ${u(j)}, ${less(dimRExpr, 1)})` : `lv_r + ${u(j)}`;
        const v = loadScalar(bind, op, 'lv_b', r, k, null);
        return conds.length ? `select(0.0, ${v}, ${conds.join(' && ')})` : v;
      });
      item = `vec4<f32>(${elems.join(', ')})`;
    }
    const loop = per === 1 ? ['    {', '      let lv_e = 0u;'] : [`    for (var lv_e = 0u; lv_e < ${u(per)}; lv_e++) {`];
    const body = `let lv_r4 = ${r4}; let lv_kk = ${kk};
      let lv_r = ${base} + lv_r4 * 4u; let lv_k = lv_k0 + lv_kk;
      ${shared}[lv_kk * ${u(T / 4)} + lv_r4] = ${item};`;
    return `${loop.join('\n')}
      ${items % threads ? `if (${f} < ${u(items)}) {\n      ${body}\n      }` : body}
    }`;
  };

  // Staging code first: it decides which inputs are read as vec4, which the declarations need.
  const stageA = stage(a, TM, spec.M, M, 'lv_m0', 'lv_As');
  const stageB = stage(b, TN, spec.N, N, 'lv_n0', 'lv_Bs');
  const { decls, bindings, paramsBinding, storeQuad } = bind.finish(opts.epilogue);
  const stores = [0, 1, 2, 3].map((i) =>
    storeQuad(`lv_acc${i}`, 'lv_b', `lv_row${i}`, 'lv_col', spec.M % TM ? `lv_row${i} < ${M}` : null, (j) => (spec.N % TN ? `lv_col + ${u(j)} < ${N}` : null)),
  );

  const body = `${decls}
var<workgroup> lv_As: array<vec4<f32>, ${(TK * TM) / 4}>;
var<workgroup> lv_Bs: array<vec4<f32>, ${(TK * TN) / 4}>;

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${MAIN_START}  let lv_t = min(${flat}, ${P.get('lastTile', count - 1)});
${tileCoords(P, 'lv_t', tilesM, tilesN)}
  let lv_m0 = lv_tm * ${u(TM)};
  let lv_n0 = lv_tn * ${u(TN)};
  let lv_tx = lid % ${u(TN / 4)};
  let lv_ty = lid / ${u(TN / 4)};
  var lv_acc0 = vec4<f32>(0.0);
  var lv_acc1 = vec4<f32>(0.0);
  var lv_acc2 = vec4<f32>(0.0);
  var lv_acc3 = vec4<f32>(0.0);
  for (var lv_k0 = 0u; lv_k0 < ${P.loopBound('K', spec.K)}; lv_k0 += ${u(TK)}) {
${stageA}
${stageB}
    workgroupBarrier();
    for (var lv_kk = 0u; lv_kk < ${u(TK)}; lv_kk++) {
      let lv_a = lv_As[lv_kk * ${u(TM / 4)} + lv_ty];
      let lv_bv = lv_Bs[lv_kk * ${u(TN / 4)} + lv_tx];
      lv_acc0 = fma(vec4<f32>(lv_a.x), lv_bv, lv_acc0);
      lv_acc1 = fma(vec4<f32>(lv_a.y), lv_bv, lv_acc1);
      lv_acc2 = fma(vec4<f32>(lv_a.z), lv_bv, lv_acc2);
      lv_acc3 = fma(vec4<f32>(lv_a.w), lv_bv, lv_acc3);
    }
    workgroupBarrier();
  }
  let lv_col = lv_n0 + lv_tx * 4u;
${[0, 1, 2, 3].map((i) => `  let lv_row${i} = lv_m0 + lv_ty * 4u + ${u(i)};\n  ${stores[i]}`).join('\n')}
}
`;
  const { wgsl, params } = assemble(spec, '', body, paramsBinding);
  return { name: `${spec.op}_tiled${TM}x${TN}x${TK}`, wgsl, entryPoint: 'main', bindings, workgroups, flops: spec.flops, params };
}

// ----- subgroup (SIMD CPU) template ----------------------------------------

/** How the subgroup template loads A's rows x 4 k and B's 4 k x 4 columns (see the header). */
function loadModes(spec: GemmSpec, rowsPerLane: number, kStep: 1 | 4): { aMode: 'vecK' | 'vecR' | 'scalar'; bMode: 'vecK' | 'vecR' | 'scalar' } {
  const { a, b } = spec;
  const ragged = spec.K % 4 !== 0;
  const vec4Ok = (op: GemmOperand) => !!op.index && !op.valid && spec.inputs.find((i) => i.name === op.input)!.numel % 4 === 0;
  const aMode =
    kStep === 1
      ? 'scalar'
      : a.vec4 === 'k' && vec4Ok(a) && !ragged
        ? 'vecK'
        : a.vec4 === 'r' && vec4Ok(a) && rowsPerLane === 4 && spec.M % 4 === 0
          ? 'vecR'
          : 'scalar';
  const bMode = b.vec4 === 'r' && vec4Ok(b) && spec.N % 4 === 0 ? 'vecR' : kStep === 4 && b.vec4 === 'k' && vec4Ok(b) && !ragged ? 'vecK' : 'scalar';
  return { aMode, bMode };
}

function renderSubgroup(spec: GemmSpec, tile: Extract<TileConfig, { template: 'subgroup' }>, opts: ContractionOptions): Kernel {
  const { batch, a, b } = spec;
  const S = tile.subgroupSize;
  const RB = tile.rowsPerLane;
  const CG = tile.colGroups;
  const G = tile.subgroupsPerWorkgroup;
  if (!(S >= 1 && (S & (S - 1)) === 0) || RB < 1 || CG < 1 || G < 1 || (tile.kStep !== undefined && tile.kStep !== 1 && tile.kStep !== 4))
    throw new Error(`${spec.op}: bad subgroup tile ${JSON.stringify(tile)}`);
  const P = spec.params;
  const { M, N, K, less } = dims(spec);
  const RM = S * RB; // rows per subgroup tile
  const CN = 4 * S * CG; // columns per subgroup tile
  const tilesM = cdiv(spec.M, RM);
  const tilesN = cdiv(spec.N, CN);
  const count = batch * tilesM * tilesN;
  const workgroups = foldWorkgroups(cdiv(count, G), opts.maxWorkgroupsPerDim);
  const flat = workgroups[1] === 1 ? 'wid.x' : `(wid.y * ${u(workgroups[0])} + wid.x)`;
  const bind = new Bindings(spec);
  // K runs in steps of 4; a ragged last step reads clamped k and zero-fills k >= K
  // (both operands, so an Inf never meets a 0) rather than having its own copy
  // of the step, which would double the code LLVM compiles.
  const kStep = tile.kStep ?? 4;
  const ragged = spec.K % 4 !== 0;
  const rowEdge = spec.M % RM !== 0;
  const colEdge = spec.N % CN !== 0;

  // How A's RB rows x 4 k and B's 4 k x 4 columns reach each lane (see header).
  const { aMode, bMode } = loadModes(spec, RB, kStep);
  if (aMode !== 'scalar') bind.useVec4(a.input);
  if (bMode !== 'scalar') bind.useVec4(b.input);
  const { decls, bindings, paramsBinding, storeQuad } = bind.finish(opts.epilogue);

  const rowOf = (r: number) => (rowEdge ? `min(lv_mrow + ${u(r)}, ${less(M, 1)})` : `lv_mrow + ${u(r)}`);
  const colOf = (c: number, j: number) => (colEdge ? `min(lv_ncol${c} + ${u(j)}, ${less(N, 1)})` : `lv_ncol${c} + ${u(j)}`);
  const kOf = (t: number) => (ragged ? `min(lv_k0 + ${u(t)}, ${less(K, 1)})` : `lv_k0 + ${u(t)}`);
  const kValid = (t: number) => (ragged ? `lv_k0 + ${u(t)} < ${K}` : null);
  /** A vec4 loaded at k = lv_k0 + t, zeroed past K. */
  const vecAtK = (load: string, t: number) => (ragged ? `select(vec4<f32>(0.0), ${load}, ${kValid(t)})` : load);

  // One step of 4 k: load, broadcast, multiply-add.
  const step = () => {
    const L: string[] = [];
    if (aMode === 'vecK') for (let r = 0; r < RB; r++) L.push(`let lv_a${r} = ${bind.vec(a.input, a.index!('lv_b', rowOf(r), 'lv_k0'))};`);
    else if (aMode === 'vecR') {
      // 4 consecutive rows per lane, one vec4 per k; transposing is register renaming.
      const base = rowEdge ? `min(lv_mrow, ${less(M, 4)})` : 'lv_mrow';
      for (let t = 0; t < 4; t++) L.push(`let lv_av${t} = ${vecAtK(bind.vec(a.input, a.index!('lv_b', base, kOf(t))), t)};`);
      for (let r = 0; r < 4; r++) L.push(`let lv_a${r} = vec4<f32>(lv_av0[${r}], lv_av1[${r}], lv_av2[${r}], lv_av3[${r}]);`);
    } else
      for (let r = 0; r < RB; r++) {
        const e = [0, 1, 2, 3].map((t) => loadScalar(bind, a, 'lv_b', rowOf(r), kOf(t), kValid(t)));
        L.push(`let lv_a${r} = vec4<f32>(${e.join(', ')});`);
      }
    for (let c = 0; c < CG; c++) {
      if (bMode === 'vecR') {
        const base = colEdge ? `min(lv_ncol${c}, ${less(N, 4)})` : `lv_ncol${c}`;
        for (let t = 0; t < 4; t++) L.push(`let lv_b${c}_${t} = ${vecAtK(bind.vec(b.input, b.index!('lv_b', base, kOf(t))), t)};`);
      } else if (bMode === 'vecK') {
        for (let j = 0; j < 4; j++) L.push(`let lv_bk${c}_${j} = ${bind.vec(b.input, b.index!('lv_b', colOf(c, j), 'lv_k0'))};`);
        for (let t = 0; t < 4; t++) L.push(`let lv_b${c}_${t} = vec4<f32>(lv_bk${c}_0[${t}], lv_bk${c}_1[${t}], lv_bk${c}_2[${t}], lv_bk${c}_3[${t}]);`);
      } else
        for (let t = 0; t < 4; t++) {
          const e = [0, 1, 2, 3].map((j) => loadScalar(bind, b, 'lv_b', colOf(c, j), kOf(t), kValid(t)));
          L.push(`let lv_b${c}_${t} = vec4<f32>(${e.join(', ')});`);
        }
    }
    for (let i = 0; i < RM; i++) {
      L.push(`{ let lv_x = subgroupBroadcast(lv_a${i % RB}, ${u(Math.floor(i / RB))});`);
      for (let c = 0; c < CG; c++)
        L.push(
          `  lv_acc${i}_${c} = fma(vec4<f32>(lv_x.x), lv_b${c}_0, fma(vec4<f32>(lv_x.y), lv_b${c}_1, fma(vec4<f32>(lv_x.z), lv_b${c}_2, fma(vec4<f32>(lv_x.w), lv_b${c}_3, lv_acc${i}_${c}))));`,
        );
      L.push('}');
    }
    return L.map((l) => '    ' + l).join('\n');
  };

  // One k per iteration (kStep 1): scalar A, B as one vec4 or 4 scalars.
  const step1 = () => {
    const L: string[] = [];
    for (let r = 0; r < RB; r++) L.push(`let lv_a${r} = ${loadScalar(bind, a, 'lv_b', rowOf(r), 'lv_k0', null)};`);
    for (let c = 0; c < CG; c++) {
      if (bMode === 'vecR') {
        const base = colEdge ? `min(lv_ncol${c}, ${less(N, 4)})` : `lv_ncol${c}`;
        L.push(`let lv_b${c} = ${bind.vec(b.input, b.index!('lv_b', base, 'lv_k0'))};`);
      } else L.push(`let lv_b${c} = vec4<f32>(${[0, 1, 2, 3].map((j) => loadScalar(bind, b, 'lv_b', colOf(c, j), 'lv_k0', null)).join(', ')});`);
    }
    for (let i = 0; i < RM; i++) {
      L.push(`{ let lv_x = vec4<f32>(subgroupBroadcast(lv_a${i % RB}, ${u(Math.floor(i / RB))}));`);
      for (let c = 0; c < CG; c++) L.push(`  lv_acc${i}_${c} = fma(lv_x, lv_b${c}, lv_acc${i}_${c});`);
      L.push('}');
    }
    return L.map((l) => '    ' + l).join('\n');
  };

  const accs: string[] = [];
  const gather: string[] = [];
  for (let i = 0; i < RM; i++)
    for (let c = 0; c < CG; c++) {
      accs.push(`  var lv_acc${i}_${c} = vec4<f32>(0.0);`);
      gather.push(`  lv_res[${i * CG + c}u] = lv_acc${i}_${c};`);
    }
  // The tile coordinates and the loop first: they register the params in a fixed order.
  const prologue = `  let lv_t = min(${flat} * ${u(G)} + lid / ${u(S)}, ${P.get('lastTile', count - 1)});
${tileCoords(P, 'lv_t', tilesM, tilesN)}`;
  // The loop's end comes from the params, so LLVM cannot see the trip count
  // (fully unrolling a small-K loop multiplied lavapipe's compile time).
  const loop =
    kStep === 4
      ? `  for (var lv_k0 = 0u; lv_k0 < ${P.loopBound('kEnd4', cdiv(spec.K, 4) * 4)}; lv_k0 += 4u) {\n${step()}\n  }`
      : `  for (var lv_k0 = 0u; lv_k0 < ${P.loopBound('K', spec.K)}; lv_k0++) {\n${step1()}\n  }`;
  // Stores run in a loop over rows: unrolled, the per-lane store code of every
  // output (and the epilogue) made LLVM spend most of its compile time there
  // (lavapipe: 2.4 s -> 0.4 s for a 32x32 tile).
  const stores: string[] = [];
  for (let c = 0; c < CG; c++)
    stores.push(
      '    ' +
        storeQuad(`(lv_res[lv_i * ${u(CG)} + ${u(c)}] + vec4<f32>(lv_poison))`, 'lv_b', 'lv_m', `lv_ncol${c}`, rowEdge ? `lv_m < ${M}` : null, (j) =>
          colEdge ? `lv_ncol${c} + ${u(j)} < ${N}` : null,
        ),
    );

  const body = `${decls}
// NaN bits in a private variable: WGSL const-evaluation rejects NaN literals.
var<private> lv_nan_bits: u32 = 0x7fc00000u;

@compute @workgroup_size(${S * G})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lv_lane: u32, @builtin(subgroup_size) lv_sgsize: u32) {
${MAIN_START}  // The kernel was generated for subgroups of exactly ${S} consecutive invocations;
  // on any other layout the results would be wrong, so poison them instead.
  let lv_poison = select(0.0, bitcast<f32>(lv_nan_bits), lv_sgsize != ${u(S)} || lv_lane != lid % ${u(S)});
  // Surplus subgroups of the last workgroup redo the last tile (same values, same places).
${prologue}
  let lv_m0 = lv_tm * ${u(RM)};
  let lv_mrow = lv_m0 + lv_lane * ${u(RB)};
${Array.from({ length: CG }, (_, c) => `  let lv_ncol${c} = lv_tn * ${u(CN)} + (${u(c * S)} + lv_lane) * 4u;`).join('\n')}
${accs.join('\n')}
${loop}
  var lv_res: array<vec4<f32>, ${RM * CG}>;
${gather.join('\n')}
  for (var lv_i = 0u; lv_i < ${u(RM)}; lv_i++) {
    let lv_m = lv_m0 + lv_i;
${stores.join('\n')}
  }
}
`;
  const { wgsl, params } = assemble(spec, 'enable subgroups;\n', body, paramsBinding);
  return {
    name: `${spec.op}_sg${S}_${RM}x${CN}${kStep === 1 ? 'x1' : ''}_${kStep === 1 ? 'scalar' : aMode}_${bMode}`,
    wgsl,
    entryPoint: 'main',
    bindings,
    workgroups,
    flops: spec.flops,
    params,
  };
}
