"""Sends the webhooks of finished jobs, a few at a time, from every gateway process.

Each attempt: claim a due delivery (app/jobs/webhooks.py), resolve its host once and
connect to that address (Host header and TLS SNI keep the name), POST the job's final body
signed per Standard Webhooks, read at most `MAX_ANSWER_BYTES` of the answer, follow no
redirect, give up after the total timeout, record what happened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import WebhookDelivery
from app.jobs import webhooks
from app.jobs.claim_loop import ClaimLoop
from app.jobs.webhook_target import ResolutionFailed, TargetRefused, resolve
from app.settings import Settings
from app.tenants.webhook_secret import secret_key

log = logging.getLogger(__name__)

# Of the receiver's answer only the status matters; this much is read, the rest dropped.
MAX_ANSWER_BYTES = 4096
USER_AGENT = "imagegate-webhooks/1"

# (tenant id, job id, base URL) -> the job's final body, as GET /api/v1/jobs/{id} shows it.
RenderJob = Callable[[str, str, str], Awaitable[dict[str, Any]]]


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
    }


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """The one client every delivery goes through: no redirects, short timeouts, no
    environment proxies (a proxy would connect to the name, not the pinned address)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(
            settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
        ),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=0),
        headers={"user-agent": USER_AGENT},
    )


class WebhookDispatcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        render: RenderJob,
        max_attempts: int,
        delays: Sequence[float],
        timeout: float,
        allow_private: bool,
        concurrency: int = 8,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._render = render
        self._max_attempts = max_attempts
        self._delays = tuple(delays)
        self._timeout = timeout
        self._allow_private = allow_private
        # Longer than an attempt may take, so a live dispatcher never loses its delivery.
        self._lease = timedelta(seconds=timeout + 60)
        self._loop = ClaimLoop(
            claim=self._claim,
            handle=self._deliver,
            concurrency=concurrency,
            poll_interval=poll_interval,
            what="a webhook",
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        render: RenderJob,
        poll_interval: float = 1.0,
    ) -> WebhookDispatcher:
        return cls(
            sessions=sessions,
            client=client,
            render=render,
            max_attempts=settings.webhook_max_attempts,
            delays=settings.webhook_retry_delays_seconds,
            timeout=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
            poll_interval=poll_interval,
        )

    def wake(self) -> None:
        self._loop.wake()

    async def run(self) -> None:
        await self._loop.run()

    async def _claim(self) -> WebhookDelivery | None:
        async with self._sessions() as session, session.begin():
            return await webhooks.claim_next(session, self._lease, self._max_attempts)

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        try:
            outcome = await self._attempt(delivery)
            async with self._sessions() as session, session.begin():
                status = await webhooks.record_attempt(
                    session,
                    delivery,
                    outcome,
                    max_attempts=self._max_attempts,
                    delays=self._delays,
                )
            log.info(
                "webhook attempt",
                extra={
                    "job": delivery.job_id,
                    "attempt": delivery.attempts,
                    "status_code": outcome.status_code,
                    "webhook_status": status,
                },
            )
        except Exception as exc:  # noqa: BLE001 - one boundary per attempt, cancellation passes
            # Not recorded (the database, or the body could not be rendered): the lease
            # expires and the next claim makes the next attempt.
            log.warning(
                "webhook attempt not recorded",
                extra={"job": delivery.job_id, "error": type(exc).__name__},
            )

    async def _attempt(self, delivery: WebhookDelivery) -> webhooks.Outcome:
        async with self._sessions() as session:
            secret = await webhooks.tenant_secret(session, delivery.tenant_id)
        if secret is None:
            return webhooks.Outcome(None, "the tenant has no webhook secret", retryable=False)
        body = await self._render(delivery.tenant_id, delivery.job_id, delivery.base_url)
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._post(delivery, secret, payload)
        except TargetRefused as exc:
            return webhooks.Outcome(None, str(exc), retryable=False)
        except ResolutionFailed as exc:
            return webhooks.Outcome(None, str(exc))  # DNS may answer next time
        except TimeoutError:
            return webhooks.Outcome(None, f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return webhooks.Outcome(
                None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )

    async def _post(
        self, delivery: WebhookDelivery, secret: str, payload: bytes
    ) -> webhooks.Outcome:
        target = await resolve(delivery.url, allow_private=self._allow_private)
        headers = signature_headers(secret, delivery.id, int(time.time()), payload)
        headers |= {"content-type": "application/json", "host": target.host_header}
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
        request = self._client.build_request(
            "POST", target.url, content=payload, headers=headers, extensions=extensions
        )
        response = await self._client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES:
                    break
        finally:
            await response.aclose()
        code = response.status_code
        if 200 <= code < 300:
            return webhooks.Outcome(code, None)
        if 300 <= code < 400:
            return webhooks.Outcome(code, f"HTTP {code}: redirects are not followed")
        return webhooks.Outcome(code, f"HTTP {code}")
