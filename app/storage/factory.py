"""Pick the image store the settings ask for."""

from __future__ import annotations

from app.settings import Settings
from app.storage.base import ImageStore
from app.storage.local import LocalImageStore
from app.storage.s3 import S3ImageStore
from app.storage.signing import UrlSigner, load_or_create_secret


def create_image_store(settings: Settings, *, signer: UrlSigner | None = None) -> ImageStore:
    """S3 when a bucket is configured, else the local directory; both sign /files URLs
    with the same signer (S3 only for links it cannot presign).

    Pass the same `signer` that the `/files` route verifies with (AppState.url_signer);
    without one, a signer is built from the configured or persisted secret.
    """
    if signer is None:
        signer = UrlSigner(load_or_create_secret(settings))
    if settings.s3_bucket:
        # Credentials come the standard AWS way (env, profile, instance role).
        return S3ImageStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            public_base_url=settings.public_base_url,
            ttl_seconds=settings.url_ttl_seconds,
            presign_endpoint_url=settings.s3_presign_endpoint_url,
            signer=signer,
        )
    return LocalImageStore(
        settings.resolved_image_dir,
        signer,
        settings.url_ttl_seconds,
        public_base_url=settings.public_base_url,
    )
