/**
 * Builds the browser bundle: `npx tsx scripts/build-browser.ts [OUTDIR]` → dist/browser/blocklayer.js
 * and dist/browser/v86.js (the v86 adapter), ESM, minified, with source maps (for
 * the examples and the repository's tests; the npm package leaves them out: package.json's `files`). Every module with a `.browser.ts` twin (src/platform, drivers/host, drivers/http/default-transport)
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

/** Builds dist/browser/{blocklayer,v86}.js (+ shared chunks) into `outdir`; sizes summed over every file. */
export async function buildBrowser(outdir = path.join(root, 'dist/browser')): Promise<{ outdir: string; bytes: number; gzipBytes: number }> {
  const result = await build({
    entryPoints: { blocklayer: path.join(root, 'src/browser.ts'), v86: path.join(root, 'src/adapters/v86.ts') },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    outdir,
    inject: [path.join(root, 'scripts/browser-globals.ts')],
    plugins: [browserTwins],
    metafile: true,
    logLevel: 'warning',
  });
  let bytes = 0;
  let gzipBytes = 0;
  for (const file of Object.keys(result.metafile.outputs)) {
    if (!file.endsWith('.js')) continue;
    const code = fs.readFileSync(path.resolve(process.cwd(), file));
    bytes += code.length;
    gzipBytes += zlib.gzipSync(code, { level: 9 }).length;
  }
  return { outdir, bytes, gzipBytes };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await buildBrowser(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  console.log(`${path.relative(process.cwd(), r.outdir)}: ${(r.bytes / 1024).toFixed(1)} KiB of JavaScript, ${(r.gzipBytes / 1024).toFixed(1)} KiB gzipped`);
}
