"""Stored objects without an image record: what a crash between store and record leaves.

A generation row is written before any of its objects, so an object whose generation is
unknown, or finished without recording that object, is an orphan. Objects of pending
generations are in flight and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import Generation, Image, Job
from app.db.statuses import GenerationStatus, JobStatus
from app.storage.base import ImageStore
from app.storage.keys import object_key, parse_image_key, parse_job_source_key


@dataclass(frozen=True, slots=True)
class OrphanReport:
    scanned: int
    orphans: tuple[str, ...]


def generation_keys(generation: Generation) -> list[str]:
    """Every key a generation may have written (one per requested image)."""
    return [
        object_key(generation.tenant_id, generation.id, index, generation.created_at)
        for index in range(generation.num_images)
    ]


async def find_orphans(
    store: ImageStore, sessions: async_sessionmaker[AsyncSession]
) -> OrphanReport:
    keys = await store.list_keys()
    orphans: list[str] = []
    async with sessions() as session:
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            recorded = set(
                await session.scalars(select(Image.storage_key).where(Image.storage_key.in_(batch)))
            )
            unrecorded = [key for key in batch if key not in recorded]
            ids = {p.generation_id for k in unrecorded if (p := parse_image_key(k))}
            pending = set(
                await session.scalars(
                    select(Generation.id).where(
                        Generation.id.in_(ids), Generation.status == GenerationStatus.PENDING
                    )
                )
            )
            job_ids = {j.job_id for k in unrecorded if (j := parse_job_source_key(k))}
            # A queued or running job's source image waits in the store for its runner.
            waiting = set(
                await session.scalars(
                    select(Job.id).where(
                        Job.id.in_(job_ids), Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))
                    )
                )
            )
            for key in unrecorded:
                image = parse_image_key(key)
                if image is not None and image.generation_id in pending:
                    continue
                job = parse_job_source_key(key)
                if job is not None and job.job_id in waiting:
                    continue
                orphans.append(key)
    return OrphanReport(scanned=len(keys), orphans=tuple(orphans))


async def remove_orphans(store: ImageStore, report: OrphanReport) -> int:
    for key in report.orphans:
        await store.delete(key)
    return len(report.orphans)
