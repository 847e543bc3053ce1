"""The demo app's start time and zero-shot latency, measured as a user meets them.

    python benchmarks/app_latency.py                       # a 32 px tiny-cpu model, 50 requests
    python benchmarks/app_latency.py --model runs/x        # any model spec: a checkpoint folder,
    python benchmarks/app_latency.py --model open_clip:ViT-B-32   # ... a random ViT-B/32 at 224 px,
    python benchmarks/app_latency.py --model hf:path/to/folder    # ... or a transformers folder
    python benchmarks/app_latency.py --quick               # 10 requests: a smoke run

Start: `python -m clipkit.app --model SPEC` is launched as a new process and timed until its
page answers HTTP 200 (interpreter, imports, model loading, building the app and the server).
Latency: zero-shot requests with 36 labels through `gradio_client` (an image upload, the queue, the
answer), after one warm-up request that embeds the label set (cached from then on). Targets on a
CPU: start within 10 s and p50 at most 100 ms for the 32 px model; for a 224 px (ViT-B/32-sized)
model, start within 15 s and p50 at most 300 ms.

gradio_client builds a TLS context for every HTTP call it makes (~20 ms each on this machine) even
for plain http; `ssl_verify=False` skips that, and on a loopback http address there is no TLS to
verify, so that client is the headline figure; the default client is timed too. The same request
straight to the handler (`clipkit.app.classify`, in this process) shows what the model costs.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# image size -> (p50 ms, start s): the targets of the 32 px mini-CLIP and of a ViT-B/32-sized model
TARGETS = {32: (100.0, 10.0), 224: (300.0, 15.0)}


def targets_for(image_size: int) -> tuple[float, float]:
    """The targets of the nearest size at or below `image_size` (the small model's below 224 px)."""
    return TARGETS[max([size for size in TARGETS if size <= image_size], default=min(TARGETS))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_checkpoint(folder: Path) -> Path:
    """The notebook-05 architecture (profile "cpu": tiny-cpu, 32 px) untrained: latency does not depend on training."""
    from clipkit.model import save_model
    from clipkit.train import build_model

    model, _ = build_model("cpu")
    return save_model(model, folder, metadata={"profile": "cpu", "note": "untrained, for timing"})


def wait_for_page(url: str, server: subprocess.Popen, timeout: float) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.02)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s")


def time_requests(call, count: int) -> list[float]:
    """Milliseconds of `count` sequential calls."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="SPEC", help="a model spec as the app takes it: a checkpoint folder, "
                        "open_clip:NAME[:TAG or file], hf:ID-or-folder (default: an untrained 32 px tiny-cpu model)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint folder (the same as --model FOLDER)")
    parser.add_argument("--requests", type=int, default=50, help="timed zero-shot requests per client")
    parser.add_argument("--labels", type=int, default=36, help="labels per request (shapes-world class names)")
    parser.add_argument("--quick", action="store_true", help="10 requests: a smoke run")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for the app's first page")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 10

    from gradio_client import Client, handle_file

    from clipkit.app import classify, default_examples
    from clipkit.checkpoint import load_model_spec
    from clipkit.data import ShapesWorld

    labels = ", ".join(ShapesWorld().class_names[: args.labels])
    image = str(default_examples()[0])
    with tempfile.TemporaryDirectory() as scratch:
        spec = args.model or str(args.checkpoint or fresh_checkpoint(Path(scratch) / "model"))
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        began = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "clipkit.app", "--model", spec, "--port", str(port)],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_for_page(url, server, timeout=args.start_timeout)
            start_seconds = time.perf_counter() - began
            latencies = {}
            for name, verify in (("loopback client (ssl_verify=False)", False), ("default client", True)):
                client = Client(url, verbose=False, analytics_enabled=False, download_files=False, ssl_verify=verify)

                def request(client=client):
                    return client.predict(handle_file(image), labels, "a {}", api_name="/classify")

                request()  # warm-up: embeds the label set, which is then cached
                latencies[name] = time_requests(request, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)

        model, _ = load_model_spec(spec)
        classify(model, image, labels, "a {}")
        handler = time_requests(lambda: classify(model, image, labels, "a {}"), args.requests)

    loopback, default = latencies["loopback client (ssl_verify=False)"], latencies["default client"]
    target_p50_ms, target_start_seconds = targets_for(model.image_size)
    figures = {
        "model": spec if args.model or args.checkpoint else "untrained tiny-cpu (32 px)",
        "requests": args.requests,
        "labels": args.labels,
        "image_size": model.image_size,
        "app_start_seconds": round(start_seconds, 2),
        "zero_shot_p50_ms": round(statistics.median(loopback), 1),
        "zero_shot_p90_ms": round(percentile(loopback, 0.9), 1),
        "zero_shot_default_client_p50_ms": round(statistics.median(default), 1),
        "zero_shot_default_client_p90_ms": round(percentile(default, 0.9), 1),
        "handler_p50_ms": round(statistics.median(handler), 2),
        "target_p50_ms": target_p50_ms,
        "target_start_seconds": target_start_seconds,
    }
    figures["meets_targets"] = figures["zero_shot_p50_ms"] <= target_p50_ms and start_seconds <= target_start_seconds

    print(f"clipkit app, {figures['model']}: {args.labels} labels, {model.image_size} px, {args.requests} requests each")
    print(f"{'measure':<44}{'p50':>10}{'p90':>10}")
    for name, times in (*latencies.items(), ("handler only (clipkit.app.classify)", handler)):
        print(f"{'zero-shot, ' + name:<44}{statistics.median(times):>8.1f}ms{percentile(times, 0.9):>8.1f}ms")
    print(f"{'app start (process to first HTTP 200)':<44}{start_seconds:>9.2f}s")
    print(f"targets: p50 <= {target_p50_ms:.0f} ms, start <= {target_start_seconds:.0f} s -> "
          f"{'met' if figures['meets_targets'] else 'NOT met'}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
