// safetensors reading and writing (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, …,
// "__metadata__": {string: string}}, then the raw little-endian tensor bytes. Offsets are
// relative to the end of the header.
//
// Reading validates the whole header (length bound, nesting depth, duplicate keys, JSON,
// dtypes, shapes, byte length = elements × dtype size, offsets tiling the data section with
// no overlap, hole or trailing bytes) before any tensor memory is allocated, so a corrupt or
// hostile file fails fast with an error naming the tensor (echoed input is clipped).
// runtime/platform/node-fs.ts readSafetensorsFile also checks the file type and its size
// against the header before reading it.
// F16/BF16 are widened to f32 and I64 narrowed to i32 (with a range check), because the
// runtime computes in f32/i32.

import { clip, echo, quote } from '../compiler/echo.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };

/** Header lengths above this are rejected before parsing (real headers are kilobytes). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: SafetensorsTensorInfo[];
  metadata: Record<string, string>;
  /** Absolute byte offset of the data section (8 + header length). */
  dataStart: number;
}

/** A tensor as the runtime holds it: f32 or i32, row-major. */
export type HostTensor = { dtype: 'f32'; shape: number[]; data: Float32Array } | { dtype: 'i32'; shape: number[]; data: Int32Array };

export interface SafetensorsContents {
  tensors: Map<string, HostTensor>;
  /** The stored dtype of each tensor before conversion. */
  storedDtypes: Map<string, SafetensorsDtype>;
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(`safetensors: ${message}`);
    this.name = 'SafetensorsError';
  }
}

/** The number of elements (Infinity past 2^53, so that it never equals a real byte count by accident). */
function elementCount(shape: number[]): number {
  let n = 1;
  for (const d of shape) {
    if (d === 0) return 0;
    n *= d;
  }
  return n > Number.MAX_SAFE_INTEGER ? Infinity : n;
}

/**
 * The header length N from the first 8 bytes of a file of `fileLength` bytes, checked against
 * the limit and the file length before anything else is read.
 */
export function safetensorsHeaderLength(prefix: Uint8Array, fileLength: number, maxHeader = MAX_HEADER_BYTES): number {
  if (fileLength < 8 || prefix.length < 8) throw new SafetensorsError(`file is ${fileLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const headerLength = view.getUint32(4, true) * 4294967296 + view.getUint32(0, true);
  if (headerLength > maxHeader) {
    throw new SafetensorsError(`header length ${headerLength} bytes exceeds the limit of ${maxHeader} bytes (corrupt file?)`);
  }
  if (headerLength < 2) throw new SafetensorsError(`header length ${headerLength} is too small for a JSON object`);
  if (8 + headerLength > fileLength) {
    throw new SafetensorsError(`header length ${headerLength} runs past the end of the ${fileLength}-byte file`);
  }
  return headerLength;
}

/**
 * Parses and validates the header. `bytes` holds at least the length and the header;
 * `fileLength` (default: bytes.length) is the whole file's, which the tensors' byte ranges
 * must cover exactly.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, opts: { maxHeaderBytes?: number; fileLength?: number } = {}): SafetensorsHeader {
  const fileLength = opts.fileLength ?? bytes.length;
  const headerLength = safetensorsHeaderLength(bytes, fileLength, opts.maxHeaderBytes);
  if (8 + headerLength > bytes.length) throw new SafetensorsError(`header length ${headerLength} runs past the ${bytes.length} bytes given`);
  const headerText = new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(8, 8 + headerLength));
  scanHeader(headerText);
  let json: unknown;
  try {
    json = JSON.parse(headerText);
  } catch (err) {
    throw new SafetensorsError(`header is not valid JSON: ${clip((err as Error).message)}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new SafetensorsError('header JSON is not an object');
  }
  const dataStart = 8 + headerLength;
  const dataLength = fileLength - dataStart;
  const tensors: SafetensorsTensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = validateMetadata(entry);
      continue;
    }
    tensors.push(validateEntry(name, entry, dataLength));
  }
  checkCoverage(tensors, dataLength);
  return { tensors, metadata, dataStart };
}

/**
 * The tensors' byte ranges, in order of their offsets, must tile the data section: no
 * overlaps, no holes, nothing after the last tensor (as the format specifies: a hole or
 * trailing bytes would be data no tensor accounts for).
 */
function checkCoverage(tensors: SafetensorsTensorInfo[], dataLength: number): void {
  const sorted = [...tensors].sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let covered = 0;
  for (let i = 0; i < sorted.length; i++) {
    const cur = sorted[i];
    const [begin, end] = cur.dataOffsets;
    if (begin < covered) {
      const prev = sorted[i - 1];
      throw new SafetensorsError(
        `tensor ${quote(cur.name)} bytes [${begin}, ${end}) overlap tensor ${quote(prev.name)} bytes [${prev.dataOffsets.join(', ')})`,
      );
    }
    if (begin > covered) throw new SafetensorsError(`bytes [${covered}, ${begin}) of the data section belong to no tensor (the next is ${quote(cur.name)})`);
    covered = end;
  }
  if (covered !== dataLength) {
    throw new SafetensorsError(
      `the data section is ${dataLength} bytes but the tensors end at byte ${covered}: ${dataLength - covered} trailing bytes (corrupt file?)`,
    );
  }
}

/** Containers allowed in a header: the object of entries, an entry or the metadata, a shape or offsets list. */
const MAX_HEADER_DEPTH = 3;

/**
 * Checks the raw header text before JSON.parse: nesting no deeper than a valid header's
 * (a 200k-deep list would otherwise exhaust memory or the stack of anything that walks it),
 * and no key twice in one object (JSON.parse silently keeps the last).
 * Syntax errors are left to JSON.parse.
 */
function scanHeader(text: string): void {
  const stack: { keys: Set<string> | null; key: string; expectKey: boolean }[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: find its closing quote (a backslash escapes the next character)
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        let key: string;
        try {
          key = JSON.parse(text.slice(i, j + 1));
        } catch {
          return;
        }
        if (top.keys.has(key)) {
          const where =
            stack.length === 1 ? 'the header' : stack.length === 2 && stack[0].key === '__metadata__' ? '"__metadata__"' : `tensor ${quote(stack[0].key)}`;
          throw new SafetensorsError(stack.length === 1 ? `tensor ${quote(key)} appears twice in the header` : `${where}: key ${quote(key)} appears twice`);
        }
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {
      if (stack.length === MAX_HEADER_DEPTH) {
        throw new SafetensorsError(
          `header nests lists or objects deeper than ${MAX_HEADER_DEPTH} levels (at character ${i}${stack[0]?.key ? `, in ${quote(stack[0].key)}` : ''}); a header is {name: {dtype, shape, data_offsets}}`,
        );
      }
      stack.push({ keys: c === 0x7b ? new Set() : null, key: '', expectKey: c === 0x7b });
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
    }
  }
}

function validateMetadata(entry: unknown): Record<string, string> {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsError('"__metadata__" must be an object of strings');
  }
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new SafetensorsError(`"__metadata__" value for ${quote(k)} is not a string`);
    out.push([k, v]);
  }
  // fromEntries defines own properties, so a key "__proto__" stays a key.
  return Object.fromEntries(out);
}

function validateEntry(name: string, entry: unknown, dataLength: number): SafetensorsTensorInfo {
  const what = `tensor ${quote(name)}`;
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsError(`${what}: entry is not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  // hasOwn: `in` would accept "toString" and "__proto__" from Object.prototype.
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) {
    throw new SafetensorsError(`${what}: unsupported dtype ${echo(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(`${what}: shape ${echo(shape)} is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new SafetensorsError(`${what}: data_offsets ${echo(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new SafetensorsError(`${what}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLength) {
    throw new SafetensorsError(`${what}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes)`);
  }
  const size = elementCount(shape as number[]) * DTYPE_BYTES[dtype as SafetensorsDtype];
  if (size !== end - begin) {
    throw new SafetensorsError(
      `${what}: shape ${echo(shape)} × ${dtype} needs ${Number.isFinite(size) ? size : 'more than 2^53'} bytes but data_offsets span ${end - begin}`,
    );
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: [...(shape as number[])], dataOffsets: [begin, end] };
}

/** Reads every tensor (converted to f32/i32) and the metadata. */
export function readSafetensors(bytes: Uint8Array, opts: { maxHeaderBytes?: number } = {}): SafetensorsContents {
  return decodeSafetensors(bytes, parseSafetensorsHeader(bytes, opts));
}

/** Decodes the tensors of a whole file whose header was parsed and validated against its length. */
export function decodeSafetensors(bytes: Uint8Array, header: SafetensorsHeader): SafetensorsContents {
  const tensors = new Map<string, HostTensor>();
  const storedDtypes = new Map<string, SafetensorsDtype>();
  for (const info of header.tensors) {
    tensors.set(info.name, decodeTensor(bytes, header.dataStart, info));
    storedDtypes.set(info.name, info.dtype);
  }
  return { tensors, storedDtypes, metadata: header.metadata };
}

const FLOAT_READERS: Record<'F32' | 'F16' | 'BF16', (view: DataView, i: number) => number> = {
  F32: (view, i) => view.getFloat32(4 * i, true),
  F16: (view, i) => f16BitsToF32(view.getUint16(2 * i, true)),
  BF16: (view, i) => bf16BitsToF32(view.getUint16(2 * i, true)),
};

/** Decodes one tensor described by a validated header entry. */
export function decodeTensor(bytes: Uint8Array, dataStart: number, info: SafetensorsTensorInfo): HostTensor {
  const [begin, end] = info.dataOffsets;
  const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart + begin, end - begin);
  const n = elementCount(info.shape);
  switch (info.dtype) {
    case 'F32':
    case 'F16':
    case 'BF16': {
      const read = FLOAT_READERS[info.dtype];
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = read(view, i);
      return { dtype: 'f32', shape: info.shape, data: out };
    }
    case 'I32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt32(4 * i, true);
      return { dtype: 'i32', shape: info.shape, data: out };
    }
    case 'I64': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const lo = view.getUint32(8 * i, true);
        const hi = view.getInt32(8 * i + 4, true);
        // In int32 range exactly when hi is the sign extension of lo's top bit.
        if (hi !== (lo >= 0x80000000 ? -1 : 0)) {
          throw new SafetensorsError(`tensor "${info.name}": I64 value ${(BigInt(hi) << 32n) + BigInt(lo)} at element ${i} does not fit in int32`);
        }
        out[i] = lo | 0;
      }
      return { dtype: 'i32', shape: info.shape, data: out };
    }
  }
}

/**
 * A tensor to write: f32 data stored as F32/F16/BF16, i32 data as I32/I64. A HostTensor
 * qualifies as is (its 'f32'/'i32' dtype must agree with the array type and selects F32/I32);
 * an upper-case safetensors dtype chooses the stored type.
 */
export interface TensorToWrite {
  shape: number[];
  data: Float32Array | Int32Array;
  dtype?: 'f32' | 'i32' | SafetensorsDtype;
}

/** Serialises tensors (in the given order) and string metadata to safetensors bytes. */
export function writeSafetensors(tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  // No prototype: a tensor named "__proto__" must become a key, not the object's prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length > 0) header.__metadata__ = validateMetadata(metadata);
  let offset = 0;
  const layout: { name: string; dtype: SafetensorsDtype; begin: number; t: TensorToWrite }[] = [];
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new SafetensorsError('a tensor cannot be named "__metadata__"');
    const isFloat = t.data instanceof Float32Array;
    if ((t.dtype === 'f32' || t.dtype === 'i32') && t.dtype !== (isFloat ? 'f32' : 'i32')) {
      throw new SafetensorsError(`tensor "${name}": dtype ${t.dtype} but data is a ${t.data.constructor.name}`);
    }
    const dtype: SafetensorsDtype = t.dtype === undefined || t.dtype === 'f32' || t.dtype === 'i32' ? (isFloat ? 'F32' : 'I32') : t.dtype;
    if (!(dtype in DTYPE_BYTES)) throw new SafetensorsError(`tensor "${name}": unsupported dtype ${JSON.stringify(t.dtype)}`);
    if (isFloat !== (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16')) {
      throw new SafetensorsError(`tensor "${name}": cannot store ${t.data.constructor.name} as ${dtype}`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || elementCount(t.shape) !== t.data.length) {
      throw new SafetensorsError(`tensor "${name}": shape [${t.shape.join(', ')}] does not match ${t.data.length} elements`);
    }
    const size = t.data.length * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    layout.push({ name, dtype, begin: offset, t });
    offset += size;
  }
  let headerBytes = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces to a multiple of 8 so the data section is aligned (as the
  // reference implementation does).
  const padded = Math.ceil(headerBytes.length / 8) * 8;
  if (padded !== headerBytes.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(headerBytes);
    headerBytes = p;
  }
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerBytes.length, true);
  view.setUint32(4, 0, true);
  out.set(headerBytes, 8);
  const dataStart = 8 + headerBytes.length;
  for (const { dtype, begin, t } of layout) {
    const base = dataStart + begin;
    const n = t.data.length;
    switch (dtype) {
      case 'F32':
        for (let i = 0; i < n; i++) view.setFloat32(base + 4 * i, t.data[i], true);
        break;
      case 'F16':
        for (let i = 0; i < n; i++) view.setUint16(base + 2 * i, f32ToF16Bits(t.data[i]), true);
        break;
      case 'BF16':
        for (let i = 0; i < n; i++) view.setUint16(base + 2 * i, f32ToBf16Bits(t.data[i]), true);
        break;
      case 'I32':
        for (let i = 0; i < n; i++) view.setInt32(base + 4 * i, t.data[i], true);
        break;
      case 'I64':
        for (let i = 0; i < n; i++) {
          view.setInt32(base + 8 * i, t.data[i], true);
          view.setInt32(base + 8 * i + 4, t.data[i] < 0 ? -1 : 0, true);
        }
        break;
    }
  }
  return out;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half bits → float. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 bits → float (the upper half of an f32). */
export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** float → IEEE half bits, round to nearest even, overflow to ±Inf. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0); // Inf / NaN
  let e = exponent - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the mantissa with the implicit bit in.
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let half = mantissa >>> shift;
    const rem = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >>> 13);
  const rem = mantissa & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // may carry into the exponent: correct
  return sign | half;
}

/** float → bfloat16 bits, round to nearest even. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return (x >>> 16) | 0x40; // quiet NaN
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}
