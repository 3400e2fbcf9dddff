"""`GET /files/{key}`: serve stored images behind signed URLs (expiring, or with
`expires=0` never expiring); from the local directory, or from S3 for links it cannot presign."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.deps import ImageStoreDep, UrlSignerDep
from app.imaging.formats import sniff_image_type
from app.storage.base import ObjectNotFound, StorageUnavailable
from app.storage.signing import NEVER_EXPIRES, cache_control

router = APIRouter()

# Unix seconds fit in this many digits until the year 33658; longer is garbage.
_MAX_EXPIRES_DIGITS = 12


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "code": code},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/files/{key:path}", include_in_schema=False)
async def get_file(
    key: str,
    signer: UrlSignerDep,
    store: ImageStoreDep,
    expires: str | None = None,
    signature: str | None = None,
) -> Response:
    # Query parameters are optional and parsed by hand so that a missing or malformed
    # one is a 403 like any other bad signature, not a 422 validation error.
    if (
        expires is None
        or signature is None
        # isascii: str.isdigit() also accepts digits like "²" that int() rejects.
        or not (expires.isascii() and expires.isdigit())
        or len(expires) > _MAX_EXPIRES_DIGITS
        or not signer.signature_matches(key, int(expires), signature)
    ):
        return _error(403, "This file URL is not valid", "invalid_signature")
    expires_at = int(expires)
    now = time.time()
    if not signer.verify(key, expires_at, signature, now):
        return _error(403, "This file URL has expired; request a new one", "url_expired")

    try:
        data = await store.get(key)
    except (ObjectNotFound, ValueError):
        return _error(404, "File not found", "not_found")
    except StorageUnavailable:
        return _error(503, "Image storage is unavailable", "dependency_unavailable")

    remaining = None if expires_at == NEVER_EXPIRES else max(0, int(expires_at - now))
    return Response(
        content=data,
        # WebP unless the /v1 routes stored another output_format (png, jpeg) under the key.
        media_type=sniff_image_type(data) or "image/webp",
        headers={
            "Cache-Control": cache_control(remaining),
            "X-Content-Type-Options": "nosniff",
        },
    )
