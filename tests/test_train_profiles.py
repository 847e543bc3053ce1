"""Training profiles: plain data that builds a model, its data and its checkpoint folder."""

import math

import pytest

from clipkit.train import TrainConfig, build_model, default_out_dir, train
from conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_folders_differ_per_seed_and_for_profiles_beyond_notebook_05s(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPKIT_CHECKPOINT_DIR", str(tmp_path))
    assert default_out_dir(0) == tmp_path / "mini-clip"
    assert default_out_dir(1) == tmp_path / "mini-clip-seed1"
    # notebook 05 may train any of ci, cpu, gpu: later notebooks find it in the one folder
    assert {default_out_dir(0, profile) for profile in ("ci", "cpu", "gpu")} == {tmp_path / "mini-clip"}
    # a model notebook 05 never trains must not collide with its checkpoint
    assert default_out_dir(1, "cpu-where") == tmp_path / "mini-clip-cpu-where-seed1"


def test_the_where_profile_learns_with_centroid_pooling_and_place_attributes():
    model, data = build_model("cpu-where")
    assert model.config.vision.cnn_pool == "centroid"
    texts = data.batch(8, seed=0, step=0, hard_negatives=False, attributes=True).attribute_texts
    assert "something on the left" in texts and "something small" in texts
    config = TrainConfig(**{**TINY, "steps": 2, "attribute_weight": 0.5})
    history = train(model, data, config, progress=False)
    assert all(math.isfinite(loss) for loss in history["loss"])


def test_the_fitted_tokenizer_knows_every_caption_and_evaluation_prompt_word():
    from clipkit.prompts import prompt_vocabulary

    model, data = build_model("ci")
    assert prompt_vocabulary(data), "the shapes source is evaluated with prompts"
    assert model.tokenizer.unknown_words(data.vocabulary() + prompt_vocabulary(data)) == []


def test_cpu_random_is_the_grid_recipe_on_the_randomised_world():
    from clipkit.train import PROFILES

    _, data = build_model("cpu-random")
    assert data.spec["shapes"]["variation"] == "random"
    assert data.sources[0].world.config.variation == "random"
    assert PROFILES["cpu-grid"]["data"]["shapes"].get("variation", "grid") == "grid"
    # the same model and training, only the world differs: a side-by-side comparison
    assert {k: v for k, v in PROFILES["cpu-grid"].items() if k != "data"} == {k: v for k, v in PROFILES["cpu-random"].items() if k != "data"}


def test_the_laptop_profile_learns_in_the_randomised_world_with_a_share_drawn_the_grid_way():
    from clipkit.train import PROFILES

    assert PROFILES["cpu"] == PROFILES["cpu-robust"]  # the name earlier runs saved it under
    _, data = build_model("cpu")
    world = data.sources[0].world
    assert world.config.variation == "random" and 0 < world.config.p_grid < 1
    sample = world.sample(200, seed=3)
    unturned = [all(o.angle == 0 for o in scene.objects) for scene in sample.scenes]
    assert 0 < sum(unturned) < len(unturned)  # both drawings in one stream
    assert "dark background" not in " ".join(sample.captions)  # a randomised world's captions


def test_the_robust_profile_trains_a_max_pooled_vgg_that_its_checkpoint_rebuilds(tmp_path):
    import torch

    from clipkit.checkpoint import load_checkpoint
    from clipkit.model import save_model

    model, data = build_model("cpu")
    assert (model.config.vision.cnn_block, model.config.vision.cnn_pool) == ("plain", "max")
    assert data.sources[0].world.config.variation == "random"
    history = train(model, data, TrainConfig(**{**TINY, "steps": 2, "attribute_weight": 1.0}), progress=False)
    assert all(math.isfinite(loss) for loss in history["loss"])
    save_model(model.eval(), tmp_path)
    loaded = load_checkpoint(tmp_path).eval()
    assert loaded.config.vision == model.config.vision
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
