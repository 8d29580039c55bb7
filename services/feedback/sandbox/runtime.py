"""What a sandboxed program may see of this host's Python: the interpreter and a few
packages, resolved once so that every run binds the same read-only paths."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SandboxUnavailable

SITE_IN_SANDBOX = "/opt/site"

# Numeric libraries start one thread per core unless told otherwise; one is plenty for a
# test program and keeps the address-space limit from failing their thread start-up.
THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
}


def world_reachable(path: Path) -> bool:
    """Whether a process of an arbitrary other uid can reach ``path`` (every parent
    directory searchable by others, the path itself readable by others)."""
    path = Path(os.path.realpath(path))
    try:
        for parent in list(reversed(path.parents)):
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _make_world_readable(root: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)


def stage(paths: dict[str, Path], cache_dir: Path) -> Path:
    """Copy ``paths`` (relative name -> file or directory) into a world-readable cache
    directory once and return it. Used when this environment lives where other uids cannot
    read it (a virtualenv under /root): the slot uids need the packages and bwrap."""
    key = hashlib.sha256(
        "\n".join(f"{rel}={p.resolve()}:{p.stat().st_mtime_ns}" for rel, p in sorted(paths.items())).encode()
    ).hexdigest()[:16]
    target = cache_dir / key
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    for parent in [cache_dir, *cache_dir.parents]:
        if parent.stat().st_mode & stat.S_IXOTH == 0:
            raise SandboxUnavailable(
                f"{parent} is not searchable by other uids; choose another runtime_cache_dir"
            )
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
    try:
        for rel, src in paths.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)
        _make_world_readable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process staged it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass(frozen=True)
class Runtime:
    """The interpreter and package directories a sandboxed program runs with."""

    python: str
    packages: dict[str, str] = field(default_factory=dict)  # name in /opt/site -> host dir

    def host_site_dirs(self) -> list[str]:
        """The interpreter's own site/dist-packages directories that exist on this host."""
        prefix = Path(self.python).parent.parent
        version = Path(self.python).name.removeprefix("python")
        if not version[:1].isdigit():
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [
            prefix / "lib" / f"python{version}" / "site-packages",
            prefix / "lib" / f"python{version}" / "dist-packages",
            prefix / "lib" / "python3" / "dist-packages",
            prefix / "local" / "lib" / f"python{version}" / "dist-packages",
        ]
        return [str(c) for c in candidates if c.is_dir() and not c.is_symlink()]

    def env(self, home: str, *, pythonpath: str) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "PYTHONPATH": pythonpath,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
            **THREAD_ENV,
        }


def _package_dirs(names: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SandboxUnavailable(
                f"package {name!r} is not installed here; install it or drop it from packages"
            )
        pkg_dir = Path(next(iter(spec.submodule_search_locations)))
        found[name] = str(pkg_dir)
        libs = pkg_dir.with_name(f"{name}.libs")  # shared libraries vendored by auditwheel
        if libs.is_dir():
            found[libs.name] = str(libs)
    return found


def resolve_runtime(python: str | None, packages: list[str], *, drop_uid: bool, cache_dir: Path) -> Runtime:
    """Pick an interpreter the slot uid can execute and the package dirs to expose.

    When programs run as another uid (we are root), the interpreter must be reachable by
    that uid: a Python under ``/root`` is not, so the system Python of the same version
    is used instead (same ABI, so the packages of this environment still import).
    """
    if python is not None:
        candidates = [python]
    else:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [
            os.path.realpath(sys.executable),
            f"/usr/bin/python{version}",
            f"/usr/local/bin/python{version}",
        ]
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        if drop_uid and not world_reachable(Path(candidate)):
            continue
        pkgs = _package_dirs(packages)
        if drop_uid and not all(world_reachable(Path(d)) for d in pkgs.values()):
            staged = stage({name: Path(d) for name, d in pkgs.items()}, cache_dir)
            pkgs = {name: str(staged / name) for name in pkgs}
        return Runtime(python=os.path.realpath(candidate), packages=pkgs)
    raise SandboxUnavailable(
        f"no Python interpreter among {candidates} is executable by the sandbox uid; "
        "set sandbox.python to one that other users can run (e.g. /usr/bin/python3)"
    )
