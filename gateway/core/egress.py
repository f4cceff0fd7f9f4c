"""The egress guard: which URLs and addresses the gateway may connect to on a tenant's behalf.

Every outbound connection made for a tenant (HTTP tools, MCP servers, tenant upstreams) goes
through this one module:

- `EgressPolicy.check_url` is the static check, run when a URL is stored (422 at PUT) and again
  before each call: `https` only, except for hosts allowed by `GATEWAY_EGRESS_ALLOW`
  (comma-separated host names or CIDRs), which may also use `http`; a literal address must be
  public unless it is allowed.
- `GuardedConnector` is the connect-time check: an aiohttp connector that resolves the host
  itself and connects only to the addresses it checked, so a name that resolves to a private
  address (or is re-bound to one after the static check, "DNS rebinding") is refused. Loopback,
  private, link-local (169.254.169.254, the cloud metadata address), shared, reserved,
  multicast and unspecified addresses are refused, also when embedded in an IPv6 address
  (IPv4-mapped, 6to4, Teredo, NAT64), unless an allowed CIDR or host name covers them.
- Redirects are never followed by the clients built here (`allow_redirects=False` for the tool
  client, `follow_redirects=False` for the httpx2 clients).

Refusals raise `EgressRefusedError` (at connect time wrapped by aiohttp in a connection error;
`refusal_of` finds it) and are counted in `gateway_egress_refusals_total{stage}`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import idna
from aiohttp.abc import AbstractResolver, ResolveResult

from observability.metrics import EGRESS_REFUSALS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
"""`::a.b.c.d`, deprecated (RFC 4291) and part of the reserved `::/8`, which Python 3.11's
`ipaddress` still calls global."""
_LOCALHOST_NAMES = frozenset({"localhost", "localhost."})


class EgressRefusedError(OSError):
    """A URL or address the egress guard does not allow; the message says why."""


def refused_address_reason(address: IPAddress) -> str | None:
    """Why `address` may not be reached without an allow-list entry (None: it is public)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = refused_address_reason(embedded)
        if reason is not None:
            return f"{reason} (embedded in {address})"
        if address in _IPV4_COMPATIBLE:
            return f"a reserved address (the IPv4-compatible form {address} is deprecated)"
        return None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # `::` and `::1` are themselves
        return ipaddress.IPv4Address(int(address))
    return None


_LEGACY_IPV4 = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
"""A host in the forms `inet_aton` reads (`0xa9.0xfe.0xa9.0xfe`, `2852039166`, `10.1`, octal
`0251.…`): every resolver takes it as the address it denotes, never as a name."""


def _literal(host: str) -> IPAddress | None:
    """The address a host literally denotes: an IP address, or IPv4 in a legacy form."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host) is None:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


_BRACKETED = re.compile(r"^\[[0-9A-Fa-f:.]+\](?::[0-9]+)?$")
"""An IPv6 literal host with its optional port (no zone, no IPvFuture)."""
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
"""One label of a host name (letters, digits, hyphens inside; `_` as in service names)."""


def _host_problem(host: str) -> str | None:
    """Why a URL's host (as `urlsplit` gives it) cannot be connected to as written, or None:
    an IP address, or a host name of valid labels whose last is not all digits. A non-ASCII
    name must encode under IDNA 2008 as the HTTP clients encode it (`☃`, a zero-width space or
    fullwidth digits do not: they would fail at run time, or resolve to an address the static
    check never saw)."""
    name = host.removesuffix(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        # `127.0.0.1.` is a name to resolvers, and none resolves it.
        return "an IP address takes no trailing dot" if name != host else None
    if _literal(name) is not None:
        return None  # a legacy IPv4 form: its address is checked, then the form refused
    ascii_name = name.lower()
    if not ascii_name.isascii():
        try:
            ascii_name = idna.encode(ascii_name).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return "the URL's host is not a valid internationalised host name (IDNA 2008)"
    labels = ascii_name.split(".")
    if (
        len(ascii_name) > 253
        or not all(map(_HOST_LABEL.match, labels))
        or labels[-1].isdigit()  # `999.999.999.999`, `08.8.8.8`: neither a name nor an address
    ):
        return "the URL's host is not a valid host name or IP address"
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The allow list (`GATEWAY_EGRESS_ALLOW`) and the checks built on it."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: str) -> EgressPolicy:
        """`"127.0.0.0/8, tools.internal"` -> a policy; raises ValueError on a bad CIDR."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in allow.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry or _literal(entry) is not None:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            else:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        """True when the host name itself is on the allow list."""
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, address: IPAddress) -> bool:
        """True when an allowed CIDR covers `address` (or its embedded IPv4 address)."""
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )

    def check_address(self, host: str, address: IPAddress, *, stage: str) -> None:
        """Refuse a connection to `address` (resolved from `host`) unless it is public or
        allowed."""
        if self.host_allowed(host) or self.address_allowed(address):
            return
        reason = refused_address_reason(address)
        if reason is not None:
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError(f"{host} resolves to {reason}, which is not allowed")

    def check_url(self, url: str, *, stage: str = "url") -> None:
        """The static check of a URL: scheme, host, and a literal address if it is one.

        Raises:
            EgressRefusedError: with a message fit for a 422 or an `error: …` tool output.
        """
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 (raises ValueError on a bad port)
            hostport = parts.netloc.rpartition("@")[2]
            if ("[" in hostport or "]" in hostport) and (
                _BRACKETED.match(hostport) is None or ipaddress.ip_address(host or "").version != 6
            ):
                raise ValueError("not an IPv6 literal")  # `[v1.x]`, `[::1]]`, `[1.2.3.4]`
            if parts.port == 0:
                raise ValueError("port 0")
        except ValueError:  # `https://[::1/x`, a bad port
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError("the URL's host or port is malformed") from None
        if parts.scheme not in ("http", "https") or not host:
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError("the URL must be an absolute http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError("the URL must not carry credentials")
        problem = _host_problem(host)
        if problem is not None:
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError(problem)
        literal = _literal(host.removesuffix("."))
        # An IPv4 address in a legacy form (`127.1`, `0x7f.0.0.1`): resolvers disagree on it.
        legacy = literal is not None and ":" not in host and str(literal) != host.removesuffix(".")
        if host in _LOCALHOST_NAMES:
            literal = ipaddress.ip_address("127.0.0.1")
        if parts.scheme == "http" and not self._http_allowed(host, literal):
            EGRESS_REFUSALS.labels(stage).inc()
            raise EgressRefusedError(
                "the URL must use https (http only for hosts in GATEWAY_EGRESS_ALLOW)"
            )
        if literal is not None:
            self.check_address(host, literal, stage=stage)
            if legacy:
                EGRESS_REFUSALS.labels(stage).inc()
                raise EgressRefusedError("write an IPv4 address in dotted-decimal form (a.b.c.d)")

    def _http_allowed(self, host: str, literal: IPAddress | None) -> bool:
        if self.host_allowed(host):
            return True
        return literal is not None and self.address_allowed(literal)


def refusal_of(exc: BaseException) -> EgressRefusedError | None:
    """The egress refusal behind a client error (aiohttp wraps it in its own errors)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, EgressRefusedError):
            return seen
        seen = seen.__cause__ or getattr(seen, "os_error", None) or seen.__context__
    return None


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that connects only to addresses the egress policy allows.

    Every host (a name or a literal) goes through `_resolve_host`, the one place aiohttp
    turns a host into the addresses it connects to; the results are checked there, so the
    connection goes to exactly the address that was checked. `resolver` can be replaced (a
    test's own DNS); by default aiohttp's threaded `getaddrinfo` resolver is used.
    """

    def __init__(
        self, policy: EgressPolicy, *, resolver: AbstractResolver | None = None, **kwargs: Any
    ) -> None:
        super().__init__(resolver=resolver, **kwargs)
        self.policy = policy

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces=traces)
        allowed: list[ResolveResult] = []
        refused: EgressRefusedError | None = None
        for result in results:
            try:
                self.policy.check_address(
                    host, ipaddress.ip_address(result["host"]), stage="connect"
                )
            except EgressRefusedError as exc:
                refused = exc
                continue
            allowed.append(result)
        if not allowed:
            raise refused or EgressRefusedError(f"{host} did not resolve to any address")
        return allowed


class StaticResolver(AbstractResolver):
    """A resolver answering from a fixed table (host name -> addresses): for tests and for
    pinning names in development. Unknown names fail like an unknown host."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {name.lower(): addresses for name, addresses in table.items()}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.table.get(host.lower().rstrip("."))
        if not addresses:
            raise OSError(socket.EAI_NONAME, f"unknown host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def guarded_session(
    policy: EgressPolicy,
    *,
    resolver: AbstractResolver | None = None,
    limit: int = 100,
    limit_per_host: int = 20,
) -> aiohttp.ClientSession:
    """A pooled aiohttp session behind the guard (no environment proxies, no cookies kept).

    Create it inside the serving event loop; close it in the lifespan.
    """
    connector = GuardedConnector(
        policy,
        resolver=resolver,
        limit=limit,
        limit_per_host=limit_per_host,
        ttl_dns_cache=10,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )
