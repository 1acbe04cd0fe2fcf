// Linking: the one global namespace of all loaded files (blocks, fns, models),
// with duplicate definitions reported naming both places, plus the static
// checks that need no evaluation: duplicate parameters and methods, names
// that clash with built-ins, `extends` of an unknown model.

import type { BlockDecl, FnDecl, ModelDecl, ParamDecl, Stmt } from '../../grammar/ast.ts';
import { type Diagnostic, MAX_ERRORS, didYouMean, formatLoc, makeDiagnostic } from './diagnostics.ts';
import type { LoadedFile, Program } from './resolve.ts';

export type GlobalDecl = BlockDecl | FnDecl | ModelDecl;

export interface Globals {
  table: Map<string, GlobalDecl>;
  /** Models in definition order, with the file that defines each. */
  models: { decl: ModelDecl; file: LoadedFile }[];
}

function checkParams(params: ParamDecl[], owner: string, diags: Diagnostic[]) {
  const seen = new Map<string, ParamDecl>();
  for (const p of params) {
    const prev = seen.get(p.name.name);
    if (prev) diags.push(makeDiagnostic(p.name.range, `duplicate parameter '${p.name.name}' of ${owner} (first at ${formatLoc(prev.name.range)})`));
    else seen.set(p.name.name, p);
  }
}

function checkMethods(body: Stmt[], owner: string, diags: Diagnostic[]) {
  const seen = new Map<string, FnDecl>();
  for (const s of body) {
    if (s.kind !== 'Fn') continue;
    checkParams(s.params, `${owner}.${s.name.name}`, diags);
    const prev = seen.get(s.name.name);
    if (prev) diags.push(makeDiagnostic(s.name.range, `duplicate method '${s.name.name}' in block ${owner} (first at ${formatLoc(prev.name.range)})`));
    else seen.set(s.name.name, s);
  }
}

/** Builds the global table. `reserved` are the built-in names (primitives, built-ins, initialisers). */
export function linkProgram(program: Program, reserved: ReadonlySet<string>): { globals: Globals; diagnostics: Diagnostic[] } {
  const diags: Diagnostic[] = [];
  const table = new Map<string, GlobalDecl>();
  const models: Globals['models'] = [];
  decls: for (const file of program.files) {
    for (const d of file.ast.decls) {
      if (diags.length >= MAX_ERRORS) break decls;
      if (d.kind === 'Import') continue;
      const name = d.name.name;
      if (reserved.has(name)) {
        diags.push(makeDiagnostic(d.name.range, `'${name}' is a built-in name and cannot be redefined`, { hint: 'choose another name' }));
        continue;
      }
      const prev = table.get(name);
      if (prev) {
        diags.push(makeDiagnostic(d.name.range, `duplicate definition of '${name}' (first defined at ${formatLoc(prev.name.range)})`));
        continue;
      }
      table.set(name, d);
      if (d.kind === 'Model') models.push({ decl: d, file });
      if (d.kind === 'Block') {
        checkParams(d.params, d.name.name, diags);
        checkMethods(d.body, d.name.name, diags);
      }
      if (d.kind === 'Fn') checkParams(d.params, d.name.name, diags);
    }
  }
  for (const { decl } of models) {
    if (diags.length >= MAX_ERRORS) break;
    if (!decl.parent) continue;
    const parent = table.get(decl.parent.name);
    if (!parent) {
      const modelNames = models.map((m) => m.decl.name.name);
      diags.push(makeDiagnostic(decl.parent.range, `unknown model '${decl.parent.name}' in extends`, didYouMean(decl.parent.name, modelNames)));
    } else if (parent.kind !== 'Model') {
      diags.push(
        makeDiagnostic(
          decl.parent.range,
          `'${decl.parent.name}' is a ${parent.kind === 'Block' ? 'block' : 'fn'}, not a model; a model can only extend a model`,
        ),
      );
    }
  }
  return { globals: { table, models }, diagnostics: diags };
}
