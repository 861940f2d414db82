/**
 * The server-to-server JSON API for the app's backend (seed 000: "serves a JSON API, secured,
 * server-to-server only"). Every route needs `Authorization: Bearer $TETHER_API_KEY`; a key in
 * the query string is ignored on purpose (it would end up in access logs).
 *
 *   POST /api/publish  {"channel": "...", "data": ...}  → 200 {"channel", "offset"}
 *   GET  /api/history?channel=…&since=…&limit=…          → 200 {"channel", "epoch", "head", "reset", "events": [...]}
 *   GET  /api/docs/<name>                                 → 200 {"doc", "version", "keys": {"k": {"value", "version"}}}
 *   POST /api/docs/<name>/transact  {"reads"?: {"k": version}, "writes": {"k": value | null}}
 *                                                         → 200 {"doc", "version"} | 409 {"error", "current"}
 *                                                           | 413 (limit_exceeded: the document would pass TETHER_MAX_DOC_BYTES)
 *   POST /api/disconnect  {"user": "...", "revoke"?: true}  → 200 {"user", "closed"}: cuts the user's connections;
 *                                                           with revoke, tokens issued up to now are refused too
 *   GET  /api/presence?channel=…                          → 200 {"channel", "members": [...], "total"}: who is there now
 * Writes take an optional `Idempotency-Key` header, bound to the request: a retry with the same
 * key and body is answered with the first outcome; the same key with another body gets 422.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as v from 'valibot';
import { ChannelName, DocKey } from '../protocol/messages.js';
import { reservedKeyProblem, type ErrorCode } from '../protocol/constants.js';
import { jsonProblem } from '../protocol/codec.js';
import { BodyError, readLimitedBody } from './http-body.js';
import type { Logger } from './log.js';
import type { WriteQueue } from './pubsub/write-queue.js';
import type { EventStore } from './storage/event-store.js';
import type { PresenceSnapshot } from './presence/presence.js';

export interface HttpApiDeps {
  apiKey: string | undefined;
  store: EventStore;
  writes: WriteQueue;
  maxBodyBytes: number;
  log: Logger;
  /** Closes every connection of `user` (and refuses its tokens issued so far if `revoke`); returns how many. */
  disconnect(user: string, revoke: boolean): Promise<number>;
  /** The channel's presence now (every process's members). */
  presence(channel: string): Promise<PresenceSnapshot>;
}

const DisconnectBody = v.strictObject({
  user: v.pipe(v.string(), v.minLength(1), v.maxLength(200)),
  revoke: v.optional(v.boolean()),
});

const PublishBody = v.strictObject({ channel: ChannelName, data: v.unknown() });
const TransactBody = v.strictObject({
  reads: v.optional(v.record(DocKey, v.pipe(v.number(), v.integer(), v.minValue(0)))),
  writes: v.record(DocKey, v.unknown()),
});
const DOC_ROUTE = /^\/api\/docs\/([^/]+)(\/transact)?$/;
const IdempotencyKey = v.pipe(v.string(), v.minLength(1), v.maxLength(200));
const MAX_HISTORY_LIMIT = 1000;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  let raw: Buffer;
  try {
    raw = await readLimitedBody(req, limit);
  } catch (error) {
    if (error instanceof BodyError) throw new ApiError(error.status, error.code, error.message);
    throw error;
  }
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new ApiError(400, 'invalid_message', 'the body is not valid JSON');
  }
  const problem = jsonProblem(body);
  if (problem !== undefined) throw new ApiError(400, 'invalid_message', `the body is refused: ${problem}`);
  return body;
}

/** Whether the request carries `Authorization: Bearer <apiKey>` (also the check of GET /metrics). */
export function hasApiKey(req: IncomingMessage, apiKey: string): boolean {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer (.+)$/.exec(header);
  // Compare digests: equal length, so timingSafeEqual leaks neither content nor length.
  return match !== null && timingSafeEqual(digest(match[1]!), digest(apiKey));
}

function checkKey(req: IncomingMessage, apiKey: string | undefined): void {
  if (apiKey === undefined) throw new ApiError(401, 'unauthorized', 'the HTTP API is disabled: set TETHER_API_KEY on the server');
  if (!hasApiKey(req, apiKey)) throw new ApiError(401, 'unauthorized', 'missing or wrong API key (Authorization: Bearer <TETHER_API_KEY>)');
}

/** The optional `Idempotency-Key` header: a retried request with the same key is applied once. */
function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const header = req.headers['idempotency-key'];
  if (header === undefined) return undefined;
  const key = v.safeParse(IdempotencyKey, header);
  if (!key.success) throw new ApiError(400, 'invalid_message', 'Idempotency-Key must be 1–200 characters');
  return key.output;
}

function reusedKey(): ApiError {
  return new ApiError(422, 'invalid_argument', 'this Idempotency-Key was used for a different request (another channel, document or body); use a new key per request');
}

function issueText(issues: readonly v.BaseIssue<unknown>[]): string {
  const first = issues[0];
  const path = first?.path?.map((p) => String(p.key)).join('.');
  return path ? `${path}: ${first?.message}` : (first?.message ?? 'invalid body');
}

/** Handles /api/* except health; returns false for paths it does not own. */
export function createHttpApi(deps: HttpApiDeps) {
  async function publish(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = v.safeParse(PublishBody, await readBody(req, deps.maxBodyBytes));
    if (!parsed.success) throw new ApiError(400, 'invalid_message', issueText(parsed.issues));
    const idempotencyKey = idempotencyKeyOf(req);
    const { channel, data } = parsed.output;
    const json = JSON.stringify(data) ?? 'null';
    const outcome = await deps.writes.submit({
      kind: 'publish', channel, data: json, clientId: null, seq: null, user: null,
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
    });
    if (outcome.status === 'stored') return reply(res, 200, { channel, offset: outcome.event.offset });
    if (outcome.status === 'duplicate') return reply(res, 200, { channel, offset: outcome.offset }, { 'idempotent-replayed': 'true' });
    if (outcome.status === 'idempotency_mismatch') throw reusedKey();
    throw new ApiError(500, 'internal', `unexpected write outcome ${outcome.status}`);
  }

  async function disconnect(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = v.safeParse(DisconnectBody, await readBody(req, deps.maxBodyBytes));
    if (!parsed.success) throw new ApiError(400, 'invalid_message', issueText(parsed.issues));
    const { user, revoke = false } = parsed.output;
    reply(res, 200, { user, closed: await deps.disconnect(user, revoke), revoked: revoke });
  }

  async function history(url: URL, res: ServerResponse): Promise<void> {
    const channel = v.safeParse(ChannelName, url.searchParams.get('channel') ?? '');
    if (!channel.success) throw new ApiError(400, 'invalid_message', `channel: ${issueText(channel.issues)}`);
    const number = (name: string, fallback: number, max: number) => {
      const raw = url.searchParams.get(name);
      if (raw === null || raw === '') return fallback;
      const value = Number(raw);
      if (!Number.isSafeInteger(value) || value < 0 || value > max) {
        throw new ApiError(400, 'invalid_message', `${name} must be an integer between 0 and ${max}`);
      }
      return value;
    };
    const since = number('since', 0, Number.MAX_SAFE_INTEGER);
    const limit = number('limit', 100, MAX_HISTORY_LIMIT);
    const epoch = url.searchParams.get('epoch') ?? undefined;
    const page = await deps.store.history(channel.output, epoch === undefined ? { offset: since } : { offset: since, epoch }, limit);
    reply(res, 200, {
      channel: channel.output,
      epoch: page.epoch,
      head: page.head,
      reset: page.reset,
      events: page.events.map((e) => ({
        offset: e.offset,
        data: JSON.parse(e.data) as unknown,
        createdAt: new Date(e.createdAt).toISOString(),
        ...(e.publisher === null ? {} : { publisher: JSON.parse(e.publisher) as unknown }),
      })),
    });
  }

  async function presence(url: URL, res: ServerResponse): Promise<void> {
    const raw = url.searchParams.get('channel');
    if (raw === null || raw === '') throw new ApiError(400, 'invalid_message', 'channel: give the channel as ?channel=<name>');
    const channel = v.safeParse(ChannelName, raw);
    if (!channel.success) throw new ApiError(400, 'invalid_message', `channel: ${issueText(channel.issues)}`);
    const { members, total } = await deps.presence(channel.output);
    reply(res, 200, { channel: channel.output, members, total });
  }

  function docName(raw: string): string {
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      throw new ApiError(400, 'invalid_message', 'document: the name is not valid percent-encoding');
    }
    const name = v.safeParse(ChannelName, decoded);
    if (!name.success) throw new ApiError(400, 'invalid_message', `document: ${issueText(name.issues)}`);
    return name.output;
  }

  async function readDoc(raw: string, res: ServerResponse): Promise<void> {
    const state = await deps.store.document(docName(raw), undefined);
    const keys: Record<string, { value: unknown; version: number }> = {};
    for (const [key, s] of Object.entries(state.keys)) if ('value' in s) keys[key] = { value: JSON.parse(s.value) as unknown, version: s.version };
    reply(res, 200, { doc: state.doc, version: state.version, keys });
  }

  async function transactDoc(raw: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const doc = docName(raw);
    const body = await readBody(req, deps.maxBodyBytes);
    const fields = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
    const reserved = reservedKeyProblem(fields.reads, fields.writes);
    if (reserved !== undefined) throw new ApiError(400, 'invalid_message', reserved);
    const parsed = v.safeParse(TransactBody, body);
    if (!parsed.success) throw new ApiError(400, 'invalid_message', issueText(parsed.issues));
    const writes: Record<string, string | null> = {};
    for (const [key, value] of Object.entries(parsed.output.writes)) writes[key] = value === null ? null : (JSON.stringify(value) ?? null);
    const idempotencyKey = idempotencyKeyOf(req);
    const outcome = await deps.writes.submit({
      kind: 'transact', doc, reads: parsed.output.reads ?? {}, writes, clientId: null, seq: null, user: null,
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
    });
    if (outcome.status === 'committed') return reply(res, 200, { doc, version: outcome.change.version });
    if (outcome.status === 'duplicate') return reply(res, 200, { doc, version: outcome.offset }, { 'idempotent-replayed': 'true' });
    if (outcome.status === 'idempotency_mismatch') throw reusedKey();
    if (outcome.status === 'refused') throw new ApiError(outcome.code === 'limit_exceeded' ? 413 : 400, outcome.code, outcome.message);
    if (outcome.status === 'conflict') {
      const current: Record<string, { value?: unknown; version: number }> = {};
      for (const [key, s] of Object.entries(outcome.current)) current[key] = 'value' in s ? { value: JSON.parse(s.value) as unknown, version: s.version } : { version: s.version };
      return reply(res, 409, { error: { code: 'conflict', message: `a key read changed before the transaction committed; read again and retry` }, current, version: outcome.version });
    }
    throw new ApiError(500, 'internal', `unexpected write outcome ${outcome.status}`);
  }

  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    const route = `${req.method} ${url.pathname}`;
    const docRoute = DOC_ROUTE.exec(url.pathname);
    if (docRoute) {
      const transact = docRoute[2] !== undefined;
      if (req.method !== (transact ? 'POST' : 'GET')) {
        reply(res, 405, { error: { code: 'invalid_message', message: `${req.method} is not allowed on ${url.pathname}` } });
        return true;
      }
      try {
        checkKey(req, deps.apiKey);
        if (transact) await transactDoc(docRoute[1]!, req, res);
        else await readDoc(docRoute[1]!, res);
      } catch (error) {
        fail(res, error, route);
      }
      return true;
    }
    if (route !== 'POST /api/publish' && route !== 'GET /api/history' && route !== 'POST /api/disconnect' && route !== 'GET /api/presence') {
      if (url.pathname === '/api/publish' || url.pathname === '/api/history' || url.pathname === '/api/disconnect' || url.pathname === '/api/presence') {
        reply(res, 405, { error: { code: 'invalid_message', message: `${req.method} is not allowed on ${url.pathname}` } });
        return true;
      }
      return false;
    }
    try {
      checkKey(req, deps.apiKey);
      if (route === 'POST /api/publish') await publish(req, res);
      else if (route === 'POST /api/disconnect') await disconnect(req, res);
      else if (route === 'GET /api/presence') await presence(url, res);
      else await history(url, res);
    } catch (error) {
      fail(res, error, route);
    }
    return true;
  };

  function fail(res: ServerResponse, error: unknown, route: string): void {
    if (error instanceof ApiError) {
      reply(res, error.status, { error: { code: error.code, message: error.message } });
    } else {
      deps.log.error({ err: error, route }, 'API request failed');
      reply(res, 500, { error: { code: 'internal', message: 'the request failed; see the server log' } });
    }
  }
}
