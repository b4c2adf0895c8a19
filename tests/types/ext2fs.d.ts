// The part of the `ext2fs` npm package (no bundled types) the tests use.
declare module 'ext2fs' {
  import type { Disk } from 'file-disk';

  interface Ext2Stats {
    size: number;
    isDirectory(): boolean;
    isFile(): boolean;
  }

  /** Node's fs.promises subset that ext2fs implements over a mounted filesystem. */
  interface Ext2Promises {
    readdir(path: string): Promise<string[]>;
    stat(path: string): Promise<Ext2Stats>;
    /** Always decodes the content as utf8 (the encoding option is overridden by its default): use open + read for bytes. */
    readFile(path: string): Promise<string>;
    open(path: string, flags?: string): Promise<{ fd: number }>;
    read(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
    close(fd: number): Promise<void>;
    writeFile(path: string, data: Uint8Array | string): Promise<void>;
    mkdir(path: string, mode?: number): Promise<void>;
    unlink(path: string): Promise<void>;
    trim(): Promise<void>;
  }

  interface Ext2Fs {
    promises: Ext2Promises;
  }

  export function mount(disk: Disk, offset?: number): Promise<Ext2Fs>;
  export function umount(fs: Ext2Fs): Promise<void>;
  export function withMountedDisk<T>(disk: Disk, offset: number, fn: (fs: Ext2Fs) => Promise<T>): Promise<T>;
}
