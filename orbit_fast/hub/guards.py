"""What the hub checks about a request before any route sees it, and who sent it.

- BodyLimit: bodies are small (1 MiB) and must arrive within a deadline, so a client that
  announces a body and trickles it in (slowloris) is answered 408 instead of holding a slot.
- HostGuard: DNS rebinding. A page that rebinds its own name to 127.0.0.1 reaches the hub as
  a loopback peer with a foreign Host; only localhost names, IP literals (a page cannot be
  served from an IP and rebind it) and the configured names are answered. An unsafe request
  whose Origin names another host is refused too (CSRF from a page on another origin).
- client_ip: forwarding headers count only from a trusted proxy (ORBIT_TRUSTED_PROXIES);
  everyone else is their socket peer, for throttling, logs and loopback trust alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orbit_fast.hub.settings import IPNetwork, is_ip, is_loopback

FORWARD_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


async def send_json(send: Send, status: int, body: dict[str, Any], close: bool = False) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode())]  # fmt: skip
    if close:  # the rest of the request is still on the wire: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413), announced or streamed, and bodies that
    have not fully arrived `timeout_s` after the request (408). Bodies are read here whole
    and replayed to the app: they are small, and the route never waits on the network."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length, chunked = 0, False
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                if not v.isdigit() or len(v) > 19 or int(v) > self.limit:
                    return await send_json(send, 413, self._too_large(), close=True)
                length = int(v)
            elif k == b"transfer-encoding":
                chunked = True
        if not length and not chunked:
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body, more = bytearray(), True
        while more:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await send_json(send, 408, error_body(
                    "body_timeout", f"the request body did not arrive within {self.timeout_s:g} "
                    "s"), close=True)  # fmt: skip
            if msg["type"] != "http.request":
                return  # the client went away
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                return await send_json(send, 413, self._too_large(), close=True)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> dict[str, Any]:
        return error_body("body_too_large", f"request bodies are limited to {self.limit} bytes")


def split_host(value: str) -> str:
    """The host name of a Host header value, lower case, without port or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def host_allowed(host: str, names: frozenset[str]) -> bool:
    if not host:  # HTTP/1.0 without Host: no browser sends that
        return True
    return (is_ip(host) or host == "localhost" or host.endswith(".localhost")
            or host in names)  # fmt: skip


class HostGuard:
    def __init__(self, app: ASGIApp, names: frozenset[str], public_url: str) -> None:
        self.app, self.names = app, names
        parts = urlsplit(public_url) if public_url else None
        self.public_origin = f"{parts.scheme}://{parts.netloc}".lower() if parts else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k: v for k, v in scope.get("headers", ()) if k in (b"host", b"origin")}
        host = split_host(headers.get(b"host", b"").decode("latin-1"))
        if not host_allowed(host, self.names):
            return await send_json(send, 421, error_body(
                "host_not_allowed", f"this hub does not answer to the host name {host!r}; if "
                "users reach it by that name (e.g. through nginx), add it to "
                "ORBIT_ALLOWED_HOSTS or set ORBIT_PUBLIC_URL"), close=True)  # fmt: skip
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] in UNSAFE_METHODS:
            text = origin.decode("latin-1").strip().lower().rstrip("/")
            raw_host = headers.get(b"host", b"").decode("latin-1")
            if not (text == self.public_origin or same_origin(text, host, raw_host)):
                return await send_json(send, 403, error_body(
                    "origin_not_allowed", f"a {scope['method']} from a page at {text!r} is "
                    "refused: it is not this hub's own origin"), close=True)  # fmt: skip
        await self.app(scope, receive, send)


def same_origin(origin: str, host: str, raw_host: str) -> bool:
    """The Origin names the request's own host and port (a page on another port of the same
    machine is another origin). A Host without a port, as nginx's `Host $host` sends it,
    matches an origin on its scheme's default port."""
    try:
        parts = urlsplit(origin)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # "http://[" and other unparsable origins
        return False
    if parts.scheme not in ("http", "https") or (parts.hostname or "").rstrip(".") != host:
        return False
    given = raw_host.strip().rsplit("]", 1)[-1]
    want = int(given.rsplit(":", 1)[1]) if ":" in given and given.rsplit(":", 1)[1].isdigit() \
        else None  # fmt: skip
    return port == want or (want is None and port in (80, 443))


class SecurityHeaders:
    """Headers every answer carries (no sniffing, no framing, no caching, a CSP). Plain ASGI:
    Starlette's BaseHTTPMiddleware fails with an error of its own when an inner layer ends a
    request without an answer (a client that went away mid-body)."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"))  # fmt: skip
    CSP = (b"content-security-policy",
           b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [*self.HEADERS]
        if not scope["path"].startswith("/api/docs"):  # Swagger UI loads its own scripts
            extra.append(self.CSP)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()),
                                      *((k, v) for k, v in extra if k not in have)]  # fmt: skip
            await send(message)

        await self.app(scope, receive, with_headers)


def _trusted(addr: str, nets: Iterable[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


def peer(request: Request) -> str:
    return request.client.host if request.client else ""


def client_ip(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the
    right-most X-Forwarded-For hop that is not itself a trusted proxy (nginx appends the
    address it saw, so what a client wrote further left is ignored), else X-Real-IP."""
    addr = peer(request)
    if not _trusted(addr, trusted):
        return addr
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted):
            return hop[:64]
    real = request.headers.get("x-real-ip", "").strip()
    return real[:64] or addr


def direct_loopback(request: Request) -> bool:
    """The peer is this machine and no proxy forwarded the request. A request with forwarding
    headers never counts as local, trusted proxy or not: nginx on the hub adds them, and a
    proxy left out of ORBIT_TRUSTED_PROXIES must not make the whole network local."""
    return is_loopback(peer(request)) and not any(h in request.headers for h in FORWARD_HEADERS)
