"""WebDataset shards: written from the shapes world, read back exactly, split over processes and
workers, resumed at any step, a corrupt member skipped and counted; two gloo processes train and resume."""

import io
import os
import tarfile
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipkit.data.files import SkippedItemsWarning
from clipkit.data.shapes import ShapesConfig, ShapesWorld
from clipkit.data.shards import ShardData, expand_shards, write_shards
from clipkit.data.stream import build_data
from conftest import free_port

COUNT, PER_SHARD, SIZE = 48, 12, 32


@pytest.fixture(scope="module")
def shapes():
    return ShapesWorld(ShapesConfig(image_size=SIZE)).sample(COUNT, seed=3)


@pytest.fixture(scope="module")
def pattern(tmp_path_factory, shapes):
    folder = tmp_path_factory.mktemp("shards")
    return write_shards(ShapesWorld(ShapesConfig(image_size=SIZE)), folder, COUNT, PER_SHARD, seed=3)


def _take(batches, count):
    return [next(batches) for _ in range(count)]


def test_shards_hold_every_pair_exactly_and_an_epoch_reads_each_once(pattern, shapes):
    assert len(expand_shards(pattern)) == COUNT // PER_SHARD
    data = build_data(f"webdataset:{pattern}", SIZE)
    assert isinstance(data, ShardData) and data.spec == {"webdataset": pattern, "image_size": SIZE}
    assert data.vocabulary() == shapes.captions  # shard order, member order: as written
    read = _take(data.local_batches(8, seed=0, start=0), COUNT // 8)
    images, captions = torch.cat([b[0] for b in read]), [c for b in read for c in b[1]]
    assert images.dtype == torch.uint8 and images.shape == (COUNT, 3, SIZE, SIZE)
    written = {(caption, image.numpy().tobytes()) for caption, image in zip(shapes.captions, shapes.images)}
    assert {(c, i.numpy().tobytes()) for c, i in zip(captions, images)} == written  # PNG is lossless


def test_each_process_reads_its_own_shards(pattern):
    data = ShardData(pattern, SIZE)
    halves = [[c for _, captions in _take(data.local_batches(6, 0, 0, rank, 2), 4) for c in captions]
              for rank in range(2)]
    assert len(halves[0]) == len(halves[1]) == COUNT // 2
    assert sorted(halves[0] + halves[1]) == sorted(data.vocabulary())  # disjoint, and together all
    with pytest.raises(ValueError, match="at least one shard per process"):
        next(data.local_batches(6, 0, 0, rank=0, world=5))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_started_at_step_k_continues_the_unbroken_one(pattern, workers):
    data = ShardData(pattern, SIZE)
    unbroken = _take(data.local_batches(5, 1, 0, workers=workers), 14)  # past the end of an epoch
    resumed = _take(data.local_batches(5, 1, 9, workers=workers), 5)
    for (images, captions), (images_again, captions_again) in zip(unbroken[9:], resumed):
        assert captions == captions_again
        assert torch.equal(images, images_again)


def test_workers_split_the_shards_without_repeating_a_sample(pattern):
    data = ShardData(pattern, SIZE)
    read = [c for _, captions in _take(data.local_batches(6, 0, 0, workers=2), COUNT // 6) for c in captions]
    assert sorted(read) == sorted(data.vocabulary())


def test_a_corrupt_member_is_skipped_counted_and_its_place_filled(tmp_path, pattern):
    first = expand_shards(pattern)[0]
    damaged = tmp_path / "000000.tar"
    with tarfile.open(first) as source, tarfile.open(damaged, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith("000002.png"):
                data = b"not a png at all"
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    data = ShardData(str(damaged), SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, captions = next(data.local_batches(PER_SHARD, 0, 0))
    assert len(captions) == PER_SHARD and images.shape[0] == PER_SHARD  # still a full share
    assert len(data.skipped) == 1 and "000002.png" in data.skipped[0][0]
    assert "not an image" in data.skipped[0][1]
    assert [w for w in caught if issubclass(w.category, SkippedItemsWarning) and "skipped 1 samples" in str(w.message)]
    good = ShardData(first, SIZE)
    good_images, good_captions = next(good.local_batches(PER_SHARD, 0, 0))
    kept = [i for i in range(PER_SHARD) if i != 2]
    assert [captions[i] for i in kept] == [good_captions[i] for i in kept]
    assert torch.equal(images[kept], good_images[kept])
    assert captions[2] in captions[:2] + captions[3:]  # another sample of the batch took its place


def test_missing_shards_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ShardData(str(tmp_path / "{000000..000001}.tar"))


# ---------------------------------------------------------------------------------------------
# Training from shards with two processes, and resuming

VIT = {
    "preset": "tiny-cpu-vit",
    "model": {"embed_dim": 32, "vision": {"width": 32, "layers": 1, "heads": 2}, "text": {"width": 32, "layers": 1, "heads": 2}},
}


def _train_worker(rank: int, world: int, port: int, pattern: str, out: str) -> None:
    from safetensors.torch import save_file

    from clipkit.train import TrainConfig, build_model, train

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = TrainConfig(steps=4, batch_size=8, warmup_steps=1, lr=3e-3, eval_size=16, cpu_threads=1)
        finals = {}
        for name, stops in (("unbroken", [None]), ("split", [2, None])):
            for until in stops:
                model, data = build_model({**VIT, "data": f"webdataset:{pattern}"}, seed=0)
                history = train(model, data, config, out_dir=os.path.join(out, name), progress=False, until_step=until)
            finals[name] = model.state_dict()
        if rank == 0:
            save_file({f"{name}.{key}": value.contiguous() for name, state in finals.items() for key, value in state.items()},
                      os.path.join(out, "finals.safetensors"))
            assert history["step"][-1] == 4
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two interpreters, four short runs each
def test_two_gloo_processes_train_from_shards_and_resume_exactly(tmp_path, pattern):
    from safetensors.torch import load_file

    from clipkit.train import read_train_state

    mp.spawn(_train_worker, args=(2, free_port(), pattern, str(tmp_path)), nprocs=2, join=True)
    finals = load_file(str(tmp_path / "finals.safetensors"))
    keys = [key[len("unbroken."):] for key in finals if key.startswith("unbroken.")]
    for key in keys:
        torch.testing.assert_close(finals[f"split.{key}"], finals[f"unbroken.{key}"], rtol=1e-5, atol=1e-6, msg=key)
    state = read_train_state(tmp_path / "split")
    assert state["step"] == 4 and state["data_position"]["processes"] == 2
    assert state["data_position"]["samples_read_per_process"] == 4 * 4
