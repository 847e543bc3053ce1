"""Execute every notebook under small CI parameters and check what it records.

Each notebook runs with papermill (CI parameters from `tests/notebook_params.json`) into
`build/test-notebooks/`, writing its metrics JSON and HTML beside the executed copy; the metrics are
checked against the thresholds below, and every cell that draws must show its figure, in the
executed notebook and in its HTML. Notebooks with cells marked `# NBVAL_CHECK_OUTPUT`
are then re-run by nbval, which compares those cells' outputs with the committed ones.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipkit.notebook import CELL_TIMEOUT_SECONDS, NBVAL_MARKER, NO_FIGURE_MARKER, drawing_cells_without_figures, figures_missing_from_html

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "test-notebooks"
CI_PARAMETERS = json.loads((ROOT / "tests" / "notebook_params.json").read_text())

# What each notebook must record, as (comparison, bound). Keys missing from a notebook's
# metrics fail the test, so a renamed metric cannot silently stop being checked.
METRIC_THRESHOLDS: dict[str, dict[str, tuple[str, float]]] = {
    "00_welcome": {"datasets_shown": (">=", 4)},
    "01_data": {
        "num_heldout_pairs": ("==", 8),
        "heldout_pairs_in_train": ("==", 0),
        "shapes_images_per_second": (">=", 1000),
        "fashion_mnist_images": ("==", 60000),
        "num_emoji_pairs": (">=", 1300),
        "own_folder_pairs": ("==", 4),
        "word_vocab_size": (">", 20),
        "bpe_vocab_size": (">", 259),
    },
    "02_text_encoder": {
        "inline_vs_clipkit_max_abs_diff": ("<=", 1e-5),
        "causal_leak": ("<=", 1e-6),
        "padding_change": ("<=", 1e-5),
    },
    "03_image_encoder": {
        "cnn_inline_vs_clipkit_max_abs_diff": ("<=", 1e-5),
        "vit_inline_vs_clipkit_max_abs_diff": ("<=", 1e-5),
        "patches_per_image": (">=", 4),
    },
    "04_contrastive_loss": {
        "open_clip_abs_diff": ("<=", 1e-6),
        "loss_at_init_relative_to_ln_batch": ("<=", 0.25),
        "temperature_gap": (">=", 1.0),
    },
    "05_train_mini_clip": {
        "inline_vs_clipkit_loss_diff": ("<=", 1e-4),
        "reload_max_abs_diff": ("<=", 1e-5),
        "final_loss_over_ln_batch": ("<", 1.0),
        "heldout_vs_heldout": (">=", 0.5),
    },
    # Under CI parameters the models train for seconds: check agreement with the library and
    # better-than-chance accuracy (chance: 1/64 top-1, 5/64 top-5, 1/8 among held-out labels).
    "06_zero_shot": {
        "inline_vs_library_max_abs_diff": ("<=", 1e-5),
        "seen_top1": (">", 1 / 64),
        "seen_top5": (">", 5 / 64),
        "heldout_vs_heldout_top1": (">", 1 / 8),
        "calibration_gamma": (">=", 0.0),
        "hard_negative_loss_diff": ("<=", 1e-4),
    },
    # Chance recall@10 on the 1,360 emoji is about 0.0074.
    "07_search": {
        "inline_vs_library_max_abs_diff": ("<=", 1e-5),
        "index_round_trip_equal": ("==", True),
        "scratch_emoji_t2i_recall@10": (">", 0.0074),
        "lit_emoji_t2i_recall@10": (">", 0.0074),
    },
    # The app's handler must agree with the hand-made zero-shot, and every bad input be refused
    # while the server keeps answering; latency and start time are benchmarks/app_latency.py's job.
    "08_art_steering": {
        "inline_vs_clipkit_max_abs_diff": ("<=", 1e-5),
        "oracle_accuracy_on_real": (">=", 0.95),
        "num_prompts": (">=", 2),
        # CI's models train for seconds, so only that the ablation ran and recorded its rates
        "judge_accuracy_with_aug": (">=", 0.0),
        "oracle_accuracy_with_aug": (">=", 0.0),
        "judge_accuracy_without_aug": (">=", 0.0),
        "oracle_accuracy_without_aug": (">=", 0.0),
    },
    # The labs record each failure reproduced and fixed, as gains of the fix over the failure.
    "lab_why_it_fails": {
        "stuck_loss_over_ln_batch": (">=", 0.95),
        "ln_batch_fix_gain": (">=", 0.1),
        "collapse_fix_gain": (">=", 0.1),
        "temperature_fix_gain": (">", 0.0),
        "fp16_nan_reproduced": ("==", True),
        "fp16_fixed_finite": ("==", True),
        "duplicates_gradient_gap": ("<=", 1e-4),
        "accuracy_gain_by_caption": (">=", 0.0),
    },
    "lab_bias": {
        "skew_gap_counter_stereotypical": (">", 0.0),
        "rebalancing_gain_counter_stereotypical": (">", 0.0),
        "rebalancing_drop_in_yellow_share": (">", 0.0),
    },
    "lab_interpretability": {
        "inline_vs_clipkit_max_abs_diff": ("<=", 1e-5),
        "pointing_cnn_positions": (">=", 0.75),
        "cnn_positions_gain_over_random": (">=", 0.2),
        "vit_values_gain_over_tokens": (">=", 0.1),
    },
    # At CI parameters the ci profile learns colours only, so only agreement and that every model ran.
    "lab_distribution_shift": {
        "inline_vs_clipkit_max_abs_diff": ("<=", 1e-6),
        "models": ("==", 4),
    },
    "10_photo_search": {
        "inline_vs_library_max_abs_diff": ("<=", 1e-5),
        "second_start_embedded": ("==", 0),
        "added_photo_embedded": ("==", 1),
        "skipped_files": ("==", 1),  # the one broken JPEG the notebook writes
        "image_query_finds_itself": ("==", True),
        "labels_classified": (">=", 2),
        "photos_classified": (">=", 1),
        "app_search_answered": ("==", True),
        "app_search_agrees": ("==", True),
        "app_classify_answered": ("==", True),
        "random_fallback_banner": ("==", False),  # CI names no model, so no fallback is needed
    },
    "11_moderation": {
        "inline_vs_library_max_abs_diff": ("<=", 1e-5),  # hand-made per-rule scores == PolicyScorer
        "per_rule_shift_when_a_rule_is_added": ("<=", 1e-5),  # a rule's score ignores the other rules
        "softmax_shift_when_a_rule_is_added": (">", 0.0),  # ...unlike a softmax over the rules
        "reading_vs_library_max_abs_diff": ("<=", 1e-6),  # pictures read as names inline == PolicyScorer(vocabulary=)
    },
    "09_demo_app": {
        "handler_vs_inline_max_abs_diff": ("<=", 1e-5),
        "endpoints": ("==", 7),  # classify, classify_sketch, search_text, search_image, steer, moderate, model_card
        "steer_updates": (">=", 2),
        "bad_inputs_refused": ("==", 7),
        "served_after_bad_inputs": ("==", True),
        "concurrent_answered_alike": ("==", 1.0),
    },
}

COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


def _notebooks() -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "tutorials").glob("*.ipynb"))
    return [path for path in found if ".ipynb_checkpoints" not in path.parts]


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _test_id(path: Path) -> str:
    """notebooks/02_text_encoder and tutorials/02_text_encoder: the exercise versions share stems."""
    return path.relative_to(ROOT).with_suffix("").as_posix()


@pytest.fixture(scope="session")
def notebook_environment(tmp_path_factory):
    """Kernels inherit os.environ: point clipkit at a throwaway home so tests never touch the user's
    checkpoints, while notebooks of one test session still share them (05 trains, 06-09 load)."""
    home = tmp_path_factory.mktemp("clipkit-home")
    saved = dict(os.environ)
    os.environ.update(
        {
            "CLIPKIT_HOME": str(home),
            # Rendered emoji and other rebuildable caches survive between test sessions.
            "CLIPKIT_CACHE_DIR": os.environ.get("CLIPKIT_CACHE_DIR", str(ROOT / ".clipkit" / "cache")),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }
    )
    yield home
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("notebook", _notebooks(), ids=_test_id)
def test_notebook_executes_and_meets_thresholds(notebook: Path, notebook_environment):
    """A tutorial runs unfilled (its checks say "not done yet" and hand on the reference code), so it
    meets the thresholds of the notebook it was generated from."""
    from clipkit.notebook import execute

    parameters = CI_PARAMETERS.get(_relative(notebook), {})
    out_dir = BUILD / notebook.parent.name
    _, metrics = execute(notebook, out_dir, parameters, timeout=CELL_TIMEOUT_SECONDS, html=True)

    metrics_path = out_dir / f"{notebook.stem}.metrics.json"
    assert metrics_path.exists(), f"{notebook.name} did not call record_metrics(..., metrics_path) at its end"
    for key, (comparison, bound) in METRIC_THRESHOLDS.get(notebook.stem, {}).items():
        assert key in metrics, f"{notebook.name} no longer records {key!r}; it recorded {sorted(metrics)}"
        assert metrics[key] is not None, f"{notebook.name} recorded {key} = null (NaN or inf)"
        assert COMPARISONS[comparison](metrics[key], bound), f"{notebook.name}: {key} = {metrics[key]}, wanted {comparison} {bound}"
    _assert_every_figure_shows(notebook, out_dir)


def _assert_every_figure_shows(notebook: Path, out_dir: Path) -> None:
    """What a person sees: each cell that draws shows an image in the executed notebook, and the
    HTML `make run` writes (the same `execute(..., html=True)`) embeds every one of them."""
    executed = json.loads((out_dir / notebook.name).read_text())
    where = _relative(notebook)
    blank = drawing_cells_without_figures(executed)
    assert not blank, f"{where}: cells that draw but show no figure (mark a cell that should not with # {NO_FIGURE_MARKER}: why):\n" + "\n".join(
        f"  cell {index}: {first_line}" for index, first_line in blank
    )
    html = (out_dir / notebook.name).with_suffix(".html").read_text()
    lost = figures_missing_from_html(executed, html)
    assert not lost, f"{where}: figures the HTML page does not show:\n" + "\n".join(f"  cell {index}: {first_line}" for index, first_line in lost)


def _has_checked_cells(notebook: Path) -> bool:
    """Solution notebooks with cells marked for nbval. The tutorials copy those cells from them,
    and their own execution test already runs them: nbval would only run the same cells twice."""
    cells = json.loads(notebook.read_text())["cells"]
    return notebook.parent.name == "notebooks" and any(NBVAL_MARKER in "".join(cell.get("source", "")) for cell in cells)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("notebook", [nb for nb in _notebooks() if _has_checked_cells(nb)], ids=_test_id)
def test_notebook_deterministic_outputs_match_nbval(notebook: Path, notebook_environment, tmp_path):
    """nbval re-runs the notebook (prepared with the CI parameters, committed outputs kept) and
    compares the outputs of cells marked `# NBVAL_CHECK_OUTPUT`."""
    import papermill

    prepared = tmp_path / notebook.name
    parameters = dict(CI_PARAMETERS.get(_relative(notebook), {}))
    papermill.execute_notebook(str(notebook), str(prepared), parameters=parameters, prepare_only=True, kernel_name="python3", progress_bar=False)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-kernel-name", "python3",
         f"--nbval-cell-timeout={CELL_TIMEOUT_SECONDS}", "--rootdir", str(tmp_path), str(prepared)],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
        timeout=CELL_TIMEOUT_SECONDS * 3,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
