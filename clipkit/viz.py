"""Plots the notebooks share: image grids with captions, and training curves.

Both return their matplotlib Figure and show it once in a notebook, whether or not the cell ends
with `plt.show()` or with the call itself.
"""

from __future__ import annotations

import functools
import io
import textwrap
from typing import Sequence

import numpy as np
import torch


@functools.cache
def notebook_figure_class() -> type:
    """`NotebookFigure`, built on first use: importing matplotlib costs a quarter of a second, and
    the app imports this module for `to_display_array` alone."""
    from matplotlib.figure import Figure

    class NotebookFigure(Figure):
        """A pyplot figure that a notebook shows exactly once.

        In a notebook, pyplot shows every open figure when the cell ends, and a plain Figure left
        as the cell's value is drawn a second time as that value. This one draws itself and leaves
        pyplot, so whichever comes first shows it and the other finds nothing to show.
        """

        def _ipython_display_(self) -> None:
            import matplotlib
            import matplotlib.pyplot as plt
            from IPython.display import Image, display

            if plt.fignum_exists(self.number):
                if "inline" not in matplotlib.get_backend():
                    return  # a window or a widget backend shows open figures itself
                plt.close(self)
            png = io.BytesIO()
            self.savefig(png, format="png", bbox_inches="tight")
            display(Image(data=png.getvalue(), format="png"))

    return NotebookFigure


def to_display_array(image) -> np.ndarray:
    """A PIL image, a uint8 [3,H,W] or [H,W,3] tensor/array, or a float one in [0,1] -> uint8 [H,W,3]."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # [C,H,W] -> [H,W,C]
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 2 or array.shape[-1] == 1:
        array = np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=-1)
    return array


def image_grid(
    images: Sequence,
    captions: Sequence[str] | None = None,
    ncols: int = 8,
    cell_inches: float = 1.6,
    wrap: int = 22,
    title: str | None = None,
):
    """Draw images in a grid with wrapped captions under each; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = max(1, -(-count // ncols))
    caption_lines = 0 if captions is None else max(len(textwrap.wrap(c, wrap) or [""]) for c in captions)
    figure, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * cell_inches, nrows * (cell_inches + 0.16 * caption_lines)),
        squeeze=False,
        FigureClass=notebook_figure_class(),
    )
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(to_display_array(images[index]), interpolation="nearest")
        if captions is not None:
            axis.set_title("\n".join(textwrap.wrap(captions[index], wrap)), fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_history(history: dict[str, Sequence[float]], keys: Sequence[str] | None = None):
    """One small panel per recorded series against the training step; returns the Figure.

    Keys starting with "eval/" are plotted against `history["eval_step"]` (evaluations are sparser
    than the loss log); by default: loss, in-batch accuracy, temperature and every eval metric.
    """
    import matplotlib.pyplot as plt

    keys = keys or ["loss", "accuracy", "temperature"] + [k for k in history if k.startswith("eval/") and "gamma" not in k]
    keys = [k for k in keys if history.get(k)]
    columns = min(4, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, FigureClass=notebook_figure_class())
    for axis in axes.flat[len(keys):]:
        axis.axis("off")
    for axis, key in zip(axes.flat, keys):
        xs = history["eval_step"] if key.startswith("eval/") else history["step"]
        axis.plot(xs[-len(history[key]):], history[key], marker="o" if key.startswith("eval/") else None)
        axis.set_title(key.removeprefix("eval/"), fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
