"""Distributed training on CPU (gloo): two processes see the loss and gradients of the global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipkit.train import TrainConfig, batch_to_input, build_model, compute_loss, read_train_state
from clipkit.train.ddp import average_gradients
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
# A ViT: BatchNorm would normalise each process's share with its own statistics, which no gather can undo.
VIT_PROFILE = {
    "preset": "tiny-cpu-vit",
    "model": {"embed_dim": 32, "vision": {"width": 32, "layers": 1, "heads": 2}, "text": {"width": 32, "layers": 1, "heads": 2}},
    "data": {"shapes": {"image_size": 32}},
}
BATCH = 16
CONFIG = TrainConfig(steps=1, batch_size=BATCH, hard_negatives=True, attribute_weight=0.5)


def _loss_and_gradients():
    """Loss and gradients at step 0 of this process's share of the global batch (all of it alone)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model, data = build_model(VIT_PROFILE, seed=0)
    batch = data.batch(BATCH, seed=0, step=0, hard_negatives=True, attributes=True)
    share = BATCH // world
    images = batch_to_input(model, batch.images[rank * share : (rank + 1) * share], augment_seed=None)
    out = compute_loss(model, batch, CONFIG, images)
    out["loss"].backward()
    average_gradients(model)
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out["loss"].detach(), gradients, len(batch.hard_negatives)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from safetensors.torch import save_file

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss, gradients, _ = _loss_and_gradients()
        save_file({"loss": loss.reshape(1), **gradients}, os.path.join(out_dir, f"rank{rank}.safetensors"))
        # both ranks leave together: tearing gloo down while the other rank still talks aborts it
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~9 s, mostly starting two interpreters
def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    from safetensors.torch import load_file

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss, gradients, negatives = _loss_and_gradients()
    finally:
        torch.set_num_threads(threads)
    assert negatives > 0, "the batch should hold hard negatives, so their path is checked too"
    for rank in range(2):
        saved = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        torch.testing.assert_close(saved.pop("loss")[0], loss, rtol=1e-5, atol=1e-6)
        assert saved.keys() == gradients.keys()
        for name, gradient in gradients.items():
            torch.testing.assert_close(saved[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_torchrun_trains_with_two_processes_and_rank_zero_saves(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
         "-m", "clipkit.train", "--profile", "ci", "--steps", "4", "--batch-size", "16", "--out", str(tmp_path),
         "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    state = read_train_state(tmp_path)
    assert state["step"] == 4 and state["finished"]
