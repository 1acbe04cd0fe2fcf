// Lexical scopes of the elaborator. A chain of maps: `{ }` bodies inside a fn,
// the fn's own scope (a boundary: rebinding with `x = e` cannot reach past it),
// a block instance's scope, and the global scope of top-level declarations.

import type { Range } from '../../grammar/ast.ts';
import type { StateSlot, Value } from './values.ts';

export type BindingKind = 'let' | 'arg' | 'dim' | 'for' | 'state' | 'module' | 'config' | 'input' | 'method' | 'global' | 'builtin';

export interface Binding {
  value: Value;
  kind: BindingKind;
  range?: Range;
  /** For dims bound by a signature: which argument bound it, for mismatch messages. */
  boundBy?: string;
  state?: StateSlot;
}

export class Scope {
  readonly vars = new Map<string, Binding>();

  constructor(
    readonly parent: Scope | undefined,
    /** A fn's outermost scope: `x = e` may rebind names up to and including it. */
    readonly boundary = false,
  ) {}

  lookup(name: string): Binding | undefined {
    for (let s: Scope | undefined = this; s; s = s.parent) {
      const b = s.vars.get(name);
      if (b) return b;
    }
    return undefined;
  }

  /** The binding of `name` within the current fn (up to its boundary scope), or undefined. */
  lookupInFn(name: string): Binding | undefined {
    for (let s: Scope | undefined = this; s; s = s.parent) {
      const b = s.vars.get(name);
      if (b) return b;
      if (s.boundary) return undefined;
    }
    return undefined;
  }

  define(name: string, b: Binding): void {
    this.vars.set(name, b);
  }

  /** Every visible name (for "did you mean"). */
  *names(): Iterable<string> {
    for (let s: Scope | undefined = this; s; s = s.parent) yield* s.vars.keys();
  }
}
