"""``distil plot``: one PNG with a job's reward, success, loss, KL and evaluation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward_mean",)),
    ("success rate", ("success_rate",)),
    ("loss", ("loss",)),
    ("KL", ("kl_teacher_student", "rollout_kl")),
)


def plot_metrics(points: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [p for p in points if p["kind"] == "train"]
    evals = [p for p in points if p["kind"] == "eval"]
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(4 * (len(PANELS) + 1), 3.2))
    for ax, (name, keys) in zip(axes, PANELS, strict=False):
        for key in keys:
            xs = [p["step"] for p in train if key in p]
            if xs:
                ax.plot(xs, [p[key] for p in train if key in p], marker=".", label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    ax = axes[-1]
    keys = sorted({k for p in evals for k in p if k.startswith(("score/", "accuracy/"))})
    for key in keys[:8]:
        ax.plot(
            [p["step"] for p in evals if key in p], [p[key] for p in evals if key in p], marker="o", label=key
        )
    ax.set_title("evaluation")
    ax.set_xlabel("step")
    if keys:
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
