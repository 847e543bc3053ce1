"""The app as a whole: the chosen tabs in one queued gr.Blocks, served on loopback by default.

Safe defaults: the server binds 127.0.0.1, uploads are capped at `MAX_FILE_SIZE`, images above
`MAX_IMAGE_PIXELS` are refused before they are decoded, and a queue runs at most
`CONCURRENCY_LIMIT` requests at once (steering, the heavy one, one at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clipkit.app.card import model_card as build_card
from clipkit.app.collections import Collection, default_collections
from clipkit.app.tabs import about_tab, moderation_tab, search_tab, steer_tab, zero_shot_tab

TAB_NAMES = ("zero-shot", "search", "steer", "moderation", "about")
HOST = "127.0.0.1"  # loopback only: nobody else on the network reaches the app unless asked (--host, --share)
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "20mb"  # uploads above this are refused by the server before any handler runs
CONCURRENCY_LIMIT = 4  # requests served at once (per event); the rest wait in the queue
QUEUE_SIZE = 256  # requests waiting beyond this are refused with "queue full"


def build_app(
    model,
    collections: dict[str, Collection] | Sequence[Collection] | None = None,
    title: str = "clipkit: a mini-CLIP at work",
    model_card: str | None = None,
    tabs: Sequence[str] = TAB_NAMES,
    labels: Sequence[str] | None = None,
    examples: Sequence[str | Path] | None = None,
    source: str | None = None,
    policy=None,
):
    """A gr.Blocks with the chosen `tabs` (of TAB_NAMES) for `model` (put in eval mode), queued.

    `collections` (search): Collection objects or a name -> Collection dict; default
    `default_collections()`. `labels`, `examples`: the zero-shot tab's starting labels and example
    images (defaults follow the model's training data). `model_card`: markdown for the About tab;
    without it the card is built from the model, with `source` (where the weights came from, e.g.
    `clipkit.checkpoint.ModelSpec.describe()`) on its first lines. `policy`: the moderation tab's
    starting policy (a `clipkit.moderation.Policy`; default one fitted to the model's training data).
    """

    import gradio as gr

    tabs = tuple(tabs)
    unknown = sorted(set(tabs) - set(TAB_NAMES))
    if unknown or not tabs:
        raise ValueError(f"unknown tabs {unknown}: choose from {TAB_NAMES}")
    if collections is None:
        collections = default_collections()
    elif not isinstance(collections, dict):
        collections = {collection.name: collection for collection in collections}
    model.eval()
    if model_card is None and "about" in tabs:
        model_card = build_card(model, source=source)
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}")
        with gr.Tabs():
            if "zero-shot" in tabs:
                zero_shot_tab(model, labels, examples, blocks=app)
            if "search" in tabs:
                search_tab(model, collections)
            if "steer" in tabs:
                steer_tab(model)
            if "moderation" in tabs:
                moderation_tab(model, policy)
            if "about" in tabs:
                card = about_tab(model, model_card)
        if "about" in tabs:

            def read_model_card() -> str:
                return card

            gr.api(read_model_card, api_name="model_card")
    app.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return app


def launch(
    app,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    inline: bool | None = None,
    quiet: bool = False,
) -> str:
    """Serve `app` on `host` (default 127.0.0.1) and `port` (default: the first free from 7860);
    returns the public link with share=True, else the local URL. `prevent_thread_lock=True`
    returns at once, the server running in the background (notebooks, tests)."""
    _, url, share_url = app.launch(
        server_name=host or HOST,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        inline=inline,
        quiet=quiet,
        max_file_size=MAX_FILE_SIZE,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
    )
    return share_url or url
