"""Request dependencies: the process's services and the authenticated caller."""

from __future__ import annotations

from fastapi import Request

from app.services import Services
from app.tenants.service import AuthContext, authenticate


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticated(request: Request) -> AuthContext:
    services = get_services(request)
    async with services.sessions() as session, session.begin():
        return await authenticate(session, request.headers.get("authorization"))


def external_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
