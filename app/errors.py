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
