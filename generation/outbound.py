"""HTTP requests to addresses people give us (webhooks), safe against
server-side request forgery:

- only http and https, no credentials in the URL;
- the host is resolved once, and every address it resolves to must be
  public (not private, loopback, link-local, multicast, reserved or
  unspecified, nor such an IPv4 address inside an IPv6 one), unless
  WEBHOOK_ALLOW_PRIVATE;
- the request goes to the address that was checked (TLS still verifies the
  host's name), so a DNS answer that changes between the check and the
  connection (rebinding) is never used;
- no redirects, a timeout on connecting and on each read, and only a short
  prefix of the answer is read; the delivery task's time limit bounds the
  whole attempt (generation.tasks.deliver_webhook), DNS included.

urllib3 does the HTTP: it can connect to one address while sending the
host's name in the Host header, SNI and the certificate check.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import urllib3

from generation.limits import WEBHOOK_RESPONSE_PREFIX, WEBHOOK_URL_MAX

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
# The system resolver has no timeout of its own: a host whose nameserver never
# answers would hold the caller (a web thread, at submit) for its retries.
# Lookups run on a few threads of their own and are waited for this long.
RESOLVE_TIMEOUT = 2.5
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


class UrlRefused(Exception):
    """The URL may not be called (its scheme, its form, or where it points):
    permanent, never worth a retry."""


class HostUnresolved(Exception):
    """The host has no address right now (DNS): may pass later."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), no brackets
    port: int
    path: str  # with the query
    host_header: str


@dataclass(frozen=True)
class Answer:
    """One request's outcome: the status and the start of the body, or an
    error (no answer)."""

    status: int | None = None
    body_prefix: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def target_of(url: str) -> Target:
    """Parse and check the form of `url`; UrlRefused says what is wrong."""
    if len(url) > WEBHOOK_URL_MAX:
        raise UrlRefused(f"At most {WEBHOOK_URL_MAX} characters.")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise UrlRefused("A URL has no spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
        host = host.encode("idna").decode("ascii") if host else ""
    except (ValueError, UnicodeError):
        raise UrlRefused("Not a valid URL.") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise UrlRefused("Use an http:// or https:// URL.")
    if not host:
        raise UrlRefused("The URL needs a host name.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("No user name or password in the URL; put a token in its path or query instead.")
    # Non-ASCII in the path or query goes percent-encoded; escapes stay.
    path = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=URL_SAFE)
    shown_host = f"[{host}]" if ":" in host else host
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port or DEFAULT_PORTS[parts.scheme],
        path=path,
        host_header=shown_host if port is None else f"{shown_host}:{port}",
    )


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver), in its order,
    within RESOLVE_TIMEOUT seconds."""
    lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=RESOLVE_TIMEOUT)
    except FutureTimeout:
        lookup.cancel()
        raise HostUnresolved(f"Could not resolve {host} in time.") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(f"Could not resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise HostUnresolved(f"Could not resolve {host}: no address.")
    return addresses


def is_public(address: str) -> bool:
    """A globally routable unicast address, also when it is an IPv4 address
    carried inside an IPv6 one (mapped, 6to4, NAT64)."""
    ip = ipaddress.ip_address(address)
    inner = []
    if isinstance(ip, ipaddress.IPv6Address):
        inner = [ip.ipv4_mapped, ip.sixtofour]
        if ip in NAT64:
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(
        candidate.is_global and not (candidate.is_multicast or candidate.is_reserved or candidate.is_unspecified)
        for candidate in [ip, *(embedded for embedded in inner if embedded is not None)]
    )


def checked_address(target: Target, *, allow_private: bool) -> str:
    """The address to connect to: the first one the host resolves to, once
    every one of them passed (a host with one private address among public
    ones is refused: the resolver's order is not ours to trust)."""
    addresses = resolve(target.host, target.port)
    if not allow_private:
        private = [address for address in addresses if not is_public(address)]
        if private:
            # The address stays in the log: answered to the sender (or shown
            # on a job's page), it would map the internal network for free.
            log.warning("refused URL host %s: resolves to non-public %s", target.host, private[0])
            raise UrlRefused(f"{target.host} resolves to a non-public address; use a public host.")
    return addresses[0]


def post(target: Target, address: str, *, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` to `target` at `address` (from checked_address). Never
    raises for what the network or the receiver does: that is the Answer."""
    options = {"timeout": urllib3.Timeout(total=timeout), "retries": False, "maxsize": 1, "block": False}
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address, target.port, server_hostname=target.host, assert_hostname=target.host, **options
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, **options)
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            preload_content=False,
            decode_content=False,
            assert_same_host=False,
        )
        try:
            start = response.read(WEBHOOK_RESPONSE_PREFIX * 4, decode_content=False)
        finally:
            response.close()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Answer(error=_describe(exc))
    finally:
        pool.close()
    return Answer(status=response.status, body_prefix=_text_prefix(start))


def _text_prefix(data: bytes) -> str:
    # PostgreSQL text cannot hold NUL.
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")[:WEBHOOK_RESPONSE_PREFIX]


def _describe(exc: BaseException) -> str:
    # NewConnectionError is a ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "Could not connect: " + str(exc).rpartition(": ")[2][:200]
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return "Timed out."
    return f"{type(exc).__name__}: {exc}"[:300]
