"""The train state in a checkpoint folder: atomic files, RNG state, save/read/restore round trips, refusing another run's."""

import json
import random

import numpy as np
import pytest
import torch

from clipkit.train.state import (
    TRAIN_STATE_JSON,
    CheckpointMismatchError,
    read_train_state,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clipkit.model import load_model
from clipkit.train import PROFILES, TrainConfig, build_model, train
from conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def draw() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_survives_json_and_replays_the_same_draws():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    draw()
    saved = json.loads(json.dumps(rng_state()))
    expected = [draw() for _ in range(3)]
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    set_rng_state(saved)
    assert [draw() for _ in range(3)] == expected


def test_save_read_restore_round_trips_weights_optimizer_and_state(tmp_path):
    model, _ = build_model("ci")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # optimizer moments worth saving
        optimizer.zero_grad()
        sum((p * p).sum() for p in model.parameters()).backward()
        optimizer.step()
    assert read_train_state(tmp_path) is None
    save_checkpoint(tmp_path, model, optimizer, {"step": 2, "note": "x"}, {"profile": "ci"})

    state = read_train_state(tmp_path)
    assert state["step"] == 2 and state["note"] == "x"
    assert json.loads((tmp_path / TRAIN_STATE_JSON).read_text()) == state
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    assert loaded.metadata == {"profile": "ci"}

    other, _ = build_model("ci", seed=1)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)
    restore_checkpoint(tmp_path, other, other_optimizer, state)
    torch.testing.assert_close(other.state_dict(), model.state_dict())
    restored, original = other_optimizer.state_dict(), optimizer.state_dict()
    assert restored["param_groups"] == json.loads(json.dumps(original["param_groups"]))  # betas come back a list
    torch.testing.assert_close(restored["state"], original["state"])


def test_a_checkpoint_of_another_config_is_refused_naming_the_fields(tmp_path):
    model, data = build_model("ci")
    train(model, data, TrainConfig(**TINY), out_dir=tmp_path, progress=False, until_step=2)
    other = dict(PROFILES["ci"], model={**PROFILES["ci"]["model"], "text": {"width": 64, "layers": 2}})
    deeper, data = build_model(other)
    with pytest.raises(CheckpointMismatchError, match=r"text\.layers"):
        train(deeper, data, TrainConfig(**TINY), out_dir=tmp_path, progress=False)
    model, data = build_model("ci")
    with pytest.raises(CheckpointMismatchError, match=r"\blr\b.*resume=False"):
        train(model, data, TrainConfig(**{**TINY, "lr": 1e-4}), out_dir=tmp_path, progress=False)
    # Settings that do not change the weights, and resume=False, are fine.
    train(model, data, TrainConfig(**TINY, eval_every=4, checkpoint_every=3), out_dir=tmp_path, progress=False, until_step=3)
    train(deeper, data, TrainConfig(**TINY), out_dir=tmp_path, progress=False, resume=False, until_step=1)
    assert read_train_state(tmp_path)["step"] == 1


def test_a_lit_run_saves_in_lits_format_and_resumes_exactly(tmp_path):
    from clipkit.data.transforms import CaptionedImages
    from clipkit.lit import CHECKPOINT_FORMAT, LiTModel, load_lit
    from lit_fakes import CAPTIONS, FakeSentenceModel, random_images, tiny_lit_config

    def fresh(seed: int) -> LiTModel:
        torch.manual_seed(seed)
        return LiTModel(tiny_lit_config(embed_dim=6), text_model=FakeSentenceModel())

    pairs = CaptionedImages(torch.cat([random_images(4), random_images(4, 1)]), CAPTIONS * 2)
    config = TrainConfig(steps=6, batch_size=4, warmup_steps=1, log_every=1)
    whole = fresh(0)
    history = train(whole, pairs, config, out_dir=tmp_path / "whole", progress=False)
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["format"] == CHECKPOINT_FORMAT
    reloaded = load_lit(tmp_path / "whole", text_model=whole.text_model)
    torch.testing.assert_close(reloaded.state_dict(), whole.state_dict(), rtol=0, atol=0)

    train(fresh(0), pairs, config, out_dir=tmp_path / "split", progress=False, until_step=3)
    resumed = fresh(5)  # other initial weights: the checkpoint's must replace them
    second = train(resumed, pairs, config, out_dir=tmp_path / "split", progress=False)
    assert second["loss"] == history["loss"]
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    with pytest.raises(CheckpointMismatchError, match=r"model config field embed_dim"):
        other = LiTModel(tiny_lit_config(embed_dim=4), text_model=FakeSentenceModel())
        train(other, pairs, config, out_dir=tmp_path / "split", progress=False)
