"""What every notebook shares, and the tools that run and tidy them.

- `record_metrics`: the last cell of each notebook; writes the key figures as JSON.
- `execute`: runs one notebook with papermill (used by `make run` and the notebook tests).
- `clean`: strips outputs before committing, keeping only cells marked for nbval.

Command line: ``python -m clipkit.notebook run notebooks/*.ipynb`` or ``... clean notebooks/*.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# Cells whose source holds this marker keep their outputs; nbval (--nbval-lax) checks them.
NBVAL_MARKER = "NBVAL_CHECK_OUTPUT"
# Notebooks open on this kernel in JupyterLab (`make lab` registers it); papermill and nbval
# are told to use the interpreter running them instead, so CI needs no registered kernel.
KERNEL_NAME = "clipkit"
KERNEL_DISPLAY_NAME = "Python (clipkit)"
CELL_TIMEOUT_SECONDS = 600


def _plain(value: Any) -> Any:
    """Turn tensors and numpy scalars into JSON numbers; NaN becomes null (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_metrics(metrics: dict[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """Show a notebook's key figures and, when `path` is given, write them as JSON.

    Each notebook ends with this call; `make run` and the notebook tests pass
    `metrics_path` as a papermill parameter so the figures land beside the
    executed notebook, where the tests assert on them.
    """
    plain = _plain(dict(metrics))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plain, indent=2, sort_keys=True) + "\n")
    width = max((len(k) for k in plain), default=0)
    for key, value in plain.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return plain


def execute(
    notebook: str | Path,
    out_dir: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout: int = CELL_TIMEOUT_SECONDS,
    html: bool = False,
) -> tuple[float, dict[str, Any]]:
    """Run `notebook` with papermill into `out_dir`; returns (seconds, recorded metrics).

    The kernel is the interpreter running this function (`python3` kernelspec of the active
    environment), whatever kernel the notebook names, so `make run PYTHON=...` runs where asked.
    """
    import papermill

    notebook, out_dir = Path(notebook), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    metrics_path = out_dir / f"{notebook.stem}.metrics.json"
    metrics_path.unlink(missing_ok=True)
    parameters = {**(parameters or {}), "metrics_path": str(metrics_path.resolve())}
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            cwd=str(notebook.parent),
            kernel_name="python3",
            execution_timeout=timeout,
            progress_bar=False,
        )
    finally:
        seconds = time.perf_counter() - start
        if html and executed.exists():
            _render_html(executed)
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return seconds, metrics


def _render_html(executed: Path) -> Path:
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body)
    return target


def clean(notebook: str | Path) -> bool:
    """Strip outputs, execution counts and run metadata, keeping outputs of nbval-marked cells.

    Returns True when the file changed. Committed notebooks stay small and diff cleanly.
    """
    path = Path(notebook)
    original = path.read_text()
    data = json.loads(original)
    data["metadata"] = {
        "kernelspec": {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME, "language": "python"},
        "language_info": {"name": "python"},
    }
    for cell in data["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        cell.pop("id", None)
        if cell["cell_type"] != "code":
            continue
        if NBVAL_MARKER in "".join(cell.get("source", "")):
            cell["outputs"] = [_strip_output(o) for o in cell.get("outputs", []) if o.get("output_type") != "display_data"]
        else:
            cell["outputs"] = []
        # nbval refuses a reference cell that has outputs but no execution count ("unrun").
        cell["execution_count"] = 1 if cell["outputs"] else None
    data["nbformat"], data["nbformat_minor"] = 4, 4  # 4.4: no cell ids, so cleaning is idempotent
    cleaned = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if cleaned != original:
        path.write_text(cleaned)
    return cleaned != original


def _strip_output(output: dict[str, Any]) -> dict[str, Any]:
    output = dict(output)
    if output.get("output_type") == "execute_result":
        output["execution_count"] = 1
        output["metadata"] = {}
    return output


def _format_table(rows: list[tuple[str, float, dict[str, Any], str]]) -> str:
    lines = [f"{'notebook':<28} {'seconds':>8}  {'status':<6}  metrics", "-" * 100]
    for name, seconds, metrics, status in rows:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        lines.append(f"{name:<28} {seconds:>8.1f}  {status:<6}  {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipkit.notebook", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute notebooks headless, render HTML, print a table")
    run.add_argument("notebooks", nargs="+", type=Path)
    run.add_argument("--out", type=Path, default=Path("build/notebooks"), help="where executed copies go")
    run.add_argument("--parameters", type=Path, help="JSON of papermill parameters per notebook path")
    run.add_argument("--timeout", type=int, default=CELL_TIMEOUT_SECONDS, help="seconds per cell")
    tidy = commands.add_parser("clean", help="strip outputs before committing")
    tidy.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "clean":
        for path in args.notebooks:
            if clean(path):
                print(f"cleaned {path}")
        return 0

    per_notebook = json.loads(args.parameters.read_text()) if args.parameters else {}
    os.environ.setdefault("MPLBACKEND", "agg")
    rows, failed = [], 0
    for path in args.notebooks:
        parameters = per_notebook.get(path.as_posix(), {})
        try:
            seconds, metrics = execute(path, args.out, parameters, timeout=args.timeout, html=True)
            rows.append((path.stem, seconds, metrics, "ok"))
        except Exception as error:  # keep going: one broken notebook should not hide the others
            failed += 1
            rows.append((path.stem, float("nan"), {"error": str(error).splitlines()[0][:80]}, "FAILED"))
        print(f"  {rows[-1][3]:<6} {path}", file=sys.stderr, flush=True)
    print(_format_table(rows))
    print(f"\nexecuted notebooks and HTML are in {args.out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
