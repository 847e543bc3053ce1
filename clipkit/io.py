"""Writing files so that a crash never leaves half of one.

Every file clipkit writes (checkpoints, train state, search indexes, caches) goes through
`atomic_write`: the bytes land in a temporary file beside the target, which is then renamed over
it in one step.
"""

from __future__ import annotations

import os
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
