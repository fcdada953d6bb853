"""Who the client is behind a reverse proxy: ``X-Forwarded-For`` believed only from configured proxies.

The client address keys the rate limit of keyless clients and the access log. A header any client can write
must not pick it: uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default, so one client on the same
host (or behind a local sidecar that passes the header through) could rotate identities past every limit.
tabserve turns uvicorn's handling off (api/server.py) and does it here, like nginx's ``set_real_ip_from`` with
``real_ip_recursive on``: only when the peer is a trusted proxy, walk the header from the right, skipping
trusted proxies; the first other address is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from tabserve.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDRs (``10.0.0.0/8``, ``127.0.0.1``, ``::1``); a bad one refuses to start."""
    networks = []
    for value in values:
        text = value.strip()
        if text == "*":
            raise ConfigError("trusted_proxies: '*' would let every client choose its own address (and rate "
                              "limit); list the proxies' addresses or networks, e.g. 10.0.0.0/8")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"trusted_proxies: {text[:64]!r} is not an IP address or network; write e.g. "
                              "127.0.0.1, 10.0.0.0/8 or fd00::/8") from None
    return tuple(networks)


class ForwardedFor:
    """ASGI middleware: when the peer is a trusted proxy, ``scope["client"]`` becomes the forwarded client and
    ``scope["scheme"]`` the forwarded scheme. Added only when proxies are configured."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client is not None and self._is_trusted(client[0]):
                forwarded, proto = None, None
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":  # several headers are one list, in order
                        forwarded = value if forwarded is None else forwarded + b"," + value
                    elif name == b"x-forwarded-proto":
                        proto = value
                if forwarded is not None:
                    host = self._client(forwarded.decode("latin-1"))
                    if host is not None:
                        scope = {**scope, "client": (host, 0)}
                if proto is not None:
                    scheme = proto.decode("latin-1").split(",")[-1].strip().lower()
                    if scheme in ("http", "https"):
                        scope = {**scope, "scheme": scheme}
        await self.app(scope, receive, send)

    def _client(self, header: str) -> str | None:
        """The rightmost address that is not a trusted proxy (every one trusted: the leftmost)."""
        hops = [h.strip() for h in header.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return None  # garbage where an address should be: keep the proxy's own address
        return hops[0] if hops else None
