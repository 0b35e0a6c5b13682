"""`caelum llm …` commands as a user runs them (real subprocesses, fake Ollama backends)."""

from __future__ import annotations

import json
import socket

from harness import run_caelum

M = "llama3.2:latest"


def test_llm_help_explains_the_commands() -> None:
    out = run_caelum("llm", "--help")
    assert out.returncode == 0
    for command in ("serve", "status", "pull"):
        assert command in out.stdout
    serve = run_caelum("llm", "serve", "--help")
    assert "--port" in serve.stdout and "Ollama-compatible" in serve.stdout


def test_status_json_and_pull_with_explicit_backends(fakes) -> None:
    a = fakes(models=[M], loaded=[M])
    b = fakes(models=["qwen2.5:0.5b"])
    out = run_caelum("llm", "status", "--json", "--backend", a.url, "--backend", b.url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {x["url"]: (x["up"], x["models"]) for x in report["backends"]} == {
        a.url: (True, [M]), b.url: (True, ["qwen2.5:0.5b"])}
    assert report["models"][M]["loaded_on"] == [a.url]

    pulled = run_caelum("llm", "pull", "nomic-embed-text", "--backend", a.url, "--backend", b.url)
    assert pulled.returncode == 0, pulled.stderr
    assert "success" in pulled.stderr  # progress on stderr
    assert pulled.stdout.count("pulled") == 2
    assert "nomic-embed-text:latest" in a._models and "nomic-embed-text:latest" in b._models

    failed = run_caelum("llm", "pull", "no-such-model", "--json", "--backend", a.url)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["results"][0]["error"] == "pull model manifest: file does not exist"


def test_serve_on_a_taken_port_is_one_clear_error(fakes) -> None:
    a = fakes(models=[M])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_caelum("llm", "serve", "--port", str(port), "--backend", a.url)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        f"caelum: error: port {port} on 127.0.0.1 is already in use (is Ollama itself listening there?); "
        "choose another with --port")
    assert "Traceback" not in out.stderr


def test_status_with_every_backend_down_still_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_caelum("llm", "status", "--backend", f"http://127.0.0.1:{port}")
    assert out.returncode == 0
    assert "DOWN" in out.stdout and "0 up" in out.stdout
    pull = run_caelum("llm", "pull", M, "--backend", f"http://127.0.0.1:{port}")
    assert pull.returncode != 0 and "caelum: error: no Ollama backend is up" in pull.stderr
