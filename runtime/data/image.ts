// Image decoding and geometry for the data pipeline. Images are single-channel float
// [0, 1] ("GrayImage"): chest radiographs are grayscale, and the ResNet input repeats the one
// channel 3× only at batch time. JPEG decoding via jpeg-js, PNG via fast-png, JPEG encoding
// via jpeg-encode.ts (all pure JavaScript, so this runs in browsers too).
import * as jpeg from 'jpeg-js';
import { decode as decodePng, encode as encodePng, convertIndexedToRgb } from 'fast-png';
import { encodeGrayJpeg } from './jpeg-encode.ts';

export interface GrayImage {
  width: number;
  height: number;
  /** Row-major intensities in [0, 1]; length width × height. */
  data: Float32Array;
}

export function makeImage(width: number, height: number, fill = 0): GrayImage {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`image size must be positive integers, got ${width}×${height}`);
  }
  const data = new Float32Array(width * height);
  if (fill !== 0) data.fill(fill);
  return { width, height, data };
}

/** Thrown for bytes that are not a decodable image; `what` names the file. */
export class ImageDecodeError extends Error {
  constructor(what: string, detail: string) {
    super(`${what}: cannot decode image (${detail})`);
    this.name = 'ImageDecodeError';
  }
}

// ITU-R 601-2 luma, as PIL's convert('L') uses for colour inputs.
function luma(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
}

/** Decodes JPEG or PNG (sniffed from the bytes) to grayscale [0, 1]. */
export function decodeImage(bytes: Uint8Array, what: string): GrayImage {
  if (isJpeg(bytes)) return decodeJpegGray(bytes, what);
  if (isPng(bytes)) return decodePngGray(bytes, what);
  throw new ImageDecodeError(what, bytes.length === 0 ? 'empty file' : 'neither JPEG nor PNG signature');
}

/**
 * Strict JPEG decoding: a file that does not end with the EOI marker is truncated (jpeg-js's
 * tolerant mode would silently fill the missing blocks with grey), and decoding errors are
 * reported as ImageDecodeError.
 */
export function decodeJpegGray(bytes: Uint8Array, what: string): GrayImage {
  if (!isJpeg(bytes)) throw new ImageDecodeError(what, 'no JPEG start-of-image marker');
  // Some writers append padding after EOI; look for FF D9 within the last 64 bytes.
  let hasEoi = false;
  for (let i = bytes.length - 2; i >= Math.max(2, bytes.length - 64); i--) {
    if (bytes[i] === 0xff && bytes[i + 1] === 0xd9) {
      hasEoi = true;
      break;
    }
  }
  if (!hasEoi) throw new ImageDecodeError(what, 'truncated JPEG: no end-of-image marker');
  let decoded: { width: number; height: number; data: Uint8Array };
  try {
    decoded = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false, maxMemoryUsageInMB: 2048 });
  } catch (err) {
    throw new ImageDecodeError(what, (err as Error).message);
  }
  const { width, height, data } = decoded;
  if (!(width > 0 && height > 0)) throw new ImageDecodeError(what, `bad size ${width}×${height}`);
  const out = new Float32Array(width * height);
  for (let i = 0, j = 0; i < out.length; i++, j += 3) {
    const r = data[j],
      g = data[j + 1],
      b = data[j + 2];
    // Grayscale JPEGs decode to r = g = b; avoid the luma weights' rounding for them.
    out[i] = (r === g && g === b ? r : luma(r, g, b)) / 255;
  }
  return { width, height, data: out };
}

/** PNG of any bit depth / colour type → grayscale [0, 1] (alpha ignored). */
export function decodePngGray(bytes: Uint8Array, what: string): GrayImage {
  let png: ReturnType<typeof decodePng>;
  try {
    png = decodePng(bytes);
  } catch (err) {
    throw new ImageDecodeError(what, (err as Error).message);
  }
  const { width, height } = png;
  let data = png.data as Uint8Array | Uint16Array | Uint8ClampedArray;
  let channels = png.channels;
  let depth: number = png.depth;
  if (png.palette) {
    data = convertIndexedToRgb(png as Parameters<typeof convertIndexedToRgb>[0]);
    channels = png.palette[0]?.length ?? 3;
    depth = 8;
  }
  const n = width * height;
  const max = depth === 16 ? 65535 : (1 << depth) - 1;
  const samples = depth >= 8 ? data : unpackSubByteSamples(data, width * channels, height, depth);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const base = i * channels;
    const v = channels >= 3 ? luma(samples[base], samples[base + 1], samples[base + 2]) : samples[base];
    out[i] = v / max;
  }
  return { width, height, data: out };
}

// fast-png leaves sub-byte samples (depth 1/2/4) packed most-significant first, each row
// padded to a whole byte.
function unpackSubByteSamples(data: ArrayLike<number>, samplesPerRow: number, rows: number, depth: number): Uint8Array {
  const bytesPerRow = Math.ceil((samplesPerRow * depth) / 8);
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  const out = new Uint8Array(samplesPerRow * rows);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < samplesPerRow; x++) {
      const byte = data[y * bytesPerRow + Math.floor(x / perByte)];
      const shift = 8 - depth * ((x % perByte) + 1);
      out[y * samplesPerRow + x] = (byte >> shift) & mask;
    }
  }
  return out;
}

/** Encodes a [0, 1] image as an 8-bit grayscale PNG. */
export function encodePngGray(image: GrayImage): Uint8Array {
  return encodePng({ width: image.width, height: image.height, data: toUint8(image), channels: 1, depth: 8 });
}

/** Encodes 8-bit samples (e.g. a 0/255 mask) as a grayscale PNG. */
export function encodePngGray8(width: number, height: number, data: Uint8Array): Uint8Array {
  if (data.length !== width * height) throw new Error(`encodePngGray8: ${data.length} samples for ${width}×${height}`);
  return encodePng({ width, height, data, channels: 1, depth: 8 });
}

/** Encodes a [0, 1] image as a single-component baseline JPEG (jpeg-encode.ts). */
export function encodeJpegGray(image: GrayImage, quality = 90): Uint8Array {
  return encodeGrayJpeg(image.width, image.height, toUint8(image), quality);
}

/** [0, 1] floats → bytes, rounded and clamped. */
export function toUint8(image: GrayImage): Uint8Array {
  const out = new Uint8Array(image.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = Math.round(image.data[i] * 255);
    out[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Resampling. Bilinear interpolation as PIL (and torchvision with antialias=True) does it: a
// triangle filter whose support widens with the downscaling factor, so shrinking a 2500-pixel
// radiograph to 224 averages all source pixels instead of aliasing. For upscaling it is plain
// bilinear interpolation with half-pixel centres (align_corners = false), edges clamped.

interface AxisWeights {
  /** First source index for each output index. */
  start: Int32Array;
  /** Number of taps for each output index. */
  count: Int32Array;
  /** Weights, `maxTaps` per output index. */
  weights: Float64Array;
  maxTaps: number;
}

function axisWeights(inSize: number, regionStart: number, regionSize: number, outSize: number): AxisWeights {
  const scale = regionSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // triangle filter radius 1, stretched
  const maxTaps = Math.ceil(support) * 2 + 2;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * maxTaps);
  for (let o = 0; o < outSize; o++) {
    const center = regionStart + (o + 0.5) * scale;
    let lo = Math.floor(center - support);
    let hi = Math.ceil(center + support);
    // Taps stay inside the region (and the image): resampling a region equals cropping it
    // first and resizing the crop, as torchvision's resized_crop does.
    lo = Math.max(lo, 0, Math.floor(regionStart));
    hi = Math.min(hi, inSize, Math.ceil(regionStart + regionSize));
    let total = 0;
    let taps = 0;
    for (let i = lo; i < hi && taps < maxTaps; i++) {
      const w = Math.max(0, 1 - Math.abs((i + 0.5 - center) / filterScale));
      weights[o * maxTaps + taps] = w;
      total += w;
      taps++;
    }
    if (total === 0) {
      // The region lies outside the image here: take the nearest edge pixel.
      const nearest = Math.min(inSize - 1, Math.max(0, Math.floor(center)));
      lo = nearest;
      taps = 1;
      weights[o * maxTaps] = 1;
      total = 1;
    }
    for (let t = 0; t < taps; t++) weights[o * maxTaps + t] /= total;
    start[o] = lo;
    count[o] = taps;
  }
  return { start, count, weights, maxTaps };
}

/**
 * Resamples the source rectangle [x0, x0+w) × [y0, y0+h) (source pixel units) to
 * outWidth × outHeight with antialiased bilinear filtering, using only pixels inside the
 * rectangle (crop, then resize).
 */
export function resampleRegion(image: GrayImage, x0: number, y0: number, w: number, h: number, outWidth: number, outHeight: number): GrayImage {
  if (!(w > 0 && h > 0)) throw new Error(`resampleRegion: empty region ${w}×${h}`);
  const xw = axisWeights(image.width, x0, w, outWidth);
  const yw = axisWeights(image.height, y0, h, outHeight);
  // Horizontal pass over the rows the vertical pass needs.
  const rowLo = yw.start.reduce((m, v) => Math.min(m, v), image.height);
  let rowHi = 0;
  for (let o = 0; o < outHeight; o++) rowHi = Math.max(rowHi, yw.start[o] + yw.count[o]);
  const tmp = new Float32Array((rowHi - rowLo) * outWidth);
  const src = image.data;
  for (let y = rowLo; y < rowHi; y++) {
    const rowBase = y * image.width;
    const tmpBase = (y - rowLo) * outWidth;
    for (let o = 0; o < outWidth; o++) {
      const s = xw.start[o];
      const wBase = o * xw.maxTaps;
      let acc = 0;
      for (let t = 0; t < xw.count[o]; t++) acc += src[rowBase + s + t] * xw.weights[wBase + t];
      tmp[tmpBase + o] = acc;
    }
  }
  const out = new Float32Array(outWidth * outHeight);
  for (let o = 0; o < outHeight; o++) {
    const s = yw.start[o] - rowLo;
    const wBase = o * yw.maxTaps;
    const outBase = o * outWidth;
    for (let t = 0; t < yw.count[o]; t++) {
      const w8 = yw.weights[wBase + t];
      const tmpBase = (s + t) * outWidth;
      for (let x = 0; x < outWidth; x++) out[outBase + x] += tmp[tmpBase + x] * w8;
    }
  }
  return { width: outWidth, height: outHeight, data: out };
}

/** Resizes the whole image (antialiased bilinear). */
export function resizeBilinear(image: GrayImage, outWidth: number, outHeight: number): GrayImage {
  if (outWidth === image.width && outHeight === image.height) return { ...image, data: image.data.slice() };
  return resampleRegion(image, 0, 0, image.width, image.height, outWidth, outHeight);
}

/**
 * Zero-pads to a centred square (side = the longer side). When the difference is odd the
 * extra pixel goes to the right / bottom, as torchvision's pad with (d//2, d − d//2).
 */
export function padToSquare(image: GrayImage, value = 0): GrayImage {
  const side = Math.max(image.width, image.height);
  if (side === image.width && side === image.height) return { ...image, data: image.data.slice() };
  const left = Math.floor((side - image.width) / 2);
  const top = Math.floor((side - image.height) / 2);
  const out = makeImage(side, side, value);
  for (let y = 0; y < image.height; y++) {
    out.data.set(image.data.subarray(y * image.width, (y + 1) * image.width), (y + top) * side + left);
  }
  return out;
}

/** Per-image mean and population variance in float64. */
export function imageMoments(image: GrayImage): { mean: number; variance: number } {
  const n = image.data.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += image.data[i];
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const d = image.data[i] - mean;
    sq += d * d;
  }
  return { mean, variance: sq / n };
}
