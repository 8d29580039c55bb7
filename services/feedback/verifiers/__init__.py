"""Verifiers: one protocol (`Verifier.grade(task, response) -> Grade`), one file per kind
(code, math, multiple choice, custom HTTP endpoint)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from distil.data import VerifierKind

from ..sandbox import Sandbox
from .code import CodeVerifier, CodeVerifierConfig
from .custom import CustomVerifier, CustomVerifierConfig
from .extract import extract_code
from .math_answer import MathVerifier, MathVerifierConfig
from .mcq import MultipleChoiceVerifier
from .protocol import Grade, Split, TestOutcome, TestStatus, Verifier

__all__ = [
    "CodeVerifier",
    "CodeVerifierConfig",
    "CustomVerifier",
    "CustomVerifierConfig",
    "Grade",
    "MathVerifier",
    "MathVerifierConfig",
    "MultipleChoiceVerifier",
    "Split",
    "TestOutcome",
    "TestStatus",
    "Verifier",
    "VerifierConfig",
    "Verifiers",
    "extract_code",
]


class VerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: CodeVerifierConfig = CodeVerifierConfig()
    math: MathVerifierConfig = MathVerifierConfig()
    custom: CustomVerifierConfig = CustomVerifierConfig()


class Verifiers:
    """One verifier per kind, chosen by ``task.verifier``."""

    def __init__(self, sandbox: Sandbox, config: VerifierConfig | None = None) -> None:
        config = config or VerifierConfig()
        self._by_kind: dict[str, Verifier] = {
            "code": CodeVerifier(sandbox, config.code),
            "math": MathVerifier(config.math),
            "mcq": MultipleChoiceVerifier(),
            "custom": CustomVerifier(config.custom),
        }

    def for_kind(self, kind: VerifierKind) -> Verifier:
        return self._by_kind[kind]
