"""Errors of the LLM pool: each names the model, the machines involved and what to do."""

from __future__ import annotations

from caelum_dask.errors import CaelumError


class ModelUnavailable(CaelumError):
    """No backend of the pool has the model installed (HTTP 404 through ``caelum llm serve``)."""

    status_code = 404


class NoBackendAvailable(CaelumError):
    """Backends have the model but none can take the request now (all down or cooling down)."""

    status_code = 503
    exit_code = 3


class BackendError(CaelumError):
    """A backend answered with an error that retrying elsewhere would not fix (e.g. bad request).

    ``status_code`` is the backend's HTTP status, ``backend`` its URL.
    """

    def __init__(self, message: str, status_code: int = 500, backend: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.backend = backend
