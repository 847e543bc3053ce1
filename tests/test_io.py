"""Atomic writes: a crash or a failed write never leaves half a file."""

import pytest

from clipkit.io import atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write(path, lambda temporary: temporary.write_text("old"))

    def half_written(temporary):
        temporary.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_written)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    atomic_write(path, lambda temporary: temporary.write_text("new"))
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

