export { type ExportManager, QMP_COMMANDS, type QmpContext, type QmpSession, runCommand } from './commands.js';
export { NbdExportManager } from './exports.js';
export { type QmpListenAddress, QmpServer, type QmpServerEvents, type QmpServerOptions } from './server.js';
export {
  errorResponse,
  eventMessage,
  frame,
  greeting,
  JsonSplitter,
  parseRequest,
  type ParsedRequest,
  QMP_MAX_MESSAGE_BYTES,
  QMP_MAX_NESTING,
  QmpError,
  type QmpErrorClass,
  type QmpRequest,
  type SplitItem,
  successResponse,
} from './wire.js';
export { type NodeLookup, type TranslatedOptions, translateBlockdevOptions } from './blockdev-options.js';
