/**
 * Builds the `blocklayer` command as one ESM bundle: `npx tsx scripts/build-cli.ts [OUTDIR]` →
 * dist/cli/blocklayer.js (package.json's `bin`), each verb in a chunk of its own under
 * dist/cli/chunks/ that main's `import()` loads when that verb runs. One file per verb instead of
 * two hundred modules (zod's among them) is most of the command's start-up. Native addons stay
 * outside (loaded with require where they are needed, from the package's node_modules).
 */
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { build, type Plugin } from 'esbuild';

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
 * One chunk for the code every verb runs on. esbuild puts a module in a chunk of its own for each
 * set of lazily imported modules (the verbs, the format drivers) that reach it, so the verbs and the
 * drivers' stubs cut the shared code into dozens of small chunks, and each file costs a start a
 * resolve, a read and a compile. Here each module the sources import lazily (a verb, a driver, a
 * part only some runs need) also imports the core (the layer, with the stubs, and qcow2, which nearly every
 * verb opens): the core is reached from all of them alike and lands in one chunk. Evaluating it
 * first changes nothing: its modules only define things.
 */
function oneCoreChunk(core: string[]): Plugin {
  return {
    name: 'one-core-chunk',
    setup(b) {
      // the targets of the sources' dynamic imports, found before esbuild loads any of them
      const lazy = new Set<string>();
      for (const file of fs.readdirSync(path.join(root, 'src'), { recursive: true, encoding: 'utf8' })) {
        if (!file.endsWith('.ts')) continue;
        const from = path.join(root, 'src', file);
        for (const m of fs.readFileSync(from, 'utf8').matchAll(/\bimport\('(\.[^']+)\.js'\)/g)) lazy.add(path.resolve(path.dirname(from), `${m[1]}.ts`));
      }
      b.onLoad({ filter: /\.ts$/ }, (args) => {
        if (!lazy.has(args.path)) return undefined;
        const imports = core
          .map((c) => path.join(root, c))
          .filter((c) => c !== args.path)
          .map((c) => `import ${JSON.stringify(c)};`)
          .join('');
        return { contents: `${imports}\n${fs.readFileSync(args.path, 'utf8')}`, loader: 'ts', resolveDir: path.dirname(args.path) };
      });
    },
  };
}

export async function buildCli(outdir = path.join(root, 'dist/cli')): Promise<string[]> {
  // chunks are named by their hash: drop an earlier build's
  fs.rmSync(path.join(outdir, 'chunks'), { recursive: true, force: true });
  const result = await build({
    entryPoints: { blocklayer: path.join(root, 'src/cli/main.ts') },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outdir,
    chunkNames: 'chunks/[name]-[hash]',
    // native or optional: resolved at run time, where the code that needs them asks
    external: ['koffi', 'fs-ext', 'zstd-napi', 'file-disk'],
    // CommonJS dependencies bundled into ESM (cli-progress) require Node's modules
    banner: { js: "import { createRequire as __blocklayerRequire } from 'node:module';\nconst require = __blocklayerRequire(import.meta.url);" },
    // a third of the bytes to read, decode and compile at every start
    minify: true,
    // no maps: they would point at src/, which is not shipped (and double what is installed)
    sourcemap: false,
    plugins: [builtinsByRequire, oneCoreChunk(['src/layer.ts', 'src/drivers/qcow2/index.ts'])],
    metafile: true,
    logLevel: 'warning',
  });
  return Object.keys(result.metafile.outputs).filter((f) => f.endsWith('.js'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = await buildCli(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  console.log(`dist/cli: blocklayer.js and ${files.length - 1} chunks`);
}
