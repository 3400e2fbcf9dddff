"""The application factory."""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import account, files, generate, health, images, jobs, models
from app.api import admin as admin_api
from app.api import docs as api_docs
from app.api.drain import Drain, DrainGate
from app.api.errors import install_error_handlers
from app.api.openai import routes as openai_routes
from app.api.openapi import install_openapi
from app.console import routes as console
from app.dashboard import routes as dashboard
from app.emulators.automatic1111 import create_automatic1111_emulator
from app.emulators.bfl import create_bfl_emulator
from app.emulators.gemini import create_gemini_emulator
from app.emulators.openai import create_openai_emulator
from app.lifespan import running_services
from app.observability.logging import configure_logging
from app.observability.metrics import Metrics
from app.observability.middleware import GatewayMiddleware
from app.server_limits import QuietDisconnects
from app.settings import Settings


def create_app(
    settings: Settings | None = None, *, drain: Drain | None = None, serving: bool = False
) -> FastAPI:
    """The gateway. `serving`: under `imagegate serve` (migrated already, SIGTERM drains;
    see app/lifespan.py); `drain` may be given to start a drain by hand (tests)."""
    settings = settings or Settings()
    drain = drain or Drain()
    metrics = Metrics()
    emulators: dict[str, ASGIApp] = {}
    if settings.emulate:
        # Fault control inside a gateway is admin work: it needs the admin token, and
        # without one it is absent (a standalone emulator process stays open).
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        on = token is not None
        emulators["gemini"] = create_gemini_emulator(control=on, control_token=token)
        emulators["openai"] = create_openai_emulator(control=on, control_token=token)
        emulators["bfl"] = create_bfl_emulator(control=on, control_token=token)
        emulators["automatic1111"] = create_automatic1111_emulator(control=on, control_token=token)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(
            app, settings, emulators, metrics, drain=drain, serving=serving
        ):
            yield

    app = FastAPI(
        **_NO_NATIVE_TELEMETRY,
        title="imagegate",
        version="0.1.0",
        summary="Self-hosted image-generation gateway",
        lifespan=lifespan,
        # FastAPI's pages load CDN scripts on the dashboard's origin; ours are local (docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(generate.router)
    app.include_router(files.router)
    if settings.docs_enabled:  # off by default; /openapi.json is served either way
        app.include_router(api_docs.router)
    for router in (models.router, images.router, account.router, dashboard.router):
        app.include_router(router)
    app.include_router(health.router)
    if settings.admin_token is not None:  # absent, not merely refused, without a token
        app.include_router(admin_api.router)
        app.include_router(console.router)  # the operator console at /admin
        app.include_router(console.models_router)
    app.include_router(openai_routes.router)
    app.include_router(jobs.router)
    for name, emulator in emulators.items():
        app.mount(f"/emulators/{name}", emulator)
    app.add_middleware(DrainGate, drain=drain)
    app.add_middleware(QuietDisconnects)  # inside GatewayMiddleware: still access-logged
    app.add_middleware(GatewayMiddleware, metrics=metrics, emulated=bool(emulators))
    app.add_middleware(CollapseSlashes)  # outermost: every layer sees the one path

    install_openapi(app)
    return app


# FastAPI's own OpenTelemetry spans, metrics and logs (FastAPI 0.16x, when the otel
# packages are installed) would double our request span and record exception messages:
# the gateway's spans are its own (app/observability/tracing.py). Older FastAPI has none.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {
        "telemetry": {
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        }
    }
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def serve_app() -> FastAPI:
    """The app of one `imagegate serve --workers N` worker process (uvicorn's factory):
    settings from the environment, which the parent prepared (app/cli.py)."""
    settings = Settings()
    configure_logging(settings.log_level)
    # See app/cli.py: a 1 ms GIL hand-over keeps the event loop responsive.
    sys.setswitchinterval(0.001)
    return create_app(settings, serving=True)


_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")


class CollapseSlashes:
    """`/api/v1//generate-image` (a client's base URL ending in '/') routes as
    `/api/v1/generate-image`. Only runs of '/' collapse; dot segments are left as they
    are (nothing here resolves them, and object keys refuse them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "//" in scope["path"]:
            scope = dict(scope)
            scope["path"] = _SLASHES.sub("/", scope["path"])
            if scope.get("raw_path"):
                scope["raw_path"] = _RAW_SLASHES.sub(b"/", scope["raw_path"])
        await self.app(scope, receive, send)
