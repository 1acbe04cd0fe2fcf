// The U-Net segmentation head on the device against the float64 reference: one
// train-mode forward of UNetFrozen at a small shape (Dice loss, logits, BatchNorm
// running-statistic updates) and the gradients of every trainable parameter.
import { test } from 'uvu';
import { Rng } from '../../compiler/random.ts';
import { compile, withGradients } from '../nodevice/model-helpers.ts';
import { checkAgainstReference, randomFeeds } from './reference-check.ts';

test('UNetFrozen (train mode, 64², widths 32 … 1): loss, logits, BatchNorm updates and all parameter gradients vs the float64 reference', async () => {
  const set = { batch: 2, image_size: 64, stem_channels: 2, layer1_channels: 3, layer2_channels: 2, layer3_channels: 4, layer4_channels: 32 };
  const { graph } = compile({ file: 'eval/segmentation.lovt' }, { model: 'UNetFrozen', set });
  const params = Object.values(graph.state).filter((s) => s.trainable);
  const withGrads = withGradients(graph, 'loss.dice', Object.fromEntries(params.map((s) => [s.name, s.node])));
  const rng = new Rng(3);
  const mask = Float32Array.from({ length: 2 * 64 * 64 }, () => (rng.uniform() < 0.3 ? 1 : 0));
  await checkAgainstReference(withGrads, randomFeeds(withGrads, 4, { mask }), { rtol: 2e-3, atol: 2e-4 });
});

test.run();
