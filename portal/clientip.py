"""Who the client is behind reverse proxies: one rule for HTTP and websockets.

The peer (the TCP connection's other end) is the client, unless it is one of
TRUSTED_PROXIES; then each trusted proxy has appended the address it saw to
X-Forwarded-For, so walking that list from the right, the first address that
is not a trusted proxy is the client. Entries further left were written by
the client itself and are never believed.
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(peer: str, forwarded_for: str | None) -> str:
    """The client's address, given the peer's and the X-Forwarded-For header
    (several headers joined with commas)."""
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if not networks or not _trusted(_address(peer), networks):
        return peer
    client = peer
    for hop in reversed((forwarded_for or "").split(",")):
        address = _address(hop)
        if address is None:  # not an address: nothing to its left is believed either
            break
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


def request_client_ip(meta: dict) -> str:
    """The same for a WSGI/ASGI request's META."""
    return client_ip(meta.get("REMOTE_ADDR") or "", meta.get("HTTP_X_FORWARDED_FOR"))


def scope_with_client_ip(scope: dict) -> dict:
    """An ASGI scope whose "client" is the client, not the proxy."""
    peer = scope.get("client")
    if not peer or not settings.TRUSTED_PROXIES:
        return scope
    forwarded = b",".join(value for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for")
    host = client_ip(peer[0], forwarded.decode("latin-1") or None)
    return scope if host == peer[0] else {**scope, "client": (host, peer[1])}


@cache
def _networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _address(text: str | None) -> Address | None:
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:1.2.3.4) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, networks) -> bool:
    return address is not None and any(address in network for network in networks)
