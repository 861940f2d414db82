import { TetherError } from '../../protocol/errors.js';
import type { Procedure } from './procedure.js';

/** The seed's procedure: `hello` with `["world"]` answers `Hello, world!`. */
export const hello: Procedure = (args) => {
  const [name] = args;
  if (args.length !== 1 || typeof name !== 'string') {
    throw new TetherError('invalid_argument', 'hello expects one string argument, e.g. ["world"]');
  }
  return `Hello, ${name}!`;
};

export const builtinProcedures: Record<string, Procedure> = { hello };
