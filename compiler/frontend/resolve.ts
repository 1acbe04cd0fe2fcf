// Loading a program: the main file and, transitively, its imports. Import paths
// are resolved against the import roots (the importing file's folder, then the
// std library root models/, then --lib dirs); a path that leaves its root,
// an absolute path and an import cycle are errors that show the import chain.
// A .lovt file is data: this is the only place the front end touches files.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImportDecl, SourceFile } from '../../grammar/ast.ts';
import { parseLovt } from '../../grammar/parser.ts';
import { type Diagnostic, type ImportLink, makeDiagnostic } from './diagnostics.ts';
import { fileKind } from './file-kind.ts';

export const MAX_FILE_BYTES = 4 * 1024 * 1024;
export const MAX_FILES = 500;

/** The std library root: the repository's models/ folder. */
export const STD_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models');

/** File access, replaceable for tests and for hosts without a file system. */
export interface SourceHost {
  /** The file's text, or undefined when it does not exist or is not a file. */
  read(absPath: string): string | undefined;
  /** Symlinks resolved (the path itself when it does not exist). */
  realpath(absPath: string): string;
  size(absPath: string): number;
  /** What is at the path when read() gives nothing: 'a directory', 'a character device', or undefined when nothing is. */
  describe?(absPath: string): string | undefined;
}

export const nodeHost: SourceHost = {
  read(p) {
    try {
      return fs.statSync(p).isFile() ? fs.readFileSync(p, 'utf8') : undefined;
    } catch {
      return undefined;
    }
  },
  realpath(p) {
    try {
      return fs.realpathSync(p);
    } catch {
      return p;
    }
  },
  size(p) {
    try {
      return fs.statSync(p).size;
    } catch {
      return 0;
    }
  },
  describe(p) {
    try {
      return fileKind(fs.statSync(p));
    } catch {
      return undefined;
    }
  },
};

export interface LoadedFile {
  /** The path shown in messages (relative to the working directory when inside it). */
  path: string;
  abs: string;
  text: string;
  ast: SourceFile;
  /** The imports that led to this file, innermost first (empty for the main file). */
  chain: ImportLink[];
}

export interface Program {
  files: LoadedFile[];
  main: LoadedFile | undefined;
  diagnostics: Diagnostic[];
}

export interface LoadOptions {
  /** Extra import roots (--lib), searched after the importing folder and models/. */
  roots?: string[];
  host?: SourceHost;
  /** Overrides the std library root (tests). */
  stdRoot?: string;
}

// Parsed files by display path, reused while the text is unchanged (ASTs are never
// mutated after parsing). Tests and lovt-run compile several models per process.
const PARSE_CACHE_LIMIT = 256;
const parseCache = new Map<string, { text: string; parsed: ReturnType<typeof parseLovt> }>();

function parseCached(text: string, shown: string): ReturnType<typeof parseLovt> {
  const hit = parseCache.get(shown);
  if (hit && hit.text === text) return hit.parsed;
  const parsed = parseLovt(text, shown);
  if (parseCache.size >= PARSE_CACHE_LIMIT) parseCache.clear();
  parseCache.set(shown, { text, parsed });
  return parsed;
}

export function displayPath(abs: string): string {
  const rel = path.relative(process.cwd(), abs);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : abs;
}

function inside(child: string, root: string): boolean {
  const rel = path.relative(root, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Loads the main file and everything it imports. Never throws for bad input. */
export function loadProgram(source: { path: string; text?: string }, opts: LoadOptions = {}): Program {
  const host = opts.host ?? nodeHost;
  const stdRoot = opts.stdRoot ?? STD_ROOT;
  const libRoots = (opts.roots ?? []).map((r) => path.resolve(r));
  const diagnostics: Diagnostic[] = [];
  const files: LoadedFile[] = [];
  const byAbs = new Map<string, LoadedFile>();
  const onStack: string[] = [];

  const mainAbs = host.realpath(path.resolve(source.path));
  let mainText = source.text;
  if (mainText === undefined) {
    mainText = host.read(mainAbs);
    if (mainText === undefined) {
      const kind = host.describe?.(mainAbs);
      diagnostics.push(makeDiagnostic(undefined, `cannot read ${source.path}: ${kind ? `it is ${kind}, not a .lovt file` : 'no such file'}`));
      return { files, main: undefined, diagnostics };
    }
  }
  if (mainText.length > MAX_FILE_BYTES) {
    diagnostics.push(makeDiagnostic(undefined, `${source.path} is larger than ${MAX_FILE_BYTES} bytes`));
    return { files, main: undefined, diagnostics };
  }

  const load = (abs: string, text: string, chain: ImportLink[]): LoadedFile => {
    const shown = displayPath(abs);
    const parsed = parseCached(text, shown);
    const file: LoadedFile = { path: shown, abs, text, ast: parsed.file, chain };
    files.push(file);
    byAbs.set(abs, file);
    for (const p of parsed.problems) diagnostics.push(makeDiagnostic(p.range, p.message, { hint: p.hint }));
    onStack.push(abs);
    for (const decl of parsed.file.decls) if (decl.kind === 'Import') visitImport(file, decl);
    onStack.pop();
    return file;
  };

  const visitImport = (from: LoadedFile, imp: ImportDecl) => {
    const fail = (message: string, hint?: string) => diagnostics.push(makeDiagnostic(imp.range, message, { hint }));
    if (imp.path === '' || path.isAbsolute(imp.path) || /^[A-Za-z]:[\\/]/.test(imp.path)) {
      fail(`import path "${imp.path}" must be relative to the import roots`, 'write e.g. import "std/nn.lovt"');
      return;
    }
    const roots = [path.dirname(from.abs), stdRoot, ...libRoots];
    let escaped: string | undefined;
    let found: string | undefined;
    for (const root of roots) {
      const rootReal = host.realpath(root);
      const candidate = path.resolve(rootReal, imp.path);
      if (!inside(candidate, rootReal)) {
        escaped ??= candidate;
        continue;
      }
      if (host.read(candidate) === undefined) continue;
      const real = host.realpath(candidate);
      if (!inside(real, rootReal)) {
        escaped ??= real;
        continue;
      }
      found = real;
      break;
    }
    if (!found) {
      if (escaped)
        fail(
          `import "${imp.path}" escapes the import roots (it resolves to ${displayPath(escaped)})`,
          `imports may only name files under ${roots.map(displayPath).join(', ')}`,
        );
      else fail(`cannot find import "${imp.path}"`, `searched ${roots.map(displayPath).join(', ')}`);
      return;
    }
    const cycleAt = onStack.indexOf(found);
    if (cycleAt >= 0) {
      const names = [...onStack.slice(cycleAt), found].map(displayPath);
      fail(`import cycle: ${names.join(' -> ')}`);
      return;
    }
    if (byAbs.has(found)) return;
    if (files.length >= MAX_FILES) {
      fail(`more than ${MAX_FILES} files are imported`);
      return;
    }
    if (host.size(found) > MAX_FILE_BYTES) {
      fail(`imported file ${displayPath(found)} is larger than ${MAX_FILE_BYTES} bytes`);
      return;
    }
    const text = host.read(found) ?? '';
    const link: ImportLink = { file: from.path, line: imp.range.line, col: imp.range.col };
    load(found, text, [link, ...from.chain]);
  };

  const main = load(mainAbs, mainText, []);
  return { files, main, diagnostics };
}
