"""caelum's configuration without dask: the light reader gives what dask.config gives.

Each check runs in a fresh interpreter (dask must not be imported yet when the light reader
reads, and Dask reads its files and variables once, at import) with its own HOME, Dask config
folders and ``DASK_*`` variables.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: keys compared one by one: leaves of every type, whole subtrees, and a key nothing sets
KEYS = ["home", "connect-timeout", "scheduler-address", "embedded", "embedded.n-workers", "embedded.processes",
        "analysis", "analysis.max-file-bytes", "analysis.plugin-options", "analysis.file-time-limit",
        "llm.hosts", "bi", "bi.max-depth", "workflow", "no-such.key"]

SCRIPT = """
import json, sys
from caelum_dask import config, daskconfig
keys = json.loads(sys.argv[1])
light = {k: config.get(k, "<unset>") for k in keys}
tree = daskconfig.collect(config.DEFAULTS)
light_home = str(config.home())
assert "dask" not in sys.modules and "dask.config" not in sys.modules, "the light reader imported dask"
parsed = "yaml" in sys.modules
import dask.config
heavy = {k: dask.config.get("caelum." + k, "<unset>") for k in keys}
print(json.dumps({"light": light, "heavy": heavy, "tree": tree, "dask_tree": dask.config.get("caelum"),
                  "after": {k: config.get(k, "<unset>") for k in keys},
                  "homes": [light_home, str(config.home())], "parsed": parsed}, default=repr))
"""


def _environment(tmp_path: Path, variables: dict[str, str]) -> dict[str, str]:
    """A clean environment: HOME, the root and user Dask folders under ``tmp_path``, no DASK_* but ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_") and k != "XDG_CACHE_HOME"}
    home = tmp_path / "home"
    (home / ".config" / "dask").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root").mkdir(exist_ok=True)
    env.update(HOME=str(home), DASK_ROOT_CONFIG=str(tmp_path / "root"), **variables)
    return env


def _both(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(KEYS)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_files_and_variables_give_what_dask_config_gives(tmp_path: Path) -> None:
    config_dir = tmp_path / "dask-config"
    _write(tmp_path / "root" / "site.yaml", "caelum:\n  connect-timeout: 11\n  bi:\n    max-depth: 2\n")
    _write(tmp_path / "home" / ".config" / "dask" / "mine.yml",
           "caelum:\n  connect-timeout: 12\n  embedded:\n    n_workers: 3\n")
    _write(config_dir / "a.yaml", "caelum:\n  analysis:\n    max-file-bytes: 1234\n"
                                  "    plugin-options:\n      x: {a: 1, b: [1, 2]}\n  llm:\n    hosts:\n"
                                  "      - http://a:1\n      - http://b:2\n")
    _write(config_dir / "b.json", json.dumps({"caelum": {"analysis": {"max_file_bytes": 999}}, "other": 1}))
    _write(config_dir / "c.yaml", "distributed:\n  worker:\n    memory:\n      target: 0.5\n")
    _write(config_dir / "notes.txt", "caelum: [this is not read]\n")
    env = _environment(tmp_path, {
        "DASK_CONFIG": str(config_dir),
        "DASK_CAELUM__HOME": str(tmp_path / "caelum-home"),  # text
        "DASK_CAELUM__EMBEDDED__PROCESSES": "False",  # a Python literal
        "DASK_CAELUM__SCHEDULER_ADDRESS": "none",  # none/null/true/false as Dask reads them
        "DASK_CAELUM__ANALYSIS__FILE_TIME_LIMIT": "2.5",
        "DASK_CAELUM__ANALYSIS__PLUGIN_OPTIONS": "{'y': {'c': 3}}",
        "DASK_CAELUM__WORKFLOW__USE_CACHE": "false",
    })
    found = _both(env)
    assert found["light"] == found["heavy"]
    assert found["tree"] == found["dask_tree"]
    assert found["after"] == found["heavy"]  # once dask is there, config.get asks dask.config: same values
    assert found["homes"][0] == found["homes"][1] == str(tmp_path / "caelum-home")
    light = found["light"]
    # the values really came from each source (not only the defaults on both sides)
    assert light["connect-timeout"] == 12 and light["bi.max-depth"] == 2
    assert light["embedded.n-workers"] == 3 and light["embedded.processes"] is False
    assert light["analysis.max-file-bytes"] == 999 and light["analysis.file-time-limit"] == 2.5
    assert light["analysis.plugin-options"] == {"x": {"a": 1, "b": [1, 2]}, "y": {"c": 3}}  # dicts merge
    assert light["llm.hosts"] == ["http://a:1", "http://b:2"]
    assert light["scheduler-address"] is None and light["no-such.key"] == "<unset>"


def test_inherited_config_and_the_defaults_alone(tmp_path: Path) -> None:
    inherited = base64.urlsafe_b64encode(json.dumps({"caelum": {"bi": {"max-depth": 9}, "connect-timeout": 4}})
                                         .encode()).decode()
    found = _both(_environment(tmp_path, {"DASK_INTERNAL_INHERIT_CONFIG": inherited,
                                          "DASK_CAELUM__CONNECT_TIMEOUT": "6"}))
    assert found["light"] == found["heavy"] and found["tree"] == found["dask_tree"]
    assert (found["light"]["bi.max-depth"], found["light"]["connect-timeout"]) == (9, 6)
    plain = _both(_environment(tmp_path / "plain", {}))
    assert plain["light"] == plain["heavy"] and plain["tree"] == plain["dask_tree"]


def test_defaults_are_registered_when_dask_comes_after_and_set_wins(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from caelum_dask import config\n"
        "assert 'dask' not in sys.modules\n"
        "import dask.config\n"
        "assert dask.config.get('caelum.embedded.threads-per-worker') == 1\n"
        "with dask.config.set({'caelum.connect-timeout': 42}):\n"
        "    assert config.get('connect-timeout') == 42\n"
        "assert config.get('connect-timeout') == 5, config.get('connect-timeout')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=_environment(tmp_path, {}))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_parsed_files_are_remembered_by_their_exact_text(tmp_path: Path) -> None:
    """A second process reuses the parsed files (no yaml import); one changed byte is parsed again."""
    config_dir = tmp_path / "dask-config"
    _write(config_dir / "a.yaml", "caelum:\n  connect-timeout: 11\n")
    env = _environment(tmp_path, {"DASK_CONFIG": str(config_dir)})
    first = _both(env)
    _both(env)  # the first one's dask left its commented caelum.yaml in ~/.config/dask: parsed here
    second = _both(env)
    assert first["parsed"] and not second["parsed"]
    assert first["light"] == second["light"] == second["heavy"] and second["light"]["connect-timeout"] == 11
    _write(config_dir / "a.yaml", "caelum:\n  connect-timeout: 12\n")  # same size, same folder
    third = _both(env)
    assert third["parsed"] and third["light"] == third["heavy"] and third["light"]["connect-timeout"] == 12
    assert list((tmp_path / "home" / ".cache" / "caelum").glob("dask-config.*.marshal"))
