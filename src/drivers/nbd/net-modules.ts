// node:net and node:tls for the nbd client, loaded on first use: a program (or a CLI verb) that
// opens no nbd node never pays for them at start-up (node:tls brings node:crypto and OpenSSL's
// set-up with it). Built-in modules load synchronously through require, so callers stay as they are.
import { createRequire } from 'node:module';
import type net from 'node:net';
import type tls from 'node:tls';

const require = createRequire(import.meta.url);
let netModule: typeof net | undefined;
let tlsModule: typeof tls | undefined;

/** node:net, loaded the first time it is asked for. */
export function nodeNet(): typeof net {
  netModule ??= require('node:net') as typeof net;
  return netModule;
}

/** node:tls, loaded the first time it is asked for. */
export function nodeTls(): typeof tls {
  tlsModule ??= require('node:tls') as typeof tls;
  return tlsModule;
}
