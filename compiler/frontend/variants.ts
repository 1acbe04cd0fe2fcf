// Model variants: `model B extends A { ... }` states only the difference.
// flattenModel() turns a model and its ancestors into one ordered item list:
// a child's item with the name of a parent's item replaces it in place (so
// later parent items see it), `loss x(weight: w)` without an expression
// changes only the weight, `drop` removes, everything else is appended.
// docs/language.md §9 is the reference.

import type { Arg, ModelDecl, Name, Range, Stmt, TrainEntry } from '../../grammar/ast.ts';
import { type Diagnostic, MAX_ERRORS, didYouMean, formatLoc, makeDiagnostic } from './diagnostics.ts';
import type { Globals } from './link.ts';

export type ItemKind = 'config' | 'input' | 'module' | 'state' | 'let' | 'loss' | 'output' | 'freeze' | 'expr' | 'train';

export interface ModelItem {
  kind: ItemKind;
  /** The names the item defines (empty for freeze/expr/train). */
  names: string[];
  stmt: Stmt;
  /** The model whose body wrote this item (or last replaced it). */
  owner: string;
  /** For a loss whose weight a variant changed: the new weight arguments. */
  weightArgs?: Arg[];
}

export interface FlatModel {
  name: string;
  /** Root ancestor first, this model last. */
  chain: ModelDecl[];
  items: ModelItem[];
  train: TrainEntry[];
}

const NAMESPACE: Record<ItemKind, string> = {
  config: 'value',
  input: 'value',
  module: 'value',
  state: 'value',
  let: 'value',
  loss: 'loss',
  output: 'output',
  freeze: '',
  expr: '',
  train: '',
};

const KIND_WORD: Record<ItemKind, string> = {
  config: 'config',
  input: 'input',
  module: 'module',
  state: 'param/buffer',
  let: 'let',
  loss: 'loss',
  output: 'output',
  freeze: 'freeze',
  expr: 'expression',
  train: 'train section',
};

function classify(s: Stmt, diags: Diagnostic[]): { kind: ItemKind; names: Name[] } | undefined {
  switch (s.kind) {
    case 'Config':
      return { kind: 'config', names: [s.name] };
    case 'Input':
      return { kind: 'input', names: [s.name] };
    case 'State':
      return { kind: 'state', names: [s.name] };
    case 'Let':
      return { kind: 'let', names: s.names };
    case 'Loss':
      return { kind: 'loss', names: [s.name] };
    case 'Output':
      return { kind: 'output', names: [s.name] };
    case 'Freeze':
      return { kind: 'freeze', names: [] };
    case 'Train':
      return { kind: 'train', names: [] };
    case 'ExprStmt':
      return { kind: 'expr', names: [] };
    case 'Assign':
      if (s.index) {
        diags.push(makeDiagnostic(s.range, 'indexed sub-modules (name[i] = ...) belong in a block body, not a model body'));
        return undefined;
      }
      return { kind: 'module', names: [s.target] };
    case 'Fn':
      diags.push(makeDiagnostic(s.name.range, 'a model cannot define fns', { hint: 'define the fn at top level' }));
      return undefined;
    case 'If':
    case 'For':
      diags.push(
        makeDiagnostic(s.range, `'${s.kind === 'If' ? 'if' : 'for'}' statements are not allowed in a model body`, {
          hint: 'use a conditional expression (if c then a else b), or move the logic into a fn or block',
        }),
      );
      return undefined;
    case 'Return':
      diags.push(makeDiagnostic(s.range, "'return' is only allowed inside a fn"));
      return undefined;
    case 'Update':
      diags.push(makeDiagnostic(s.range, "'update' is only allowed inside a block's fn"));
      return undefined;
    case 'Drop':
      return undefined; // handled by the caller
  }
}

/** Flattens `decl` and its ancestors. Errors (cycles, bad overrides) go to `diags`. */
export function flattenModel(decl: ModelDecl, globals: Globals, diags: Diagnostic[]): FlatModel {
  const chain: ModelDecl[] = [];
  const seen = new Set<string>();
  for (let m: ModelDecl | undefined = decl; m;) {
    if (seen.has(m.name.name)) {
      const names = [...chain.map((c) => c.name.name).reverse(), m.name.name];
      diags.push(makeDiagnostic(decl.name.range, `cyclic extends: ${names.join(' extends ')}`));
      break;
    }
    seen.add(m.name.name);
    chain.unshift(m);
    if (!m.parent) break;
    const p = globals.table.get(m.parent.name);
    m = p && p.kind === 'Model' ? p : undefined; // unknown parents are reported by link.ts
  }

  // Slots keep their position when a variant replaces an item; a drop empties
  // its slot. `slotOf` maps namespace + name to the slot, so flattening stays
  // linear in the model's size (a findIndex per statement was quadratic).
  const slots: (ModelItem | undefined)[] = [];
  const slotOf = new Map<string, number>();
  const key = (kind: ItemKind, name: string) => `${NAMESPACE[kind]}:${name}`;
  const live = () => slots.filter((it): it is ModelItem => it !== undefined);
  const push = (it: ModelItem) => {
    for (const n of it.names) if (!slotOf.has(key(it.kind, n))) slotOf.set(key(it.kind, n), slots.length);
    slots.push(it);
  };
  const train: TrainEntry[] = [];
  const find = (kind: ItemKind, name: string) => slotOf.get(key(kind, name)) ?? -1;
  const freezeDroppedBy = new Set<string>();

  items: for (const model of chain) {
    const owner = model.name.name;
    const isVariant = model !== chain[0];
    for (const s of model.body) {
      if (diags.length >= MAX_ERRORS) break items;
      if (s.kind === 'Drop') {
        applyDrop(s, slots, owner, diags, { find, slotOf, key, live, freezeDroppedBy });
        continue;
      }
      const c = classify(s, diags);
      if (!c) continue;
      if (c.kind === 'train') {
        if (s.kind === 'Train') train.push(...s.entries);
        continue;
      }
      if (c.names.length === 0) {
        slots.push({ kind: c.kind, names: [], stmt: s, owner });
        continue;
      }
      // Only the first name decides the slot; tuple lets must be replaced as a whole.
      const at = find(c.kind, c.names[0].name);
      for (const n of c.names.slice(1)) {
        const other = find(c.kind, n.name);
        if (other >= 0 && other !== at) {
          diags.push(makeDiagnostic(n.range, `duplicate definition of '${n.name}' (first defined at ${formatLoc(rangeOfName(slots[other]!, n.name))})`));
        }
      }
      if (at < 0) {
        if (s.kind === 'Config' && !s.type) {
          diags.push(
            makeDiagnostic(
              s.name.range,
              `config '${s.name.name}' needs a type`,
              isVariant
                ? { hint: `no parent of ${owner} has a config '${s.name.name}' to override`, ...didYouMeanKind(live(), 'config', s.name.name) }
                : { hint: `write config ${s.name.name}: int = ...` },
            ),
          );
          continue;
        }
        if (s.kind === 'Loss' && !s.value) {
          const extra = didYouMeanKind(live(), 'loss', s.name.name);
          diags.push(
            makeDiagnostic(
              s.name.range,
              isVariant
                ? `loss '${s.name.name}' has no expression and no parent of ${owner} defines it`
                : `loss '${s.name.name}' needs an expression: loss ${s.name.name}(weight: w) = ...`,
              extra,
            ),
          );
          continue;
        }
        push({ kind: c.kind, names: c.names.map((n) => n.name), stmt: s, owner });
        continue;
      }
      const prev = slots[at]!;
      if (prev.owner === owner) {
        diags.push(
          makeDiagnostic(c.names[0].range, `duplicate definition of '${c.names[0].name}' (first defined at ${formatLoc(rangeOfName(prev, c.names[0].name))})`),
        );
        continue;
      }
      if (prev.kind !== c.kind) {
        diags.push(
          makeDiagnostic(
            c.names[0].range,
            `bad override: '${c.names[0].name}' is a ${KIND_WORD[prev.kind]} in ${prev.owner} (${formatLoc(rangeOfName(prev, c.names[0].name))}) and cannot be redefined as a ${KIND_WORD[c.kind]}`,
          ),
        );
        continue;
      }
      if (s.kind === 'Config' && prev.stmt.kind === 'Config') {
        if (!s.type && !s.value) {
          diags.push(makeDiagnostic(s.range, `config override '${s.name.name}' needs a value`));
          continue;
        }
        // The override keeps the parent's type, and its `where` constraint unless it states its own.
        slots[at] = { ...prev, stmt: { ...s, type: prev.stmt.type, where: s.where ?? prev.stmt.where }, owner };
        continue;
      }
      if (s.kind === 'Loss' && !s.value) {
        slots[at] = { ...prev, owner, weightArgs: s.args ?? [] };
        continue;
      }
      if (s.kind === 'Let' && prev.stmt.kind === 'Let' && prev.names.join(',') !== c.names.map((n) => n.name).join(',')) {
        diags.push(
          makeDiagnostic(
            s.range,
            `bad override: '${c.names[0].name}' is defined together with ${prev.names.join(', ')} in ${prev.owner}; override them together`,
          ),
        );
        continue;
      }
      slots[at] = { kind: c.kind, names: c.names.map((n) => n.name), stmt: s, owner };
    }
  }
  return { name: decl.name.name, chain, items: live(), train };
}

function didYouMeanKind(items: ModelItem[], kind: ItemKind, name: string) {
  return didYouMean(
    name,
    items.filter((it) => it.kind === kind).flatMap((it) => it.names),
  );
}

function rangeOfName(item: ModelItem, name: string): Range {
  const s = item.stmt;
  if (s.kind === 'Let') return (s.names.find((n) => n.name === name) ?? s.names[0]).range;
  if (s.kind === 'Assign') return s.target.range;
  if ('name' in s && s.name && typeof s.name === 'object') return s.name.range;
  return s.range;
}

interface SlotIndex {
  find: (kind: ItemKind, name: string) => number;
  slotOf: Map<string, number>;
  key: (kind: ItemKind, name: string) => string;
  live: () => ModelItem[];
  /** Models that already dropped their parents' freezes (a second `drop freeze` in one model is a no-op). */
  freezeDroppedBy: Set<string>;
}

function applyDrop(s: Extract<Stmt, { kind: 'Drop' }>, slots: (ModelItem | undefined)[], owner: string, diags: Diagnostic[], ix: SlotIndex) {
  if (s.what === 'freeze') {
    if (ix.freezeDroppedBy.has(owner)) return;
    ix.freezeDroppedBy.add(owner);
    for (let i = 0; i < slots.length; i++) if (slots[i]?.kind === 'freeze' && slots[i]!.owner !== owner) slots[i] = undefined;
    return;
  }
  const kind: ItemKind = s.what === 'loss' ? 'loss' : 'output';
  for (const n of s.names) {
    const at = ix.find(kind, n.name);
    if (at < 0) {
      diags.push(makeDiagnostic(n.range, `cannot drop ${kind} '${n.name}': no such ${kind}`, didYouMeanKind(ix.live(), kind, n.name)));
      continue;
    }
    for (const name of slots[at]!.names) ix.slotOf.delete(ix.key(kind, name));
    slots[at] = undefined;
  }
}
