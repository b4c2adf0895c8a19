/**
 * Builds the `blocklayer` command: `npx tsx scripts/build-cli.ts [OUTDIR]` → dist/cli/blocklayer.js
 * (package.json's `bin`, the launcher: scripts/cli-launcher.ts) and dist/cli/blocklayer-script.js,
 * the whole command bundled as one script that the launcher runs through a V8 code cache (with
 * blocklayer-image-script.js, the same for the image verbs alone). One
 * file instead of two hundred modules (zod's among them), and compiled code read back instead of
 * compiled again, are most of the command's start-up. Native addons stay outside (loaded with
 * require where they are needed, from the package's node_modules).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { type BuildOptions, build, type Plugin } from 'esbuild';
import { IMAGE_VERBS } from '../src/cli/image-verbs.js';

const root = path.resolve(import.meta.dirname, '..');

/**
 * Node's own modules through `require`, not `import`: an ESM import of a builtin builds a facade
 * that reads every export at once, and some exports are getters that load more (node:process's
 * report, node:crypto's webcrypto, node:fs's streams). As a CommonJS module in the bundle, a
 * builtin's exports are read where the code uses them.
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(b) {
    const builtins = new Set(builtinModules);
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) => {
      const name = args.path.replace(/^node:/, '');
      if (!builtins.has(name)) return undefined;
      // the require in the module below is Node's own
      if (args.namespace === 'node-builtin') return { path: args.path, external: true };
      return { path: `node:${name}`, namespace: 'node-builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'node-builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

/**
 * main.ts ends in a top-level await that runs the command, which only a module may have: the
 * script runs it without waiting (what it resolves to is the exit code, as before).
 */
const mainAsScript: Plugin = {
  name: 'main-as-script',
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/]cli[\\/]main\.ts$/ }, (args) => {
      const source = fs.readFileSync(args.path, 'utf8');
      const run = 'process.exitCode = await main(process.argv.slice(2));';
      if (!source.includes(run)) throw new Error(`${args.path} no longer ends in '${run}': update scripts/build-cli.ts`);
      // the hashbang too: the script is the body of a function (below)
      const contents = source.replace(/^#!.*/, '').replace(run, 'main(process.argv.slice(2)).then((code) => { process.exitCode = code; });');
      return { contents, loader: 'ts' };
    });
  },
};

/**
 * esbuild wraps each default import of a CommonJS module (`import fs from 'node:fs'`, a dozen
 * sites over Node's modules) in `__toESM`, which copies every property of the module onto a new
 * object, once per importing module. Here a second import of the same module gets the first's
 * object back (what an ES module namespace is anyway: one per module). Patched in the minified
 * script (minifying after a patch of the readable one keeps `const`s that cost a larger code
 * cache); fails the build when esbuild's helper no longer has the shape looked for.
 */
function shareEsmWrappers(text: string): string {
  const helper = /([\w$]+)=(\(([\w$]+),([\w$]+),([\w$]+)\)=>\(\5=\3!=null\?[\w$]+\([\w$]+\(\3\)\):\{\},[\w$]+\(\4\|\|!\3\|\|!\3\.__esModule\?[\w$]+\(\5,"default",\{value:\3,enumerable:!0\}\):\5,\3\)\))/g;
  const found = [...text.matchAll(helper)];
  if (found.length !== 1) throw new Error(`esbuild's __toESM helper found ${found.length} times, not once: update scripts/build-cli.ts (shareEsmWrappers)`);
  const [whole, name, wrap] = found[0];
  const shared = `${name}=((w,s)=>(m,n)=>{if(m==null||typeof m!="object"&&typeof m!="function")return w(m,n);const c=s[n?1:0];let x=c.get(m);if(x===void 0)c.set(m,x=w(m,n));return x})(${wrap},[new WeakMap,new WeakMap])`;
  return text.replace(whole, () => shared);
}

/** The CLI scripts beside the launcher: the whole command, and its image verbs alone. */
const SCRIPT = 'blocklayer-script.js';
const IMAGE_SCRIPT = 'blocklayer-image-script.js';

/**
 * One entry bundled as a script: a function of `require` and `import.meta.url` that the launcher
 * compiles with a V8 code cache (Node 20 has none for modules). Its modules run when first
 * imported, as before: each verb's only when it runs.
 */
async function bundleScript(entry: string): Promise<string> {
  const cli = await build({
    entryPoints: [path.join(root, entry)],
    bundle: true,
    format: 'iife',
    platform: 'node',
    target: 'node20',
    write: false,
    // Node's own modules, native or optional ones: resolved at run time by the launcher's
    // require, where the code that needs them asks
    external: [...builtinModules, 'node:*', 'koffi', 'fs-ext', 'zstd-napi', 'file-disk'],
    define: { 'import.meta.url': '__blocklayer_url' },
    // fewer bytes to read, and to compile when there is no cache yet
    minify: true,
    // no maps: they would point at src/, which is not shipped (and double what is installed)
    sourcemap: false,
    plugins: [mainAsScript],
    logLevel: 'warning',
  });
  const text = `(function (require, __blocklayer_url) {\n${shareEsmWrappers(cli.outputFiles[0].text)}})\n`;
  // The script runs through vm.Script, where import() has no loader: a module left external and
  // loaded with import() would fail only when that path runs (zstd compression once did).
  const dynamicImport = /\bimport\((?!\s*\))/.exec(text);
  if (dynamicImport !== null) throw new Error(`${entry}'s script has an import() (load it with require): …${text.slice(Math.max(0, dynamicImport.index - 80), dynamicImport.index + 40)}…`);
  // the launcher reads the script as latin1, which is its text only while every character is ASCII
  const wide = /[\u0080-\uffff]/.exec(text);
  if (wide !== null) throw new Error(`${entry}'s script has a character outside ASCII (the launcher reads it as latin1): …${text.slice(Math.max(0, wide.index - 80), wide.index + 40)}…`);
  return text;
}

export async function buildCli(outdir = path.join(root, 'dist/cli')): Promise<string[]> {
  // an earlier build's chunks (the command was once an ESM bundle split by verb)
  fs.rmSync(path.join(outdir, 'chunks'), { recursive: true, force: true });
  // The whole command, and a smaller script for the image verbs scripts call most (info, map,
  // check…): without serve's, bench's, convert's and commit's code, less to read and to cache.
  const [text, imageText] = await Promise.all([bundleScript('src/cli/main.ts'), bundleScript('src/cli/image-main.ts')]);
  fs.mkdirSync(outdir, { recursive: true });
  fs.writeFileSync(path.join(outdir, SCRIPT), text);
  fs.writeFileSync(path.join(outdir, IMAGE_SCRIPT), imageText);
  const define = {
    __BLOCKLAYER_SCRIPT__: JSON.stringify(SCRIPT),
    __BLOCKLAYER_IMAGE_SCRIPT__: JSON.stringify(IMAGE_SCRIPT),
    __BLOCKLAYER_IMAGE_VERBS__: JSON.stringify(Object.keys(IMAGE_VERBS)),
    __BLOCKLAYER_BUILD__: JSON.stringify(createHash('sha256').update(text).update(imageText).digest('hex').slice(0, 16)),
  };
  const launcher: BuildOptions = { entryPoints: [path.join(root, 'scripts/cli-launcher.ts')], bundle: true, platform: 'node', target: 'node20', minify: true, sourcemap: false, logLevel: 'warning' };
  // package.json's bin: CommonJS, so that a start sets up no ES module loader (the script needs none)
  await build({ ...launcher, format: 'cjs', outfile: path.join(outdir, 'blocklayer.cjs'), define: { ...define, __BLOCKLAYER_DIR__: '__dirname' }, banner: { js: '#!/usr/bin/env node' } });
  // the same as an ES module, for whoever runs dist/cli/blocklayer.js
  await build({
    ...launcher,
    format: 'esm',
    outfile: path.join(outdir, 'blocklayer.js'),
    define: { ...define, __BLOCKLAYER_DIR__: 'import.meta.dirname' },
    banner: { js: "#!/usr/bin/env node\nimport { createRequire as __blocklayerRequire } from 'node:module';\nconst require = __blocklayerRequire(import.meta.url);" },
    plugins: [builtinsByRequire],
  });
  for (const f of ['blocklayer.cjs', 'blocklayer.js']) fs.chmodSync(path.join(outdir, f), 0o755);
  return [path.join(outdir, 'blocklayer.cjs'), path.join(outdir, 'blocklayer.js'), path.join(outdir, SCRIPT), path.join(outdir, IMAGE_SCRIPT)];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = await buildCli(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  console.log(`dist/cli: ${files.map((f) => path.basename(f)).join(', ')}`);
}
