// Image decoding, resampling, augmentation (determinism and exact component outputs),
// the validation transform's exact output, and the pixel statistics formula.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encode as encodePng } from 'fast-png';
import {
  adjustBrightness,
  adjustContrast,
  affineTransform,
  drawTrainAugmentParams,
  evalTransform,
  gaussianBlur,
  gaussianKernel1d,
  horizontalFlip,
  normalizeImage,
  randomResizedCropBox,
  sentenceSwapOrder,
  trainTransform,
} from '../../runtime/data/augment.ts';
import { MemoryFileSource } from '../../runtime/data/fs.ts';
import {
  decodeImage,
  encodeJpegGray,
  encodePngGray,
  ImageDecodeError,
  makeImage,
  padToSquare,
  resampleRegion,
  resizeBilinear,
  type GrayImage,
} from '../../runtime/data/image.ts';
import { deriveSeed, fnv1a64Hex, permutation, Rng } from '../../runtime/data/random.ts';
import { combineImageMoments, computePixelStats, PIXEL_STATS_FILE, pixelStatsOfImages } from '../../runtime/data/stats.ts';

function imageFrom(width: number, height: number, values: number[]): GrayImage {
  return { width, height, data: Float32Array.from(values) };
}

function randomImage(width: number, height: number, seed: number): GrayImage {
  const rng = new Rng(seed);
  return imageFrom(
    width,
    height,
    Array.from({ length: width * height }, () => rng.float()),
  );
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tol)) assert.unreachable(`${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test('random: deterministic streams, ranges, permutation, FNV-1a reference values', () => {
  const a = new Rng(12345);
  const b = new Rng(12345);
  const xs = Array.from({ length: 100 }, () => a.float());
  assert.equal(
    xs,
    Array.from({ length: 100 }, () => b.float()),
  );
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.not.equal(new Rng(1).nextU32(), new Rng(2).nextU32());
  assert.not.equal(deriveSeed(1, 2, 3), deriveSeed(1, 3, 2));
  const p = Array.from(permutation(50, new Rng(3))).sort((x, y) => x - y);
  assert.equal(
    p,
    Array.from({ length: 50 }, (_, i) => i),
  );
  // Reference values of 64-bit FNV-1a.
  assert.is(fnv1a64Hex(''), 'cbf29ce484222325');
  assert.is(fnv1a64Hex('a'), 'af63dc4c8601ec8c');
  assert.is(fnv1a64Hex('foobar'), '85944171f73967e8');
  // Geometric(p = 0.4) counting failures has mean (1 − p)/p = 1.5.
  const g = new Rng(9);
  let sum = 0;
  for (let i = 0; i < 40000; i++) sum += g.geometricFailures(0.4);
  assert.ok(Math.abs(sum / 40000 - 1.5) < 0.05, `geometric mean ${sum / 40000}`);
});

test('decode: grayscale/RGB/16-bit/1-bit PNG and JPEG to [0, 1]; corrupt bytes are ImageDecodeErrors', () => {
  const gray8 = encodePng({ width: 3, height: 1, data: Uint8Array.from([0, 51, 255]), channels: 1, depth: 8 });
  assertClose(decodeImage(gray8, 'g8').data, [0, 0.2, 1], 1e-7, 'gray8');
  const rgb = encodePng({ width: 2, height: 1, data: Uint8Array.from([255, 0, 0, 10, 10, 10]), channels: 3, depth: 8 });
  assertClose(decodeImage(rgb, 'rgb').data, [0.299, 10 / 255], 1e-6, 'rgb luma');
  const gray16 = encodePng({ width: 2, height: 1, data: Uint16Array.from([0, 65535]), channels: 1, depth: 16 });
  assertClose(decodeImage(gray16, 'g16').data, [0, 1], 0, 'gray16');
  const bits = encodePng({ width: 10, height: 2, data: Uint8Array.from([0b10100000, 0b01000000, 0xff, 0b11000000]), channels: 1, depth: 1 });
  assert.equal(Array.from(decodeImage(bits, 'g1').data), [1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);

  const img = randomImage(16, 16, 1);
  for (let i = 0; i < img.data.length; i++) img.data[i] = Math.round(img.data[i] * 4) / 4; // smooth-ish levels
  const jpg = encodeJpegGray({ width: 16, height: 16, data: new Float32Array(256).fill(0.5) }, 95);
  const back = decodeImage(jpg, 'jpg');
  assert.is(back.width, 16);
  assertClose(back.data, new Float32Array(256).fill(0.5), 2 / 255, 'flat jpeg');

  assert.throws(
    () => decodeImage(jpg.subarray(0, jpg.length - 40), 'cut.jpg'),
    (e: Error) => e instanceof ImageDecodeError && /cut\.jpg: .*truncated JPEG/.test(e.message),
  );
  assert.throws(() => decodeImage(new Uint8Array(0), 'empty.jpg'), /empty\.jpg: cannot decode image \(empty file\)/);
  assert.throws(() => decodeImage(new TextEncoder().encode('not an image'), 'x.png'), /neither JPEG nor PNG/);
  const badPng = gray8.slice();
  badPng[20] ^= 0xff; // corrupt the IHDR chunk
  assert.throws(
    () => decodeImage(badPng.subarray(0, 30), 'bad.png'),
    (e: Error) => e instanceof ImageDecodeError && /bad\.png: cannot decode image/.test(e.message),
  );
});

test('grayscale JPEG encoder: one component, decodes with jpeg-js within quantisation error, any size', () => {
  for (const [w, h] of [
    [1, 1],
    [13, 9],
    [64, 40],
  ]) {
    const img = makeImage(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img.data[y * w + x] = 0.5 + 0.35 * Math.sin(x / 6) * Math.cos(y / 4);
    const bytes = encodeJpegGray(img, 95);
    // SOF0 marker: precision, height, width, then the component count.
    const sof = bytes.findIndex((b, i) => b === 0xff && bytes[i + 1] === 0xc0);
    assert.ok(sof > 0);
    assert.is((bytes[sof + 5] << 8) | bytes[sof + 6], h);
    assert.is((bytes[sof + 7] << 8) | bytes[sof + 8], w);
    assert.is(bytes[sof + 9], 1);
    const back = decodeImage(bytes, 'smooth.jpg');
    assert.equal([back.width, back.height], [w, h]);
    assertClose(back.data, img.data, 0.03, `smooth ${w}×${h}`);
    assert.equal(encodeJpegGray(img, 95), bytes); // deterministic
  }
  // White noise at quality 100 produces 0xFF bytes in the entropy-coded data (byte stuffing).
  const noise = randomImage(32, 32, 8);
  const bytes = encodeJpegGray(noise, 100);
  const back = decodeImage(bytes, 'noise.jpg');
  assertClose(back.data, noise.data, 0.03, 'noise q100');
  // Lower quality: smaller file, larger (bounded) error.
  assert.ok(encodeJpegGray(noise, 30).length < bytes.length);
});

// Independent float64 reference of the PIL-style triangle-filter resampling, written directly
// from the definition for each output pixel (no separability, no precomputed tables).
function referenceResample(img: GrayImage, outW: number, outH: number): Float64Array {
  const out = new Float64Array(outW * outH);
  const sx = img.width / outW;
  const sy = img.height / outH;
  const fx = Math.max(1, sx);
  const fy = Math.max(1, sy);
  for (let oy = 0; oy < outH; oy++) {
    for (let ox = 0; ox < outW; ox++) {
      const cx = (ox + 0.5) * sx;
      const cy = (oy + 0.5) * sy;
      let acc = 0;
      let wsum = 0;
      for (let y = 0; y < img.height; y++) {
        const wy = Math.max(0, 1 - Math.abs((y + 0.5 - cy) / fy));
        if (wy === 0) continue;
        for (let x = 0; x < img.width; x++) {
          const wx = Math.max(0, 1 - Math.abs((x + 0.5 - cx) / fx));
          acc += wx * wy * img.data[y * img.width + x];
          wsum += wx * wy;
        }
      }
      out[oy * outW + ox] = acc / wsum;
    }
  }
  return out;
}

test('resize matches a float64 reference (up, down, non-integer, anisotropic); 2× down is [1,3,3,1]/8', () => {
  const img = randomImage(13, 9, 4);
  for (const [w, h] of [
    [26, 18],
    [6, 4],
    [7, 5],
    [20, 3],
    [13, 9],
  ]) {
    assertClose(resizeBilinear(img, w, h).data, referenceResample(img, w, h), 1e-5, `resize ${w}×${h}`);
  }
  const row = imageFrom(8, 1, [0, 8, 16, 24, 32, 40, 48, 56]);
  // Output 1 centres on source 3.0: taps 1..4 with weights 1,3,3,1 / 8; at the edges the
  // missing tap is dropped and the rest renormalised (3,3,1 / 7).
  assertClose(
    resizeBilinear(row, 4, 1).data,
    [(3 * 0 + 3 * 8 + 16) / 7, (8 + 3 * 16 + 3 * 24 + 32) / 8, (24 + 3 * 32 + 3 * 40 + 48) / 8, (40 + 3 * 48 + 3 * 56) / 7],
    1e-5,
    '2x down',
  );
  // 2× up of [0, 1]: half-pixel centres, clamped edges.
  assertClose(resizeBilinear(imageFrom(2, 1, [0, 1]), 4, 1).data, [0, 0.25, 0.75, 1], 1e-6, '2x up');
  // A crop region resampled equals resizing the cropped image.
  const crop = resampleRegion(img, 2, 1, 8, 6, 4, 3);
  const cropped = imageFrom(
    8,
    6,
    Array.from({ length: 48 }, (_, i) => img.data[(1 + Math.floor(i / 8)) * 13 + 2 + (i % 8)]),
  );
  assertClose(crop.data, referenceResample(cropped, 4, 3), 1e-5, 'region');
});

test('padToSquare centres the image; odd differences put the extra pixel right/bottom', () => {
  const wide = imageFrom(3, 1, [1, 2, 3]);
  assert.equal(Array.from(padToSquare(wide).data), [0, 0, 0, 1, 2, 3, 0, 0, 0]);
  const tall = imageFrom(1, 4, [1, 2, 3, 4]);
  const p = padToSquare(tall);
  assert.is(p.width, 4);
  assert.equal(Array.from(p.data), [0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0]);
});

test('validation transform: exact output on a small image', () => {
  // 2×1 image → pad to 2×2 [[0,0],[a,b]]... with top = floor(1/2) = 0: [[a,b],[0,0]] → resize
  // to 4×4 (bilinear, half-pixel centres) → normalise with mean 0.5, std 0.25.
  const img = imageFrom(2, 1, [0.2, 0.6]);
  const out = evalTransform(img, { mean: 0.5, std: 0.25 }, 4);
  const col = [0.2, 0.3, 0.5, 0.6]; // horizontal interpolation of [0.2, 0.6]
  const rowWeights = [1, 0.75, 0.25, 0]; // vertical: [row0, 0.75 row0, 0.25 row0, row1 = 0]
  const expected: number[] = [];
  for (const wy of rowWeights) for (const v of col) expected.push((wy * v - 0.5) / 0.25);
  assertClose(out.data, expected, 1e-6, 'eval transform');
  assert.is(out.width, 4);
});

test('augmentation is deterministic per seed and differs across seeds', () => {
  const img = randomImage(40, 32, 7);
  const norm = { mean: 0.4, std: 0.2 };
  const a = trainTransform(img, new Rng(5), norm, { size: 24 });
  const b = trainTransform(img, new Rng(5), norm, { size: 24 });
  const c = trainTransform(img, new Rng(6), norm, { size: 24 });
  assert.is(a.width, 24);
  assert.is(a.height, 24);
  assert.equal(Array.from(a.data), Array.from(b.data));
  assert.not.equal(Array.from(a.data), Array.from(c.data));
  assert.ok(a.data.every((v) => Number.isFinite(v)));
});

test('augmentation parameters stay in the §1 ranges', () => {
  const rng = new Rng(11);
  let flips = 0;
  for (let i = 0; i < 500; i++) {
    const p = drawTrainAugmentParams(300, 200, rng);
    const area = (p.crop.width * p.crop.height) / (300 * 200);
    const ratio = p.crop.width / p.crop.height;
    assert.ok(area >= 0.58 && area <= 1.0, `crop area ${area}`);
    assert.ok(ratio >= 0.74 && ratio <= 1.35, `crop ratio ${ratio}`);
    assert.ok(p.crop.x >= 0 && p.crop.y >= 0 && p.crop.x + p.crop.width <= 300 && p.crop.y + p.crop.height <= 200);
    assert.ok(Math.abs(p.affine.angle) <= 20);
    assert.ok(Math.abs(p.affine.tx) <= Math.round(0.1 * 224) && Number.isInteger(p.affine.tx));
    assert.ok(p.affine.scale >= 0.95 && p.affine.scale <= 1.05);
    assert.ok(p.brightness >= 0.6 && p.brightness <= 1.4 && p.contrast >= 0.6 && p.contrast <= 1.4);
    assert.ok(p.blurSigma >= 0.1 && p.blurSigma <= 3.0);
    if (p.flip) flips++;
  }
  assert.ok(flips > 200 && flips < 300, `flips ${flips}`);
  // A very elongated image falls back to a centre crop with the ratio clamped.
  const box = randomResizedCropBox(1000, 10, new Rng(1), [0.6, 1], [3 / 4, 4 / 3]);
  assert.equal(box, { x: Math.floor((1000 - 13) / 2), y: 0, width: 13, height: 10 });
});

test('components: flip, affine (identity, 90° rotation, translation), brightness, contrast, blur', () => {
  const img = imageFrom(3, 2, [1, 2, 3, 4, 5, 6]);
  assert.equal(Array.from(horizontalFlip(img).data), [3, 2, 1, 6, 5, 4]);
  const sq = imageFrom(3, 3, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(Array.from(affineTransform(sq, { angle: 0, tx: 0, ty: 0, scale: 1 }).data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // +90° turns clockwise on screen: the top row becomes the right column.
  assert.equal(Array.from(affineTransform(sq, { angle: 90, tx: 0, ty: 0, scale: 1 }).data), [7, 4, 1, 8, 5, 2, 9, 6, 3]);
  assert.equal(Array.from(affineTransform(sq, { angle: 0, tx: 1, ty: 0, scale: 1 }).data), [0, 1, 2, 0, 4, 5, 0, 7, 8]);
  assertClose(adjustBrightness(imageFrom(3, 1, [0.2, 0.5, 0.9]), 1.4).data, [0.28, 0.7, 1], 1e-6, 'brightness');
  // Contrast blends with the mean (0.4) and clamps.
  assertClose(adjustContrast(imageFrom(3, 1, [0, 0.4, 0.8]), 1.5).data, [0, 0.4, 1], 1e-6, 'contrast up');
  assertClose(adjustContrast(imageFrom(3, 1, [0, 0.4, 0.8]), 0.5).data, [0.2, 0.4, 0.6], 1e-6, 'contrast down');
  // The kernel is torchvision's normalised exp(−x²/2σ²).
  const k = gaussianKernel1d(23, 1.7);
  let total = 0;
  for (let i = 0; i < 23; i++) total += Math.exp(-0.5 * ((i - 11) / 1.7) ** 2);
  assertClose(
    k,
    Array.from({ length: 23 }, (_, i) => Math.exp(-0.5 * ((i - 11) / 1.7) ** 2) / total),
    1e-12,
    'kernel',
  );
  // Blur of an impulse far from the borders is the kernel's outer product; a constant stays.
  const impulse = makeImage(31, 31);
  impulse.data[15 * 31 + 15] = 1;
  const blurred = gaussianBlur(impulse, 23, 1.7);
  assert.ok(Math.abs(blurred.data[15 * 31 + 15] - k[11] * k[11]) < 1e-7);
  assert.ok(Math.abs(blurred.data[13 * 31 + 18] - k[9] * k[14]) < 1e-7);
  const flat = gaussianBlur({ width: 8, height: 8, data: new Float32Array(64).fill(0.3) }, 23, 3);
  assertClose(flat.data, new Float32Array(64).fill(0.3), 1e-6, 'flat blur (reflect padding on a small image)');
  assertClose(normalizeImage(imageFrom(2, 1, [0.5, 1]), { mean: 0.5, std: 0.5 }).data, [0, 1], 0, 'normalize');
});

test('sentence swaps: a permutation, identity for seeds drawing zero swaps, deterministic', () => {
  for (let seed = 0; seed < 50; seed++) {
    const order = sentenceSwapOrder(6, new Rng(seed));
    assert.equal([...order].sort(), [0, 1, 2, 3, 4, 5]);
    assert.equal(order, sentenceSwapOrder(6, new Rng(seed)));
  }
  // Draw counts follow Geometric(0.4): about 40 % of seeds leave the order unchanged (0 swaps),
  // plus swaps that happen to pick the same position twice.
  let unchanged = 0;
  for (let seed = 0; seed < 2000; seed++) if (sentenceSwapOrder(6, new Rng(seed)).every((v, i) => v === i)) unchanged++;
  assert.ok(unchanged > 0.4 * 2000 && unchanged < 0.56 * 2000, `unchanged ${unchanged}`);
  assert.equal(sentenceSwapOrder(1, new Rng(1)), [0]);
});

test('pixel statistics: formula equals the pooled float64 variance for equal-size images', () => {
  const images = [randomImage(8, 8, 1), randomImage(8, 8, 2), imageFrom(8, 8, Array(64).fill(0.9))];
  for (const v of images[1].data.keys()) images[1].data[v] *= 0.5;
  const stats = pixelStatsOfImages(images);
  // Independent computation: all pixels pooled, float64.
  let sum = 0;
  let n = 0;
  for (const img of images)
    for (const v of img.data) {
      sum += v;
      n++;
    }
  const mean = sum / n;
  let sq = 0;
  for (const img of images) for (const v of img.data) sq += (v - mean) ** 2;
  assert.ok(Math.abs(stats.mean - mean) < 1e-12);
  assert.ok(Math.abs(stats.std - Math.sqrt(sq / n)) < 1e-12);
  assert.is(stats.images, 3);
  // Different sizes: mean of per-image means (not the pooled mean).
  const mixed = combineImageMoments([
    { mean: 0.2, variance: 0.01 },
    { mean: 0.6, variance: 0.03 },
  ]);
  assert.ok(Math.abs(mixed.mean - 0.4) < 1e-15);
  assert.ok(Math.abs(mixed.std - Math.sqrt(0.02 + 0.04)) < 1e-15);
  assert.throws(() => combineImageMoments([]), /at least one image/);
});

test('pixel statistics are cached beside the data, keyed by the image list; bad images skipped', async () => {
  const a = randomImage(6, 5, 3);
  const b = randomImage(4, 4, 4);
  const files = new MemoryFileSource({
    'a.png': encodePngGray(a),
    'b.png': encodePngGray(b),
    'bad.jpg': new Uint8Array([0xff, 0xd8, 0xff, 0, 1]),
  });
  const first = await computePixelStats(files, ['a.png', 'b.png', 'bad.jpg']);
  assert.is(first.fromCache, false);
  assert.is(first.images, 2);
  assert.equal(
    first.skipped.map((s) => s.path),
    ['bad.jpg'],
  );
  // Matches the formula on the 8-bit-quantised images.
  const q = (img: GrayImage) => ({ ...img, data: Float32Array.from(img.data, (v) => Math.round(v * 255) / 255) });
  const expected = pixelStatsOfImages([q(a), q(b)]);
  assert.ok(Math.abs(first.mean - expected.mean) < 1e-6 && Math.abs(first.std - expected.std) < 1e-6);
  assert.ok(await files.exists(PIXEL_STATS_FILE));
  const second = await computePixelStats(files, ['bad.jpg', 'b.png', 'a.png']); // same set, other order
  assert.is(second.fromCache, true);
  assert.is(second.mean, first.mean);
  assert.is(second.std, first.std);
  const third = await computePixelStats(files, ['a.png']);
  assert.is(third.fromCache, false);
  assert.not.equal(third.key, first.key);
  const cache = JSON.parse(new TextDecoder().decode(await files.readFile(PIXEL_STATS_FILE)));
  assert.equal(Object.keys(cache.entries).sort(), [first.key, third.key].sort());
  // A fixed subset: the same images whatever the list order, so the cache hits.
  const sub = await computePixelStats(files, ['a.png', 'b.png', 'bad.jpg'], { sampleSize: 1 });
  assert.is(sub.images + sub.skipped.length, 1);
  const subAgain = await computePixelStats(files, ['bad.jpg', 'a.png', 'b.png'], { sampleSize: 1 });
  assert.is(subAgain.key, sub.key);
});

test.run();
