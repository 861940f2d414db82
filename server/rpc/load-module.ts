import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import type { Procedure } from './procedure.js';

/**
 * Loads an operator's procedures module: every exported function is a procedure named after
 * its export; a default export that is an object contributes its function members too.
 */
export async function loadProcedures(path: string): Promise<Record<string, Procedure>> {
  const mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  const procedures: Record<string, Procedure> = {};
  const collect = (source: Record<string, unknown>) => {
    for (const [name, value] of Object.entries(source)) {
      if (name !== 'default' && typeof value === 'function') procedures[name] = value as Procedure;
    }
  };
  if (typeof mod.default === 'object' && mod.default !== null) collect(mod.default as Record<string, unknown>);
  collect(mod);
  if (Object.keys(procedures).length === 0) throw new TypeError(`${path} exports no procedures (functions)`);
  return procedures;
}
