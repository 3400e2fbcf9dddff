"""Readers for the deployment files, so tests can check them without a Docker engine:
a Dockerfile parser, .dockerignore matching, compose `${VAR}` interpolation and the
environment-variable names of the Settings class."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENV_PREFIX = "IMAGEGATE_"


# --------------------------------------------------------------------------- Settings


def settings_env_names() -> dict[str, tuple[str, ...]]:
    """Each Settings field and the environment variables that set it (upper case)."""
    names: dict[str, tuple[str, ...]] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names[name] = tuple(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names[name] = (alias.upper(),)
        else:
            names[name] = (f"{ENV_PREFIX}{name}".upper(),)
    return names


def all_settings_env_names() -> set[str]:
    return {env for names in settings_env_names().values() for env in names}


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly this environment would see them."""
    for name in list(os.environ):
        if name.upper() in all_settings_env_names() or name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # everything after the keyword, continuations joined
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)
        return parsed

    def flags(self) -> dict[str, str]:
        """Leading --name=value flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        found: dict[str, str] = {}
        for token in self.args.split():
            if not token.startswith("--"):
                break
            name, _, value = token[2:].partition("=")
            found[name] = value
        return found


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; comments dropped, `\\` continuations joined."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        line = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {start}: {instruction.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return stages


def healthcheck_command(instruction: Instruction) -> list[str]:
    """The exec-form CMD of a HEALTHCHECK instruction."""
    _, _, command = instruction.args.partition("CMD ")
    parsed = json.loads(command.strip())
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def image_reference(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    rest, _, digest = image.partition("@")
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = rest.rpartition(":")
        return repository, tag, digest or None
    return rest, None, digest or None


def is_pinned(image: str) -> bool:
    _, tag, digest = image_reference(image)
    return bool(digest) or (tag is not None and tag != "latest" and "$" not in tag)


# --------------------------------------------------------------------------- build context


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore patterns (Go filepath.Match plus `**`) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        i += 1
    return re.compile("".join(out) + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) in file order; later rules win, as in Docker."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().strip("/")))
        rules.append((negated, _glob_regex(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context path is left out: a rule matches the path or one of its parents."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def build_context(root: Path = REPO) -> list[str]:
    """Files Docker would send as the build context (relative POSIX paths)."""
    ignore = root / ".dockerignore"
    rules = dockerignore_rules(ignore.read_text()) if ignore.exists() else []
    return sorted(
        path.relative_to(root).as_posix()
        for path in _walk(root)
        if not is_ignored(path.relative_to(root).as_posix(), rules)
    )


def _walk(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(root).parts[:1]:
            yield path


def replay_copies(stage: Stage, context: list[str], target: Path, root: Path = REPO) -> Path:
    """Copy what the stage's context COPY instructions copy into `target` (as the image's
    filesystem root); returns the stage's final WORKDIR inside `target`."""
    workdir = PurePosixPath("/")
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        if instruction.keyword != "COPY" or "from" in instruction.flags():
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        *sources, dest = words
        destination = workdir / dest
        for source in sources:
            source = source.rstrip("/")
            inside = [p for p in context if p == source or p.startswith(source + "/")]
            assert inside, f"line {instruction.line}: COPY {source}: not in the build context"
            for path in inside:
                if path == source:  # a file
                    into = (
                        destination / PurePosixPath(path).name
                        if dest.endswith("/") or len(sources) > 1
                        else destination
                    )
                else:  # a directory: its contents go into the destination
                    into = destination / PurePosixPath(path).relative_to(source)
                out = target / str(into).lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / path, out)
    return target / str(workdir).lstrip("/")


# --------------------------------------------------------------------------- compose

_VARIABLE = re.compile(
    r"""\$(?:
        (?P<escaped>\$)
      | \{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}
      | (?P<bare>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, default = match["op"], match["default"] or ""
        present = name in env
        value = env.get(name, "")
        if op == ":-":
            return value if value else default
        if op == "-":
            return value if present else default
        if op in (":?", "?") and not (value if op == ":?" else present):
            raise KeyError(f"{name} is required: {default}")
        return value

    return _VARIABLE.sub(replace, value)


def referenced_variables(text: str) -> set[str]:
    """Names a compose file substitutes (not the $$-escaped ones the container sees)."""
    return {
        match["braced"] or match["bare"]
        for match in _VARIABLE.finditer(text)
        if not match["escaped"]
    }


def load_compose(path: Path = REPO / "docker-compose.yml") -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service_environment(
    service: Mapping[str, Any], interpolation: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A service's `environment` as a dict, interpolated with `interpolation` (an empty
    .env by default, so the compose defaults apply)."""
    raw = service.get("environment") or {}
    items: dict[str, str] = {}
    if isinstance(raw, list):
        for entry in raw:
            key, _, value = str(entry).partition("=")
            items[key] = value
    else:
        items = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    env = interpolation or {}
    return {key: interpolate(value, env) for key, value in items.items()}


# --------------------------------------------------------------------------- .env.example

_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class EnvEntry:
    name: str
    value: str
    commented_out: bool
    described: bool  # a prose comment line right above it
    line: int


def parse_env_example(text: str) -> list[EnvEntry]:
    entries = []
    previous = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        match = _ENV_LINE.match(line)
        if match:
            described = previous.startswith("#") and not _ENV_LINE.match(previous)
            entries.append(
                EnvEntry(
                    name=match["name"],
                    value=match["value"],
                    commented_out=bool(match["comment"]),
                    described=described and len(previous.lstrip("# ")) > 0,
                    line=number,
                )
            )
        previous = line
    return entries
