// A baseline (sequential, Huffman) JPEG encoder for single-channel 8-bit images, as in
// MIMIC-CXR-JPG. jpeg-js's encoder always writes three YCbCr components, rebuilds its tables
// on every call (≈25 ms fixed cost) and returns a Node Buffer, which fails in browsers; SynthCXR
// writes thousands of small grayscale images on both platforms, hence this encoder. It uses
// the standard tables of ITU-T T.81 Annex K (luminance quantisation scaled by the IJG quality
// formula; the typical DC/AC luminance Huffman tables) and a separable float DCT.

// Natural (row-major) index of each zigzag position.
const ZIGZAG = Int32Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22,
  15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]);

// Annex K.1 luminance quantisation table, row-major.
const BASE_QUANT = [
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103,
  77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

// Annex K.3 typical luminance Huffman tables: code counts per length 1..16, then symbols.
const DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_VALUES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_BITS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_VALUES = [
  0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42,
  0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35,
  0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67,
  0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
  0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
  0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4,
  0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

interface HuffmanTable {
  code: Int32Array;
  length: Int32Array;
}

/** Canonical codes from code counts per length (T.81 Annex C). */
function buildHuffman(bits: number[], values: number[]): HuffmanTable {
  const code = new Int32Array(256);
  const length = new Int32Array(256);
  let next = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    for (let i = 0; i < bits[len - 1]; i++) {
      code[values[k]] = next++;
      length[values[k]] = len;
      k++;
    }
    next <<= 1;
  }
  if (k !== values.length) throw new Error('JPEG Huffman table: counts and symbols disagree');
  return { code, length };
}

const DC_TABLE = buildHuffman(DC_BITS, DC_VALUES);
const AC_TABLE = buildHuffman(AC_BITS, AC_VALUES);

// cos((2x + 1)uπ/16) · C(u)/2, so that F = Σ_x Σ_y COS[u][x] COS[v][y] f(x, y).
const COS = new Float64Array(64);
for (let u = 0; u < 8; u++) {
  for (let x = 0; x < 8; x++) COS[u * 8 + x] = (u === 0 ? Math.SQRT1_2 : 1) * 0.5 * Math.cos(((2 * x + 1) * u * Math.PI) / 16);
}

/** IJG quality scaling of the base table (quality 1–100), natural order. */
function quantTable(quality: number): Int32Array {
  const q = Math.min(100, Math.max(1, Math.round(quality)));
  const scale = q < 50 ? 5000 / q : 200 - 2 * q;
  return Int32Array.from(BASE_QUANT, (b) => Math.min(255, Math.max(1, Math.floor((b * scale + 50) / 100))));
}

class ByteWriter {
  private bytes = new Uint8Array(4096);
  length = 0;
  private bitBuffer = 0;
  private bitCount = 0;

  private ensure(extra: number): void {
    if (this.length + extra <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + extra));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  byte(b: number): void {
    this.ensure(1);
    this.bytes[this.length++] = b;
  }

  word(w: number): void {
    this.byte((w >> 8) & 0xff);
    this.byte(w & 0xff);
  }

  array(values: ArrayLike<number>): void {
    for (let i = 0; i < values.length; i++) this.byte(values[i]);
  }

  /** Entropy-coded bits (count ≤ 16), most significant first, with 0xFF byte stuffing. */
  bits(value: number, count: number): void {
    this.bitBuffer = (this.bitBuffer << count) | (value & ((1 << count) - 1));
    this.bitCount += count;
    while (this.bitCount >= 8) {
      const b = (this.bitBuffer >> (this.bitCount - 8)) & 0xff;
      this.byte(b);
      if (b === 0xff) this.byte(0);
      this.bitCount -= 8;
    }
    this.bitBuffer &= (1 << this.bitCount) - 1;
  }

  /** Pads the last partial byte with 1 bits. */
  flushBits(): void {
    if (this.bitCount > 0) this.bits(0x7f, 8 - this.bitCount);
  }

  result(): Uint8Array {
    return this.bytes.slice(0, this.length);
  }
}

/** Bits needed for |v| (the JPEG "category"). */
function category(v: number): number {
  let a = Math.abs(v);
  let n = 0;
  while (a > 0) {
    n++;
    a >>= 1;
  }
  return n;
}

/** Appends v with its category's extra bits (negative values in ones' complement form). */
function writeValue(out: ByteWriter, v: number, size: number): void {
  if (size > 0) out.bits(v >= 0 ? v : v + (1 << size) - 1, size);
}

/**
 * Encodes 8-bit grayscale samples (row-major, width × height) as a baseline JPEG with one
 * component. Deterministic: the same input gives the same bytes.
 */
export function encodeGrayJpeg(width: number, height: number, samples: Uint8Array, quality = 90): Uint8Array {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0 && width < 65536 && height < 65536)) {
    throw new Error(`encodeGrayJpeg: bad size ${width}×${height}`);
  }
  if (samples.length !== width * height) throw new Error(`encodeGrayJpeg: ${samples.length} samples for ${width}×${height}`);
  const quant = quantTable(quality);
  const out = new ByteWriter();
  out.word(0xffd8); // SOI
  out.word(0xffe0);
  out.word(16);
  out.array([0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]); // APP0 JFIF 1.1
  out.word(0xffdb);
  out.word(67);
  out.byte(0);
  for (let i = 0; i < 64; i++) out.byte(quant[ZIGZAG[i]]); // DQT
  out.word(0xffc0);
  out.word(11);
  out.byte(8);
  out.word(height);
  out.word(width);
  out.byte(1);
  out.array([1, 0x11, 0]); // SOF0
  for (const [tableClass, bits, values] of [
    [0x00, DC_BITS, DC_VALUES],
    [0x10, AC_BITS, AC_VALUES],
  ] as const) {
    out.word(0xffc4);
    out.word(2 + 1 + 16 + values.length);
    out.byte(tableClass);
    out.array(bits);
    out.array(values); // DHT
  }
  out.word(0xffda);
  out.word(8);
  out.array([1, 1, 0x00, 0, 63, 0]); // SOS

  const block = new Float64Array(64);
  const rows = new Float64Array(64);
  const coefficients = new Int32Array(64);
  let previousDc = 0;
  for (let by = 0; by < height; by += 8) {
    for (let bx = 0; bx < width; bx += 8) {
      // Level-shifted block, edges replicated past the image border.
      for (let y = 0; y < 8; y++) {
        const sy = Math.min(by + y, height - 1) * width;
        for (let x = 0; x < 8; x++) block[y * 8 + x] = samples[sy + Math.min(bx + x, width - 1)] - 128;
      }
      // Separable DCT: rows then columns.
      for (let y = 0; y < 8; y++) {
        for (let u = 0; u < 8; u++) {
          let acc = 0;
          for (let x = 0; x < 8; x++) acc += COS[u * 8 + x] * block[y * 8 + x];
          rows[y * 8 + u] = acc;
        }
      }
      for (let v = 0; v < 8; v++) {
        for (let u = 0; u < 8; u++) {
          let acc = 0;
          for (let y = 0; y < 8; y++) acc += COS[v * 8 + y] * rows[y * 8 + u];
          coefficients[v * 8 + u] = Math.round(acc / quant[v * 8 + u]);
        }
      }
      // DC difference, then run-length coded AC in zigzag order.
      const dc = coefficients[0];
      const diff = dc - previousDc;
      previousDc = dc;
      const dcSize = category(diff);
      out.bits(DC_TABLE.code[dcSize], DC_TABLE.length[dcSize]);
      writeValue(out, diff, dcSize);
      let run = 0;
      for (let k = 1; k < 64; k++) {
        const c = coefficients[ZIGZAG[k]];
        if (c === 0) {
          run++;
          continue;
        }
        while (run > 15) {
          out.bits(AC_TABLE.code[0xf0], AC_TABLE.length[0xf0]); // ZRL: 16 zeros
          run -= 16;
        }
        const size = category(c);
        const symbol = (run << 4) | size;
        out.bits(AC_TABLE.code[symbol], AC_TABLE.length[symbol]);
        writeValue(out, c, size);
        run = 0;
      }
      if (run > 0) out.bits(AC_TABLE.code[0x00], AC_TABLE.length[0x00]); // EOB
    }
  }
  out.flushBits();
  out.word(0xffd9); // EOI
  return out.result();
}
