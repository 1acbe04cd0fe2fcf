// The browser bundle (scripts/bundle-browser.ts) is the proof that runtime/
// stays platform-neutral: it builds, it exports what a browser app needs, and
// it refuses Node-only imports and Node globals with the import chain.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleApp, bundleRuntime, checkRuntimeIsPlatformNeutral, ROOT } from '../../scripts/bundle-browser.ts';

test('the runtime bundle builds without Node-only modules and exports the browser API', async () => {
  const { code, modules } = await bundleRuntime();
  assert.ok(
    modules.includes('runtime/index.ts') && modules.includes('runtime/platform/browser.ts') && modules.includes('runtime/executor.ts'),
    modules.join(', '),
  );
  for (const m of modules) assert.not.ok(/platform\/node|^node:|node_modules\/webgpu\//.test(m), `bundled a Node-only module: ${m}`);
  const exported = /export\s*\{([^}]*)\}\s*;?\s*$/.exec(code)?.[1] ?? '';
  for (const name of [
    'getBrowserDevice',
    'openDevice',
    'Program',
    'StateStore',
    'initState',
    'evaluate',
    'planFromJSON',
    'readSafetensors',
    'buildTrainingPrograms',
    'optimizerScalars',
  ])
    assert.ok(new RegExp(`\\b${name}\\b`).test(exported), `the bundle does not export ${name}`);
});

test('an app bundle (the browser example) imports the runtime bundle instead of bundling the runtime again', async () => {
  const { code, modules } = await bundleApp(path.join(ROOT, 'examples/browser/main.ts'), { runtimeUrl: './lovt-browser.js' });
  assert.ok(modules.includes('examples/browser/main.ts') && modules.includes('examples/browser/train-loop.ts'), modules.join(', '));
  for (const m of modules) assert.not.ok(m.startsWith('runtime/') || m.startsWith('compiler/'), `the app bundle contains ${m}`);
  assert.match(code, /from "\.\/lovt-browser\.js"/);
});

test('a Node-only import or a Node global fails the bundle, naming the import chain', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lovt-bundle-'));
  try {
    const nodePlatform = path.join(ROOT, 'runtime/platform/node.ts');
    writeFileSync(path.join(dir, 'helper.ts'), `import { getNodeDevice } from ${JSON.stringify(nodePlatform)};\nexport const open = getNodeDevice;\n`);
    writeFileSync(path.join(dir, 'app.ts'), `import { open } from './helper.ts';\nexport const x = open;\n`);
    writeFileSync(path.join(dir, 'fs.ts'), `import { readFileSync } from 'fs';\nexport const r = readFileSync;\n`);
    writeFileSync(path.join(dir, 'env.ts'), `// process.env in a comment is fine\nexport const home = process.env.HOME;\n`);
    const failure = async (file: string) => {
      try {
        await bundleApp(path.join(dir, file));
      } catch (e) {
        return (e as Error).message;
      }
      throw new Error(`${file} bundled, but it should not have`);
    };
    const platformError = await failure('app.ts');
    assert.match(platformError, /is a Node-only platform module/);
    assert.match(platformError, /app\.ts -> .*helper\.ts -> runtime\/platform\/node\.ts/);
    assert.match(await failure('fs.ts'), /'fs' is a Node builtin/);
    assert.match(await failure('env.ts'), /uses the Node global 'process\.env'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every runtime module outside runtime/platform/node* bundles for the browser', async () => {
  const failures = await checkRuntimeIsPlatformNeutral();
  assert.equal(failures, [], failures.join('\n'));
});

test.run();
