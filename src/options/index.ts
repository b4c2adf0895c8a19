export { driveStringToOptions, type ParsedDriveString, parseDriveString, splitQemuOpts, toDriveString } from './drive-string.js';
export {
  AUTO_ERROR_ACTION,
  type ErrorAction,
  type ErrorDirection,
  errorActionSchema,
  parseDriveErrorAction,
  parseErrorAction,
  type ReadErrorAction,
  readErrorActionSchema,
} from './error-policy.js';
export { fromLibvirtIotune, parseIotuneXml, toIotuneXml, toLibvirtIotune } from './libvirt.js';
export {
  type BlockSetIoThrottle,
  blockSetIoThrottle,
  fromQapiLimits,
  parseBlockSetIoThrottle,
  queryBlockThrottle,
  toBlockSetIoThrottle,
  toQapiLimits,
  toQueryBlockThrottle,
} from './qmp.js';
export { parseThrottleGroupObject, type ThrottleGroupObject, toThrottleGroupObject } from './qom.js';
export { parseSize } from './size.js';
