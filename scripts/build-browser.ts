/**
 * Builds the browser bundle: `npx tsx scripts/build-browser.ts` → dist/browser/blocklayer.js
 * (ESM, minified, with a source map). Every module under src/platform has a `.browser.ts` twin
 * that replaces it here; any `node:` import left in the graph fails the build, so the bundle
 * provably needs nothing from Node. Prints the bundle size (raw and gzip).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { build, type Plugin } from 'esbuild';

const root = path.resolve(import.meta.dirname, '..');

/** `./x.js` → `./x.browser.ts` when such a twin exists. */
const browserTwins: Plugin = {
  name: 'browser-twins',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      const twin = path.resolve(args.resolveDir, args.path.replace(/\.js$/, '.browser.ts'));
      return fs.existsSync(twin) ? { path: twin } : undefined;
    });
  },
};

export async function buildBrowser(outfile = path.join(root, 'dist/browser/blocklayer.js')): Promise<{ outfile: string; bytes: number; gzipBytes: number }> {
  await build({
    entryPoints: [path.join(root, 'src/browser.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    outfile,
    inject: [path.join(root, 'scripts/browser-globals.ts')],
    plugins: [browserTwins],
    logLevel: 'warning',
  });
  const code = fs.readFileSync(outfile);
  return { outfile, bytes: code.length, gzipBytes: zlib.gzipSync(code, { level: 9 }).length };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await buildBrowser(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  console.log(`${path.relative(process.cwd(), r.outfile)}: ${(r.bytes / 1024).toFixed(1)} KiB, ${(r.gzipBytes / 1024).toFixed(1)} KiB gzipped`);
}
