/**
 * What a client may do, from its token's grant claims. Denied unless granted:
 *   channels   subscribe, read history, publish, open and change documents (its meaning since v1)
 *   subscribe  subscribe and read history
 *   publish    publish
 *   docs       open and change documents
 *   docs_read  open documents
 *   rpc        call procedures (by name)
 * Each holds patterns where `*` matches any run of characters (`room:*` covers `room:a:b`).
 * A token with none of the channel/document claims gets the operator's default ones; a token
 * without `rpc` gets the default `rpc`.
 */
import type { Grants } from './config.js';
import { globMatcher } from './patterns.js';

export interface Permissions {
  subscribe(channel: string): boolean;
  publish(channel: string): boolean;
  readDoc(doc: string): boolean;
  writeDoc(doc: string): boolean;
  call(method: string): boolean;
}

const always = () => true;
export const grantAll: Permissions = { subscribe: always, publish: always, readDoc: always, writeDoc: always, call: always };

type Matcher = (name: string) => boolean;

function matcher(...lists: (string[] | undefined)[]): Matcher {
  const matchers = lists.flatMap((list) => list ?? []).map(globMatcher);
  if (matchers.length === 0) return () => false;
  return (name) => matchers.some((matches) => matches(name));
}

const DATA_CLAIMS = ['channels', 'subscribe', 'publish', 'docs', 'docs_read'] as const;

export function permissionsOf(token: Grants, defaults: Grants): Permissions {
  const data = DATA_CLAIMS.some((claim) => token[claim] !== undefined) ? token : defaults;
  const rpc = token.rpc ?? defaults.rpc;
  return {
    subscribe: matcher(data.channels, data.subscribe),
    publish: matcher(data.channels, data.publish),
    readDoc: matcher(data.channels, data.docs, data.docs_read),
    writeDoc: matcher(data.channels, data.docs),
    call: matcher(rpc),
  };
}
