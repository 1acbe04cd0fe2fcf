// The typed train section: optimizer, schedule, batch, accumulation, epochs,
// early stopping and seed, with the LoVT reference recipe as defaults
// (docs/language.md §10). Entries from the model chain and from `--set
// train.KEY=...` are applied in order; a constructor (adamw(...)) replaces a
// whole slot, a dotted key (optimizer.lr) changes one field.

import type { Arg, Expr, Name, Range } from '../../grammar/ast.ts';
import { CompileError, didYouMean } from './diagnostics.ts';
import type { Elaborator } from './elaborate.ts';
import type { Scope } from './scope.ts';
import { expectBool, expectFloat, expectFloatList, expectInt, kindName } from './values.ts';

export interface OptimizerSpec {
  kind: 'adamw' | 'adam' | 'sgd';
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  momentum: number;
  nesterov: boolean;
}

export type ScheduleSpec =
  | { kind: 'constant' }
  /** Stepped per optimizer step; `period` is one epoch or a number of optimizer steps; continues past the period. */
  | { kind: 'cosine'; period: 'epoch' | number; eta_min: number; warmup_steps: number }
  /** ReduceLROnPlateau, checked once per epoch on `monitor`. */
  | { kind: 'plateau'; patience: number; factor: number; monitor: string; min_lr: number };

export interface TrainSpec {
  optimizer: OptimizerSpec;
  schedule: ScheduleSpec;
  batch: number;
  accumulate: number;
  epochs: number;
  early_stopping: { patience: number; monitor: string } | null;
  seed: number;
}

type FieldType = 'lr' | 'nonneg' | 'unit' | 'betas' | 'bool' | 'period' | 'count' | 'natural' | 'name' | 'factor';
type FieldValue = number | string | boolean | number[];

interface Ctor {
  fields: [string, FieldType][];
  defaults: Record<string, FieldValue>;
}

const SLOTS: Record<string, Record<string, Ctor>> = {
  optimizer: {
    adamw: {
      fields: [
        ['lr', 'lr'],
        ['betas', 'betas'],
        ['eps', 'lr'],
        ['weight_decay', 'nonneg'],
      ],
      defaults: { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-6 },
    },
    adam: {
      fields: [
        ['lr', 'lr'],
        ['betas', 'betas'],
        ['eps', 'lr'],
        ['weight_decay', 'nonneg'],
      ],
      defaults: { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0 },
    },
    sgd: {
      fields: [
        ['lr', 'lr'],
        ['momentum', 'unit'],
        ['weight_decay', 'nonneg'],
        ['nesterov', 'bool'],
      ],
      defaults: { lr: 1e-2, momentum: 0, weight_decay: 0, nesterov: false },
    },
  },
  schedule: {
    constant: { fields: [], defaults: {} },
    cosine: {
      fields: [
        ['period', 'period'],
        ['eta_min', 'nonneg'],
        ['warmup_steps', 'count'],
      ],
      defaults: { period: 'epoch', eta_min: 0, warmup_steps: 0 },
    },
    plateau: {
      fields: [
        ['patience', 'count'],
        ['factor', 'factor'],
        ['monitor', 'name'],
        ['min_lr', 'nonneg'],
      ],
      defaults: { patience: 10, factor: 0.5, monitor: 'val_total', min_lr: 0 },
    },
  },
  early_stopping: {
    patience: {
      fields: [
        ['patience', 'natural'],
        ['monitor', 'name'],
      ],
      defaults: { patience: 10, monitor: 'val_total' },
    },
    none: { fields: [], defaults: {} },
  },
};

const SCALARS: Record<string, 'natural' | 'count'> = { batch: 'natural', accumulate: 'natural', epochs: 'natural', seed: 'count' };
const ALL_KEYS = [...Object.keys(SLOTS), ...Object.keys(SCALARS)];

interface Slot {
  kind: string;
  fields: Record<string, FieldValue>;
}

/** One assignment of the train section: from a model's `train { }` or from `--set train.KEY=VALUE`. */
export interface TrainAssignment {
  key: Name[];
  value: Expr;
  range: Range;
  /** The original `--set` text when the entry came from the command line (errors then have no location). */
  commandLine?: string;
}

export function defaultTrain(): { slots: Record<string, Slot>; scalars: Record<string, number> } {
  return {
    slots: {
      optimizer: { kind: 'adamw', fields: { ...SLOTS.optimizer.adamw.defaults } },
      schedule: { kind: 'cosine', fields: { ...SLOTS.schedule.cosine.defaults } },
      early_stopping: { kind: 'patience', fields: { ...SLOTS.early_stopping.patience.defaults } },
    },
    scalars: { accumulate: 16, epochs: 100, seed: 12345 },
  };
}

/**
 * Applies every entry in order and returns the typed spec. `configBatch` is the model's
 * config `batch` (train.batch defaults to it and must equal it). Errors are reported through
 * the elaborator; a failed entry is skipped.
 */
export function typeTrainSection(el: Elaborator, entries: TrainAssignment[], scope: Scope, configBatch: number | undefined): TrainSpec {
  const st = defaultTrain();
  for (const e of entries) {
    const run = () => applyEntry(el, st, e, scope);
    if (e.commandLine) {
      try {
        run();
      } catch (err) {
        if (!(err instanceof CompileError)) throw err;
        el.report(new CompileError(undefined, `--set ${e.commandLine}: ${err.message}`, err.extras));
      }
    } else el.guard(run);
  }
  let batch = st.scalars.batch;
  if (batch === undefined) batch = configBatch ?? 32;
  else if (configBatch !== undefined && batch !== configBatch) {
    const e = entries.find((x) => x.key[0].name === 'batch');
    el.guard(() =>
      el.error(e?.commandLine ? undefined : e?.range, `train.batch is ${batch} but the config batch (used by the input shapes) is ${configBatch}`, {
        hint: 'set the config batch instead',
      }),
    );
  }
  const o = st.slots.optimizer;
  const s = st.slots.schedule;
  const es = st.slots.early_stopping;
  const optimizer: OptimizerSpec = {
    kind: o.kind as OptimizerSpec['kind'],
    lr: o.fields.lr as number,
    betas: (o.fields.betas as [number, number]) ?? [0.9, 0.999],
    eps: (o.fields.eps as number) ?? 1e-8,
    weight_decay: o.fields.weight_decay as number,
    momentum: (o.fields.momentum as number) ?? 0,
    nesterov: (o.fields.nesterov as boolean) ?? false,
  };
  return {
    optimizer,
    schedule: { kind: s.kind, ...s.fields } as ScheduleSpec,
    batch,
    accumulate: st.scalars.accumulate,
    epochs: st.scalars.epochs,
    early_stopping: es.kind === 'none' ? null : { patience: es.fields.patience as number, monitor: es.fields.monitor as string },
    seed: st.scalars.seed,
  };
}

function applyEntry(el: Elaborator, st: ReturnType<typeof defaultTrain>, e: TrainAssignment, scope: Scope) {
  const [head, ...rest] = e.key;
  const key = head.name;
  if (key in SCALARS) {
    if (rest.length) el.error(rest[0].range, `train.${key} has no field '${rest[0].name}'`);
    st.scalars[key] = checkField(el, SCALARS[key], el.eval(e.value, scope), e.value, `train.${key}`) as number;
    return;
  }
  const ctors = SLOTS[key];
  if (!ctors) el.error(head.range, `unknown train key '${key}'`, { ...didYouMean(key, ALL_KEYS), notes: [`train keys: ${ALL_KEYS.join(', ')}`] });
  const slot = st.slots[key];
  if (rest.length === 0) {
    st.slots[key] = construct(el, key, ctors, e.value, scope);
    return;
  }
  if (rest.length > 1) el.error(rest[1].range, `train.${key}.${rest[0].name} has no fields`);
  const field = rest[0];
  const schema = ctors[slot.kind].fields.find(([n]) => n === field.name);
  if (!schema)
    el.error(field.range, `${slot.kind}(...) has no field '${field.name}'`, {
      ...didYouMean(
        field.name,
        ctors[slot.kind].fields.map(([n]) => n),
      ),
      notes: [`fields of ${slot.kind}: ${ctors[slot.kind].fields.map(([n]) => n).join(', ') || 'none'}`],
    });
  slot.fields[field.name] = fieldValue(el, schema[1], e.value, scope, `${key}.${field.name}`);
}

function construct(el: Elaborator, key: string, ctors: Record<string, Ctor>, value: Expr, scope: Scope): Slot {
  let name: string;
  let args: Arg[] = [];
  let nameRange: Range;
  if (value.kind === 'Ident') {
    name = value.name;
    nameRange = value.range;
  } else if (value.kind === 'Call' && value.callee.kind === 'Ident') {
    name = value.callee.name;
    nameRange = value.callee.range;
    args = value.args;
  } else {
    el.error(
      value.range,
      `train.${key} must be one of ${Object.keys(ctors)
        .map((c) => `${c}(...)`)
        .join(', ')}`,
    );
  }
  const ctor = ctors[name];
  if (!ctor) el.error(nameRange, `unknown ${key} '${name}'`, { ...didYouMean(name, Object.keys(ctors)), notes: [`choices: ${Object.keys(ctors).join(', ')}`] });
  const fields: Record<string, FieldValue> = { ...ctor.defaults };
  const matched = el.matchArgs(
    ctor.fields.map(([n]) => ({ name: n })),
    args,
    value.range,
    `${name}(...)`,
  );
  matched.forEach((a, i) => {
    if (!a) return;
    const [fname, ftype] = ctor.fields[i];
    fields[fname] = fieldValue(el, ftype, a.value, scope, `${name}(${fname})`);
  });
  return { kind: name, fields };
}

function fieldValue(el: Elaborator, type: FieldType, e: Expr, scope: Scope, what: string): FieldValue {
  // Names (monitor: val_total, period: epoch) are written bare.
  if (type === 'name' && e.kind === 'Ident' && !scope.lookup(e.name)) return e.name;
  if (type === 'period' && e.kind === 'Ident' && e.name === 'epoch') return 'epoch';
  return checkField(el, type, el.eval(e, scope), e, what);
}

function checkField(el: Elaborator, type: FieldType, v: ReturnType<Elaborator['eval']>, e: Expr, what: string): FieldValue {
  const r = e.range;
  const bad = (why: string): never => el.error(r, `${what} ${why}`);
  const float = (): number => {
    const x = expectFloat(v, r, what);
    return Number.isFinite(x) ? x : bad(`must be a finite number, got ${x}`);
  };
  switch (type) {
    case 'lr': {
      const x = float();
      return x > 0 ? x : bad(`must be positive, got ${x}`);
    }
    case 'nonneg': {
      const x = float();
      return x >= 0 ? x : bad(`must be at least 0, got ${x}`);
    }
    case 'unit': {
      const x = expectFloat(v, r, what);
      return x >= 0 && x < 1 ? x : bad(`must be in [0, 1), got ${x}`);
    }
    case 'factor': {
      const x = expectFloat(v, r, what);
      return x > 0 && x < 1 ? x : bad(`must be in (0, 1), got ${x}`);
    }
    case 'betas': {
      const xs = expectFloatList(v, r, what);
      if (xs.length !== 2 || xs.some((x) => !(x >= 0 && x < 1))) bad(`must be two numbers in [0, 1), got [${xs.join(', ')}]`);
      return xs;
    }
    case 'bool':
      return expectBool(v, r, what);
    case 'count': {
      const x = expectInt(v, r, what);
      return x >= 0 ? x : bad(`must be at least 0, got ${x}`);
    }
    case 'natural': {
      const x = expectInt(v, r, what);
      return x >= 1 ? x : bad(`must be at least 1, got ${x}`);
    }
    case 'period': {
      if (v.k === 'string' && v.v === 'epoch') return 'epoch';
      const x = expectInt(v, r, what);
      return x >= 1 ? x : bad(`must be 'epoch' or a number of optimizer steps (at least 1), got ${x}`);
    }
    case 'name':
      if (v.k === 'string' || v.k === 'enum') return v.v;
      return bad(`must be a metric name such as val_total, got ${kindName(v)}`);
  }
}
