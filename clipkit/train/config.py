"""The settings of a training run: one dataclass, a comment per field, checked when built."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("clip", "multi_positive")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps; the cosine schedule ends here
    batch_size: int = 128  # global batch (images and captions per step, over all processes)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.1  # AdamW decay on weight matrices; norms, biases and the logit scale get none
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW moments; 0.98 (CLIP's) is steadier with large batches
    eps: float = 1e-6  # AdamW epsilon (CLIP's)
    warmup_steps: int = 50  # linear warmup from lr / 1000 before the cosine
    grad_clip: float = 1.0  # largest global gradient norm; 0 disables clipping
    loss: str = "multi_positive"  # "clip": only caption i is right for image i; "multi_positive": every caption of the same group is
    hard_negatives: bool = False  # shapes: add NegCLIP's hard negatives (clipkit.data.negatives: attributes or relation swapped between the two objects) as negative-only columns
    hard_negative_weight: float = 1.0  # each hard negative counts as this many caption columns in the image->text softmax (its logit + ln w); 1 is NegCLIP's
    attribute_weight: float = 0.0  # shapes: weight of a loss on single-attribute texts ("something red", "a star"); 0 disables
    augment: bool = True  # small shifts, brightness and noise (no flips: captions say left and right)
    eval_every: int = 0  # steps between evaluations; 0 evaluates only at the end
    eval_size: int = 256  # images per evaluation split (fixed samples, unseen in training)
    checkpoint_every: int = 0  # steps between checkpoints (needs out_dir); 0 saves only at the end
    log_every: int = 10  # steps between entries of the training history
    seed: int = 0  # model initialisation, data and augmentation all follow from it
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere; "fp32"; "bf16"
    compile: bool = False  # torch.compile the towers (pays a compile once, faster steps on GPU)
    data_workers: int = 0  # processes drawing batches ahead of the step (0: in the loop; a GPU wants several)
    cpu_threads: int = 0  # torch threads on a CPU; 0: re-chosen as the run goes by timing steps (see ThreadGovernor)
    time_limit_seconds: float | None = None  # stop early (and save) once training has taken this long

    def __post_init__(self):
        self.betas = tuple(self.betas)
        problems = []
        if self.steps < 1 or self.batch_size < 2:
            problems.append(f"steps ({self.steps}) must be >= 1 and batch_size ({self.batch_size}) >= 2")
        if self.loss not in LOSSES:
            problems.append(f"loss {self.loss!r} is not one of {LOSSES}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.hard_negative_weight <= 0:
            problems.append(f"hard_negative_weight ({self.hard_negative_weight}) must be > 0")
        if self.cpu_threads < 0:
            problems.append(f"cpu_threads ({self.cpu_threads}) must be >= 0 (0 chooses by timing steps)")
        if min(self.eval_every, self.checkpoint_every, self.warmup_steps) < 0 or self.log_every < 1:
            problems.append("eval_every, checkpoint_every and warmup_steps must be >= 0, log_every >= 1")
        if problems:
            raise ValueError("bad TrainConfig: " + "; ".join(problems))


# Fields that do not change the trained weights: a checkpoint resumes whatever their values.
RESUME_FREE_FIELDS = (
    "eval_every", "eval_size", "checkpoint_every", "log_every", "compile", "time_limit_seconds", "data_workers",
    "cpu_threads",
)
