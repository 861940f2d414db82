import { useState, type FormEvent } from 'react';
import type { TetherClient } from '../../sdk/index.js';

/** RPC: the seed's example, `hello` with `["world"]`, or any procedure. */
export function Hello({ client }: { client: TetherClient }) {
  const [method, setMethod] = useState('hello');
  const [args, setArgs] = useState('["world"]');
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);

  function call(event: FormEvent) {
    event.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(args);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed)) return setResult({ ok: false, text: 'args must be a JSON array' });
    setResult({ ok: true, text: '…' });
    client.rpc.call(method, parsed).then(
      (value) => setResult({ ok: true, text: JSON.stringify(value) }),
      (error: { code?: string; message?: string }) => setResult({ ok: false, text: `${error.code ?? 'error'}: ${error.message ?? String(error)}` }),
    );
  }

  return (
    <section>
      <h2>RPC</h2>
      <form id="rpc-form" onSubmit={call}>
        <label>
          method <input id="rpc-method" value={method} onChange={(e) => setMethod(e.target.value)} />
        </label>
        <label>
          args (JSON array) <input id="rpc-args" value={args} onChange={(e) => setArgs(e.target.value)} />
        </label>
        <button type="submit">Call</button>
      </form>
      <pre id="rpc-result" className={result && !result.ok ? 'error' : ''} aria-live="polite">
        {result?.text ?? ''}
      </pre>
    </section>
  );
}
