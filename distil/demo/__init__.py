"""The demo task: small, generated Python-function problems a 135M model can learn from."""

from distil.demo.tasks import FAMILIES, make_split, make_tasks

__all__ = ["FAMILIES", "make_split", "make_tasks"]
