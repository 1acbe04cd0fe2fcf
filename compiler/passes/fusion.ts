// Fusion: partitions a graph's nodes into kernel groups.
//
//  - elementwise group: a root elementwise/layout op plus the producers it can
//    compute in place (chains of elementwise ops, broadcasts, transposes, ...).
//  - anchored group: a reduction, contraction (matmul/conv) or nn op, with an
//    optional *prologue* (elementwise producers of a reduction's input,
//    evaluated while loading) and an optional *epilogue* (an elementwise tail
//    applied to the anchor's result before it is stored).
//
// A producer joins a group only when every one of its consumers is already in
// that group, so no group ever needs a value computed inside another, the
// groups stay acyclic, and ordering groups by their root id is a valid
// schedule; and only when those consumers all read it at the same index, so no
// value is computed twice per output element. An anchor becomes an epilogue's input only when the tail reads it
// at the tail's own flat index (same shape, no broadcast/transposition) and it
// has that single consumer. 'full' and 'iota' are compiled inline wherever an
// expression reads them; reshape/stop_gradient left outside a group are views
// of their input's buffer. Groups never bind more storage buffers than the
// device allows (maxStorageBuffersPerShaderStage): a producer that would push
// a group over stays outside. Only a concat can exceed the limit on its own;
// codegen splits it into kernels over runs of its inputs (renderConcatSlabs).

import type { Graph, Node, OpName } from '../ir.ts';
import { numel } from '../ir.ts';
import {
  CONSTANT_LEAVES,
  CONTRACTION_OPS,
  ELEMENTWISE,
  EPILOGUE_ANCHORS,
  EXTERNAL_LEAVES,
  INLINE_LEAVES,
  LAYOUT_OPS,
  NN_OPS,
  REDUCE_OPS,
  VIEW_OPS,
} from '../ops/index.ts';

export type GroupKind = 'elementwise' | 'reduce' | 'contraction' | 'nn';

export interface Group {
  kind: GroupKind;
  /** The reduction / contraction / nn node, for anchored groups. */
  anchor?: number;
  /** The node whose value the group stores (the anchor itself, or its epilogue's last node). */
  root: number;
  /** Nodes computed in place: elementwise members, a reduction's prologue, an anchor's epilogue. */
  inline: number[];
}

export interface FusionResult {
  /** In execution order. */
  groups: Group[];
  /** Unfused reshape / stop_gradient nodes: they share their input's buffer. */
  views: number[];
  /** full / iota / tensor nodes whose values are uploaded once, at program creation. */
  consts: number[];
  /** Nodes whose value some output or update depends on. */
  needed: Set<number>;
}

export interface FusionOptions {
  /** false: one group per op (the reference for fused-vs-unfused tests). */
  enabled: boolean;
  /** The device's maxStorageBuffersPerShaderStage. */
  maxStorageBuffers: number;
}

/** Ops evaluated by the expression compiler (and hence fusable as group members). */
export function isExpressionOp(op: OpName): boolean {
  return ELEMENTWISE.has(op) || LAYOUT_OPS.has(op) || VIEW_OPS.has(op);
}

/** Leaves never join a group: they are bound, uploaded or compiled inline. */
function isLeaf(op: OpName): boolean {
  return EXTERNAL_LEAVES.has(op) || CONSTANT_LEAVES.has(op);
}

function groupKind(op: OpName): GroupKind | undefined {
  if (REDUCE_OPS.has(op)) return 'reduce';
  if (CONTRACTION_OPS.has(op)) return 'contraction';
  if (NN_OPS.has(op)) return 'nn';
  if (isExpressionOp(op)) return 'elementwise';
  return undefined;
}

/** Whether consumer `c` reads input `p` at c's own flat index (so an epilogue can substitute p's value). */
function readsAtSameIndex(c: Node, p: Node): boolean {
  if (numel(c.shape) !== numel(p.shape)) return false;
  return ELEMENTWISE.has(c.op) || VIEW_OPS.has(c.op) || c.op === 'expand';
}

/** Distinct consumers of every node, counting only consumers in `live` (all when omitted). */
export function consumersOf(graph: Graph, live?: Set<number>): number[][] {
  const consumers: number[][] = graph.nodes.map(() => []);
  for (const n of graph.nodes) if (!live || live.has(n.id)) for (const i of new Set(n.inputs)) consumers[i].push(n.id);
  return consumers;
}

/** Nodes that must be materialised because the host reads them or state is updated from them. */
export function pinnedNodes(graph: Graph): Set<number> {
  return new Set([...Object.values(graph.outputs), ...Object.values(graph.updates)]);
}

export function fuseGraph(graph: Graph, opts: FusionOptions): FusionResult {
  const nodes = graph.nodes;
  const pinned = pinnedNodes(graph);
  const needed = new Set<number>();
  for (const id of pinned) needed.add(id);
  for (let i = nodes.length - 1; i >= 0; i--) if (needed.has(i)) for (const x of nodes[i].inputs) needed.add(x);
  const consumers = consumersOf(graph, needed);

  const groupOf = new Map<number, Group>();
  const groups: Group[] = [];
  const views: number[] = [];

  for (let id = nodes.length - 1; id >= 0; id--) {
    const n = nodes[id];
    if (!needed.has(id) || groupOf.has(id)) continue;
    if (isLeaf(n.op)) continue;
    if (VIEW_OPS.has(n.op)) {
      views.push(id);
      continue;
    }
    const kind = groupKind(n.op);
    if (!kind) throw new Error(`fusion: no kernel family for op '${n.op}' (node %${id})`);
    const group: Group = { kind, root: id, inline: kind === 'elementwise' ? [id] : [] };
    if (kind !== 'elementwise') group.anchor = id;
    groupOf.set(id, group);
    groups.push(group);
    if (!opts.enabled) continue;
    if (kind === 'elementwise') absorbProducers(group, id, 'root');
    else if (kind === 'reduce') absorbProducers(group, id, 'anchor');
  }

  /**
   * Grows `group` upward from member `from`. A producer joins when all its
   * consumers are members (or the anchor) and they all read it at the same
   * index. Each member carries an index signature: the root's is 'root', and a
   * producer read at its consumer's own flat index inherits the consumer's
   * signature, any other read (broadcast, transpose, slice, ...) gets a fresh
   * one. Equal signatures mean one evaluation per output element (the
   * expression compiler memoises by index), so no group recomputes a value;
   * an anchor may feed an epilogue only when read at the 'root' index.
   */
  function absorbProducers(group: Group, from: number, fromSignature: string): void {
    const members = new Set(group.inline);
    const signature = new Map<number, string>([[from, fromSignature]]);
    const readSignature = (q: number, p: Node, pending?: Map<number, string>): string =>
      q === group.anchor ? 'anchor-load' : readsAtSameIndex(nodes[q], p) ? (pending?.get(q) ?? signature.get(q))! : `${q}->${p.id}`;
    /** The signature `p` gets if all its consumers are members (or in `pending`) and read it at one index; else undefined. */
    const joinSignature = (p: number, pending?: Map<number, string>): string | undefined => {
      if (!consumers[p].every((q) => members.has(q) || pending?.has(q) || q === group.anchor)) return undefined;
      const sigs = new Set(consumers[p].map((q) => readSignature(q, nodes[p], pending)));
      return sigs.size === 1 ? [...sigs][0] : undefined; // read at several indices: materialise rather than recompute
    };
    const absorbable = (p: number) => !members.has(p) && !groupOf.has(p) && !pinned.has(p) && isExpressionOp(nodes[p].op);
    /**
     * `p` with every node that can join along with it: the group's other
     * candidates (inputs of members) and, transitively, producers all of whose
     * consumers are then members. Absorbing one node at a time can bind more
     * buffers for a moment than the result -- a value read by two members, in
     * two branches of the expression, is a binding of its own until both are in
     * -- so a group near the binding limit would stop growing where the whole
     * expression fits.
     */
    const withProducers = (p: number, sig: string): Map<number, string> => {
      const pending = new Map([[p, sig]]);
      for (const m of members)
        for (const r of nodes[m].inputs) {
          if (pending.has(r) || !absorbable(r)) continue;
          const s = joinSignature(r);
          if (s !== undefined) pending.set(r, s);
        }
      for (let grew = true; grew;) {
        grew = false;
        const inputs = new Set([...pending.keys()].flatMap((q) => nodes[q].inputs));
        // Consumers have larger ids: visiting in descending order gives each node's readers their signatures first.
        for (const r of [...inputs].sort((a, b) => b - a)) {
          if (pending.has(r) || !absorbable(r)) continue;
          const s = joinSignature(r, pending);
          if (s === undefined) continue;
          pending.set(r, s);
          grew = true;
        }
      }
      return pending;
    };
    const work = [from];
    while (work.length) {
      const c = work.pop()!;
      const cn = nodes[c];
      for (const p of new Set(cn.inputs)) {
        const pn = nodes[p];
        if (members.has(p) || groupOf.has(p) || pinned.has(p)) continue;
        if (isLeaf(pn.op)) continue;
        const sig = joinSignature(p);
        if (sig === undefined) continue;
        if (isExpressionOp(pn.op)) {
          const joining = fitsBindings(group, [p]) ? new Map([[p, sig]]) : withProducers(p, sig);
          if (joining.size === 1 ? !fitsBindings(group, [p]) : !fitsBindings(group, [...joining.keys()])) continue;
          for (const [q, s] of joining) {
            members.add(q);
            group.inline.push(q);
            signature.set(q, s);
            work.push(q);
          }
        } else if (
          group.kind === 'elementwise' &&
          group.anchor === undefined &&
          sig === 'root' &&
          consumers[p].length === 1 &&
          EPILOGUE_ANCHORS.has(pn.op) &&
          pn.dtype === 'f32' &&
          nodes[group.root].dtype === 'f32'
        ) {
          // p becomes the anchor and the group so far its epilogue.
          const kind = groupKind(pn.op)!;
          if (!fitsBindings({ ...group, kind, anchor: p }, [])) continue;
          group.kind = kind;
          group.anchor = p;
          groupOf.set(p, group);
          if (kind === 'reduce') {
            signature.set(p, 'anchor');
            work.push(p); // its input's producers may join as the prologue
          }
        }
      }
    }
    for (const m of group.inline) groupOf.set(m, group);
  }

  /** Storage buffers the group's kernel would bind with `extra` members added. */
  function fitsBindings(group: Group, extra: number[]): boolean {
    const inline = new Set([...group.inline, ...extra]);
    const reads = new Set<number>();
    const readOf = (x: number) => {
      if (!inline.has(x) && !INLINE_LEAVES.has(nodes[x].op)) reads.add(x);
    };
    for (const m of inline) for (const x of nodes[m].inputs) readOf(x);
    if (group.anchor !== undefined) {
      inline.add(group.anchor);
      const a = nodes[group.anchor];
      // A reduction loads its input through the prologue; other anchors bind their inputs directly.
      for (const x of a.inputs)
        if (group.kind === 'reduce') readOf(x);
        else reads.add(x);
      reads.delete(group.anchor);
    }
    // Scatter-add's sorted path binds two scratch buffers on top of its own.
    const scratch = group.anchor !== undefined && nodes[group.anchor].op === 'scatter_add' ? 2 : 0;
    return reads.size + 1 + scratch <= opts.maxStorageBuffers;
  }

  groups.reverse();
  groups.sort((a, b) => a.root - b.root);
  views.reverse();

  // Constants: uploaded once when some reader cannot compile them inline.
  const consts: number[] = [];
  const compiledInline = new Set<number>();
  for (const g of groups) {
    for (const m of g.inline) compiledInline.add(m);
    if (g.kind === 'reduce') compiledInline.add(g.anchor!);
  }
  for (const n of nodes) {
    if (!needed.has(n.id) || !CONSTANT_LEAVES.has(n.op)) continue;
    if (!INLINE_LEAVES.has(n.op) || pinned.has(n.id) || consumers[n.id].some((c) => !compiledInline.has(c))) consts.push(n.id);
  }
  return { groups, views, consts, needed };
}

/**
 * External tensors (not computed inside `group`) that the group's kernel reads
 * only at its root's own flat index: every reader is a member evaluated at the
 * root index (the root, or a chain of same-index consumers down from it --
 * never the anchor or a reduction's prologue) that reads the tensor with no
 * broadcast or permutation. A kernel may overwrite such a tensor in place:
 * thread i reads element i before writing element i, and no other thread
 * touches it. `consumers` is consumersOf(graph, needed).
 */
export function flatReadInputs(graph: Graph, group: Group, consumers: number[][]): Set<number> {
  const nodes = graph.nodes;
  const members = new Set(group.inline);
  members.add(group.root);
  const atRoot = new Set<number>();
  // Consumers have larger ids than their producers: visit the root first.
  for (const m of [...members].sort((a, b) => b - a)) {
    if (m === group.anchor) continue;
    if (m === group.root) {
      atRoot.add(m);
      continue;
    }
    const readers = consumers[m].filter((q) => members.has(q));
    if (readers.length && readers.every((q) => atRoot.has(q) && readsAtSameIndex(nodes[q], nodes[m]))) atRoot.add(m);
  }
  const ok = new Map<number, boolean>();
  for (const m of members) {
    for (const x of new Set(nodes[m].inputs)) {
      if (members.has(x) || INLINE_LEAVES.has(nodes[x].op)) continue;
      const fine = m !== group.anchor && atRoot.has(m) && readsAtSameIndex(nodes[m], nodes[x]);
      ok.set(x, (ok.get(x) ?? true) && fine);
    }
  }
  return new Set([...ok].filter(([, fine]) => fine).map(([x]) => x));
}
