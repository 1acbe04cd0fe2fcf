// Elementwise codegen: an expression compiler that evaluates any DAG of
// elementwise and layout ops at one flat index, reading materialised tensors
// from storage buffers. It is used for
//   - standalone and fused elementwise kernels (one thread per output element),
//   - prologues (a reduction's input computed on the fly) and
//   - epilogues (an elementwise tail applied to a matmul/conv/reduction result).
// Values are memoised per (node, index) so a node read twice at the same index
// is computed once; a node read under a broadcast is recomputed per element,
// which is cheap and keeps every kernel a single pass.

import type { Graph, Node, Shape } from '../ir.ts';
import { numel, shapeStr } from '../ir.ts';
import { INLINE_LEAVES, normAxis } from '../ops/index.ts';
import type { Epilogue, Kernel } from './kernel.ts';
import { KernelBuilder, perElement, kernelName, wgslType, type RenderOptions } from './wgsl.ts';
import { broadcastIndex, coordExpr } from './layout.ts';
import { type ExprContext, type Index, renderExpression } from './expressions.ts';

/**
 * Four output elements per invocation (renderElementwise's vector mode): the
 * root is evaluated in a loop over lane `k` at flat index `e = 4·i4 + k`, and
 * every tensor read at `e` is loaded once as a vec4 before the loop. On
 * llvmpipe each storage access is a per-lane scalar loop with bounds checks,
 * so one vec4 access instead of four scalar ones makes an elementwise kernel
 * about 3x faster (1M-element multiply-add: 14 ms -> 5 ms on the CI machine).
 * The unrolled lanes make the pipeline ~3x slower for LLVM to compile, so
 * only outputs of at least VECTOR_MIN_ELEMENTS get it: below that a scalar
 * kernel runs in well under a millisecond anyway.
 */
export const VECTOR_MIN_ELEMENTS = 16384;

export interface LaneMode {
  /** The per-lane flat index ('e'). */
  index: string;
  /** The lane within the vec4 ('k'). */
  lane: string;
  /** Tensors read at the lane index, filled while compiling. */
  laneReads: Set<number>;
  /** Tensors bound as vec4 arrays -> the `let` holding this invocation's vec4. */
  vectors: Map<number, string>;
}

/**
 * Generates WGSL statements computing node values at flat indices. `inline`
 * holds the nodes computed in place (each by its expression renderer,
 * expressions.ts); every other node is loaded from its buffer through the
 * KernelBuilder. Inline constants ('full', 'iota') are always computed.
 * `substitute` replaces a node by a WGSL expression (an epilogue's `v`); that
 * node may only be read at the compiler's root index.
 */
export class ExprCompiler implements ExprContext {
  private lines: string[] = [];
  private depth = 1;
  private scopes: Map<string, string>[] = [new Map()];
  private counter = 0;
  /**
   * Whether the code so far computes coordinates or remapped indices, i.e.
   * depends on tensor shapes. A shape-free expression reads every tensor at
   * the flat index (or a scalar at 0), so its kernel can serve any size.
   */
  shapeDependent = false;
  /** Vector mode (see LaneMode); the root index is then lanes.index. */
  lanes?: LaneMode;

  constructor(
    readonly graph: Graph,
    private inline: Set<number>,
    readonly builder: KernelBuilder,
    private substitute?: { node: number; expr: string; index: string },
  ) {}

  /** The statements emitted so far. */
  code(): string {
    return this.lines.join('\n');
  }

  /** The root's value expression, once compiled (renderElementwise). */
  resultExpr = '';

  /** Sets the indentation depth of emitted lines. */
  indent(depth: number): void {
    this.depth = depth;
  }

  emit(line: string): void {
    this.lines.push('  '.repeat(this.depth) + line);
  }

  fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  private lookup(key: string): string | undefined {
    for (let s = this.scopes.length - 1; s >= 0; s--) {
      const v = this.scopes[s].get(key);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  private remember(key: string, v: string): string {
    this.scopes[this.scopes.length - 1].set(key, v);
    return v;
  }

  /** Emits `let` for an expression unless it is already a plain name or literal. */
  bind(expr: string, prefix = 'v'): string {
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(expr) || /^\d+u$/.test(expr)) return expr;
    const name = this.fresh(prefix);
    this.emit(`let ${name} = ${expr};`);
    return name;
  }

  /** Runs `body` inside `header { ... }`, scoping memoised values to the block. */
  block(header: string, body: () => void): void {
    this.emit(`${header} {`);
    this.depth++;
    this.scopes.push(new Map());
    body();
    this.scopes.pop();
    this.depth--;
    this.emit('}');
  }

  index(name: string, shape: Shape): Index {
    return { name, shape };
  }

  coord(ix: Index, axis: number): string {
    this.shapeDependent = true;
    const key = `c|${ix.name}|${shapeStr(ix.shape)}|${axis}`;
    return this.lookup(key) ?? this.remember(key, this.bind(coordExpr(ix.name, ix.shape, axis), 'c'));
  }

  derive(ix: Index, shape: Shape, expr: string): Index {
    if (expr === ix.name) return { name: ix.name, shape };
    if (expr !== '0u') this.shapeDependent = true;
    return { name: this.bind(expr, 'ix'), shape };
  }

  private broadcast(ix: Index, inShape: Shape): Index {
    return this.derive(
      ix,
      inShape,
      broadcastIndex(ix.shape, inShape, ix.name, (a) => this.coord(ix, a)),
    );
  }

  /** Input `k` of `node` read at `ix` under numpy broadcasting. */
  input(node: { inputs: number[] }, ix: Index, k: number): string {
    const src = this.graph.nodes[node.inputs[k]];
    return this.value(src.id, this.broadcast(ix, src.shape));
  }

  /** The WGSL expression (usually a `let` name) of `node` at flat index `ix` into node.shape. */
  value(id: number, ix: Index): string {
    const node = this.graph.nodes[id];
    if (this.substitute && this.substitute.node === id) {
      if (ix.name !== this.substitute.index) throw new Error(`internal: epilogue input %${id} read at a remapped index ${ix.name}`);
      return this.substitute.expr;
    }
    const key = `${id}@${ix.name}`;
    const memo = this.lookup(key);
    if (memo !== undefined) return memo;
    const v = this.compute(node, ix);
    return this.remember(key, v);
  }

  private compute(node: Node, ix: Index): string {
    if (INLINE_LEAVES.has(node.op) || this.inline.has(node.id)) return renderExpression(this, node, ix);
    const b = this.builder;
    const lanes = this.lanes;
    // An aliased tensor is overwritten in place at the root index: reading it anywhere else would race.
    if (b.isAliased(node.id) && ix.name !== (lanes?.index ?? 'i'))
      throw new Error(`internal: in-place tensor %${node.id} read at index ${ix.name}, not the written element`);
    const binding = b.read(node.id, node.dtype);
    if (lanes && ix.name === lanes.index) {
      lanes.laneReads.add(node.id);
      const vec = lanes.vectors.get(node.id);
      if (vec) return `${vec}[${lanes.lane}]`;
    }
    if (b.isVector(node.id)) return this.bind(`${binding}[${ix.name} >> 2u][${ix.name} & 3u]`, 'x');
    return this.bind(`${binding}[${ix.name}]`, 'x');
  }
}

/**
 * One kernel computing `root` elementwise over its shape, with the nodes in
 * `inline` computed in place (a fused group) and everything else loaded.
 * `inPlace` names a tensor the kernel overwrites with root (a state update):
 * it is read through the output binding, only at the element being written.
 * Large outputs whose size is a multiple of 4 get four elements per
 * invocation (LaneMode); a shape-free kernel is bounded by its output binding's length
 * instead of a baked count, so one pipeline serves every size (e.g. the
 * optimizer update of every parameter).
 */
export function renderElementwise(graph: Graph, root: number, inline: Set<number>, opts: RenderOptions, inPlace?: number): Kernel {
  const node = graph.nodes[root];
  const count = numel(node.shape);
  const vector = count % 4 === 0 && count >= VECTOR_MIN_ELEMENTS;
  // A first pass finds the tensors read at the output's own index; the second binds them as vec4 arrays.
  const probe = vector ? compileElementwise(graph, root, inline, inPlace, new Map()) : undefined;
  const vectors = new Map<number, string>();
  for (const t of probe?.ec.lanes?.laneReads ?? []) vectors.set(t, `vec${vectors.size}`);
  if (inPlace !== undefined && vector) vectors.set(inPlace, 'vec_state');
  const { ec, builder, out } = compileElementwise(graph, root, inline, inPlace, vector ? vectors : undefined);
  const t = wgslType(node.dtype);
  let body: string;
  let bound: string;
  if (vector) {
    // Hoisted vec4 loads; an in-place state is loaded through the output binding before it is overwritten.
    const loads = [...vectors].map(([tensor, name]) => `  let ${name} = ${builder.read(tensor, graph.nodes[tensor].dtype)}[i];`);
    body = `${loads.join('\n')}
  var result: vec4<${t}>;
  for (var k = 0u; k < 4u; k++) {
    let e = i * 4u + k;
${ec.code()}
    result[k] = ${ec.resultExpr};
  }
  ${out}[i] = result;`;
    bound = ec.shapeDependent ? `${count / 4}u` : `arrayLength(&${out})`;
  } else {
    body = `${ec.code()}\n  ${out}[i] = ${ec.resultExpr};`;
    bound = ec.shapeDependent ? `${count}u` : `arrayLength(&${out})`;
  }
  const { main, workgroups } = perElement(vector ? count / 4 : count, opts.maxWorkgroupsPerDim, body, 256, bound);
  const members = [...inline].filter((n) => n !== root && !INLINE_LEAVES.has(graph.nodes[n].op)).length;
  const { decls, bindings } = builder.finish();
  return {
    name: kernelName(members ? `fused_${node.op}` : node.op, node.shape),
    wgsl: `${decls}\n\n${main}\n`,
    entryPoint: 'main',
    bindings,
    workgroups,
    flops: count * (members + 1),
  };
}

/** The tensors a kernel evaluating `id` loads: `id` itself unless computed in place, else those its inline producers read. */
function loadedTensors(graph: Graph, id: number, inline: Set<number>, into = new Set<number>()): Set<number> {
  const n = graph.nodes[id];
  if (INLINE_LEAVES.has(n.op)) return into;
  if (!inline.has(id)) into.add(id);
  else for (const x of n.inputs) loadedTensors(graph, x, inline, into);
  return into;
}

/**
 * A concat whose inputs need more storage buffers than one kernel may bind
 * (`maxBindings`, the output's included), as several kernels. Each takes a
 * run of consecutive inputs that fits, computes their concat -- the slab of
 * the output those inputs cover along the axis -- and stores it at the slab's
 * place in the output. `inPlace` as for renderElementwise.
 */
export function renderConcatSlabs(graph: Graph, root: number, inline: Set<number>, opts: RenderOptions, maxBindings: number, inPlace?: number): Kernel[] {
  const node = graph.nodes[root];
  if (node.op !== 'concat') throw new Error(`internal: renderConcatSlabs of ${node.op} (node %${root})`);
  const axis = normAxis(node.attrs.axis, node.shape.length);
  const members = new Set([...inline].filter((m) => m !== root));
  // Runs of consecutive inputs whose loads, with the output, fit the binding limit.
  const runs: number[][] = [];
  let run: number[] = [];
  let loads = new Set<number>();
  for (const x of node.inputs) {
    const mine = loadedTensors(graph, x, members);
    if (mine.size + 1 > maxBindings)
      throw new Error(`concat input %${x} (node %${root}) alone needs ${mine.size + 1} storage buffers; the device allows ${maxBindings}`);
    const joined = new Set([...loads, ...mine]);
    if (run.length && joined.size + 1 > maxBindings) {
      runs.push(run);
      run = [];
      loads = mine;
    } else loads = joined;
    run.push(x);
  }
  runs.push(run);

  const inner = numel(node.shape.slice(axis + 1));
  const axisLen = node.shape[axis];
  const kernels: Kernel[] = [];
  let start = 0;
  for (const inputs of runs) {
    const span = inputs.reduce((s, x) => s + graph.nodes[x].shape[axis], 0);
    // The slab as a node of its own: the concat of this run, shaped like its part of the output.
    const slab: Node = { ...node, id: graph.nodes.length, inputs, shape: node.shape.map((d, k) => (k === axis ? span : d)) };
    const slabGraph: Graph = { ...graph, nodes: [...graph.nodes, slab] };
    const builder = new KernelBuilder();
    const out = builder.write(root, node.dtype);
    if (inPlace !== undefined) builder.alias(inPlace, out);
    const ec = new ExprCompiler(slabGraph, new Set([...members, slab.id]), builder);
    const value = ec.value(slab.id, ec.index('i', slab.shape));
    // Slab element i (row-major over the slab) is output element (i / (span·inner))·(axisLen·inner) + start·inner + i % (span·inner).
    const row = span * inner;
    const outer = numel(node.shape.slice(0, axis));
    const at = outer === 1 ? `i + ${start * inner}u` : `(i / ${row}u) * ${axisLen * inner}u + ${start * inner}u + i % ${row}u`;
    const count = numel(slab.shape);
    const { main, workgroups } = perElement(count, opts.maxWorkgroupsPerDim, `${ec.code()}\n  ${out}[${at}] = ${value};`);
    const { decls, bindings } = builder.finish();
    kernels.push({
      name: `${kernelName('concat', node.shape)}_slab${start}to${start + span}`,
      wgsl: `${decls}\n\n${main}\n`,
      entryPoint: 'main',
      bindings,
      workgroups,
      flops: count,
    });
    start += span;
  }
  return kernels;
}

/** Compiles the root's expression; with `vectors`, in vector mode (lane index `e`, those tensors bound as vec4). */
function compileElementwise(graph: Graph, root: number, inline: Set<number>, inPlace: number | undefined, vectors?: Map<number, string>) {
  const node = graph.nodes[root];
  const builder = new KernelBuilder();
  const out = builder.write(root, node.dtype);
  if (inPlace !== undefined) builder.alias(inPlace, out);
  const ec = new ExprCompiler(graph, new Set([...inline, root]), builder);
  if (vectors) {
    builder.vectorize(root);
    for (const t of vectors.keys()) if (t !== inPlace) builder.vectorize(t);
    ec.lanes = { index: 'e', lane: 'k', laneReads: new Set(), vectors };
    ec.indent(2);
  }
  ec.resultExpr = ec.value(root, ec.index(vectors ? 'e' : 'i', node.shape));
  return { ec, builder, out };
}

/**
 * A WGSL function `fn NAME(i: u32) -> T` computing node `id` at flat index i,
 * with the nodes in `inline` computed in place. Used for reduction prologues.
 */
export function renderLoader(graph: Graph, id: number, inline: Set<number>, builder: KernelBuilder, fnName: string): { code: string; shapeDependent: boolean } {
  const node = graph.nodes[id];
  const ec = new ExprCompiler(graph, inline, builder);
  const v = ec.value(id, ec.index('i', node.shape));
  return { code: `fn ${fnName}(i: u32) -> ${wgslType(node.dtype)} {\n${ec.code()}\n  return ${v};\n}`, shapeDependent: ec.shapeDependent };
}

/**
 * An elementwise tail fused into the kernel that produces `producer`: the
 * Epilogue computes `root` from the producer's value `v` at flat index `i`.
 * Requires root and producer to have the same shape and the producer to be read
 * only at that index (checked by the fusion pass; the compiler re-checks).
 */
export class FusedEpilogue implements Epilogue {
  readonly extra: number[];
  readonly helpers: string[];
  private outputName?: string;

  /**
   * `inPlace`: a tensor the kernel overwrites with root (a state update); the
   * epilogue reads it through the kernel's output binding, which the
   * generator names with bindOutput() before rendering.
   */
  constructor(
    private graph: Graph,
    readonly producer: number,
    readonly root: number,
    private inline: Set<number>,
    readonly inPlace?: number,
  ) {
    const probe = this.build(0, 'lv_unbound_output');
    this.extra = probe.builder.readTensors();
    this.helpers = probe.builder.helperNames();
  }

  /** Names the kernel's output variable (required when the epilogue updates a tensor in place). */
  bindOutput(name: string): void {
    this.outputName = name;
  }

  private build(firstBinding: number, outputName = this.outputName): { builder: KernelBuilder; code: string } {
    const builder = new KernelBuilder('ep_', firstBinding);
    if (this.inPlace !== undefined) {
      if (!outputName) throw new Error(`internal: in-place epilogue of %${this.root} rendered without its output binding`);
      builder.alias(this.inPlace, outputName);
    }
    const ec = new ExprCompiler(this.graph, new Set([...this.inline, this.root]), builder, { node: this.producer, expr: 'v', index: 'i' });
    const r = ec.value(this.root, ec.index('i', this.graph.nodes[this.root].shape));
    return { builder, code: `fn epilogue(v: f32, i: u32) -> f32 {\n${ec.code()}\n  return ${r};\n}` };
  }

  render(firstBinding: number): { decls: string; code: string } {
    const { builder, code } = this.build(firstBinding);
    return { decls: builder.finish().decls, code };
  }
}
