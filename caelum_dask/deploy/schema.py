"""The cluster file: one YAML document that says which machine runs what.

Why pydantic models: the file used to be described three times — a hand-written JSON Schema,
dataclass defaults and the defaults ``validate()`` filled in — and the three could drift. Now
the models below are the ONE declaration: each key's type, bounds and default is written once,
validation follows from them, and the JSON Schema (:func:`json_schema`, for editors and
tooling) is generated from them. Validation is strict (``"22"`` is not a port) and unknown keys
are refused, exactly as before; every problem becomes one line naming the key by its path,
e.g. ``workers[1].nthreads: expected an integer, got 'two'``, and all of them are raised
together as one :class:`~caelum_dask.errors.InvalidInput`.

A validated file becomes a :class:`ClusterSpec` of :class:`HostProcess` entries with the
inherited values (python, env, ssh, tls_dir) resolved, so the preflight and the launcher never
look at raw YAML.

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
      - {host: 10.0.0.7, nthreads: 2, adaptive: {minimum: 0, maximum: 4, idle_after: 60s}}

An ``adaptive`` worker entry is a host group that grows and shrinks with the queued work
(:mod:`caelum_dask.deploy.adaptive`): ``caelum up`` starts its ``minimum`` worker processes,
each one named ``<name>-<slot>``, and a controller on the scheduler starts more up to
``maximum`` and retires those idle for ``idle_after`` seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      ValidationError, WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError

from caelum_dask.errors import InvalidInput

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PORT_RANGE_PATTERN = r"^\d+:\d+$"
#: known_hosts when the file does not set it: leave asyncssh's own default (~/.ssh/known_hosts)
ASYNCSSH_DEFAULT = "<asyncssh default>"


def _scalar_text(value: Any) -> str:
    """An environment value: a string, number or boolean, passed to the process as text."""
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    raise PydanticCustomError("scalar_type", "expected a string, a number or true/false, got {got}",
                              {"got": repr(value)})


def _memory_limit(value: Any) -> Any:
    """What ``dask worker --memory-limit`` accepts: bytes, a size, a fraction, or ``auto``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PydanticCustomError("memory_type", "expected a string or an integer, got {got}", {"got": repr(value)})
    if isinstance(value, str) and not _is_memory_limit(value):
        raise PydanticCustomError(
            "memory_size", "{got} is not a size (e.g. 8GiB, 4000MB, 0.5 for half the memory, or auto)",
            {"got": repr(value)})
    return value


def _worker_port(value: Any) -> Any:
    """A fixed worker port, or a ``"low:high"`` range Dask picks free ports from."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PydanticCustomError("port_type", "expected an integer or a \"low:high\" string, got {got}",
                                  {"got": repr(value)})
    if isinstance(value, int) and not 1 <= value <= 65535:
        raise PydanticCustomError("port_range", "must be between 1 and 65535, got {got}", {"got": value})
    if isinstance(value, str) and not re.match(PORT_RANGE_PATTERN, value):
        raise PydanticCustomError("port_pattern", "{got} does not match {pattern}",
                                  {"got": repr(value), "pattern": PORT_RANGE_PATTERN})
    return value


def _seconds(value: Any) -> Any:
    """A duration: seconds as a number, or a Dask duration string (``2s``, ``500ms``, ``5m``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("duration_type", "expected seconds or a duration like 30s, got {got}",
                                  {"got": repr(value)})
    if isinstance(value, str):
        from dask.utils import parse_timedelta

        try:
            return float(parse_timedelta(value))
        except (ValueError, KeyError, TypeError):
            raise PydanticCustomError("duration", "{got} is not a duration (e.g. 30s, 500ms, 5m, or seconds)",
                                      {"got": repr(value)}) from None
    return float(value)


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Port = Annotated[int, Field(ge=0, le=65535)]
EnvValue = Annotated[str, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "number", "boolean"]})]
#: pydantic checks a dict's keys but does not publish their pattern in the JSON Schema: say it
KEYS_SCHEMA = {"propertyNames": {"pattern": KEY_PATTERN}}
Env = Annotated[dict[Key, EnvValue], Field(json_schema_extra=KEYS_SCHEMA)]
Resources = Annotated[dict[Key, Annotated[float, Field(ge=0)]], Field(json_schema_extra=KEYS_SCHEMA)]
MemoryLimit = Annotated[str | int, BeforeValidator(_memory_limit), WithJsonSchema({"type": ["string", "integer"]})]
WorkerPort = Annotated[int | str, BeforeValidator(_worker_port), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string", "pattern": PORT_RANGE_PATTERN}]})]
Seconds = Annotated[float, BeforeValidator(_seconds), WithJsonSchema({"type": ["number", "string"]})]


class _Model(BaseModel):
    """Strict (no ``"22"`` for 22) and closed (a typo is an unknown key, not ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SSHOptions(_Model):
    """How to reach a host: the subset of ``asyncssh.connect`` options a cluster file sets."""

    port: int = Field(22, ge=1, le=65535, description="SSH port")
    username: str | None = Field(None, description="remote user (default: the local user)")
    client_keys: list[str] | None = Field(None, description="private keys (default: asyncssh's, the agent)")
    known_hosts: str | None = Field(ASYNCSSH_DEFAULT, description="known_hosts file; null turns host key "
                                    "checking off; unset: asyncssh's default ~/.ssh/known_hosts")
    connect_timeout: float = Field(10.0, gt=0, description="seconds")

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

    def over(self, base: SSHOptions) -> SSHOptions:
        """These options merged key by key over ``base`` (a host's ssh over the file's)."""
        return SSHOptions.model_validate({**base.model_dump(exclude_unset=True), **self.model_dump(exclude_unset=True)})


class AdaptiveOptions(_Model):
    """How an adaptive host group grows and shrinks (``workers[i].adaptive``).

    The decisions are Dask's own (``distributed.deploy.adaptive_core.AdaptiveCore`` fed by the
    scheduler's ``adaptive_target`` and ``workers_to_close``); these keys only bound them and
    say how long a worker must have been idle before it may be retired. ``interval`` and
    ``target_duration`` left unset take Dask's ``distributed.adaptive.*`` settings of the
    machine running ``caelum up``.
    """

    minimum: int = Field(0, ge=0, description="worker processes always running (started by `caelum up`)")
    maximum: int = Field(ge=1, description="most worker processes this host runs for the group")
    idle_after: Seconds = Field(60.0, gt=0, validation_alias=AliasChoices("idle_after", "idle-after"),
                                description="seconds a worker must have been idle before it is retired")
    interval: Seconds | None = Field(None, gt=0, description="seconds between two scaling decisions "
                                     "(default: Dask's distributed.adaptive.interval)")
    target_duration: Seconds | None = Field(None, gt=0, description="how long queued work should take; "
                                            "less starts more workers (default: distributed.adaptive.target-duration)")

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveOptions:
        if self.minimum > self.maximum:
            raise PydanticCustomError("adaptive_bounds", "minimum ({minimum}) is above maximum ({maximum})",
                                      {"minimum": self.minimum, "maximum": self.maximum})
        return self


class HostEntry(_Model):
    """What every host entry (the scheduler and each worker) may carry; unset keys inherit."""

    host: NonEmpty = Field(description="address or name to reach the host by SSH; also what it listens on")
    python: NonEmpty | None = Field(None, description="interpreter on this host (default: top-level python)")
    env: Env = Field(default_factory=dict, description="extra environment, over the top-level env")
    ssh: SSHOptions = Field(default_factory=SSHOptions, description="SSH options, over the top-level ones")
    tls_dir: str | None = Field(None, description="certificate folder on this host (default: top-level tls_dir)")
    tls_name: str | None = Field(None, description="certificate name on this host (--tls-name)")
    listen: NonEmpty | None = Field(None, description="address to bind to instead of host (e.g. 0.0.0.0)")


class SchedulerEntry(HostEntry):
    """The scheduler host."""

    port: Port = Field(8786, description="scheduler port (keep it fixed: workers and re-runs find it)")
    protocol: Literal["tcp", "tls", "ws", "wss"] = Field("tcp", description="comm protocol (tcp becomes tls with TLS)")
    dashboard_address: str = Field(":8787", description="where the dashboard listens (host:port, :port)")


class WorkerEntry(HostEntry):
    """One worker host: ``nworkers`` worker processes."""

    name: Name | None = Field(None, description="worker name, unique in the file (default: <host>-<index>)")
    nworkers: int = Field(1, ge=1, description="worker processes on this host")
    nthreads: int | None = Field(None, ge=1, description="threads per worker process (default: cores / nworkers)")
    memory_limit: MemoryLimit | None = Field(None, description="--memory-limit, e.g. 8GiB (default: Dask's)")
    resources: Resources = Field(
        default_factory=dict, description="resource overrides, e.g. {GPU: 1} (default: detected)")
    worker_port: WorkerPort | None = Field(None, description="fixed worker port or \"low:high\" range")
    adaptive: AdaptiveOptions | None = Field(None, description="grow and shrink this host group with the "
                                             "queued work (one worker process per slot)")


class ClusterFile(_Model):
    """A whole cluster file, as written (before the per-host values are resolved)."""

    name: Name = Field("caelum", description="the cluster's name; names the run folder")
    python: NonEmpty = Field("python3", description="default interpreter on every host")
    env: Env = Field(default_factory=dict, description="environment for every process")
    ssh: SSHOptions = Field(default_factory=SSHOptions, description="default SSH options for every host")
    run_dir: NonEmpty | None = Field(None, description="folder on each host for pid files and logs "
                                     "(default: ~/.caelum/deploy/<name>)")
    tls_dir: str | None = Field(None, description="`caelum certs` folder on every host and here; turns on TLS")
    tls_name: str | None = Field(None, description="certificate name of this client (default: short host name)")
    join_timeout: float = Field(120.0, gt=0, description="seconds to wait for processes to start and join")
    scheduler: SchedulerEntry
    workers: list[WorkerEntry] = Field(min_length=1)

    def host_process(self, role: str, name: str, entry: HostEntry, **extra: Any) -> HostProcess:
        """One entry with what it inherits from the file filled in."""
        return HostProcess(
            role=role, name=name, host=entry.host, python=entry.python or self.python,
            env={**self.env, **entry.env}, ssh=entry.ssh.over(self.ssh),
            tls_dir=entry.tls_dir if "tls_dir" in entry.model_fields_set else self.tls_dir,
            tls_name=entry.tls_name, listen=entry.listen, **extra)

    def spec(self, source: str) -> ClusterSpec:
        """The resolved :class:`ClusterSpec` of this file."""
        sched = self.scheduler
        scheduler = self.host_process("scheduler", "scheduler", sched, port=sched.port, protocol=sched.protocol,
                                      dashboard_address=sched.dashboard_address)
        workers = [self.host_process("worker", entry.name or f"{entry.host}-{index}", entry,
                                     nworkers=entry.nworkers, nthreads=entry.nthreads,
                                     memory_limit=entry.memory_limit, resources=dict(entry.resources),
                                     worker_port=entry.worker_port, adaptive=entry.adaptive)
                   for index, entry in enumerate(self.workers)]
        return ClusterSpec(name=self.name, run_dir=self.run_dir or f"~/.caelum/deploy/{self.name}",
                           scheduler=scheduler, workers=workers, tls_dir=self.tls_dir, tls_name=self.tls_name,
                           join_timeout=self.join_timeout, source=source)


@dataclass
class HostProcess:
    """One thing to run on one host: the scheduler, or one worker entry (1..n processes).

    Built only from a validated :class:`ClusterFile`, so it states no defaults of its own: the
    scheduler-only fields are ``None`` on workers and the worker-only fields keep their
    "not given" value on the scheduler.
    """

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
    port: int | None = None
    protocol: str | None = None
    dashboard_address: str | None = None
    # worker
    nworkers: int = 1  # processes this entry starts (the scheduler is one)
    nthreads: int | None = None
    memory_limit: str | int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    worker_port: int | str | None = None
    adaptive: AdaptiveOptions | None = None  # an adaptive host group: one worker process per slot

    @property
    def label(self) -> str:
        return f"{self.role} {self.name} on {self.host}"

    def worker_names(self) -> list[str]:
        """Names the Dask workers of this entry register with when ``caelum up`` has started it.

        Dask suffixes ``-i`` for nworkers > 1; an adaptive group starts its ``minimum`` slots.
        """
        if self.adaptive is not None:
            return [slot.name for slot in self.slots(self.adaptive.minimum)]
        if self.nworkers == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(self.nworkers)]

    def slot(self, index: int) -> HostProcess:
        """Slot ``index`` of an adaptive group: one worker process named ``<name>-<index>``.

        Each slot has its own pid file and log (its name), so the controller can start and stop
        one worker at a time, and ``caelum down`` finds every slot the controller started.
        """
        return replace(self, name=f"{self.name}-{index}", nworkers=1, adaptive=None)

    def slots(self, count: int | None = None) -> list[HostProcess]:
        """The first ``count`` slots (default: all ``maximum``) of an adaptive group."""
        if self.adaptive is None:
            return []
        return [self.slot(i) for i in range(self.adaptive.maximum if count is None else count)]

    def dashboard_port(self) -> int:
        tail = (self.dashboard_address or "").rsplit(":", 1)[-1]
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
        protocol = self.scheduler.protocol or "tcp"
        if self.tls and protocol == "tcp":
            protocol = "tls"
        return f"{protocol}://{self.scheduler.host}:{self.scheduler.port}"

    def processes(self) -> list[HostProcess]:
        return [self.scheduler, *self.workers]

    def expected_workers(self) -> list[str]:
        return [n for w in self.workers for n in w.worker_names()]

    def initial_workers(self) -> list[HostProcess]:
        """What ``caelum up`` starts: every fixed worker entry and each adaptive group's minimum slots."""
        return [p for w in self.workers for p in (w.slots(w.adaptive.minimum) if w.adaptive else [w])]

    def adaptive_groups(self) -> list[HostProcess]:
        """The worker entries with ``adaptive:`` (what the scheduler-side controller manages)."""
        return [w for w in self.workers if w.adaptive is not None]


def json_schema() -> dict[str, Any]:
    """The cluster file's JSON Schema, generated from :class:`ClusterFile` (for editors, tools)."""
    schema = ClusterFile.model_json_schema()
    schema["title"] = "caelum cluster file"
    return schema


# -- problems as one line each ---------------------------------------------------------------------

_TYPE_TEXT = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
}


def key_path(parts: Sequence[Any]) -> str:
    """``workers[1].nthreads`` for ``("workers", 1, "nthreads")``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(parts: Sequence[Any]) -> type[BaseModel]:
    """The model a key path leads to (for the known keys of an unknown-key problem)."""
    model: type[BaseModel] = ClusterFile
    for part in parts:
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation) or model
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def describe(error: Any) -> str:
    """One line for one pydantic error: ``path: what was wrong``."""
    loc, kind, ctx, given = tuple(error["loc"]), error["type"], error.get("ctx") or {}, error.get("input")
    where = key_path(loc)
    if kind in _TYPE_TEXT:
        return f"{where}: {_TYPE_TEXT[kind]}, got {given!r}"
    if kind == "missing":
        return f"{where}: missing (required)"
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_model_at(loc[:-1]).model_fields))
        return f"{where}: unknown key (known keys: {known})"
    if kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"{where}: expected one of {allowed}, got {given!r}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"{where}: must be {'at least' if kind == 'greater_than_equal' else 'more than'} {bound}, got {given!r}"
    if kind == "less_than_equal":
        return f"{where}: must be at most {ctx.get('le')}, got {given!r}"
    if kind == "too_short":
        return f"{where}: needs at least {ctx.get('min_length', 1)} entry"
    if kind == "string_too_short":
        return f"{where}: must not be empty"
    if kind == "string_pattern_mismatch" and loc[-1:] == ("[key]",):
        return f"{key_path(loc[:-2])}: invalid key {loc[-2]!r} (letters, digits and _ only)"
    if kind == "string_pattern_mismatch":
        return f"{where}: {given!r} does not match {ctx.get('pattern')}"
    return f"{where}: {error['msg']}"


def consistency_problems(spec: ClusterSpec) -> list[str]:
    """What field types cannot say: unique names, TLS on for all or none, protocol vs TLS."""
    problems: list[str] = []
    scheduler = spec.scheduler
    seen: dict[str, int] = {}
    for index, worker in enumerate(spec.workers):
        if worker.name in seen or worker.name == "scheduler":
            owner = "the scheduler" if worker.name == "scheduler" else f"workers[{seen[worker.name]}]"
            problems.append(f"workers[{index}].name: {worker.name!r} is already used by {owner}; names must be unique")
        seen.setdefault(worker.name, index)
        if worker.adaptive is not None and worker.nworkers != 1:
            problems.append(f"workers[{index}].nworkers: an adaptive entry runs one worker process per slot; "
                            "set adaptive.maximum instead")
        if worker.adaptive is not None and worker.adaptive.maximum > 1 and isinstance(worker.worker_port, int):
            problems.append(f"workers[{index}].worker_port: the {worker.adaptive.maximum} slots of an adaptive "
                            "entry cannot share one port; give a \"low:high\" range")
        if (worker.tls_dir is None) != (scheduler.tls_dir is None):
            problems.append(f"workers[{index}].tls_dir: TLS must be on for every host or none "
                            "(set tls_dir at the top level)")
    problems += _slot_clashes(spec)
    if scheduler.tls_dir is None and scheduler.protocol in ("tls", "wss"):
        problems.append(f"scheduler.protocol: {scheduler.protocol} needs tls_dir (a `caelum certs` folder)")
    if scheduler.tls_dir is not None and scheduler.protocol == "ws":
        problems.append("scheduler.protocol: with tls_dir use tls or wss, not ws")
    return problems


def _slot_clashes(spec: ClusterSpec) -> list[str]:
    """An adaptive slot's name (``<name>-<i>``) that another entry's worker already uses."""
    fixed = {n: i for i, w in enumerate(spec.workers) if w.adaptive is None for n in w.worker_names()}
    return [f"workers[{index}].name: its adaptive slot {slot.name!r} is already used by workers[{fixed[slot.name]}]"
            for index, worker in enumerate(spec.workers) for slot in worker.slots() if slot.name in fixed]


def _refuse(source: str, problems: list[str]) -> InvalidInput:
    """One :class:`InvalidInput` whose message is one ``source: problem`` line per problem."""
    return InvalidInput("\n".join(f"{source}: {problem}" for problem in dict.fromkeys(problems)))


def validate(data: Any, source: str = "<dict>") -> ClusterSpec:
    """Check a parsed cluster file and fill in the defaults; :class:`InvalidInput` names each bad key."""
    try:
        parsed = ClusterFile.model_validate(data)
    except ValidationError as exc:
        raise _refuse(source, [describe(error) for error in exc.errors()]) from None
    spec = parsed.spec(source)
    problems = consistency_problems(spec)
    if problems:
        raise _refuse(source, problems)
    return spec


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


__all__ = ["ASYNCSSH_DEFAULT", "AdaptiveOptions", "ClusterFile", "ClusterSpec", "HostEntry", "HostProcess", "SSHOptions",
           "SchedulerEntry", "WorkerEntry", "consistency_problems", "describe", "json_schema", "key_path", "load",
           "validate"]
