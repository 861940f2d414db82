/**
 * The procedures a server answers: local handlers first, then the HTTP proxy if one is set.
 */
import type { ErrorShape } from '../../protocol/errors.js';
import type { Logger } from '../log.js';
import { toCallerError, type CallContext, type Procedure } from './procedure.js';

export type Invocation = { ok: true; value: unknown } | { ok: false; error: ErrorShape };

export class ProcedureRegistry {
  private readonly local = new Map<string, Procedure>();

  constructor(
    private readonly log: Logger,
    private readonly fallback: (method: string) => Procedure | undefined = () => undefined,
  ) {}

  register(name: string, procedure: Procedure): void {
    if (typeof procedure !== 'function') throw new TypeError(`procedure ${name} must be a function`);
    this.local.set(name, procedure);
  }

  has(name: string): boolean {
    return this.local.has(name) || this.fallback(name) !== undefined;
  }

  async invoke(method: string, args: unknown[], context: CallContext): Promise<Invocation> {
    const procedure = this.local.get(method) ?? this.fallback(method);
    if (!procedure) return { ok: false, error: { code: 'not_found', message: `unknown procedure: ${method}` } };
    try {
      const value = await procedure(args, context);
      // JSON has no `undefined`: a procedure that returns nothing answers null.
      return { ok: true, value: value === undefined ? null : value };
    } catch (thrown) {
      const { error, expected } = toCallerError(thrown, method);
      if (!expected) this.log.error({ err: thrown, method, session: context.session }, 'procedure threw');
      return { ok: false, error };
    }
  }
}
