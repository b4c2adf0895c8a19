import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromLibvirtIotune, parseIotuneXml, toIotuneXml, toLibvirtIotune } from '../../src/index.js';
import { validateLimits } from '../../src/throttle/limits.js';
import { anyLimitsArb, normalize, wideThrottleArb } from '../helpers/limits-arb.js';

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
    expect(() => parseIotuneXml('<iotune><x y="1">2</x></iotune>')).toThrow("unknown iotune element 'x'");
  });

  it('round-trips random valid limits through the names and the XML', () => {
    fc.assert(
      fc.property(wideThrottleArb, (t) => {
        expect(fromLibvirtIotune(toLibvirtIotune(t))).toEqual(t);
        expect(parseIotuneXml(toIotuneXml(t))).toEqual(t);
      }),
      { numRuns: 300 },
    );
  });

  it('maps all twenty libvirt names, each to its own field', () => {
    const names = {
      total_bytes_sec: 'bpsTotal',
      read_bytes_sec: 'bpsRead',
      write_bytes_sec: 'bpsWrite',
      total_iops_sec: 'iopsTotal',
      read_iops_sec: 'iopsRead',
      write_iops_sec: 'iopsWrite',
      total_bytes_sec_max: 'bpsTotalMax',
      read_bytes_sec_max: 'bpsReadMax',
      write_bytes_sec_max: 'bpsWriteMax',
      total_iops_sec_max: 'iopsTotalMax',
      read_iops_sec_max: 'iopsReadMax',
      write_iops_sec_max: 'iopsWriteMax',
      total_bytes_sec_max_length: 'bpsTotalMaxLength',
      read_bytes_sec_max_length: 'bpsReadMaxLength',
      write_bytes_sec_max_length: 'bpsWriteMaxLength',
      total_iops_sec_max_length: 'iopsTotalMaxLength',
      read_iops_sec_max_length: 'iopsReadMaxLength',
      write_iops_sec_max_length: 'iopsWriteMaxLength',
      size_iops_sec: 'iopsSize',
      group_name: 'group',
    } as const;
    expect(new Set(Object.values(names)).size).toBe(20);
    for (const [libvirt, field] of Object.entries(names)) {
      if (field === 'group') continue;
      const base = field === 'iopsSize' ? 'iopsTotal' : field.replace(/Max(Length)?$/, '');
      const limits: Record<string, number> = { [base]: 5 };
      if (field.endsWith('Max') || field.endsWith('MaxLength')) limits[`${base}Max`] = 5;
      limits[field] = 5;
      expect(toLibvirtIotune(limits)[libvirt]).toBe(5);
      expect(fromLibvirtIotune(toLibvirtIotune(limits))).toEqual(limits);
    }
  });

  it('a zero value means unset, as in libvirt', () => {
    expect(fromLibvirtIotune({ total_bytes_sec: 0, read_iops_sec: 10, write_iops_sec: '0' })).toEqual({ iopsRead: 10 });
  });

  it('numbers must be decimal non-negative integers; strings are trimmed', () => {
    expect(fromLibvirtIotune({ total_bytes_sec: ' 42 ' })).toEqual({ bpsTotal: 42 });
    for (const bad of ['1.5', '1e3', '0x10', '+5', '', 'ten']) {
      expect(() => fromLibvirtIotune({ total_bytes_sec: bad })).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'total_bytes_sec', message: 'total_bytes_sec: expects a non-negative integer' }));
    }
    expect(() => fromLibvirtIotune({ total_bytes_sec: 1.5 })).toThrow('total_bytes_sec: expects a non-negative integer');
    expect(() => fromLibvirtIotune({ total_bytes_sec: 1e15 + 1 })).toThrow('total_bytes_sec: bps/iops/max values must be within [0, 1000000000000000]');
    expect(() => fromLibvirtIotune({ group_name: '' })).toThrow('group_name: must not be empty');
  });

  it("QEMU's rules apply with libvirt names in the message", () => {
    expect(() => fromLibvirtIotune({ total_iops_sec: 10, total_iops_sec_max: 5 })).toThrow('total_iops_sec_max, total_iops_sec: bps_max/iops_max cannot be lower than bps/iops');
    expect(() => fromLibvirtIotune({ total_bytes_sec: 10, size_iops_sec: 4096 })).toThrow('size_iops_sec: iops size requires an iops value to be set');
    expect(() => fromLibvirtIotune({ read_bytes_sec: 10, read_bytes_sec_max_length: 5 })).toThrow(
      'read_bytes_sec_max_length, read_bytes_sec_max: burst length set without burst rate',
    );
  });

  it('the XML tokenizer handles a whole domain, declarations, CDATA, entities and character references', () => {
    const xml = `<?xml version="1.0"?>
<!DOCTYPE domain>
<domain type="kvm"><devices>
  <disk type="file" device="disk">
    <source file="/a&amp;b.img"/>
    <iotune>
      <read_bytes_sec>1048576</read_bytes_sec>
      <write_bytes_sec><![CDATA[2097152]]></write_bytes_sec>
      <read_iops_sec> 100 </read_iops_sec>
      <group_name>t&#65;&#x42;&lt;&gt;&quot;&apos;</group_name>
    </iotune>
  </disk>
</devices></domain>`;
    expect(parseIotuneXml(xml)).toEqual({ bpsRead: 1048576, bpsWrite: 2097152, iopsRead: 100, group: 'tAB<>"\'' });
    expect(parseIotuneXml('<iotune/>')).toEqual({});
    expect(parseIotuneXml('<iotune></iotune>')).toEqual({});
  });

  it('the XML parser refuses unknown elements, attributes, nesting, duplicates, stray text and malformed XML, naming what is wrong', () => {
    const cases: [string, string | RegExp][] = [
      ['<iotune><total_bytes_secs>1</total_bytes_secs></iotune>', "unknown iotune element 'total_bytes_secs'"],
      ['<iotune><total_bytes_sec unit="k">1</total_bytes_sec></iotune>', `<total_bytes_sec> takes no attributes, found 'unit="k"'`],
      ['<iotune><total_bytes_sec><b>1</b></total_bytes_sec></iotune>', '<total_bytes_sec> must contain text only, found <b>'],
      ['<iotune><total_bytes_sec>1</total_bytes_sec><total_bytes_sec>2</total_bytes_sec></iotune>', "iotune element 'total_bytes_sec' given twice"],
      ['<iotune>12<total_bytes_sec>1</total_bytes_sec></iotune>', /^unexpected text '12' in <iotune>/],
      ['<iotune><total_bytes_sec>1</read_bytes_sec></iotune>', /^<\/read_bytes_sec> does not close <total_bytes_sec>/],
      ['<iotune><total_bytes_sec>1</total_bytes_sec>', /^<iotune> is not closed/],
      ['<iotune><total_bytes_sec>1', /^unterminated tag|<total_bytes_sec> is not closed/],
      ['<iotune><total_bytes_sec/></iotune>', '<total_bytes_sec> is empty'],
      ['<iotune><total_bytes_sec>&nbsp;1</total_bytes_sec></iotune>', /^unknown entity '&nbsp;'/],
      ['<iotune><!-- x </iotune>', /^unterminated comment/],
      ['<disk/>', 'no <iotune> element found'],
      ['<d><iotune/><iotune/></d>', /^2 <iotune> elements found, expected one/],
      ['<iotune x="1"/>', `<iotune> takes no attributes, found 'x="1"'`],
      ['<iotune><total_bytes_sec>-1</total_bytes_sec></iotune>', 'total_bytes_sec: expects a non-negative integer'],
      ['<iotune><total_bytes_sec>1</total_bytes_sec><read_bytes_sec>1</read_bytes_sec></iotune>', /^total_bytes_sec, read_bytes_sec: .*same time$/],
    ];
    for (const [xml, message] of cases) expect(() => parseIotuneXml(xml), xml).toThrow(message);
  });

  it('round-trips random valid limits over the whole range through names and XML, groups with XML specials included', () => {
    fc.assert(
      fc.property(wideThrottleArb, (t) => {
        expect(fromLibvirtIotune(toLibvirtIotune(t))).toEqual(t);
        expect(parseIotuneXml(toIotuneXml(t))).toEqual(t);
        expect(parseIotuneXml(`<domain><devices><disk>${toIotuneXml(t)}</disk></devices></domain>`)).toEqual(t);
        // values as strings, as they come out of XML
        const asStrings = Object.fromEntries(Object.entries(toLibvirtIotune(t)).map(([k, v]) => [k, String(v)]));
        expect(fromLibvirtIotune(asStrings)).toEqual(t);
      }),
      { numRuns: 500 },
    );
  });

  it('any mix of limits gets the verdict validateLimits gives (zero meaning unset)', () => {
    fc.assert(
      fc.property(anyLimitsArb, (limits) => {
        const verdict = (fn: () => unknown) => {
          try {
            fn();
            return 'ok';
          } catch (e) {
            return (e as Error).message.replace(/^[^:]*: /, '');
          }
        };
        const unset = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== 0));
        expect(verdict(() => fromLibvirtIotune(toLibvirtIotune(limits)))).toBe(verdict(() => validateLimits(unset)));
        if (verdict(() => validateLimits(unset)) === 'ok') expect(normalize(fromLibvirtIotune(toLibvirtIotune(limits)))).toEqual(normalize(limits));
      }),
      { numRuns: 1000 },
    );
  });
});
