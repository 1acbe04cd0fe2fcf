// CSV reading/writing for the MIMIC-CXR metadata files, plain or gzip-compressed (.csv.gz).
// RFC 4180: quoted fields may contain commas, doubled quotes and newlines; CRLF or LF rows.
import { gunzipSync, gzipSync } from 'fflate';
import type { FileSource } from './fs.ts';
import { clip } from '../../compiler/echo.ts';

export interface CsvTable {
  /** Column names from the header row. */
  header: string[];
  /** Data rows as name → value; rows shorter than the header get '' for missing cells. */
  rows: Record<string, string>[];
  /** 1-based line number in the file where each data row starts (for error messages). */
  lines: number[];
  /** Rows whose cell count differs from the header's, by line number (kept, but suspicious). */
  raggedLines: number[];
}

/** True when the bytes start with the gzip magic number. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Decodes bytes to text, gunzipping first when they are gzip-compressed. */
export function decodeMaybeGzip(bytes: Uint8Array, what: string): string {
  let raw = bytes;
  if (isGzip(bytes)) {
    try {
      raw = gunzipSync(bytes);
    } catch (err) {
      throw new Error(`${what}: corrupt gzip data (${(err as Error).message})`);
    }
  }
  return new TextDecoder('utf-8').decode(raw);
}

/** Splits CSV text into rows of cells. */
export function parseCsvRows(text: string, what = 'CSV'): { cells: string[][]; lines: number[] } {
  const cells: string[][] = [];
  const lines: number[] = [];
  let row: string[] = [];
  let field = '';
  let inQuotes = false;
  let fieldWasQuoted = false;
  let line = 1;
  let rowStartLine = 1;
  let i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // byte-order mark
  const endRow = () => {
    row.push(field);
    // A completely empty line is not a row.
    if (!(row.length === 1 && row[0] === '' && !fieldWasQuoted)) {
      cells.push(row);
      lines.push(rowStartLine);
    }
    row = [];
    field = '';
    fieldWasQuoted = false;
  };
  for (; i < text.length; i++) {
    const ch = text[i];
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          inQuotes = false;
        }
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === '"') {
      if (field !== '') throw new Error(`${what}: line ${line}: quote inside an unquoted field`);
      inQuotes = true;
      fieldWasQuoted = true;
    } else if (ch === ',') {
      row.push(field);
      field = '';
      fieldWasQuoted = false;
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      endRow();
      line++;
      rowStartLine = line;
    } else {
      field += ch;
    }
  }
  if (inQuotes) throw new Error(`${what}: unterminated quoted field starting on line ${rowStartLine}`);
  if (field !== '' || row.length > 0 || fieldWasQuoted) endRow();
  return { cells, lines };
}

/** Parses CSV text with a header row. */
export function parseCsv(text: string, what = 'CSV'): CsvTable {
  const { cells, lines } = parseCsvRows(text, what);
  if (cells.length === 0) throw new Error(`${what}: empty file (no header row)`);
  const header = cells[0].map((h) => h.trim());
  const rows: Record<string, string>[] = [];
  const raggedLines: number[] = [];
  for (let r = 1; r < cells.length; r++) {
    const record: Record<string, string> = {};
    const rowCells = cells[r];
    if (rowCells.length !== header.length) raggedLines.push(lines[r]);
    for (let c = 0; c < header.length; c++) record[header[c]] = rowCells[c] ?? '';
    rows.push(record);
  }
  return { header, rows, lines: lines.slice(1), raggedLines };
}

/** Reads and parses a CSV file (gzip detected from the content, not the name). */
export async function readCsv(source: FileSource, path: string): Promise<CsvTable> {
  const bytes = await source.readFile(path);
  return parseCsv(decodeMaybeGzip(bytes, path), path);
}

/** Checks that a table has the named columns; the error names the file and what is missing. */
export function requireColumns(table: CsvTable, columns: string[], what: string): void {
  const missing = columns.filter((c) => !table.header.includes(c));
  if (missing.length > 0) {
    throw new Error(`${what}: missing column(s) ${missing.join(', ')} (header: ${clip(table.header.join(', '))})`);
  }
}

function quoteCell(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** Formats rows as CSV text (LF line endings, header first). */
export function formatCsv(header: string[], rows: (string | number)[][]): string {
  const out = [header.map(quoteCell).join(',')];
  for (const row of rows) out.push(row.map((v) => quoteCell(String(v))).join(','));
  return out.join('\n') + '\n';
}

/** CSV text → gzip bytes; mtime fixed at 0 so that the output is byte-identical across runs. */
export function gzipText(text: string): Uint8Array {
  return gzipSync(new TextEncoder().encode(text), { level: 6, mtime: 0 });
}
