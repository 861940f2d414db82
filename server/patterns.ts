/** `billing.*`, `room:*`: `*` matches any run of characters, everything else is literal. */
export function globToRegExp(pattern: string): RegExp {
  const parts = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, '\\$&'));
  return new RegExp(`^${parts.join('.*')}$`);
}
