import * as Comlink from 'comlink';

/** Releases a Comlink proxy into a tab (a no-op for a plain function). */
export function release(proxy: unknown): void {
  (proxy as { [Comlink.releaseProxy]?: () => void })[Comlink.releaseProxy]?.();
}
