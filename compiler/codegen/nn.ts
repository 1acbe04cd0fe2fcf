// Pooling, resampling and indexing kernels. Every kernel here is deterministic:
// gradients are computed in "gather form" (each output element sums its own
// contributions in a fixed order) instead of scattering with atomics, so a
// resumed run reproduces an uninterrupted one bit for bit.
//
// Geometry is baked in: pooling windows as constants, upsampling taps as
// per-axis tables computed on the host in float64 (exactly the reference's
// source indices and weights, rounded once to f32).

import type { Graph, Node, NodeOf, OpName } from '../ir.ts';
import { numel } from '../ir.ts';
import { type PoolGeometry, poolGeometry, upsampleAxis } from '../ops/nn.ts';
import type { Kernel } from './kernel.ts';
import { KernelBuilder, type KernelRenderer, applyEpilogue, kernelName, literal, perElement, type RenderOptions } from './wgsl.ts';

/** One-thread-per-output-element kernel around `body`, which must assign `var v: f32` (or write itself). */
function elementKernel(name: string, node: Node, b: KernelBuilder, opts: RenderOptions, body: string, flopsPerElement: number, preamble = ''): Kernel {
  const out = b.write(node.id, node.dtype);
  const count = numel(node.shape);
  const write = node.dtype === 'f32' ? applyEpilogue(opts.epilogue, 'v', 'i') : 'v';
  const { main, workgroups } = perElement(count, opts.maxWorkgroupsPerDim, `${body}\n  ${out}[i] = ${write};`);
  const { decls, bindings } = b.finish(opts.epilogue);
  return {
    name: kernelName(name, node.shape),
    wgsl: `${decls}\n${preamble}\n${main}\n`,
    entryPoint: 'main',
    bindings,
    workgroups,
    flops: count * flopsPerElement,
  };
}

// ---------------------------------------------------------------------------
// Pooling

/** WGSL declaring nc, oh, ow of flat output index i, and the window origin h0, w0 (signed). */
function windowOrigin(p: PoolGeometry): string {
  return `  let ow = i % ${p.OW}u;
  let oh = (i / ${p.OW}u) % ${p.OH}u;
  let nc = i / ${p.OW * p.OH}u;
  let h0 = i32(oh * ${p.sh}u) - ${p.ph}i;
  let w0 = i32(ow * ${p.sw}u) - ${p.pw}i;`;
}

/** WGSL looping over the in-bounds taps of the window at (nc, h0, w0); `body` sees `xi`, the flat x index (i32). */
function windowTaps(p: PoolGeometry, body: string): string {
  return `for (var a = 0i; a < ${p.kh}i; a++) {
      let hh = h0 + a;
      if (hh < 0i || hh >= ${p.H}i) { continue; }
      for (var c = 0i; c < ${p.kw}i; c++) {
        let ww = w0 + c;
        if (ww < 0i || ww >= ${p.W}i) { continue; }
        let xi = i32(nc) * ${p.H * p.W}i + hh * ${p.W}i + ww;
        ${body}
      }
    }`;
}

/** Whether running-maximum candidate `v` replaces `best`: larger, or the first NaN (NaN propagates, as in PyTorch). Needs lovt_isnan. */
function beats(v: string, best: string): string {
  return `${v} > ${best} || (lovt_isnan(${v}) && !lovt_isnan(${best}))`;
}

/**
 * WGSL computing `best` (value) and `arg` (flat x index, -1 if the window is
 * all padding) for the window at (nc, h0, w0): the first maximum in row-major order.
 */
function windowArgmax(p: PoolGeometry, x: string, b: KernelBuilder): string {
  b.use('lovt_isnan');
  return `var best = 0.0;
    var arg = -1i;
    ${windowTaps(
      p,
      `let xv = ${x}[xi];
        if (arg < 0i || ${beats('xv', 'best')}) { best = xv; arg = xi; }`,
    )}`;
}

function renderMaxPool(graph: Graph, node: NodeOf<'max_pool2d'>, opts: RenderOptions): Kernel {
  const x = graph.nodes[node.inputs[0]];
  const p = poolGeometry(node.attrs, x.shape, node.shape);
  const b = new KernelBuilder();
  const xs = b.read(x.id, 'f32');
  const body = `${windowOrigin(p)}
  ${windowArgmax(p, xs, b)}
  let v = best;`;
  return elementKernel('max_pool2d', node, b, opts, body, p.kh * p.kw);
}

function renderAvgPool(graph: Graph, node: NodeOf<'avg_pool2d'>, opts: RenderOptions): Kernel {
  const x = graph.nodes[node.inputs[0]];
  const p = poolGeometry(node.attrs, x.shape, node.shape);
  const b = new KernelBuilder();
  const xs = b.read(x.id, 'f32');
  const body = `${windowOrigin(p)}
  var acc = 0.0;
  ${windowTaps(p, `acc += ${xs}[xi];`)}
  let v = acc / ${literal(p.kh * p.kw, 'f32')};`;
  return elementKernel('avg_pool2d', node, b, opts, body, p.kh * p.kw);
}

/**
 * WGSL looping over the output windows (oh, ow) that contain input element
 * (nc, ih, iw) of flat index i, in ascending (oh, ow) order: `visit` runs with
 * oh, ow (u32) and yi (flat dy index) in scope.
 */
function windowsContaining(p: PoolGeometry, visit: string): string {
  // oh*sh - ph <= ih < oh*sh - ph + kh  <=>  (ih + ph - kh) / sh < oh <= (ih + ph) / sh
  return `  let iw = i32(i % ${p.W}u);
  let ih = i32((i / ${p.W}u) % ${p.H}u);
  let nc = i / ${p.W * p.H}u;
  let oh_lo = max(0i, (ih + ${p.ph}i - ${p.kh}i + ${p.sh}i) / ${p.sh}i);
  let oh_hi = min(${p.OH - 1}i, (ih + ${p.ph}i) / ${p.sh}i);
  let ow_lo = max(0i, (iw + ${p.pw}i - ${p.kw}i + ${p.sw}i) / ${p.sw}i);
  let ow_hi = min(${p.OW - 1}i, (iw + ${p.pw}i) / ${p.sw}i);
  for (var oh_i = oh_lo; oh_i <= oh_hi; oh_i++) {
    for (var ow_i = ow_lo; ow_i <= ow_hi; ow_i++) {
      let oh = u32(oh_i);
      let ow = u32(ow_i);
      let yi = (nc * ${p.OH}u + oh) * ${p.OW}u + ow;
${visit}
    }
  }`;
}

/**
 * max_pool2d's gradient in gather form. Every input element sums dy over the
 * windows whose (first) maximum it is. The window argmaxes are computed once by
 * a first kernel (one thread per window) into a scratch buffer, so the gather
 * only compares indices (recomputing every containing window's argmax per
 * input element cost kh·kw times the loads: 47 of lovt-tiny's ~1000 ms step).
 */
function renderMaxPoolGrad(graph: Graph, node: NodeOf<'max_pool2d_grad'>, opts: RenderOptions): Kernel[] {
  const [x, dy] = node.inputs.map((i) => graph.nodes[i]);
  const p = poolGeometry(node.attrs, x.shape, dy.shape);
  const overlaps = Math.ceil(p.kh / p.sh) * Math.ceil(p.kw / p.sw);
  if (!opts.scratch) throw new Error(`internal: max_pool2d_grad (node %${node.id}) needs planner scratch for its window argmaxes`);
  // Pass 1: the argmax (flat x index, -1 for an all-padding window) of every output window.
  const windows = numel(dy.shape);
  const argmax = opts.scratch(windows, 'i32');
  const ab = new KernelBuilder();
  const xs = ab.read(x.id, 'f32');
  const out = ab.write(argmax, 'i32');
  const argMain = perElement(
    windows,
    opts.maxWorkgroupsPerDim,
    `${windowOrigin(p)}
  ${windowArgmax(p, xs, ab)}
  ${out}[i] = arg;`,
  );
  const argFinished = ab.finish();
  const argKernel: Kernel = {
    name: kernelName('max_pool2d_argmax', dy.shape),
    wgsl: `${argFinished.decls}\n\n${argMain.main}\n`,
    entryPoint: 'main',
    bindings: argFinished.bindings,
    workgroups: argMain.workgroups,
    flops: windows * p.kh * p.kw,
  };
  // Pass 2: each input element gathers dy from the windows it wins.
  const b = new KernelBuilder();
  const args = b.read(argmax, 'i32');
  const dys = b.read(dy.id, 'f32');
  const body = `  var acc = 0.0;
${windowsContaining(p, `      if (${args}[yi] == i32(i)) { acc += ${dys}[yi]; }`)}
  let v = acc;`;
  return [argKernel, elementKernel('max_pool2d_grad', node, b, opts, body, overlaps)];
}

function renderAvgPoolGrad(graph: Graph, node: NodeOf<'avg_pool2d_grad'>, opts: RenderOptions): Kernel {
  const dy = graph.nodes[node.inputs[0]];
  const p = poolGeometry(node.attrs, node.shape, dy.shape);
  const b = new KernelBuilder();
  const dys = b.read(dy.id, 'f32');
  const body = `  var acc = 0.0;
${windowsContaining(p, `      acc += ${dys}[yi];`)}
  let v = acc / ${literal(p.kh * p.kw, 'f32')};`;
  return elementKernel('avg_pool2d_grad', node, b, opts, body, Math.ceil(p.kh / p.sh) * Math.ceil(p.kw / p.sw));
}

// ---------------------------------------------------------------------------
// Upsampling: separable two-tap interpolation, with the reference's per-axis
// taps (upsampleAxis, computed in float64) baked in as tables.

function table(name: string, type: 'u32' | 'f32', values: ArrayLike<number>): string {
  const items = Array.from(values, (v) => (type === 'u32' ? `${v}u` : literal(v, 'f32')));
  return `var<private> ${name}: array<${type}, ${Math.max(1, values.length)}> = array<${type}, ${Math.max(1, values.length)}>(${items.length ? items.join(', ') : type === 'u32' ? '0u' : '0.0'});`;
}

/** For the gradient: per input index, the (output index, weight) pairs that read it, in ascending output order (CSR). */
function invertTaps(t: ReturnType<typeof upsampleAxis>, inSize: number): { start: number[]; out: number[]; weight: number[] } {
  const lists: [number, number][][] = Array.from({ length: inSize }, () => []);
  t.i0.forEach((i0, d) => {
    const w1 = t.w1[d];
    if (1 - w1 !== 0) lists[i0].push([d, 1 - w1]);
    if (w1 !== 0) lists[t.i1[d]].push([d, w1]);
  });
  const start = [0];
  const out: number[] = [];
  const weight: number[] = [];
  for (const l of lists) {
    // Merge the two taps of one output that land on the same input (edges): one weight per (input, output).
    const merged = new Map<number, number>();
    for (const [d, w] of l) merged.set(d, (merged.get(d) ?? 0) + w);
    for (const d of [...merged.keys()].sort((a, b) => a - b)) (out.push(d), weight.push(merged.get(d)!));
    start.push(out.length);
  }
  return { start, out, weight };
}

function renderUpsample(graph: Graph, node: NodeOf<'upsample2d'>, opts: RenderOptions): Kernel {
  const x = graph.nodes[node.inputs[0]];
  const [, , H, W] = x.shape;
  const [, , OH, OW] = node.shape;
  const { mode, alignCorners } = node.attrs;
  const ty = upsampleAxis(H, OH, mode, !!alignCorners);
  const tx = upsampleAxis(W, OW, mode, !!alignCorners);
  const b = new KernelBuilder();
  const xs = b.read(x.id, 'f32');
  const tables = [
    table('ty0', 'u32', ty.i0),
    table('ty1', 'u32', ty.i1),
    table('tyw', 'f32', ty.w1),
    table('tx0', 'u32', tx.i0),
    table('tx1', 'u32', tx.i1),
    table('txw', 'f32', tx.w1),
  ].join('\n');
  const body = `  let ow = i % ${OW}u;
  let oh = (i / ${OW}u) % ${OH}u;
  let base = (i / ${OW * OH}u) * ${H * W}u;
  let r0 = base + ty0[oh] * ${W}u;
  let r1 = base + ty1[oh] * ${W}u;
  let wy = tyw[oh];
  let wx = txw[ow];
  let top = ${xs}[r0 + tx0[ow]] * (1.0 - wx) + ${xs}[r0 + tx1[ow]] * wx;
  let bottom = ${xs}[r1 + tx0[ow]] * (1.0 - wx) + ${xs}[r1 + tx1[ow]] * wx;
  let v = top * (1.0 - wy) + bottom * wy;`;
  return elementKernel(`upsample2d_${mode}`, node, b, opts, body, 8, tables);
}

function renderUpsampleGrad(graph: Graph, node: NodeOf<'upsample2d_grad'>, opts: RenderOptions): Kernel {
  const dy = graph.nodes[node.inputs[0]];
  const [, , H, W] = node.shape;
  const [, , OH, OW] = dy.shape;
  const { mode, alignCorners } = node.attrs;
  const gy = invertTaps(upsampleAxis(H, OH, mode, !!alignCorners), H);
  const gx = invertTaps(upsampleAxis(W, OW, mode, !!alignCorners), W);
  const b = new KernelBuilder();
  const dys = b.read(dy.id, 'f32');
  const tables = [
    table('gy_start', 'u32', gy.start),
    table('gy_out', 'u32', gy.out),
    table('gy_w', 'f32', gy.weight),
    table('gx_start', 'u32', gx.start),
    table('gx_out', 'u32', gx.out),
    table('gx_w', 'f32', gx.weight),
  ].join('\n');
  const body = `  let iw = i % ${W}u;
  let ih = (i / ${W}u) % ${H}u;
  let base = (i / ${W * H}u) * ${OH * OW}u;
  var acc = 0.0;
  for (var a = gy_start[ih]; a < gy_start[ih + 1u]; a++) {
    let row = base + gy_out[a] * ${OW}u;
    var racc = 0.0;
    for (var c = gx_start[iw]; c < gx_start[iw + 1u]; c++) { racc += ${dys}[row + gx_out[c]] * gx_w[c]; }
    acc += racc * gy_w[a];
  }
  let v = acc;`;
  return elementKernel(`upsample2d_grad_${mode}`, node, b, opts, body, 8, tables);
}

// ---------------------------------------------------------------------------
// Indexing

function renderGather(graph: Graph, node: NodeOf<'gather'>, opts: RenderOptions): Kernel {
  const [tableNode, idx] = node.inputs.map((i) => graph.nodes[i]);
  const rows = tableNode.shape[0];
  const rowSize = numel(tableNode.shape.slice(1));
  const b = new KernelBuilder();
  const t = b.read(tableNode.id, tableNode.dtype);
  const ix = b.read(idx.id, 'i32');
  // Out-of-range indices (an error in the reference) read as 0 rather than out of bounds.
  const zero = tableNode.dtype === 'i32' ? '0i' : '0.0';
  const body = `  let r = ${ix}[i / ${rowSize}u];
  var v = ${zero};
  if (r >= 0i && r < ${rows}i) { v = ${t}[u32(r) * ${rowSize}u + i % ${rowSize}u]; }`;
  return elementKernel('gather', node, b, opts, body, 0);
}

/** Below this many (index, output element) pairs scatter_add scans all indices per output; above, it sorts first. */
const SCATTER_DIRECT_LIMIT = 1 << 16;

function renderScatterAdd(graph: Graph, node: NodeOf<'scatter_add'>, opts: RenderOptions): Kernel[] {
  const [idx, values] = node.inputs.map((i) => graph.nodes[i]);
  const rows = node.attrs.numRows;
  const n = numel(idx.shape);
  const rowSize = numel(node.shape.slice(1));
  if (n * rows <= SCATTER_DIRECT_LIMIT || !opts.scratch) {
    // Each output element sums the values of every index equal to its row, in index order.
    const b = new KernelBuilder();
    const ix = b.read(idx.id, 'i32');
    const vs = b.read(values.id, 'f32');
    const body = `  let r = i32(i / ${rowSize}u);
  let k = i % ${rowSize}u;
  var v = 0.0;
  for (var j = 0u; j < ${n}u; j++) { if (${ix}[j] == r) { v += ${vs}[j * ${rowSize}u + k]; } }`;
    return [elementKernel('scatter_add_scan', node, b, opts, body, n)];
  }
  // Sorted path. Pass 1: a stable counting sort by rank (O(n²) compares, fully parallel):
  // index j goes to position #{j' : key(j') < key(j) or (key(j') = key(j) and j' < j)}.
  // Out-of-range indices get key `rows` and sort last, where no output row looks.
  const perm = opts.scratch(n, 'i32');
  const sortedKeys = opts.scratch(n, 'i32');
  const sb = new KernelBuilder();
  const ix1 = sb.read(idx.id, 'i32');
  const permOut = sb.write(perm, 'i32');
  const keysOut = sb.write(sortedKeys, 'i32');
  const key = (e: string) => `select(${rows}i, ${e}, ${e} >= 0i && ${e} < ${rows}i)`;
  const sortBody = `  let kj = ${key(`${ix1}[i]`)};
  var rank = 0u;
  for (var j = 0u; j < ${n}u; j++) {
    let kk = ${key(`${ix1}[j]`)};
    if (kk < kj || (kk == kj && j < i)) { rank++; }
  }
  ${permOut}[rank] = i32(i);
  ${keysOut}[rank] = kj;`;
  const sortMain = perElement(n, opts.maxWorkgroupsPerDim, sortBody);
  const sortFinished = sb.finish();
  const sortKernel: Kernel = {
    name: kernelName('scatter_add_sort', [n]),
    wgsl: `${sortFinished.decls}\n\n${sortMain.main}\n`,
    entryPoint: 'main',
    bindings: sortFinished.bindings,
    workgroups: sortMain.workgroups,
    flops: n * n,
  };
  // Pass 2: each output element binary-searches its row's run and sums it in index order.
  const b = new KernelBuilder();
  const vs = b.read(values.id, 'f32');
  const pm = b.read(perm, 'i32');
  const ks = b.read(sortedKeys, 'i32');
  const body = `  let r = i32(i / ${rowSize}u);
  let k = i % ${rowSize}u;
  var lo = 0u;
  var hi = ${n}u;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (${ks}[mid] < r) { lo = mid + 1u; } else { hi = mid; }
  }
  var v = 0.0;
  for (var p = lo; p < ${n}u && ${ks}[p] == r; p++) { v += ${vs}[u32(${pm}[p]) * ${rowSize}u + k]; }`;
  return [sortKernel, elementKernel('scatter_add', node, b, opts, body, 1)];
}

function renderSegmentMax(graph: Graph, node: NodeOf<'segment_max'>, opts: RenderOptions): Kernel {
  const [x, seg] = node.inputs.map((i) => graph.nodes[i]);
  const [, T, D] = x.shape;
  const S = node.attrs.numSegments;
  const b = new KernelBuilder();
  const xs = b.read(x.id, 'f32');
  const ss = b.read(seg.id, 'i32');
  b.use('lovt_isnan');
  const body = `  let d = i % ${D}u;
  let s = i32((i / ${D}u) % ${S}u);
  let bt = (i / ${D * S}u) * ${T}u;
  var v = 0.0;
  var found = false;
  for (var t = 0u; t < ${T}u; t++) {
    if (${ss}[bt + t] != s) { continue; }
    let xv = ${xs}[(bt + t) * ${D}u + d];
    if (!found || ${beats('xv', 'v')}) { v = xv; found = true; }
  }`;
  return elementKernel('segment_max', node, b, opts, body, T);
}

function renderSegmentMaxGrad(graph: Graph, node: NodeOf<'segment_max_grad'>, opts: RenderOptions): Kernel {
  const [x, seg, dy] = node.inputs.map((i) => graph.nodes[i]);
  const [, T, D] = x.shape;
  const S = dy.shape[1];
  const b = new KernelBuilder();
  const xs = b.read(x.id, 'f32');
  const ss = b.read(seg.id, 'i32');
  const dys = b.read(dy.id, 'f32');
  // Token t receives dy iff it is the first arg-max of its segment: every earlier
  // token of the segment is strictly smaller and no later one is larger.
  const body = `  let d = i % ${D}u;
  let t = (i / ${D}u) % ${T}u;
  let bt = (i / ${D * T}u) * ${T}u;
  let s = ${ss}[bt + t];
  var v = 0.0;
  if (s >= 0i && s < ${S}i) {
    let xv = ${xs}[i];
    var first = true;
    for (var u = 0u; u < ${T}u; u++) {
      if (u == t || ${ss}[bt + u] != s) { continue; }
      let xu = ${xs}[(bt + u) * ${D}u + d];
      if ((u < t && xu >= xv) || (u > t && xu > xv)) { first = false; break; }
    }
    if (first) { v = ${dys}[((bt / ${T}u) * ${S}u + u32(s)) * ${D}u + d]; }
  }`;
  return elementKernel('segment_max_grad', node, b, opts, body, T);
}

/** The renderer-table entries of the pooling, resampling and indexing ops (each with an optional epilogue). */
export const NN_KERNELS = {
  max_pool2d: { kernel: renderMaxPool },
  avg_pool2d: { kernel: renderAvgPool },
  max_pool2d_grad: { kernel: renderMaxPoolGrad },
  avg_pool2d_grad: { kernel: renderAvgPoolGrad },
  upsample2d: { kernel: renderUpsample },
  upsample2d_grad: { kernel: renderUpsampleGrad },
  gather: { kernel: renderGather },
  scatter_add: { kernel: renderScatterAdd },
  segment_max: { kernel: renderSegmentMax },
  segment_max_grad: { kernel: renderSegmentMaxGrad },
} satisfies { [P in OpName]?: KernelRenderer<P> };
