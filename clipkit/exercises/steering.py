"""Notebook 08's exercise: the loss one steering step minimises, from image logits to 1 - cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipkit.data.transforms import normalize_images, resize_images
from clipkit.exercises.core import check
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "08_art_steering"


def steering_loss_by_hand(model, logits: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    image = torch.sigmoid(logits)  # pixels in [0, 1], [1, 3, H, W]
    views = normalize_images(resize_images(image, model.image_size), model.image_mean, model.image_std)
    return (1 - F.normalize(model.encode_image(views), dim=-1) @ text_features.T).mean()


def _model_input(model, image, normalise=True):
    resized = resize_images(image, model.image_size)
    return normalize_images(resized, model.image_mean, model.image_std) if normalise else resized


def _without_normalize_images(model, logits, text_features):
    views = _model_input(model, torch.sigmoid(logits), normalise=False)
    return (1 - F.normalize(model.encode_image(views), dim=-1) @ text_features.T).mean()


def _without_sigmoid(model, logits, text_features):
    views = _model_input(model, logits)
    return (1 - F.normalize(model.encode_image(views), dim=-1) @ text_features.T).mean()


def _without_resize(model, logits, text_features):
    views = normalize_images(torch.sigmoid(logits), model.image_mean, model.image_std)
    return (1 - F.normalize(model.encode_image(views), dim=-1) @ text_features.T).mean()


def _dot_product(model, logits, text_features):
    views = _model_input(model, torch.sigmoid(logits))
    return (1 - model.encode_image(views) @ text_features.T).mean()


def _similarity_as_loss(model, logits, text_features):
    views = _model_input(model, torch.sigmoid(logits))
    return (F.normalize(model.encode_image(views), dim=-1) @ text_features.T).mean()


def _in_eval_mode(call, inputs):
    """BatchNorm must not update its statistics while a check runs: the notebook's model stays as it was."""
    model = inputs["model"]
    was_training = model.training
    model.eval()
    try:
        return [call(inputs)]
    finally:
        model.train(was_training)


def _cases(model, text_features) -> list[Case]:
    generator = torch.Generator().manual_seed(8)
    device = text_features.device
    side = model.image_size + 8  # not the model's size, so the image has to be resized
    other = F.normalize(torch.randn(text_features.shape, generator=generator), dim=-1).to(device)
    cases = []
    for target, what in ((text_features.detach(), "your prompt's features"), (other, "a random unit vector")):
        logits = (2 * torch.randn(1, 3, side, side, generator=generator)).to(device).requires_grad_(True)
        cases.append(Case(f"logits [1, 3, {side}, {side}] against {what}", {"logits": logits, "text_features": target},
                          shared={"model": model}))
    return cases


def _mean_shift(case: Case) -> dict:
    model = case.shared["model"]
    return {"mean": ", ".join(f"{m:.2f}" for m in model.image_mean), "size": model.image_size}


STEERING_LOSS = register(Exercise(
    notebook=NOTEBOOK,
    reference=steering_loss_by_hand,
    cases=_cases,
    apply=_in_eval_mode,
    returns=(Output("loss", "[]"),),
    differentiable=("logits",),  # the steering loop's loss.backward() must reach them
    mistakes=[
        Mistake("without_normalize_images", _without_normalize_images,
                "steering without normalize_images: the model was trained on images normalised with its mean "
                "({mean}) and std, so it reads your pixels as a washed-out, low-contrast image in which black looks "
                "like that mean colour. Pass the resized image through normalize_images(x, model.image_mean, "
                "model.image_std).", _mean_shift),
        Mistake("without_sigmoid", _without_sigmoid,
                "the logits go to the model as if they were pixels. The image is torch.sigmoid(logits), which keeps "
                "every pixel in [0, 1] however far the optimiser moves the logits."),
        Mistake("without_resize", _without_resize,
                "the image is not resized to the model's input ({size} px): resize_images(image, model.image_size) "
                "before normalising.", _mean_shift),
        Mistake("dot_product", _dot_product,
                "the image embedding is not normalised, so 1 - (dot product) can fall just by making the embedding "
                "longer. Use the cosine: F.normalize(model.encode_image(views), dim=-1) @ text_features.T."),
        Mistake("similarity_as_loss", _similarity_as_loss,
                "your loss is the similarity itself, so minimising it steers the image *away* from the prompt. "
                "Minimise 1 - cosine similarity."),
    ],
    verifies="sigmoid pixels, resized and normalised with the model's statistics, and 1 - cosine similarity "
             "with a gradient that reaches the logits",
    hints=[
        "Three steps to the model's input: torch.sigmoid(logits) (pixels in [0, 1]), resize_images(image, "
        "model.image_size), normalize_images(x, model.image_mean, model.image_std).",
        "F.normalize(model.encode_image(views), dim=-1) @ text_features.T is the cosine similarity, [1, 1]; "
        "the loss is (1 - that).mean().",
    ],
))


def check_steering_loss(function, model, text_features):
    """Check notebook 08's steering_loss_by_hand(model, logits, text_features); returns the function to go on with."""
    return check("steering_loss_by_hand", function, model=model, text_features=text_features)
