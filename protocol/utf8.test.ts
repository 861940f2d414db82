import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { jsonBytes, utf8Length } from './utf8.js';

describe('utf8Length', () => {
  it('is what the encoder produces, for any well-formed string (fast-check; TETHER_SEED replays)', () => {
    const seed = Number(process.env.TETHER_SEED ?? Date.now() % 2 ** 31);
    console.log(`utf8Length: seed ${seed}`);
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (text) => utf8Length(text) === Buffer.byteLength(text, 'utf8')),
      { seed, numRuns: 2000 },
    );
  });

  it('counts each width exactly', () => {
    expect(utf8Length('a')).toBe(1);
    expect(utf8Length('é')).toBe(2);
    expect(utf8Length('€')).toBe(3);
    expect(utf8Length('🧑‍💻')).toBe(11); // two pairs and a joiner
    expect(utf8Length('\u2028')).toBe(3);
  });

  it('jsonBytes sizes the JSON text, and says undefined for what JSON cannot hold', () => {
    expect(jsonBytes({ name: 'é' })).toBe('{"name":"é"}'.length + 1);
    expect(jsonBytes(null)).toBe(4);
    expect(jsonBytes(undefined)).toBeUndefined();
  });
});
