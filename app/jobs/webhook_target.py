"""Where a webhook may go: the `webhookUrl` check at submission, and the resolution of its
host at delivery time to one address that is then connected to (no second lookup a DNS
rebinding could answer differently)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.errors import InvalidRequest

MAX_URL_CHARS = 2048
FIELD = "webhookUrl"
# Cloud metadata services that are not already link-local (169.254.169.254 is).
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("169.254.169.254")}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The URL's host resolves to an address webhooks may not reach (or to none)."""


class ResolutionFailed(Exception):
    """The host name could not be resolved now (DNS may answer on a later attempt)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A delivery's connection: the URL with the host replaced by the pinned address, and
    the original host for the Host header and TLS SNI."""

    url: str
    host_header: str
    sni_hostname: str | None
    address: str


def validate_webhook_url(value: object, *, allow_private: bool) -> str:
    """The `webhookUrl` of a request, or a 400 naming it: http(s), a host, no userinfo,
    no fragment, at most 2048 characters; an address literal must be public unless
    private ones are allowed (host names are checked when resolved, at delivery)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{FIELD} must be a non-empty string (an http(s) URL)", field=FIELD)
    if len(value) > MAX_URL_CHARS:
        raise InvalidRequest(f"{FIELD} is longer than {MAX_URL_CHARS} characters", field=FIELD)
    if not value.isascii() or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidRequest(
            f"{FIELD} must be ASCII without spaces or control characters", field=FIELD
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidRequest(f"{FIELD} is not a valid URL", field=FIELD) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"{FIELD} must be an http:// or https:// URL", field=FIELD)
    if not parts.hostname:
        raise InvalidRequest(f"{FIELD} must name a host", field=FIELD)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRequest(f"{FIELD} must not carry a user name or password", field=FIELD)
    if parts.fragment or value.endswith("#"):
        raise InvalidRequest(f"{FIELD} must not carry a #fragment", field=FIELD)
    literal = _literal(parts.hostname)
    if literal is not None and not allow_private and (reason := forbidden_reason(literal)):
        raise InvalidRequest(f"{FIELD} points at a {reason} address", field=FIELD)
    return value


def forbidden_reason(address: IPAddress) -> str | None:
    """Why webhooks may not reach `address` ("loopback", "private", ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address: judge it.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return forbidden_reason(embedded)
        if address.teredo is not None:
            return forbidden_reason(address.teredo[1])
    if address in _METADATA:
        return "cloud metadata"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Resolve the URL's host once; every address it has must be allowed (a host with one
    public and one private address is refused), and the first is the one connected to."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except UnicodeError as exc:
            raise TargetRefused(f"could not resolve {host}: {exc}") from None
        except socket.gaierror as exc:
            raise ResolutionFailed(f"could not resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise TargetRefused(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if reason := forbidden_reason(address):
                raise TargetRefused(
                    f"{host} resolves to {address}, a {reason} address"
                    " (IMAGEGATE_WEBHOOK_ALLOW_PRIVATE is off)"
                )
    pinned = addresses[0]
    return Target(
        url=_with_host(parts, pinned, port),
        host_header=parts.netloc,
        sni_hostname=host if parts.scheme == "https" and literal is None else None,
        address=str(pinned),
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _with_host(parts: SplitResult, address: IPAddress, port: int) -> str:
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    return parts._replace(netloc=f"{shown}:{port}").geturl()
