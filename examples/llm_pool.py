"""The LLM pool in one file: two Ollama servers become one endpoint.

Run it:  python examples/llm_pool.py

No model weights are needed: it starts two fake Ollama servers from the test suite
(tests/fake_ollama.py, which speaks Ollama's real HTTP protocol). On a real network, drop the
fakes: each worker finds its machine's Ollama itself (OLLAMA_HOST or 127.0.0.1:11434).

What it shows: discovery (the workers report both servers, what they have and what is loaded),
routing (the server with the model already loaded gets the request), streaming, a batch run as
Dask tasks next to the servers, and the workflow step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dask.config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_ollama import FakeOllama  # noqa: E402

from caelum_dask import connect  # noqa: E402
from caelum_dask.cli.progress import ProgressDisplay  # noqa: E402
from caelum_dask.llm import LLMPool  # noqa: E402
from caelum_dask.llm.steps import generate_step  # noqa: E402


def main() -> None:
    gpu_box = FakeOllama(models=["llama3.2", "nomic-embed-text"], loaded=["llama3.2"], name="gpu-box",
                         latency=0.05).start()
    laptop = FakeOllama(models=["llama3.2", "qwen2.5:0.5b"], name="laptop", latency=0.05).start()
    # Where the workers look for Ollama: OLLAMA_HOST plus the config key caelum.llm.hosts.
    os.environ["OLLAMA_HOST"] = gpu_box.url
    settings = {"caelum.llm.hosts": [laptop.url], "caelum.embedded.n-workers": 2,
                "caelum.llm.probe-interval": "0.5s"}
    try:
        with dask.config.set(settings), connect() as client, LLMPool(client) as pool:
            print("backends:")
            for b in pool.status()["backends"]:
                loaded = [m["model"] for m in b["loaded"]]
                print(f"  {b['url']}  up={b['up']}  models={b['models']}  loaded={loaded}")

            reply = pool.generate("llama3.2", "Why is the sky blue?")
            print(f"generate -> {reply['response']!r}  (the loaded model wins)")

            print("chat, streamed: ", end="")
            for part in pool.chat("llama3.2", [{"role": "user", "content": "stream me a reply"}], stream=True):
                print(part["message"]["content"], end="", flush=True)
            print()

            print("embed ->", len(pool.embed("nomic-embed-text", ["a", "b"])["embeddings"]), "vectors")

            prompts = [f"summarise file {i}" for i in range(6)]
            with ProgressDisplay("caelum llm", noun="requests") as display:  # progress on stderr
                results = pool.map("llama3.2", prompts, progress=display)
            for r in results:
                print(f"map[{r['index']}] ok={r['ok']} on {r['backend']}: {r['response']['response']!r}")

            summary = client.submit(generate_step, "qwen2.5:0.5b", ["changed file a.py", "changed file b.py"]).result()
            print(f"workflow step: {summary['ok']}/{summary['count']} ok, responses={summary['responses']}")
            print("router:", pool.status()["router"])
    finally:
        gpu_box.kill()
        laptop.kill()


if __name__ == "__main__":
    main()
