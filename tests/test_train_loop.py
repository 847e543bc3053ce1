"""The training loop: history, evaluation, checkpoints, exact resuming, NaN handling, workers, compile."""

import math

import pytest
import torch

from clipkit.model import load_model
from clipkit.train import NonFiniteLossError, TrainConfig, build_model, read_train_state, train
from conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_lowers_the_loss_and_records_history_and_checkpoint(tmp_path):
    model, data = build_model("ci")
    history = train(model, data, TrainConfig(**TINY, eval_every=6, log_every=3), out_dir=tmp_path, progress=False)
    assert history["step"] == [3, 6, 9, 12] and history["eval_step"] == [6, 12]
    assert history["loss"][-1] < math.log(TINY["batch_size"])
    assert all(math.exp(-s) == pytest.approx(t) for s, t in zip(history["logit_scale"], history["temperature"]))
    for key in ("eval/seen", "eval/heldout_vs_heldout", "eval/heldout_vs_all", "eval/text_to_image_r@1"):
        assert len(history[key]) == 2 and 0 <= history[key][-1] <= 1
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    assert loaded.metadata["steps"] == 12 and loaded.metadata["finished"]
    assert loaded.metadata["metrics"]["seen"] == history["eval/seen"][-1]
    assert read_train_state(tmp_path)["step"] == 12


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    config = TrainConfig(**TINY, hard_negatives=True, attribute_weight=0.5)
    whole, data = build_model("ci")
    history = train(whole, data, config, out_dir=tmp_path / "whole", progress=False)

    first, data = build_model("ci")
    train(first, data, config, out_dir=tmp_path / "split", progress=False, until_step=5)
    assert read_train_state(tmp_path / "split")["step"] == 5 and not read_train_state(tmp_path / "split")["finished"]
    torch.manual_seed(123)  # the RNG state comes from the checkpoint, not from what happened since
    second, data = build_model("ci", seed=99)  # other initial weights: the checkpoint's must replace them
    resumed = train(second, data, config, out_dir=tmp_path / "split", progress=False)

    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed["step"] == history["step"]
    torch.testing.assert_close(torch.tensor(resumed["loss"]), torch.tensor(history["loss"]), rtol=1e-5, atol=1e-6)
    for key in [k for k in history if k.startswith("eval/")]:
        assert resumed[key][-1] == pytest.approx(history[key][-1], abs=1e-6), key


@pytest.mark.slow  # forks a worker and trains twice
def test_data_workers_draw_the_same_batches_as_the_loop():
    config = TrainConfig(**{**TINY, "steps": 4, "log_every": 1})
    inline, data = build_model("ci")
    expected = train(inline, data, config, progress=False)
    prefetched, data = build_model("ci")
    got = train(prefetched, data, TrainConfig(**{**config.__dict__, "data_workers": 1}), progress=False)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    model, data = build_model("ci")
    calls = {"n": 0}
    encode_image = model.encode_image

    def poisoned(images, normalize=False):
        calls["n"] += 1
        features = encode_image(images, normalize)
        return features * float("nan") if calls["n"] == 8 else features

    model.encode_image = poisoned
    with pytest.raises(NonFiniteLossError, match=r"nan at step 7.*step 5\).*intact"):
        train(model, data, TrainConfig(**TINY, checkpoint_every=5), out_dir=tmp_path, progress=False)
    assert read_train_state(tmp_path)["step"] == 5
    saved = load_model(tmp_path)
    assert all(torch.isfinite(t).all() for t in saved.state_dict().values() if t.is_floating_point())


@pytest.mark.slow
def test_compiled_towers_train_like_eager_ones(tmp_path):
    eager, data = build_model("ci")
    compiled, _ = build_model("ci")
    config = TrainConfig(**{**TINY, "steps": 4, "augment": False})
    expected = train(eager, data, config, progress=False)
    got = train(compiled, data, TrainConfig(**{**config.__dict__, "compile": True}), progress=False)
    torch.testing.assert_close(torch.tensor(got["loss"]), torch.tensor(expected["loss"]), rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_bf16_autocast_training_on_cuda_learns_and_saves_fp32_weights(tmp_path):
    model, data = build_model("ci")
    model = model.cuda()
    config = TrainConfig(**{**TINY, "steps": 40, "batch_size": 64, "log_every": 5, "data_workers": 2})
    history = train(model, data, config, out_dir=tmp_path, progress=False)
    assert history["loss"][-1] < history["loss"][0] and all(math.isfinite(v) for v in history["loss"])
    saved = load_model(tmp_path, device="cuda")
    assert all(t.dtype == torch.float32 for t in saved.state_dict().values() if t.is_floating_point())
    assert saved.metadata["metrics"]["heldout_vs_heldout"] >= 0


def test_thread_governor_keeps_the_fastest_count_and_follows_a_change_of_load():
    from clipkit.train.loop import ThreadGovernor

    torch.set_num_threads(2)  # the one_thread fixture puts the caller's count back afterwards
    governor = ThreadGovernor(probe=2, hold=10)
    assert governor.candidates == [2, 1]
    cost = {2: 5.0, 1: 1.0}  # a neighbour holds a core: one thread is faster

    def run(steps):
        used = []
        for _ in range(steps):
            threads = governor.threads()
            assert torch.get_num_threads() == threads
            used.append(threads)
            governor.timed(cost[threads])
        return used

    first = run(6 + 10)
    assert first[:6] == [2, 2, 2, 1, 1, 1] and set(first[6:]) == {1}  # probes (a warm step + 2 timed), then holds
    cost = {2: 1.0, 1: 2.0}  # the neighbour left
    later = run(6 + 10)
    assert later[-5:] == [2] * 5
    governor.restore()
    assert torch.get_num_threads() == 2
    fixed = ThreadGovernor(threads=1)
    assert fixed.candidates == [1] and fixed.threads() == 1
