"""distil: reinforcement learning of language models from rich feedback.

The core package is importable without Ray, Redis or vLLM running.
"""

__version__ = "0.1.0"
