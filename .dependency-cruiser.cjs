// The house's import rules (docs/architecture.md): each layer imports only from layers below
// it, and no two files import each other, however indirectly (type-only imports included).
// Checked by tests/unit/architecture.test.ts and `npm run deps`.

/** Layers from the bottom up; a file belongs to the first layer whose pattern matches it. */
const LAYERS = [
  ['base', '^src/(errors|ids)\\.ts$'],
  ['platform', '^src/platform/'],
  ['clock', '^src/clock\\.ts$'],
  ['throttle', '^src/throttle/'],
  // Option values (sizes, zod messages, schemas built on first use) are used by drivers; the option syntaxes (QEMU -drive
  // strings, QMP, QOM, libvirt iotune) produce a drive's options, so they sit just below Drive.
  ['values', '^src/options/(size|zod-error|input|built-once)\\.ts$'],
  ['graph', '^src/node/'],
  ['drivers', '^src/drivers/'],
  ['syntaxes', '^src/options/'],
  // Jobs sit with the Drive: the layer keeps their registry, they work on nodes and drives through JobHost.
  ['drive', '^src/(drive|layer|stats|image-options|temporary-overlay|overlay|overlay\\.browser)\\.ts$|^src/(drive|jobs)/'],
  ['upper', '^src/(tools|nbd|qmp|adapters|bench|worker|iothread)/|^src/unix-listen\\.ts$'],
  ['faces', '^src/(index|browser)\\.ts$|^src/cli/'],
];

const forbidden = [
  {
    name: 'no-circular',
    comment: 'A circle of imports means two concepts that cannot be understood apart; cut it with a type or an interface in the lower file.',
    severity: 'error',
    from: { path: '^src/' },
    to: { circular: true },
  },
  {
    name: 'unlayered',
    comment: 'Every source file belongs to a layer (add its path to LAYERS).',
    severity: 'error',
    from: { path: '^src/', pathNot: LAYERS.map(([, p]) => `(${p})`).join('|') },
    to: {},
  },
];
LAYERS.forEach(([name, pattern], i) => {
  const above = LAYERS.slice(i + 1).map(([, p]) => `(${p})`).join('|');
  // A pattern may also match files of a lower layer (first match wins): those stay allowed.
  const own = LAYERS.slice(0, i + 1).map(([, p]) => `(${p})`).join('|');
  if (!above) return;
  forbidden.push({
    name: `${name}-points-down`,
    comment: `The ${name} layer imports only from the layers below it.`,
    severity: 'error',
    from: { path: pattern },
    to: { path: above, pathNot: own },
  });
});

module.exports = {
  forbidden,
  options: {
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
  },
};
