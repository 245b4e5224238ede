"""demo-out/report.html: one static page of what ran, its figures, tables and where everything is.

Plain HTML and CSS, images by relative path, no network: it opens from a file system, an archive
or a CI artefact store alike. A tiny script counts the images that loaded (the browser test reads
it back).
"""

from __future__ import annotations

import html
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; } td, th { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f5f5f5; padding: 0.1rem 0.3rem; border-radius: 3px; font-size: 90%; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 90%; } .muted { color: #666; }
"""

SCRIPT = """
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _num(x: object, fmt: str = "{:.2f}") -> str:
    if x is None:
        return "-"
    try:
        return fmt.format(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _e(x)


def table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(out: Path, rel: str | None, caption: str) -> str:
    if not rel or not (out / rel).exists():
        return f"<p class='muted'>(missing figure: {_e(rel)})</p>"
    return f"<figure><img src='{_e(rel)}' alt='{_e(caption)}'><figcaption>{_e(caption)}</figcaption></figure>"


def _render_body(out: Path, facts: dict[str, Any], art: dict[str, str]) -> list[str]:
    """The contact sheet of bundled photos and RAW files through the ISP."""
    parts: list[str] = []
    parts.append(figure(out, art.get("contact_sheet"), "Bundled photos and camera RAW files through the ISP"))
    return parts


def _capture_body(out: Path, facts: dict[str, Any], art: dict[str, str]) -> list[str]:
    """How many samples the sweep made, how fast, and how much of each output clipped."""
    parts: list[str] = []
    parts.append(
        table(
            ["samples", "samples/s", "median clipped share"],
            [
                [
                    _e(facts.get("samples")),
                    _num(facts.get("samples_per_s")),
                    _num(facts.get("median_clipped"), "{:.1%}"),
                ]
            ],
            numeric_from=0,
        )
    )
    parts.append(figure(out, art.get("preview"), "Outputs across the sweep (labels: the parameters that vary most)"))
    return parts


def _proxy_body(out: Path, facts: dict[str, Any], art: dict[str, str]) -> list[str]:
    """Fidelity on held-out samples, rank agreement, and the figures behind them."""
    parts: list[str] = []
    rows = []
    for split, f in facts.get("fidelity", {}).items():
        p, s = f["psnr"], f["ssim"]
        rows.append(
            [
                _e(split.replace("_", " ")),
                _e(p["n"]),
                _num(p["mean"]),
                _num(p["median"]),
                _num(p["worst5"]),
                _num(s["mean"], "{:.3f}"),
            ]
        )
    parts.append(table(["held out", "samples", "PSNR mean (dB)", "median", "worst 5%", "SSIM mean"], rows))
    parts.append(
        f"<p>Spearman correlation of proxy loss and ISP loss over parameter sets: "
        f"<b>{_num(facts.get('spearman'), '{:.3f}')}</b>. Held-out images: "
        f"{_e(', '.join(facts.get('held_out_sources', [])))}.</p>"
    )
    parts += [
        figure(out, art.get("curves"), "Training curves"),
        figure(out, art.get("sensitivity"), "One parameter at a time: device (solid) and proxy (dashed)"),
        figure(out, art.get("side_by_side"), "Device vs proxy on held-out samples"),
    ]
    return parts


def _predictor_body(out: Path, facts: dict[str, Any], art: dict[str, str]) -> list[str]:
    """The table of methods on the held-out photos, the margins, and the contact sheet."""
    parts: list[str] = []
    tab = facts.get("table", {})
    parts.append(
        table(
            ["method", "mean PSNR (dB)", "mean SSIM", "mean loss (optimised)"],
            [
                [_e(m), _num(v["psnr"]), _num(v["ssim"], "{:.3f}"), _num(v.get("loss"), "{:.4f}")]
                for m, v in tab.items()
            ],
        )
    )
    mg = facts.get("margins_db", {})
    parts.append(
        f"<p>Predicted - expert {_num(mg.get('predicted_minus_expert'), '{:+.2f}')} dB; expert - default "
        f"{_num(mg.get('expert_minus_default'), '{:+.2f}')} dB; oracle - predicted "
        f"{_num(mg.get('oracle_minus_predicted'), '{:+.2f}')} dB. Expert: CMA-ES with "
        f"{_e(facts.get('expert_budget'))} ISP evaluations on the training images; oracle: "
        f"{_e(facts.get('oracle_budget'))} per held-out image. All measured on the real ISP.</p>"
    )
    parts += [
        figure(
            out,
            art.get("grid"),
            "Input, then " + ", ".join(facts.get("table") or ["the methods"]) + ", reference",
        ),
        figure(out, art.get("curves"), "Predictor training"),
    ]
    return parts


def _live_body(out: Path, facts: dict[str, Any], art: dict[str, str]) -> list[str]:
    """Counts and latency percentiles of the live session, and its frames."""
    parts: list[str] = []
    parts.append(
        table(
            [
                "frames",
                "fps",
                "pushes",
                "values pushed",
                "skipped in flight",
                "rate-limited",
                "bad predictions",
                "faults",
                "bytes per push",
            ],
            [
                [
                    _e(facts.get(k)) if k != "fps" else _num(facts.get(k), "{:.1f}")
                    for k in (
                        "frames",
                        "fps",
                        "pushes",
                        "pushed_params",
                        "skipped_in_flight",
                        "rate_limited",
                        "bad_predictions",
                        "faults",
                        "bytes_per_push",
                    )
                ]
            ],
            numeric_from=0,
        )
    )
    lat = facts.get("latency_ms", {})
    parts.append(
        table(
            ["stage", "p50 (ms)", "p99 (ms)"],
            [[_e(k), _num(v.get("p50")), _num(v.get("p99"))] for k, v in lat.items() if v.get("n")],
        )
    )
    parts.append(figure(out, art.get("preview"), "Live frames with the parameters they were made with"))
    return parts


_BODIES: dict[str, Callable[[Path, dict[str, Any], dict[str, str]], list[str]]] = {
    "render": _render_body,
    "capture": _capture_body,
    "proxy": _proxy_body,
    "predictor": _predictor_body,
    "live": _live_body,
}


def _section(out: Path, step: dict[str, Any]) -> str:
    name, facts, art = step["name"], step.get("facts", {}), step.get("artefacts", {})
    parts = [
        f"<h2 id='{_e(name)}'>{_e(name)}: {_e(step['what'])}</h2>",
        f"<p>Command: <code>{_e(step.get('command', ''))}</code> ({_num(step.get('seconds'), '{:.0f}')} s)</p>",
    ]
    if name in _BODIES:
        parts += _BODIES[name](out, facts, art)
    links = "".join(f"<li><a href='{_e(v)}'>{_e(v)}</a> ({_e(k)})</li>" for k, v in art.items())
    if links:
        parts.append(f"<p>Artefacts:</p><ul>{links}</ul>")
    return "\n".join(parts)


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    steps = summary.get("steps", [])
    total = sum(s.get("seconds", 0) for s in steps)
    overview = table(
        ["step", "what", "seconds"],
        [
            [f"<a href='#{_e(s['name'])}'>{_e(s['name'])}</a>", _e(s["what"]), _num(s.get("seconds"), "{:.0f}")]
            for s in steps
        ],
        numeric_from=2,
    )
    body = "\n".join(_section(out, s) for s in steps)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hil-tune demo report</title>
<style>{CSS}</style><script>{SCRIPT}</script></head>
<body>
<h1>hil-tune demo report</h1>
<p class="muted">{_e(summary.get("started", ""))} to {_e(summary.get("finished", ""))}, {_e(platform.node())}
({_e(platform.machine())}, Python {_e(platform.python_version())}); {total:.0f} s in all.
Simulator and bundled data only.</p>
<p>hil-tune sweeps parameter sets over an ISP, learns a differentiable proxy of it, and trains a network that
predicts the best parameters for each image; at run time the predictor pushes per-frame parameters to the device.
This page shows one small run of the whole loop.</p>
{overview}
{body}
<h2>Where everything is</h2>
<p>All paths are relative to <code>{_e(out)}</code>; <code>summary.json</code> holds every figure on this page.</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
