// The few Web APIs the opfs driver uses (the Origin Private File System, Web Locks), typed by
// their shape here: the project compiles without the DOM library, and these run only in browsers.

/** FileSystemSyncAccessHandle: synchronous positional I/O, only in a dedicated Worker. */
export interface SyncAccessHandle {
  read(buffer: Uint8Array, options: { at: number }): number;
  write(buffer: Uint8Array, options: { at: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

/** FileSystemWritableFileStream: writes go to a swap file that `close()` puts in place. */
export interface WritableFile {
  write(command: { type: 'write'; position: number; data: Uint8Array } | { type: 'truncate'; size: number }): Promise<void>;
  close(): Promise<void>;
  abort(): Promise<void>;
}

/** The File snapshot `getFile()` returns (a Blob). */
export interface FileSnapshot {
  readonly size: number;
  slice(start: number, end: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

export interface FileHandle {
  readonly kind: 'file';
  getFile(): Promise<FileSnapshot>;
  createWritable(options: { keepExistingData: boolean }): Promise<WritableFile>;
  /** Absent outside dedicated Workers. `mode` ('read-only' shares the file) since Chromium 121. */
  createSyncAccessHandle?(options?: { mode: 'readwrite' | 'read-only' }): Promise<SyncAccessHandle>;
}

export interface DirectoryHandle {
  readonly kind: 'directory';
  getDirectoryHandle(name: string, options: { create: boolean }): Promise<DirectoryHandle>;
  getFileHandle(name: string, options: { create: boolean }): Promise<FileHandle>;
}

/** Web Locks (navigator.locks): `ifAvailable` hands the callback null instead of waiting. */
export interface LockManager {
  request(name: string, options: { mode: 'exclusive' | 'shared'; ifAvailable: boolean }, callback: (lock: object | null) => unknown): Promise<unknown>;
}

export interface StorageManager {
  getDirectory(): Promise<DirectoryHandle>;
  estimate?(): Promise<{ usage?: number; quota?: number }>;
  /** Asks that the origin's storage be kept under storage pressure; resolves to whether it is. */
  persist?(): Promise<boolean>;
  persisted?(): Promise<boolean>;
}

/** What of `navigator` this runtime has (nothing in Node). */
export function webNavigator(): { storage?: StorageManager; locks?: LockManager } {
  return (globalThis as { navigator?: { storage?: StorageManager; locks?: LockManager } }).navigator ?? {};
}
