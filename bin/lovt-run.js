#!/usr/bin/env node
// Runs bin/lovt-run.ts through tsx in this process, so `node bin/lovt-run.js` and
// `npx lovt-run` work from a fresh clone after `npm install` (no build step).
import { register } from 'tsx/esm/api';

register();
await import('./lovt-run.ts');
