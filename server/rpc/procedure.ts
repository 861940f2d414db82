import { isErrorCode } from '../../protocol/constants.js';
import { TetherError, type ErrorShape } from '../../protocol/errors.js';

/** What a procedure knows about its caller. */
export interface CallContext {
  /** `sub` of the caller's verified token; null for an anonymous development client. */
  user: string | null;
  /** The caller's connection id. */
  session: string;
  /** Aborted when the caller disconnects. */
  signal: AbortSignal;
}

/**
 * A procedure: takes the call's arguments, returns a JSON-serialisable value (or a promise).
 * Throw a `TetherError` — or any error with a `code` from the protocol's error codes, such as
 * `invalid_argument`, `forbidden` or `not_found` — to send that code and message to the
 * caller. Anything else is reported as `internal`, its details kept in the server log.
 */
export type Procedure = (args: unknown[], context: CallContext) => unknown;

/** Turns whatever a procedure threw into what the caller may see. */
export function toCallerError(thrown: unknown, method: string): { error: ErrorShape; expected: boolean } {
  if (thrown instanceof TetherError) return { error: thrown.toJSON(), expected: true };
  if (typeof thrown === 'object' && thrown !== null && 'code' in thrown && isErrorCode(thrown.code)) {
    const message = 'message' in thrown && typeof thrown.message === 'string' ? thrown.message : thrown.code;
    return { error: { code: thrown.code, message }, expected: true };
  }
  return { error: { code: 'internal', message: `procedure ${method} failed; see the server log` }, expected: false };
}
