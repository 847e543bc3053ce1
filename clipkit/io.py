"""Writing files so that a crash never leaves half of one, and reading files so that a bad one says so.

Every file clipkit writes (checkpoints, train state, search indexes, caches) goes through
`atomic_write`: the bytes land in a temporary file beside the target, which is then renamed over
it in one step. Every file a person hands over (checkpoints, configs, weights, CSVs, captions)
is read through `read_text`, `read_json` or `load_safetensors`, whose one error, `BadFileError`,
names the file, says what is wrong with it and what to do.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call `write(temporary)` on a temporary file in `path`'s folder, then rename it to `path`:
    a crash never leaves half a file, and a failed write leaves the old file as it was."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# ---------------------------------------------------------------------------------------------
# Reading files a person hands over: every failure is one `BadFileError` that names the file,
# says what is wrong with it and what to do. Nothing here ever unpickles.


class BadFileError(ValueError):
    """A file clipkit was asked to read is missing, damaged or not what it should be; `path` names it."""

    def __init__(self, path: str | Path, message: str):
        super().__init__(message)
        self.path = Path(path)


class MissingFileError(BadFileError, FileNotFoundError):
    """The file (or what a link points at) does not exist."""


_ZIP_MAGIC = b"PK\x03\x04"
_BOMS = (  # longest first: UTF-32's little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)


def _problem(path: Path, what: str, problem: str, fix: str, missing: bool = False) -> BadFileError:
    kind = MissingFileError if missing else BadFileError
    return kind(path, f"{what} {path} {problem}. {fix}".strip())


def check_file(path: str | Path, what: str, fix: str = "") -> Path:
    """`path` as a Path if it is a readable regular file; otherwise a `BadFileError` saying why not."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise _problem(path, what, f"is a link to {os.readlink(path)}, which does not exist", fix, missing=True)
    if not path.exists():
        raise _problem(path, what, "does not exist", fix, missing=True)
    if path.is_dir():
        raise _problem(path, what, "is a folder, not a file", fix)
    if not path.is_file():
        raise _problem(path, what, "is not a regular file (a device or a pipe)", fix)
    return path


def _read_bytes(path: Path, what: str, fix: str, limit: int | None = None) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except OSError as error:
        raise _problem(path, what, f"cannot be read ({error.strerror or error})", fix) from None


def written_by(head: bytes) -> str | None:
    """What program's format `head` (a file's first bytes) looks like, when it is a known foreign one."""
    if head.startswith(_ZIP_MAGIC):
        return "a zip archive, as PyTorch's torch.save writes (a pickle inside)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle, as PyTorch's torch.save or pickle.dump write"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras/TensorFlow)"
    return None


def guess_encoding(data: bytes) -> str:
    """A name for the encoding bytes that are not UTF-8 look like (for error messages, not decoding)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    if written_by(data[:8]) or data[:8].startswith(b"\x00"):
        return "binary data, not text"
    sample = data[:4096]
    if sample.count(b"\x00") > len(sample) // 4:
        return "UTF-16 without a byte-order mark"
    if any(0x80 <= byte <= 0x9F for byte in sample):
        return "Windows-1252"
    return "Latin-1 (ISO-8859-1)"


def read_text(path: str | Path, what: str = "text file", fix: str = "") -> str:
    """The text of a UTF-8 file (a byte-order mark, as Excel and Notepad write, is dropped);
    another encoding gets a `BadFileError` naming the one it looks like."""
    path = check_file(path, what, fix)
    data = _read_bytes(path, what, fix)
    try:
        text = data.decode("utf-8-sig")
        start = text.find("\x00")  # valid UTF-8, but no text file holds NUL: UTF-16 without a mark, or binary
        if start < 0:
            return text
    except UnicodeDecodeError as error:
        start = error.start
    raise _problem(
        path, what,
        f"is not UTF-8 text (byte {start} is {data[start:start + 1]!r}; it looks like {guess_encoding(data)})",
        f"Save it again as UTF-8 (in most editors: Save As, encoding UTF-8). {fix}",
    ) from None


def read_json(path: str | Path, what: str = "JSON file", fix: str = "") -> dict[str, Any]:
    """The JSON object in a file; empty, not JSON, not UTF-8 or not an object is a `BadFileError`."""
    text = read_text(path, what, fix)
    path = Path(path)
    if not text.strip():
        raise _problem(path, what, "is empty (0 bytes of JSON): it was probably written only in part", fix)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _problem(path, what, f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})", fix) from None
    if not isinstance(document, dict):
        kind = {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(type(document), "a number")
        raise _problem(path, what, f"holds {kind} where a JSON object ({{...}}) belongs", fix)
    return document


def _safetensors_advice(fix: str) -> str:
    return fix or "Write the file again (save_file from safetensors) or copy an undamaged one."


def read_safetensors_header(path: str | Path, what: str = "safetensors file", fix: str = "") -> dict[str, Any]:
    """The checked JSON header of a safetensors file (tensor names -> dtype, shape, offsets, and
    "__metadata__"). An empty, cut-short or foreign file gets a `BadFileError`; nothing is unpickled."""
    path = check_file(path, what, fix)
    size = path.stat().st_size
    advice = _safetensors_advice(fix)
    head = _read_bytes(path, what, advice, limit=8)
    if size == 0:
        raise _problem(path, what, "is empty (0 bytes): it was probably written only in part", advice)
    foreign = written_by(head)
    if foreign:
        raise _problem(
            path, what, f"was written by another program: it is {foreign}, not safetensors",
            "If it comes from a source you trust, convert it once with "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors'); "
            "clipkit never unpickles a file, and neither should you for a file you do not trust.",
        )
    if size < 8:
        raise _problem(path, what, f"is truncated: {size} bytes, shorter than a safetensors header", advice)
    length = int.from_bytes(head, "little")
    if length > size - 8:
        raise _problem(path, what, f"is truncated or not safetensors: its header claims {length} bytes, the file has {size}", advice)
    raw = _read_bytes(path, what, advice, limit=8 + length)[8:]
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise _problem(path, what, "has a damaged header (not a JSON object): it is not a safetensors file or was overwritten", advice)
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _problem(path, what, f"has a damaged header (tensor {name!r} has no valid data offsets)", advice)
        end = max(end, offsets[1])
    if 8 + length + end > size:
        raise _problem(path, what, f"is truncated: its tensors need {8 + length + end} bytes, the file has {size}", advice)
    return header


def load_safetensors(path: str | Path, what: str = "safetensors file", fix: str = "") -> dict[str, Any]:
    """The tensors of a safetensors file, by name, after `read_safetensors_header` checked it."""
    from safetensors.torch import load_file

    read_safetensors_header(path, what, fix)
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors' own error type varies by version: name the file, keep its reason
        raise _problem(Path(path), what, f"is damaged ({error})", _safetensors_advice(fix)) from None


def report_bad_input(error: Exception, debug: bool = False) -> int:
    """For command lines: print a bad-input error in a line or two (the traceback only with
    --debug, by re-raising) and give the exit status 2."""
    if debug:
        raise error
    print(f"error: {error}\n(add --debug to see where it happened)", file=sys.stderr)
    return 2
