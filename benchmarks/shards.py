"""Reading WebDataset shards: images/s of `ShardData.local_batches` at 64 px, with 1 and 2 processes.

Shards of the shapes world (PNG, as `python -m clipkit.data.shards write shapes` writes them) are
written to a temporary folder first (not timed). Then one process reads as rank 0 of 1, and two
processes read at once as ranks 0 and 1 of 2 (each its own shards, as under torchrun); each process
decodes into uint8 batches of `--batch-size` on one thread. Target: >= 2,000 images/s per process.

    python benchmarks/shards.py            # 4,096 images in 8 shards, 64 px
    python benchmarks/shards.py --quick    # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time

TARGET_PER_PROCESS = 2000  # images/s


def _read(pattern: str, image_size: int, batch_size: int, batches: int, rank: int, world: int, results) -> None:
    import torch

    from clipkit.data.shards import ShardData

    torch.set_num_threads(1)
    data = ShardData(pattern, image_size)
    stream = data.local_batches(batch_size, seed=0, start=0, rank=rank, world=world)
    next(stream)  # warm-up: imports, the first shard opened
    start = time.perf_counter()
    images = sum(len(next(stream)[1]) for _ in range(batches))
    results.put((rank, images / (time.perf_counter() - start)))


def _measure(pattern: str, args, world: int) -> list[float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_read, args=(pattern, args.image_size, args.batch_size, args.batches, rank, world, results))
                 for rank in range(world)]
    for process in processes:
        process.start()
    rates = dict(results.get(timeout=600) for _ in processes)
    for process in processes:
        process.join()
    return [rates[rank] for rank in range(world)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096, help="images written (default 4096)")
    parser.add_argument("--shards", type=int, default=8, help="shards written (default 8)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per process (default 12)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.shards, args.batch_size, args.batches = 256, 4, 32, 3

    from clipkit.data.shapes import ShapesConfig, ShapesWorld
    from clipkit.data.shards import write_shards

    with tempfile.TemporaryDirectory() as folder:
        world = ShapesWorld(ShapesConfig(image_size=args.image_size))
        started = time.perf_counter()
        pattern = write_shards(world, folder, args.images, args.images // args.shards, image_size=args.image_size)
        write_seconds = time.perf_counter() - started
        megabytes = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)) / 1e6
        rates = {world: _measure(pattern, args, world) for world in (1, 2)}

    print(f"reading WebDataset shards: {args.images} shapes images at {args.image_size} px in {args.shards} shards "
          f"({megabytes:.1f} MB, written in {write_seconds:.1f} s), batch {args.batch_size}, load {os.getloadavg()[0]:.2f}")
    print(f"{'processes':<10} {'images/s per process':>22} {'images/s in all':>16} {'target met':>11}")
    for world, per_process in rates.items():
        slowest = min(per_process)
        print(f"{world:<10} {', '.join(f'{r:.0f}' for r in per_process):>22} {sum(per_process):>16.0f} "
              f"{str(slowest >= TARGET_PER_PROCESS):>11}")
    figures = {
        "image_size": args.image_size,
        "images": args.images,
        "shards": args.shards,
        "write_seconds": round(write_seconds, 2),
        "one_process_images_per_second": round(rates[1][0], 1),
        "two_processes_images_per_second_each": [round(r, 1) for r in rates[2]],
        "two_processes_images_per_second_total": round(sum(rates[2]), 1),
        "target_images_per_second_per_process": TARGET_PER_PROCESS,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
