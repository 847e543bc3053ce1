"""The Gradio app: zero-shot classification, search, steering, moderation and a model card for any
model with the clipkit interface.

    app = build_app(model)                        # all five tabs; or tabs=("zero-shot",)
    launch(app, prevent_thread_lock=True)         # 127.0.0.1 unless host= or share=
    app.close()

    python -m clipkit.app --checkpoint PATH [--port 7860] [--host H] [--share] [--folder DIR]
    python -m clipkit.app --from-notebook-checkpoint   # notebook 05's model, trained here if absent
    python -m clipkit.app --model SPEC    # a checkpoint folder, open_clip:NAME[:TAG|file], hf:ID-or-folder
    python -m clipkit.app export DIR --model SPEC   # a folder that runs as a Hugging Face Space

One concept per module, read from the bottom up:

- `inputs`: checking what a person types or uploads (images, lists, lengths, templates);
- `defaults`: what the app suggests, chosen to fit the served model (labels, templates, examples);
- `collections`: the images search looks through;
- `services`: what each tab does, as plain functions without Gradio (`classify`, `search`,
  `steer_frames`, ...), for notebooks, tests and API callers;
- `card`: the model card;
- `tabs`: the Gradio wiring of each tab; `server`: `build_app` and `launch`;
- `cli`: the command line (`__main__` runs it); `export`: the Space folder.

This package's face: what notebooks and labs use.
"""

from clipkit.app.card import model_card
from clipkit.app.collections import Collection, default_collections, folder_collection
from clipkit.app.defaults import default_examples
from clipkit.app.server import build_app, launch
from clipkit.app.services import classify, moderate, saliency_picture, search, steer_frames

__all__ = [
    "Collection", "build_app", "classify", "default_collections", "default_examples", "folder_collection",
    "launch", "model_card", "moderate", "saliency_picture", "search", "steer_frames",
]
