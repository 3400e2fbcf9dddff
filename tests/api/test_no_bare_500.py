"""No bare 500: every hostile input the review found is a JSON 400 naming the field, a
database connection cut in the middle of a statement is a 503, and whatever else goes
wrong is a JSON 500 with the request id. Nothing is ever charged.

The inputs, each a text/plain 500 before: integers past Python's int-string conversion
limit (4300 digits) in JSON bodies and query parameters, superscript digits that
`str.isdigit()` accepts and `int()` does not, lone surrogates when an Idempotency-Key
makes the gateway hash the body, NUL characters in JSON strings, paths and queries (a
500 on Postgres, silently stored on SQLite) and an object where a string was expected.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import Request
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credits.audit import AuditProblem
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import CreditAccount, CreditHold, Generation, LedgerEntry
from app.main import create_app
from app.observability.logging import JsonFormatter
from tests.support.gateway import Stack, TenantHandle, gateway_settings
from tests.support.process import fresh_database
from tests.support.proxy import TcpProxy, postgres_target
from tests.support.servers import serve_in_thread

GENERATE = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image
HUGE = "9" * 5000  # past the 4300-digit int-string conversion limit
CREDITS = 20


@dataclass(frozen=True)
class Case:
    """One hostile request: where it goes, what it sends, which field the 400 names."""

    method: str
    path: str  # {tenant} is the tenant's name
    field: str
    content: str | bytes | None = None  # a raw JSON body: it can hold what json.dumps cannot
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    admin: bool = False

    @property
    def openai(self) -> bool:
        return self.path.startswith("/v1/")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


CASES = {
    # integers of more than 4300 digits in a JSON body
    "native-numImages": Case(
        "POST", GENERATE, "numImages", content=f'{{"prompt": "x", "numImages": {HUGE}}}'
    ),
    "native-nested-unknown-field": Case(
        "POST",
        GENERATE,
        "meta.sizes[1]",
        content=f'{{"prompt": "x", "meta": {{"sizes": [1, -{HUGE}]}}}}',
    ),
    "openai-generations-n": Case(
        "POST", "/v1/images/generations", "n", content=f'{{"prompt": "x", "n": {HUGE}}}'
    ),
    "admin-grant-amount": Case(
        "POST",
        "/admin/v1/tenants/{tenant}/credits",
        "amount",
        content=f'{{"amount": {HUGE}}}',
        admin=True,
    ),
    "admin-rate-limits": Case(
        "PUT",
        "/admin/v1/tenants/{tenant}/rate-limits",
        "perMinute",
        content=f'{{"perMinute": {HUGE}}}',
        admin=True,
    ),
    # ... and in integer query parameters
    "images-limit": Case("GET", f"/api/v1/images?limit={HUGE}", "limit"),
    "images-offset": Case("GET", f"/api/v1/images?offset={HUGE}", "offset"),
    "gallery-limit": Case("GET", f"/api/v1/gallery?limit={HUGE}", "limit"),
    "credits-limit": Case("GET", f"/api/v1/credits?limit={HUGE}", "limit"),
    "admin-tenants-limit": Case("GET", f"/admin/v1/tenants?limit={HUGE}", "limit", admin=True),
    # digits that str.isdigit() accepts and int() does not, or too many of them
    "openai-size-superscript": Case(
        "POST", "/v1/images/generations", "size", content='{"prompt": "x", "size": "²x²"}'
    ),
    "openai-size-huge": Case(
        "POST", "/v1/images/generations", "size", content=f'{{"prompt": "x", "size": "{HUGE}x1"}}'
    ),
    "openai-edits-n-superscript": Case(
        "POST",
        "/v1/images/edits",
        "n",
        files={"image": ("a.png", _png(), "image/png")},
        data={"prompt": "x", "n": "²"},
    ),
    "openai-edits-n-huge": Case(
        "POST",
        "/v1/images/edits",
        "n",
        files={"image": ("a.png", _png(), "image/png")},
        data={"prompt": "x", "n": HUGE},
    ),
    # a lone surrogate in a field no validator looks at, with an Idempotency-Key
    "surrogate-unknown-field": Case(
        "POST", GENERATE, "note", content='{"prompt": "x", "note": "\\ud800"}', headers=_key()
    ),
    "surrogate-source-image": Case(
        "POST",
        GENERATE,
        "sourceImage",
        content='{"prompt": "x", "sourceImage": "\\udfff"}',
        headers=_key(),
    ),
    # ... or encoded in the body's bytes (UTF-8 0xED 0xA0 0x80, and in a UTF-16 body)
    "surrogate-utf8-bytes": Case(
        "POST", GENERATE, "note", content=b'{"prompt": "x", "note": "\xed\xa0\x80"}', headers=_key()
    ),
    "surrogate-utf16-body": Case(
        "POST",
        GENERATE,
        "note",
        content='{"prompt": "x", "note": "\ud800"}'.encode("utf-16-le", "surrogatepass"),
        headers=_key(),
    ),
    "surrogate-async": Case(
        "POST",
        GENERATE,
        "tags[0]",
        content='{"prompt": "x", "tags": ["a\\udc00b"]}',
        headers={**_key(), "Prefer": "respond-async"},
    ),
    # NUL characters, which Postgres text cannot hold (the lookup failed in the database)
    "nul-json-field": Case(
        "POST",
        "/admin/v1/tenants/{tenant}/keys",
        "label",
        content='{"label": "a\\u0000b"}',
        admin=True,
    ),
    "nul-path": Case("GET", "/api/v1/images/%00", "path"),
    "nul-query": Case("GET", "/admin/v1/usage?model=a%00", "model", admin=True),
    # a JSON object where a string was expected (unhashable, so `in` raised TypeError)
    "openai-output-format-object": Case(
        "POST",
        "/v1/images/generations",
        "output_format",
        content='{"prompt": "x", "output_format": {"a": 1}}',
    ),
}


async def _generations(stack: Stack, tenant: TenantHandle) -> int:
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.tenant_id == tenant.id)
        )
    return int(count or 0)


async def _ledger(stack: Stack, tenant: TenantHandle) -> tuple[int, int, tuple[AuditProblem, ...]]:
    """Balance, ledger entries and audit problems: what a charge would change."""
    async with stack.sessions() as session:
        entries = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.tenant_id == tenant.id)
        )
    return await stack.balance(tenant), int(entries or 0), (await stack.audit(tenant)).problems


def _assert_json_error(response: httpx.Response, status: int, *, openai: bool) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    if openai:
        error = body["error"]
        assert isinstance(error["message"], str) and isinstance(error["code"], str)
        return {"message": error["message"], "code": error["code"], "field": error["param"]}
    assert isinstance(body["error"], str) and isinstance(body["code"], str)
    return {"message": body["error"], "code": body["code"], "field": body.get("field")}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_hostile_input_is_400_naming_the_field(stack: Stack, case: Case) -> None:
    tenant = await stack.new_tenant(credits=CREDITS)
    before = await _ledger(stack, tenant)
    if case.admin:
        assert stack.settings.admin_token is not None
        auth = {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}
    else:
        auth = tenant.auth
    headers = {**auth, **(case.headers or {})}
    if case.content is not None:
        headers["Content-Type"] = "application/json"
    async with stack.client() as client:
        response = await client.request(
            case.method,
            case.path.format(tenant=tenant.name),
            content=case.content.encode() if isinstance(case.content, str) else case.content,
            files=case.files,
            data=case.data,
            headers=headers,
        )
    error = _assert_json_error(response, 400, openai=case.openai)
    assert error["code"] in ("invalid_request", "invalid_value")
    assert error["field"] == case.field
    assert case.field in error["message"]
    assert await _ledger(stack, tenant) == before
    assert await _generations(stack, tenant) == 0


# --------------------------------------------------------------------------- safety net


class _Lines(logging.Handler):
    """Formats each record as it is logged, while its request's context is current."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_unexpected_error_is_a_json_500_with_the_request_id(tmp_path: Path) -> None:
    """A route with a defect (added to the real app, as any future route could be)."""
    app = create_app(gateway_settings(data_dir=tmp_path / "data"))

    async def defect(request: Request) -> None:
        await request.body()
        raise RuntimeError("a defect, not an input problem")

    app.add_api_route("/test/defect", defect, methods=["POST"])
    lines = _Lines()
    logging.getLogger().addHandler(lines)
    try:
        with serve_in_thread(app) as base_url:
            response = httpx.post(
                f"{base_url}/test/defect",
                json={"secret": "body-marker-7f3a"},
                headers={"X-Request-ID": "req-hostile-1"},
            )
    finally:
        logging.getLogger().removeHandler(lines)
    error = _assert_json_error(response, 500, openai=False)
    assert error["code"] == "internal_error"
    assert response.json()["requestId"] == "req-hostile-1"
    assert "req-hostile-1" in error["message"]
    assert response.headers["x-request-id"] == "req-hostile-1"
    [logged] = [line for line in lines.lines if line["message"] == "unhandled error"]
    assert logged["request_id"] == "req-hostile-1"
    assert "RuntimeError: a defect, not an input problem" in logged["exception"]
    assert all("body-marker-7f3a" not in json.dumps(line) for line in lines.lines)


# --------------------------------------------------------------------------- database


@pytest_asyncio.fixture
async def proxied_stack(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    """A Postgres gateway reaching its database through a proxy that can cut it; the
    Stack's own engine goes direct, for the test's locks and checks."""
    direct = await asyncio.to_thread(fresh_database, postgres_url)
    target, template = postgres_target(direct)
    proxy = TcpProxy(target).start()
    settings = gateway_settings(
        data_dir=tmp_path / "data", database_url=template.format(port=proxy.port)
    )
    engine = create_engine(direct, pool_size=3)
    try:
        with serve_in_thread(create_app(settings)) as base_url:
            yield Stack("proxied", settings, base_url, engine, create_sessionmaker(engine)), proxy
    finally:
        await engine.dispose()
        proxy.stop()


async def _wait_until(what: str, probe: Callable[[], Any]) -> None:
    for _ in range(400):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


async def _lock_waiters(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(count or 0)


async def _lock_account(conn: AsyncConnection, tenant: TenantHandle) -> None:
    await conn.execute(
        select(CreditAccount).where(CreditAccount.tenant_id == tenant.id).with_for_update()
    )


async def _open_hold(stack: Stack, tenant: TenantHandle) -> bool:
    async with stack.sessions() as session:
        held = await session.scalar(
            select(func.count())
            .select_from(CreditHold)
            .where(CreditHold.tenant_id == tenant.id, CreditHold.status == "open")
        )
    return bool(held)


@pytest.mark.parametrize("route", ["native", "openai"])
@pytest.mark.parametrize("statement", ["reserve", "settle"])
async def test_connection_cut_mid_statement_is_503_and_charges_nothing(
    proxied_stack: tuple[Stack, TcpProxy], route: str, statement: str
) -> None:
    """The gateway's statement waits on a row lock the test holds; the proxy then cuts
    every live connection, so the statement dies in flight ("connection was closed in
    the middle of operation"), and then serves again."""
    stack, proxy = proxied_stack
    tenant = await stack.new_tenant(credits=CREDITS)
    path = GENERATE if route == "native" else "/v1/images/generations"
    async with stack.client() as client:
        assert (await client.post(path, json={"prompt": "warm"}, headers=tenant.auth)).is_success
        before = await _ledger(stack, tenant)
        if statement == "settle":
            await stack.set_faults({"kind": "delay", "seconds": 3})
        async with stack.engine.connect() as lock:
            if statement == "reserve":
                await _lock_account(lock, tenant)
            pending = asyncio.create_task(
                client.post(path, json={"prompt": "cut"}, headers=tenant.auth)
            )
            if statement == "settle":  # the hold is taken, the upstream is still drawing
                await _wait_until("the reservation", lambda: _open_hold(stack, tenant))
                await _lock_account(lock, tenant)
            await _wait_until("the gateway to wait on the lock", lambda: _lock_waiters(stack))
            proxy.stop()  # cut mid-statement...
            proxy.start()  # ...and reachable again, so only the statement in flight fails
            await lock.rollback()
        response = await pending
        after = await _ledger(stack, tenant)
        held = await _open_hold(stack, tenant)
        await stack.set_faults()
        after_cut = await client.post(path, json={"prompt": "again"}, headers=tenant.auth)
    error = _assert_json_error(response, 503, openai=route == "openai")
    assert error["code"] in ("dependency_unavailable", "unavailable")
    assert "database is unavailable" in error["message"]
    if statement == "reserve":  # refused before anything was held
        assert after == before
    else:  # held, then released by the failure path: the balance is whole again
        assert (after[0], after[2]) == (before[0], before[2])
        assert not held
    assert after_cut.is_success, after_cut.text  # the same gateway serves again
    assert await stack.balance(tenant) == before[0] - PRICE
