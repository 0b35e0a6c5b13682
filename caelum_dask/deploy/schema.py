"""The cluster file: one YAML document that says which machine runs what.

The file is checked against a JSON Schema (``jsonschema``, the same validator Dask's own config
schema uses) and the first problem is reported as one line naming the key by its path, e.g.
``workers[1].nthreads: expected an integer``. Validated files become :class:`ClusterSpec`
objects with every per-host default filled in, so the preflight and the launcher never look
at raw YAML.

Keys (docs/deploy.md has the full reference)::

    name: lab                      # names the remote run folder; default "caelum"
    python: /usr/bin/python3       # default remote Python (per host: python)
    env: {KEY: value}              # default environment (per host: env, merged on top)
    run_dir: ~/.caelum/deploy/lab  # remote folder for pid files and logs
    tls_dir: /etc/caelum/tls       # `caelum certs` folder on every host (enables TLS)
    tls_name: laptop               # this client's certificate name (default: short host name)
    ssh: {port: 22, username: me, client_keys: [~/.ssh/id_ed25519], known_hosts: ~/.ssh/known_hosts}
    scheduler: {host: 10.0.0.5, port: 8786, protocol: tcp, dashboard_address: ":8787"}
    workers:
      - {host: 10.0.0.6, nworkers: 2, nthreads: 4, resources: {GPU: 1}}
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from caelum_dask.errors import InvalidInput

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
_ENV = {
    "type": "object",
    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_SSH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "username": {"type": "string"},
        "client_keys": {"type": "array", "items": {"type": "string"}},
        "known_hosts": {"type": ["string", "null"]},
        "connect_timeout": {"type": "number", "exclusiveMinimum": 0},
    },
}
_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
# What every host entry (scheduler or worker) may carry.
_HOST_COMMON = {
    "host": {"type": "string", "minLength": 1},
    "python": {"type": "string", "minLength": 1},
    "env": _ENV,
    "ssh": _SSH,
    "tls_dir": {"type": ["string", "null"]},
    "tls_name": {"type": ["string", "null"]},
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scheduler", "workers"],
    "properties": {
        "name": _NAME,
        "python": {"type": "string", "minLength": 1},
        "env": _ENV,
        "ssh": _SSH,
        "run_dir": {"type": "string", "minLength": 1},
        "tls_dir": {"type": ["string", "null"]},
        "tls_name": {"type": ["string", "null"]},
        "join_timeout": {"type": "number", "exclusiveMinimum": 0},
        "scheduler": {
            "type": "object",
            "additionalProperties": False,
            "required": ["host"],
            "properties": {
                **_HOST_COMMON,
                "port": _PORT,
                "protocol": {"enum": ["tcp", "tls", "ws", "wss"]},
                "listen": {"type": "string", "minLength": 1},
                "dashboard_address": {"type": "string"},
            },
        },
        "workers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host"],
                "properties": {
                    **_HOST_COMMON,
                    "name": _NAME,
                    "nworkers": {"type": "integer", "minimum": 1},
                    "nthreads": {"type": "integer", "minimum": 1},
                    "memory_limit": {"type": ["string", "integer"]},
                    "resources": {
                        "type": "object",
                        "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                        "additionalProperties": {"type": "number", "minimum": 0},
                    },
                    "worker_port": {"type": ["integer", "string"], "pattern": r"^\d+:\d+$",
                                    "minimum": 1, "maximum": 65535},
                    "listen": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null",
}


ASYNCSSH_DEFAULT = "<asyncssh default>"


@dataclass
class SSHOptions:
    """How to reach a host: the subset of ``asyncssh.connect`` options a cluster file sets."""

    port: int = 22
    username: str | None = None
    client_keys: list[str] | None = None
    known_hosts: str | None = ASYNCSSH_DEFAULT  # asyncssh's own default: ~/.ssh/known_hosts
    connect_timeout: float = 10.0

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`asyncssh.connect` (what SSHCluster's connect_options are)."""
        options: dict[str, Any] = {"port": self.port, "connect_timeout": self.connect_timeout}
        if self.username:
            options["username"] = self.username
        if self.client_keys:
            options["client_keys"] = [os.path.expanduser(k) for k in self.client_keys]
        if self.known_hosts != ASYNCSSH_DEFAULT:
            options["known_hosts"] = os.path.expanduser(self.known_hosts) if self.known_hosts else None
        return options


@dataclass
class HostProcess:
    """One thing to run on one host: the scheduler, or one worker entry (1..n processes)."""

    role: str  # "scheduler" | "worker"
    name: str  # unique in the file: pid/log file names, worker --name
    host: str
    python: str
    env: dict[str, str]
    ssh: SSHOptions
    tls_dir: str | None = None
    tls_name: str | None = None
    listen: str | None = None
    # scheduler
    port: int = 8786
    protocol: str = "tcp"
    dashboard_address: str = ":8787"
    # worker
    nworkers: int = 1
    nthreads: int | None = None
    memory_limit: str | int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    worker_port: int | str | None = None

    @property
    def label(self) -> str:
        return f"{self.role} {self.name} on {self.host}"

    def worker_names(self) -> list[str]:
        """Names the Dask workers of this entry register with (dask suffixes -i for nworkers > 1)."""
        if self.nworkers == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(self.nworkers)]

    def dashboard_port(self) -> int:
        tail = self.dashboard_address.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else 0


@dataclass
class ClusterSpec:
    """A validated cluster file."""

    name: str
    run_dir: str
    scheduler: HostProcess
    workers: list[HostProcess]
    tls_dir: str | None
    tls_name: str | None
    join_timeout: float
    source: str = "<dict>"

    @property
    def tls(self) -> bool:
        return self.scheduler.tls_dir is not None

    @property
    def scheduler_address(self) -> str:
        protocol = self.scheduler.protocol
        if self.tls and protocol == "tcp":
            protocol = "tls"
        return f"{protocol}://{self.scheduler.host}:{self.scheduler.port}"

    def processes(self) -> list[HostProcess]:
        return [self.scheduler, *self.workers]

    def expected_workers(self) -> list[str]:
        return [n for w in self.workers for n in w.worker_names()]


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: Any) -> str:
    """One line for one jsonschema error: ``path: what was expected``."""
    where = _path(error.absolute_path)
    kind = error.validator
    if kind == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted if w != "null") or "null"
        return f"{where}: expected {words}, got {error.instance!r}"
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        key = missing[0] if missing else error.message
        return f"{_path([*error.absolute_path, key])}: missing (required)"
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        key = extra[0] if extra else "?"
        return f"{_path([*error.absolute_path, key])}: unknown key (known keys: {', '.join(known)})"
    if kind == "enum":
        return f"{where}: expected one of {', '.join(map(str, error.validator_value))}, got {error.instance!r}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{where}: must be at least {error.validator_value}, got {error.instance!r}"
    if kind == "maximum":
        return f"{where}: must be at most {error.validator_value}, got {error.instance!r}"
    if kind == "minItems":
        return f"{where}: needs at least {error.validator_value} entry"
    if kind == "minLength":
        return f"{where}: must not be empty"
    if kind == "pattern" and "propertyNames" in error.schema_path:
        return f"{where}: invalid key {error.instance!r} (letters, digits and _ only)"
    if kind == "pattern":
        return f"{where}: {error.instance!r} does not match {error.validator_value}"
    return f"{where}: {error.message}"


def validate(data: Any, source: str = "<dict>") -> ClusterSpec:
    """Check a parsed cluster file and fill in the defaults; :class:`InvalidInput` names the bad key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        # the deepest error is the most precise one (a bad nthreads, not "workers is invalid")
        error = max(errors, key=lambda e: len(e.absolute_path))
        raise InvalidInput(f"{source}: {_describe(error)}")
    data = copy.deepcopy(data)
    name = data.get("name", "caelum")
    top_ssh = data.get("ssh", {})
    top_env = {k: str(v) for k, v in data.get("env", {}).items()}

    def common(entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "host": entry["host"],
            "python": entry.get("python", data.get("python", "python3")),
            "env": {**top_env, **{k: str(v) for k, v in entry.get("env", {}).items()}},
            "ssh": SSHOptions(**{**top_ssh, **entry.get("ssh", {})}),
            "tls_dir": entry.get("tls_dir", data.get("tls_dir")),
            "tls_name": entry.get("tls_name"),
            "listen": entry.get("listen"),
        }

    sched = data["scheduler"]
    scheduler = HostProcess(
        role="scheduler",
        name="scheduler",
        port=sched.get("port", 8786),
        protocol=sched.get("protocol", "tcp"),
        dashboard_address=sched.get("dashboard_address", ":8787"),
        **common(sched),
    )
    workers = []
    for index, entry in enumerate(data["workers"]):
        workers.append(
            HostProcess(
                role="worker",
                name=entry.get("name", f"{entry['host']}-{index}"),
                nworkers=entry.get("nworkers", 1),
                nthreads=entry.get("nthreads"),
                memory_limit=entry.get("memory_limit"),
                resources=dict(entry.get("resources", {})),
                worker_port=entry.get("worker_port"),
                **common(entry),
            )
        )
    _check_consistency(scheduler, workers, source)
    return ClusterSpec(
        name=name,
        run_dir=data.get("run_dir", f"~/.caelum/deploy/{name}"),
        scheduler=scheduler,
        workers=workers,
        tls_dir=data.get("tls_dir"),
        tls_name=data.get("tls_name"),
        join_timeout=float(data.get("join_timeout", 120)),
        source=source,
    )


def _check_consistency(scheduler: HostProcess, workers: list[HostProcess], source: str) -> None:
    """What a schema cannot say: unique names, TLS on for all or none, protocol vs TLS."""
    seen: dict[str, int] = {}
    for index, worker in enumerate(workers):
        if worker.name in seen or worker.name == "scheduler":
            raise InvalidInput(
                f"{source}: workers[{index}].name: {worker.name!r} is already used by "
                f"{'the scheduler' if worker.name == 'scheduler' else f'workers[{seen[worker.name]}]'}; "
                "names must be unique"
            )
        seen[worker.name] = index
        if isinstance(worker.memory_limit, str) and not _is_memory_limit(worker.memory_limit):
            raise InvalidInput(
                f"{source}: workers[{index}].memory_limit: {worker.memory_limit!r} is not a size "
                "(e.g. 8GiB, 4000MB, 0.5 for half the memory, or auto)"
            )
        if (worker.tls_dir is None) != (scheduler.tls_dir is None):
            raise InvalidInput(
                f"{source}: workers[{index}].tls_dir: TLS must be on for every host or none "
                "(set tls_dir at the top level)"
            )
    if scheduler.tls_dir is None and scheduler.protocol in ("tls", "wss"):
        raise InvalidInput(f"{source}: scheduler.protocol: {scheduler.protocol} needs tls_dir (a `caelum certs` folder)")
    if scheduler.tls_dir is not None and scheduler.protocol == "ws":
        raise InvalidInput(f"{source}: scheduler.protocol: with tls_dir use tls or wss, not ws")


def _is_memory_limit(text: str) -> bool:
    """What ``dask worker --memory-limit`` accepts: auto, a fraction, or a byte size (Dask parses it)."""
    from dask.utils import parse_bytes

    if text == "auto":
        return True
    try:
        float(text)
        return True
    except ValueError:
        pass
    try:
        parse_bytes(text)
    except (ValueError, TypeError):
        return False
    return True


def load(path: str | os.PathLike[str]) -> ClusterSpec:
    """Read and validate a cluster file; every problem is one :class:`InvalidInput` line."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"cluster file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput(f"{file}: not a text (UTF-8) YAML file; give the cluster file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read cluster file {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{file}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{file}: expected a mapping with scheduler: and workers:, got {type(data).__name__}")
    return validate(data, source=str(file))
