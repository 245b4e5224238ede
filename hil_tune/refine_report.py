"""Per-round figures of the active loop: rounds.json and a plot a person reads at a glance.

Why a module of its own: the figures are read back from each round's own files (its evaluation
report, the proxy's fidelity, the capture's plan), so rounds.json is the same whether a run went
through in one go or was killed and resumed, and can be rewritten at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file-only backend

from hil_tune.atomic import atomic_write

ROWS = ("default", "expert", "predicted", "ideal", "oracle")


def round_record(round_dir: Path, r: int) -> dict[str, Any]:
    """One round's figures: held-out table, proxy fidelity at the predictions (held-out images, the
    round's proxy against the device at the round's predictor's settings), the previous proxy on
    the round's new samples, and the device queries spent."""
    report = json.loads((round_dir / "eval" / "report.json").read_text())
    fidelity = json.loads((round_dir / "eval" / "fidelity.json").read_text())
    steps = round_dir / "steps.json"
    queries = {"eval": sum(report["queries"].values()), "fidelity": fidelity["queries"], "capture": 0}
    record: dict[str, Any] = {
        "round": r,
        "proxy": fidelity["proxy"],
        "predictor": fidelity["predictor"],
        "held_out": {m: report["summary"][m] for m in ROWS if m in report["summary"]},
        "wins_over_expert_by_loss": report["wins_over_expert_by_loss"],
        "proxy_vs_device_at_predicted_db": fidelity["psnr"],
        "eval_queries": report["queries"],
        "seconds": json.loads(steps.read_text()) if steps.exists() else {},
    }
    before = round_dir / "proxy_before.json"
    if before.exists():
        record["previous_proxy_on_new_samples_db"] = json.loads(before.read_text())["psnr"]
        plan = json.loads((round_dir / "samples" / "plan.json").read_text())
        queries["capture"] = len(plan["rows"])
    record["device_queries"] = {**queries, "total": sum(queries.values())}
    return record


def write_rounds(out: Path, records: list[dict[str, Any]]) -> None:
    """rounds.json (cumulative queries added) and rounds.png."""
    total = 0
    for rec in records:
        total += rec["device_queries"]["total"]
        rec["device_queries"]["cumulative"] = total
    first = records[0]["held_out"]["predicted"]["psnr"]
    body = {
        "rounds": records,
        "predicted_psnr_gain_db": records[-1]["held_out"]["predicted"]["psnr"] - first,
    }
    atomic_write(out / "rounds.json", json.dumps(body, indent=2).encode())
    plot_rounds(records, out / "rounds.png")


def plot_rounds(records: list[dict[str, Any]], path: Path) -> None:
    rounds = [r["round"] for r in records]
    labels = [f"{r['round']}\n{r['device_queries']['cumulative']} q" for r in records]
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in ROWS:
        values = [r["held_out"].get(m, {}).get("psnr") for r in records]
        if any(v is not None for v in values):
            ax_t.plot(rounds, values, marker="o", label=m, lw=2.5 if m == "predicted" else 1.2)
    ax_t.set_title("held-out images on the device (PSNR, dB)")
    ax_t.legend(fontsize=8)
    at_pred = [r["proxy_vs_device_at_predicted_db"]["mean"] for r in records]
    ax_p.plot(rounds, at_pred, marker="o", label="at the predictor's settings (held-out)")
    new = [r.get("previous_proxy_on_new_samples_db", {}).get("mean") for r in records]
    if any(v is not None for v in new):
        ax_p.plot(rounds, new, marker="s", ls="--", label="previous proxy on the round's new samples")
    ax_p.set_title("proxy vs device (PSNR, dB)")
    ax_p.legend(fontsize=8)
    for ax in (ax_t, ax_p):
        ax.set_xticks(rounds, labels)
        ax.set_xlabel("round (cumulative device queries)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
