"""Training curves of a run's stages (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path

from hw.files import staged, writing


def plot_curves(out: Path, stages: list[str], dest: Path | None = None) -> Path | None:
    """Training loss and dev metric against step, one panel per stage (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = []
    for s in stages:
        f = Path(out) / s / "metrics.json"
        if f.is_file():
            data.append((s, json.loads(f.read_text())))
    data = [(s, d) for s, d in data if d.get("history")]
    if not data:
        return None
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.4), squeeze=False)
    for ax, (s, d) in zip(axes[0], data):
        h = d["history"]
        tl = [(r["step"], r["loss"]) for r in h if "loss" in r]
        if tl:
            ax.plot(*zip(*tl), color="tab:blue", label="train loss")
            if all(v > 0 for _, v in tl):  # a loss of exactly 0 (student = teacher) has no log
                ax.set_yscale("log")
        # phase boundaries (intermediate -> prediction distillation: different loss scales)
        logged = [r for r in h if "loss" in r]
        for a, b in zip(logged, logged[1:]):
            if a["phase"] != b["phase"]:
                ax.axvline(a["step"], color="grey", ls=":", lw=1)
                ax.text(a["step"], 1, f" {b['phase']}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=7, color="grey")
        ax.set_title(f"{s} ({d.get('type', '')})")
        ax.set_xlabel("step")
        ev = [(r["step"], r["dev"]["main"]) for r in h if "dev" in r]
        if ev:
            ax2 = ax.twinx()
            ax2.plot(*zip(*ev), "o-", color="tab:red", label="dev")
            ax2.set_ylabel("dev main metric", color="tab:red")
    fig.tight_layout()
    dest = dest or Path(out) / "curve.png"
    try:
        with staged(dest, suffix=".tmp.png") as tmp, writing(dest):
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return dest
