/** Sizes of text as it goes on the wire (UTF-8), without encoding it. */

/** UTF-8 length of a string: 1 byte below U+0080, 2 below U+0800, 3 up to U+FFFF, 4 for a surrogate pair (a lone surrogate counts 2: under the 3 of the U+FFFD it is sent as). */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) bytes += 1; // each half of a pair: 2 + 2
    else if (c >= 0x800) bytes += 2;
    else if (c >= 0x80) bytes += 1;
  }
  return bytes;
}

/** The UTF-8 size of `value` as JSON text; undefined for what JSON cannot hold (a function, a bare undefined). Throws as JSON.stringify does (a cycle, a BigInt). */
export function jsonBytes(value: unknown): number | undefined {
  const json = JSON.stringify(value);
  return json === undefined ? undefined : utf8Length(json);
}
