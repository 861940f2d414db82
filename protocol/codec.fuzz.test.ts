/**
 * Fuzz of the server's first line of defence: `decodeClientFrame` sees every text frame a
 * hostile client sends. Whatever the text, it must answer — never throw — with either a valid
 * message that survives `encode` and a second decode, or an `invalid_message` refusal.
 *
 * Bounded for CI (a few seconds). Replay a run with TETHER_FUZZ_SEED=<seed printed below>.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeClientFrame, encode } from './codec.js';
import { MAX_JSON_DEPTH, RESERVED_DOC_KEYS } from './constants.js';
import { Raw, serialize, setOwn } from './testing/raw-json.js';

const seed = process.env.TETHER_FUZZ_SEED ? Number.parseInt(process.env.TETHER_FUZZ_SEED, 10) : Date.now() % 2 ** 31;
if (!Number.isSafeInteger(seed)) throw new TypeError(`TETHER_FUZZ_SEED must be an integer, got ${process.env.TETHER_FUZZ_SEED}`);
console.log(`[fuzz] protocol/codec.fuzz.test.ts seed=${seed} (replay: TETHER_FUZZ_SEED=${seed} npx vitest run protocol/codec.fuzz.test.ts)`);

const params = (numRuns: number) => ({ seed, numRuns });

// ---- checking one frame --------------------------------------------------------------------

function preview(text: string): string {
  return text.length <= 300 ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, 300))}… (${text.length} chars)`;
}

/** A generated frame, printed shortened in fast-check's counterexamples (some are 100 kB). */
class Frame {
  constructor(readonly text: string) {}
  [fc.toStringMethod](): string {
    return preview(this.text);
  }
}
const framed = (text: fc.Arbitrary<string>) => text.map((t) => new Frame(t));

const isPositiveSafeInteger = (value: unknown) => Number.isSafeInteger(value) && (value as number) > 0;

/** Decodes `frame` and checks every property the server relies on; throws (fails the property) otherwise. */
function checkFrame(frame: string): ReturnType<typeof decodeClientFrame> {
  let decoded: ReturnType<typeof decodeClientFrame>;
  try {
    decoded = decodeClientFrame(frame);
  } catch (error) {
    throw new Error(`decodeClientFrame threw ${String(error)} on ${preview(frame)}`);
  }
  if (decoded.ok) {
    expect(Object.keys(decoded).sort()).toEqual(['message', 'ok']);
    let text: string;
    try {
      text = encode(decoded.message);
    } catch (error) {
      throw new Error(`encode threw ${String(error)} on an accepted frame ${preview(frame)}`);
    }
    expect(typeof text).toBe('string');
    const again = decodeClientFrame(text);
    // JSON.parse(text) and not decoded.message: JSON has no -0, so `-0` comes back as 0.
    expect(again).toEqual({ ok: true, message: JSON.parse(text) as unknown });
    if (again.ok) expect(encode(again.message)).toBe(text);
  } else {
    const extra = Object.keys(decoded).filter((key) => !['ok', 'error', 'id', 'seq'].includes(key));
    expect(extra).toEqual([]);
    expect(Object.keys(decoded.error).sort()).toEqual(['code', 'message']);
    expect(decoded.error.code).toBe('invalid_message');
    expect(typeof decoded.error.message).toBe('string');
    expect(decoded.error.message.length).toBeGreaterThan(0);
    if ('id' in decoded) expect(isPositiveSafeInteger(decoded.id)).toBe(true);
    if ('seq' in decoded) expect(isPositiveSafeInteger(decoded.seq)).toBe(true);
  }
  return decoded;
}

// ---- valid frames of every client message type ---------------------------------------------

/** One or more valid frames of each `ClientMessage` type (protocol/messages.ts). */
const VALID: Record<string, unknown>[] = [
  { type: 'handshake', v: 1 },
  { type: 'handshake', v: 1, token: 'a.b.c', clientId: 'fuzz-client-0001', firstSeq: 3 },
  { type: 'ping', t: 123 },
  { type: 'rpc', id: 1, method: 'hello', args: ['world'] },
  { type: 'rpc', id: 9007199254740991, method: 'billing.total:v2', args: [{ nested: [1, null] }, 'x', true] },
  { type: 'publish', seq: 1, channel: 'room:1', data: { text: 'hi', n: 1.5, list: [1, 2, { a: null }] } },
  { type: 'subscribe', channel: 'room:1' },
  { type: 'subscribe', channel: 'user@host/feed', since: { offset: 10, epoch: 'e1' } },
  { type: 'unsubscribe', channel: 'room:1' },
  { type: 'transact', seq: 2, doc: 'todo', reads: { a: 0, b: { seq: 1 } }, writes: { a: { done: true }, b: null } },
  { type: 'doc_open', doc: 'todo' },
  { type: 'doc_open', doc: 'todo', since: 4, epoch: 'e1' },
  { type: 'doc_close', doc: 'todo' },
  { type: 'skip', seq: 3, reason: 'message_too_big' },
  { type: 'skip', seq: 4, reason: 'message_too_big', bytes: 70000 },
  { type: 'history', id: 5, channel: 'room:1', since: { offset: 0, epoch: '' }, limit: 500 },
];
const TYPES = [...new Set(VALID.map((frame) => frame.type as string))];
const FIELDS = [...new Set(VALID.flatMap((frame) => Object.keys(frame)))];

// ---- building hostile JSON text ------------------------------------------------------------


function nestedArrays(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}
function nestedObjects(depth: number): string {
  return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

const SPECIAL_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', 'then', 'toJSON', ''];
const keyArb = fc.oneof(fc.constantFrom(...FIELDS, ...SPECIAL_KEYS), fc.string({ maxLength: 10 }));

const hugeString = fc
  .tuple(fc.constantFrom('x', 'é', '€', '🙂', '\u0000', '"', '\\', '\ud800'), fc.constantFrom(200, 201, 8193, 65_536, 300_000, 1_000_000))
  .map(([unit, length]) => unit.repeat(length));

const oddNumber = fc.oneof(
  fc.constantFrom(0, -0, -1, 1.5, -1.5, 0.1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, 1e21, 1e-7, 2 ** 31, 2 ** 32),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
  fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e999', '-1e999', '1e-999', '-0.0', '01', '1.', '.5', '+1', '0x10', '1_000', '9'.repeat(400)).map((text) => new Raw(text)),
);

const oddString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.constantFrom('', ' ', 'hello', 'room:1', 'a'.repeat(64), 'a'.repeat(65), 'k'.repeat(201), '*', 'room:*', 'has space', '\u0000', '\ud800', '\udc00x\ud800', '\u2028\u2029', '\ufeff', 'message_too_big', '1', 'null', 'handshake'),
  hugeString,
  // Raw lone surrogates and control characters inside string literals (JSON.stringify would escape them).
  fc.constantFrom('"\ud800"', '"\udfff\ud800"', '"\u0000"', '"\n"', '"\\ud800"', '"\\u0000"', '"\\x41"', '"\\uZZZZ"', "'single'").map((text) => new Raw(text)),
);

const deepValue = fc
  .tuple(fc.constantFrom(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 2 * MAX_JSON_DEPTH, 1000, 5000, 30_000), fc.boolean())
  .map(([depth, arrays]) => new Raw(arrays ? nestedArrays(depth) : nestedObjects(depth)));

/** An object whose own keys shadow Object.prototype: String(it) throws, `it.toString()` is not a function. */
const trickyObject = fc.constantFrom<unknown>(
  { toString: 1 },
  { toString: null, valueOf: null },
  { valueOf: {} },
  { toJSON: 'x' },
  { then: 1 },
  { constructor: 'x' },
  new Raw('{"__proto__":{"type":"ping","t":1}}'),
  new Raw('{"__proto__":null}'),
);

const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: oddNumber, weight: 3 },
  { arbitrary: oddString, weight: 3 },
  { arbitrary: fc.constantFrom<unknown>(null, true, false, [], {}, [null], { seq: 1 }, { offset: 0, epoch: '' }), weight: 2 },
  { arbitrary: trickyObject, weight: 1 },
  { arbitrary: deepValue, weight: 1 },
  { arbitrary: fc.array(fc.oneof(oddNumber, fc.string(), fc.constant(null)), { maxLength: 5 }), weight: 1 },
  { arbitrary: fc.dictionary(keyArb, fc.oneof(oddNumber, fc.string(), fc.constant(null)), { maxKeys: 4 }), weight: 1 },
);

// ---- mutations of valid frames -------------------------------------------------------------

type Mutation =
  | { kind: 'drop'; at: number; key: number }
  | { kind: 'set'; at: number; key: string; value: unknown }
  | { kind: 'replace'; at: number; key: number; value: unknown }
  | { kind: 'replaceContainer'; at: number; value: unknown };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('drop' as const), at: fc.nat(), key: fc.nat() }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), key: keyArb, value: oddValue }),
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), key: fc.nat(), value: oddValue }),
  fc.record({ kind: fc.constant('replaceContainer' as const), at: fc.nat(), value: oddValue }),
);

/** Every object and array in a tree (not inside Raw), with how to replace it in its parent. */
function containers(root: unknown): { node: Record<string, unknown> | unknown[]; replace: (value: unknown) => void }[] {
  const found: { node: Record<string, unknown> | unknown[]; replace: (value: unknown) => void }[] = [];
  const visit = (node: unknown, replace: (value: unknown) => void) => {
    if (typeof node !== 'object' || node === null || node instanceof Raw) return;
    const container = node as Record<string, unknown> | unknown[];
    found.push({ node: container, replace });
    for (const key of Object.keys(container)) {
      visit((container as Record<string, unknown>)[key], (value) => setOwn(container as Record<string, unknown>, key, value));
    }
  };
  visit(root, () => {});
  return found;
}

/** Deep copy (keeping Raw and own `__proto__` keys): generated values are shared between runs and must not be mutated. */
function copy(value: unknown): unknown {
  if (value instanceof Raw || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(copy);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) setOwn(out, key, copy((value as Record<string, unknown>)[key]));
  return out;
}

function mutate(base: Record<string, unknown>, generated: Mutation[]): unknown {
  let root: unknown = copy(base);
  for (const original of generated) {
    const mutation = 'value' in original ? { ...original, value: copy(original.value) } : original;
    const all = containers(root);
    if (all.length === 0) {
      root = mutation.kind === 'drop' ? {} : 'value' in mutation ? mutation.value : root;
      continue;
    }
    const target = all[mutation.at % all.length]!;
    const node = target.node as Record<string, unknown>;
    const keys = Object.keys(node);
    switch (mutation.kind) {
      case 'drop':
        if (keys.length > 0) {
          if (Array.isArray(node)) node.splice(mutation.key % keys.length, 1);
          else delete node[keys[mutation.key % keys.length]!];
        }
        break;
      case 'set':
        if (Array.isArray(node)) node.push(mutation.value);
        else setOwn(node, mutation.key, mutation.value);
        break;
      case 'replace':
        if (keys.length > 0) setOwn(node, keys[mutation.key % keys.length]!, mutation.value);
        break;
      case 'replaceContainer':
        if (target.node === root) root = mutation.value;
        else target.replace(mutation.value);
        break;
    }
  }
  return root;
}

const mutatedFrame = fc
  .tuple(fc.constantFrom(...VALID), fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
  .map(([base, mutations]) => serialize(mutate(base, mutations)));

/** Text-level damage: truncation, stray characters, invalid UTF-8 decoded the way the server decodes frames. */
type TextEdit = { kind: 'truncate' | 'insert' | 'delete' | 'bytes' | 'duplicateKey' | 'wrap'; at: number; text: string; bytes: readonly number[] };
const textEditArb: fc.Arbitrary<TextEdit> = fc.record({
  kind: fc.constantFrom('truncate', 'insert', 'delete', 'bytes', 'duplicateKey', 'wrap'),
  at: fc.nat(),
  text: fc.oneof(
    fc.constantFrom('\u0000', '\ud800', '\udc00', '"', '\\', '{', '}', '[', ']', ',', ':', '\ufeff', ' ', '\n', 'NaN', '"type":"ping"', '"type":{"toString":1}', '"__proto__":{}', '1e999'),
    fc.string({ unit: 'binary', maxLength: 4 }),
  ),
  bytes: fc.oneof(
    fc.constantFrom<readonly number[]>([0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe0, 0xa4], [0x80], [0xef, 0xbb, 0xbf], [0x00]),
    fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 }),
  ),
});

function editText(frame: string, edit: TextEdit): string {
  const at = frame.length === 0 ? 0 : edit.at % (frame.length + 1);
  switch (edit.kind) {
    case 'truncate':
      return frame.slice(0, at);
    case 'insert':
      return frame.slice(0, at) + edit.text + frame.slice(at);
    case 'delete':
      return frame.slice(0, at) + frame.slice(at + 1 + (edit.text.length % 3));
    case 'bytes': {
      const buffer = Buffer.from(frame, 'utf8');
      const cut = buffer.length === 0 ? 0 : edit.at % (buffer.length + 1);
      return Buffer.concat([buffer.subarray(0, cut), Buffer.from(edit.bytes), buffer.subarray(cut)]).toString('utf8');
    }
    case 'duplicateKey':
      return frame.endsWith('}') ? `${frame.slice(0, -1)},${edit.text.includes(':') ? edit.text : '"type":"ping"'}}` : frame + edit.text;
    case 'wrap':
      return [`[${frame}]`, ` ${frame} `, `\ufeff${frame}`, `${frame}${frame}`, `{"frame":${frame}}`][edit.at % 5]!;
  }
}

const damagedFrame = fc
  .tuple(fc.oneof(fc.constantFrom(...VALID).map((frame) => JSON.stringify(frame)), mutatedFrame), fc.array(textEditArb, { minLength: 1, maxLength: 3 }))
  .map(([frame, edits]) => edits.reduce(editText, frame));

// ---- properties ----------------------------------------------------------------------------

describe('decodeClientFrame under fuzzing', () => {
  it('every hand-written base frame is valid (the mutations start from real messages)', () => {
    for (const frame of VALID) expect(checkFrame(JSON.stringify(frame))).toEqual({ ok: true, message: frame });
    expect(TYPES.sort()).toEqual(['doc_close', 'doc_open', 'handshake', 'history', 'ping', 'publish', 'rpc', 'skip', 'subscribe', 'transact', 'unsubscribe']);
  });

  it('never throws on arbitrary text', () => {
    const jsonish = fc.string({ unit: fc.constantFrom(...'{}[]":,0123456789-+.eE tnulrfa\\u_'.split('')), maxLength: 200 });
    fc.assert(
      fc.property(framed(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), jsonish, fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('utf8')))), (frame) => {
        checkFrame(frame.text);
      }),
      params(1000),
    );
  }, 30_000);

  it('never throws on arbitrary JSON values', () => {
    fc.assert(
      fc.property(framed(fc.oneof(fc.jsonValue(), fc.jsonValue({ maxDepth: 6 })).map((value) => JSON.stringify(value))), (frame) => {
        checkFrame(frame.text);
      }),
      params(1000),
    );
  }, 30_000);

  it('never throws on objects of a known type with arbitrary fields', () => {
    const frame = fc
      .tuple(fc.oneof(fc.constantFrom<unknown>(...TYPES), oddValue), fc.array(fc.tuple(keyArb, oddValue), { maxLength: 6 }))
      .map(([type, fields]) => {
        const object: Record<string, unknown> = {};
        setOwn(object, 'type', type);
        for (const [key, value] of fields) setOwn(object, key, value);
        return serialize(object);
      });
    fc.assert(
      fc.property(framed(frame), (generated) => {
        checkFrame(generated.text);
      }),
      params(1000),
    );
  }, 30_000);

  it('never throws on mutated valid frames of every type (dropped fields, changed types, huge strings, odd numbers, extra fields, deep nesting)', () => {
    fc.assert(
      fc.property(framed(mutatedFrame), (generated) => {
        checkFrame(generated.text);
      }),
      params(2000),
    );
  }, 30_000);

  it('never throws on damaged text of frames (truncated, invalid UTF-8, lone surrogates, duplicate keys)', () => {
    fc.assert(
      fc.property(framed(damagedFrame), (generated) => {
        checkFrame(generated.text);
      }),
      params(2000),
    );
  }, 30_000);

  it('accepts valid frames carrying arbitrary JSON payloads, and they round-trip', () => {
    // Valid keys only: the reserved ones (`constructor`…) are refused by design (codec.test.ts).
    const key = fc.string({ minLength: 1, maxLength: 20 }).filter((k) => !RESERVED_DOC_KEYS.includes(k));
    const payload = fc.jsonValue({ maxDepth: 5 });
    const frame = fc.oneof(
      fc.record({ type: fc.constant('publish'), seq: fc.integer({ min: 1 }), channel: fc.constantFrom('room:1', 'a', 'x_y.z@w/v-u'), data: payload }),
      fc.record({ type: fc.constant('rpc'), id: fc.integer({ min: 1 }), method: fc.constantFrom('hello', 'a.b:c-d'), args: fc.array(payload, { maxLength: 4 }) }),
      fc.record({
        type: fc.constant('transact'),
        seq: fc.integer({ min: 1 }),
        doc: fc.constant('todo'),
        reads: fc.dictionary(key, fc.oneof(fc.nat(), fc.record({ seq: fc.integer({ min: 1 }) })), { maxKeys: 3 }),
        writes: fc.dictionary(key, payload, { maxKeys: 3 }),
      }),
      fc.record({ type: fc.constant('ping'), t: fc.double({ noNaN: true, noDefaultInfinity: true }) }),
    );
    fc.assert(
      fc.property(frame, (message) => {
        expect(checkFrame(JSON.stringify(message)).ok).toBe(true);
      }),
      params(500),
    );
  }, 30_000);
});

describe('hostile frames found by the fuzzer, checked on every run', () => {
  // Each refused frame must be refused without throwing: a throw inside the server's async
  // frame handler is an unhandled rejection, which ends a Node process.
  it.each([
    ['type is an object whose toString is not callable', '{"type":{"toString":1}}'],
    ['type has neither callable toString nor valueOf', '{"type":{"toString":null,"valueOf":null}}'],
    ['type shadows valueOf only', '{"type":{"valueOf":{}},"seq":1}'],
    ['a write-looking frame whose type is an object', '{"type":{"toString":1},"seq":1,"channel":"c","data":1}'],
    ['type nested 5,000 arrays deep', `{"type":${nestedArrays(5000)}}`],
    ['type nested 30,000 arrays deep (fits in one 64 KiB frame)', `{"type":${nestedArrays(30_000)}}`],
    ['type nested 100,000 arrays deep', `{"type":${nestedArrays(100_000)}}`],
    ['id is an object whose toString is not callable', '{"type":"rpc","id":{"toString":1},"method":"hello","args":[]}'],
    ['__proto__ carries the type', '{"__proto__":{"type":"ping","t":1}}'],
    ['a lone surrogate as the type', '{"type":"\ud800"}'],
    ['NaN and Infinity literals', '{"type":"ping","t":NaN}'],
  ])('%s', (_name, frame) => {
    expect(checkFrame(frame).ok).toBe(false);
  });

  // Accepted frames must survive encode → decode: a value JSON cannot carry must be refused, not
  // accepted and then sent on as something else (Infinity is encoded as null).
  it.each([
    ['ping t overflowing to Infinity', '{"type":"ping","t":1e999}'],
    ['ping t overflowing to -Infinity', '{"type":"ping","t":-1e999}'],
  ])('%s', (_name, frame) => {
    checkFrame(frame);
  });
});

describe('deep nesting is refused at decode', () => {
  const positions: [string, (nested: string) => string][] = [
    ['the whole frame', (nested) => nested],
    ['publish data', (nested) => `{"type":"publish","seq":1,"channel":"c","data":${nested}}`],
    ['rpc args', (nested) => `{"type":"rpc","id":1,"method":"hello","args":[${nested}]}`],
    ['transact writes', (nested) => `{"type":"transact","seq":1,"doc":"d","reads":{},"writes":{"k":${nested}}}`],
    ['an unknown field', (nested) => `{"type":"ping","t":1,"x":${nested}}`],
    ['an unknown type', (nested) => `{"type":"teleport","x":${nested}}`],
  ];
  const depths = [2 * MAX_JSON_DEPTH, 1000, 5000, 100_000];

  it.each(positions)(`refuses arrays and objects nested ${depths.join(', ')} levels deep in %s`, (_where, wrap) => {
    for (const depth of depths) {
      for (const nested of [nestedArrays(depth), nestedObjects(depth)]) {
        const decoded = checkFrame(wrap(nested));
        expect(decoded.ok, `depth ${depth}`).toBe(false);
        if (!decoded.ok) expect(decoded.error.code).toBe('invalid_message');
      }
    }
  });

  it(`accepts a frame nested exactly MAX_JSON_DEPTH (${MAX_JSON_DEPTH}) levels deep, refuses one level more`, () => {
    // The frame object is level 1, so its data may nest MAX_JSON_DEPTH - 1 levels.
    const frame = (depth: number) => `{"type":"publish","seq":1,"channel":"c","data":${nestedArrays(depth - 1)}}`;
    expect(checkFrame(frame(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(checkFrame(frame(MAX_JSON_DEPTH + 1))).toMatchObject({ ok: false, error: { code: 'invalid_message' }, seq: 1 });
    const rpc = (depth: number) => `{"type":"rpc","id":7,"method":"hello","args":[${nestedObjects(depth - 2)}]}`;
    expect(checkFrame(rpc(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(checkFrame(rpc(MAX_JSON_DEPTH + 1))).toMatchObject({ ok: false, error: { code: 'invalid_message' }, id: 7 });
  });

  it('echoes the seq of a deeply nested write, so the refusal takes its place in the sequence', () => {
    expect(checkFrame(`{"type":"publish","seq":42,"channel":"c","data":${nestedArrays(100_000)}}`)).toMatchObject({ ok: false, seq: 42 });
  });
});
