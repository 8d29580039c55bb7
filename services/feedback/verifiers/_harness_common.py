# ruff: noqa: E731
# Shared prologue of the in-sandbox harnesses (prepended to each; never imported by the
# service). It reads the request from stdin and closes stdin before the candidate loads,
# keeps a private copy of stdout for the verdict, sends the candidate's own prints to
# /dev/null, snapshots builtins, and converts returned values to plain data (an object
# with a rigged __eq__ is rejected, not trusted).
import builtins
import json
import os
import sys

_REQUEST = json.loads(sys.stdin.read())
os.close(0)
os.open(os.devnull, os.O_RDONLY)  # becomes fd 0: the request cannot be read again
_NONCE = _REQUEST.pop("nonce")
_OUT = os.dup(1)
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.close(_null)
_BUILTINS = dict(builtins.__dict__)
_WRITE, _DUMPS, _TYPE, _EXIT = os.write, json.dumps, type, os._exit
_SCALARS = (int, float, str, bool, type(None))
_SEQUENCES = (list, tuple)


def _plain(value, depth=0):
    kind = _TYPE(value)
    if depth > 100:
        raise ValueError("returned value is nested more than 100 levels deep")
    if kind in _SCALARS:
        return value
    if kind in _SEQUENCES:
        return kind(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if kind in (set, frozenset):
        return kind(_plain(v, depth + 1) for v in value)
    raise TypeError(
        f"the function returned a {kind.__name__}; return plain data (numbers, strings, lists, dicts)"
    )


def _encode(value):
    """Plain data to JSON, keeping tuples, sets, dict keys and non-finite floats."""
    kind = _TYPE(value)
    if kind is float and value != value or kind is float and value in (float("inf"), float("-inf")):
        return {"__float__": repr(value)}
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_encode(v) for v in value]
    if kind is tuple:
        return {"__tuple__": [_encode(v) for v in value]}
    if kind in (set, frozenset):
        return {"__set__": [_encode(v) for v in value]}
    return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}


def _verdict(payload):
    _WRITE(_OUT, (_NONCE + _DUMPS(payload) + "\n").encode())
    sys.stdout.flush()
    _EXIT(0)
