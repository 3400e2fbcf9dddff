"""Property-based fuzzing of every operation in the gateway's OpenAPI schema.

Schemathesis reads `/openapi.json` from a live gateway and sends generated requests,
valid and invalid, to each operation (native, OpenAI-compatible and admin) with a real
key (plenty of credits, limits out of the way) or, under /admin/v1, the admin token, so
the happy paths really generate and store images against the emulated providers.
Whatever it sends, the gateway must answer with its own 2xx/4xx, never a 5xx, and every
answer must be one the schema declares: its status, its content type and its body.
Bounded and repeatable: a fixed number of examples per operation and mode,
derandomized, no shrinking, no example database.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.tenants import service as tenants
from tests.support.gateway import Stack, TenantHandle

pytestmark = pytest.mark.slow  # ~45 s here

# Per operation and mode: about 25 operations x 2 modes stay within a minute or two.
EXAMPLES_PER_OPERATION = 20
CONFORMANCE = [response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest_asyncio.fixture(scope="module")
async def fuzz_tenant(embedded_stack: Stack) -> TenantHandle:
    tenant = await embedded_stack.new_tenant(credits=1_000_000)
    async with embedded_stack.sessions() as session, session.begin():
        row = await tenants.get_tenant(session, tenant.name)
        await tenants.set_rate_limits(session, row, per_minute=100_000, key_per_minute=100_000)
    return tenant


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    auth: dict[str, str],
    found: list[str],
    mismatches: list[str],
) -> int:
    """Send generated requests of one mode (valid or invalid) to one operation."""
    sent = 0

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=base_url, headers=auth, timeout=60)
        if response.status_code >= 500:
            found.append(
                f"{operation.label} ({mode.value}) -> {response.status_code} "
                f"{response.text[:300]!r}\n  reproduce: {case.as_curl_command()}"
            )
            return
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as failures:
            mismatches.append(f"{operation.label} ({mode.value}): {failures}")

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (no parameters, no body).
        if mode is not GenerationMode.NEGATIVE:
            raise
    return sent


def _auth(label: str, stack: Stack, tenant: TenantHandle) -> dict[str, str]:
    if label.split(" ", 1)[1].startswith("/admin/"):
        assert stack.settings.admin_token is not None
        return {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}
    return tenant.auth


def test_no_input_gives_a_server_error(embedded_stack: Stack, fuzz_tenant: TenantHandle) -> None:
    # The lazy `schemathesis.pytest.from_fixture` integration reads a private pytest
    # attribute that pytest 9 removed, so each operation is driven through Hypothesis here.
    schema = schemathesis.openapi.from_url(f"{embedded_stack.base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result.err()}"
        operations.append(result.ok())
    labels = {op.label for op in operations}
    for label in ("POST /api/v1/generate-image", "POST /v1/images/edits", "GET /admin/v1/usage"):
        assert label in labels
    server_errors: list[str] = []
    mismatches: list[str] = []
    sent = {
        (op.label, mode.value): _fuzz(
            op,
            mode,
            embedded_stack.base_url,
            _auth(op.label, embedded_stack, fuzz_tenant),
            server_errors,
            mismatches,
        )
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    }
    assert not server_errors, "\n".join(server_errors)
    assert not mismatches, "\n".join(mismatches[:20])
    assert all(sent[(op.label, "positive")] > 0 for op in operations), sent
