"""What every notebook shares, and the tools that run and tidy them.

- `record_metrics`: the last cell of each notebook; writes the key figures as JSON.
- `execute`: runs one notebook with papermill (used by `make run` and the notebook tests).
- `clean`: strips outputs before committing, keeping only cells marked for nbval; `notebook_text`:
  the text it writes, as Jupyter saves a notebook.
- `drawing_cells_without_figures`, `figures_missing_from_html`: what a person would miss in an
  executed notebook or its HTML (the notebook tests count figures with them).
- `install_kernel`, `lab_command`: the `clipkit` kernel of this environment and JupyterLab (`make lab`).

Command line: ``python -m clipkit.notebook run notebooks/*.ipynb``, ``... clean notebooks/*.ipynb``,
``... lab --port 8888``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from clipkit.io import BadFileError, read_json, read_text, report_bad_input

# Cells whose source holds this marker keep their outputs; nbval (--nbval-lax) checks them.
NBVAL_MARKER = "NBVAL_CHECK_OUTPUT"
# Notebooks open on this kernel in JupyterLab (`make lab` registers it); papermill and nbval
# are told to use the interpreter running them instead, so CI needs no registered kernel.
KERNEL_NAME = "clipkit"
KERNEL_DISPLAY_NAME = "Python (clipkit)"
CELL_TIMEOUT_SECONDS = 600
# Committed notebooks are nbformat 4.5: every cell carries an id (1-64 of [a-zA-Z0-9-_]).
NBFORMAT_VERSION = (4, 5)
CELL_ID_PATTERN = re.compile(r"[a-zA-Z0-9-_]{1,64}")


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
    It draws inline, as in JupyterLab, whatever MPLBACKEND the caller has.
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
        with _without_mplbackend():
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


@contextlib.contextmanager
def _without_mplbackend():
    """The kernel papermill starts inherits os.environ, where a MPLBACKEND (agg, say, from a headless
    shell) would keep every figure out of the executed notebook and its HTML; a kernel draws inline
    on its own. The caller's environment is as it was afterwards."""
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend


def _render_html(executed: Path) -> Path:
    """The executed notebook as one HTML page that shows every figure without a kernel or network."""
    import nbconvert
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(static) for output in cell.outputs for static in _static_outputs(notebook, output)]
    body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    target = executed.with_suffix(".html")
    target.write_text(body)
    return target


def _static_outputs(notebook: dict[str, Any], output: dict[str, Any]) -> list[dict[str, Any]]:
    """What a page can show of one output: a widget holding figures (an `interact`) becomes those
    figures as they were last drawn, since the page has no kernel to redraw them; an image nbconvert
    leaves out (an animated GIF) becomes an <img> tag."""
    data = output.get("data", {})
    if _WIDGET_VIEW in data:
        images = _widget_images(notebook, data[_WIDGET_VIEW].get("model_id", ""))
        if images:
            return [{"output_type": "display_data", "metadata": {}, "data": {mime: value}} for mime, value in images]
    for mime, value in _images([output]):
        if mime not in _NBCONVERT_IMAGES and "text/html" not in data:
            html = f'<img src="data:{mime};base64,{value.replace(chr(10), "")}">'
            return [{**output, "data": {**data, "text/html": html}}]
    return [output]


# A code cell draws when its code (comments aside) calls pyplot, a figure or axes, an image
# helper or a `show_*` function; a cell that legitimately shows nothing says so with this marker
# and a reason, e.g. `# NO_FIGURE: only draws when a GPU is present`.
NO_FIGURE_MARKER = "NO_FIGURE"
_DRAWS = re.compile(
    r"\bplt\.(?!close\b|rcParams\b|style\b|ioff\b|ion\b)\w+"
    r"|\b(?:fig|figure|ax|axes)\b(?:\[[^\]]*\])?\.\w+\("
    r"|\b(?:image_grid|plot_history|imshow|show_\w+)\("
    r"|\bdisplay\(\s*\w*Image\("
)
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_NBCONVERT_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")  # what nbconvert's HTML shows itself


def draws(source: str) -> bool:
    """Whether a code cell's source should put a figure on screen (see `NO_FIGURE_MARKER`)."""
    if NO_FIGURE_MARKER in source:
        return False
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    return bool(_DRAWS.search(code))


def _first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def _images(outputs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(mime type, data) of every image in `outputs` (display_data and execute_result)."""
    return [
        (mime, "".join(value) if isinstance(value, list) else value)
        for output in outputs
        for mime, value in output.get("data", {}).items()
        if mime.startswith("image/")
    ]


def _widget_images(notebook: dict[str, Any], model_id: str, seen: set[str] | None = None) -> list[tuple[str, str]]:
    """Images inside a widget (an `interact` box holds an Output widget holding the figure), from the
    widget state the executor stores in the notebook's metadata."""
    seen = set() if seen is None else seen
    states = notebook.get("metadata", {}).get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    if model_id in seen or model_id not in states:
        return []
    seen.add(model_id)
    state = states[model_id].get("state", {})
    found = _images(state.get("outputs", []))
    for child in state.get("children", []):
        found += _widget_images(notebook, str(child).removeprefix("IPY_MODEL_"), seen)
    return found


def cell_figures(notebook: dict[str, Any], cell: dict[str, Any]) -> list[tuple[str, str]]:
    """(mime type, data) of every image a code cell shows: in its outputs or inside its widgets."""
    found = []
    for output in cell.get("outputs", []):
        found += _images([output])
        if _WIDGET_VIEW in output.get("data", {}):
            found += _widget_images(notebook, output["data"][_WIDGET_VIEW].get("model_id", ""))
    return found


def _numbered_cells(notebook: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index in the notebook as committed, cell): the cell papermill injects does not count."""
    cells = [cell for cell in notebook["cells"] if "injected-parameters" not in cell.get("metadata", {}).get("tags", [])]
    return list(enumerate(cells))


def drawing_cells_without_figures(notebook: dict[str, Any]) -> list[tuple[int, str]]:
    """(cell index, first line) of every executed code cell that draws (see `draws`) but shows no image.

    Indices count every cell from 0 as in the committed notebook (papermill's injected one aside).
    """
    missing = []
    for index, cell in _numbered_cells(notebook):
        source = "".join(cell.get("source", ""))
        if cell["cell_type"] == "code" and draws(source) and not cell_figures(notebook, cell):
            missing.append((index, _first_line(source)))
    return missing


def figures_missing_from_html(notebook: dict[str, Any], html: str) -> list[tuple[int, str]]:
    """(cell index, first line) of every code cell with an image that the notebook's HTML page
    does not show in an <img> tag (or inline, for SVG)."""
    embedded = {data.replace("\n", "") for data in re.findall(r'<img[^>]*?src="data:image/[\w+.-]+;base64,([^"]+)"', html)}
    missing = []
    for index, cell in _numbered_cells(notebook):
        images = cell_figures(notebook, cell) if cell["cell_type"] == "code" else []
        if any((data not in html) if mime == "image/svg+xml" else (data.replace("\n", "") not in embedded) for mime, data in images):
            missing.append((index, _first_line("".join(cell.get("source", "")))))
    return missing


def _cell_id(index: int, source: str) -> str:
    """A stable id for a cell that has none: derived from its place and text, so re-cleaning gives the same id."""
    return hashlib.sha1(f"{index}:{source}".encode()).hexdigest()[:12]


def assign_cell_ids(cells: list[dict[str, Any]]) -> None:
    """Give every cell a unique nbformat 4.5 id, keeping the ids cells already carry.

    Jupyter gives random ids to cells without one whenever it saves, so committed notebooks carry
    them; a missing, invalid or repeated id (a copied cell) gets one derived from place and text.
    """
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        current = cell.get("id")
        if not (isinstance(current, str) and CELL_ID_PATTERN.fullmatch(current)) or current in seen:
            current = _cell_id(index, "".join(cell.get("source", "")))
            while current in seen:  # identical cells at the same place cannot happen, but be sure
                current = _cell_id(index, current)
        cell["id"] = current
        seen.add(current)


def clean(notebook: str | Path) -> bool:
    """Strip outputs, execution counts and run metadata, keeping outputs of nbval-marked cells.

    Writes nbformat 4.5 with a stable id on every cell, as Jupyter saves it, so saving an unchanged
    notebook from JupyterLab rewrites nothing (but the kernel's `language_info`, when its Python
    version differs). Returns True when the file changed.
    Committed notebooks stay small and diff cleanly; cleaning twice changes nothing.
    """
    path = Path(notebook)
    fix = "A notebook is a JSON file as Jupyter saves it: restore it from git or save it again in JupyterLab."
    data = read_json(path, "notebook", fix)
    original = read_text(path, "notebook", fix)
    data["metadata"] = {
        "kernelspec": {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME, "language": "python"},
        "language_info": {"name": "python"},
    }
    assign_cell_ids(data["cells"])
    for cell in data["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        if cell["cell_type"] != "code":
            continue
        if NBVAL_MARKER in "".join(cell.get("source", "")):
            cell["outputs"] = [_strip_output(o) for o in cell.get("outputs", []) if o.get("output_type") != "display_data"]
        else:
            cell["outputs"] = []
        # nbval refuses a reference cell that has outputs but no execution count ("unrun").
        cell["execution_count"] = 1 if cell["outputs"] else None
    data["nbformat"], data["nbformat_minor"] = NBFORMAT_VERSION
    cleaned = notebook_text(data)
    if cleaned != original:
        path.write_text(cleaned)
    return cleaned != original


def notebook_text(notebook: dict[str, Any]) -> str:
    """A notebook's text as Jupyter saves it (what `clean` and the tutorial generator write)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _strip_output(output: dict[str, Any]) -> dict[str, Any]:
    output = dict(output)
    if output.get("output_type") == "execute_result":
        output["execution_count"] = 1
        output["metadata"] = {}
    return output


def install_kernel() -> Path:
    """Register this interpreter as the `clipkit` kernel inside its own environment; returns its folder.

    In the environment (sys.prefix), not the user's kernels: two checkouts each run their own
    code. A system Python whose prefix is not writable gets a user-level kernel instead (it holds
    one clipkit installation anyway).
    """
    from ipykernel.kernelspec import install

    try:
        return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix))
    except PermissionError:
        print(f"{sys.prefix} is not writable: registering the {KERNEL_NAME!r} kernel for this user", file=sys.stderr)
        return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, user=True))


def lab_command(port: int, root: str | Path = ".", extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The JupyterLab command `make lab` runs: on 127.0.0.1 (with a token), rooted at the checkout so the
    file browser reaches tutorials/ too, opening on notebooks/; `--allow-root` where the user is root."""
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={Path(root).resolve()}",
               "--ServerApp.ip=127.0.0.1", f"--port={port}", "--LabApp.default_url=/lab/tree/notebooks"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return command + list(extra)


def lab_environment() -> dict[str, str]:
    """The server's environment, which its kernels inherit: the environment's kernels win over
    same-named user-level ones (a stale `clipkit` kernel from another checkout), and no MPLBACKEND,
    which would hide every figure."""
    environment = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1"}
    environment.pop("MPLBACKEND", None)
    return environment


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
    lab = commands.add_parser("lab", help="register the clipkit kernel in this environment and start JupyterLab; "
                                          "other options go to jupyter lab")
    lab.add_argument("--port", type=int, default=8888, help="the first port tried (the next free one is taken)")
    lab.add_argument("--root", type=Path, default=Path("."), help="the folder JupyterLab serves")
    parser.add_argument("--debug", action="store_true", help="on bad input, show the full traceback")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _main(args, extra)
    except BadFileError as error:  # a damaged notebook or parameters file: one line, exit 2
        return report_bad_input(error, args.debug)


def _main(args: argparse.Namespace, extra: list[str]) -> int:

    if args.command == "lab":
        print(f"kernel {KERNEL_NAME!r}: {install_kernel()}", flush=True)
        command = lab_command(args.port, args.root, extra)
        os.execve(command[0], command, lab_environment())  # the server takes over this process (Ctrl-C stops it)
    if args.command == "clean":
        for path in args.notebooks:
            if clean(path):
                print(f"cleaned {path}")
        return 0

    per_notebook = read_json(args.parameters, "parameters file", "Give a JSON object: notebook path -> {name: value}.") if args.parameters else {}
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
