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



# --- reading: every failure names the file, says what is wrong and what to do ------------------

import json  # noqa: E402
import pickle  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from clipkit.io import (  # noqa: E402
    BadFileError,
    MissingFileError,
    guess_encoding,
    load_safetensors,
    read_json,
    read_safetensors_header,
    read_text,
    report_bad_input,
)
from conftest import LeavesAMarker  # noqa: E402


def test_text_is_utf8_with_or_without_a_bom_and_other_encodings_are_named(tmp_path):
    path = tmp_path / "caption.txt"
    for encoding in ("utf-8", "utf-8-sig"):
        path.write_text("a café", encoding=encoding)
        assert read_text(path) == "a café"  # no U+FEFF left from Excel's or Notepad's mark
    for encoding, name in (("utf-16", "UTF-16"), ("utf-32", "UTF-32"), ("latin-1", "Latin-1"), ("cp1252", "Windows-1252")):
        path.write_bytes("a “café”".encode(encoding, errors="replace") if encoding != "latin-1" else "a café".encode(encoding))
        with pytest.raises(BadFileError, match=f"{path}.*not UTF-8.*{name}.*Save it again as UTF-8") as caught:
            read_text(path)
        assert caught.value.path == path
    assert guess_encoding("ab".encode("utf-16-le")) == "UTF-16 without a byte-order mark"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b'{"a": 1,\n "b": }', r"not valid JSON \(line 2, column 7"),
        (b"[]", "holds a list where a JSON object"),
        (b"null", "holds null where a JSON object"),
        (b'"x"', "holds a string"),
    ],
)
def test_json_damage_is_named(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(BadFileError, match=message) as caught:
        read_json(path, "checkpoint config", "Save the model again.")
    assert str(path) in str(caught.value) and str(caught.value).endswith("Save the model again.")


def test_missing_folders_and_dangling_links_are_missing_files(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_json(tmp_path / "nothing.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(FileNotFoundError, match="is a link to .*gone.json, which does not exist"):
        read_json(tmp_path / "link.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(BadFileError, match="is a folder, not a file"):
        read_json(tmp_path / "folder.json")


def test_safetensors_round_trip_and_every_kind_of_damage(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, path, metadata={"note": "x"})
    assert read_safetensors_header(path)["__metadata__"] == {"note": "x"}
    torch.testing.assert_close(load_safetensors(path)["w"], torch.arange(6.0).reshape(2, 3))
    whole = path.read_bytes()
    marker = tmp_path / "marker"
    for damage, message in [
        (b"", "is empty"),
        (whole[:5], "truncated"),
        (whole[:-4], "is truncated: its tensors need"),
        (whole[:8] + b"x" * (len(whole) - 8), "damaged header"),
        (pickle.dumps(LeavesAMarker(marker)), "written by another program: it is a Python pickle"),
    ]:
        path.write_bytes(damage)
        with pytest.raises(BadFileError, match=message) as caught:
            load_safetensors(path, "checkpoint weights file")
        text = str(caught.value)
        assert str(path) in text and "weights_only=False" not in text and not marker.exists()
    torch.save({"w": LeavesAMarker(marker)}, path)
    with pytest.raises(BadFileError, match="zip archive, as PyTorch's torch.save.*convert it once.*never unpickles"):
        load_safetensors(path)
    assert not marker.exists()


def test_a_command_line_reports_bad_input_in_two_lines_and_exit_2(capsys, tmp_path):
    error = BadFileError(tmp_path / "x.json", f"checkpoint config {tmp_path / 'x.json'} is empty. Save it again.")
    assert report_bad_input(error) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and str(tmp_path / "x.json") in lines[0] and "--debug" in lines[1]
    with pytest.raises(BadFileError):
        report_bad_input(error, debug=True)
