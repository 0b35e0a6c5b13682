"""A `caelum` command stopped from outside leaves nothing it started running (issue: Hardening)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from harness import pythonpath, wait_for

WORKFLOW = '''
import subprocess, sys, time
from caelum_dask.workflow import Workflow, task


@task
def hold(pidfile: str) -> int:
    # what a suite's server fixture does: a helper in its own session, outside the process group
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with open(pidfile + ".tmp", "w") as out:
        out.write(str(helper.pid))
    import os
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(600)
    return helper.pid


with Workflow("holds", params={"pidfile": ""}) as wf:
    hold(wf.param("pidfile"))
'''


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_stopped_run_leaves_no_process(tmp_path: Path, how: signal.Signals) -> None:
    flow = tmp_path / "holds.py"
    flow.write_text(textwrap.dedent(WORKFLOW))
    pidfile = tmp_path / "helper.pid"
    env = {**os.environ, "PYTHONPATH": pythonpath(), "DASK_CAELUM__EMBEDDED__N_WORKERS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "caelum_dask", "run", str(flow), "-p", f"pidfile={pidfile}"],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: pidfile.exists() or run.poll() is not None, timeout=120, what="the step's helper")
        assert run.poll() is None, run.communicate()
        helper = psutil.Process(int(pidfile.read_text()))
        marker = helper.environ().get("CAELUM_JOBS")
        assert marker  # the command's marker reached a process in its own session
        started = [p for p in psutil.Process(run.pid).children(recursive=True)] + [helper]
        run.send_signal(how)
        run.communicate(timeout=120)
        assert run.returncode != 0
        gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, alive
        left = []
        for proc in psutil.process_iter():
            try:
                if marker in proc.environ().get("CAELUM_JOBS", ""):
                    left.append(proc)
            except psutil.Error:
                continue
        assert not left, left
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": pythonpath()})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_process_that_never_started_one_is_told_apart_without_psutil() -> None:
    """The check that lets a command that started nothing skip the whole-system search."""
    out = _python("""
        import os, subprocess, sys
        from caelum_dask.proctree import never_started_a_process
        print(never_started_a_process(), "psutil" in sys.modules)
        running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        print(never_started_a_process())
        running.kill()
        os.waitid(os.P_PID, running.pid, os.WEXITED | os.WNOWAIT)  # a zombie: ended, not waited for
        print(never_started_a_process())
        running.wait()                       # reaped: its usage is in RUSAGE_CHILDREN
        print(never_started_a_process())
    """)
    assert out.split("\n") == ["True False", "False", "False", "False"]


def test_job_scope_still_ends_an_orphan_of_a_child_that_exited(tmp_path: Path) -> None:
    """A child that started a helper in its own session and exited: the helper is found by the
    job's marker and killed when the scope ends (the cheap check must not skip the search)."""
    pidfile = tmp_path / "helper.pid"
    out = _python(f"""
        import os, subprocess, sys, time
        from caelum_dask.proctree import job_scope
        with job_scope():
            subprocess.run([sys.executable, "-c",
                            "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                            "'import time; time.sleep(600)'], start_new_session=True); "
                            "open({str(pidfile)!r}, 'w').write(str(p.pid))"], check=True)
            print(open({str(pidfile)!r}).read())
    """)
    helper = int(out)
    assert wait_for(lambda: not psutil.pid_exists(helper) or psutil.Process(helper).status() == "zombie",
                    timeout=30)


def test_marker_search_reads_proc_like_psutil(tmp_path: Path) -> None:
    """The /proc reading of the marker search finds exactly what psutil's environ() finds."""
    from caelum_dask import proctree

    env = {**os.environ, "CAELUM_TEST_MARK": "outer:inner"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        wait_for(lambda: psutil.Process(child.pid).environ().get("CAELUM_TEST_MARK"), timeout=30)
        for wanted in (lambda v: "inner" in v.split(":"), lambda v: v == "outer:inner", lambda v: v == "inner"):
            by_proc = proctree._matching_pids_in_proc("CAELUM_TEST_MARK", wanted)
            by_psutil = []
            for proc in psutil.process_iter():
                try:
                    if proc.pid != os.getpid() and wanted(proc.environ().get("CAELUM_TEST_MARK", "")):
                        by_psutil.append(proc.pid)
                except psutil.Error:
                    continue
            assert sorted(by_proc or []) == sorted(by_psutil)
        assert [p.pid for p in proctree.marked_in("CAELUM_TEST_MARK", "inner")] == [child.pid]
    finally:
        child.kill()
        child.wait()
