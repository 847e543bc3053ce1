"""clipkit: what the notebooks build, kept so later notebooks and prototypes can import it.

Submodules are imported on demand (``from clipkit import loss``) so that
``import clipkit`` stays fast and does not pull in gradio or open_clip.
"""

from clipkit.env import cache_dir, checkpoint_dir, data_dir, get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["__version__", "cache_dir", "checkpoint_dir", "data_dir", "get_device", "seed_everything"]
