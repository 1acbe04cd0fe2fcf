// Compile errors: the Diagnostic record every front-end stage produces, its
// rendering (`path:line:col: error: message`, the source line with a caret,
// notes, a hint, the import chain), and "did you mean" suggestions.

import type { Range } from '../../grammar/ast.ts';
import { ECHO_CHARS, clip } from '../echo.ts';

export interface ImportLink {
  /** The file that holds the import statement. */
  file: string;
  line: number;
  col: number;
}

export interface Diagnostic {
  file: string;
  line: number; // 1-based; 0 when the problem has no source position (command line)
  col: number;
  endLine: number;
  endCol: number;
  severity: 'error' | 'warning';
  message: string;
  hint?: string;
  /** Extra located facts: where each operand came from, the call trace. */
  notes?: string[];
  /** For errors in imported files: the imports that led there, innermost first. */
  importChain?: ImportLink[];
  /** The text of line `line`, for rendering without the file at hand. */
  source?: string;
}

export interface DiagExtras {
  hint?: string;
  notes?: string[];
}

/** A located compile error thrown inside the front end and caught at statement level. */
export class CompileError extends Error {
  constructor(
    public readonly range: Range | undefined,
    message: string,
    public readonly extras: DiagExtras = {},
  ) {
    super(message);
  }
}

/**
 * An error that stops elaboration altogether (a resource limit). Statement-level
 * recovery does not catch it, so bounded work stays bounded.
 */
export class FatalError extends CompileError {}

export const COMMAND_LINE = '<command line>';

/** Each front-end stage stops after this many errors, so a huge bad input costs bounded work. */
export const MAX_ERRORS = 50;

export function makeDiagnostic(range: Range | undefined, message: string, extras: DiagExtras = {}, severity: 'error' | 'warning' = 'error'): Diagnostic {
  const d: Diagnostic = {
    file: range?.file ?? COMMAND_LINE,
    line: range?.line ?? 0,
    col: range?.col ?? 0,
    endLine: range?.endLine ?? 0,
    endCol: range?.endCol ?? 0,
    severity,
    // Messages quote names and values from the input, which may be megabytes long.
    message: clip(message, 10 * ECHO_CHARS),
  };
  if (extras.hint) d.hint = extras.hint;
  if (extras.notes && extras.notes.length) d.notes = extras.notes;
  return d;
}

export function formatLoc(r: { file: string; line: number; col: number }): string {
  return `${r.file}:${r.line}:${r.col}`;
}

/**
 * Renders one diagnostic as text (no colours). A diagnostic without a source
 * position (the command line) starts with `tool: ` when the caller names its
 * command (lovtc, lovt-run).
 */
export function renderDiagnostic(d: Diagnostic, tool?: string): string {
  const out: string[] = [];
  const where = d.line > 0 ? `${d.file}:${d.line}:${d.col}: ` : d.file === COMMAND_LINE ? (tool ? `${tool}: ` : '') : `${d.file}: `;
  out.push(`${where}${d.severity}: ${d.message}`);
  if (d.line > 0 && d.source !== undefined) {
    const num = String(d.line);
    const pad = ' '.repeat(num.length);
    let text = d.source.replace(/\t/g, ' ');
    let start = Math.max(0, d.col - 1);
    let end = d.endLine === d.line ? Math.max(start + 1, d.endCol - 1) : Math.max(start + 1, text.length);
    // A long line is shown as a window around the caret.
    if (text.length > 2 * ECHO_CHARS) {
      const from = Math.max(0, Math.min(start - ECHO_CHARS / 2, text.length - 2 * ECHO_CHARS));
      const to = from + 2 * ECHO_CHARS;
      const lead = from > 0 ? '… ' : '';
      text = lead + text.slice(from, to) + (to < text.length ? ' …' : '');
      start = start - from + lead.length;
      end = Math.min(end - from, to - from) + lead.length;
    }
    const width = Math.max(1, Math.min(end, Math.max(text.length, start + 1)) - start);
    out.push(` ${num} | ${text}`);
    out.push(` ${pad} | ${' '.repeat(start)}${'^'.repeat(width)}`);
  }
  for (const n of d.notes ?? []) out.push(`note: ${n}`);
  if (d.hint) out.push(`hint: ${d.hint}`);
  for (const link of d.importChain ?? []) out.push(`  imported from ${formatLoc(link)}`);
  return out.join('\n');
}

export function renderDiagnostics(ds: Diagnostic[], tool?: string): string {
  return ds.map((d) => renderDiagnostic(d, tool)).join('\n\n');
}

// ------------------------------------------------------------ did you mean

/** Optimal-string-alignment distance (a swap of neighbours is one edit), cut off above `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) cur[j] = Math.min(cur[j], prev2[j - 2] + 1);
      best = Math.min(best, cur[j]);
    }
    if (best > limit) return limit + 1;
    prev2 = prev;
    prev = cur;
  }
  return prev[b.length];
}

/** The candidate closest to `name` (case-insensitive match first), or undefined if none is close. */
export function suggest(name: string, candidates: Iterable<string>): string | undefined {
  // Very short names are too close to everything: only a case-insensitive match counts.
  const limit = name.length <= 2 ? 0 : Math.max(1, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestD = limit + 1;
  const lower = name.toLowerCase();
  for (const c of candidates) {
    if (c === name) continue;
    if (c.toLowerCase() === lower) return c;
    const d = editDistance(lower, c.toLowerCase(), limit);
    if (d < bestD || (d === bestD && best !== undefined && c < best)) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= limit ? best : undefined;
}

export function didYouMean(name: string, candidates: Iterable<string>): DiagExtras {
  const s = suggest(name, candidates);
  return s ? { hint: `did you mean '${s}'?` } : {};
}
