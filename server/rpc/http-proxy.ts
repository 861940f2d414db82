/**
 * Forwards procedures to the app's existing backend (Django, Rails, …) over HTTP.
 *
 * Request:  POST <url>  {"method": "...", "args": [...], "user": "<sub>" | null}
 *           Authorization: Bearer <TETHER_RPC_PROXY_SECRET> (its own secret: the backend's key to
 *           the HTTP API is never sent out), X-Tether-User: <sub, percent-encoded as UTF-8>
 *           (absent when anonymous; encoded so that spaces and non-Latin-1 characters survive
 *           exactly: " admin" arrives as "%20admin", never as "admin").
 *           Redirects are not followed: an answer 3xx is an error.
 * Response: 200 {"result": <any JSON>}
 *           4xx/5xx {"error": {"code": "...", "message": "..."}} — or any body; the status decides the code.
 */
import { isErrorCode, type ErrorCode } from '../../protocol/constants.js';
import { TetherError } from '../../protocol/errors.js';
import type { Procedure } from './procedure.js';
import { globMatcher } from '../patterns.js';

export interface HttpProxyOptions {
  url: string;
  /** Procedure names or patterns (`billing.*`, `*`) that go to the backend. */
  methods: string[];
  /** Sent as `Authorization: Bearer …`. */
  secret: string | undefined;
  timeoutMs: number;
}

function codeForStatus(status: number): ErrorCode {
  if (status === 400 || status === 422) return 'invalid_argument';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 502 || status === 503 || status === 504) return 'unavailable';
  return 'internal';
}

/** Returns a resolver: the proxy procedure for a method it covers, undefined otherwise. */
export function createHttpProxy(options: HttpProxyOptions): (method: string) => Procedure | undefined {
  const patterns = options.methods.map(globMatcher);
  return (method) => {
    if (!patterns.some((matches) => matches(method))) return undefined;
    return async (args, { user, signal }) => {
      const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
      if (options.secret !== undefined) headers.authorization = `Bearer ${options.secret}`;
      if (user !== null) headers['x-tether-user'] = encodeURIComponent(user);
      let response: Response;
      try {
        response = await fetch(options.url, {
          method: 'POST',
          headers,
          body: JSON.stringify({ method, args, user }),
          signal: AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs)]),
          // A redirect would resend the secret and the user's identity wherever it points.
          redirect: 'manual',
        });
      } catch (cause) {
        const timedOut = cause instanceof DOMException && cause.name === 'TimeoutError';
        throw new TetherError(
          timedOut ? 'timeout' : 'unavailable',
          timedOut ? `the backend did not answer ${method} within ${options.timeoutMs} ms` : `the backend for ${method} could not be reached`,
        );
      }
      if (response.status >= 300 && response.status < 400) {
        throw new TetherError('unavailable', `the backend answered ${method} with a redirect (HTTP ${response.status}); redirects are not followed: fix TETHER_RPC_PROXY_URL`);
      }
      const body: unknown = await response.json().catch(() => undefined);
      const payload = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
      if (response.ok) {
        if (!('result' in payload)) throw new TetherError('internal', `the backend's answer to ${method} has no "result"`);
        return payload.result;
      }
      const error = typeof payload.error === 'object' && payload.error !== null ? (payload.error as Record<string, unknown>) : {};
      const code = isErrorCode(error.code) ? error.code : codeForStatus(response.status);
      const message = typeof error.message === 'string' ? error.message : `the backend answered ${method} with HTTP ${response.status}`;
      throw new TetherError(code, message);
    };
  };
}
