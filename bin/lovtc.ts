// lovtc: the .lovt compiler command (compiler/frontend/cli.ts). Run it as
// `npx lovtc` or `node bin/lovtc.js` (which loads this file through tsx).

import { runLovtc } from '../compiler/frontend/cli.ts';

process.exitCode = await runLovtc(process.argv.slice(2));
