/**
 * The `channels` claim of a token: patterns such as `room:*` or `news`. No claim (or
 * development mode) allows every channel.
 */
import { globToRegExp } from '../patterns.js';

export type ChannelPermission = (channel: string) => boolean;

export function channelPermission(patterns: readonly string[] | undefined): ChannelPermission {
  if (patterns === undefined) return () => true;
  const regexes = patterns.map(globToRegExp);
  return (channel) => regexes.some((r) => r.test(channel));
}
