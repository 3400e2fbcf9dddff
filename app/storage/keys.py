"""The object key layout, built and parsed in one place.

- a generated image: `<tenant>/<yyyy>/<mm>/<generation>-<index>.webp`, dated in UTC
- an async job's source images: `<tenant>/jobs/<job>/source` (the first), then
  `<tenant>/jobs/<job>/source-1`, `source-2`... in order, until the job ends
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

# One path component: no separators, no dot-segments, nothing a filesystem or URL mangles.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_IMAGE = re.compile(r"^(?P<tenant>[^/]+)/\d{4}/\d{2}/(?P<generation>[^/]+)-(?P<index>\d+)\.webp$")
_JOB_SOURCE = re.compile(r"^(?P<tenant>[^/]+)/jobs/(?P<job>[^/]+)/source(?:-[1-9]\d*)?$")


@dataclass(frozen=True, slots=True)
class ImageKey:
    tenant_id: str
    generation_id: str
    index: int


@dataclass(frozen=True, slots=True)
class JobSourceKey:
    tenant_id: str
    job_id: str


def object_key(tenant_id: str, generation_id: str, index: int, created: datetime) -> str:
    """`<tenant>/<yyyy>/<mm>/<generation>-<index>.webp`, scoped by tenant, dated in UTC."""
    for name, value in (("tenant_id", tenant_id), ("generation_id", generation_id)):
        if not _COMPONENT.fullmatch(value) or ".." in value:
            raise ValueError(f"{name} is not a safe object key component: {value!r}")
    if index < 0:
        raise ValueError("index must be >= 0")
    # Naive datetimes are taken to be UTC, the only timezone the gateway stores.
    when = created.astimezone(UTC) if created.tzinfo else created
    return f"{tenant_id}/{when:%Y}/{when:%m}/{generation_id}-{index}.webp"


def job_source_key(tenant_id: str, job_id: str, index: int = 0) -> str:
    """The key of an async job's `index`-th source image."""
    if index < 0:
        raise ValueError("index must be >= 0")
    return f"{tenant_id}/jobs/{job_id}/source" + (f"-{index}" if index else "")


def parse_image_key(key: str) -> ImageKey | None:
    """The parts of a generated image's key, or None for any other key."""
    match = _IMAGE.match(key)
    if match is None:
        return None
    return ImageKey(match["tenant"], match["generation"], int(match["index"]))


def parse_job_source_key(key: str) -> JobSourceKey | None:
    """The parts of a job source image's key, or None for any other key."""
    match = _JOB_SOURCE.match(key)
    return None if match is None else JobSourceKey(match["tenant"], match["job"])
