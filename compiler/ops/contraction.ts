// Contractions: matmul and conv2d with its two gradients (its adjoints in x and
// w). Each is a batched implicit GEMM on the device (codegen/gemm.ts) and
// takes a fused elementwise epilogue. All f32.

import { type ConvAttrs, type Shape, numel, shapeStr } from '../ir.ts';
import { type OpTablePart, type TypedValue, broadcastShapes, convOut, f32, need, pair, pick, unbroadcast } from './def.ts';
import { broadcastOffsets } from './float64.ts';

const CONV_ATTRS = ['stride', 'padding', 'dilation', 'groups'] as const;

/** Every size of a conv2d problem, from x, w and y whichever of the three ops describes it (the float64 reference and the WGSL kernels, codegen/conv.ts). */
export interface ConvGeometry {
  N: number; // images
  C: number; // input channels
  H: number;
  W: number;
  O: number; // output channels
  KH: number;
  KW: number; // weight [O, C/G, KH, KW]
  OH: number;
  OW: number; // output
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
  G: number; // groups
}

/** The geometry of the convolution x * w = y, checked for consistency. */
export function convGeometry(attrs: ConvAttrs, x: Shape, w: Shape, y: Shape): ConvGeometry {
  const [sh, sw] = pair(attrs.stride, 'stride');
  const [ph, pw] = pair(attrs.padding, 'padding');
  const [dh, dw] = pair(attrs.dilation, 'dilation');
  const G = attrs.groups ?? 1;
  for (const [what, s] of [
    ['x', x],
    ['weight', w],
    ['output', y],
  ] as const)
    need(s.length === 4, `conv ${what} must be rank 4, got ${shapeStr(s)}`);
  const g: ConvGeometry = { N: x[0], C: x[1], H: x[2], W: x[3], O: w[0], KH: w[2], KW: w[3], OH: y[2], OW: y[3], sh, sw, ph, pw, dh, dw, G };
  const ok = (n: number) => Number.isInteger(n) && n >= 1;
  if (![sh, sw, dh, dw, G].every(ok) || ![ph, pw].every((p) => Number.isInteger(p) && p >= 0))
    throw new Error(
      `stride/dilation/groups must be positive integers and padding non-negative, got stride ${sh},${sw} padding ${ph},${pw} dilation ${dh},${dw} groups ${G}`,
    );
  if (w[1] * G !== g.C || g.O % G !== 0)
    throw new Error(`${g.C} input and ${g.O} output channels do not fit weight ${shapeStr(w)} with ${w[1]} channels per group and ${G} groups`);
  const oh = convOut(g.H, g.KH, sh, ph, dh);
  const ow = convOut(g.W, g.KW, sw, pw, dw);
  if (oh !== g.OH || ow !== g.OW)
    throw new Error(
      `input ${g.H}x${g.W} with kernel ${g.KH}x${g.KW}, stride ${sh},${sw}, padding ${ph},${pw}, dilation ${dh},${dw} gives ${oh}x${ow}, not ${g.OH}x${g.OW}`,
    );
  if (x[0] !== y[0] || y[1] !== g.O) throw new Error(`output ${shapeStr(y)} does not fit ${g.N} images of ${g.O} channels`);
  return g;
}

/** Calls visit(xIndex, wIndex, yIndex) for every multiply of a direct convolution. */
function convTaps(g: ConvGeometry, visit: (xi: number, wi: number, yi: number) => void): void {
  const cg = g.C / g.G;
  const og = g.O / g.G;
  for (let n = 0; n < g.N; n++)
    for (let o = 0; o < g.O; o++) {
      const c0 = Math.floor(o / og) * cg;
      for (let oh = 0; oh < g.OH; oh++)
        for (let ow = 0; ow < g.OW; ow++) {
          const yi = ((n * g.O + o) * g.OH + oh) * g.OW + ow;
          for (let c = 0; c < cg; c++)
            for (let i = 0; i < g.KH; i++) {
              const ih = oh * g.sh - g.ph + i * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (let j = 0; j < g.KW; j++) {
                const iw = ow * g.sw - g.pw + j * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                visit(((n * g.C + c0 + c) * g.H + ih) * g.W + iw, ((o * cg + c) * g.KH + i) * g.KW + j, yi);
              }
            }
        }
    }
}

/** 2·(multiply-adds) of a convolution whose output (conv2d) or dy (gradients) is `y` and weight `w`. */
function convFlops(y: Shape, w: Shape): number {
  return 2 * numel(y) * w[1] * w[2] * w[3];
}

function matmulType(ins: TypedValue[], a: { transA?: boolean; transB?: boolean }): TypedValue {
  const [x, y] = [ins[0].shape, ins[1].shape];
  need(x.length >= 2 && y.length >= 2, `matmul needs rank >= 2 operands, got ${shapeStr(x)} and ${shapeStr(y)}`);
  const [m, k1] = a.transA ? [x[x.length - 1], x[x.length - 2]] : [x[x.length - 2], x[x.length - 1]];
  const [k2, n] = a.transB ? [y[y.length - 1], y[y.length - 2]] : [y[y.length - 2], y[y.length - 1]];
  need(k1 === k2, `matmul contraction mismatch: ${shapeStr(x)}${a.transA ? 'ᵀ' : ''} @ ${shapeStr(y)}${a.transB ? 'ᵀ' : ''} (${k1} vs ${k2})`);
  const batch = broadcastShapes(x.slice(0, -2), y.slice(0, -2));
  return f32([...batch, m, n]);
}

function matmul(out: Shape, a: Float64Array, b: Float64Array, aShape: Shape, bShape: Shape, transA: boolean, transB: boolean): Float64Array {
  const [m, n] = out.slice(-2);
  const aCols = aShape[aShape.length - 1];
  const bCols = bShape[bShape.length - 1];
  const k = transA ? aShape[aShape.length - 2] : aCols;
  // op(A)[i, l] = A[i·ai + l·al]; op(B)[l, j] = B[l·bl + j·bj]
  const [ai, al] = transA ? [1, aCols] : [aCols, 1];
  const [bl, bj] = transB ? [1, bCols] : [bCols, 1];
  const batch = out.slice(0, -2);
  const aMat = aShape[aShape.length - 2] * aCols;
  const bMat = bShape[bShape.length - 2] * bCols;
  const aBatch = broadcastOffsets(aShape.slice(0, -2), batch);
  const bBatch = broadcastOffsets(bShape.slice(0, -2), batch);
  const y = new Float64Array(numel(out));
  for (let t = 0; t < aBatch.length; t++) {
    const a0 = aBatch[t] * aMat;
    const b0 = bBatch[t] * bMat;
    const o0 = t * m * n;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let l = 0; l < k; l++) acc += a[a0 + i * ai + l * al] * b[b0 + l * bl + j * bj];
        y[o0 + i * n + j] = acc;
      }
  }
  return y;
}

export const CONTRACTION_DEFS = {
  matmul: {
    kind: 'contraction',
    arity: 2,
    epilogue: true,
    type: matmulType,
    grad: {
      vjp: ({ b, g, x, need, node }) => {
        // Y = op(A)·op(B): dop(A) = G·op(B)ᵀ, dop(B) = op(A)ᵀ·G, folded into transpose flags.
        const tA = !!node.attrs.transA;
        const tB = !!node.attrs.transB;
        const [a, bb] = x;
        const mm = (p: number, q: number, transA: boolean, transB: boolean) => b.emit('matmul', [p, q], { transA, transB });
        const da = () => (tA ? mm(bb, g, tB, true) : mm(g, bb, false, !tB));
        const db = () => (tB ? mm(g, a, true, tA) : mm(a, g, !tA, false));
        return [need[0] ? unbroadcast(b, da(), b.node(a).shape) : null, need[1] ? unbroadcast(b, db(), b.node(bb).shape) : null];
      },
    },
    eval: ({ node, ins, shapes }) => matmul(node.shape, ins[0], ins[1], shapes[0], shapes[1], !!node.attrs.transA, !!node.attrs.transB),
    flops: (n, ins) => {
      const a = ins[0];
      return 2 * numel(n.shape) * (n.attrs.transA ? a[a.length - 2] : a[a.length - 1]);
    },
  },
  conv2d: {
    kind: 'contraction',
    arity: 2,
    epilogue: true,
    type: (ins, a) => {
      const [x, w] = [ins[0].shape, ins[1].shape];
      need(x.length === 4 && w.length === 4, `conv2d needs x [N, C, H, W] and weight [O, C/groups, kH, kW], got ${shapeStr(x)} and ${shapeStr(w)}`);
      const g = a.groups ?? 1;
      const [sh, sw] = pair(a.stride, 'stride');
      const [ph, pw] = pair(a.padding, 'padding');
      const [dh, dw] = pair(a.dilation, 'dilation');
      need(x[1] === w[1] * g, `conv2d: input has ${x[1]} channels, weight ${shapeStr(w)} expects ${w[1] * g} (groups ${g})`);
      need(w[0] % g === 0, `conv2d: ${w[0]} output channels not divisible by groups ${g}`);
      const oh = convOut(x[2], w[2], sh, ph, dh);
      const ow = convOut(x[3], w[3], sw, pw, dw);
      need(oh > 0 && ow > 0, `conv2d: input ${shapeStr(x)} is smaller than kernel ${w[2]}x${w[3]}`);
      return f32([x[0], w[0], oh, ow]);
    },
    grad: {
      vjp: ({ b, g, x, need, node }) => {
        const [xs, ws] = [b.node(x[0]).shape, b.node(x[1]).shape];
        const conv = pick(node.attrs, CONV_ATTRS);
        return [
          need[0] ? b.emit('conv2d_grad_input', [g, x[1]], { ...conv, inputSize: [xs[2], xs[3]] }) : null,
          need[1] ? b.emit('conv2d_grad_weight', [x[0], g], { ...conv, kernelSize: [ws[2], ws[3]] }) : null,
        ];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const out = new Float64Array(numel(node.shape));
      const [x, w] = ins;
      convTaps(convGeometry(node.attrs, shapes[0], shapes[1], node.shape), (xi, wi, yi) => (out[yi] += x[xi] * w[wi]));
      return out;
    },
    flops: (n, ins) => convFlops(n.shape, ins[1]),
  },
  conv2d_grad_input: {
    kind: 'contraction',
    arity: 2, // (dy, w)
    epilogue: true,
    type: (ins, a) => {
      const [dy, w] = [ins[0].shape, ins[1].shape];
      const [h, wd] = a.inputSize;
      const g = a.groups ?? 1;
      need(
        dy.length === 4 && w.length === 4,
        `conv2d_grad_input needs dy [N, O, OH, OW] and weight [O, C/groups, kH, kW], got ${shapeStr(dy)} and ${shapeStr(w)}`,
      );
      need(dy[1] === w[0] && w[0] % g === 0, `conv2d_grad_input: dy ${shapeStr(dy)} does not fit weight ${shapeStr(w)} with groups ${g}`);
      return f32([dy[0], w[1] * g, h, wd]);
    },
    grad: {
      vjp: ({ b, g, x, need, node }) => {
        const ws = b.node(x[1]).shape;
        const conv = pick(node.attrs, CONV_ATTRS);
        return [
          need[0] ? b.emit('conv2d', [g, x[1]], conv) : null,
          need[1] ? b.emit('conv2d_grad_weight', [g, x[0]], { ...conv, kernelSize: [ws[2], ws[3]] }) : null,
        ];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const out = new Float64Array(numel(node.shape));
      const [dy, w] = ins;
      convTaps(convGeometry(node.attrs, node.shape, shapes[1], shapes[0]), (xi, wi, yi) => (out[xi] += dy[yi] * w[wi]));
      return out;
    },
    flops: (_n, ins) => convFlops(ins[0], ins[1]),
  },
  conv2d_grad_weight: {
    kind: 'contraction',
    arity: 2, // (x, dy)
    epilogue: true,
    type: (ins, a) => {
      const [x, dy] = [ins[0].shape, ins[1].shape];
      const [kh, kw] = a.kernelSize;
      return f32([dy[1], x[1] / (a.groups ?? 1), kh, kw]);
    },
    grad: {
      vjp: ({ b, g, x, need, node }) => {
        const xs = b.node(x[0]).shape;
        const conv = pick(node.attrs, CONV_ATTRS);
        return [
          need[0] ? b.emit('conv2d_grad_input', [x[1], g], { ...conv, inputSize: [xs[2], xs[3]] }) : null,
          need[1] ? b.emit('conv2d', [x[0], g], conv) : null,
        ];
      },
    },
    eval: ({ node, ins, shapes }) => {
      const out = new Float64Array(numel(node.shape));
      const [x, dy] = ins;
      convTaps(convGeometry(node.attrs, shapes[0], node.shape, shapes[1]), (xi, wi, yi) => (out[wi] += x[xi] * dy[yi]));
      return out;
    },
    flops: (n, ins) => convFlops(ins[1], n.shape),
  },
} satisfies OpTablePart;
