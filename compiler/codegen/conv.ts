// The conv2d generators (forward, input gradient, weight gradient), each an
// implicit GEMM for the templates in tiling.ts: the im2col matrix is never
// materialised; its elements are decoded from (column, k) on the fly, with zero
// padding, stride and dilation handled in the decode. Groups are the GEMM batch.
//
//   conv2d              Out[g](o, (n,oh,ow)) = sum_(c,kh,kw)  w[g](o, (c,kh,kw)) * x(n, c, oh*s+kh*d-p, ...)
//   conv2d_grad_input   Out[g](c, (n,ih,iw)) = sum_(o,kh,kw)  w[g](o, c, kh, kw)  * dy(n, o, (ih+p-kh*d)/s, ...)
//   conv2d_grad_weight  Out[g](o, (c,kh,kw)) = sum_(n,oh,ow)  dy(n, o, oh, ow)     * x(n, c, oh*s+kh*d-p, ...)
//
// Folding the batch of images into the GEMM columns (forward, input gradient)
// keeps the tiles full when a feature map is small (14x14 = 196 pixels).

import { type Graph, type Node, numel, shapeStr } from '../ir.ts';
import type { Kernel } from './kernel.ts';
import { type ContractionOptions, type GemmOperand, type GemmSpec, renderGemm } from './tiling.ts';

/** Every size of a conv2d problem, whichever of the three ops describes it. */
export interface ConvGeometry {
  N: number; // images
  C: number; // input channels
  H: number;
  W: number;
  O: number; // output channels
  KH: number;
  KW: number;
  OH: number;
  OW: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
  G: number; // groups
}

type ConvOp = 'conv2d' | 'conv2d_grad_input' | 'conv2d_grad_weight';

function describe(node: Node): string {
  return `${node.op} (node %${node.id}${node.name ? ' ' + node.name : ''})`;
}

function pairAttr(node: Node, name: string, fallback: number): [number, number] {
  const v = node.attrs[name];
  if (v === undefined || v === null) return [fallback, fallback];
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  throw new Error(`${describe(node)}: attribute ${name} must be an int or a pair of ints, got ${JSON.stringify(v)}`);
}

function rank4(node: Node, what: string, shape: number[]): number[] {
  if (shape.length !== 4) throw new Error(`${describe(node)}: ${what} must be rank 4, got ${shapeStr(shape)}`);
  return shape;
}

/** The geometry of a conv2d / conv2d_grad_input / conv2d_grad_weight node, checked for consistency. */
export function convGeometry(graph: Graph, node: Node): ConvGeometry {
  if (node.op !== 'conv2d' && node.op !== 'conv2d_grad_input' && node.op !== 'conv2d_grad_weight')
    throw new Error(`conv generator got a '${node.op}' node (%${node.id})`);
  if (node.inputs.length !== 2) throw new Error(`${describe(node)} takes 2 inputs, got ${node.inputs.length}`);
  const ins = node.inputs.map((i) => graph.nodes[i]);
  for (const t of [...ins, node]) if (t.dtype !== 'f32') throw new Error(`${describe(node)}: only f32 is supported, %${t.id} is ${t.dtype}`);
  const [sh, sw] = pairAttr(node, 'stride', 1);
  const [ph, pw] = pairAttr(node, 'padding', 0);
  const [dh, dw] = pairAttr(node, 'dilation', 1);
  const G = (node.attrs.groups as number | undefined) ?? 1;
  let N: number, C: number, H: number, W: number, O: number, KH: number, KW: number, OH: number, OW: number, Cg: number;
  if (node.op === 'conv2d') {
    [N, C, H, W] = rank4(node, 'x', ins[0].shape);
    [O, Cg, KH, KW] = rank4(node, 'weight', ins[1].shape);
    [, , OH, OW] = rank4(node, 'output', node.shape);
  } else if (node.op === 'conv2d_grad_input') {
    [N, O, OH, OW] = rank4(node, 'dy', ins[0].shape);
    [, Cg, KH, KW] = rank4(node, 'weight', ins[1].shape);
    [, C, H, W] = rank4(node, 'output', node.shape);
  } else {
    [N, C, H, W] = rank4(node, 'x', ins[0].shape);
    [, O, OH, OW] = rank4(node, 'dy', ins[1].shape);
    [, Cg, KH, KW] = rank4(node, 'output', node.shape);
  }
  const ok = (n: number) => Number.isInteger(n) && n >= 1;
  if (![sh, sw, dh, dw, G].every(ok) || ![ph, pw].every((p) => Number.isInteger(p) && p >= 0))
    throw new Error(`${describe(node)}: stride/dilation/groups must be positive integers and padding non-negative, got stride ${sh},${sw} padding ${ph},${pw} dilation ${dh},${dw} groups ${G}`);
  if (C !== Cg * G || O % G !== 0)
    throw new Error(`${describe(node)}: ${C} input and ${O} output channels do not fit weight with ${Cg} channels per group and ${G} groups`);
  const eOH = Math.floor((H + 2 * ph - dh * (KH - 1) - 1) / sh) + 1;
  const eOW = Math.floor((W + 2 * pw - dw * (KW - 1) - 1) / sw) + 1;
  if (eOH !== OH || eOW !== OW)
    throw new Error(`${describe(node)}: input ${H}x${W} with kernel ${KH}x${KW}, stride ${sh},${sw}, padding ${ph},${pw}, dilation ${dh},${dw} gives ${eOH}x${eOW}, not ${OH}x${OW}`);
  const expectOut = node.op === 'conv2d' ? [N, O, OH, OW] : node.op === 'conv2d_grad_input' ? [N, C, H, W] : [O, Cg, KH, KW];
  if (shapeStr(expectOut) !== shapeStr(node.shape)) throw new Error(`${describe(node)}: output is ${shapeStr(node.shape)}, expected ${shapeStr(expectOut)}`);
  return { N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G };
}

/** Floating-point operations of any of the three conv ops (2 per multiply-add of the forward conv). */
export function convFlops(graph: Graph, node: Node): number {
  const g = convGeometry(graph, node);
  return 2 * g.N * g.O * g.OH * g.OW * (g.C / g.G) * g.KH * g.KW;
}

const u = (n: number) => `${n}u`;

/** `a - b` in u32, skipping zero: a wrapped (negative) result fails the `< size` checks that follow. */
const minus = (a: string, b: number) => (b ? `${a} - ${u(b)}` : a);

/** WGSL function reading x(n, c_global, oh*s + kh*d - p, ow*s + kw*d - p) with zero padding. */
function xTapHelper(g: ConvGeometry): string {
  return `fn cv_x_tap(n: u32, c: u32, oh: u32, ow: u32, kh: u32, kw: u32) -> f32 {
  let ih = ${minus(`oh * ${u(g.sh)} + kh * ${u(g.dh)}`, g.ph)};
  let iw = ${minus(`ow * ${u(g.sw)} + kw * ${u(g.dw)}`, g.pw)};
  let ok = ih < ${u(g.H)} && iw < ${u(g.W)};
  return select(0.0, cv_x[select(0u, ((n * ${u(g.C)} + c) * ${u(g.H)} + ih) * ${u(g.W)} + iw, ok)], ok);
}`;
}

function forwardSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [x, w] = node.inputs.map((i) => graph.nodes[i]);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const KK = g.KH * g.KW;
  const K = Cg * KK;
  const P = g.OH * g.OW;
  const groupRow = (b: string, o: string) => (g.G > 1 ? `(${b}) * ${u(Og)} + (${o})` : `(${o})`);
  const groupChan = (b: string, c: string) => (g.G > 1 ? `(${b}) * ${u(Cg)} + (${c})` : `(${c})`);
  const a: GemmOperand = { input: 'cv_w', fast: 'k', vec4: K % 4 === 0 ? 'k' : undefined, index: (b, o, k) => `(${groupRow(b, o)}) * ${u(K)} + (${k})` };
  const pointwise = KK === 1 && g.sh === 1 && g.sw === 1 && g.ph === 0 && g.pw === 0;
  const bOp: GemmOperand = pointwise
    ? // 1x1, stride 1, no padding: x itself is the B matrix per image, contiguous along pixels.
      { input: 'cv_x', fast: 'r', vec4: P % 4 === 0 ? 'r' : undefined, index: (b, col, k) => `((${col}) / ${u(P)} * ${u(g.C)} + ${groupChan(b, k)}) * ${u(P)} + (${col}) % ${u(P)}` }
    : { input: 'cv_x', fast: 'r', load: (b, col, k) => `cv_x_fwd(${b}, ${col}, ${k})` };
  const helpers = pointwise
    ? ''
    : `${xTapHelper(g)}
fn cv_x_fwd(g: u32, col: u32, k: u32) -> f32 {
  let p = col % ${u(P)};
  let t = k % ${u(KK)};
  return cv_x_tap(col / ${u(P)}, ${g.G > 1 ? `g * ${u(Cg)} + ` : ''}k / ${u(KK)}, p / ${u(g.OW)}, p % ${u(g.OW)}, t / ${u(g.KW)}, t % ${u(g.KW)});
}`;
  return {
    op: `conv2d_${g.KH}x${g.KW}`,
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
    out: (b, o, col) => `((${col}) / ${u(P)} * ${u(g.O)} + ${groupRow(b, o)}) * ${u(P)} + (${col}) % ${u(P)}`,
    outVec4: P % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * P * K,
  };
}

function gradInputSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [dy, w] = node.inputs.map((i) => graph.nodes[i]);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const KK = g.KH * g.KW;
  const HW = g.H * g.W;
  const groupOut = (b: string, o: string) => (g.G > 1 ? `(${b}) * ${u(Og)} + (${o})` : `(${o})`);
  const groupChan = (b: string, c: string) => (g.G > 1 ? `(${b}) * ${u(Cg)} + (${c})` : `(${c})`);
  // Rows are input channels c, k = (o, kh, kw): w[o, c, kh, kw].
  const a: GemmOperand =
    KK === 1
      ? { input: 'cv_w', fast: 'r', vec4: Cg % 4 === 0 ? 'r' : undefined, index: (b, c, k) => `(${groupOut(b, k)}) * ${u(Cg)} + (${c})` }
      : { input: 'cv_w', fast: 'k', index: (b, c, k) => `((${groupOut(b, `(${k}) / ${u(KK)}`)}) * ${u(Cg)} + (${c})) * ${u(KK)} + (${k}) % ${u(KK)}` };
  // dy(n, o, oh, ow) where oh*s = ih + p - kh*d; taps that fall between strides or outside are zero.
  const strided = g.sh > 1 || g.sw > 1;
  const helpers = `fn cv_dy_tap(g: u32, col: u32, k: u32) -> f32 {
  let q = col % ${u(HW)};
  let t = k % ${u(KK)};
  let ohs = q / ${u(g.W)} + ${u(g.ph)} - (t / ${u(g.KW)}) * ${u(g.dh)};
  let ows = q % ${u(g.W)} + ${u(g.pw)} - (t % ${u(g.KW)}) * ${u(g.dw)};
  let oh = ohs / ${u(g.sh)};
  let ow = ows / ${u(g.sw)};
  let ok = oh < ${u(g.OH)} && ow < ${u(g.OW)}${strided ? ` && ohs % ${u(g.sh)} == 0u && ows % ${u(g.sw)} == 0u` : ''};
  let i = (((col / ${u(HW)}) * ${u(g.O)} + ${g.G > 1 ? `g * ${u(Og)} + ` : ''}k / ${u(KK)}) * ${u(g.OH)} + oh) * ${u(g.OW)} + ow;
  return select(0.0, cv_dy[select(0u, i, ok)], ok);
}`;
  return {
    op: `conv2d_grad_input_${g.KH}x${g.KW}`,
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
    out: (b, c, col) => `((${col}) / ${u(HW)} * ${u(g.C)} + ${groupChan(b, c)}) * ${u(HW)} + (${col}) % ${u(HW)}`,
    outVec4: HW % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * g.OH * g.OW * Cg * KK,
  };
}

function gradWeightSpec(graph: Graph, node: Node, g: ConvGeometry): GemmSpec {
  const [x, dy] = node.inputs.map((i) => graph.nodes[i]);
  const Cg = g.C / g.G;
  const Og = g.O / g.G;
  const KK = g.KH * g.KW;
  const P = g.OH * g.OW;
  const groupOut = (b: string, o: string) => (g.G > 1 ? `(${b}) * ${u(Og)} + (${o})` : `(${o})`);
  // Rows are output channels o, k = (n, oh, ow): dy is contiguous along k within an image.
  const a: GemmOperand = {
    input: 'cv_dy',
    fast: 'k',
    vec4: P % 4 === 0 ? 'k' : undefined,
    index: (b, o, k) => `((${k}) / ${u(P)} * ${u(g.O)} + ${groupOut(b, o)}) * ${u(P)} + (${k}) % ${u(P)}`,
  };
  const helpers = `${xTapHelper(g)}
fn cv_x_wgrad(g: u32, col: u32, k: u32) -> f32 {
  let p = k % ${u(P)};
  let t = col % ${u(KK)};
  return cv_x_tap(k / ${u(P)}, ${g.G > 1 ? `g * ${u(Cg)} + ` : ''}col / ${u(KK)}, p / ${u(g.OW)}, p % ${u(g.OW)}, t / ${u(g.KW)}, t % ${u(g.KW)});
}`;
  return {
    op: `conv2d_grad_weight_${g.KH}x${g.KW}`,
    batch: g.G,
    M: Og,
    N: Cg * KK,
    K: g.N * P,
    inputs: [
      { tensor: x.id, name: 'cv_x', numel: numel(x.shape) },
      { tensor: dy.id, name: 'cv_dy', numel: numel(dy.shape) },
    ],
    a,
    b: { input: 'cv_x', fast: 'k', load: (b, col, k) => `cv_x_wgrad(${b}, ${col}, ${k})` },
    helpers,
    out: (b, o, col) => `(${groupOut(b, o)}) * ${u(Cg * KK)} + (${col})`,
    outVec4: (Cg * KK) % 4 === 0,
    outTensor: node.id,
    outNumel: numel(node.shape),
    flops: 2 * g.N * g.O * P * Cg * KK,
  };
}

/** The implicit-GEMM description of a conv node (any of the three ops). */
export function convSpec(graph: Graph, node: Node): GemmSpec {
  const g = convGeometry(graph, node);
  const op = node.op as ConvOp;
  return op === 'conv2d' ? forwardSpec(graph, node, g) : op === 'conv2d_grad_input' ? gradInputSpec(graph, node, g) : gradWeightSpec(graph, node, g);
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

/** conv2d_grad_weight: inputs (x, dy), attrs as conv2d + kernelSize; output [O, C/groups, kh, kw]. */
export function renderConv2dGradWeight(graph: Graph, node: Node, opts: ContractionOptions): Kernel {
  return render('conv2d_grad_weight', graph, node, opts);
}
