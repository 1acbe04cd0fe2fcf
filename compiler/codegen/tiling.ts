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
//    1024^3 matmul runs at ~17 GFLOP/s this way against ~3.6 for the tiled
//    template and ~2.9 for TF.js's WebGPU backend.
//
// Shapes are WGSL constants; bounds checks are emitted only along dimensions
// that are not multiples of the tile.

import { type Epilogue, type Kernel, foldWorkgroups } from './kernel.ts';

// ---------------------------------------------------------------------------
// Device target

/** Which kernel family suits the device. */
export interface ContractionTarget {
  /** 'gpu': shared-memory tiling. 'simd-cpu': subgroup register tiling (needs subgroupSize > 0). */
  kind: 'gpu' | 'simd-cpu';
  /** The device's subgroup size when it has the 'subgroups' feature and one fixed size; else 0. */
  subgroupSize: number;
}

/** What renderers use when the caller does not say: the tiled template, which needs no optional feature. */
export const PORTABLE_TARGET: ContractionTarget = { kind: 'gpu', subgroupSize: 0 };

/** The adapter facts contractionTarget reads (a LovtDevice satisfies this). */
export interface TargetProbe {
  features: Set<string>;
  adapter: { info?: unknown };
  description?: string;
}

/**
 * The target for an opened device: CPU-emulated adapters (lavapipe/llvmpipe,
 * SwiftShader, WARP) with a fixed subgroup size get the subgroup template,
 * everything else the tiled one.
 */
export function contractionTarget(dev: TargetProbe): ContractionTarget {
  const info = (dev.adapter.info ?? {}) as Record<string, unknown>;
  const min = Number(info.subgroupMinSize ?? 0);
  const max = Number(info.subgroupMaxSize ?? 0);
  const subgroupSize = dev.features.has('subgroups') && min > 0 && min === max && (min & (min - 1)) === 0 ? min : 0;
  const text = [info.architecture, info.device, info.description, info.vendor, dev.description].map((s) => String(s ?? '')).join(' ');
  const cpu = info.isFallbackAdapter === true || /software|llvmpipe|lavapipe|swiftshader|warp/i.test(text);
  return { kind: cpu && subgroupSize >= 4 ? 'simd-cpu' : 'gpu', subgroupSize };
}

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

export interface GemmSpec {
  /** Kernel name prefix, e.g. "matmul" or "conv2d". */
  op: string;
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
  outTensor: number;
  /** Floating-point operations of the op (2 per multiply-add of real terms). */
  flops: number;
}

/** A forced template and tile (tests and benchmarks); normally chosen by chooseTile(). */
export type TileConfig =
  | { template: 'tiled'; tm: number; tn: number; tk: number }
  | { template: 'subgroup'; subgroupSize: number; rowsPerLane: number; colGroups: number; subgroupsPerWorkgroup: number };

export interface ContractionOptions {
  maxWorkgroupsPerDim: number;
  epilogue?: Epilogue;
  /** The device's kernel family (contractionTarget(device)); PORTABLE_TARGET when absent. */
  target?: ContractionTarget;
  /** Overrides the tile heuristics. */
  tile?: TileConfig;
}

// ---------------------------------------------------------------------------
// Tile heuristics

/** Enough workgroups to fill a discrete GPU's SMs/CUs a couple of times over. */
const GPU_MIN_WORKGROUPS = 64;
/** Enough workgroups for a CPU device's threads to balance (lavapipe runs one per core). */
const CPU_MIN_WORKGROUPS = 8;

const cdiv = (a: number, b: number) => Math.ceil(a / b);

/** Picks the template and tile for a problem on a target. */
export function chooseTile(spec: Pick<GemmSpec, 'batch' | 'M' | 'N' | 'K' | 'a'>, target: ContractionTarget): TileConfig {
  const { batch, M, N } = spec;
  if (target.kind === 'simd-cpu' && target.subgroupSize > 0) {
    const S = target.subgroupSize;
    // More rows per lane amortise each lane's B loads (the dominant cost, above
    // all for a conv's decoded im2col taps) over more multiply-adds; beyond 4
    // the spilled accumulators eat the gain (lavapipe, 2 cores: RM = 32 ran
    // ~1.2-1.5x faster than 16 on the 3x3 convs, matmul unchanged).
    let rowsPerLane = M >= 4 * S ? 4 : M > S ? 2 : 1;
    const tiles = (rpl: number) => batch * cdiv(M, S * rpl) * cdiv(N, 4 * S);
    while (rowsPerLane > 1 && tiles(rowsPerLane) < CPU_MIN_WORKGROUPS * 2) rowsPerLane >>= 1;
    const n = tiles(rowsPerLane);
    const subgroupsPerWorkgroup = Math.max(1, Math.min(Math.floor(64 / S), Math.floor(n / CPU_MIN_WORKGROUPS)));
    return { template: 'subgroup', subgroupSize: S, rowsPerLane, colGroups: 1, subgroupsPerWorkgroup };
  }
  const fit = (d: number) => (d > 32 ? 64 : d > 16 ? 32 : 16);
  let tm = fit(M);
  let tn = fit(N);
  const count = () => batch * cdiv(M, tm) * cdiv(N, tn);
  while (count() < GPU_MIN_WORKGROUPS && (tm > 16 || tn > 16)) {
    if (tm >= tn) tm >>= 1;
    else tn >>= 1;
  }
  return { template: 'tiled', tm, tn, tk: 16 };
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

/** The same product as Out^T = B^T A^T: operands and output dimensions swap roles. */
export function transposed(spec: GemmSpec): GemmSpec {
  return { ...spec, M: spec.N, N: spec.M, a: spec.b, b: spec.a, out: (b, m, n) => spec.out(b, n, m) };
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

  isVec4(input: string): boolean {
    return this.vec4.has(input);
  }

  /** One f32 element at a flat index expression. */
  elem(input: string, index: string): string {
    return this.vec4.has(input) ? `lv_elem_${input}(${index})` : `${input}[${index}]`;
  }

  /** The aligned vec4 starting at a flat index expression (a multiple of 4). */
  vec(input: string, index: string): string {
    return `${input}[(${index}) >> 2u]`;
  }

  /** Declarations, epilogue code and the Kernel binding list. */
  finish(epilogue: Epilogue | undefined): { decls: string; bindings: Kernel['bindings']; store: (value: string, index: string) => string } {
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
    lines.push(`@group(0) @binding(${binding}) var<storage, read_write> lv_out: array<f32>;`);
    const bindings: Kernel['bindings'] = [
      ...this.spec.inputs.map((i) => ({ tensor: i.tensor, access: 'read' as const })),
      ...(epilogue?.extra ?? []).map((tensor) => ({ tensor, access: 'read' as const })),
      { tensor: this.spec.outTensor, access: 'read_write' },
    ];
    const store = (value: string, index: string) => `lv_out[${index}] = ${epilogue ? `epilogue(${value}, ${index})` : value};`;
    return { decls: lines.join('\n'), bindings, store };
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
function tileCoords(t: string, tilesM: number, tilesN: number): string {
  return `  let lv_tn = ${t} % ${u(tilesN)};
  let lv_tm = (${t} / ${u(tilesN)}) % ${u(tilesM)};
  let lv_b = ${t} / ${u(tilesN * tilesM)};`;
}

// ----- tiled (GPU) template ------------------------------------------------

function renderTiled(spec: GemmSpec, tile: Extract<TileConfig, { template: 'tiled' }>, opts: ContractionOptions): Kernel {
  const { batch, M, N, K, a, b } = spec;
  const { tm: TM, tn: TN, tk: TK } = tile;
  if (TM % 4 || TN % 4 || (TM * TK) % ((TM * TN) / 16) || (TN * TK) % ((TM * TN) / 16))
    throw new Error(`${spec.op}: tiled template cannot use tile ${TM}x${TN}x${TK}`);
  const threads = (TM / 4) * (TN / 4);
  const tilesM = cdiv(M, TM);
  const tilesN = cdiv(N, TN);
  const count = batch * tilesM * tilesN;
  const workgroups = foldWorkgroups(count, opts.maxWorkgroupsPerDim);
  const flat = workgroups[1] === 1 ? 'wid.x' : `(wid.y * ${u(workgroups[0])} + wid.x)`;
  const bind = new Bindings(spec);
  const { decls, bindings, store } = bind.finish(opts.epilogue);
  const kEdge = K % TK !== 0;

  // Cooperative staging of one operand's TK x T slice into shared memory (stored k-major, vec4 over r).
  const stage = (op: GemmOperand, T: number, dimR: number, base: string, shared: string) => {
    const per = (T * TK) / threads;
    const lines: string[] = [];
    for (let e = 0; e < per; e++) {
      const f = `(lid + ${u(e * threads)})`;
      const [rr, kk] = op.fast === 'k' ? [`${f} / ${u(TK)}`, `${f} % ${u(TK)}`] : [`${f} % ${u(T)}`, `${f} / ${u(T)}`];
      const rEdge = dimR % T !== 0;
      const conds: string[] = [];
      if (rEdge) conds.push(`lv_r < ${u(dimR)}`);
      if (kEdge) conds.push(`lv_k < ${u(K)}`);
      const r = rEdge ? `min(lv_r, ${u(dimR - 1)})` : 'lv_r';
      const k = kEdge ? `min(lv_k, ${u(K - 1)})` : 'lv_k';
      let v = loadScalar(bind, op, 'lv_b', r, k, null);
      if (conds.length) v = `select(0.0, ${v}, ${conds.join(' && ')})`;
      lines.push(`    {
      let lv_rr = ${rr}; let lv_kk = ${kk};
      let lv_r = ${base} + lv_rr; let lv_k = lv_k0 + lv_kk;
      ${shared}[(lv_kk * ${u(T)} + lv_rr) >> 2u][lv_rr & 3u] = ${v};
    }`);
    }
    return lines.join('\n');
  };

  const stores: string[] = [];
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 4; j++) {
      const conds = [M % TM ? `lv_row${i} < ${u(M)}` : '', N % TN ? `lv_col${j} < ${u(N)}` : ''].filter(Boolean);
      const s = store(`lv_acc${i}[${j}]`, spec.out('lv_b', `lv_row${i}`, `lv_col${j}`));
      stores.push(conds.length ? `  if (${conds.join(' && ')}) { ${s} }` : `  ${s}`);
    }

  const wgsl = `${decls}
var<workgroup> lv_As: array<vec4<f32>, ${(TK * TM) / 4}>;
var<workgroup> lv_Bs: array<vec4<f32>, ${(TK * TN) / 4}>;

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lv_t = min(${flat}, ${u(count - 1)});
${tileCoords('lv_t', tilesM, tilesN)}
  let lv_m0 = lv_tm * ${u(TM)};
  let lv_n0 = lv_tn * ${u(TN)};
  let lv_tx = lid % ${u(TN / 4)};
  let lv_ty = lid / ${u(TN / 4)};
  var lv_acc0 = vec4<f32>(0.0);
  var lv_acc1 = vec4<f32>(0.0);
  var lv_acc2 = vec4<f32>(0.0);
  var lv_acc3 = vec4<f32>(0.0);
  for (var lv_k0 = 0u; lv_k0 < ${u(K)}; lv_k0 += ${u(TK)}) {
${stage(a, TM, M, 'lv_m0', 'lv_As')}
${stage(b, TN, N, 'lv_n0', 'lv_Bs')}
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
${[0, 1, 2, 3].map((i) => `  let lv_row${i} = lv_m0 + lv_ty * 4u + ${u(i)};`).join('\n')}
${[0, 1, 2, 3].map((j) => `  let lv_col${j} = lv_n0 + lv_tx * 4u + ${u(j)};`).join('\n')}
${stores.join('\n')}
}
`;
  return { name: `${spec.op}_tiled${TM}x${TN}x${TK}`, wgsl, entryPoint: 'main', bindings, workgroups, flops: spec.flops };
}

// ----- subgroup (SIMD CPU) template ----------------------------------------

function renderSubgroup(spec: GemmSpec, tile: Extract<TileConfig, { template: 'subgroup' }>, opts: ContractionOptions): Kernel {
  const { batch, M, N, K, a, b } = spec;
  const S = tile.subgroupSize;
  const RB = tile.rowsPerLane;
  const CG = tile.colGroups;
  const G = tile.subgroupsPerWorkgroup;
  if (!(S >= 1 && (S & (S - 1)) === 0) || RB < 1 || CG < 1 || G < 1) throw new Error(`${spec.op}: bad subgroup tile ${JSON.stringify(tile)}`);
  const RM = S * RB; // rows per subgroup tile
  const CN = 4 * S * CG; // columns per subgroup tile
  const tilesM = cdiv(M, RM);
  const tilesN = cdiv(N, CN);
  const count = batch * tilesM * tilesN;
  const workgroups = foldWorkgroups(cdiv(count, G), opts.maxWorkgroupsPerDim);
  const flat = workgroups[1] === 1 ? 'wid.x' : `(wid.y * ${u(workgroups[0])} + wid.x)`;
  const bind = new Bindings(spec);
  const K4 = K - (K % 4);

  // How A's RB rows x 4 k and B's 4 k x 4 columns reach each lane (see header).
  const aMode = a.vec4 === 'k' && a.index && !a.valid && K4 > 0 && bind.useVec4(a.input) ? 'vecK'
    : a.vec4 === 'r' && a.index && !a.valid && RB === 4 && M % 4 === 0 && K4 > 0 && bind.useVec4(a.input) ? 'vecR'
    : 'scalar';
  const bMode = b.vec4 === 'r' && b.index && !b.valid && N % 4 === 0 && K4 > 0 && bind.useVec4(b.input) ? 'vecR'
    : b.vec4 === 'k' && b.index && !b.valid && K4 > 0 && bind.useVec4(b.input) ? 'vecK'
    : 'scalar';
  const { decls, bindings, store } = bind.finish(opts.epilogue);

  const rowOf = (r: number) => (M % RM ? `min(lv_mrow + ${u(r)}, ${u(M - 1)})` : `lv_mrow + ${u(r)}`);
  const colOf = (c: number, j: number) => (N % CN ? `min(lv_ncol${c} + ${u(j)}, ${u(N - 1)})` : `lv_ncol${c} + ${u(j)}`);
  const kOf = (t: number, tail: boolean) => (tail ? `min(lv_k0 + ${u(t)}, ${u(K - 1)})` : `lv_k0 + ${u(t)}`);
  const kValid = (t: number, tail: boolean) => (tail ? `lv_k0 + ${u(t)} < ${u(K)}` : null);

  // One k-step of 4: load, broadcast, multiply-add. `tail` zero-fills k >= K.
  const step = (tail: boolean) => {
    const L: string[] = [];
    const vecOK = !tail;
    for (let r = 0; r < RB; r++) {
      if (aMode === 'vecK' && vecOK) L.push(`let lv_a${r} = ${bind.vec(a.input, a.index!('lv_b', rowOf(r), 'lv_k0'))};`);
      else if (!(aMode === 'vecR' && vecOK)) {
        const e = [0, 1, 2, 3].map((t) => loadScalar(bind, a, 'lv_b', rowOf(r), kOf(t, tail), kValid(t, tail)));
        L.push(`let lv_a${r} = vec4<f32>(${e.join(', ')});`);
      }
    }
    if (aMode === 'vecR' && vecOK) {
      // 4 consecutive rows per lane, one vec4 per k; transposing is register renaming.
      const base = M % RM ? `min(lv_mrow, ${u(M - 4)})` : 'lv_mrow';
      for (let t = 0; t < 4; t++) L.push(`let lv_av${t} = ${bind.vec(a.input, a.index!('lv_b', base, kOf(t, false)))};`);
      for (let r = 0; r < 4; r++) L.push(`let lv_a${r} = vec4<f32>(lv_av0[${r}], lv_av1[${r}], lv_av2[${r}], lv_av3[${r}]);`);
    }
    for (let c = 0; c < CG; c++) {
      if (bMode === 'vecR' && vecOK) {
        const base = N % CN ? `min(lv_ncol${c}, ${u(N - 4)})` : `lv_ncol${c}`;
        for (let t = 0; t < 4; t++) L.push(`let lv_b${c}_${t} = ${bind.vec(b.input, b.index!('lv_b', base, kOf(t, false)))};`);
      } else if (bMode === 'vecK' && vecOK) {
        for (let j = 0; j < 4; j++) L.push(`let lv_bk${c}_${j} = ${bind.vec(b.input, b.index!('lv_b', colOf(c, j), 'lv_k0'))};`);
        for (let t = 0; t < 4; t++) L.push(`let lv_b${c}_${t} = vec4<f32>(lv_bk${c}_0[${t}], lv_bk${c}_1[${t}], lv_bk${c}_2[${t}], lv_bk${c}_3[${t}]);`);
      } else {
        for (let t = 0; t < 4; t++) {
          const e = [0, 1, 2, 3].map((j) => loadScalar(bind, b, 'lv_b', colOf(c, j), kOf(t, tail), kValid(t, tail)));
          L.push(`let lv_b${c}_${t} = vec4<f32>(${e.join(', ')});`);
        }
      }
    }
    for (let i = 0; i < RM; i++) {
      L.push(`{ let lv_x = subgroupBroadcast(lv_a${i % RB}, ${u(Math.floor(i / RB))});`);
      for (let c = 0; c < CG; c++)
        L.push(`  lv_acc${i}_${c} = fma(vec4<f32>(lv_x.x), lv_b${c}_0, fma(vec4<f32>(lv_x.y), lv_b${c}_1, fma(vec4<f32>(lv_x.z), lv_b${c}_2, fma(vec4<f32>(lv_x.w), lv_b${c}_3, lv_acc${i}_${c}))));`);
      L.push('}');
    }
    return L.map((l) => '    ' + l).join('\n');
  };

  const accs: string[] = [];
  const stores: string[] = [];
  for (let i = 0; i < RM; i++)
    for (let c = 0; c < CG; c++) {
      accs.push(`  var lv_acc${i}_${c} = vec4<f32>(0.0);`);
      for (let j = 0; j < 4; j++) {
        const m = `lv_m0 + ${u(i)}`;
        const n = `lv_ncol${c} + ${u(j)}`;
        const conds = [M % RM ? `${m} < ${u(M)}` : '', N % CN ? `${n} < ${u(N)}` : ''].filter(Boolean);
        const s = store(`(lv_acc${i}_${c}[${j}] + lv_poison)`, spec.out('lv_b', m, n));
        stores.push(conds.length ? `  if (${conds.join(' && ')}) { ${s} }` : `  ${s}`);
      }
    }

  const wgsl = `enable subgroups;
${decls}
// NaN bits in a private variable: WGSL const-evaluation rejects NaN literals.
var<private> lv_nan_bits: u32 = 0x7fc00000u;

@compute @workgroup_size(${S * G})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lv_lane: u32, @builtin(subgroup_size) lv_sgsize: u32) {
  // The kernel was generated for subgroups of exactly ${S} consecutive invocations;
  // on any other layout the results would be wrong, so poison them instead.
  let lv_poison = select(0.0, bitcast<f32>(lv_nan_bits), lv_sgsize != ${u(S)} || lv_lane != lid % ${u(S)});
  // Surplus subgroups of the last workgroup redo the last tile (same values, same places).
  let lv_t = min(${flat} * ${u(G)} + lid / ${u(S)}, ${u(count - 1)});
${tileCoords('lv_t', tilesM, tilesN)}
  let lv_m0 = lv_tm * ${u(RM)};
  let lv_mrow = lv_m0 + lv_lane * ${u(RB)};
${Array.from({ length: CG }, (_, c) => `  let lv_ncol${c} = lv_tn * ${u(CN)} + (${u(c * S)} + lv_lane) * 4u;`).join('\n')}
${accs.join('\n')}
  for (var lv_k0 = 0u; lv_k0 < ${u(K4)}; lv_k0 += 4u) {
${step(false)}
  }
${K % 4 ? `  {\n    let lv_k0 = ${u(K4)};\n${step(true)}\n  }` : ''}
${stores.join('\n')}
}
`;
  return {
    name: `${spec.op}_sg${S}_${RM}x${CN}_${aMode}_${bMode}`,
    wgsl,
    entryPoint: 'main',
    bindings,
    workgroups,
    flops: spec.flops,
  };
}
