import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromLibvirtIotune, parseIotuneXml, toIotuneXml, toLibvirtIotune } from '../../src/index.js';
import { validThrottleArb } from '../helpers/limits-arb.js';

describe('libvirt <iotune>', () => {
  it('maps every libvirt name to our limits', () => {
    expect(
      fromLibvirtIotune({
        total_bytes_sec: 1000,
        read_iops_sec: '200',
        write_iops_sec: 100,
        read_iops_sec_max: 400,
        read_iops_sec_max_length: 5,
        size_iops_sec: 4096,
        group_name: 'tenant',
      }),
    ).toEqual({ bpsTotal: 1000, iopsRead: 200, iopsWrite: 100, iopsReadMax: 400, iopsReadMaxLength: 5, iopsSize: 4096, group: 'tenant' });
  });

  it('parses an <iotune> fragment of a domain XML, comments included', () => {
    const xml = `<disk><iotune>
      <!-- tenant A -->
      <total_iops_sec>500</total_iops_sec>
      <total_iops_sec_max>2000</total_iops_sec_max>
      <group_name>a&amp;b</group_name>
    </iotune></disk>`;
    expect(parseIotuneXml(xml)).toEqual({ iopsTotal: 500, iopsTotalMax: 2000, group: 'a&b' });
  });

  it('refuses unknown elements, bad values and invalid combinations by name', () => {
    expect(() => fromLibvirtIotune({ total_bytes_secs: 1 })).toThrow("unknown iotune element 'total_bytes_secs'");
    expect(() => fromLibvirtIotune({ total_bytes_sec: '-5' })).toThrow(/^total_bytes_sec: expects a non-negative integer/);
    expect(() => fromLibvirtIotune({ total_bytes_sec: 1, read_bytes_sec: 1 })).toThrow(/^total_bytes_sec, read_bytes_sec: .*same time/);
    expect(() => parseIotuneXml('<iotune><x y="1">2</x></iotune>')).toThrow(/unexpected content/);
  });

  it('round-trips random valid limits through the names and the XML', () => {
    fc.assert(
      fc.property(validThrottleArb, (t) => {
        expect(fromLibvirtIotune(toLibvirtIotune(t))).toEqual(t);
        expect(parseIotuneXml(toIotuneXml(t))).toEqual(t);
      }),
      { numRuns: 300 },
    );
  });
});
