"""Which push endpoints we may send to: https only, public addresses only (SSRF guard).

A Web Push endpoint (and a UnifiedPush distributor URL, which is the same thing) is a URL a
stranger gives us; the server then POSTs to it. Without a guard anyone could make the server
talk to its own private network (a database on 10.x, a cloud metadata service on
169.254.169.254, an admin port on 127.0.0.1). The rules:

- the scheme is `https`; plain `http` only for hosts an operator lists for tests
  (`allow_hosts`, `LIANDONG_PUSH_TEST_HOSTS`), which are also the only hosts exempt from the
  address rule;
- no user info, no fragment, a host name (or address) and at most 2,048 characters;
- **every** address the name resolves to must be a public unicast address
  (`ipaddress.is_global`, and not multicast): loopback, private (RFC 1918, ULA), link-local,
  CGNAT, reserved and unspecified are refused. Checking every address, not the first, matters:
  a name with one public and one private record would otherwise pass the check and the
  connection could go to the private one;
- the check runs at registration (`check_endpoint`) **and again at connect time**
  (`GuardedResolver`, the resolver the Web Push sender's connector uses): the addresses checked
  are the addresses connected to, so a name that re-points to 127.0.0.1 after registration
  (DNS rebinding) is refused at send time too;
- redirects are never followed (the sender passes `allow_redirects=False`): a 3xx is a failed
  send, not a new destination.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = [
    "EndpointRefused",
    "GuardedResolver",
    "Resolve",
    "check_endpoint",
    "check_url",
    "refused_address",
]

MAX_URL_CHARS = 2048

Resolve = Callable[[str, int], Iterable[str]]


class EndpointRefused(ValueError):
    """The endpoint breaks a rule; `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked endpoint: where to connect and what the VAPID `aud` is."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def refused_address(address: str) -> bool:
    """True when the address is not a public unicast address we may connect to."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return not ip.is_global or ip.is_multicast


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA), via the system resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, allow_hosts: Collection[str] = ()) -> Endpoint:
    """The syntax rules only (scheme, host, length); no name resolution."""
    if len(url) > MAX_URL_CHARS:
        raise EndpointRefused("too_long", f"endpoint longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointRefused("malformed", f"endpoint is not a URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise EndpointRefused("malformed", "endpoint has no host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise EndpointRefused("malformed", "endpoint must not carry user info or a fragment")
    listed = host in allow_hosts
    if parts.scheme != "https" and not (parts.scheme == "http" and listed):
        raise EndpointRefused("not_https", "push endpoints must use https")
    default = 443 if parts.scheme == "https" else 80
    return Endpoint(url=url, scheme=parts.scheme, host=host, port=port or default)


def check_endpoint(
    url: str, *, allow_hosts: Collection[str] = (), resolve: Resolve = system_resolve
) -> Endpoint:
    """Refuse (EndpointRefused) an endpoint we must not send to; see the module rules.

    Resolves the host and checks every address it has; a name that does not resolve is refused
    too (`unresolvable`): a subscription nobody can reach is of no use and may be a probe.
    """
    endpoint = check_url(url, allow_hosts=allow_hosts)
    if endpoint.host in allow_hosts:
        return endpoint
    try:
        addresses = list(resolve(endpoint.host, endpoint.port))
    except OSError as exc:
        raise EndpointRefused("unresolvable", f"cannot resolve {endpoint.host}: {exc}") from exc
    if not addresses:
        raise EndpointRefused("unresolvable", f"{endpoint.host} has no address")
    bad = [a for a in addresses if refused_address(a)]
    if bad:
        raise EndpointRefused(
            "private_address", f"{endpoint.host} resolves to a non-public address ({bad[0]})"
        )
    return endpoint


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses non-public addresses (connect-time SSRF check).

    Wraps aiohttp's default resolver; hosts in `allow_hosts` resolve unchecked. A refusal
    raises `OSError`, which aiohttp reports as a connection error (the sender turns it into a
    permanent failure when its cause is an `EndpointRefused`).
    """

    def __init__(self, allow_hosts: Collection[str] = ()) -> None:
        self._inner = DefaultResolver()
        self._allow = frozenset(allow_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve as aiohttp does, then refuse the whole answer if any address is not public."""
        answers = list(await self._inner.resolve(host, port, family))
        if host.lower() in self._allow:
            return answers
        bad = [a["host"] for a in answers if refused_address(str(a["host"]))]
        if bad or not answers:
            refusal = EndpointRefused("private_address", f"{host} resolves to {bad or 'nothing'}")
            raise OSError(f"push endpoint refused: {refusal.detail}") from refusal
        return answers

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()
