"""A tenant's image history: pages of its images, one image, and deleting one.

Only the tenant's own, not deleted images are visible; another tenant's image and a
deleted one are the same "not found", so ids leak nothing. Deleting removes the stored
object and marks the row; the generation and its ledger entries stay (billing history).
The service flushes; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Generation, Image, utcnow
from app.errors import InvalidRequest, NotFound
from app.storage.base import ImageStore

DEFAULT_LIMIT = 24
MAX_LIMIT = 100
_ID_MAX_CHARS = 36


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image with what was asked for it (from its generation)."""

    id: str
    generation_id: str
    index: int
    storage_key: str
    mime_type: str
    file_size: int
    width: int
    height: int
    model: str  # the model that delivered it (a fallback, possibly)
    text: str | None
    prompt: str
    style_preset: str
    aspect_ratio: str
    image_to_image: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImagePage:
    items: tuple[ImageRecord, ...]
    has_more: bool
    next_cursor: str | None  # continues after the last item, whichever way it was fetched
    next_offset: int | None  # only for offset paging


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int | None = None
    model: str | None = None


async def list_images(session: AsyncSession, tenant_id: str, page: PageRequest) -> ImagePage:
    """Newest first. Keyset pages (`cursor`) stay stable while images are added;
    `offset` pages are there for clients that count."""
    if page.cursor is not None and page.offset is not None:
        raise InvalidRequest("Pass either cursor or offset, not both", field="cursor")
    query = _visible(tenant_id)
    if page.model is not None:
        query = query.where(Image.model == page.model)
    if page.cursor is not None:
        created, image_id = decode_cursor(page.cursor)
        query = query.where(
            or_(
                Image.created_at < created,
                and_(Image.created_at == created, Image.id < image_id),
            )
        )
    query = query.order_by(Image.created_at.desc(), Image.id.desc()).limit(page.limit + 1)
    if page.offset:
        query = query.offset(page.offset)
    rows = (await session.execute(query)).all()
    items = tuple(_record(*row) for row in rows[: page.limit])
    has_more = len(rows) > page.limit
    next_offset = None
    if has_more and page.offset is not None:
        next_offset = page.offset + len(items)
    return ImagePage(
        items=items,
        has_more=has_more,
        next_cursor=encode_cursor(items[-1]) if has_more else None,
        next_offset=next_offset,
    )


async def get_image(session: AsyncSession, tenant_id: str, image_id: str) -> ImageRecord:
    if len(image_id) > _ID_MAX_CHARS:
        raise NotFound("Image not found")
    row = (await session.execute(_visible(tenant_id).where(Image.id == image_id))).one_or_none()
    if row is None:
        raise NotFound("Image not found")
    return _record(*row)


async def delete_image(
    session: AsyncSession, store: ImageStore, tenant_id: str, image_id: str
) -> None:
    """Remove the stored object, then mark the row deleted.

    The row is locked first (Postgres), so of two concurrent deletes one wins and the
    other finds nothing. If storage fails, nothing is marked and the caller may retry.
    """
    if len(image_id) > _ID_MAX_CHARS:
        raise NotFound("Image not found")
    image = await session.scalar(
        select(Image)
        .where(Image.id == image_id, Image.tenant_id == tenant_id, Image.deleted_at.is_(None))
        .with_for_update()
    )
    if image is None:
        raise NotFound("Image not found")
    await store.delete(image.storage_key)
    image.deleted_at = utcnow()
    await session.flush()


def encode_cursor(record: ImageRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    invalid = InvalidRequest(
        "cursor is not valid: pass the nextCursor of a previous page unchanged", field="cursor"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, image_id = raw.split("|")
        created = datetime.fromisoformat(created_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    if created.tzinfo is None or not image_id or len(image_id) > _ID_MAX_CHARS:
        raise invalid
    return created, image_id


def _visible(tenant_id: str) -> Select[Image, str, str, str, bool]:
    return (
        select(
            Image,
            Generation.prompt,
            Generation.style_preset,
            Generation.aspect_ratio,
            Generation.image_to_image,
        )
        .join(Generation, Generation.id == Image.generation_id)
        .where(Image.tenant_id == tenant_id, Image.deleted_at.is_(None))
    )


def _record(
    image: Image, prompt: str, style_preset: str, aspect_ratio: str, image_to_image: bool
) -> ImageRecord:
    return ImageRecord(
        id=image.id,
        generation_id=image.generation_id,
        index=image.index,
        storage_key=image.storage_key,
        mime_type=image.mime_type,
        file_size=image.bytes,
        width=image.width,
        height=image.height,
        model=image.model,
        text=image.text,
        prompt=prompt,
        style_preset=style_preset,
        aspect_ratio=aspect_ratio,
        image_to_image=image_to_image,
        created_at=image.created_at,
    )
