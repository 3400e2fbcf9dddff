"""deploy/kubernetes/, checked without a cluster: every manifest against the Kubernetes
schemas bundled with kubernetes-validate (offline), and against the Settings class, the
CLI, the Dockerfile and the app's routes, like the compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url
from starlette.routing import Match

from app.cli import _migrate, _parser, _serve
from app.main import create_app
from app.settings import Settings
from tests.deploy.files import (
    ENV_PREFIX,
    REPO,
    all_settings_env_names,
    load_compose,
    parse_dockerfile,
    settings_from,
)

DIR = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(DIR.glob("*.yaml"))
SECRET_TEMPLATE = DIR / "secret.yaml.example"


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _objects() -> dict[str, dict[str, Any]]:
    """Every applied object by kind (one of each kind here)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in _load(path):
            assert doc["kind"] not in objects, f"{path.name}: a second {doc['kind']}"
            objects[doc["kind"]] = doc
    return objects


OBJECTS = _objects()
DEPLOYMENT = OBJECTS["Deployment"]
JOB = OBJECTS["Job"]
POD = DEPLOYMENT["spec"]["template"]
CONFIGMAP = OBJECTS["ConfigMap"]
(GATEWAY,) = POD["spec"]["containers"]
(MIGRATE,) = JOB["spec"]["template"]["spec"]["containers"]
(SECRET,) = _load(SECRET_TEMPLATE)
CONFIG = OBJECTS["ConfigMap"]


def test_the_manifests_are_the_expected_objects() -> None:
    assert set(OBJECTS) == {
        "ConfigMap",
        "Deployment",
        "Job",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Kustomization",
    }
    assert OBJECTS["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert OBJECTS["PodDisruptionBudget"]["apiVersion"] == "policy/v1"
    assert "Secret" not in OBJECTS, "no secret is applied from this directory"


@pytest.mark.parametrize("path", [*MANIFESTS, SECRET_TEMPLATE], ids=lambda p: p.name)
def test_each_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    version = kubernetes_validate.latest_version()
    for doc in _load(path):
        if doc["kind"] == "Kustomization":  # kustomize's, not an API object
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    broken = yaml.safe_load((DIR / "deployment.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


# --------------------------------------------------------------------------- settings


def _env_names(container: dict[str, Any]) -> set[str]:
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == CONFIG["metadata"]["name"]
        names |= set(CONFIG["data"])
    return names


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """What the container sees with the ConfigMap and the template Secret applied."""
    env = dict(CONFIG["data"])
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET["metadata"]["name"]
        env[entry["name"]] = SECRET["stringData"][ref["key"]]
    return env


def test_every_imagegate_variable_the_manifests_set_is_a_setting() -> None:
    known = all_settings_env_names()
    for container in (GATEWAY, MIGRATE):
        for name in _env_names(container):
            if name.startswith(ENV_PREFIX):
                assert name in known, f"{container['name']}: {name} is not a Settings field"


def test_the_required_settings_are_present() -> None:
    names = _env_names(GATEWAY)
    # Postgres, S3 and Valkey: the shape that several replicas can share; one signing
    # secret for all of them, so a link signed by one pod is valid on another.
    assert {
        "IMAGEGATE_DATABASE_URL",
        "IMAGEGATE_S3_BUCKET",
        "IMAGEGATE_REDIS_URL",
        "IMAGEGATE_URL_SIGNING_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    } <= names
    assert "IMAGEGATE_EMULATE" not in names


def test_no_secret_is_inline_and_every_secret_comes_from_the_secret() -> None:
    secret_like = ("DATABASE_URL", "SECRET", "TOKEN", "API_KEY", "PASSWORD", "ACCESS_KEY")
    for name in CONFIG["data"]:
        assert not any(word in name for word in secret_like), f"{name} belongs in the Secret"
    for container in (GATEWAY, MIGRATE):
        for entry in container["env"]:
            assert "value" not in entry, f"{entry['name']}: set inline"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["key"] in SECRET["stringData"], f"{ref['key']} is not in the template"
    # The template holds placeholders only, and nothing applies it.
    assert all("CHANGE-ME" in value for value in SECRET["stringData"].values())
    assert SECRET_TEMPLATE.name not in OBJECTS["Kustomization"]["resources"]
    assert SECRET_TEMPLATE.suffix not in (".yaml", ".yml", ".json")  # `apply -f dir` skips it


def test_the_environment_is_valid_settings_for_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(_environment(GATEWAY), monkeypatch)
    database = make_url(settings.resolved_database_url)
    assert database.drivername == "postgresql+asyncpg" and not settings.is_embedded_database
    assert settings.s3_bucket and settings.redis_url and settings.url_signing_secret
    assert settings.admin_token is not None
    assert not settings.emulate
    # The migrate Job sees exactly what the gateway sees.
    assert _environment(MIGRATE) == _environment(GATEWAY)
    assert MIGRATE["envFrom"] == GATEWAY["envFrom"] and MIGRATE["env"] == GATEWAY["env"]


def test_optional_secret_keys_are_only_the_optional_settings() -> None:
    optional = {
        entry["name"]
        for entry in GATEWAY["env"]
        if entry["valueFrom"]["secretKeyRef"].get("optional")
    }
    assert optional == {
        "IMAGEGATE_ADMIN_TOKEN",
        "IMAGEGATE_GEMINI_API_KEY",
        "IMAGEGATE_OPENAI_API_KEY",
        "IMAGEGATE_BFL_API_KEY",
    }


# --------------------------------------------------------------------------- the pods


def test_the_gateway_serves_what_the_image_exposes() -> None:
    final = parse_dockerfile((REPO / "Dockerfile").read_text())[-1]
    cmd = final.last("CMD")
    assert cmd is not None and GATEWAY["command"] == cmd.exec_form
    args = _parser().parse_args(GATEWAY["command"][1:])
    assert args.run is _serve and args.host == "0.0.0.0"
    (port,) = GATEWAY["ports"]
    assert port["containerPort"] == args.port == int(final.last("EXPOSE").args)  # type: ignore[union-attr]
    compose_image = load_compose()["services"]["gateway"]["image"]
    assert GATEWAY["image"] == MIGRATE["image"] == compose_image


def test_the_migrate_job_runs_imagegate_migrate_once() -> None:
    assert _parser().parse_args(MIGRATE["command"][1:]).run is _migrate
    assert MIGRATE["command"][0] == "imagegate"
    assert JOB["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert JOB["spec"]["backoffLimit"] >= 1
    assert "migrate-job.yaml" not in OBJECTS["Kustomization"]["resources"]


def _routed(app: Any, path: str) -> bool:
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def test_probes_ask_routes_the_app_has() -> None:
    app = create_app(Settings(_env_file=None))
    port_name = GATEWAY["ports"][0]["name"]
    assert GATEWAY["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
    assert GATEWAY["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port_name}
    assert GATEWAY["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert _routed(app, "/readyz") and _routed(app, "/healthz")
    assert not _routed(app, "/no-such-probe")


@pytest.mark.parametrize("pod", [POD, JOB["spec"]["template"]], ids=["gateway", "migrate"])
def test_pods_run_non_root_read_only_without_privileges(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    final = parse_dockerfile((REPO / "Dockerfile").read_text())[-1]
    user = final.last("USER")
    assert user is not None
    uid = int(user.args.split(":", 1)[0])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == uid
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # The only writable places: emptyDirs for /tmp and the image's data directory.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/data"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_the_grace_period_outlasts_the_drain() -> None:
    """SIGTERM: ready 503 for the drain delay, then in-flight requests get the drain time;
    the kubelet's SIGKILL must come after both (the settings the ConfigMap gives, else
    the defaults)."""
    env = CONFIGMAP["data"]
    settings = Settings(_env_file=None)
    delay = float(env.get("IMAGEGATE_DRAIN_DELAY_SECONDS", settings.drain_delay_seconds))
    drain = float(env.get("IMAGEGATE_DRAIN_SECONDS", settings.drain_seconds))
    grace = POD["spec"]["terminationGracePeriodSeconds"]
    assert grace > delay + drain
    # The gateway drains by itself on SIGTERM: no preStop sleep to keep in step with it.
    assert "lifecycle" not in GATEWAY


# --------------------------------------------------------------------------- wiring


def test_service_hpa_and_pdb_select_the_gateway_pods() -> None:
    labels = POD["metadata"]["labels"]
    selector = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = OBJECTS["Service"]["spec"]
    assert service["selector"] == selector
    (port,) = service["ports"]
    assert port["targetPort"] == GATEWAY["ports"][0]["name"]
    assert OBJECTS["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert JOB["spec"]["template"]["metadata"]["labels"].items() != selector.items()
    hpa = OBJECTS["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])
    assert hpa["minReplicas"] >= 2, "a single replica cannot keep the PDB and drain"
    assert OBJECTS["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_kustomization_lists_every_manifest_but_the_one_shots() -> None:
    resources = OBJECTS["Kustomization"]["resources"]
    assert all((DIR / name).is_file() for name in resources)
    applied = {p.name for p in MANIFESTS} - {"kustomization.yaml", "migrate-job.yaml"}
    assert set(resources) == applied
    (image,) = OBJECTS["Kustomization"]["images"]
    assert image["name"] == GATEWAY["image"].split(":")[0]
