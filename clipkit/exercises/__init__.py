"""Checks for the tutorials' exercises, with a specific message for each typical mistake.

The exercise versions of notebooks 02-08 live in `tutorials/` (written by `make tutorials`, i.e.
``python -m clipkit.exercises generate``, from the `# BEGIN SOLUTION` / `# END SOLUTION` markers in
`notebooks/`). After each function the student writes comes a check cell:

    from clipkit import exercises
    clip_loss_by_hand = exercises.check_clip_loss_by_hand(clip_loss_by_hand)

which prints "Correct!" and what it verified, "Not done yet" for the untouched stub, or what is
wrong in a sentence: a typical mistake ("logits must be scaled by exp(logit_scale): ..."), or
something the later cells could not use (None, a Python float or a numpy array where a tensor is
due, a wrong shape, dtype or device, NaN, a result without gradient, an exception). It returns the
function the notebook goes on with: the student's when right, else the reference, so every later
cell still runs, and the check cell itself never raises, whatever the student's function does.
`exercises.hint("clip_loss_by_hand")` prints the next hint.

One module per notebook holds its reference solutions, crafted inputs and typical mistakes;
`core` runs them; `generate` writes the tutorials.
"""

from clipkit.exercises.contrastive_loss import check_clip_loss_by_hand
from clipkit.exercises.core import check, hint, judge
from clipkit.exercises.spec import EXERCISES, Output, Verdict, exercise
from clipkit.exercises.image_encoder import check_patchify, check_with_class_token
from clipkit.exercises.search import check_top_k_search
from clipkit.exercises.steering import check_steering_loss
from clipkit.exercises.text_encoder import check_masked_attention, check_pool_at_eot
from clipkit.exercises.training import check_lr_multiplier, check_multi_positive_targets
from clipkit.exercises.zero_shot import check_classifier_weights

__all__ = [
    "EXERCISES",
    "Output",
    "Verdict",
    "check",
    "check_classifier_weights",
    "check_clip_loss_by_hand",
    "check_lr_multiplier",
    "check_masked_attention",
    "check_multi_positive_targets",
    "check_patchify",
    "check_pool_at_eot",
    "check_steering_loss",
    "check_top_k_search",
    "check_with_class_token",
    "exercise",
    "hint",
    "judge",
]
