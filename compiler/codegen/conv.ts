// The conv2d generators (forward, input gradient, weight gradient), each an
// implicit GEMM for the templates in gemm.ts: the im2col matrix is never
// materialised; its elements are decoded from (column, k) on the fly, with zero
// padding, stride and dilation handled in the decode. Groups are the GEMM batch.
//
//   conv2d              Out[g](o, (n,oh,ow)) = sum_(c,kh,kw)  w[g](o, (c,kh,kw)) * x(n, c, oh*s+kh*d-p, ...)
//   conv2d_grad_input   Out[g](c, (n,ih,iw)) = sum_(o,kh,kw)  w[g](o, c, kh, kw)  * dy(n, o, (ih+p-kh*d)/s, ...)
//   conv2d_grad_weight  Out[g](o, (c,kh,kw)) = sum_(n,oh,ow)  dy(n, o, oh, ow)     * x(n, c, oh*s+kh*d-p, ...)
//
// Folding the batch of images into the GEMM columns (forward, input gradient)
// keeps the tiles full when a feature map is small (14x14 = 196 pixels). A
// strided input gradient runs as dense per-stride-phase sub-convolutions
// (gradInputPhaseSpec); a weight gradient with a long reduction and few output
// tiles splits it into partial sums and a summing pass (renderConv2dGradWeightSplit).

import { type Graph, type Node, numel } from '../ir.ts';
import { type ConvGeometry, convGeometry as tableConvGeometry } from '../ops/contraction.ts';
import type { Kernel } from './kernel.ts';
import { type ContractionOptions, type GemmOperand, type GemmSpec, PORTABLE_TARGET, ParamBlock, chooseSplitK, renderGemm, renderPartialSum } from './gemm.ts';

type ConvOp = 'conv2d' | 'conv2d_grad_input' | 'conv2d_grad_weight';

function describe(node: Node): string {
  return `${node.op} (node %${node.id}${node.name ? ' ' + node.name : ''})`;
}

/** The geometry of a conv2d / conv2d_grad_input / conv2d_grad_weight node (the op table's, from its x, w and y). */
export function convGeometry(graph: Graph, node: Node): ConvGeometry {
  if (node.op !== 'conv2d' && node.op !== 'conv2d_grad_input' && node.op !== 'conv2d_grad_weight')
    throw new Error(`conv generator got a '${node.op}' node (%${node.id})`);
  if (node.inputs.length !== 2) throw new Error(`${describe(node)} takes 2 inputs, got ${node.inputs.length}`);
  const ins = node.inputs.map((i) => graph.nodes[i]);
  for (const t of [...ins, node]) if (t.dtype !== 'f32') throw new Error(`${describe(node)}: only f32 is supported, %${t.id} is ${t.dtype}`);
  const [a, b] = ins.map((t) => t.shape);
  // (x, w, y) of the forward convolution each op is a part of
  const [x, w, y] = node.op === 'conv2d' ? [a, b, node.shape] : node.op === 'conv2d_grad_input' ? [node.shape, b, a] : [a, node.shape, b];
  try {
    return tableConvGeometry((node as Extract<Node, { op: ConvOp }>).attrs, x, w, y);
  } catch (err) {
    throw new Error(`${describe(node)}: ${(err as Error).message}`);
  }
}

/** Floating-point operations of any of the three conv ops (2 per multiply-add of the forward conv). */
export function convFlops(graph: Graph, node: Node): number {
  const g = convGeometry(graph, node);
  return 2 * g.N * g.O * g.OH * g.OW * (g.C / g.G) * g.KH * g.KW;
}

const u = (n: number) => `${n}u`;

/**
 * The conv's sizes as WGSL constants: conv kernels render through a baked
 * ParamBlock, one pipeline per shape. With the sizes in the uniform block
 * instead, lovt-tiny's conv kernels ran 1.3-2x slower per step on lavapipe
 * (profiled, warm), even with the divisions done through f32 reciprocals.
 * Only the GEMM's K-loop bound is a uniform (ParamBlock.loopBound).
 */
function sizes(g: ConvGeometry, p: ParamBlock) {
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  /** x / d and x % d for the size d = value. */
  const by = (name: string, value: number) => ({
    div: (x: string) => `(${x}) / ${p.get(name, value)}`,
    mod: (x: string) => `(${x}) % ${p.get(name, value)}`,
  });
  return {
    KK: u(g.KH * g.KW),
    KW: u(g.KW),
    byP: by('P', g.OH * g.OW),
    byHW: by('HW', g.H * g.W),
    byOW: by('OW', g.OW),
    byW: by('W', g.W),
    /** The input pixels of one stride phase (gradInputPhaseSpec): ceil(H/sh) x ceil(W/sw). */
    byPhaseHW: by('HWph', Math.ceil(g.H / g.sh) * Math.ceil(g.W / g.sw)),
    byPhaseW: by('Wph', Math.ceil(g.W / g.sw)),
    bySh: by('sh', g.sh),
    bySw: by('sw', g.sw),
    get C() {
      return p.get('C', g.C);
    },
    get H() {
      return p.get('H', g.H);
    },
    get W() {
      return p.get('W', g.W);
    },
    get O() {
      return p.get('O', g.O);
    },
    get OH() {
      return p.get('OH', g.OH);
    },
    get OW() {
      return p.get('OW', g.OW);
    },
    get Cg() {
      return p.get('Cg', Cg);
    },
    get Og() {
      return p.get('Og', Og);
    },
    get sh() {
      return p.get('sh', g.sh);
    },
    get sw() {
      return p.get('sw', g.sw);
    },
    /** `a` times a stride or dilation; unit ones (the common case) multiply nothing. */
    timesSh: (a: string) => (g.sh === 1 ? a : `${a} * ${p.get('sh', g.sh)}`),
    timesSw: (a: string) => (g.sw === 1 ? a : `${a} * ${p.get('sw', g.sw)}`),
    timesDh: (a: string) => (g.dh === 1 ? a : `${a} * ${p.get('dh', g.dh)}`),
    timesDw: (a: string) => (g.dw === 1 ? a : `${a} * ${p.get('dw', g.dw)}`),
    /** `a - padding` (u32: a wrapped, negative result fails the `< size` checks that follow); no subtraction without padding. */
    minusPh: (a: string) => (g.ph ? `${a} - ${p.get('ph', g.ph)}` : a),
    minusPw: (a: string) => (g.pw ? `${a} - ${p.get('pw', g.pw)}` : a),
    plusPh: (a: string) => (g.ph ? `${a} + ${p.get('ph', g.ph)}` : a),
    plusPw: (a: string) => (g.pw ? `${a} + ${p.get('pw', g.pw)}` : a),
  };
}

/** WGSL function reading x(n, c_global, oh*s + kh*d - p, ow*s + kw*d - p) with zero padding. */
function xTapHelper(g: ConvGeometry, p: ParamBlock): string {
  const z = sizes(g, p);
  return `fn cv_x_tap(n: u32, c: u32, oh: u32, ow: u32, kh: u32, kw: u32) -> f32 {
  let ih = ${z.minusPh(`${z.timesSh('oh')} + ${z.timesDh('kh')}`)};
  let iw = ${z.minusPw(`${z.timesSw('ow')} + ${z.timesDw('kw')}`)};
  let ok = ih < ${z.H} && iw < ${z.W};
  return select(0.0, cv_x[select(0u, ((n * ${z.C} + c) * ${z.H} + ih) * ${z.W} + iw, ok)], ok);
}`;
}

function forwardSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [x, w] = node.inputs.map((i) => graph.nodes[i]);
  const p = new ParamBlock(true);
  const z = sizes(g, p);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const KK = g.KH * g.KW;
  const K = Cg * KK;
  const P = g.OH * g.OW;
  const Pe = p.get('P', P);
  const Ke = p.get('Kw', K);
  const groupRow = (b: string, o: string) => (g.G > 1 ? `(${b}) * ${z.Og} + (${o})` : `(${o})`);
  const groupChan = (b: string, c: string) => (g.G > 1 ? `(${b}) * ${z.Cg} + (${c})` : `(${c})`);
  const a: GemmOperand = { input: 'cv_w', fast: 'k', vec4: K % 4 === 0 ? 'k' : undefined, index: (b, o, k) => `(${groupRow(b, o)}) * ${Ke} + (${k})` };
  const pointwise = KK === 1 && g.sh === 1 && g.sw === 1 && g.ph === 0 && g.pw === 0;
  const bOp: GemmOperand = pointwise
    ? // 1x1, stride 1, no padding: x itself is the B matrix per image, contiguous along pixels.
      {
        input: 'cv_x',
        fast: 'r',
        vec4: P % 4 === 0 ? 'r' : undefined,
        index: (b, col, k) => `(${z.byP.div(col)} * ${z.C} + ${groupChan(b, k)}) * ${Pe} + ${z.byP.mod(col)}`,
      }
    : { input: 'cv_x', fast: 'r', load: (b, col, k) => `cv_x_fwd(${b}, ${col}, ${k})` };
  const helpers = pointwise
    ? ''
    : `${xTapHelper(g, p)}
fn cv_x_fwd(g: u32, col: u32, k: u32) -> f32 {
  let p = ${z.byP.mod('col')};
  let t = k % ${z.KK};
  return cv_x_tap(${z.byP.div('col')}, ${g.G > 1 ? `g * ${z.Cg} + ` : ''}k / ${z.KK}, ${z.byOW.div('p')}, ${z.byOW.mod('p')}, t / ${z.KW}, t % ${z.KW});
}`;
  return {
    op: `conv2d_${g.KH}x${g.KW}`,
    params: p,
    batch: g.G,
    M: Og,
    N: g.N * P,
    K,
    inputs: [
      { tensor: x.id, name: 'cv_x', numel: numel(x.shape) },
      { tensor: w.id, name: 'cv_w', numel: numel(w.shape) },
    ],
    a,
    b: bOp,
    helpers,
    out: (b, o, col) => `(${z.byP.div(col)} * ${z.O} + ${groupRow(b, o)}) * ${Pe} + ${z.byP.mod(col)}`,
    outVec4: P % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * P * K,
  };
}

function gradInputSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [dy, w] = node.inputs.map((i) => graph.nodes[i]);
  const p = new ParamBlock(true);
  const z = sizes(g, p);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const KK = g.KH * g.KW;
  const HW = g.H * g.W;
  const HWe = p.get('HW', HW);
  const groupOut = (b: string, o: string) => (g.G > 1 ? `(${b}) * ${z.Og} + (${o})` : `(${o})`);
  const groupChan = (b: string, c: string) => (g.G > 1 ? `(${b}) * ${z.Cg} + (${c})` : `(${c})`);
  // Rows are input channels c, k = (o, kh, kw): w[o, c, kh, kw].
  const a: GemmOperand =
    KK === 1
      ? { input: 'cv_w', fast: 'r', vec4: Cg % 4 === 0 ? 'r' : undefined, index: (b, c, k) => `(${groupOut(b, k)}) * ${z.Cg} + (${c})` }
      : { input: 'cv_w', fast: 'k', index: (b, c, k) => `((${groupOut(b, `(${k}) / ${z.KK}`)}) * ${z.Cg} + (${c})) * ${z.KK} + (${k}) % ${z.KK}` };
  // dy(n, o, oh, ow) where oh*s = ih + p - kh*d; taps that fall between strides or outside are zero.
  const strided = g.sh > 1 || g.sw > 1;
  // A tap left of or above the image wraps ohs/ows to huge u32s, which oh < OH rejects.
  const helpers = `fn cv_dy_tap(g: u32, col: u32, k: u32) -> f32 {
  let q = ${z.byHW.mod('col')};
  let t = k % ${z.KK};
  let ohs = ${z.plusPh(z.byW.div('q'))} - ${z.timesDh(`(t / ${z.KW})`)};
  let ows = ${z.plusPw(z.byW.mod('q'))} - ${z.timesDw(`(t % ${z.KW})`)};
  let oh = ${strided ? z.bySh.div('ohs') : 'ohs'};
  let ow = ${strided ? z.bySw.div('ows') : 'ows'};
  let ok = oh < ${z.OH} && ow < ${z.OW}${strided ? ` && ohs - oh * ${z.sh} == 0u && ows - ow * ${z.sw} == 0u` : ''};
  let i = ((${z.byHW.div('col')} * ${z.O} + ${g.G > 1 ? `g * ${z.Og} + ` : ''}k / ${z.KK}) * ${z.OH} + oh) * ${z.OW} + ow;
  return select(0.0, cv_dy[select(0u, i, ok)], ok);
}`;
  return {
    op: `conv2d_grad_input_${g.KH}x${g.KW}`,
    params: p,
    batch: g.G,
    M: Cg,
    N: g.N * HW,
    K: Og * KK,
    inputs: [
      { tensor: dy.id, name: 'cv_dy', numel: numel(dy.shape) },
      { tensor: w.id, name: 'cv_w', numel: numel(w.shape) },
    ],
    a,
    b: { input: 'cv_dy', fast: 'r', load: (b, col, k) => `cv_dy_tap(${b}, ${col}, ${k})` },
    helpers,
    out: (b, c, col) => `(${z.byHW.div(col)} * ${z.C} + ${groupChan(b, c)}) * ${HWe} + ${z.byHW.mod(col)}`,
    outVec4: HW % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * g.OH * g.OW * Cg * KK,
  };
}

/**
 * conv2d_grad_input of a strided, undilated conv as sh*sw dense sub-convolutions,
 * one per stride phase (ih % sh, iw % sw), carried as the GEMM batch (times
 * the groups). The gather of gradInputSpec runs every (kh, kw) tap for every
 * input pixel, and for stride s only 1 in s^2 of them lands on an output
 * pixel: a 3x3 stride-2 gradient did 36 multiply-adds per 2x2 pixels for 9
 * real ones, plus a divisibility check per element. Within a phase the taps
 * that hit are kh = kh0 + jh*sh with kh0 = (ih + ph) % sh fixed, and their
 * output pixel is oh = ih/sh + (ah + ph)/sh - jh, so each phase is a plain
 * conv over ceil(KH/sh) x ceil(KW/sw) taps (16 per 2x2 pixels for 3x3 stride
 * 2; taps past the kernel, kh >= KH, read zero weights) without divisions by
 * the stride. Phases cover ceil(H/sh) x ceil(W/sw) pixels; the ones past an
 * odd edge are not stored (outValid).
 */
function gradInputPhaseSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [dy, w] = node.inputs.map((i) => graph.nodes[i]);
  const p = new ParamBlock(true);
  const z = sizes(g, p);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const phases = g.sh * g.sw;
  const TH = Math.ceil(g.KH / g.sh);
  const TW = Math.ceil(g.KW / g.sw);
  const Hp = Math.ceil(g.H / g.sh);
  const Wp = Math.ceil(g.W / g.sw);
  const taps = u(TH * TW);
  // Batch b = (group, phase); the phase's first hitting tap (kh0, kw0) and output offset (eh, ew).
  const phase = `let a = b % ${u(phases)};
  let ah = a / ${z.sw} + ${p.get('ph', g.ph)};
  let aw = a % ${z.sw} + ${p.get('pw', g.pw)};
  let t = k % ${taps};
  let kh = ah % ${z.sh} + (t / ${u(TW)}) * ${z.sh};
  let kw = aw % ${z.sw} + (t % ${u(TW)}) * ${z.sw};
  let o = ${g.G > 1 ? `(b / ${u(phases)}) * ${z.Og} + ` : ''}k / ${taps};`;
  const helpers = `fn cv_w_phase(b: u32, c: u32, k: u32) -> f32 {
  ${phase}
  let ok = kh < ${u(g.KH)} && kw < ${u(g.KW)};
  return select(0.0, cv_w[select(0u, ((o * ${z.Cg} + c) * ${u(g.KH)} + kh) * ${u(g.KW)} + kw, ok)], ok);
}
fn cv_dy_phase(b: u32, col: u32, k: u32) -> f32 {
  ${phase}
  let q = ${z.byPhaseHW.mod('col')};
  // Left of or above the image oh/ow wrap to huge u32s, which the bounds reject.
  let oh = ${z.byPhaseW.div('q')} + ah / ${z.sh} - t / ${u(TW)};
  let ow = ${z.byPhaseW.mod('q')} + aw / ${z.sw} - t % ${u(TW)};
  let ok = oh < ${z.OH} && ow < ${z.OW} && kh < ${u(g.KH)} && kw < ${u(g.KW)};
  let i = ((${z.byPhaseHW.div('col')} * ${z.O} + o) * ${z.OH} + oh) * ${z.OW} + ow;
  return select(0.0, cv_dy[select(0u, i, ok)], ok);
}
fn cv_dx_row(b: u32, col: u32) -> u32 { return (b % ${u(phases)}) / ${z.sw} + ${z.timesSh(z.byPhaseW.div(z.byPhaseHW.mod('col')))}; }
fn cv_dx_col(b: u32, col: u32) -> u32 { return (b % ${u(phases)}) % ${z.sw} + ${z.timesSw(z.byPhaseW.mod(z.byPhaseHW.mod('col')))}; }`;
  const chan = (b: string, c: string) => (g.G > 1 ? `(${b}) / ${u(phases)} * ${z.Cg} + (${c})` : `(${c})`);
  const ragged = g.H % g.sh !== 0 || g.W % g.sw !== 0;
  return {
    op: `conv2d_grad_input_${g.KH}x${g.KW}_phase${g.sh}x${g.sw}`,
    params: p,
    batch: g.G * phases,
    M: Cg,
    N: g.N * Hp * Wp,
    K: Og * TH * TW,
    inputs: [
      { tensor: dy.id, name: 'cv_dy', numel: numel(dy.shape) },
      { tensor: w.id, name: 'cv_w', numel: numel(w.shape) },
    ],
    a: { input: 'cv_w', fast: 'k', load: (b, c, k) => `cv_w_phase(${b}, ${c}, ${k})` },
    b: { input: 'cv_dy', fast: 'r', load: (b, col, k) => `cv_dy_phase(${b}, ${col}, ${k})` },
    helpers,
    out: (b, c, col) => `((${z.byPhaseHW.div(col)} * ${z.C} + ${chan(b, c)}) * ${z.H} + cv_dx_row(${b}, ${col})) * ${z.W} + cv_dx_col(${b}, ${col})`,
    outValid: ragged ? (b, _c, col) => `cv_dx_row(${b}, ${col}) < ${z.H} && cv_dx_col(${b}, ${col}) < ${z.W}` : undefined,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * g.OH * g.OW * Cg * g.KH * g.KW,
  };
}

/**
 * How a weight gradient's reduction k = (n, oh, ow) is split (chooseSplitK):
 * the GEMM batch becomes (group, part), part p sums k in [p * chunk, (p + 1) * chunk)
 * into its own slice of a partial-sum scratch tensor, and renderPartialSum adds the parts.
 */
interface KSplit {
  parts: number;
  /** k per part, a multiple of 4 (vec4 loads along k stay aligned). */
  chunk: number;
  /** The partial-sum scratch tensor: [parts, O, C/groups * KH * KW]. */
  partials: number;
}

/** `parts` parts of K (the last possibly shorter), or none when that leaves one. */
function kSplit(K: number, parts: number, scratch: (elements: number, dtype: 'f32') => number, outNumel: number): KSplit | undefined {
  const chunk = Math.ceil(K / parts / 4) * 4;
  const used = Math.ceil(K / chunk);
  return used > 1 ? { parts: used, chunk, partials: scratch(used * outNumel, 'f32') } : undefined;
}

function gradWeightSpec(graph: Graph, node: Node, g: ConvGeometry, split?: KSplit): GemmSpec {
  const [x, dy] = node.inputs.map((i) => graph.nodes[i]);
  const p = new ParamBlock(true);
  const z = sizes(g, p);
  const Cg = g.C / g.G;
  const KK = g.KH * g.KW;
  const P = g.OH * g.OW;
  const K = g.N * P;
  const Pe = p.get('P', P);
  const CgKK = p.get('CgKK', Cg * KK);
  const parts = split?.parts ?? 1;
  // With a split, batch b = group * parts + part and k is relative to the part's start.
  const group = (b: string) => (split ? `(${b}) / ${u(parts)}` : b);
  const ragged = !!split && split.parts * split.chunk !== K;
  /**
   * The global k; past K (the last part's tail) clamped to K - 1, a real
   * element whose products the zeroed x taps cancel (a vec4 load there reads
   * the aligned quad holding it: vec4 loads along k need P % 4 == 0).
   */
  const globalK = (b: string, k: string) => {
    if (!split) return k;
    const kg = `(${b}) % ${u(parts)} * ${p.get('kChunk', split.chunk)} + (${k})`;
    return ragged ? `min(${kg}, ${p.get('Kclamp', K - 1)})` : kg;
  };
  const groupOut = (b: string, o: string) => (g.G > 1 ? `(${group(b)}) * ${z.Og} + (${o})` : `(${o})`);
  const A = (b: string, o: string, k: string) => {
    const kg = globalK(b, k);
    return `(${z.byP.div(kg)} * ${z.O} + ${groupOut(b, o)}) * ${Pe} + ${z.byP.mod(kg)}`;
  };
  // Rows are output channels o, k = (n, oh, ow): dy is contiguous along k within an image.
  const a: GemmOperand = { input: 'cv_dy', fast: 'k', vec4: P % 4 === 0 ? 'k' : undefined, index: A };
  const helpers = `${xTapHelper(g, p)}
fn cv_x_wgrad(g: u32, col: u32, k: u32) -> f32 {
  let p = ${z.byP.mod('k')};
  let t = col % ${z.KK};
  return cv_x_tap(${z.byP.div('k')}, ${g.G > 1 ? `g * ${z.Cg} + ` : ''}col / ${z.KK}, ${z.byOW.div('p')}, ${z.byOW.mod('p')}, t / ${z.KW}, t % ${z.KW});
}`;
  const bLoad = (b: string, col: string, k: string) => {
    const tap = `cv_x_wgrad(${group(b)}, ${col}, ${globalK(b, k)})`;
    return ragged ? `select(0.0, ${tap}, (${b}) % ${u(parts)} * ${p.get('kChunk', split!.chunk)} + (${k}) < ${p.get('Ktot', K)})` : tap;
  };
  const outNumel = numel(node.shape);
  return {
    op: `conv2d_grad_weight_${g.KH}x${g.KW}${split ? `_splitk${parts}` : ''}`,
    params: p,
    batch: g.G * parts,
    M: g.O / g.G,
    N: Cg * KK,
    K: split ? split.chunk : K,
    inputs: [
      { tensor: x.id, name: 'cv_x', numel: numel(x.shape) },
      { tensor: dy.id, name: 'cv_dy', numel: numel(dy.shape) },
    ],
    a,
    b: { input: 'cv_x', fast: 'k', load: bLoad },
    helpers,
    // Part p's partial sums are the p-th copy of the weight layout.
    out: (b, o, col) => `(${split ? `(${b}) % ${u(parts)} * ${z.O} + ` : ''}${groupOut(b, o)}) * ${CgKK} + (${col})`,
    outVec4: (Cg * KK) % 4 === 0,
    outTensor: split ? split.partials : node.id,
    outNumel: parts * outNumel,
    flops: 2 * g.N * g.O * P * Cg * KK,
  };
}

/** The implicit-GEMM description of a conv node (any of the three ops). */
export function convSpec(graph: Graph, node: Node): GemmSpec {
  const g = convGeometry(graph, node);
  const op = node.op as ConvOp;
  if (op === 'conv2d') return forwardSpec(graph, node, g);
  if (op === 'conv2d_grad_weight') return gradWeightSpec(graph, node, g);
  // A kernel narrower than its stride leaves phases with no tap at all (a 1x1 stride 2: 3 of 4), which would run as zeros.
  const phased = g.sh * g.sw > 1 && g.dh === 1 && g.dw === 1 && g.KH >= g.sh && g.KW >= g.sw;
  return phased ? gradInputPhaseSpec(graph, node, g) : gradInputSpec(graph, node, g);
}

function render(op: ConvOp, graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  if (node.op !== op) throw new Error(`render for ${op} got a '${node.op}' node (%${node.id})`);
  return renderGemm(convSpec(graph, node), opts);
}

/** conv2d: inputs (x [N, C, H, W], w [O, C/groups, kh, kw]); bindings x, w, epilogue extras, output [N, O, OH, OW]. */
export function renderConv2d(graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  return render('conv2d', graph, node, opts);
}

/** conv2d_grad_input: inputs (dy, w), attrs as conv2d + inputSize; output [N, C, H, W]. */
export function renderConv2dGradInput(graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  return render('conv2d_grad_input', graph, node, opts);
}

/** conv2d_grad_weight: inputs (x, dy), attrs as conv2d + kernelSize; output [O, C/groups, kh, kw]. One kernel. */
export function renderConv2dGradWeight(graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  return render('conv2d_grad_weight', graph, node, opts);
}

/**
 * conv2d_grad_weight as the schedule runs it: with opts.scratch, a reduction
 * long for its few output tiles is split (chooseSplitK, or opts.splitK parts)
 * into a kernel of partial sums into scratch and their sum (with the
 * epilogue); else the one kernel of renderConv2dGradWeight.
 */
export function renderConv2dGradWeightSplit(graph: Graph, node: Node, opts: ContractionOptions): Kernel[] {
  const whole = convSpec(graph, node);
  const parts = opts.splitK ?? chooseSplitK(whole, opts.target ?? PORTABLE_TARGET);
  const split = parts > 1 && opts.scratch ? kSplit(whole.K, parts, opts.scratch, whole.outNumel) : undefined;
  if (!split) return [renderConv2dGradWeight(graph, node, opts)];
  const partial = renderGemm(gradWeightSpec(graph, node, convGeometry(graph, node), split), { ...opts, epilogue: undefined });
  return [partial, renderPartialSum(partial.name, split.partials, split.parts, whole.outNumel, node.id, opts)];
}
