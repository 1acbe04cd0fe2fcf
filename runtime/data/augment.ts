// Image and sentence augmentation (method §1), with torchvision's semantics and a seeded Rng.
//
// Training, in order: RandomResizedCrop(224, scale (0.6, 1), ratio (3/4, 4/3)) → horizontal
// flip p = 0.5 → RandomAffine(±20°, translate ±10 % per axis, scale 0.95–1.05; nearest
// sampling, zero fill, as torchvision's defaults) → brightness and contrast factors
// U[0.6, 1.4], always, applied in random order as ColorJitter does → Gaussian blur, always,
// kernel 23, σ ~ U(0.1, 3.0), reflect padding → normalize with the dataset mean/std.
// Validation/test: zero-pad to a centred square → resize to 224 → normalize.
//
// Sentence augmentation (training only): a Geometric(p = 0.4) number of swaps (failures
// before the first success, mean 1.5) of two uniformly drawn sentence positions.
import type { Rng } from './random.ts';
import { makeImage, padToSquare, resampleRegion, resizeBilinear, type GrayImage } from './image.ts';

export interface Normalization {
  mean: number;
  std: number;
}

export interface TrainAugmentOptions {
  size?: number; // output side, default 224
  cropScale?: [number, number]; // default [0.6, 1.0]
  cropRatio?: [number, number]; // default [3/4, 4/3]
  flipProbability?: number; // default 0.5
  rotationDegrees?: number; // default 20 (uniform in ±)
  translate?: number; // default 0.1 (fraction of the side, per axis)
  affineScale?: [number, number]; // default [0.95, 1.05]
  affineInterpolation?: 'nearest' | 'bilinear'; // default 'nearest' (torchvision default)
  brightness?: [number, number]; // default [0.6, 1.4]
  contrast?: [number, number]; // default [0.6, 1.4]
  blurKernel?: number; // default 23 (odd)
  blurSigma?: [number, number]; // default [0.1, 3.0]
}

export const DEFAULT_TRAIN_AUGMENT: Required<TrainAugmentOptions> = {
  size: 224,
  cropScale: [0.6, 1.0],
  cropRatio: [3 / 4, 4 / 3],
  flipProbability: 0.5,
  rotationDegrees: 20,
  translate: 0.1,
  affineScale: [0.95, 1.05],
  affineInterpolation: 'nearest',
  brightness: [0.6, 1.4],
  contrast: [0.6, 1.4],
  blurKernel: 23,
  blurSigma: [0.1, 3.0],
};

/** The random parameters drawn for one training image (for inspection and tests). */
export interface TrainAugmentParams {
  crop: CropBox;
  flip: boolean;
  affine: AffineParams;
  brightnessFirst: boolean;
  brightness: number;
  contrast: number;
  blurSigma: number;
}

export interface CropBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** torchvision RandomResizedCrop.get_params (10 attempts, then a centre crop). */
export function randomResizedCropBox(width: number, height: number, rng: Rng, scale: [number, number], ratio: [number, number]): CropBox {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(targetArea * aspect));
    const h = Math.round(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const y = rng.int(height - h + 1);
      const x = rng.int(width - w + 1);
      return { x, y, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(...ratio)) {
    w = width;
    h = Math.round(w / Math.min(...ratio));
  } else if (inRatio > Math.max(...ratio)) {
    h = height;
    w = Math.round(h * Math.max(...ratio));
  } else {
    w = width;
    h = height;
  }
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), width: w, height: h };
}

export function horizontalFlip(image: GrayImage): GrayImage {
  const out = makeImage(image.width, image.height);
  for (let y = 0; y < image.height; y++) {
    const row = y * image.width;
    for (let x = 0; x < image.width; x++) out.data[row + x] = image.data[row + image.width - 1 - x];
  }
  return out;
}

export interface AffineParams {
  /** Degrees, clockwise on screen (torchvision's convention). */
  angle: number;
  /** Translation in whole pixels. */
  tx: number;
  ty: number;
  scale: number;
}

/** torchvision RandomAffine.get_params without shear. */
export function randomAffineParams(width: number, height: number, rng: Rng, degrees: number, translate: number, scale: [number, number]): AffineParams {
  const angle = rng.uniform(-degrees, degrees);
  const maxDx = translate * width;
  const maxDy = translate * height;
  const tx = Math.round(rng.uniform(-maxDx, maxDx));
  const ty = Math.round(rng.uniform(-maxDy, maxDy));
  const s = rng.uniform(scale[0], scale[1]);
  return { angle, tx, ty, scale: s };
}

/**
 * Rotation about the image centre, scaling and translation; pixels mapped from outside the
 * image are `fill`. Each output pixel centre is mapped back through the inverse transform.
 */
export function affineTransform(image: GrayImage, params: AffineParams, interpolation: 'nearest' | 'bilinear' = 'nearest', fill = 0): GrayImage {
  const { width, height } = image;
  const out = makeImage(width, height);
  const cx = width / 2;
  const cy = height / 2;
  const theta = (params.angle * Math.PI) / 180;
  // Forward (image y axis points down, so a positive angle turns clockwise on screen):
  // p' = c + t + s·R(θ)(p − c). Inverse: p = c + R(−θ)(p' − c − t)/s.
  const cos = Math.cos(theta) / params.scale;
  const sin = Math.sin(theta) / params.scale;
  const src = image.data;
  for (let y = 0; y < height; y++) {
    const dy = y + 0.5 - cy - params.ty;
    for (let x = 0; x < width; x++) {
      const dx = x + 0.5 - cx - params.tx;
      const sx = cx + cos * dx + sin * dy;
      const sy = cy - sin * dx + cos * dy;
      let value = fill;
      if (interpolation === 'nearest') {
        const ix = Math.floor(sx);
        const iy = Math.floor(sy);
        if (ix >= 0 && ix < width && iy >= 0 && iy < height) value = src[iy * width + ix];
      } else {
        const fx = sx - 0.5;
        const fy = sy - 0.5;
        const x0 = Math.floor(fx);
        const y0 = Math.floor(fy);
        const ax = fx - x0;
        const ay = fy - y0;
        if (x0 >= -1 && x0 < width && y0 >= -1 && y0 < height) {
          const at = (xx: number, yy: number) => (xx >= 0 && xx < width && yy >= 0 && yy < height ? src[yy * width + xx] : fill);
          value = (1 - ay) * ((1 - ax) * at(x0, y0) + ax * at(x0 + 1, y0)) + ay * ((1 - ax) * at(x0, y0 + 1) + ax * at(x0 + 1, y0 + 1));
        }
      }
      out.data[y * width + x] = value;
    }
  }
  return out;
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** torchvision adjust_brightness: factor · x, clamped to [0, 1]. */
export function adjustBrightness(image: GrayImage, factor: number): GrayImage {
  const out = makeImage(image.width, image.height);
  for (let i = 0; i < out.data.length; i++) out.data[i] = clamp01(image.data[i] * factor);
  return out;
}

/** torchvision adjust_contrast: blend with the image's mean intensity, clamped to [0, 1]. */
export function adjustContrast(image: GrayImage, factor: number): GrayImage {
  let sum = 0;
  for (let i = 0; i < image.data.length; i++) sum += image.data[i];
  const mean = sum / image.data.length;
  const out = makeImage(image.width, image.height);
  for (let i = 0; i < out.data.length; i++) out.data[i] = clamp01(factor * image.data[i] + (1 - factor) * mean);
  return out;
}

/** torchvision's 1-D Gaussian kernel: exp(−x²/2σ²) at x = −(k−1)/2 … (k−1)/2, normalised. */
export function gaussianKernel1d(size: number, sigma: number): Float64Array {
  if (!(Number.isInteger(size) && size > 0 && size % 2 === 1)) throw new Error(`gaussian kernel size must be a positive odd integer, got ${size}`);
  if (!(sigma > 0)) throw new Error(`gaussian sigma must be positive, got ${sigma}`);
  const half = (size - 1) / 2;
  const kernel = new Float64Array(size);
  let total = 0;
  for (let i = 0; i < size; i++) {
    const x = i - half;
    kernel[i] = Math.exp(-0.5 * (x / sigma) ** 2);
    total += kernel[i];
  }
  for (let i = 0; i < size; i++) kernel[i] /= total;
  return kernel;
}

// Reflect padding without repeating the edge (…2 1 | 0 1 2 … n−1 | n−2 …), folded for
// kernels wider than the image.
function reflectIndex(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - j;
  return j;
}

/** Separable Gaussian blur with reflect padding (torchvision gaussian_blur on tensors). */
export function gaussianBlur(image: GrayImage, kernelSize: number, sigma: number): GrayImage {
  const kernel = gaussianKernel1d(kernelSize, sigma);
  const half = (kernelSize - 1) / 2;
  const { width, height } = image;
  const tmp = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let k = 0; k < kernelSize; k++) acc += kernel[k] * image.data[row + reflectIndex(x + k - half, width)];
      tmp[row + x] = acc;
    }
  }
  const out = makeImage(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let k = 0; k < kernelSize; k++) acc += kernel[k] * tmp[reflectIndex(y + k - half, height) * width + x];
      out.data[y * width + x] = acc;
    }
  }
  return out;
}

/** (x − mean) / std into a new image. */
export function normalizeImage(image: GrayImage, norm: Normalization): GrayImage {
  if (!(norm.std > 0)) throw new Error(`normalization std must be positive, got ${norm.std}`);
  const out = makeImage(image.width, image.height);
  const inv = 1 / norm.std;
  for (let i = 0; i < out.data.length; i++) out.data[i] = (image.data[i] - norm.mean) * inv;
  return out;
}

/** Draws every random parameter of the training transform, in the order they are applied. */
export function drawTrainAugmentParams(width: number, height: number, rng: Rng, options: TrainAugmentOptions = {}): TrainAugmentParams {
  const o = { ...DEFAULT_TRAIN_AUGMENT, ...options };
  const crop = randomResizedCropBox(width, height, rng, o.cropScale, o.cropRatio);
  const flip = rng.bernoulli(o.flipProbability);
  const affine = randomAffineParams(o.size, o.size, rng, o.rotationDegrees, o.translate, o.affineScale);
  const brightnessFirst = rng.bernoulli(0.5);
  const brightness = rng.uniform(o.brightness[0], o.brightness[1]);
  const contrast = rng.uniform(o.contrast[0], o.contrast[1]);
  const blurSigma = rng.uniform(o.blurSigma[0], o.blurSigma[1]);
  return { crop, flip, affine, brightnessFirst, brightness, contrast, blurSigma };
}

/** Applies drawn parameters: the training transform up to (not including) normalisation. */
export function applyTrainAugment(image: GrayImage, p: TrainAugmentParams, options: TrainAugmentOptions = {}): GrayImage {
  const o = { ...DEFAULT_TRAIN_AUGMENT, ...options };
  let x = resampleRegion(image, p.crop.x, p.crop.y, p.crop.width, p.crop.height, o.size, o.size);
  if (p.flip) x = horizontalFlip(x);
  x = affineTransform(x, p.affine, o.affineInterpolation, 0);
  if (p.brightnessFirst) {
    x = adjustContrast(adjustBrightness(x, p.brightness), p.contrast);
  } else {
    x = adjustBrightness(adjustContrast(x, p.contrast), p.brightness);
  }
  return gaussianBlur(x, o.blurKernel, p.blurSigma);
}

/** The full training transform, normalised. */
export function trainTransform(image: GrayImage, rng: Rng, norm: Normalization, options: TrainAugmentOptions = {}): GrayImage {
  const params = drawTrainAugmentParams(image.width, image.height, rng, options);
  return normalizeImage(applyTrainAugment(image, params, options), norm);
}

/** Validation/test: zero-pad to a centred square, resize to `size`, normalize. */
export function evalTransform(image: GrayImage, norm: Normalization, size = 224): GrayImage {
  return normalizeImage(resizeBilinear(padToSquare(image, 0), size, size), norm);
}

/**
 * Sentence augmentation: swaps two uniformly drawn positions (possibly the same one)
 * Geometric(p) times, counting failures. Returns the new order as indices into `items`.
 */
export function sentenceSwapOrder(count: number, rng: Rng, p = 0.4): number[] {
  const order = Array.from({ length: count }, (_, i) => i);
  if (count < 2) return order;
  const swaps = rng.geometricFailures(p);
  for (let s = 0; s < swaps; s++) {
    const a = rng.int(count);
    const b = rng.int(count);
    const tmp = order[a];
    order[a] = order[b];
    order[b] = tmp;
  }
  return order;
}
