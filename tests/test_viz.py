"""The shared plots: what they draw, and that a notebook shows each exactly once."""

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch

from clipkit.notebook import cell_figures
from clipkit.viz import image_grid, plot_history, to_display_array


def test_image_grid_lays_out_every_image_with_its_caption():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    figure = image_grid(images, [f"caption {i}" for i in range(5)], ncols=3)
    shown = [axis for axis in figure.axes if axis.images]
    assert len(figure.axes) == 6 and len(shown) == 5
    assert [axis.get_title() for axis in shown] == [f"caption {i}" for i in range(5)]
    assert (shown[0].images[0].get_array() == to_display_array(images[0])).all()
    plt.close(figure)


def test_plot_history_draws_one_panel_per_series():
    history = {"step": [0, 1, 2], "loss": [3.0, 2.0, 1.0], "accuracy": [0.1, 0.2, 0.3], "eval_step": [2], "eval/seen": [0.5]}
    figure = plot_history(history)
    titles = [axis.get_title() for axis in figure.axes if axis.lines]
    assert titles == ["loss", "accuracy", "seen"]
    assert list(figure.axes[0].lines[0].get_ydata()) == history["loss"]
    plt.close(figure)


@pytest.mark.slow
def test_a_notebook_shows_each_plot_once_however_the_cell_ends(monkeypatch):
    """In a kernel (inline backend, as in JupyterLab) a figure left as the cell's value, or followed
    by plt.show(), or drawn in a loop shows once per call; a plain pyplot figure for comparison."""
    from nbclient import NotebookClient

    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as in JupyterLab
    cells = {
        "import matplotlib.pyplot as plt, torch\nfrom clipkit.viz import image_grid, plot_history\n"
        "images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)": 0,
        "image_grid(images, ['a', 'b'])": 1,
        "figure = image_grid(images)": 1,
        "plot_history({'step': [0, 1], 'loss': [1.0, 0.5]})": 1,
        "image_grid(images)\nplt.show()": 1,
        "for _ in range(2):\n    image_grid(images)": 2,
        "figure": 1,
        "plt.plot([1, 2])\nplt.show()": 1,
    }
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    shown = {cell.source: len(cell_figures(notebook, cell)) for cell in notebook.cells}
    assert shown == cells
