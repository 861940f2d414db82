import { describe, expect, it } from 'vitest';
import { decodeClientFrame, decodeServerFrame, encode } from './codec.js';
import type { ClientMessage, ServerMessage } from './messages.js';

describe('client frames', () => {
  const valid: ClientMessage[] = [
    { type: 'handshake', v: 1 },
    { type: 'handshake', v: 1, token: 'a.b.c' },
    { type: 'ping', t: 123 },
    { type: 'rpc', id: 1, method: 'hello', args: ['world'] },
    { type: 'rpc', id: 9007199254740991, method: 'billing.total:v2', args: [{ nested: [1, null] }] },
  ];
  it.each(valid)('round-trips %j', (message) => {
    expect(decodeClientFrame(encode(message))).toEqual({ ok: true, message });
  });

  it.each([
    ['not json', 'frame is not valid JSON'],
    ['[]', 'Invalid type'],
    ['null', 'Invalid type'],
    ['{"type":"teleport"}', 'type'],
    ['{"type":"ping"}', 't: Invalid key'],
    ['{"type":"rpc","id":0,"method":"hello","args":[]}', 'id:'],
    ['{"type":"rpc","id":1.5,"method":"hello","args":[]}', 'id:'],
    ['{"type":"rpc","id":1,"method":"","args":[]}', 'method:'],
    ['{"type":"rpc","id":1,"method":"has space","args":[]}', 'method:'],
    ['{"type":"rpc","id":1,"method":"hello","args":"world"}', 'args:'],
    ['{"type":"rpc","id":1,"method":"hello","args":[],"extra":1}', 'extra'],
    ['{"type":"handshake","v":"1"}', 'v:'],
  ])('refuses %s with invalid_message', (frame, hint) => {
    const decoded = decodeClientFrame(frame);
    expect(decoded.ok).toBe(false);
    if (!decoded.ok) {
      expect(decoded.error.code).toBe('invalid_message');
      expect(decoded.error.message).toContain(hint);
    }
  });

  it('echoes a usable request id so the sender can match the error', () => {
    expect(decodeClientFrame('{"type":"rpc","id":7,"method":"hello"}')).toMatchObject({ ok: false, id: 7 });
    expect(decodeClientFrame('{"type":"rpc","id":-3,"method":"hello"}')).not.toHaveProperty('id');
    expect(decodeClientFrame('{"type":"rpc","id":"7","method":"hello"}')).not.toHaveProperty('id');
  });

  it('does not accept server messages from a client', () => {
    expect(decodeClientFrame(encode({ type: 'pong', t: 1 })).ok).toBe(false);
  });
});

describe('server frames', () => {
  const valid: ServerMessage[] = [
    { type: 'welcome', v: 1, session: 's', user: null, heartbeatMs: 2000, lastSeq: 0, maxMessageBytes: 65536 },
    { type: 'welcome', v: 1, session: 's', user: 'u1', heartbeatMs: 2000, lastSeq: 3, maxMessageBytes: 65536 },
    { type: 'pong', t: 5 },
    { type: 'result', id: 3, value: { a: [1] } },
    { type: 'error', id: 3, code: 'not_found', message: 'unknown procedure: x' },
    { type: 'error', code: 'unauthorized', message: 'a token is required' },
  ];
  it.each(valid)('round-trips %j', (message) => {
    expect(decodeServerFrame(encode(message))).toEqual({ ok: true, message });
  });

  it('refuses an unknown error code', () => {
    expect(decodeServerFrame('{"type":"error","code":"oops","message":"x"}').ok).toBe(false);
  });
});

describe('document keys every store can hold', () => {
  // A lone surrogate becomes U+FFFD in PostgreSQL (two keys collide in one batch and fail it for
  // everyone); U+0000 cannot be stored at all. Refused at the edge, with the write's seq.
  it.each([['a lone high surrogate', 'a\\ud800'], ['a lone low surrogate', '\\udc00b'], ['U+0000', 'a\\u0000b']])('refuses a key with %s', (_, escaped) => {
    for (const place of ['reads', 'writes']) {
      const body = place === 'reads' ? `"reads":{"${escaped}":0},"writes":{}` : `"reads":{},"writes":{"${escaped}":1}`;
      const decoded = decodeClientFrame(`{"type":"transact","seq":4,"doc":"d",${body}}`);
      expect(decoded).toMatchObject({ ok: false, seq: 4, error: { code: 'invalid_message' } });
      expect(decoded.ok ? '' : decoded.error.message).toContain('well-formed Unicode without U+0000');
    }
  });

  it('takes keys with surrogate pairs (emoji) and every other character', () => {
    expect(decodeClientFrame('{"type":"transact","seq":4,"doc":"d","reads":{},"writes":{"\\ud83d\\ude00 k\\u00e9":1}}')).toMatchObject({ ok: true });
  });
});

describe('reserved document keys', () => {
  it.each(['__proto__', 'constructor', 'prototype'])('refuses a transaction naming %s (a record would drop it: acknowledged, never stored), with its seq', (key) => {
    for (const field of ['reads', 'writes']) {
      const frame = `{"type":"transact","seq":3,"doc":"d","reads":${field === 'reads' ? `{"${key}":1}` : '{}'},"writes":${field === 'writes' ? `{"${key}":{"x":1}}` : '{"a":1}'}}`;
      expect(decodeClientFrame(frame)).toEqual({ ok: false, seq: 3, error: { code: 'invalid_message', message: `${key} cannot be a document key (reserved: __proto__, constructor, prototype)` } });
    }
  });
  it('keeps such keys inside published data, which is passed on as JSON text', () => {
    const decoded = decodeClientFrame('{"type":"publish","seq":1,"channel":"c","data":{"__proto__":{"x":1},"constructor":2}}');
    expect(decoded.ok && JSON.stringify(decoded.message)).toBe('{"type":"publish","seq":1,"channel":"c","data":{"__proto__":{"x":1},"constructor":2}}');
  });
});

describe('presence frames', () => {
  it.each([
    { type: 'presence', channel: 'room:1', tabs: 2 },
    { type: 'presence', channel: 'room:1', tabs: 0 },
    { type: 'presence', channel: 'room:1', tabs: 1, state: { typing: true } },
    { type: 'presence', channel: 'room:1', tabs: 1, state: null },
    { type: 'presence', channel: 'room:1', tabs: 1, state: 'x'.repeat(1022) },
  ] as ClientMessage[])('takes %j', (message) => {
    expect(decodeClientFrame(encode(message))).toEqual({ ok: true, message });
  });

  it('refuses a state over 1 KB of JSON as message_too_big, naming the channel', () => {
    const frame = JSON.stringify({ type: 'presence', channel: 'room:1', tabs: 1, state: 'x'.repeat(1023) });
    expect(decodeClientFrame(frame)).toEqual({ ok: false, presence: 'room:1', error: { code: 'message_too_big', message: 'presence state is 1025 bytes of JSON (UTF-8); at most 1024' } });
    // Bytes, not characters: 341 × "€" is 343 characters of JSON but 1,025 bytes; one less fits.
    const euros = (n: number) => JSON.stringify({ type: 'presence', channel: 'room:1', tabs: 1, state: '€'.repeat(n) });
    expect(decodeClientFrame(euros(341))).toMatchObject({ ok: false, error: { code: 'message_too_big', message: 'presence state is 1025 bytes of JSON (UTF-8); at most 1024' } });
    expect(decodeClientFrame(euros(340))).toMatchObject({ ok: true });
  });

  it('refuses other malformed presence frames as invalid_message, naming the channel when it is a channel name', () => {
    expect(decodeClientFrame('{"type":"presence","channel":"room:1","tabs":-1}')).toMatchObject({ ok: false, presence: 'room:1', error: { code: 'invalid_message' } });
    expect(decodeClientFrame('{"type":"presence","channel":"room:1","tabs":1001}')).toMatchObject({ ok: false, presence: 'room:1', error: { code: 'invalid_message' } });
    expect(decodeClientFrame('{"type":"presence","channel":"room:1","tabs":1,"extra":1}')).toMatchObject({ ok: false, presence: 'room:1' });
    expect(decodeClientFrame('{"type":"presence","channel":"no*stars","tabs":1}')).not.toHaveProperty('presence');
    expect(decodeClientFrame('{"type":"presence","channel":7,"tabs":1}')).not.toHaveProperty('presence');
    // A state that is too deep is refused for that (invalid_message), whatever its size.
    let deep: unknown = 1;
    for (let i = 0; i < 70; i++) deep = [deep];
    expect(decodeClientFrame(JSON.stringify({ type: 'presence', channel: 'c', tabs: 1, state: deep }))).toMatchObject({ ok: false, presence: 'c', error: { code: 'invalid_message' } });
  });
});
