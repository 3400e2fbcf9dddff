"""Domain errors. Each carries its HTTP status and machine code; one handler renders them."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


class InvalidRequest(GatewayError):
    status_code = 400
    code = "invalid_request"


class WebhookSecretMissing(InvalidRequest):
    """A `webhookUrl` for a tenant without a signing secret (none is made on the fly: the
    receiver could not verify what it gets without being told the secret)."""

    code = "webhook_secret_missing"

    def __init__(self, tenant: str) -> None:
        super().__init__(
            f"webhookUrl: tenant {tenant!r} has no webhook signing secret; an operator creates"
            f" one with `imagegate tenants webhook-secret {tenant}` (or POST"
            f" /admin/v1/tenants/{tenant}/webhook-secret) and gives it to the receiver",
            field="webhookUrl",
        )


class ContentRejected(GatewayError):
    """The provider refused the prompt or its output; nothing is charged."""

    status_code = 400
    code = "content_rejected"


class Unauthorized(GatewayError):
    status_code = 401
    code = "unauthorized"


class InsufficientCredits(GatewayError):
    status_code = 402
    code = "insufficient_credits"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"Insufficient credits: this request needs {required} and {available} are available",
            required=required,
            available=available,
            # The same numbers under the names elizaOS Cloud clients read.
            requiredCredits=required,
            availableCredits=available,
        )


class KeyCreditLimit(GatewayError):
    """The API key's own credit limit (not the tenant's balance) does not cover a request."""

    status_code = 402
    code = "key_credit_limit"

    def __init__(self, required: int, available: int, *, limit: int, period: str) -> None:
        per = "in total" if period == "total" else f"per {period} (UTC)"
        super().__init__(
            f"This API key's credit limit is reached: the request needs {required} credits "
            f"and {available} of the key's limit of {limit} {per} are left. This is the "
            "key's own limit, not the tenant's balance; nothing was charged",
            required=required,
            available=available,
            # The same numbers under the names the tenant's 402 also carries.
            requiredCredits=required,
            availableCredits=available,
            creditLimit=limit,
            limitPeriod=period,
        )


class Forbidden(GatewayError):
    status_code = 403
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"

    def __init__(self, model: str, allowed: list[str]) -> None:
        super().__init__(
            f"This API key may not use model {model!r}; it may use: {', '.join(allowed)}",
            field="model",
            allowed=allowed,
        )


class KeyExpired(Unauthorized):
    code = "key_expired"


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "payload_too_large"


class GenerationFailed(GatewayError):
    status_code = 500
    code = "generation_failed"


class ProviderNotConfigured(GatewayError):
    status_code = 503
    code = "provider_not_configured"


class DependencyUnavailable(GatewayError):
    status_code = 503
    code = "dependency_unavailable"
