"""Training curves as a PNG: a person reads convergence faster from a plot than from a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file-only backend


def plot_curves(history: list[dict[str, Any]], out: Path, title: str) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in [k for k in history[0] if k.endswith("_loss")] if history else []:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, values, label=key.removesuffix("_loss").replace("_", " ") + " loss")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss")
    ax_loss.legend()
    for key, label in (("val_sources_psnr", "unseen images"), ("val_params_psnr", "unseen parameter sets")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_psnr.plot(epochs, values, label=label)
    if ax_psnr.lines:
        ax_psnr.set_xlabel("epoch")
        ax_psnr.set_ylabel("PSNR vs ISP (dB)")
        ax_psnr.set_title("held-out fidelity")
        ax_psnr.legend()
    else:
        ax_psnr.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
