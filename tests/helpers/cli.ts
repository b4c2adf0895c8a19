// How the tests run the `blocklayer` command: the bundled command the package ships (its launcher,
// built once per test run by tests/global-setup.ts), or the source through tsx when no bundle was
// built (a test file run outside vitest). One start of the source through tsx compiles ~150
// modules and costs about a second; the bundle starts in a fifth of that, and is what users run.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The command's source entry. */
export const MAIN = path.join(import.meta.dirname, '../../src/cli/main.ts');

const TSX = pathToFileURL(path.join(import.meta.dirname, '../../node_modules/tsx/dist/loader.mjs')).href;

/** Node's arguments before the verb: `spawn(process.execPath, [...CLI, 'info', file])`. */
export const CLI: readonly string[] = process.env.BLOCKLAYER_TEST_CLI ? [process.env.BLOCKLAYER_TEST_CLI] : ['--import', TSX, MAIN];
