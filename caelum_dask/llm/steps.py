"""Workflow step: LLM generation over many inputs, as one task of a workflow.

``generate_step("llama3.2", ["summarise: …", …])`` runs the prompts as a batch
(:meth:`LLMPool.map`) on the machines serving the model. Inside a Dask task (a workflow
step) it submits the batch through ``distributed.worker_client()``, which secedes from the
worker's thread pool while it waits; outside one it uses :func:`caelum_dask.connect`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caelum_dask.cluster import step_client


def generate_step(model: str, prompts: Sequence[str], *, kind: str = "generate",
                  retries: int = 2, **opts: Any) -> dict[str, Any]:
    """Run ``prompts`` through ``model`` on the pool; a small JSON-able summary.

    Returns ``{"model", "count", "ok", "failed", "responses": [text | None, …] (in order),
    "errors": {index: message}, "machines": {machine: items}}``. ``opts`` are Ollama request
    fields (``options``, ``system``, ``format``, ``keep_alive``…).
    """
    from caelum_dask.llm.batch import run_map

    with step_client() as client:
        results = run_map(client, model, list(prompts), kind=kind, progress=False, retries=retries, fields=opts)
    responses: list[Any] = []
    machines: dict[str, int] = {}
    for item in results:
        data = item.get("response") or {}
        if kind == "chat":
            responses.append((data.get("message") or {}).get("content") if item["ok"] else None)
        elif kind == "embed":
            responses.append(data.get("embeddings") if item["ok"] else None)
        else:
            responses.append(data.get("response") if item["ok"] else None)
        if item.get("machine"):
            machines[item["machine"]] = machines.get(item["machine"], 0) + 1
    errors = {str(item["index"]): item["error"] for item in results if not item["ok"]}
    return {"model": model, "count": len(results), "ok": len(results) - len(errors), "failed": len(errors),
            "responses": responses, "errors": errors, "machines": machines}
