#!/usr/bin/env node
// Runs bin/lovtc.ts through tsx in this process, so `node bin/lovtc.js` and
// `npx lovtc` work from a fresh clone after `npm install` (no build step).
import { register } from 'tsx/esm/api';

register();
const { lovtcMain } = await import('./lovtc.ts');
await lovtcMain();
