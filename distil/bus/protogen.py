"""Regenerate the Python code for the wire schema: ``make proto`` (or ``python -m distil.bus.protogen``).

``proto/distil/v1/*.proto`` is the single source of truth; the generated modules are
committed under ``distil/bus/_pb/`` so that importing distil needs no protoc. A test
regenerates into a temporary directory and checks the committed files are identical,
so CI fails when someone edits a ``.proto`` without running ``make proto``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
SCHEMA_DIR = PROTO_ROOT / "distil" / "v1"
PB_DIR = Path(__file__).resolve().parent / "_pb"

_INIT = '"""Generated from proto/distil/v1 by `make proto`; do not edit."""\n'


def proto_files() -> list[Path]:
    files = sorted(SCHEMA_DIR.glob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no .proto files under {SCHEMA_DIR}; is this a full checkout?")
    return files


def generate(out_dir: Path) -> list[Path]:
    """Write ``<name>_pb2.py`` and ``<name>_pb2.pyi`` for every schema file into ``out_dir``."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - dev dependency
        raise RuntimeError("grpcio-tools is needed to regenerate; run `make install`") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        written = []
        for src in sorted((Path(tmp) / "distil" / "v1").iterdir()):
            dst = out_dir / src.name
            shutil.copyfile(src, dst)
            written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text(_INIT)
    return [init, *written]


def main() -> int:
    for path in generate(PB_DIR):
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
