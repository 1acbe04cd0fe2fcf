// Elaborating one model: its flattened items (variants.ts) are run in order in
// the model's scope — configs (with --set overrides), inputs, modules, state,
// lets, losses, outputs — then the loss terms are summed into `loss.total`,
// freeze prefixes are checked, the train section is typed, and the state is
// put in PyTorch's state_dict order.

import type { Expr, FreezePath, Range, Stmt } from '../../grammar/ast.ts';
import { parseExpression } from '../../grammar/parser.ts';
import type { DType, Graph, Shape, StateInfo } from '../ir.ts';
import { CompileError, didYouMean, formatLoc } from './diagnostics.ts';
import { type Elaborator, isFrozen } from './elaborate.ts';
import { Scope } from './scope.ts';
import { type TrainAssignment, type TrainSpec, typeTrainSection } from './train.ts';
import {
  type Instance,
  type TensorValue,
  type Value,
  POISON,
  describe,
  dtypeShape,
  expectBool,
  expectFloat,
  expectInt,
  kindName,
  originNote,
  toPlain,
} from './values.ts';
import type { FlatModel } from './variants.ts';
import { clip } from '../echo.ts';

export interface LossInfo {
  name: string;
  weight: number;
  /** The graph output holding the unweighted value: loss.<name>. */
  output: string;
}

export interface ParamInfo {
  name: string;
  shape: Shape;
  dtype: DType;
  count: number;
  trainable: boolean;
  kind: 'param' | 'buffer';
}

export interface ModelInfo {
  name: string;
  /** The file that defines the model. */
  file: string;
  /** Ancestors, root first (empty for a model without extends). */
  extends: string[];
  mode: 'train' | 'eval';
  configs: Record<string, { type: string; value: unknown }>;
  inputs: Record<string, { shape: Shape; dtype: DType }>;
  losses: LossInfo[];
  /** Extra outputs (besides loss.*). */
  outputs: string[];
  train: TrainSpec;
  /** Freeze prefixes as written, ranges expanded (layer.0, layer.1, ...). */
  frozen: string[];
  params: ParamInfo[];
  counts: { params: number; trainable: number; buffers: number };
  /** Every loaded source file (main file first) and the sha256 of its text. */
  sources: { path: string; sha256: string }[];
  /** sha256 of the main file's text and its imports' texts (not their paths), hex. */
  sourceHash: string;
}

export const MAX_FREEZE_EXPANSION = 100_000;

/**
 * Expands the paths of one freeze item to dotted prefixes, evaluating index and range
 * expressions in the model's scope: `a.layer[0..n]` with n = 2 gives a.layer.0, a.layer.1.
 * A range may be empty (`layer[0..0]` freezes nothing).
 */
function freezePrefixes(el: Elaborator, paths: FreezePath[], scope: Scope): { prefix: string; range: Range }[] {
  const out: { prefix: string; range: Range }[] = [];
  for (const p of paths) {
    let acc: string[] = [''];
    for (const seg of p.segments) {
      const names = acc.map((a) => (a ? `${a}.${seg.name.name}` : seg.name.name));
      if (!seg.index) {
        acc = names;
        continue;
      }
      const bound = (e: Expr, what: string): number | undefined => {
        const v = el.eval(e, scope);
        if (v.k === 'poison') return undefined;
        const n = expectInt(v, e.range, what);
        if (n < 0) el.error(e.range, `${what} must be at least 0, got ${n}`);
        return n;
      };
      const { start, end, range } = seg.index;
      const lo = bound(start, end ? 'the start of a freeze range' : 'a freeze index');
      const hi = end ? bound(end, 'the end of a freeze range') : lo === undefined ? undefined : lo + 1;
      if (lo === undefined || hi === undefined) return out; // the cause is reported already
      if (hi < lo) el.error(range, `freeze range [${lo}..${hi}] ends before it starts`);
      if (names.length * (hi - lo) > MAX_FREEZE_EXPANSION) el.error(range, `freeze range expands to more than ${MAX_FREEZE_EXPANSION} prefixes`);
      acc = names.flatMap((n) => Array.from({ length: hi - lo }, (_, i) => `${n}.${lo + i}`));
    }
    for (const prefix of acc) out.push({ prefix, range: p.range });
  }
  return out;
}

/**
 * Makes the state under the freeze prefixes non-trainable, after the model has run: a frozen
 * param becomes a non-trainable leaf (IR op `buffer`) and keeps its kind `param` in the table.
 * Every prefix must name some state (checked only when nothing else failed: failures hide state).
 */
function applyFreeze(el: Elaborator, frozen: { prefix: string; range: Range }[]) {
  if (frozen.length === 0 || el.diagnostics.length > 0) return;
  const state = el.b.graph.state;
  const all = new Set<string>();
  for (const n of Object.keys(state)) {
    for (let i = n.indexOf('.'); i >= 0; i = n.indexOf('.', i + 1)) all.add(n.slice(0, i));
    all.add(n);
  }
  for (const f of frozen)
    if (!all.has(f.prefix))
      el.report(new CompileError(f.range, `freeze: no parameter or buffer is named '${f.prefix}' or starts with '${f.prefix}.'`, didYouMean(f.prefix, all)));
  const prefixes = new Set(frozen.map((f) => f.prefix));
  for (const info of Object.values(state)) {
    if (!info.trainable || !isFrozen(info.name, prefixes)) continue;
    info.trainable = false;
    el.b.node(info.node).op = 'buffer';
  }
}

function typeText(el: Elaborator, s: Stmt): string {
  if (s.kind === 'Config' && s.type) return el.snippet(s.type.range, s.type.kind === 'EnumType' ? 'enum' : s.type.kind);
  return '';
}

export interface ModelRun {
  configs: ModelInfo['configs'];
  inputs: ModelInfo['inputs'];
  losses: LossInfo[];
  outputs: string[];
  train: TrainSpec;
  frozen: string[];
}

/**
 * Runs the model's items. `set` are the --set overrides (config names and train.* keys);
 * every key must be used.
 */
export function runModel(el: Elaborator, flat: FlatModel, set: Record<string, string>): ModelRun {
  const decl = flat.chain[flat.chain.length - 1];
  const scope = new Scope(el.globalScope, false);
  const inst: Instance = { typeName: flat.name, prefix: '', decl, scope, methods: new Map(), state: [], children: [], keys: new Map() };
  const ctx = { level: 'model' as const, scope, inst };
  const configs: ModelInfo['configs'] = {};
  const inputs: ModelInfo['inputs'] = {};
  const losses: { name: string; weight: number; value: TensorValue }[] = [];
  const outputs: { name: string; value: TensorValue }[] = [];
  const frozen: { prefix: string; range: Range }[] = [];
  const usedSet = new Set<string>();
  const trainSet = Object.keys(set).filter((k) => k.startsWith('train.'));

  const setError = (key: string, e: CompileError) => new CompileError(undefined, `--set ${clip(`${key}=${set[key]}`)}: ${e.message}`, e.extras);

  for (const item of flat.items) {
    const s = item.stmt;
    const run = (): void => {
      switch (s.kind) {
        case 'Config': {
          const name = s.name.name;
          const members = s.type?.kind === 'EnumType' ? s.type.members.map((m) => m.name) : undefined;
          let v: Value;
          if (name in set) {
            usedSet.add(name);
            try {
              v = setValue(el, set[name], s, scope, members);
              if (s.type) v = el.checkType(v, s.type, scope, `config '${name}'`, s.name.range, []);
            } catch (e) {
              if (!(e instanceof CompileError)) throw e;
              throw setError(name, e);
            }
          } else {
            if (!s.value) el.error(s.name.range, `config '${name}' needs a default value`);
            v = el.evalArg(s.value, scope, members);
            if (v.k === 'poison') break;
            if (s.type) v = el.checkType(v, s.type, scope, `config '${name}'`, s.value.range, []);
          }
          if (v.k === 'tensor' || v.k === 'module') el.error(s.name.range, `config '${name}' must be a compile-time value, got ${kindName(v)}`);
          if (s.where) checkConstraint(el, s, v, scope, name in set ? `--set ${name}=${set[name]}` : undefined);
          scope.define(name, { value: v, kind: 'config', range: s.name.range });
          configs[name] = { type: typeText(el, s), value: toPlain(v) };
          break;
        }
        case 'Input': {
          const name = s.name.name;
          if (name === 'seed') el.error(s.name.range, "the input name 'seed' is reserved for the dropout seed");
          const { shape, dtype } = el.concreteShape(s.type, scope, `input '${name}'`);
          const id = el.b.input(name, shape, dtype, el.loc(s.name.range));
          scope.define(name, {
            value: { k: 'tensor', id, shape, dtype, origin: { range: s.name.range, what: `input ${name}` } },
            kind: 'input',
            range: s.name.range,
          });
          inputs[name] = { shape, dtype };
          break;
        }
        case 'Loss': {
          const name = s.name.name;
          const args = item.weightArgs ?? s.args ?? [];
          const matched = el.matchArgs([{ name: 'weight' }], args, s.range, `loss ${name}`);
          let weight = 1;
          if (matched[0]) {
            const wv = el.eval(matched[0].value, scope);
            if (wv.k === 'poison') break;
            weight = expectFloat(wv, matched[0].value.range, `the weight of loss '${name}'`);
          }
          const v = el.eval(s.value!, scope);
          if (v.k === 'poison') break;
          if (v.k !== 'tensor' || v.dtype !== 'f32' || v.shape.length !== 0)
            el.error(s.value!.range, `loss '${name}' must be a scalar f32[], got ${describe(v)}`, {
              hint: 'reduce it, e.g. sum(x) / numel(x)',
              notes: v.k === 'tensor' ? [originNote(v)] : [],
            });
          losses.push({ name, weight, value: v });
          break;
        }
        case 'Output': {
          const v = el.eval(s.value, scope);
          if (v.k === 'poison') break;
          if (v.k !== 'tensor') el.error(s.value.range, `output '${s.name.name}' must be a tensor, got ${kindName(v)}`);
          outputs.push({ name: s.name.name, value: v });
          break;
        }
        case 'Freeze':
          frozen.push(...freezePrefixes(el, s.paths, scope));
          break;
        case 'Train':
          break;
        default:
          el.execBody([s], ctx);
      }
    };
    try {
      run();
    } catch (e) {
      if (!(e instanceof CompileError) || e.constructor !== CompileError) throw e;
      if (e.message) el.report(e);
      for (const n of item.names) if (!scope.vars.has(n)) scope.define(n, { value: POISON, kind: 'let' });
    }
  }

  // Graph outputs: each loss unweighted, the weighted total, the extra outputs.
  let total: TensorValue | undefined;
  for (const l of losses) {
    el.b.output(`loss.${l.name}`, l.value.id);
    const r = l.value.origin.range;
    const term = l.weight === 1 ? l.value : el.emit('mul', [l.value, el.constant(l.weight, 'f32', r)], {}, r, `loss ${l.name}`);
    total = total ? el.emit('add', [total, term], {}, r, 'loss.total') : term;
  }
  if (total) el.b.output('loss.total', total.id);
  for (const o of outputs) el.b.output(o.name, o.value.id);

  // --set keys that name nothing.
  for (const key of Object.keys(set)) {
    if (key.startsWith('train.') || usedSet.has(key)) continue;
    if (key === 'batch') continue;
    el.report(new CompileError(undefined, `--set ${key}=${set[key]}: the model ${flat.name} has no config '${key}'`, didYouMean(key, Object.keys(configs))));
  }

  applyFreeze(el, frozen);

  const trainEntries: TrainAssignment[] = [...flat.train];
  for (const key of trainSet) {
    const path = key.split('.').slice(1);
    const text = clip(`${key}=${set[key]}`);
    if (path.length === 1 && path[0] === 'batch' && 'batch' in configs) {
      el.report(new CompileError(undefined, `--set ${text}: train.batch follows the config batch`, { hint: `use --set batch=${set[key]}` }));
      continue;
    }
    const parsed = parseSetExpr(set[key]);
    if (!parsed) {
      el.report(new CompileError(undefined, `--set ${text}: cannot parse the value`));
      continue;
    }
    const r = parsed.range;
    trainEntries.push({ key: path.map((name) => ({ name, range: r })), value: parsed, range: r, commandLine: text });
  }
  const configBatch = configs.batch && typeof configs.batch.value === 'number' ? configs.batch.value : undefined;
  const train = typeTrainSection(el, trainEntries, scope, configBatch);

  orderState(el.b.graph, inst);
  return {
    configs,
    inputs,
    losses: losses.map((l) => ({ name: l.name, weight: l.weight, output: `loss.${l.name}` })),
    outputs: outputs.map((o) => o.name),
    train,
    frozen: frozen.map((f) => f.prefix),
  };
}

const SET_FILE = '<command line>';

function parseSetExpr(text: string): Expr | undefined {
  // `1,2,3` is a list on the command line.
  const src = /,/.test(text) && !/^\s*[[(]/.test(text) ? `[${text}]` : text;
  return parseExpression(src, SET_FILE).expr;
}

/**
 * A config's `where` constraint, evaluated with the config bound to `v`. A
 * value that breaks it is an error at the constraint, naming the value and
 * where it came from (`fromSet`, or the value's own place in the source); the
 * config is then undefined for the rest of the model, so nothing computes with it.
 */
function checkConstraint(el: Elaborator, s: Extract<Stmt, { kind: 'Config' }>, v: Value, scope: Scope, fromSet: string | undefined): void {
  const name = s.name.name;
  const where = s.where!;
  const probe = new Scope(scope);
  probe.define(name, { value: v, kind: 'config', range: s.name.range });
  const c = el.eval(where, probe);
  if (c.k === 'poison') return;
  if (expectBool(c, where.range, `the constraint of config '${name}'`)) return;
  const plain = toPlain(v);
  const shown = typeof plain === 'string' ? plain : JSON.stringify(plain);
  const rule = el.snippet(where.range, 'its where clause');
  if (fromSet)
    throw new CompileError(where.range, `${fromSet}: config '${name}' must satisfy ${rule}, got ${shown}`, { hint: `give --set ${name} a value with ${rule}` });
  throw new CompileError(where.range, `config '${name}' is ${shown}, which breaks its constraint ${rule}`, {
    notes: s.value ? [`the value comes from ${formatLoc(s.value.range)}`] : [],
  });
}

/** A --set value for a config: a literal of the config's type (an enum member by name). */
function setValue(el: Elaborator, text: string, s: Extract<Stmt, { kind: 'Config' }>, scope: Scope, members?: readonly string[]): Value {
  const t = s.type;
  const raw = text.trim();
  if (t?.kind === 'ValueType' && !t.list) {
    if (t.name === 'string') return { k: 'string', v: text };
    if (t.name === 'bool') {
      if (raw === 'true' || raw === 'false') return { k: 'bool', v: raw === 'true' };
      el.error(undefined, `config '${s.name.name}' is a bool; write true or false`);
    }
    const n = Number(raw);
    if (raw === '' || Number.isNaN(n))
      el.error(undefined, `config '${s.name.name}' is ${t.name === 'int' ? 'an int' : 'a float'}; '${clip(raw)}' is not a number`);
    if (!Number.isFinite(n))
      el.error(undefined, `config '${s.name.name}': number out of range: '${clip(raw)}' reads as ${n}`, {
        hint: 'a number must be finite (at most about 1.8e308)',
      });
    return t.name === 'int' && /^[-+]?\d+$/.test(raw) ? { k: 'int', v: n } : { k: 'float', v: n };
  }
  const e = parseSetExpr(text);
  if (!e) el.error(undefined, 'cannot parse the value');
  return el.evalArg(e, scope, members);
}

/** Rewrites graph.state in PyTorch state_dict order: own params, own buffers, then children. */
function orderState(g: Graph, root: Instance) {
  const ordered: Record<string, StateInfo> = {};
  const visit = (inst: Instance) => {
    for (const kind of ['param', 'buffer'] as const) for (const s of inst.state) if (s.kind === kind && g.state[s.full]) ordered[s.full] = g.state[s.full];
    for (const c of inst.children) {
      if ('list' in c) [...c.items.keys()].sort((a, b) => a - b).forEach((k) => visit(c.items.get(k)!));
      else visit(c);
    }
  };
  visit(root);
  for (const [k, v] of Object.entries(g.state)) if (!(k in ordered)) ordered[k] = v;
  g.state = ordered;
}

/** The --params table; `kinds` says how each state tensor was declared (a frozen param is still a param). */
export function paramTable(g: Graph, kinds: ReadonlyMap<string, 'param' | 'buffer'>): ParamInfo[] {
  return Object.values(g.state).map((s) => ({
    name: s.name,
    shape: [...s.shape],
    dtype: s.dtype,
    count: s.shape.reduce((p, d) => p * d, 1),
    trainable: s.trainable,
    kind: kinds.get(s.name) ?? (s.trainable ? 'param' : 'buffer'),
  }));
}
