"""The feedback service: sandboxed execution, verifiers and feedback sources.

Entry points (import the submodules; this package imports nothing heavy)::

    from services.feedback.sandbox import SandboxConfig, make_sandbox    # run untrusted code
    from services.feedback.grading import Grader                         # grade a group
    from services.feedback.config import FeedbackConfig                  # sandbox, verifiers, sources
    from services.feedback.stage import FeedbackStage, task_lookup       # bus: rollouts -> feedback
    from services.feedback.app import create_app                         # HTTP API
    from services.feedback.deployment import build_app                   # Ray Serve

See docs/feedback.md.
"""
