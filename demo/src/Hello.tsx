import { useState, type FormEvent } from 'react';
import type { TetherClient } from '../../sdk/index.js';
import { Icon } from './ui.js';

/** RPC: the seed's example, `hello` with `["world"]`, or any procedure — a small card for developers. */
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
    <section className="panel dev-panel" aria-labelledby="rpc-title">
      <div className="panel-head">
        <h2 id="rpc-title">
          <Icon name="code" /> RPC <span className="tag">developer</span>
        </h2>
      </div>
      <form id="rpc-form" className="rpc-form" onSubmit={call}>
        <label className="field-label">
          <span>method</span>
          <input id="rpc-method" className="field field-mono" spellCheck={false} value={method} onChange={(e) => setMethod(e.target.value)} />
        </label>
        <label className="field-label">
          <span>args (JSON array)</span>
          <input id="rpc-args" className="field field-mono" spellCheck={false} value={args} onChange={(e) => setArgs(e.target.value)} />
        </label>
        <button type="submit" className="btn btn-secondary">
          Call
        </button>
      </form>
      <pre id="rpc-result" className={`rpc-result${result && !result.ok ? ' error' : ''}`} aria-live="polite">
        {result?.text ?? ''}
      </pre>
    </section>
  );
}
