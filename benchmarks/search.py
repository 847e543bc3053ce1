"""Exact top-k search over a large embedding collection: clipkit's chunked torch search vs faiss.

    python benchmarks/search.py            # 1,000,000 x 256 float32, 64 queries, top-10
    python benchmarks/search.py --quick    # 20,000 vectors, a few seconds

Random unit vectors stand in for image embeddings (search cost does not depend on what they
mean). The vectors are added to an EmbeddingIndex in batches, as `index_images` would, and the
same vectors go into a faiss IndexFlatIP. Torch and faiss searches are interleaved repeat by
repeat so that load from other processes on a shared machine hits both alike; the medians are
compared, and the two result sets are checked to agree. Peak memory is the process's peak RSS
(tracemalloc does not see torch's allocations). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from clipkit.search import EmbeddingIndex


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mib() -> float | None:
    """Resident memory right now (Linux only): with the peak, it separates growth spikes from steady state."""
    try:
        resident_pages = int(open("/proc/self/statm").read().split()[1])
    except OSError:
        return None
    return resident_pages * resource.getpagesize() / 2**20


def random_unit_vectors(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000, help="collection size")
    parser.add_argument("--dim", type=int, default=256, help="embedding width")
    parser.add_argument("--queries", type=int, default=64, help="queries searched as one batch")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=7, help="timed searches per backend (median reported)")
    parser.add_argument("--add-batch", type=int, default=100_000, help="vectors per index.add call")
    parser.add_argument("--device", default="cpu", help="where the torch index lives, e.g. cuda (faiss stays on CPU)")
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, 3 repeats: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.vectors, args.repeats, args.add_batch = 20_000, 3, 5_000

    baseline_rss = peak_rss_mib()  # the interpreter, torch and clipkit, before any data
    generator = torch.Generator().manual_seed(args.seed)
    queries = random_unit_vectors(args.queries, args.dim, generator)

    # Add: batches are generated outside the timer, so only normalising, validating and storing count.
    index = EmbeddingIndex(args.dim, device=args.device)
    add_seconds = 0.0
    for start in range(0, args.vectors, args.add_batch):
        batch = random_unit_vectors(min(args.add_batch, args.vectors - start), args.dim, generator)
        began = time.perf_counter()
        index.add(batch)
        add_seconds += time.perf_counter() - began
    del batch
    index.search(queries, k=args.k)  # warm-up: first-call allocations and thread start-up
    torch_peak_rss, torch_rss = peak_rss_mib(), current_rss_mib()

    faiss_index = None
    faiss_add_seconds = None
    if not args.no_faiss:
        try:
            import faiss
        except ImportError:
            print("faiss is not installed: timing torch only (pip install faiss-cpu to compare).")
        else:
            faiss_index = faiss.IndexFlatIP(args.dim)
            vectors = index.embeddings.cpu().numpy()  # the very same normalised vectors (no copy on CPU)
            began = time.perf_counter()
            faiss_index.add(vectors)
            faiss_add_seconds = time.perf_counter() - began
            faiss_index.search(queries.numpy(), args.k)  # warm-up

    torch_times, faiss_times = [], []
    for _ in range(args.repeats):
        began = time.perf_counter()
        result = index.search(queries, k=args.k)
        torch_times.append(time.perf_counter() - began)
        if faiss_index is not None:
            began = time.perf_counter()
            faiss_scores, faiss_indices = faiss_index.search(queries.numpy(), args.k)
            faiss_times.append(time.perf_counter() - began)

    torch_seconds = statistics.median(torch_times)
    figures = {
        "vectors": args.vectors,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "repeats": args.repeats,
        "device": str(index.device),
        "torch_threads": torch.get_num_threads(),
        "baseline_rss_mib": round(baseline_rss, 1),
        "index_mib": round(args.vectors * args.dim * 4 / 2**20, 1),
        "add_vectors_per_second": round(args.vectors / add_seconds),
        "torch_search_seconds": round(torch_seconds, 4),
        "torch_search_min_seconds": round(min(torch_times), 4),
        "torch_queries_per_second": round(args.queries / torch_seconds, 1),
        "torch_peak_rss_mib": round(torch_peak_rss, 1),
        "torch_rss_after_add_mib": None if torch_rss is None else round(torch_rss, 1),
    }
    if faiss_index is not None:
        faiss_seconds = statistics.median(faiss_times)
        agreement = (result.indices.numpy() == faiss_indices).mean()
        scores_close = bool(torch.allclose(result.scores, torch.from_numpy(faiss_scores), atol=1e-4))
        figures.update(
            {
                "faiss_add_vectors_per_second": round(args.vectors / faiss_add_seconds),
                "faiss_search_seconds": round(faiss_seconds, 4),
                "faiss_search_min_seconds": round(min(faiss_times), 4),
                "faiss_queries_per_second": round(args.queries / faiss_seconds, 1),
                "torch_to_faiss_time_ratio": round(torch_seconds / faiss_seconds, 3),
                "index_agreement_fraction": float(agreement),
                "scores_agree": scores_close,
            }
        )
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)

    print(f"exact top-{args.k}: {args.vectors:,} x {args.dim} float32 ({figures['index_mib']} MiB), "
          f"{args.queries} queries per batch, median of {args.repeats}, torch on {index.device} "
          f"({figures['torch_threads']} CPU threads)")
    print(f"{'backend':<8} {'add vec/s':>12} {'search s':>10} {'min s':>8} {'queries/s':>10}")
    print(f"{'torch':<8} {figures['add_vectors_per_second']:>12,} {torch_seconds:>10.4f} "
          f"{min(torch_times):>8.4f} {figures['torch_queries_per_second']:>10.1f}")
    if faiss_index is not None:
        print(f"{'faiss':<8} {figures['faiss_add_vectors_per_second']:>12,} {figures['faiss_search_seconds']:>10.4f} "
              f"{figures['faiss_search_min_seconds']:>8.4f} {figures['faiss_queries_per_second']:>10.1f}")
        print(f"torch / faiss search time: {figures['torch_to_faiss_time_ratio']:.3f} (target <= 1.5); "
              f"neighbours agree: {figures['index_agreement_fraction']:.4f}, scores agree: {scores_close}")
    print(f"peak RSS: {baseline_rss:.0f} MiB after imports, {torch_peak_rss:.0f} MiB while growing the torch index"
          + (f" ({torch_rss:.0f} MiB resident once built)" if torch_rss is not None else "")
          + (f", {figures['peak_rss_mib']:.0f} MiB after adding the faiss copy" if faiss_index is not None else ""))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
