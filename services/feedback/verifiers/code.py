"""Code verifier: runs the response's program against the task's tests in the sandbox,
one sandbox run per test (each timed separately), and compares in the trusted parent."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distil.data import CallTest, CheckTest, StdioTest, Task

from ..sandbox import ExecResult, Sandbox
from . import harness
from .compare import DEFAULT_ABS_TOL, DEFAULT_REL_TOL, outputs_match, values_match
from .extract import extract_code
from .feedback_text import FeedbackTextConfig, build_feedback, user_traceback
from .protocol import Grade, Split, TestOutcome, TestStatus

_STATUS: dict[str, TestStatus] = {
    "timeout": "TLE",
    "memory_limit": "MLE",
    "output_limit": "OLE",
    "runtime_error": "RE",
    "sandbox_error": "SANDBOX_ERROR",
}


HARNESSED_USER_FILES = ("/sandbox/solution.py",)


class CodeVerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    block: Literal["last", "first"] = Field(default="last", description="which ```python block to grade")
    timeout_s: float = Field(default=6.0, gt=0, description="per test, wall clock from exec")
    memory_mb: int = Field(default=1024, ge=64)
    rel_tol: float = DEFAULT_REL_TOL
    abs_tol: float = DEFAULT_ABS_TOL
    max_code_chars: int = Field(default=100_000, ge=100)
    check_seed: int = 0
    feedback: FeedbackTextConfig = FeedbackTextConfig()


def assemble(prefix: str, code: str, entry_points: list[str]) -> str:
    """The program to run: the task's prefix (e.g. HumanEval's signature and imports),
    then the code -- on a new line when the code defines the function itself, directly
    after the prefix when it is a bare function body (completion style)."""
    if not prefix:
        return code
    if any(re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) for name in entry_points):
        return prefix.rstrip() + "\n\n" + code
    if code.startswith((" ", "\t")):
        return prefix + code
    return prefix.rstrip() + "\n\n" + code


def compile_error(program: str, limit: int) -> str | None:
    """Syntax check in the parent (parsing only, nothing runs)."""
    if len(program) > limit:
        return f"the program is {len(program)} characters long; the limit is {limit}"
    try:
        ast.parse(program, filename="main.py")
    except SyntaxError as exc:
        return f'  File "main.py", line {exc.lineno}\n    {(exc.text or "").rstrip()}\nSyntaxError: {exc.msg}'
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _entry_points(tests: list[StdioTest | CallTest | CheckTest]) -> list[str]:
    names = []
    for test in tests:
        if isinstance(test, CallTest):
            names.append(test.fn)
        elif isinstance(test, CheckTest):
            names.append(test.entry_point)
    return names


def behaviour_key(outcomes: list[TestOutcome]) -> str:
    """What maj@k votes on for code: the behaviour on the tests. Per test the verdict, and
    for a wrong answer what it output (stripped lines) and why it failed; a crash, timeout
    or limit counts as one behaviour whatever it printed. A digest, so keys stay short."""
    per_test = [
        [o.status, [line.strip() for line in o.output.strip().splitlines()], o.error]
        if o.status == "WA"
        else [o.status]
        for o in outcomes
    ]
    return hashlib.sha256(json.dumps(per_test).encode()).hexdigest()[:32]


def _show(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


class CodeVerifier:
    def __init__(self, sandbox: Sandbox, config: CodeVerifierConfig | None = None) -> None:
        self.sandbox = sandbox
        self.config = config or CodeVerifierConfig()

    def grade(self, task: Task, response: str, *, split: Split = "public", truncated: bool = False) -> Grade:
        cfg = self.config
        tests = task.tests(split)
        extracted = extract_code(response, rule=cfg.block, truncated=truncated)
        if extracted.code is None:
            return Grade(
                reward=0.0,
                success=False,
                format_error=extracted.problem,
                feedback=build_feedback([], format_error=extracted.problem, cfg=cfg.feedback),
            )
        program = assemble(task.code_prefix, extracted.code, _entry_points(tests))
        error = compile_error(program, cfg.max_code_chars)
        if error is not None:
            outcomes = [TestOutcome(index=i, status="CE", error=error) for i in range(len(tests))]
        else:
            outcomes = [
                self.run_test(i, test, program, prefix=task.code_prefix) for i, test in enumerate(tests)
            ]
        passed = sum(o.status == "AC" for o in outcomes)
        success = bool(outcomes) and passed == len(outcomes)
        return Grade(
            reward=1.0 if success else 0.0,
            success=success,
            fraction_passed=passed / len(outcomes) if outcomes else 0.0,
            tests=outcomes,
            feedback=None if success else build_feedback(outcomes, cfg=cfg.feedback),
            extracted=extracted.code,
            answer_key=behaviour_key(outcomes),
        )

    # -- one test -------------------------------------------------------------------------

    def _run(self, program: str, *, stdin: str, files: dict[str, str] | None = None) -> ExecResult:
        return self.sandbox.run(
            program,
            stdin=stdin,
            files=files,
            timeout_s=self.config.timeout_s,
            memory_mb=self.config.memory_mb,
        )

    def run_test(
        self, index: int, test: StdioTest | CallTest | CheckTest, program: str, *, prefix: str = ""
    ) -> TestOutcome:
        if isinstance(test, StdioTest):
            return self._stdio(index, test, program)
        if isinstance(test, CallTest):
            return self._call(index, test, program)
        return self._check(index, test, program, prefix)

    def _failed(
        self, index: int, result: ExecResult, shown_input: str, *, harnessed: bool = False
    ) -> TestOutcome:
        error = result.stderr if result.status == "runtime_error" else result.detail
        if harnessed and result.status == "runtime_error":  # drop the harness's own frames
            error = user_traceback(error, self.config.feedback.error_frames, user_files=HARNESSED_USER_FILES)
        if result.status == "runtime_error" and result.signal:
            error = (error + f"\nKilled by signal {result.signal}").strip()
        if result.status == "sandbox_error":
            error = result.detail
        return TestOutcome(
            index=index,
            status=_STATUS[result.status],
            input=shown_input,
            output=result.stdout[-2000:],
            error=error,
            wall_s=result.wall_s,
            cpu_s=result.cpu_s,
        )

    def _stdio(self, index: int, test: StdioTest, program: str) -> TestOutcome:
        result = self._run(program, stdin=test.input)
        if not result.ok:
            return self._failed(index, result, test.input)
        ok = outputs_match(
            result.stdout, test.output, rel_tol=self.config.rel_tol, abs_tol=self.config.abs_tol
        )
        return TestOutcome(
            index=index,
            status="AC" if ok else "WA",
            input=test.input,
            output=result.stdout[-2000:],
            expected="" if ok else test.output,
            wall_s=result.wall_s,
            cpu_s=result.cpu_s,
        )

    def _call(self, index: int, test: CallTest, program: str) -> TestOutcome:
        stdin, nonce = harness.request(fn=test.fn, args=test.args, kwargs=test.kwargs)
        shown = (
            f"{test.fn}(*{json.dumps(test.args)}, **{json.dumps(test.kwargs)})"
            if test.kwargs
            else (f"{test.fn}(*{json.dumps(test.args)})")
        )
        result = self._run(harness.program("call"), stdin=stdin, files={"solution.py": program})
        if not result.ok:
            return self._failed(index, result, shown, harnessed=True)
        verdict = harness.verdict(result.stdout, nonce)
        common = dict(index=index, input=shown, wall_s=result.wall_s, cpu_s=result.cpu_s)
        if verdict is None or not isinstance(verdict.get("result"), str):
            return TestOutcome(**common, status="WA", error="the program exited before returning a result")
        try:
            got = json.loads(verdict["result"])
        except json.JSONDecodeError:
            return TestOutcome(**common, status="WA", error="the result was not valid JSON")
        ok = values_match(got, test.expected, rel_tol=self.config.rel_tol, abs_tol=self.config.abs_tol)
        return TestOutcome(
            **common,
            status="AC" if ok else "WA",
            output=verdict["result"][:2000],
            expected="" if ok else _show(test.expected),
        )

    def _check(self, index: int, test: CheckTest, program: str, prefix: str) -> TestOutcome:
        seed = self.config.check_seed
        stdin, nonce = harness.request(tests=test.code, entry_point=test.entry_point, seed=seed)
        shown = f"check({test.entry_point})"
        first = self._run(harness.program("check"), stdin=stdin, files={"solution.py": program})
        if not first.ok:
            return self._failed(index, first, shown, harnessed=True)
        common = dict(index=index, input=shown, wall_s=first.wall_s, cpu_s=first.cpu_s)
        record = harness.verdict(first.stdout, nonce)
        if record is None or not isinstance(record.get("calls"), list):
            return TestOutcome(**common, status="WA", error="the program exited before the tests finished")
        # The verdict: replay the recorded results through the asserts without the candidate.
        # The task's own prefix (trusted: e.g. HumanEval helpers the asserts use) is loaded there.
        replay_stdin, replay_nonce = harness.request(
            tests=test.code, entry_point=test.entry_point, seed=seed, calls=record["calls"], prefix=prefix
        )
        second = self._run(harness.program("replay"), stdin=replay_stdin)
        verdict = harness.verdict(second.stdout, replay_nonce) if second.ok else None
        if verdict is None:
            detail = second.detail or second.stderr[-500:] or "no verdict"
            if second.status == "runtime_error":  # the tests themselves failed on the results
                return TestOutcome(**common, status="WA", error=user_error(second.stderr))
            return TestOutcome(
                **common, status="SANDBOX_ERROR", error=f"replay of the tests failed: {detail}"
            )
        if verdict.get("passed") is True:
            return TestOutcome(**common, status="AC")
        reason = verdict.get("diverged") or (
            f"Failed: {verdict.get('assertion')}" if verdict.get("assertion") else ""
        )
        return TestOutcome(**common, status="WA", error=reason or "an assertion failed")


def user_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
