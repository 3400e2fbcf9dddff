"""Which webhook URLs a request may carry, and which addresses a delivery may reach."""

from __future__ import annotations

import ipaddress

import pytest

from app.errors import InvalidRequest
from app.jobs.webhook_target import (
    ResolutionFailed,
    TargetRefused,
    forbidden_reason,
    resolve,
    validate_webhook_url,
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https://user:pass@example.com/hook", "user name or password"),
        ("https://user@example.com/hook", "user name or password"),
        ("https:///hook", "must name a host"),
        ("https://example.com/a b", "without spaces"),
        ("https://example.com/\u00e9", "ASCII"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/hook#part", "fragment"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
        ("http://127.0.0.1/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("", "non-empty string"),
    ],
)
def test_bad_webhook_urls_are_a_400_naming_the_field(url: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        validate_webhook_url(url, allow_private=False)
    assert raised.value.extra["field"] == "webhookUrl"


def test_a_non_string_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="webhookUrl must be"):
        validate_webhook_url(42, allow_private=False)


def test_good_urls_pass_and_private_literals_pass_when_allowed() -> None:
    for url in ("https://hooks.example.com/in?token=abc", "http://93.184.216.34:8080/x"):
        assert validate_webhook_url(url, allow_private=False) == url
    assert validate_webhook_url("http://127.0.0.1:9/x", allow_private=True)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 wrapping 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo to 10.0.0.1
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_forbidden_addresses(address: str, reason: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


async def test_a_name_is_pinned_to_its_address_and_refused_when_private() -> None:
    target = await resolve("http://localhost:8123/in?x=1", allow_private=True)
    assert target.address in ("127.0.0.1", "::1")
    assert target.host_header == "localhost:8123"
    assert target.url.endswith(":8123/in?x=1") and "localhost" not in target.url
    assert target.sni_hostname is None  # plain http
    with pytest.raises(TargetRefused, match="loopback"):
        await resolve("http://localhost:8123/in", allow_private=False)


async def test_https_keeps_the_name_for_sni() -> None:
    target = await resolve("https://localhost/in", allow_private=True)
    assert target.sni_hostname == "localhost"
    assert target.url.startswith("https://") and ":443/in" in target.url


async def test_an_unresolvable_name_is_a_failed_lookup_not_a_refusal() -> None:
    """A lookup that fails now may answer later: retried, unlike a forbidden address."""
    with pytest.raises(ResolutionFailed, match="could not resolve"):
        await resolve("http://no-such-host.invalid/", allow_private=True)
