// Reductions: sum and max over any axis set, and the numerically stable
// logsumexp / softmax / log_softmax along one axis. All share one geometry: every output
// element o ("row") combines the input elements at base(o) + offset(r) for r in
// [0, R). Adjacent axes of the same kind are merged first, so the common cases
// reduce to `o * R + r` (trailing axes) or `outer/inner` strides.
//
// Two kernel shapes:
//  - tree: one workgroup per row, threads stride over r, then a shared-memory
//    tree combine. Used when rows are long (trailing axes) or few.
//  - loop: one thread per row, a serial loop over r. Used for short rows and
//    for strided rows when there are many of them (adjacent threads then read
//    adjacent addresses, so the loads coalesce).
// The input may be a fused elementwise prologue (evaluated in `load_x`), and
// the result may pass through a fused epilogue.

import type { DType, Graph, Node, OpName, Shape } from '../ir.ts';
import { numel, stridesOf } from '../ir.ts';
import type { Kernel } from './kernel.ts';
import { FusedEpilogue, renderLoader } from './elementwise.ts';
import { coordExpr } from './layout.ts';
import { KernelBuilder, type KernelRenderer, applyEpilogue, entry, flatGrid, kernelName, lowestOf, wgslType, zeroOf, type RenderOptions } from './wgsl.ts';

type ReduceNode = Extract<Node, { op: 'sum' | 'max' | 'logsumexp' | 'softmax' | 'log_softmax' }>;

/** Input indexing of a reduction: which axes are kept, which are reduced, after merging neighbours. */
export interface ReduceGeometry {
  keptShape: Shape;
  keptStrides: number[]; // input strides of the kept (merged) axes
  redShape: Shape;
  redStrides: number[];
  rows: number; // O: number of output rows
  length: number; // R: elements per row
  /** Reduced axes are exactly the trailing ones: row o is the contiguous range [o*R, (o+1)*R). */
  contiguous: boolean;
}

export function reduceGeometry(inShape: Shape, axes: number[]): ReduceGeometry {
  const rank = inShape.length;
  const reduced = new Set(axes.map((a) => (a < 0 ? a + rank : a)));
  const strides = stridesOf(inShape);
  // Merge runs of adjacent axes of the same kind (size-1 axes join either run).
  const groups: { red: boolean; dim: number; stride: number }[] = [];
  for (let a = 0; a < rank; a++) {
    const red = reduced.has(a);
    if (inShape[a] === 1) continue; // contributes nothing to either index
    const last = groups[groups.length - 1];
    if (last && last.red === red && last.stride === inShape[a] * strides[a]) {
      last.dim *= inShape[a];
      last.stride = strides[a];
    } else groups.push({ red, dim: inShape[a], stride: strides[a] });
  }
  const kept = groups.filter((g) => !g.red);
  const red = groups.filter((g) => g.red);
  const rows = numel(kept.map((g) => g.dim));
  const length = numel(red.map((g) => g.dim));
  const contiguous = red.length === 0 || (red.length === 1 && groups[groups.length - 1].red);
  return {
    keptShape: kept.map((g) => g.dim),
    keptStrides: kept.map((g) => g.stride),
    redShape: red.map((g) => g.dim),
    redStrides: red.map((g) => g.stride),
    rows,
    length,
    contiguous,
  };
}

function linearIndex(flat: string, shape: Shape, strides: number[]): string {
  const parts = shape.map((_d, k) => {
    const c = coordExpr(flat, shape, k);
    return strides[k] === 1 ? c : `${c} * ${strides[k]}u`;
  });
  return parts.length ? parts.join(' + ') : '0u';
}

/** WGSL for the input index of (row `o`, element `r`). */
function baseExpr(g: ReduceGeometry, o: string): string {
  return linearIndex(o, g.keptShape, g.keptStrides);
}
function offsetExpr(g: ReduceGeometry, r: string): string {
  return linearIndex(r, g.redShape, g.redStrides);
}

/** Tree kernels for rows at least this long (or when rows are few); loop kernels otherwise. */
const TREE_MIN_LENGTH = 32;
/** Strided rows use the loop kernel once there are this many rows to occupy the device. */
const LOOP_MIN_ROWS = 4096;

function useTree(g: ReduceGeometry): boolean {
  if (g.length < TREE_MIN_LENGTH) return g.rows < 64 && g.length > 4;
  return g.contiguous || g.rows < LOOP_MIN_ROWS;
}

/**
 * Threads per row in tree kernels: 32 or 64. Wider trees add barrier steps,
 * which make llvmpipe's JIT (the CI device) several times slower to compile,
 * while 64 threads already saturate memory bandwidth for rows this engine sees.
 */
function treeSize(length: number): number {
  return length > 32 ? 64 : 32;
}

/**
 * A running reduction state: `step` folds one element in, `merge` combines two
 * partial states (for the tree's final combine).
 */
interface Accumulator {
  type: string;
  init: string;
  step: (acc: string, x: string) => string;
  merge: (a: string, b: string) => string;
  /** The combined state of a whole subgroup (every lane gets it). */
  subgroup: (a: string) => string;
}

function accumulatorOf(op: string, dtype: DType): Accumulator {
  const type = wgslType(dtype);
  if (op === 'sum') return { type, init: zeroOf(dtype), step: (a, x) => `${a} + ${x}`, merge: (a, b) => `${a} + ${b}`, subgroup: (a) => `subgroupAdd(${a})` };
  if (op === 'max' && dtype === 'f32') {
    // NaN propagates (PyTorch's amax); WGSL's max and subgroupMax may drop it.
    return {
      type,
      init: lowestOf(dtype),
      step: (a, x) => `lovt_max(${a}, ${x})`,
      merge: (a, b) => `lovt_max(${a}, ${b})`,
      subgroup: (a) => `lovt_max_subgroup(${a})`,
    };
  }
  if (op === 'max')
    return { type, init: lowestOf(dtype), step: (a, x) => `max(${a}, ${x})`, merge: (a, b) => `max(${a}, ${b})`, subgroup: (a) => `subgroupMax(${a})` };
  // logsumexp / softmax / log_softmax: (running max, sum of exp(x - max)) in one pass ("online softmax").
  return {
    type: 'vec2<f32>',
    init: 'vec2<f32>(-lovt_inf(), 0.0)',
    step: (a, x) => `lovt_online_step(${a}, ${x})`,
    merge: (a, b) => `lovt_online_merge(${a}, ${b})`,
    subgroup: (a) => `lovt_online_subgroup(${a})`,
  };
}

/** How a row is reduced: one thread per row, a workgroup tree, or one subgroup per row. */
type RowKernel = 'loop' | 'tree' | 'subgroup';

/**
 * Emits WGSL reducing `term(r)` over the row into `result`, then `finish`
 * (statements using `result`). Tree kernels use one barrier: each thread folds
 * a strided slice, then thread 0 merges the partials serially (llvmpipe, the CI
 * device, compiles every barrier slowly; 64 serial merges cost a GPU well under
 * a microsecond). Subgroup kernels (a workgroup is one subgroup) combine the
 * lanes' partials with subgroup operations: no shared memory, no barrier --
 * on lavapipe about twice as fast to run and 40% faster to compile. With
 * `broadcast`, every thread of the row sees `result`; otherwise `finish` runs
 * on thread 0 only.
 */
function rowReduce(kind: RowKernel, wg: number, length: string, acc: Accumulator, term: (r: string) => string, finish: string, broadcast: boolean): string {
  const head = `  var part: ${acc.type} = ${acc.init};
  for (var r = lid; r < ${length}; r += ${wg}u) { part = ${acc.step('part', term('r'))}; }
`;
  if (kind === 'subgroup') {
    const combined = `${head}  let result = ${acc.subgroup('part')};
`;
    return broadcast
      ? `${combined}${finish}`
      : `${combined}  if (lid == 0u) {
  ${finish.trim()}
  }`;
  }
  const tree = kind === 'tree';
  if (!tree)
    return `  var result: ${acc.type} = ${acc.init};
  for (var r = 0u; r < ${length}; r++) { result = ${acc.step('result', term('r'))}; }
${finish}`;
  const merged = `var merged = red_part[0];
    for (var k = 1u; k < ${wg}u; k++) { merged = ${acc.merge('merged', 'red_part[k]')}; }`;
  const shared = `${head}  red_part[lid] = part;
  workgroupBarrier();
`;
  if (!broadcast)
    return `${shared}  if (lid == 0u) {
    ${merged}
    let result = merged;
  ${finish.trim()}
  }`;
  return `${shared}  if (lid == 0u) {
    ${merged}
    red_part[0] = merged;
  }
  workgroupBarrier();
  let result = red_part[0];
${finish}`;
}

/**
 * Renders sum / max / logsumexp / softmax / log_softmax. `prologue` holds nodes fused into the
 * input (evaluated per element by `load_x`); opts.epilogue post-processes each
 * output element.
 */
export function renderReduce(graph: Graph, node: ReduceNode, opts: RenderOptions, prologue: Set<number> = new Set()): Kernel {
  const x = graph.nodes[node.inputs[0]];
  const axes = node.op === 'sum' || node.op === 'max' ? node.attrs.axes : [node.attrs.axis];
  const g = reduceGeometry(x.shape, axes);
  const tree = useTree(g);
  const kind: RowKernel = !tree ? 'loop' : opts.subgroupSize ? 'subgroup' : 'tree';
  const wg = kind === 'subgroup' ? opts.subgroupSize! : tree ? treeSize(g.length) : 256;
  const builder = new KernelBuilder();
  const epi = opts.epilogue;
  const { code: loader, shapeDependent } = renderLoader(graph, x.id, prologue, builder, 'load_x');
  // A whole contiguous tensor reduced by a shape-free loader: the length comes from a binding of
  // that length, so one pipeline serves every size (e.g. the training programs' NaN counts, one
  // per parameter).
  let length = `${g.length}u`;
  const whole =
    g.rows === 1 && g.contiguous && !shapeDependent
      ? builder.readTensors().find((t) => t < graph.nodes.length && numel(graph.nodes[t].shape) === g.length)
      : undefined;
  if (whole !== undefined) length = `arrayLength(&${builder.read(whole, graph.nodes[whole].dtype)})`;
  const outName = builder.write(node.id, node.dtype);
  if (epi instanceof FusedEpilogue) epi.bindOutput(outName); // an in-place epilogue reads the old value there
  const acc = accumulatorOf(node.op, node.dtype);
  const load = (r: string) => {
    const v = `load_x(base + ${offsetExpr(g, r)})`;
    return acc.type !== 'i32' && x.dtype === 'i32' ? `f32(${v})` : v;
  };
  if (node.op === 'logsumexp' || node.op === 'softmax' || node.op === 'log_softmax') {
    builder.use('lovt_online');
    if (kind === 'subgroup') builder.use('lovt_online_subgroup');
  } else if (node.op === 'max' && node.dtype === 'f32') {
    builder.use('lovt_inf'); // the f32 max identity is -inf
    builder.use(kind === 'subgroup' ? 'lovt_max_subgroup' : 'lovt_max');
    if (kind === 'subgroup') builder.use('lovt_max'); // the per-lane fold
  }
  let body: string;
  if (node.op === 'sum' || node.op === 'max') {
    body = rowReduce(kind, wg, length, acc, load, `  ${outName}[o] = ${writeValue(epi, 'result', 'o', node.dtype)};`, false);
  } else if (node.op === 'logsumexp') {
    // m + log(s); a row of -inf gives -inf + log(0) = -inf, as the reference does.
    body = rowReduce(kind, wg, length, acc, load, `  ${outName}[o] = ${applyEpilogue(epi, 'result.x + log(result.y)', 'o')};`, false);
  } else {
    // softmax, log_softmax: every thread of the row writes its elements; output index = input index.
    const start = tree ? 'lid' : '0u';
    const step = tree ? `${wg}u` : '1u';
    const [rowLet, value] =
      node.op === 'softmax'
        ? ['let inv = 1.0 / result.y;', `exp(${load('r')} - result.x) * inv`]
        : ['let log_s = log(result.y);', `(${load('r')} - result.x) - log_s`]; // (x - m) - ln s, as the reference
    body = rowReduce(
      kind,
      wg,
      length,
      acc,
      load,
      `  ${rowLet}
  for (var r = ${start}; r < ${length}; r += ${step}) {
    let j = base + ${offsetExpr(g, 'r')};
    ${outName}[j] = ${applyEpilogue(epi, value, 'j')};
  }`,
      true,
    );
  }
  const count = tree ? g.rows : Math.ceil(g.rows / wg);
  const { workgroups, flatId } = flatGrid(count, opts.maxWorkgroupsPerDim);
  const head = tree ? `  let o = ${flatId};\n  if (o >= ${g.rows}u) { return; }` : `  let o = ${flatId} * ${wg}u + lid;\n  if (o >= ${g.rows}u) { return; }`;
  const shared = kind === 'tree' ? `var<workgroup> red_part: array<${acc.type}, ${wg}>;\n` : '';
  const { decls, bindings } = builder.finish(epi);
  const enable = kind === 'subgroup' ? 'enable subgroups;\n' : '';
  const wgsl = `${enable}${decls}\n${shared}${loader}\n\n${entry(wg, `${head}\n  let base = ${baseExpr(g, 'o')};\n${body}`)}\n`;
  const flops = numel(x.shape) * (node.op === 'softmax' ? 5 : node.op === 'log_softmax' ? 4 : node.op === 'logsumexp' ? 3 : 1);
  const suffix = kind === 'tree' ? '' : `_${kind === 'loop' ? 'loop' : `sg${wg}`}`;
  return { name: kernelName(`${node.op}${suffix}`, node.shape), wgsl, entryPoint: 'main', bindings, workgroups, flops };
}

function writeValue(epi: RenderOptions['epilogue'], v: string, index: string, dtype: DType): string {
  if (!epi) return v;
  if (dtype !== 'f32') throw new Error('internal: epilogue on an i32 reduction');
  return applyEpilogue(epi, v, index);
}

const reduceKernel = {
  kernel: (graph: Graph, node: ReduceNode, opts: { inline: Set<number> } & RenderOptions) => renderReduce(graph, node, opts, opts.inline),
};

/** The renderer-table entries of the reductions. */
export const REDUCE_KERNELS = {
  sum: reduceKernel,
  max: reduceKernel,
  logsumexp: reduceKernel,
  softmax: reduceKernel,
  log_softmax: reduceKernel,
} satisfies { [P in OpName]?: KernelRenderer<P> };
