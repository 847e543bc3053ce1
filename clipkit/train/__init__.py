"""Training a mini-CLIP (or LiT), one concept per module:

- `config`: `TrainConfig`, the settings of a run;
- `step`: one step (images to input, the towers, the loss and its targets, the optimizer update);
- `loop`: `train`, the loop that logs, evaluates, checkpoints and resumes;
- `state`: the train state in a checkpoint folder, saved and restored exactly;
- `ddp`: several processes sharing one global batch;
- `profiles`: named profiles as plain data, `build_model`, `default_out_dir`;
- `fallback`: `load_or_train`, notebook 05's model or one trained now;
- `__main__`: the command line, `python -m clipkit.train`.
"""

from clipkit.train.config import TrainConfig
from clipkit.train.fallback import load_or_train
from clipkit.train.loop import NonFiniteLossError, train
from clipkit.train.profiles import PROFILES, build_model, default_out_dir, fit_tokenizer, resolve_profile
from clipkit.train.state import CheckpointMismatchError, read_train_state
from clipkit.train.step import batch_to_input, compute_loss, parameter_groups

__all__ = [
    "PROFILES", "CheckpointMismatchError", "NonFiniteLossError", "TrainConfig", "batch_to_input", "build_model",
    "compute_loss", "default_out_dir", "fit_tokenizer", "load_or_train", "parameter_groups",
    "read_train_state", "resolve_profile", "train",
]
