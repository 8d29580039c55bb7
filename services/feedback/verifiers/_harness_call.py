# ruff: noqa: E402, F821
# Function-call test (appended to _harness_common.py; runs as main.py in the sandbox).
import solution  # noqa: E402

_fn = getattr(solution, _REQUEST["fn"], None)
if not callable(_fn):
    raise NameError(f"the code defines no function named {_REQUEST['fn']!r}")
_result = _plain(_fn(*_REQUEST["args"], **_REQUEST["kwargs"]))
_verdict({"result": _DUMPS(_result)})
