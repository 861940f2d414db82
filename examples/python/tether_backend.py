#!/usr/bin/env python3
"""What a Django, Rails or Flask backend does with Tether, in Python's standard library only.

- mint_token(): sign the JWT a browser passes to `Tether.connect({ token })` (HS256, TETHER_TOKEN_SECRET)
- TetherApi: publish events, read history, read and commit to shared documents (TETHER_API_KEY)
- RpcHandler: answer procedures the Tether server proxies to this backend (TETHER_RPC_PROXY_URL)

Run against `npm start`:
    TETHER_URL=http://127.0.0.1:8080 TETHER_API_KEY=... TETHER_TOKEN_SECRET=... python3 tether_backend.py demo
    TETHER_RPC_PROXY_SECRET=... python3 tether_backend.py serve-rpc 8000
    TETHER_TOKEN_SECRET=... python3 tether_backend.py token alice
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint_token(secret: str, sub: str, channels=None, ttl_seconds: int = 3600) -> str:
    """A client token: HS256 JWT with sub, iat, exp and optionally the channels the user may use."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
    if channels is not None:
        claims["channels"] = list(channels)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


class TetherError(Exception):
    """An error answered by the Tether server: `code` is stable, `message` is for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Conflict(TetherError):
    """A document transaction read a version that changed: `current` holds the state now."""

    def __init__(self, message: str, current: dict):
        super().__init__(409, "conflict", message)
        self.current = current


class TetherApi:
    """The server-to-server HTTP API. Keep the key on the server side: never send it to browsers."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0):
        self.base_url, self.api_key, self.timeout = base_url.rstrip("/"), api_key, timeout

    def _request(self, method: str, path: str, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.api_key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            try:
                answer = json.load(error)
            except ValueError:
                answer = {}
            detail = answer.get("error", {})
            if error.code == 409 and detail.get("code") == "conflict":
                raise Conflict(detail.get("message", "conflict"), answer.get("current", {})) from None
            raise TetherError(error.code, detail.get("code", "internal"), detail.get("message", error.reason)) from None

    def publish(self, channel: str, data, idempotency_key=None) -> int:
        """Publishes an event; returns its channel offset. Retrying with the same key publishes once."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/api/publish", {"channel": channel, "data": data}, headers)["offset"]

    def history(self, channel: str, since: int = 0, limit: int = 100) -> dict:
        query = urllib.parse.urlencode({"channel": channel, "since": since, "limit": limit})
        return self._request("GET", f"/api/history?{query}")

    def read_doc(self, name: str) -> dict:
        """{"doc", "version", "keys": {key: {"value", "version"}}}"""
        return self._request("GET", f"/api/docs/{urllib.parse.quote(name, safe='')}")

    def transact(self, name: str, reads: dict, writes: dict) -> int:
        """Commits `writes` (None deletes a key) if every key in `reads` is still at that version."""
        path = f"/api/docs/{urllib.parse.quote(name, safe='')}/transact"
        return self._request("POST", path, {"reads": reads, "writes": writes})["version"]


def make_rpc_handler(proxy_secret: str):
    """A handler for POST /tether/rpc: the procedures the Tether server forwards to this backend."""

    def orders_total(args, user):
        if not all(isinstance(a, (int, float)) for a in args):
            return 400, {"error": {"code": "invalid_argument", "message": "orders.total takes numbers"}}
        return 200, {"result": {"user": user, "total": sum(args)}}

    def orders_refund(args, user):
        return 403, {"error": {"code": "forbidden", "message": f"{user or 'anonymous'} may not refund orders"}}

    procedures = {"orders.total": orders_total, "orders.refund": orders_refund}

    class RpcHandler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/tether/rpc":
                return self._reply(404, {"error": {"code": "not_found", "message": "no such endpoint"}})
            # Only the Tether server knows the proxy secret: a call without it did not come through Tether.
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {proxy_secret}".encode()):
                return self._reply(401, {"error": {"code": "unauthorized", "message": "bad key"}})
            length = int(self.headers.get("Content-Length", "0"))
            try:
                call = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._reply(400, {"error": {"code": "invalid_argument", "message": "body is not JSON"}})
            procedure = procedures.get(call.get("method"))
            if procedure is None:
                return self._reply(404, {"error": {"code": "not_found", "message": f"no procedure {call.get('method')}"}})
            # The caller's identity, verified by Tether from the browser's token (percent-encoded UTF-8).
            raw_user = self.headers.get("X-Tether-User")
            user = None if raw_user is None else urllib.parse.unquote(raw_user, errors="strict")
            status, answer = procedure(call.get("args", []), user)
            self._reply(status, answer)

        def _reply(self, status, body):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):  # quiet: the demo prints its own lines
            pass

    return RpcHandler


def demo(api: TetherApi, secret: str) -> None:
    """The steps a backend view takes, each printed as a JSON line."""
    say = lambda **fields: print(json.dumps(fields), flush=True)  # noqa: E731
    say(step="token", user="alice", token=mint_token(secret, "alice", channels=["orders", "board", "room:*"]))
    offset = api.publish("orders", {"order": 42, "status": "paid"}, idempotency_key="order-42-paid")
    say(step="publish", channel="orders", offset=offset)
    history = api.history("orders", since=max(0, offset - 1))
    say(step="history", channel="orders", events=history["events"])
    # A transaction: read, decide, commit with the versions read; on conflict read again.
    for attempt in (1, 2, 3):
        doc = api.read_doc("board")
        count = doc["keys"].get("orders_paid", {"value": 0, "version": 0})
        try:
            version = api.transact("board", {"orders_paid": count["version"]}, {"orders_paid": count["value"] + 1})
            say(step="transact", doc="board", version=version, orders_paid=count["value"] + 1, attempt=attempt)
            return
        except Conflict as conflict:
            say(step="conflict", doc="board", current=conflict.current, attempt=attempt)
    raise SystemExit("board: gave up after 3 conflicts")


def main(argv) -> int:
    command = argv[1] if len(argv) > 1 else "demo"
    try:
        if command == "token":
            print(mint_token(os.environ["TETHER_TOKEN_SECRET"], argv[2], channels=argv[3:] or None))
        elif command == "serve-rpc":
            port = int(argv[2]) if len(argv) > 2 else int(os.environ.get("PORT", "8000"))
            server = ThreadingHTTPServer(("127.0.0.1", port), make_rpc_handler(os.environ["TETHER_RPC_PROXY_SECRET"]))
            print(f"listening {server.server_address[1]}", flush=True)
            server.serve_forever()
        elif command == "demo":
            api = TetherApi(os.environ.get("TETHER_URL", "http://127.0.0.1:8080"), os.environ["TETHER_API_KEY"])
            demo(api, os.environ["TETHER_TOKEN_SECRET"])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except KeyError as missing:
        print(f"tether_backend: set {missing.args[0]} in the environment", file=sys.stderr)
        return 2
    except (TetherError, urllib.error.URLError) as error:
        print(f"tether_backend: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
