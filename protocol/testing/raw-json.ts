/**
 * Building frames JSON.stringify cannot produce, for fuzz tests: raw text spliced into a frame
 * (NaN, 1e999, deep nesting, lone surrogates) and own `__proto__` properties.
 */

/** Text spliced verbatim into a frame. */
export class Raw {
  constructor(readonly text: string) {}
}

/** JSON.stringify, except that `Raw` values are spliced as-is. */
export function serialize(value: unknown): string {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return `[${value.map(serialize).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value).map((key) => `${JSON.stringify(key)}:${serialize((value as Record<string, unknown>)[key])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Sets an own property even for `__proto__` (a plain assignment would replace the prototype). */
export function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}
