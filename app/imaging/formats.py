"""The one image-format sniffer: what the magic bytes say, whatever anyone declared.

Used wherever bytes arrive whose label cannot be trusted: a client's `sourceImage`, an
upstream's image. Stricter checks a caller needs (the WebP passthrough's framing check
in `app/imaging/webp.py`) stay with that caller; this only names the format.
"""

from __future__ import annotations

# The formats the gateway takes in and passes on (contract inputs, provider outputs).
STILL_TYPES: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """ "image/png", "image/jpeg", "image/webp" or "image/gif" from the magic bytes, else None.

    GIF is named (an upstream may send one) but is not in `STILL_TYPES`: callers that
    accept only those check membership.
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime_type in _MAGIC:
        if data.startswith(magic):
            return mime_type
    return None
