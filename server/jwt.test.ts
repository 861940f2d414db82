/**
 * JWT negative matrix: every token the handshake must refuse, each with the exact reason
 * (`reasonOf` in auth.ts), code `unauthorized` and close 4001, and each beside a positive
 * control that is accepted, so that a server refusing everything fails here too.
 * Servers: HS256 secret; HS256 with audience and issuer; RS256 and ES256 public keys (PEM);
 * a JWKS picked by `kid`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { CompactSign, SignJWT, base64url, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, type CryptoKey, type JWTPayload } from 'jose';
import { pino } from 'pino';
import { startServer, type ServerOptions, type TetherServer } from './server.js';
import { RawClient, type Frame } from './testing/raw-client.js';

const SECRET = 'jwt-test-secret-of-at-least-32-characters';
const silent = pino({ level: 'silent' });

/** reasonOf (auth.ts) and the checks after it. */
const INVALID = 'the token is invalid';
const ALG = 'the token is signed with an algorithm this server does not accept';
const EXPIRED = 'the token has expired';
const NBF = 'the token is not valid yet (nbf)';
const AUD = 'the token is for another audience (aud)';
const ISS = 'the token is from another issuer (iss)';
const NO_SUB_CLAIM = 'the token has no sub claim';
const NO_EXP_CLAIM = 'the token has no exp claim';
const NO_SUBJECT = 'the token has no subject (sub)';
const LONG_SUB = 'the token subject (sub) is longer than 200 characters';
const REQUIRED = 'a token is required';



const now = () => Math.floor(Date.now() / 1000);
const encoder = new TextEncoder();

/** Signs `payload` exactly as given (no claims added) with `alg` in the header. */
function sign(payload: JWTPayload, alg: string, key: CryptoKey | KeyObject | Uint8Array, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ ...header, alg }).sign(key);
}

/** The usual claims of a good token: a subject and an hour to live. */
function good(extra: JWTPayload = {}): JWTPayload {
  return { sub: 'u1', iat: now(), exp: now() + 3600, ...extra };
}

function hs(payload: JWTPayload, secret = SECRET, alg = 'HS256'): Promise<string> {
  return sign(payload, alg, encoder.encode(secret));
}

/** `alg: none`, no signature. */
function unsigned(payload: JWTPayload, alg = 'none'): string {
  return `${base64url.encode(JSON.stringify({ alg, typ: 'JWT' }))}.${base64url.encode(JSON.stringify(payload))}.`;
}

/** A valid HS256 signature over bytes that are not a JSON object. */
function signedBytes(payload: string): Promise<string> {
  return new CompactSign(encoder.encode(payload)).setProtectedHeader({ alg: 'HS256' }).sign(encoder.encode(SECRET));
}

async function start(options: ServerOptions): Promise<{ server: TetherServer; url: string }> {
  const server = await startServer({ port: 0, host: '127.0.0.1', logger: silent, clientDir: '/nonexistent', db: ':memory:', ...options });
  return { server, url: `ws://127.0.0.1:${server.port}/ws` };
}

/** Outcome of a handshake with `token`: the first frame, the close, and anything after. */
async function handshake(url: string, token: string | undefined) {
  const c = await new RawClient(url).open();
  c.send(token === undefined ? { type: 'handshake', v: 1 } : { type: 'handshake', v: 1, token });
  return { first: await c.next(), c };
}

async function expectAccepted(url: string, token: string | undefined, user = 'u1'): Promise<void> {
  const { first, c } = await handshake(url, token);
  expect(first).toMatchObject({ type: 'welcome', v: 1, user });
  // And the connection really works: the seed procedure answers.
  c.send({ type: 'rpc', id: 1, method: 'hello', args: ['world'] });
  expect(await c.next()).toEqual({ type: 'result', id: 1, value: 'Hello, world!' });
  c.ws.close();
}

async function expectRefused(url: string, token: string | undefined, message: string, code = 'unauthorized', close = 4001): Promise<void> {
  const { first, c } = await handshake(url, token);
  expect(first).toEqual({ type: 'error', code, message });
  expect((await c.closed).code).toBe(close);
  expect(c.inbox).toEqual([]); // nothing after the refusal, no welcome
}

/** A row: a name, how to make the token, and the reason it is refused (or 'accepted'). */
type Row = [name: string, make: () => Promise<string | undefined> | string | undefined, outcome: string];
const OK = 'accepted';

function runRows(url: () => string, rows: Row[]): void {
  it.each(rows.map(([name, make, outcome]) => [name, outcome, make] as const))('%s → %s', async (_name, outcome, make) => {
    const token = await make();
    if (outcome === OK) await expectAccepted(url(), token);
    else await expectRefused(url(), token, outcome);
  });
}

// Keys: the server's, and an attacker's of each type.
let rsa: { publicKey: CryptoKey; privateKey: CryptoKey };
let rsaOther: { publicKey: CryptoKey; privateKey: CryptoKey };
let ec: { publicKey: CryptoKey; privateKey: CryptoKey };
let ecOther: { publicKey: CryptoKey; privateKey: CryptoKey };
let rsaPem: string;
let ecPem: string;
/** The server's RSA private key as a KeyObject, to sign with it under another RSA algorithm (PS256). */
let rsaPrivate: KeyObject;

beforeAll(async () => {
  [rsa, rsaOther, ec, ecOther] = await Promise.all([
    generateKeyPair('RS256', { extractable: true }),
    generateKeyPair('RS256'),
    generateKeyPair('ES256'),
    generateKeyPair('ES256'),
  ]);
  rsaPem = await exportSPKI(rsa.publicKey);
  rsaPrivate = createPrivateKey(await exportPKCS8(rsa.privateKey));
  ecPem = await exportSPKI(ec.publicKey);
});

describe('HS256 server (tokenSecret)', () => {
  let server: TetherServer;
  let url = '';
  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET }));
  });
  afterAll(() => server.close());

  runRows(() => url, [
    ['control: HS256 with the secret', () => hs(good()), OK],
    ['no token', () => undefined, REQUIRED],
    ['alg none', () => unsigned(good()), ALG],
    ['alg NONE (casing)', () => unsigned(good(), 'NONE'), ALG],
    ['alg none with a copied HS256 signature', async () => `${unsigned(good()).slice(0, -1)}.${(await hs(good())).split('.')[2]}`, ALG],
    ['HS256 with the wrong secret', () => hs(good(), 'another-secret-that-is-long-enough-32+'), INVALID],
    ['HS256 with a tampered payload (sub changed, signature kept)', async () => {
      const [header, , signature] = (await hs(good())).split('.');
      return `${header}.${base64url.encode(JSON.stringify(good({ sub: 'admin' })))}.${signature}`;
    }, INVALID],
    ['HS384 with the right secret', () => hs(good(), SECRET, 'HS384'), ALG],
    ['HS512 with the right secret', () => hs(good(), SECRET, 'HS512'), ALG],
    ['RS256 token on an HS256-only server', () => sign(good(), 'RS256', rsa.privateKey), ALG],
    ['ES256 token on an HS256-only server', () => sign(good(), 'ES256', ec.privateKey), ALG],
    ['expired 60 s ago (beyond the 5 s tolerance)', () => hs(good({ exp: now() - 60 })), EXPIRED],
    ['nbf an hour ahead', () => hs(good({ nbf: now() + 3600 })), NBF],
    ['control: nbf 2 s ahead (within the tolerance)', () => hs(good({ nbf: now() + 2 })), OK],
    ['control: nbf in the past', () => hs(good({ nbf: now() - 60 })), OK],
    ['missing sub', () => hs({ exp: now() + 3600 }), NO_SUB_CLAIM],
    ['empty sub', () => hs(good({ sub: '' })), NO_SUBJECT],
    ['numeric sub', () => hs({ ...good(), sub: 42 as unknown as string }), NO_SUBJECT],
    ['sub of 201 characters', () => hs(good({ sub: 'u'.repeat(201) })), LONG_SUB],
    ['missing exp', () => hs({ sub: 'u1', iat: now() }), NO_EXP_CLAIM],
    ['exp that is not a number', () => hs({ sub: 'u1', exp: 'tomorrow' as unknown as number }), "the token's exp claim is invalid"],
    ['garbage x.y.z', () => 'x.y.z', INVALID],
    ['garbage without dots', () => 'not-a-jwt-at-all', INVALID],
    ['empty token', () => '', INVALID],
    ['valid signature over a non-JSON payload', () => signedBytes('this is not JSON'), INVALID],
    ['valid signature over a JSON array payload', () => signedBytes('[1,2,3]'), INVALID],
    ['valid signature over a JSON null payload', () => signedBytes('null'), INVALID],
  ]);

  it('a token expired 2 s ago (inside the clock tolerance, which is for nbf) is refused at the handshake, not welcomed then cut (4001)', async () => {
    const { first, c } = await handshake(url, await hs(good({ exp: now() - 2 })));
    expect(first).toEqual({ type: 'error', code: 'unauthorized', message: EXPIRED });
    expect((await c.closed).code).toBe(4001);
  });

  it('control: a sub of exactly 200 characters is accepted', async () => {
    const sub = 'u'.repeat(200);
    await expectAccepted(url, await hs(good({ sub })), sub);
  });

  it('refuses a token over 8192 characters at the frame schema (invalid_message, close 4000); one just under is accepted', async () => {
    const padded = async (length: number) => {
      const base = await hs(good({ pad: '' }));
      // Each 4 characters of padding in the claim add 4 characters of base64url... near enough: tune to the exact length.
      let pad = 'p'.repeat(Math.floor(((length - base.length) * 3) / 4));
      let token = await hs(good({ pad }));
      while (token.length > length) token = await hs(good({ pad: (pad = pad.slice(1)) }));
      return token;
    };
    const under = await padded(8192);
    expect(under.length).toBeLessThanOrEqual(8192);
    expect(under.length).toBeGreaterThan(8100);
    await expectAccepted(url, under);

    const over = await hs(good({ pad: 'p'.repeat(6200) }));
    expect(over.length).toBeGreaterThan(8192);
    const { first, c } = await handshake(url, over);
    expect(first).toMatchObject({ type: 'error', code: 'invalid_message' });
    expect(first.message).toMatch(/^token: /);
    expect((await c.closed).code).toBe(4000);
    expect(c.inbox).toEqual([]);
  });
});

describe('HS256 server with tokenAudience and tokenIssuer', () => {
  let server: TetherServer;
  let url = '';
  const aud = 'tether';
  const iss = 'https://auth.example.com';
  beforeAll(async () => {
    ({ server, url } = await start({ tokenSecret: SECRET, tokenAudience: aud, tokenIssuer: iss }));
  });
  afterAll(() => server.close());

  runRows(() => url, [
    ['control: right aud and iss', () => hs(good({ aud, iss })), OK],
    ['control: aud as a list that includes it', () => hs(good({ aud: ['other', aud], iss })), OK],
    ['wrong aud', () => hs(good({ aud: 'another-app', iss })), AUD],
    ['aud list without it', () => hs(good({ aud: ['a', 'b'], iss })), AUD],
    ['missing aud', () => hs(good({ iss })), AUD],
    ['wrong iss', () => hs(good({ aud, iss: 'https://evil.example.com' })), ISS],
    ['iss that only starts the same', () => hs(good({ aud, iss: `${iss}.evil.com` })), ISS],
    ['missing iss', () => hs(good({ aud })), ISS],
    ['right aud and iss but expired', () => hs(good({ aud, iss, exp: now() - 60 })), EXPIRED],
  ]);
});

describe('RS256 public key server (tokenPublicKey PEM)', () => {
  let server: TetherServer;
  let url = '';
  beforeAll(async () => {
    ({ server, url } = await start({ tokenPublicKey: rsaPem }));
  });
  afterAll(() => server.close());

  runRows(() => url, [
    ['control: RS256 signed by the key', () => sign(good(), 'RS256', rsa.privateKey), OK],
    ['control: RS256 with a kid (no JWKS: the PEM key is used)', () => sign(good(), 'RS256', rsa.privateKey, { kid: 'anything' }), OK],
    ['RS256 signed by another key', () => sign(good(), 'RS256', rsaOther.privateKey), INVALID],
    ['algorithm confusion: HS256 with the PEM text as the secret', () => hs(good(), rsaPem), ALG],
    ['algorithm confusion: HS256 with the PEM text, trimmed', () => hs(good(), rsaPem.trim()), ALG],
    ['PS256 signed by the same RSA key', () => sign(good(), 'PS256', rsaPrivate), ALG],
    ['ES256 token', () => sign(good(), 'ES256', ec.privateKey), ALG],
    ['HS256 with any secret', () => hs(good()), ALG],
    ['alg none', () => unsigned(good()), ALG],
    ['RS256 expired', () => sign(good({ exp: now() - 60 }), 'RS256', rsa.privateKey), EXPIRED],
    ['RS256 without sub', () => sign({ exp: now() + 3600 }, 'RS256', rsa.privateKey), NO_SUB_CLAIM],
  ]);
});

describe('ES256 public key server (tokenPublicKey PEM)', () => {
  let server: TetherServer;
  let url = '';
  beforeAll(async () => {
    ({ server, url } = await start({ tokenPublicKey: ecPem }));
  });
  afterAll(() => server.close());

  runRows(() => url, [
    ['control: ES256 signed by the key', () => sign(good(), 'ES256', ec.privateKey), OK],
    ['ES256 signed by another key', () => sign(good(), 'ES256', ecOther.privateKey), INVALID],
    ['algorithm confusion: HS256 with the PEM text as the secret', () => hs(good(), ecPem), ALG],
    ['RS256 token', () => sign(good(), 'RS256', rsa.privateKey), ALG],
    ['alg none', () => unsigned(good()), ALG],
  ]);
});

describe('JWKS server (tokenJwks, keys picked by kid)', () => {
  let server: TetherServer;
  let url = '';
  beforeAll(async () => {
    const keys = [
      { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
    ];
    ({ server, url } = await start({ tokenJwks: JSON.stringify({ keys }) }));
  });
  afterAll(() => server.close());

  runRows(() => url, [
    ['control: RS256 with kid rsa-1', () => sign(good(), 'RS256', rsa.privateKey, { kid: 'rsa-1' }), OK],
    ['control: ES256 with kid ec-1', () => sign(good(), 'ES256', ec.privateKey, { kid: 'ec-1' }), OK],
    ['RS256 signed by a key not in the JWKS (unknown kid)', () => sign(good(), 'RS256', rsaOther.privateKey, { kid: 'rsa-2' }), INVALID],
    ['RS256 signed by a key not in the JWKS, claiming kid rsa-1', () => sign(good(), 'RS256', rsaOther.privateKey, { kid: 'rsa-1' }), INVALID],
    ['ES256 signed by a key not in the JWKS, claiming kid ec-1', () => sign(good(), 'ES256', ecOther.privateKey, { kid: 'ec-1' }), INVALID],
    ['ES256 token naming the RSA key (kid rsa-1)', () => sign(good(), 'ES256', ec.privateKey, { kid: 'rsa-1' }), INVALID],
    ['HS256 token', () => hs(good()), ALG],
    ['algorithm confusion: HS256 with the RSA public JWK as the secret', async () => hs(good(), JSON.stringify(await exportJWK(rsa.publicKey))), ALG],
    ['alg none with kid rsa-1', () => `${base64url.encode(JSON.stringify({ alg: 'none', kid: 'rsa-1' }))}.${base64url.encode(JSON.stringify(good()))}.`, ALG],
    ['RS256 with kid rsa-1 but expired', () => sign(good({ exp: now() - 60 }), 'RS256', rsa.privateKey, { kid: 'rsa-1' }), EXPIRED],
  ]);
});
