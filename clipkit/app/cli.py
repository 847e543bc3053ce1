"""The command line: `python -m clipkit.app` (and `make demo`) serves any model.

    python -m clipkit.app --model SPEC [--port 7860] [--host H] [--share] [--folder DIR]
    python -m clipkit.app --checkpoint PATH            # the same as --model PATH
    python -m clipkit.app --from-notebook-checkpoint   # notebook 05's model, trained here if absent
    python -m clipkit.app export DIR --model SPEC      # a folder that runs as a Hugging Face Space

SPEC is what `clipkit.checkpoint.load_model_spec` reads: a checkpoint folder,
`open_clip:NAME[:TAG or weights file]` or `hf:ID-or-folder`.

Before anything slow it checks that the port is free (a busy one is one line naming --port); a
missing notebook checkpoint is trained with a progress bar and a time estimate, checkpointed as it
goes so that stopping and starting again resumes. The banner names the URL, who can reach it and
how to share it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from clipkit.io import report_bad_input
from clipkit.app.server import DEFAULT_PORT, HOST, TAB_NAMES, build_app, launch


def notebook_checkpoint(device=None):
    """The model notebook 05 saved in checkpoint_dir()/"mini-clip", with the profile it was trained
    with; trained with the "cpu" profile (a few minutes, shown with a progress bar) when the folder
    holds none, resuming an interrupted run."""
    from clipkit.model import CONFIG_FILE, read_checkpoint_config
    from clipkit.train import default_out_dir, load_or_train

    folder = default_out_dir()
    profile = "cpu"
    if (folder / CONFIG_FILE).exists():
        profile = read_checkpoint_config(folder)[1].get("profile") or profile
    return load_or_train(profile=profile, out_dir=folder, device=device, progress=True)


def busy_port_message(host: str, port: int) -> str | None:
    """One line naming --port when nothing can listen on (host, port), else None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a closed socket's wait does not count
        try:
            probe.bind((host, port))
        except OSError as error:
            return (f"error: cannot serve on {host}:{port} ({error.strerror or error}; another program, or an earlier "
                    f"demo, is using it): choose a free port with --port, e.g. --port {port + 1}"
                    + (f" (make demo PORT={port + 1})" if os.environ.get("MAKELEVEL") else ""))
    return None


def banner(url: str, host: str, share_url: str | None) -> str:
    """What the person who started the app needs: where it is, who can reach it, how to share or stop it."""
    who = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else f"anyone who can reach {host}"
    lines = [f"clipkit demo running at {url} ({who}). Ctrl-C stops it."]
    if share_url:
        lines.append(f"Public link (anyone who has it can use the app while it runs): {share_url}")
    else:
        how = " (make demo DEMO_ARGS=--share)" if os.environ.get("MAKELEVEL") else ""
        lines.append(f"To share it, start it again with --share{how} for a temporary public link.")
    return "\n".join(lines)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the examples kept line by line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipkit.app",
        description="Serve the clipkit demo (zero-shot, search, steering, moderation, model card) for a model. "
        "It binds 127.0.0.1 (this machine only) unless --host is given; --share adds a public link.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n  python -m clipkit.app --from-notebook-checkpoint\n"
        "  python -m clipkit.app --model runs/mini-clip --port 7861 --folder ~/Pictures\n"
        "  python -m clipkit.app --model open_clip:ViT-B-32:laion2b_s34b_b79k\n"
        "  python -m clipkit.app --model hf:openai/clip-vit-base-patch32    (or hf:path/to/saved/folder)\n"
        "  python -m clipkit.app export my-space --model open_clip:ViT-B-32:/path/to/weights.safetensors",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="SPEC", help="the model: a checkpoint folder, open_clip:NAME[:TAG or weights file], "
                        "or hf:ID-or-folder (a transformers CLIPModel)")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint folder (model.safetensors + config.json)")
    source.add_argument("--from-notebook-checkpoint", action="store_true",
                        help="notebook 05's checkpoint_dir()/mini-clip; trains it with the cpu profile when absent")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on")
    parser.add_argument("--host", default=HOST, help="address to bind; 0.0.0.0 opens the app to your network")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--folder", type=Path, action="append", default=[],
                        help="a folder of photos to search: nested folders, any format PIL reads, captions optional "
                        "(cat.jpg + cat.txt); embeddings are cached on disk, so a second start embeds nothing (repeatable)")
    parser.add_argument("--tabs", default=",".join(TAB_NAMES), help="comma-separated tabs to show")
    parser.add_argument("--device", help="cpu, cuda or mps; by default clipkit.get_device() picks")
    parser.add_argument("--debug", action="store_true", help="on bad input, show the full traceback")
    return parser


def load_served_model(args, device):
    """(model, where its weights came from) for --model, --checkpoint or --from-notebook-checkpoint."""
    from clipkit.checkpoint import load_model_spec

    if args.from_notebook_checkpoint:
        return notebook_checkpoint(device), "notebook 05's checkpoint (checkpoint_dir()/mini-clip)"
    model, spec = load_model_spec(args.model or str(args.checkpoint), device)
    return model, spec.describe()


def main(argv: list[str] | None = None) -> int:
    from clipkit.app.collections import default_collections
    from clipkit.env import get_device
    from clipkit.pretrained import PretrainedWeightsUnavailableError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reports usage otherwise
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        from clipkit.app.export import main as export_main

        return export_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    busy = busy_port_message(args.host, args.port)
    if busy:  # said at once, before minutes of loading or training
        print(busy, file=sys.stderr)
        return 1
    device = get_device(args.device)
    started = time.perf_counter()
    try:
        model, source = load_served_model(args, device)
        tabs = [tab.strip() for tab in args.tabs.split(",") if tab.strip()]
        app = build_app(model, default_collections(args.folder), tabs=tabs, source=source)
    except (FileNotFoundError, ValueError, PretrainedWeightsUnavailableError) as error:  # wrong path or spec, damaged file, offline: exit 2
        return report_bad_input(error, args.debug)
    except KeyboardInterrupt:
        print("\nstopped. Training is checkpointed every few dozen steps: the same command resumes from the last one",
              file=sys.stderr)
        return 130
    print(f"model ready in {time.perf_counter() - started:.1f} s: {source}", file=sys.stderr)
    try:
        launch(app, host=args.host, port=args.port, share=args.share, prevent_thread_lock=True, quiet=True)
    except OSError:  # taken since the check above
        print(busy_port_message(args.host, args.port) or f"error: cannot serve on {args.host}:{args.port}: choose "
              f"another port with --port", file=sys.stderr)
        return 1
    print(banner(app.local_url, args.host, app.share_url if args.share else None), flush=True)
    app.block_thread()
    return 0
