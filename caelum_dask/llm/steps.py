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
                  retries: int | None = None, **opts: Any) -> dict[str, Any]:
    """Run ``prompts`` through ``model`` on the pool; a small JSON-able summary.

    Returns ``{"model", "count", "ok", "failed", "responses": [text | None, …] (in order),
    "errors": {index: message}, "machines": {machine: items}}``. ``opts`` are Ollama request
    fields (``options``, ``system``, ``format``, ``keep_alive``…). ``retries`` defaults to
    ``caelum.llm.retries`` of the process running the step (pass it to pin it in a workflow).
    """
    from caelum_dask.llm.batch import run_map

    with step_client() as client:
        results = run_map(client, model, list(prompts), kind=kind, retries=retries, fields=opts)
    responses = [_text(kind, item.response) if item.ok else None for item in results]
    machines: dict[str, int] = {}
    for item in results:
        if item.machine:
            machines[item.machine] = machines.get(item.machine, 0) + 1
    errors = {str(item.index): item.error for item in results if not item.ok}
    return {"model": model, "count": len(results), "ok": len(results) - len(errors), "failed": len(errors),
            "responses": responses, "errors": errors, "machines": machines}


def _text(kind: str, data: dict[str, Any] | None) -> Any:
    """The useful part of one reply: the text, the chat message's content, or the embeddings."""
    data = data or {}
    if kind == "chat":
        return (data.get("message") or {}).get("content")
    if kind == "embed":
        return data.get("embeddings")
    return data.get("response")
