"""BFL hostile polling over the real network: the x-key never leaves the API's origin.

The BFL emulator is told to hand out a polling_url (or a sample URL) on another port of
its own host, over http to a non-loopback allow-listed host, or with userinfo. A spy
server listens where those URLs point and answers like BFL would (a Ready result with a
real PNG), so a gateway that followed them would succeed; it must refuse instead, and the
spy must see no connection at all.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.support.upstreams import MODELS, NetworkGateway, SpyServer

pytestmark = pytest.mark.network

PATH = "/api/v1/generate-image"
MODEL, PRICE = MODELS["bfl"]


def _non_loopback_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: only picks a route
            address = str(probe.getsockname()[0])
    except OSError:
        address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this machine")
    return address


@pytest.fixture(scope="module")
def spy() -> Iterator[SpyServer]:
    """Another port on the API's own host (loopback)."""
    with SpyServer("127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def lan_spy() -> Iterator[SpyServer]:
    """An allow-listed, non-loopback host on http's default port."""
    with SpyServer(_non_loopback_address(), 80) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    network_gateway_factory: Callable[..., NetworkGateway], lan_spy: SpyServer
) -> NetworkGateway:
    # The non-loopback host is allow-listed: only the scheme (http) makes it wrong.
    return network_gateway_factory(bfl_allowed_hosts=json.dumps([lan_spy.host]))


def _cases(api: str, spy: SpyServer, lan: SpyServer) -> dict[str, dict[str, object]]:
    get_result = "/v1/get_result?id={id}"
    return {
        "polling_other_port": {"kind": "foreign_polling", "url": spy.origin + get_result},
        "polling_http_non_loopback": {"kind": "foreign_polling", "url": lan.origin + get_result},
        "polling_userinfo_hiding_other_port": {
            "kind": "foreign_polling",
            "url": f"http://{api.removeprefix('http://')}@127.0.0.1:{spy.port}{get_result}",
        },
        "sample_other_port": {"kind": "foreign_sample", "url": f"{spy.origin}/samples/a.png"},
        "sample_http_non_loopback": {
            "kind": "foreign_sample",
            "url": f"{lan.origin}/samples/a.png",
        },
    }


CASE_NAMES = [
    "polling_other_port",
    "polling_http_non_loopback",
    "polling_userinfo_hiding_other_port",
    "sample_other_port",
    "sample_http_non_loopback",
]


@pytest.mark.parametrize("case", CASE_NAMES)
async def test_hostile_url_is_refused_and_nothing_reaches_it(
    gateway: NetworkGateway, spy: SpyServer, lan_spy: SpyServer, case: str
) -> None:
    emulator = gateway.emulators["bfl"]
    fault = _cases(emulator.base_url, spy, lan_spy)[case]
    tenant = gateway.new_tenant(credits=4 * PRICE)
    files_before = gateway.stored_files()
    seen_before = (spy.connections, lan_spy.connections)
    emulator.set_faults({**fault, "count": 20})
    try:
        async with gateway.client(timeout=30) as client:
            response = await client.post(
                PATH, json={"prompt": f"hostile {case}", "model": MODEL}, headers=tenant.auth
            )
    finally:
        emulator.set_faults()
    assert (spy.connections, lan_spy.connections) == seen_before, (
        f"the gateway connected to the spy: {spy.requests[-1:]} {lan_spy.requests[-1:]}"
    )
    assert response.status_code == 500, response.text[:300]
    assert response.json()["code"] == "generation_failed"
    assert gateway.balance(tenant) == 4 * PRICE
    assert gateway.audit_ok()
    assert gateway.stored_files() == files_before


async def test_userinfo_on_the_api_origin_is_refused(gateway: NetworkGateway) -> None:
    emulator = gateway.emulators["bfl"]
    host = emulator.base_url.removeprefix("http://")
    url = f"http://user:secret@{host}/v1/get_result?id={{id}}"
    tenant = gateway.new_tenant(credits=4 * PRICE)
    emulator.set_faults({"kind": "foreign_polling", "url": url, "count": 20})
    try:
        async with gateway.client(timeout=30) as client:
            response = await client.post(
                PATH, json={"prompt": "userinfo", "model": MODEL}, headers=tenant.auth
            )
    finally:
        emulator.set_faults()
    assert response.status_code == 500, response.text[:300]
    assert response.json()["code"] == "generation_failed"
    assert gateway.balance(tenant) == 4 * PRICE


async def test_a_polling_url_on_the_exact_api_origin_is_followed(
    gateway: NetworkGateway,
) -> None:
    """The control case: the same fault, pointing at the API's own origin, succeeds."""
    emulator = gateway.emulators["bfl"]
    url = f"{emulator.base_url}/v1/get_result?id={{id}}"
    tenant = gateway.new_tenant(credits=4 * PRICE)
    emulator.set_faults({"kind": "foreign_polling", "url": url})
    try:
        async with gateway.client(timeout=30) as client:
            response = await client.post(
                PATH, json={"prompt": "own origin", "model": MODEL}, headers=tenant.auth
            )
    finally:
        emulator.set_faults()
    assert response.status_code == 200, response.text[:300]
    assert gateway.balance(tenant) == 3 * PRICE
