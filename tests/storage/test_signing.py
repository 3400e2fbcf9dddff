from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.settings import Settings
from app.storage.signing import NEVER_EXPIRES, UrlSigner, cache_control, load_or_create_secret

KEY = "tenant-a/2025/01/gen-1-0.webp"
NOW = 1_700_000_000


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(b"0123456789abcdef0123456789abcdef")


def test_round_trip(signer: UrlSigner) -> None:
    signature = signer.sign(KEY, NOW + 60)
    assert signer.verify(KEY, NOW + 60, signature, now=NOW)


def test_signature_is_url_safe(signer: UrlSigner) -> None:
    for i in range(50):
        signature = signer.sign(f"{KEY}{i}", NOW + i)
        assert set(signature) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_other_key_does_not_verify(signer: UrlSigner) -> None:
    signature = signer.sign(KEY, NOW + 60)
    assert not signer.verify("tenant-b/2025/01/gen-1-0.webp", NOW + 60, signature, now=NOW)
    assert not signer.verify(KEY + "x", NOW + 60, signature, now=NOW)


def test_other_expiry_does_not_verify(signer: UrlSigner) -> None:
    signature = signer.sign(KEY, NOW + 60)
    assert not signer.verify(KEY, NOW + 61, signature, now=NOW)
    assert not signer.verify(KEY, NOW + 6000, signature, now=NOW)


def test_key_and_expiry_cannot_be_shuffled(signer: UrlSigner) -> None:
    # If the message were a plain concatenation, "1:2" + key could equal "12" + ":" + key.
    assert signer.sign("2:x", 1) != signer.sign("x", 12)
    assert not signer.signature_matches("x", 12, signer.sign("2:x", 1))


def test_expired_does_not_verify(signer: UrlSigner) -> None:
    signature = signer.sign(KEY, NOW)
    assert signer.verify(KEY, NOW, signature, now=NOW)
    assert not signer.verify(KEY, NOW, signature, now=NOW + 1)
    assert signer.signature_matches(KEY, NOW, signature)


def test_other_secret_does_not_verify(signer: UrlSigner) -> None:
    other = UrlSigner(b"another secret entirely, 32 bytes")
    assert not other.verify(KEY, NOW + 60, signer.sign(KEY, NOW + 60), now=NOW)


@pytest.mark.parametrize("bad", ["", "x", "é" * 43, "A" * 43])
def test_garbage_signatures_fail_cleanly(signer: UrlSigner, bad: str) -> None:
    assert not signer.verify(KEY, NOW + 60, bad, now=NOW)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"")


def test_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, url_signing_secret="configured-secret-value")
    assert load_or_create_secret(settings) == b"configured-secret-value"
    assert not (tmp_path / "url-signing.key").exists()


def test_generated_secret_is_persisted_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    settings = Settings(data_dir=data_dir)
    first = load_or_create_secret(settings)
    path = data_dir / "url-signing.key"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    # A restart reads the same secret, so URLs handed out earlier stay valid.
    assert load_or_create_secret(Settings(data_dir=data_dir)) == first
    assert [p.name for p in data_dir.iterdir()] == ["url-signing.key"]


def test_unusable_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "url-signing.key").write_text("short")
    with pytest.raises(RuntimeError, match=r"url-signing\.key"):
        load_or_create_secret(Settings(data_dir=tmp_path))


def test_a_never_expiring_url_verifies_at_any_time(signer: UrlSigner) -> None:
    signature = signer.sign(KEY, NEVER_EXPIRES)
    for now in (0, NOW, NOW + 10 * 365 * 86400):
        assert signer.verify(KEY, NEVER_EXPIRES, signature, now=now)
    # Still bound to its key, and not a way to extend an expiring URL.
    assert not signer.verify("tenant-b/2025/01/gen-1-0.webp", NEVER_EXPIRES, signature, now=NOW)
    assert not signer.verify(KEY, NEVER_EXPIRES, signer.sign(KEY, NOW + 60), now=NOW)


def test_file_url_with_ttl_zero_never_expires(signer: UrlSigner) -> None:
    query = parse_qs(urlsplit(signer.file_url(KEY, "https://gw.example/", 0)).query)
    assert query["expires"] == ["0"]
    assert signer.verify(KEY, 0, query["signature"][0], now=NOW * 2)


def test_cache_control_is_always_private() -> None:
    assert cache_control(300) == "private, max-age=300"
    assert cache_control(None) == "private, max-age=86400"


@pytest.mark.parametrize(("ttl", "valid"), [(0, True), (1, False), (59, False), (60, True)])
def test_url_ttl_is_zero_or_at_least_a_minute(tmp_path: Path, ttl: int, valid: bool) -> None:
    if valid:
        settings = Settings(_env_file=None, data_dir=tmp_path, url_ttl_seconds=ttl)
        assert settings.url_ttl_seconds == ttl
    else:
        with pytest.raises(ValueError, match="IMAGEGATE_URL_TTL_SECONDS"):
            Settings(_env_file=None, data_dir=tmp_path, url_ttl_seconds=ttl)
