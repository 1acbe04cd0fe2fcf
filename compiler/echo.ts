// Echoing user input in error messages: a value from a file or the command line
// (a tensor name, a header field, a CSV cell, a --set value) may be megabytes
// long or nested thousands deep. These helpers show enough of it to recognise,
// in bounded time and length, without recursion that grows with the input.

/** Characters of echoed input kept in a message. */
export const ECHO_CHARS = 80;

/** `s` cut to `max` characters, with how long it was: `abc… (30000000 characters)`. */
export function clip(s: string, max = ECHO_CHARS): string {
  return s.length <= max ? s : `${head(s, max)}… (${s.length} characters)`;
}

/** `s` in double quotes (JSON escapes), clipped: `"abc"… (30000000 characters)`. */
export function quote(s: string, max = ECHO_CHARS): string {
  return s.length <= max ? JSON.stringify(s) : `${JSON.stringify(head(s, max))}… (${s.length} characters)`;
}

/** The first `max` characters, one less rather than half a surrogate pair. */
function head(s: string, max: number): string {
  const c = s.charCodeAt(max - 1);
  return s.slice(0, c >= 0xd800 && c <= 0xdbff ? max - 1 : max);
}

/**
 * Any value (parsed JSON, usually) as short JSON-like text: strings quoted and
 * clipped, at most 3 levels and 8 items per list or object shown, the whole
 * cut to `max` characters. `[[[…]]]` marks levels not shown.
 */
export function echo(v: unknown, max = 2 * ECHO_CHARS): string {
  return clip(render(v, 3), max);
}

function render(v: unknown, depth: number): string {
  if (typeof v === 'string') return quote(v);
  if (v === null || typeof v !== 'object') return String(v);
  if (depth === 0) return Array.isArray(v) ? '[…]' : '{…}';
  const items = Array.isArray(v) ? v : Object.keys(v);
  const shown = items
    .slice(0, 8)
    .map((x) => (Array.isArray(v) ? render(x, depth - 1) : `${quote(x as string)}: ${render((v as Record<string, unknown>)[x as string], depth - 1)}`));
  if (items.length > 8) shown.push(`… (${items.length} items)`);
  return Array.isArray(v) ? `[${shown.join(', ')}]` : `{${shown.join(', ')}}`;
}
