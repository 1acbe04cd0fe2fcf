import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, parseSafetensorsHeader, readSafetensors, writeSafetensors } from '../../runtime/safetensors.ts';
import { readSafetensorsFile } from '../../runtime/platform/node-fs.ts';

/** Builds a file from a header object and raw data bytes (to craft malformed files). */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), headerLengthOverride?: number): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  const view = new DataView(out.buffer);
  const n = headerLengthOverride ?? h.length;
  view.setUint32(0, n % 4294967296, true);
  view.setUint32(4, Math.floor(n / 4294967296), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function throwsWith(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    assert.match((err as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected an error matching ${pattern}`);
}

test('round trip: f32 and i32 tensors, shapes, metadata, order', () => {
  const a = Float32Array.from([1.5, -2.25, 3e-8, 1e30, 0, -0]);
  const b = Int32Array.from([7, -8, 2147483647, -2147483648]);
  const scalar = Float32Array.from([42]);
  const bytes = writeSafetensors(
    new Map([
      ['layer.weight', { shape: [2, 3], data: a }],
      ['counter', { dtype: 'i32' as const, shape: [4], data: b }],
      ['scalar', { shape: [], data: scalar }],
    ]),
    { format: 'pt', note: 'hello' },
  );
  // Data section aligned to 8 bytes.
  const headerLength = new DataView(bytes.buffer).getUint32(0, true);
  assert.is(headerLength % 8, 0);
  const back = readSafetensors(bytes);
  assert.equal(back.metadata, { format: 'pt', note: 'hello' });
  assert.equal([...back.tensors.keys()], ['layer.weight', 'counter', 'scalar']);
  const w = back.tensors.get('layer.weight')!;
  assert.is(w.dtype, 'f32');
  assert.equal(w.shape, [2, 3]);
  assert.equal(Array.from(w.data), Array.from(a));
  assert.ok(Object.is(w.data[5], -0));
  const c = back.tensors.get('counter')!;
  assert.is(c.dtype, 'i32');
  assert.equal(Array.from(c.data), Array.from(b));
  assert.equal(back.tensors.get('scalar')!.shape, []);
  assert.equal(Array.from(back.tensors.get('scalar')!.data), [42]);
});

test('F16, BF16 and I64 are converted to f32 / i32', () => {
  const values = Float32Array.from([0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, 0.1]);
  const bytes = writeSafetensors({
    h: { shape: [8], data: values, dtype: 'F16' },
    bf: { shape: [8], data: values, dtype: 'BF16' },
    l: { shape: [3], data: Int32Array.from([5, -1, -2147483648]), dtype: 'I64' },
  });
  const back = readSafetensors(bytes);
  assert.equal(back.storedDtypes.get('h'), 'F16');
  assert.equal(back.storedDtypes.get('l'), 'I64');
  const h = back.tensors.get('h')!.data;
  // Exactly representable halves come back exactly; 0.1 rounds to the nearest half.
  assert.equal(Array.from(h.slice(0, 7)), Array.from(values.slice(0, 7)));
  assert.is(h[7], 0.0999755859375);
  const bf = back.tensors.get('bf')!.data;
  assert.is(bf[1], 1);
  assert.is(bf[2], -2);
  assert.is(bf[7], 0.10009765625); // bf16 nearest of 0.1
  assert.equal(Array.from(back.tensors.get('l')!.data), [5, -1, -2147483648]);
});

test('half conversion: rounding to nearest even, subnormals, overflow, all finite halves round-trip', () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const exponent = (bits >> 10) & 0x1f;
    if (exponent === 31) continue; // Inf/NaN
    const value = f16BitsToF32(bits);
    assert.is(f32ToF16Bits(value), bits, `half bits ${bits.toString(16)}`);
  }
  assert.is(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie → even (down)
  assert.is(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
  assert.is(f32ToF16Bits(70000), 0x7c00); // overflow → +Inf
  assert.is(f32ToF16Bits(2 ** -26), 0); // underflow → 0
  assert.is(f16BitsToF32(0x7c00), Infinity);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.is(f32ToBf16Bits(1), 0x3f80);
  assert.is(f32ToBf16Bits(-2), 0xc000);
});

test('I64 values outside int32 are rejected with the tensor name', () => {
  const data = new Uint8Array(16);
  const view = new DataView(data.buffer);
  view.setInt32(0, 1, true);
  view.setInt32(8, 0, true);
  view.setInt32(12, 1, true); // 2^32
  const bytes = craft({ steps: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data);
  throwsWith(() => readSafetensors(bytes), /tensor "steps": I64 value 4294967296 at element 1 does not fit in int32/);
});

test('malformed headers: each fails with a clear error before allocation', () => {
  throwsWith(() => readSafetensors(new Uint8Array(5)), /shorter than the 8-byte header length/);
  throwsWith(() => readSafetensors(craft({}, new Uint8Array(0), 200 * 1024 * 1024)), /header length 209715200 bytes exceeds the limit/);
  throwsWith(() => readSafetensors(craft({}, new Uint8Array(0), 2 ** 40)), /exceeds the limit/);
  throwsWith(() => readSafetensors(craft({ a: 1 }, new Uint8Array(0), 4000)), /runs past the end of the/);
  throwsWith(() => readSafetensors(craft('{"a": [1, 2')), /header is not valid JSON/);
  throwsWith(() => readSafetensors(craft('[1, 2, 3]')), /header JSON is not an object/);
  throwsWith(() => readSafetensors(craft({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8))), /tensor "w": unsupported dtype "F64"/);
  throwsWith(
    () => readSafetensors(craft({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4))),
    /tensor "w": shape \[-1\] is not a list of non-negative integers/,
  );
  throwsWith(
    () => readSafetensors(craft({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4))),
    /tensor "w": data_offsets \[0\] is not a pair/,
  );
  throwsWith(
    () => readSafetensors(craft({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(4))),
    /tensor "w": data_offsets \[0, 8\] run past the end of the data section \(4 bytes\)/,
  );
  throwsWith(
    () => readSafetensors(craft({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8))),
    /tensor "w": shape \[3\] × F32 needs 12 bytes but data_offsets span 8/,
  );
  throwsWith(
    () => readSafetensors(craft({ w: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(8))),
    /tensor "w": data_offsets \[4, 0\] end before they begin/,
  );
  throwsWith(
    () =>
      readSafetensors(
        craft(
          {
            a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
            b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
          },
          new Uint8Array(12),
        ),
      ),
    /tensor "b" bytes \[4, 12\) overlap tensor "a" bytes \[0, 8\)/,
  );
  throwsWith(() => readSafetensors(craft({ __metadata__: { a: 3 } })), /"__metadata__" value for "a" is not a string/);
  throwsWith(() => readSafetensors(craft({ w: 'nope' })), /tensor "w": entry is not an object/);
});

test('a valid hand-built file with unordered offsets, F32 data and metadata reads correctly', () => {
  const data = new Uint8Array(12);
  const view = new DataView(data.buffer);
  view.setFloat32(0, 2.5, true); // b
  view.setInt32(4, -3, true); // a[0]
  view.setInt32(8, 9, true); // a[1]
  const bytes = craft(
    {
      a: { dtype: 'I32', shape: [2], data_offsets: [4, 12] },
      __metadata__: { source: 'hand' },
      b: { dtype: 'F32', shape: [1, 1], data_offsets: [0, 4] },
    },
    data,
  );
  const header = parseSafetensorsHeader(bytes);
  assert.equal(
    header.tensors.map((t) => t.name),
    ['a', 'b'],
  );
  const back = readSafetensors(bytes);
  assert.equal(Array.from(back.tensors.get('a')!.data), [-3, 9]);
  assert.equal(Array.from(back.tensors.get('b')!.data), [2.5]);
  assert.equal(back.metadata, { source: 'hand' });
});

test('hostile headers: prototype dtypes, deep nesting, duplicate keys, holes, trailing bytes, huge echoes', () => {
  const f32 = (offsets = [0, 4]) => ({ dtype: 'F32', shape: [1], data_offsets: offsets });
  // `in` on a plain object accepted these as dtypes
  throwsWith(
    () => readSafetensors(craft({ w: { ...f32(), dtype: '__proto__' } }, new Uint8Array(4))),
    /^safetensors: tensor "w": unsupported dtype "__proto__" \(supported: F32, F16, BF16, I32, I64\)$/,
  );
  throwsWith(() => readSafetensors(craft({ w: { ...f32(), dtype: 'toString' } }, new Uint8Array(4))), /^safetensors: tensor "w": unsupported dtype "toString"/);
  // a 200k-deep shape overflowed the stack
  const deep = `{"w":{"dtype":"F32","shape":${'['.repeat(200_000)}${']'.repeat(200_000)},"data_offsets":[0,4]}}`;
  throwsWith(
    () => readSafetensors(craft(deep, new Uint8Array(4))),
    /^safetensors: header nests lists or objects deeper than 3 levels \(at character 29, in "w"\); a header is \{name: \{dtype, shape, data_offsets\}\}$/,
  );
  // duplicate keys: JSON.parse keeps the last one silently
  throwsWith(
    () => readSafetensors(craft(`{"w":${JSON.stringify(f32())},"w":${JSON.stringify(f32())}}`, new Uint8Array(4))),
    /^safetensors: tensor "w" appears twice in the header$/,
  );
  throwsWith(
    () => readSafetensors(craft('{"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4))),
    /^safetensors: tensor "w": key "dtype" appears twice$/,
  );
  throwsWith(() => readSafetensors(craft('{"__metadata__":{"a":"1","\\u0061":"2"}}')), /^safetensors: "__metadata__": key "a" appears twice$/);
  // every byte of the data section belongs to exactly one tensor
  throwsWith(
    () => readSafetensors(craft({ a: f32([0, 4]), b: f32([8, 12]) }, new Uint8Array(12))),
    /^safetensors: bytes \[4, 8\) of the data section belong to no tensor \(the next is "b"\)$/,
  );
  throwsWith(
    () => readSafetensors(craft({ a: f32() }, new Uint8Array(9))),
    /^safetensors: the data section is 9 bytes but the tensors end at byte 4: 5 trailing bytes \(corrupt file\?\)$/,
  );
  throwsWith(
    () => readSafetensors(craft({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, new Uint8Array(4))),
    /needs more than 2\^53 bytes but data_offsets span 4/,
  );
  // echoed input is clipped: a 30 MB tensor name, a long dtype, a deep-ish shape
  const long = 'n'.repeat(30_000_000);
  for (const [header, pattern] of [
    [{ [long]: { ...f32(), dtype: 'F64' } }, /^safetensors: tensor "n{80}"… \(30000000 characters\): unsupported dtype "F64"/],
    [{ w: { ...f32(), dtype: long } }, /^safetensors: tensor "w": unsupported dtype "n{80}"… \(30000000 characters\) \(supported/],
    [
      { w: { ...f32(), shape: Array.from({ length: 100_000 }, (_, i) => i - 1) } },
      /^safetensors: tensor "w": shape \[-1, 0, 1, 2, 3, 4, 5, 6, … \(100000 items\)\] is not a list/,
    ],
  ] as const) {
    try {
      readSafetensors(craft(header, new Uint8Array(4)));
      assert.unreachable('expected an error');
    } catch (err) {
      assert.match((err as Error).message, pattern);
      assert.ok((err as Error).message.length < 300, `message of ${(err as Error).message.length} characters`);
    }
  }
  // "__proto__" as a tensor name or metadata key is an ordinary name
  const ok = readSafetensors(craft({ __proto__x: f32(), __metadata__: { format: 'pt' } }, new Uint8Array(4)));
  assert.equal([...ok.tensors.keys()], ['__proto__x']);
  const proto = readSafetensors(craft('{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"__proto__":"kept"}}', new Uint8Array(4)));
  assert.equal([...proto.tensors.keys()], ['__proto__']);
  assert.equal(Object.entries(proto.metadata), [['__proto__', 'kept']]);
  // and the writer keeps it (it was set as the header object's prototype, so its bytes had no entry)
  const written = readSafetensors(writeSafetensors(new Map([['__proto__', { shape: [1], data: Float32Array.of(7) }]])));
  assert.equal(Array.from(written.tensors.get('__proto__')!.data), [7]);
});

test('files: only regular files are read, checked against the header before the data; errors name the path', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lovt-st-'));
  try {
    const good = path.join(dir, 'good.safetensors');
    const bytes = writeSafetensors({ w: { shape: [2], data: Float32Array.of(1.5, -2) } });
    writeFileSync(good, bytes);
    const back = await readSafetensorsFile(good, `--weights ${good}`);
    assert.equal(Array.from(back.tensors.get('w')!.data), [1.5, -2]);
    const rejects = async (file: string, pattern: RegExp) => {
      try {
        await readSafetensorsFile(file, `--weights ${file}`);
      } catch (err) {
        assert.match((err as Error).message, pattern);
        return;
      }
      assert.unreachable(`${file} was read`);
    };
    const esc = (p: string) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await rejects(path.join(dir, 'nope'), new RegExp(`^cannot read --weights ${esc(dir)}/nope: ENOENT: no such file or directory$`));
    await rejects(dir, new RegExp(`^cannot read --weights ${esc(dir)}: it is a directory, not a regular file$`));
    await rejects('/dev/zero', /^cannot read --weights \/dev\/zero: it is a character device, not a regular file$/);
    const loop = path.join(dir, 'loop');
    symlinkSync(loop, loop);
    await rejects(loop, new RegExp(`^cannot read --weights ${esc(loop)}: ELOOP: too many symbolic links encountered$`));
    if (process.platform !== 'win32') {
      const fifo = path.join(dir, 'fifo');
      assert.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
      await rejects(fifo, new RegExp(`^cannot read --weights ${esc(fifo)}: it is a named pipe \\(FIFO\\), not a regular file$`));
    }
    // cut short: the header promises 8 data bytes, the file has 4
    const short = path.join(dir, 'short.safetensors');
    writeFileSync(short, bytes.subarray(0, bytes.length - 4));
    await rejects(
      short,
      new RegExp(`^--weights ${esc(short)}: safetensors: tensor "w": data_offsets \\[0, 8\\] run past the end of the data section \\(4 bytes\\)$`),
    );
    // a header length beyond the file: refused before the header is read
    const huge = path.join(dir, 'huge.safetensors');
    writeFileSync(huge, craft('{}', new Uint8Array(0), 50_000_000));
    await rejects(huge, /safetensors: header length 50000000 runs past the end of the 10-byte file$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writing rejects inconsistent tensors', () => {
  throwsWith(() => writeSafetensors({ x: { shape: [3], data: new Float32Array(2) } }), /tensor "x": shape \[3\] does not match 2 elements/);
  throwsWith(() => writeSafetensors({ x: { shape: [2], data: new Int32Array(2), dtype: 'F16' } }), /tensor "x": cannot store Int32Array as F16/);
  throwsWith(() => writeSafetensors({ x: { shape: [2], data: new Float32Array(2), dtype: 'i32' } }), /tensor "x": dtype i32 but data is a Float32Array/);
});

test.run();
