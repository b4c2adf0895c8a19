import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (file: string) => fileURLToPath(new URL(`./src/${file}`, import.meta.url));

export default defineConfig({
  // Examples import the package by its name, as users do; tests run them against the source.
  resolve: {
    alias: [
      { find: /^blocklayer$/, replacement: src('index.ts') },
      { find: /^blocklayer\/v86$/, replacement: src('adapters/v86.ts') },
      { find: /^blocklayer\/file-disk$/, replacement: src('adapters/file-disk.ts') },
    ],
  },
  test: {
    include: ['tests/**/*.test.ts', 'examples/**/*.test.ts'],
    globalSetup: ['tests/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
