"""load_or_train: notebook 05's checkpoint, or a fallback trained in plain view that resumes when interrupted."""

import pytest
import torch

from clipkit.train import CheckpointMismatchError, load_or_train, read_train_state

pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_or_train_trains_once_then_loads_and_refuses_another_profile(tmp_path):
    model = load_or_train("ci", out_dir=tmp_path, steps=4, device="cpu", progress=False)
    assert model.metadata["profile"] == "ci" and model.metadata["steps"] == 4
    modified = (tmp_path / "model.safetensors").stat().st_mtime_ns
    again = load_or_train("ci", out_dir=tmp_path, steps=8, device="cpu", progress=False)  # steps only for training
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns == modified
    torch.testing.assert_close(again.state_dict(), model.state_dict())
    with pytest.raises(CheckpointMismatchError, match="profile 'ci'"):
        load_or_train("cpu", out_dir=tmp_path, device="cpu", progress=False)


def test_an_interrupted_fallback_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, capsys):
    options = {"steps": 12, "device": "cpu", "progress": False, "checkpoint_every": 4}
    whole = load_or_train("ci", out_dir=tmp_path / "whole", **options)
    said = capsys.readouterr().out
    assert f"No checkpoint found at {tmp_path / 'whole'}: training a fallback model" in said
    assert "Training will take about" in said and "on this machine" in said

    def interrupt(step, train_seconds):
        if step == 7:
            raise KeyboardInterrupt  # as Ctrl-C between checkpoints would

    with pytest.raises(KeyboardInterrupt):
        load_or_train("ci", out_dir=tmp_path / "split", on_step=interrupt, **options)
    state = read_train_state(tmp_path / "split")
    assert state["step"] == 4 and not state["finished"]

    capsys.readouterr()
    resumed = load_or_train("ci", out_dir=tmp_path / "split", **options)
    assert f"Resuming the unfinished training of a fallback model in {tmp_path / 'split'} at step 4 of 12" in capsys.readouterr().out
    assert read_train_state(tmp_path / "split")["finished"]
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
