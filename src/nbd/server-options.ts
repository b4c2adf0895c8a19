import type { Clock } from '../clock.js';
import type { NbdTlsOptions } from '../drivers/nbd/tls.js';
import type { NbdExport } from './export.js';

/** Options of {@link NbdServer}. */
export interface NbdServerOptions {
  /** Exports served from the start (more with {@link NbdServer.addExport}). */
  exports?: readonly NbdExport[];
  /**
   * Connections served at once (default 16). One more waits, not greeted, until a client leaves
   * (as qemu-nbd, which stops accepting); at most as many wait, and beyond that a connection is
   * closed on arrival. Both are reported by the 'full' event. CAN_MULTI_CONN is advertised only
   * when more than one connection is allowed.
   */
  maxConnections?: number;
  /** A client that has not finished the handshake after this long is disconnected (default 10000 ms). */
  handshakeTimeoutMs?: number;
  /** Largest READ / WRITE length in bytes (default 32 MiB, QEMU's NBD_MAX_BUFFER_SIZE). */
  maxRequest?: number;
  /**
   * Bytes that all connections together may hold for requests (WRITE payloads being received or
   * processed, READ data until its reply is written out); past it the server stops reading requests
   * until replies drain, and no request is failed for it (default 256 MiB, at least maxRequest).
   * Buffers of finished requests are kept for reuse, at most a quarter of it (and 32 MiB) idle.
   */
  memoryBudget?: number;
  /** Clock for the handshake timeout (default: the real clock). */
  clock?: Clock;
  /** TLS credentials: clients upgrade with NBD_OPT_STARTTLS (without them STARTTLS is refused with ERR_POLICY). */
  tls?: NbdTlsOptions;
  /**
   * With `tls`: refuse every option but STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD until TLS is
   * up, and drop a client that sends NBD_OPT_EXPORT_NAME first (default true, like QEMU's tls-creds).
   * False lets clients choose plain text or TLS.
   */
  tlsRequired?: boolean;
}

/** Where to listen: a TCP host and port (0: any free port), or a Unix socket path. */
export type NbdListenOptions =
  | {
      /** Host name or IP address to listen on (default 127.0.0.1). */
      host?: string;
      /** TCP port (default 10809, QEMU's NBD port; 0: any free port). */
      port?: number;
    }
  | {
      /** Path of the unix socket to create. */
      path: string;
    };

/** The address the server is bound to. */
export type NbdAddress =
  | {
      /** The address bound to. */
      host: string;
      /** The port bound to. */
      port: number;
    }
  | {
      /** Path of the unix socket. */
      path: string;
    };

/** A client, in events. */
export interface NbdClientInfo {
  /** Peer address (`unix` for a Unix socket). */
  address: string;
  /** Peer port (TCP only). */
  port?: number;
  /** The export the client selected (null while it has none). */
  export: string | null;
}

/** Typed events of an {@link NbdServer}. */
export interface NbdServerEvents {
  /** A client finished the handshake and selected an export. */
  connect: (client: NbdClientInfo) => void;
  /** A client's connection ended (`reason`: why, when the server ended it for a fault). */
  disconnect: (client: NbdClientInfo & { reason?: string }) => void;
  /** A client broke the protocol or its socket failed, or the listening socket failed. */
  error: (event: { error: Error; client?: NbdClientInfo }) => void;
  /**
   * A connection came while maxConnections clients were connected: it waits for one to leave
   * (`waiting` true), or, with maxConnections already waiting, it was closed (`waiting` false).
   */
  full: (event: { address: string; port?: number; waiting: boolean; maxConnections: number }) => void;
}
