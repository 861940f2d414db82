/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: every
 * line must be a HELP, a TYPE, another comment, or a sample with valid names, quoted and escaped
 * label values and a float value; a family's samples are contiguous and come after its TYPE; a
 * series appears once; a histogram has cumulative buckets up to `+Inf` equal to its `_count`.
 * Anything else throws with the line. (The npm parsers found are lenient and unmaintained.)
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A float as Go's strconv.ParseFloat reads it (what Prometheus uses): special values in any case ('Nan' from prom-client). */
function parseValue(raw: string, line: string): number {
  const special = raw.toLowerCase();
  if (special === '+inf' || special === 'inf' || special === '+infinity' || special === 'infinity') return Infinity;
  if (special === '-inf' || special === '-infinity') return -Infinity;
  if (special === 'nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(raw)) throw new SyntaxError(`not a float: ${JSON.stringify(raw)} in ${JSON.stringify(line)}`);
  return Number(raw);
}

/** `{a="x",b="y"}` starting at `text[0] === '{'`: the labels and the rest after `}`. */
function parseLabels(text: string, line: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  const fail = (why: string): never => {
    throw new SyntaxError(`${why} at column ${i} of ${JSON.stringify(line)}`);
  };
  for (;;) {
    if (text[i] === '}') return { labels, rest: text.slice(i + 1) };
    const eq = text.indexOf('=', i);
    if (eq < 0) fail('label without =');
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) fail(`bad label name ${JSON.stringify(name)}`);
    if (name in labels) fail(`label ${name} twice`);
    i = eq + 1;
    if (text[i] !== '"') fail('label value not quoted');
    i++;
    let value = '';
    for (;;) {
      const c = text[i];
      if (c === undefined) fail('unterminated label value');
      if (c === '"') break;
      if (c === '\\') {
        const next = text[i + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else fail(`bad escape \\${next ?? ''}`);
        i += 2;
      } else {
        value += c;
        i++;
      }
    }
    labels[name] = value;
    i++;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') fail('expected , or }');
  }
}

/** The family a sample name belongs to (histogram and summary samples carry suffixes). */
function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  const exact = families.get(sample);
  if (exact) return exact;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sample.endsWith(suffix)) continue;
    const family = families.get(sample.slice(0, -suffix.length));
    if (family && (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket'))) return family;
  }
  return undefined;
}

function checkHistogram(family: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; count?: number }>();
  const keyOf = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort());
  for (const sample of family.samples) {
    const group = groups.get(keyOf(sample.labels)) ?? { buckets: [] };
    groups.set(keyOf(sample.labels), group);
    if (sample.name.endsWith('_bucket')) {
      if (sample.labels.le === undefined) throw new SyntaxError(`${sample.name} without le`);
      group.buckets.push([parseValue(sample.labels.le, sample.name), sample.value]);
    } else if (sample.name.endsWith('_count')) group.count = sample.value;
  }
  for (const [key, { buckets, count }] of groups) {
    const last = buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new SyntaxError(`${family.name}${key}: no +Inf bucket`);
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i]![0] > buckets[i - 1]![0]) || buckets[i]![1] < buckets[i - 1]![1]) throw new SyntaxError(`${family.name}${key}: buckets not cumulative`);
    }
    if (count !== last[1]) throw new SyntaxError(`${family.name}${key}: +Inf bucket ${last[1]} is not _count ${count}`);
  }
}

/** Parses an exposition; throws a SyntaxError naming the first bad line. */
export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const finished = new Set<string>();
  let current: Family | undefined;
  if (text !== '' && !text.endsWith('\n')) throw new SyntaxError('the exposition must end with a newline');
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!match) continue; // another comment
      const [, kind, name, rest = ''] = match;
      if (!METRIC_NAME.test(name!)) throw new SyntaxError(`bad metric name in ${JSON.stringify(line)}`);
      let family = families.get(name!);
      if (!family) {
        if (current) finished.add(current.name);
        family = { name: name!, type: 'untyped', help: '', samples: [] };
        families.set(name!, family);
        current = family;
      } else if (family !== current || family.samples.length > 0) {
        throw new SyntaxError(`${kind} of ${name} after its samples or another family: ${JSON.stringify(line)}`);
      }
      if (kind === 'TYPE') {
        if (!TYPES.has(rest as MetricType)) throw new SyntaxError(`unknown type in ${JSON.stringify(line)}`);
        family.type = rest as MetricType;
      } else {
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new SyntaxError(`bad escape in HELP: ${JSON.stringify(line)}`);
        family.help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      }
      continue;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) throw new SyntaxError(`not a sample: ${JSON.stringify(line)}`);
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new SyntaxError(`bad metric name in ${JSON.stringify(line)}`);
    let rest = line.slice(nameEnd);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, line));
    const parts = rest.split(' ');
    if (parts[0] !== '' || parts.length < 2 || parts.length > 3) throw new SyntaxError(`expected " value [timestamp]" in ${JSON.stringify(line)}`);
    const value = parseValue(parts[1]!, line);
    if (parts[2] !== undefined && !/^-?\d+$/.test(parts[2])) throw new SyntaxError(`bad timestamp in ${JSON.stringify(line)}`);
    let family = familyOf(name, families);
    if (!family) {
      if (current) finished.add(current.name);
      family = { name, type: 'untyped', help: '', samples: [] };
      families.set(name, family);
    } else if (finished.has(family.name)) {
      throw new SyntaxError(`samples of ${family.name} are not together: ${JSON.stringify(line)}`);
    }
    current = family;
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new SyntaxError(`series twice: ${JSON.stringify(line)}`);
    seen.add(key);
    if (family.type === 'counter' && value < 0) throw new SyntaxError(`negative counter: ${JSON.stringify(line)}`);
    family.samples.push({ name, labels, value });
  }
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/**
 * The value of the one series `name` with exactly these labels (a histogram's `_count` or
 * `_sum` by their sample name); throws if there is none.
 */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = familyOf(name, families);
  const wanted = JSON.stringify(Object.entries(labels).sort());
  const sample = family?.samples.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === wanted);
  if (!sample) throw new Error(`no series ${name}${JSON.stringify(labels)} in the exposition`);
  return sample.value;
}
