"""Readers for the deployment assets, so tests can check them and run them without Docker.

- :func:`parse_yaml` reads the strict YAML subset the compose files are written in
  (PyYAML is not a dependency): block mappings and block sequences by indentation
  (spaces only), plain / single-quoted / double-quoted scalars resolved as YAML 1.2 core
  schema (null, bool, int, float, else string), one-line flow sequences of scalars
  (``["CMD", "x"]``), and comments. Anything else (anchors, aliases, tags, block
  scalars, flow mappings, multi-document streams, duplicate keys, tabs) is an error,
  so a compose file that drifts out of the subset fails loudly.
- :func:`parse_dockerfile` reads a Dockerfile into stages with their ENV, USER, VOLUME,
  EXPOSE, COPY, ENTRYPOINT, CMD, HEALTHCHECK and STOPSIGNAL.
- :func:`load_compose` turns a compose file into :class:`Service` records, and
  :class:`Container` combines an image (the Dockerfile's final stage) with a service the
  way ``docker compose`` does: the command is ENTRYPOINT + CMD (a service's
  ``entrypoint``/``command`` replace them), the environment is the image's ENV updated by
  the service's ``environment``, and volumes are directories standing in for the named
  volumes, with container paths in the environment and command mapped onto them.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------
# YAML subset


class YamlSubsetError(ValueError):
    """The text is outside the supported YAML subset (or malformed)."""


_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_KEY_RE = re.compile(r"^([A-Za-z0-9_.\-/]+):(?:\s+(.*))?$")
_FORBIDDEN_START = ("&", "*", "!", "|", ">", "{", "%", "@", "`", "?")


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment (outside quotes; a ``#`` must follow a space or start)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'" and (i == 0 or line[i - 1] in " [,:"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str, where: str) -> Any:
    t = text.strip()
    if t.startswith('"'):
        if not t.endswith('"') or len(t) < 2:
            raise YamlSubsetError(f"{where}: unterminated double-quoted scalar")
        try:
            return json.loads(t)
        except ValueError as exc:
            raise YamlSubsetError(f"{where}: bad double-quoted scalar: {exc}") from None
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise YamlSubsetError(f"{where}: unterminated single-quoted scalar")
        inner = t[1:-1]
        if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
            raise YamlSubsetError(f"{where}: stray quote in single-quoted scalar")
        return inner.replace("''", "'")
    if t.startswith(_FORBIDDEN_START):
        raise YamlSubsetError(f"{where}: {t[0]!r} is outside the supported YAML subset")
    if t.startswith("["):
        return _flow_seq(t, where)
    if ": " in t or t.endswith(":"):
        raise YamlSubsetError(f"{where}: a plain scalar may not contain ': '")
    if t in ("", "~", "null", "Null", "NULL"):
        return None
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if _INT_RE.match(t):
        return int(t)
    if _FLOAT_RE.match(t):
        return float(t)
    return t


def _flow_seq(t: str, where: str) -> list[Any]:
    if not t.endswith("]"):
        raise YamlSubsetError(f"{where}: a flow sequence must be on one line")
    inner = t[1:-1].strip()
    items: list[Any] = []
    if not inner:
        return items
    buf, quote, i = "", "", 0
    parts: list[str] = []
    while i < len(inner):
        ch = inner[i]
        if quote:
            buf += ch
            if ch == "\\" and quote == '"' and i + 1 < len(inner):
                buf += inner[i + 1]
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            buf += ch
        elif ch in "[]{}":
            raise YamlSubsetError(f"{where}: nested flow collections are not supported")
        elif ch == ",":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    if quote:
        raise YamlSubsetError(f"{where}: unterminated quote in flow sequence")
    parts.append(buf)
    for p in parts:
        if not p.strip():
            raise YamlSubsetError(f"{where}: empty item in flow sequence")
        items.append(_scalar(p, where))
    return items


def parse_yaml(text: str, name: str = "<yaml>") -> Any:
    """Parse ``text`` (see the module docstring for the subset)."""
    lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
    for no, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"{name}:{no}: tab in indentation")
        if raw.strip() in ("---", "...") and raw.strip() == raw:
            raise YamlSubsetError(f"{name}:{no}: document markers are not supported")
        content = _strip_comment(raw)
        if not content.strip():
            continue
        lines.append((no, len(content) - len(content.lstrip(" ")), content.strip()))
    if not lines:
        return None
    value, pos = _block(lines, 0, lines[0][1], name)
    if pos != len(lines):
        no = lines[pos][0]
        raise YamlSubsetError(f"{name}:{no}: unexpected indentation")
    return value


def _block(lines: list[tuple[int, int, str]], pos: int, indent: int, name: str) -> tuple[Any, int]:
    first = lines[pos][2]
    if first == "-" or first.startswith("- "):
        seq: list[Any] = []
        while pos < len(lines) and lines[pos][1] == indent:
            no, _, content = lines[pos]
            if not (content == "-" or content.startswith("- ")):
                raise YamlSubsetError(f"{name}:{no}: expected a '- ' sequence item")
            item = content[1:].strip()
            pos += 1
            if not item:
                if pos < len(lines) and lines[pos][1] > indent:
                    child, pos = _block(lines, pos, lines[pos][1], name)
                    seq.append(child)
                else:
                    seq.append(None)
            elif _KEY_RE.match(item):
                raise YamlSubsetError(f"{name}:{no}: mappings inside sequences are not supported")
            else:
                seq.append(_scalar(item, f"{name}:{no}"))
        return seq, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][1] == indent:
        no, _, content = lines[pos]
        m = _KEY_RE.match(content)
        if m is None:
            raise YamlSubsetError(f"{name}:{no}: expected 'key: value', got {content!r}")
        key, rest = m.group(1), m.group(2)
        if key in mapping:
            raise YamlSubsetError(f"{name}:{no}: duplicate key {key!r}")
        pos += 1
        if rest is not None and rest.strip():
            mapping[key] = _scalar(rest, f"{name}:{no}")
        elif pos < len(lines) and lines[pos][1] > indent:
            mapping[key], pos = _block(lines, pos, lines[pos][1], name)
        else:
            mapping[key] = None
    if pos < len(lines) and lines[pos][1] > indent:
        raise YamlSubsetError(f"{name}:{lines[pos][0]}: unexpected indentation")
    return mapping, pos


# ---------------------------------------------------------------------------------------
# Dockerfile


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    flags: dict[str, str]


@dataclass(frozen=True)
class Healthcheck:
    options: dict[str, str]
    command: list[str]  # exec form, or ["/bin/sh", "-c", shell form]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    volumes: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: Healthcheck | None = None
    stopsignal: str | None = None
    runs: list[str] = field(default_factory=list)
    entrypoint_exec_form: bool = True


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _logical_lines(text: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments (also inside continuations), blank lines
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _exec_form(rest: str) -> tuple[list[str], bool]:
    rest = rest.strip()
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value, True
    return ["/bin/sh", "-c", rest], False


def _subst(text: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text
    )


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words


def parse_dockerfile(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        kw = keyword.upper()
        rest = rest.strip()
        if kw == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
            continue
        if kw == "FROM":
            words = rest.split()
            _, words = _flags(words)
            base = _subst(words[0], args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
            continue
        if not stages:
            raise ValueError(f"instruction before FROM: {line}")
        st = stages[-1]
        st.instructions.append((kw, rest))
        if kw == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # legacy "ENV KEY value"
                st.env[words[0]] = rest.split(None, 1)[1] if len(words) > 1 else ""
            else:
                for w in words:
                    k, _, v = w.partition("=")
                    st.env[k] = v
        elif kw == "USER":
            st.user = rest
        elif kw == "WORKDIR":
            st.workdir = rest
        elif kw == "VOLUME":
            vols, exec_form = _exec_form(rest)
            st.volumes += vols if exec_form else rest.split()
        elif kw == "EXPOSE":
            st.expose += rest.split()
        elif kw in ("COPY", "ADD"):
            flags, words = _flags(shlex.split(rest))
            st.copies.append(Copy(tuple(words[:-1]), words[-1], flags))
        elif kw == "ENTRYPOINT":
            st.entrypoint, st.entrypoint_exec_form = _exec_form(rest)
        elif kw == "CMD":
            st.cmd, _ = _exec_form(rest)
        elif kw == "STOPSIGNAL":
            st.stopsignal = rest
        elif kw == "RUN":
            st.runs.append(rest)
        elif kw == "HEALTHCHECK":
            words = rest.split(" ")
            opts: dict[str, str] = {}
            while words and (words[0].startswith("--") or not words[0]):
                w = words.pop(0)
                if w:
                    k, _, v = w[2:].partition("=")
                    opts[k] = v
            if not words or words[0].upper() != "CMD":
                st.healthcheck = Healthcheck(opts, []) if words else None
            else:
                cmd, _ = _exec_form(" ".join(words[1:]))
                st.healthcheck = Healthcheck(opts, cmd)
    return Dockerfile(args, stages)


def load_dockerfile(path: Path = REPO / "Dockerfile") -> Dockerfile:
    return parse_dockerfile(path.read_text())


# ---------------------------------------------------------------------------------------
# compose


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume, or a host path for a bind mount
    target: str
    read_only: bool
    bind: bool


@dataclass
class Service:
    name: str
    raw: dict[str, Any]
    environment: dict[str, str]
    mounts: list[Mount]
    entrypoint: list[str] | None
    command: list[str] | None
    healthcheck: list[str] | None
    networks: list[str]
    depends_on: dict[str, str]


@dataclass
class Compose:
    path: Path
    raw: dict[str, Any]
    services: dict[str, Service]
    volumes: list[str]
    networks: list[str]

    @property
    def nodes(self) -> list[Service]:
        """Services on a network (the raftd nodes), in file order."""
        return [s for s in self.services.values() if s.networks]


def _str_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _argv(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _service(name: str, raw: dict[str, Any]) -> Service:
    env_raw = raw.get("environment") or {}
    if isinstance(env_raw, list):
        environment = dict(str(e).partition("=")[::2] for e in env_raw)
    else:
        environment = {str(k): _str_env(v) for k, v in env_raw.items()}
    mounts = []
    for spec in raw.get("volumes") or []:
        parts = str(spec).split(":")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else "rw"
        bind = source.startswith((".", "/", "~"))
        mounts.append(Mount(source, target, mode == "ro", bind))
    hc = raw.get("healthcheck") or {}
    test = hc.get("test")
    networks = raw.get("networks") or []
    depends = raw.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {d: "service_started" for d in depends}
    return Service(
        name=name,
        raw=raw,
        environment=environment,
        mounts=mounts,
        entrypoint=_argv(raw.get("entrypoint")),
        command=_argv(raw.get("command")),
        healthcheck=_argv(test),
        networks=list(networks),
        depends_on={k: (v or {}).get("condition", "service_started") for k, v in depends.items()}
        if isinstance(depends, dict)
        else {},
    )


def load_compose(path: Path) -> Compose:
    raw = parse_yaml(path.read_text(), str(path))
    services = {n: _service(n, s) for n, s in raw["services"].items()}
    return Compose(
        path=path,
        raw=raw,
        services=services,
        volumes=list(raw.get("volumes") or {}),
        networks=list(raw.get("networks") or {}),
    )


# ---------------------------------------------------------------------------------------
# a container, emulated


@dataclass
class Container:
    """How ``docker compose`` would run ``service`` from ``image`` (see the module doc),
    with named volumes as directories under ``volumes_dir`` and bind mounts relative to
    the compose file. ``path`` is the PATH the process gets (the image's Python
    environment, i.e. where ``raftd`` and ``python`` are installed)."""

    image: Stage
    service: Service
    compose_dir: Path
    volumes_dir: Path
    path: str

    def mount_dir(self, m: Mount) -> Path:
        if m.bind:
            return (self.compose_dir / m.source).resolve()
        return self.volumes_dir / m.source

    def host_path(self, container_path: str) -> str | None:
        """The host path for ``container_path`` if a mount covers it (longest match),
        else a COPY destination in the image (the file in the build context), else None."""
        p = PurePosixPath(container_path)
        best: tuple[int, Path, PurePosixPath] | None = None
        for m in self.service.mounts:
            t = PurePosixPath(m.target)
            if (p == t or t in p.parents) and (best is None or len(t.parts) > best[0]):
                best = (len(t.parts), self.mount_dir(m), p.relative_to(t))
        if best is not None:
            return str(best[1] / best[2])
        for c in self.image.copies:
            if "from" not in c.flags and len(c.sources) == 1 and c.dest == container_path:
                return str(REPO / c.sources[0])
        return None

    def _map(self, value: str) -> str:
        if value.startswith("/"):
            return self.host_path(value) or value
        return value

    @property
    def environment(self) -> dict[str, str]:
        env = dict(self.image.env)
        env.update(self.service.environment)
        out = {k: self._map(v) for k, v in env.items()}
        out["PATH"] = self.path
        return out

    @property
    def argv(self) -> list[str]:
        entry = self.service.entrypoint
        cmd = self.service.command
        if entry is None:
            entry = self.image.entrypoint or []
            if cmd is None:
                cmd = self.image.cmd or []
        return self._exec([*entry, *(cmd or [])])

    def _exec(self, argv: list[str]) -> list[str]:
        """Map container paths; run copied scripts through their shebang interpreter
        (COPY --chmod makes them executable in the image; the repo's mode may differ)."""
        out = [self._map(a) for a in argv]
        if out and out[0] != argv[0]:
            first = Path(out[0]).read_text().splitlines()[0]
            if first.startswith("#!"):
                out = [*first[2:].split(), *out]
        return out

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``docker exec``-style: ``argv`` in the container's environment (``env -i``)."""
        return self.with_env(self._exec(self._resolve_copied(argv)))

    def _resolve_copied(self, argv: list[str]) -> list[str]:
        # A bare command name that the image installs by COPY (e.g. raftd-healthcheck).
        if argv and "/" not in argv[0]:
            for c in self.image.copies:
                if PurePosixPath(c.dest).name == argv[0] and "from" not in c.flags:
                    return [c.dest, *argv[1:]]
        return argv

    def with_env(self, argv: list[str], extra: dict[str, str] | None = None) -> list[str]:
        """``argv`` under ``env -i`` with the container's environment (plus ``extra``, as
        ``docker compose run -e`` would add)."""
        env = {**self.environment, **(extra or {})}
        return ["env", "-i", *(f"{k}={v}" for k, v in sorted(env.items())), *argv]

    @property
    def cwd(self) -> str | None:
        return self.host_path(self.image.workdir) if self.image.workdir else None

    def prepare(self) -> None:
        """Create the volume directories (docker creates named volumes on first use)."""
        for m in self.service.mounts:
            if not m.bind:
                self.mount_dir(m).mkdir(parents=True, exist_ok=True)


def healthcheck_argv(test: list[str]) -> list[str]:
    """A compose/Dockerfile healthcheck ``test`` as an argv (``CMD`` / ``CMD-SHELL``)."""
    if test and test[0] == "CMD":
        return test[1:]
    if test and test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return test
