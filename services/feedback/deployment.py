"""Ray Serve deployment of the feedback service (HTTP API of app.py).

    serve run services.feedback.deployment:build_app

or ``serve.run(build_app({"sandbox": {"slots": 8}}))``. Each replica builds its own
sandbox and worker pool; scale with replicas x CPUs.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from .app import create_app
from .config import FeedbackConfig

app = create_app()


@serve.deployment(name="feedback", max_ongoing_requests=256)
@serve.ingress(app)
class FeedbackDeployment:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        state = app.state.feedback
        state.configure(FeedbackConfig.model_validate(config or {}))
        _ = state.grader  # build the sandbox now: a replica that cannot sandbox fails to start

    def __del__(self) -> None:
        app.state.feedback.close()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder; ``args`` is a FeedbackConfig as a dict."""
    return FeedbackDeployment.bind(args or {})
