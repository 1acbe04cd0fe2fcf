// Property tests of the safetensors reader: random mutations of valid files and
// generated hostile headers (huge, negative and fractional numbers, nested junk,
// prototype keys, deep lists, duplicate keys, unicode, long strings) always give
// either a consistent result or a SafetensorsError with a short message, never
// another exception, a hang or an allocation the file does not justify. Special
// files (FIFO, /dev/zero, a directory, a symlink loop) are refused by the file
// reader with the path named.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readSafetensorsFile } from '../../runtime/platform/node-fs.ts';
import { readSafetensors, SafetensorsError, writeSafetensors, type SafetensorsDtype } from '../../runtime/safetensors.ts';

/** Longest error message accepted: echoed input must be clipped. */
const MAX_MESSAGE = 600;

const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };

/**
 * Reads `bytes`; a result must be self-consistent (each tensor's element count is its
 * shape's product, and the stored bytes of all tensors fill the data section exactly), a
 * refusal must be a short SafetensorsError. Returns which it was.
 */
function readOrRefuse(bytes: Uint8Array): 'read' | 'refused' {
  let r: ReturnType<typeof readSafetensors>;
  try {
    r = readSafetensors(bytes);
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw new Error(`not a SafetensorsError: ${(e as Error).stack}`);
    if (e.message.length > MAX_MESSAGE) throw new Error(`message of ${e.message.length} characters: ${e.message.slice(0, 200)}…`);
    return 'refused';
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  let stored = 0;
  for (const [name, t] of r.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) throw new Error(`tensor ${name}: ${t.data.length} elements for shape [${t.shape}]`);
    stored += n * BYTES[r.storedDtypes.get(name)!];
  }
  if (stored !== bytes.length - 8 - headerLength) throw new Error(`tensors hold ${stored} bytes, the data section is ${bytes.length - 8 - headerLength}`);
  for (const v of Object.values(r.metadata)) if (typeof v !== 'string') throw new Error('metadata value is not a string');
  return 'read';
}

function withHeader(text: string, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setUint32(0, h.length, true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

// ------------------------------------------------------------ valid files, mutated

const dtypeArb = fc.constantFrom<SafetensorsDtype>('F32', 'F16', 'BF16', 'I32', 'I64');
const tensorArb = fc.record({
  name: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__proto__', 'toString', 'constructor', 'layer.0.weight')),
  dtype: dtypeArb,
  shape: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
});
const validFileArb = fc.uniqueArray(tensorArb, { maxLength: 4, selector: (t) => t.name }).map((ts) => {
  const tensors = new Map(
    ts
      .filter((t) => t.name !== '__metadata__')
      .map((t, k) => {
        const n = t.shape.reduce((a, b) => a * b, 1);
        const float = t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16';
        const data = float ? Float32Array.from({ length: n }, (_, i) => (i - k) / 4) : Int32Array.from({ length: n }, (_, i) => i * 7 - k);
        return [t.name, { shape: t.shape, data, dtype: t.dtype }] as const;
      }),
  );
  return writeSafetensors(tensors, { format: 'pt' });
});

const HOSTILE_NUMBERS = [
  '-1',
  '0.5',
  '1e999',
  '-0',
  '9007199254740993',
  '1e308',
  '4294967296',
  '18446744073709551616',
  '2147483648',
  '"1"',
  'null',
  '[]',
  '{}',
  'true',
];
const HOSTILE_STRINGS = ['"__proto__"', '"toString"', '"constructor"', '"F64"', '""', '"\\u0000"', '"\\ud800"', '"ünïcödé 😀"', `"${'x'.repeat(10_000)}"`];

type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'append'; data: Uint8Array }
  | { kind: 'length'; value: number }
  | { kind: 'number'; at: number; text: string }
  | { kind: 'string'; at: number; text: string }
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'duplicate'; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('append' as const), data: fc.uint8Array({ maxLength: 16 }) }),
  fc.record({ kind: fc.constant('length' as const), value: fc.oneof(fc.nat(), fc.constantFrom(0, 1, 2 ** 31, 2 ** 32 - 1, 200 * 1024 * 1024)) }),
  fc.record({ kind: fc.constant('number' as const), at: fc.nat(), text: fc.constantFrom(...HOSTILE_NUMBERS) }),
  fc.record({ kind: fc.constant('string' as const), at: fc.nat(), text: fc.constantFrom(...HOSTILE_STRINGS) }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    text: fc.oneof(fc.constantFrom('[', ']', '{', '}', ',', ':', '"', '\\', '[[[[[[', '"a":1,'), fc.string({ maxLength: 6, unit: 'binary' })),
  }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat() }),
);

/** The header text and data of a file (the header length as stored, clamped to the file). */
function split(bytes: Uint8Array): { text: string; data: Uint8Array } {
  const n = Math.min(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true), bytes.length - 8);
  return { text: new TextDecoder().decode(bytes.subarray(8, 8 + n)), data: bytes.slice(8 + n) };
}

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  if (bytes.length < 8) return bytes;
  switch (m.kind) {
    case 'byte': {
      const out = bytes.slice();
      out[m.at % out.length] = m.value;
      return out;
    }
    case 'truncate':
      return bytes.slice(0, m.at % (bytes.length + 1));
    case 'append': {
      const out = new Uint8Array(bytes.length + m.data.length);
      out.set(bytes);
      out.set(m.data, bytes.length);
      return out;
    }
    case 'length': {
      const out = bytes.slice();
      new DataView(out.buffer).setUint32(0, m.value >>> 0, true);
      return out;
    }
    default: {
      // Text edits of the header, stored with its new length.
      const { text, data } = split(bytes);
      const tokens = [...text.matchAll(m.kind === 'number' ? /-?\d+(\.\d+)?([eE][-+]?\d+)?/g : /"(?:[^"\\]|\\.)*"/g)];
      if (m.kind === 'insert') {
        const at = m.at % (text.length + 1);
        return withHeader(text.slice(0, at) + m.text + text.slice(at), data);
      }
      if (m.kind === 'duplicate') {
        const entries = [...text.matchAll(/"(?:[^"\\]|\\.)*":\{[^{}]*\}/g)];
        if (entries.length === 0) return bytes;
        const e = entries[m.at % entries.length];
        return withHeader(`${text.slice(0, e.index!)}${e[0]},${text.slice(e.index!)}`, data);
      }
      if (tokens.length === 0) return bytes;
      const t = tokens[m.at % tokens.length];
      return withHeader(text.slice(0, t.index!) + m.text + text.slice(t.index! + t[0].length), data);
    }
  }
}

test('mutated valid files: a consistent result or a short SafetensorsError', () => {
  const seen = { read: 0, refused: 0 };
  fc.assert(
    fc.property(validFileArb, fc.array(mutationArb, { minLength: 1, maxLength: 3 }), (file, muts) => {
      assert.is(readOrRefuse(file), 'read'); // the unmutated file is valid
      let bytes = file;
      for (const m of muts) bytes = mutate(bytes, m);
      seen[readOrRefuse(bytes)]++;
    }),
    { numRuns: 400, includeErrorInReport: true },
  );
  assert.ok(seen.refused > 100 && seen.read > 0, `read ${seen.read}, refused ${seen.refused}`);
});

// ------------------------------------------------------------ hostile headers

const hostileNumberArb = fc.oneof(
  fc.constantFrom(-1, -0, 0.5, 2 ** 53, 2 ** 53 + 2, 1e308, Number.MAX_VALUE, 2 ** 31, 2 ** 32, 2 ** 62),
  fc.integer({ min: -4, max: 64 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const junkArb = fc.jsonValue({ maxDepth: 3 });
const nameArb = fc.oneof(
  fc.string({ maxLength: 8, unit: 'binary' }),
  fc.constantFrom('__proto__', '__metadata__', 'toString', 'constructor', 'hasOwnProperty', '', 'w', 'w'),
  fc.integer({ min: 1000, max: 100_000 }).map((n) => 'n'.repeat(n)),
);
const entryArb = fc.oneof(
  fc.record(
    {
      dtype: fc.oneof(dtypeArb, fc.constantFrom('__proto__', 'toString', 'valueOf', 'f32', 'F64', ''), junkArb),
      shape: fc.oneof(fc.array(hostileNumberArb, { maxLength: 4 }), fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), junkArb),
      data_offsets: fc.oneof(fc.tuple(hostileNumberArb, hostileNumberArb), fc.tuple(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 64 })), junkArb),
    },
    { requiredKeys: [] },
  ),
  junkArb,
);
const hostileHeaderArb = fc
  .tuple(
    fc.array(fc.tuple(nameArb, entryArb), { maxLength: 5 }),
    fc.option(fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.string({ maxLength: 4 }), junkArb), { maxKeys: 3 })),
    fc.constantFrom('', 'deep', 'dup', 'raw-number'),
    fc.integer({ min: 1, max: 300_000 }),
  )
  .map(([entries, metadata, twist, n]) => {
    // Pairs, not an object: names may repeat (the raw text then has duplicate keys).
    const parts = entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    if (metadata) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
    if (twist === 'deep') parts.push(`"deep":{"dtype":"F32","shape":${'['.repeat(n)}${']'.repeat(n)},"data_offsets":[0,0]}`);
    if (twist === 'dup' && parts.length) parts.push(parts[0]);
    if (twist === 'raw-number') parts.push(`"big":{"dtype":"F32","shape":[1e999, -0, 1E400],"data_offsets":[0, ${'9'.repeat(n % 400)}]}`);
    return `{${parts.join(',')}}`;
  });

test('hostile headers: a consistent result or a short SafetensorsError', () => {
  const seen = { read: 0, refused: 0 };
  fc.assert(
    fc.property(hostileHeaderArb, fc.uint8Array({ maxLength: 64 }), (header, data) => {
      seen[readOrRefuse(withHeader(header, data))]++;
    }),
    { numRuns: 300, includeErrorInReport: true },
  );
  assert.ok(seen.refused > 200, `read ${seen.read}, refused ${seen.refused}`);
});

test('special files are refused by type, naming the path; nothing is read from them', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-st-fuzz-'));
  try {
    const loop = path.join(dir, 'loop.safetensors');
    symlinkSync(loop, loop);
    const cases: [string, RegExp][] = [
      ['/dev/zero', /it is a character device, not a regular file/],
      [dir, /it is a directory, not a regular file/],
      [loop, /ELOOP/],
    ];
    if (process.platform !== 'win32') {
      const fifo = path.join(dir, 'weights.fifo');
      assert.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
      cases.push([fifo, /it is a named pipe \(FIFO\), not a regular file/]);
    }
    for (const [file, why] of cases) {
      try {
        await readSafetensorsFile(file, `--init image_encoder=${file}`);
        assert.unreachable(`${file} was read`);
      } catch (err) {
        const msg = (err as Error).message;
        assert.ok(msg.startsWith(`cannot read --init image_encoder=${file}: `), msg);
        assert.match(msg, why);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
