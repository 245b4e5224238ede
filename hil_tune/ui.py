"""What people look at while long work runs and after: one progress bar style, labelled contact sheets."""

from __future__ import annotations

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
