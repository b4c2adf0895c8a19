import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { driveStringToOptions, parseDriveString, splitQemuOpts, toDriveString } from '../../src/index.js';
import { validThrottleArb } from '../helpers/limits-arb.js';

describe('-drive option strings', () => {
  it('parses the example of the issue with legacy and throttling.* names', () => {
    const p = parseDriveString('file=a.qcow2,format=qcow2,iops=100,bps_rd=1048576,throttling.iops-total-max=2000,group=g1');
    expect(p).toEqual({
      filename: 'a.qcow2',
      format: 'qcow2',
      throttle: { iopsTotal: 100, bpsRead: 1048576, iopsTotalMax: 2000, group: 'g1' },
    });
  });

  it('a doubled comma is a comma inside a value; a bare key means on', () => {
    expect(splitQemuOpts('file=a,,b.img,readonly,id=x')).toEqual([
      ['file', 'a,b.img'],
      ['readonly', 'on'],
      ['id', 'x'],
    ]);
    expect(parseDriveString('file=my,,disk.img,readonly')).toEqual({ filename: 'my,disk.img', readOnly: true });
  });

  it('builds drive options with the file under its format (raw by default)', () => {
    expect(driveStringToOptions('file=/x.img,id=d0,readonly=on,iops_rd=50')).toEqual({
      id: 'd0',
      driver: 'raw',
      file: { driver: 'file', filename: '/x.img' },
      readOnly: true,
      throttle: { iopsRead: 50 },
    });
    expect(() => driveStringToOptions('format=raw')).toThrow(/^file: required/);
  });

  it("refuses a parameter given under both spellings with QEMU's alias message", () => {
    expect(() => parseDriveString('file=x,iops=1,throttling.iops-total=2')).toThrow(
      "'throttling.iops-total' and its alias 'iops' can't be used at the same time",
    );
    expect(() => parseDriveString('file=x,throttling.group=a,group=b')).toThrow(
      "'throttling.group' and its alias 'group' can't be used at the same time",
    );
    expect(() => parseDriveString('file=x,bps_rd_max=1,throttling.bps-read-max=1')).toThrow(/alias 'bps_rd_max'/);
  });

  it('burst lengths have no legacy name; unknown options are refused by name', () => {
    expect(() => parseDriveString('file=x,bps_max_length=3')).toThrow("Invalid parameter 'bps_max_length'");
    expect(() => parseDriveString('file=x,throttling.bps-total-max-length=3,throttling.bps-total=1,throttling.bps-total-max=2')).not.toThrow();
    expect(() => parseDriveString('file=x,frobnicate=1')).toThrow("Invalid parameter 'frobnicate'");
  });

  it("QEMU's validity rules apply and name the user's spelling", () => {
    expect(() => parseDriveString('file=x,bps=1,bps_rd=1')).toThrow(/^bps, bps_rd: bps\/iops\/max total values and read\/write values cannot be used at the same time/);
    expect(() => parseDriveString('file=x,throttling.bps-total=100,throttling.bps-total-max=50')).toThrow(
      /^throttling\.bps-total-max, throttling\.bps-total: bps_max\/iops_max cannot be lower than bps\/iops/,
    );
    expect(() => parseDriveString('file=x,bps=100,iops_size=4096')).toThrow(/^iops_size: iops size requires an iops value/);
    expect(() => parseDriveString('file=x,throttling.iops-total=1,throttling.iops-total-max=2,throttling.iops-total-max-length=4294967296')).toThrow(
      /^throttling\.iops-total-max-length: value must be in the range \[0, 4294967295\]/,
    );
    expect(() => parseDriveString('file=x,iops=-1')).toThrow(/^Parameter 'iops' expects a non-negative number/);
    expect(() => parseDriveString('file=x,iops=0x10')).not.toThrow();
  });

  it('accepts harmless -drive keys and refuses what cannot be honoured with ENOTSUP', () => {
    expect(parseDriveString('file=x,if=virtio,cache=none,aio=native,discard=unmap,media=disk,werror=report')).toEqual({ filename: 'x' });
    expect(() => parseDriveString('file=x,snapshot=on')).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
    expect(() => parseDriveString('file=x,media=cdrom')).toThrow(/media=cdrom is not supported/);
    expect(() => parseDriveString('file=x,readonly=maybe')).toThrow("Parameter 'readonly' expects 'on' or 'off'");
  });

  it('round-trips random valid limits through a -drive string', () => {
    fc.assert(
      fc.property(validThrottleArb, (t) => {
        expect(parseDriveString(`file=x,${toDriveString(t)}`).throttle).toEqual(t);
      }),
      { numRuns: 300 },
    );
  });
});

