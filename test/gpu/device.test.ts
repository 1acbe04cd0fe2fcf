import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getNodeDevice } from '../../runtime/platform/node.ts';
test("a WebGPU device opens with the adapter's own storage-binding limit", async () => {
  const d = await getNodeDevice();
  assert.ok(d.device);
  assert.is(d.limits.maxStorageBufferBindingSize, d.adapter.limits.maxStorageBufferBindingSize);
});
test.run();
