"""What people look at while long work runs and after: one progress bar style, labelled contact sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress(*extra: TextColumn, console: object = None, disable: bool = False) -> Progress:
    """The progress bar every long step uses: count, rate of completion, elapsed and remaining time.

    `extra` columns go before the times, e.g. TextColumn("{task.fields[rate]}") for samples/s.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,  # type: ignore[arg-type]
        disable=disable,
    )


def contact_sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], tile: int = 192) -> Image.Image:
    """Grid of labelled thumbnails: one row per source, one column per rendering."""
    n_cols = max(len(cells) for _, cells in rows)
    label_h, row_label_w, pad = 16, 150, 4
    sheet = Image.new("RGB", (row_label_w + n_cols * (tile + pad), len(rows) * (tile + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row_name, cells) in enumerate(rows):
        y = r * (tile + label_h + pad)
        draw.text((4, y + tile // 2), row_name[:22], fill="black")
        for c, (label, img) in enumerate(cells):
            x = row_label_w + c * (tile + pad)
            thumb = Image.fromarray(img)
            thumb.thumbnail((tile, tile))
            sheet.paste(thumb, (x, y + label_h))
            draw.text((x, y + 2), label, fill="black")
    return sheet


def param_label(params: dict[str, Any], keys: list[str] | tuple[str, ...]) -> str:
    """`name=value` for the given parameters, compact enough to sit over a thumbnail."""
    return " ".join(
        f"{k}={params[k]}" if isinstance(params[k], str) else f"{k}={params[k]:g}" for k in keys if k in params
    )


def live_label(params: dict[str, Any]) -> str:
    """The knobs a person watches in a live session, abbreviated to fit a 192-pixel tile."""
    return param_label(params, ("gain-r", "gain-b", "digital-gain", "usm-amount")).replace("digital-", "d")


def frame_strip(frames: list[tuple[np.ndarray, str]], path: Path) -> None:
    """Labelled frames as an animated GIF (path ends .gif) or a PNG strip."""
    tiles = []
    for image, label in frames:
        im = Image.fromarray(image).convert("RGB")
        im.thumbnail((192, 192))
        canvas = Image.new("RGB", (im.width, im.height + 14), "white")
        canvas.paste(im, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
        tiles.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        tiles[0].save(path, save_all=True, append_images=tiles[1:], duration=150, loop=0)
    else:
        strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for t in tiles:
            strip.paste(t, (x, 0))
            x += t.width
        strip.save(path)
