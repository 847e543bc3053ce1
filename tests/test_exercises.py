"""The exercise checks discriminate: every reference passes, the untouched stub says "not done yet",
and each typical mistake, written here as a student would write it, gets its own message; so does
each answer of the wrong kind (None, a float, a numpy array, a wrong shape, no gradient, an exception),
and the check cell never raises, whatever the function returns."""

import math
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit import exercises
from clipkit.exercises.core import _run, close, judge
from clipkit.exercises.spec import EXERCISES

# ---------------------------------------------------------------------------------------------
# Context: the steering exercise runs on a model


@pytest.fixture(scope="module")
def steering_context():
    from clipkit.data import ShapesWorld
    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP
    from clipkit.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.fit(ShapesWorld().sample(300, seed=1).captions, context_length=24)
    torch.manual_seed(0)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=32)).eval()
    with torch.no_grad():
        text_features = F.normalize(model.encode_text(tokenizer(["a red star"])), dim=-1)
    return {"model": model, "text_features": text_features}


def context_for(name, steering_context):
    return steering_context if name == "steering_loss_by_hand" else {}


def verdict(name, function, steering_context):
    return judge(EXERCISES[name], function, **context_for(name, steering_context))


NAMES = sorted(EXERCISES)


def test_every_notebook_from_02_to_08_has_an_exercise_with_at_least_three_mistakes():
    notebooks = {ex.notebook[:2] for ex in EXERCISES.values()}
    assert notebooks == {"02", "03", "04", "05", "06", "07", "08"}
    for ex in EXERCISES.values():
        assert len(ex.mistakes) >= 3, ex.name
        assert len({m.name for m in ex.mistakes}) == len(ex.mistakes)
        assert len(ex.hints) >= 2


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes_every_check(name, steering_context):
    found = verdict(name, EXERCISES[name].reference, steering_context)
    assert found.passed, found.message
    assert found.message.startswith("Correct!")


@pytest.mark.parametrize("name", NAMES)
def test_the_untouched_stub_is_not_done_yet_not_a_traceback(name, steering_context, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"write the body of {name}")

    assert verdict(name, stub, steering_context).kind == "not_done"
    go_on_with = exercises.check(name, stub, **context_for(name, steering_context))
    printed = capsys.readouterr().out
    assert printed.startswith("Not done yet:") and "Traceback" not in printed
    assert go_on_with is EXERCISES[name].reference  # the notebook carries on with the reference


@pytest.mark.parametrize(("name", "mistake"), [(n, m.name) for n in NAMES for m in EXERCISES[n].mistakes])
def test_each_registered_mistake_is_recognised_by_its_behaviour(name, mistake, steering_context):
    wrong = next(m.wrong for m in EXERCISES[name].mistakes if m.name == mistake)
    found = verdict(name, wrong, steering_context)
    assert (found.kind, found.mistake) == ("mistake", mistake), found.message


@pytest.mark.parametrize("name", NAMES)
def test_mistakes_differ_from_the_reference_and_from_each_other(name, steering_context):
    """Otherwise two messages could claim the same wrong answer, or a right answer be called wrong."""
    ex = EXERCISES[name]
    cases = ex.cases(**context_for(name, steering_context))

    def outputs(function):
        run = _run(function, cases, ex)
        if run.error is not None:  # a mistake may raise: told apart by its error
            return repr(run.error)
        return [output for per_case in run.outputs for output in per_case]

    results = {m.name: outputs(m.wrong) for m in ex.mistakes}
    results["reference"] = outputs(ex.reference)
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = results[a], results[b]
            same = ra == rb if isinstance(ra, str) or isinstance(rb, str) else all(close(x, y, ex.atol) for x, y in zip(ra, rb))
            assert not same, f"{name}: {a} and {b} give the same outputs on the test inputs"


@pytest.mark.parametrize("name", NAMES)
def test_mistake_messages_are_specific(name, steering_context):
    messages = [verdict(name, m.wrong, steering_context).message for m in EXERCISES[name].mistakes]
    assert len(set(messages)) == len(messages)
    assert all("{" not in message for message in messages)  # every measured fact was filled in


# ---------------------------------------------------------------------------------------------
# Mistakes written the way a student would write them (not the registered variants)


def attention_without_mask(q, k, v):
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) / q.shape[-1] ** 0.5, dim=-1)
    return torch.einsum("bhij,bhjd->bhid", weights, v), weights


def attention_unscaled(q, k, v):
    length = q.shape[2]
    scores = torch.matmul(q, k.permute(0, 1, 3, 2))
    scores[..., torch.triu_indices(length, length, 1)[0], torch.triu_indices(length, length, 1)[1]] = -math.inf
    weights = F.softmax(scores, dim=3)
    return torch.matmul(weights, v), weights


def attention_mask_reversed(q, k, v):
    scores = q @ k.mT / math.sqrt(q.size(-1))
    mask = torch.tril(torch.ones(q.size(-2), q.size(-2)), diagonal=-1).bool()
    weights = scores.masked_fill(mask, -1e9).softmax(-1)
    return weights @ v, weights


def pool_last(hidden, tokens, eot_token_id):
    return hidden[:, hidden.shape[1] - 1, :]


def pool_largest_id(hidden, tokens, eot_token_id):
    return torch.stack([hidden[row, int(tokens[row].argmax())] for row in range(len(tokens))])


def pool_mean(hidden, tokens, eot_token_id):
    return hidden.sum(dim=1) / hidden.shape[1]


def pool_by_loop(hidden, tokens, eot_token_id):  # right, written another way
    rows = []
    for row in range(len(tokens)):
        position = tokens[row].tolist().index(eot_token_id)
        rows.append(hidden[row, position])
    return torch.stack(rows)


def patches_by_loop(pixels, patch_size):  # right, by hand
    batch, _, size, _ = pixels.shape
    rows = []
    for top in range(0, size, patch_size):
        for left in range(0, size, patch_size):
            rows.append(pixels[:, :, top : top + patch_size, left : left + patch_size].reshape(batch, -1))
    return torch.stack(rows, dim=1)


def patches_channels_last(pixels, patch_size):
    batch, _, size, _ = pixels.shape
    grid = size // patch_size
    x = pixels.permute(0, 2, 3, 1)  # [B, H, W, 3]
    x = x.reshape(batch, grid, patch_size, grid, patch_size, 3).transpose(2, 3)
    return x.reshape(batch, grid * grid, -1)


def patches_not_transposed(pixels, patch_size):
    return torch.nn.Unfold(patch_size, stride=patch_size)(pixels)


def patches_by_columns(pixels, patch_size):
    return patches_by_loop(pixels.transpose(2, 3), patch_size).reshape(
        pixels.shape[0], -1, 3, patch_size, patch_size).transpose(-1, -2).flatten(2)


def tokens_class_last(patch_tokens, class_embedding, positional_embedding):
    cls = class_embedding.unsqueeze(0).unsqueeze(0).repeat(patch_tokens.shape[0], 1, 1)
    return torch.cat((patch_tokens, cls), 1) + positional_embedding


def tokens_no_positions(patch_tokens, class_embedding, positional_embedding):
    cls = class_embedding[None, None].repeat(len(patch_tokens), 1, 1)
    return torch.cat((cls, patch_tokens), dim=1)


def tokens_positions_before_class(patch_tokens, class_embedding, positional_embedding):
    patch_tokens = patch_tokens + positional_embedding[1:]
    return torch.cat([class_embedding.expand(len(patch_tokens), 1, -1), patch_tokens], 1)


def loss_with_raw_logit_scale(image_features, text_features, logit_scale):
    i, t = image_features / image_features.norm(dim=1, keepdim=True), text_features / text_features.norm(dim=1, keepdim=True)
    logits = logit_scale * i @ t.t()
    labels = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def loss_without_scale(image_features, text_features, logit_scale):
    logits = F.cosine_similarity(image_features[:, None], text_features[None], dim=-1)
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def loss_one_way(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).T
    return -logits.log_softmax(dim=-1).diag().mean()


def loss_unnormalised(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def schedule_without_floor(step, warmup, total, floor):
    if step < warmup:
        return 0.001 + 0.999 * step / warmup
    progress = min((step - warmup) / (total - warmup), 1)
    return (1 + math.cos(math.pi * progress)) / 2


def schedule_without_warmup(step, warmup, total, floor):
    progress = min(step / total, 1.0)
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2


def schedule_unclamped(step, warmup, total, floor):
    if step < warmup:
        return 1e-3 + (1 - 1e-3) * step / warmup
    return floor + (1 - floor) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def targets_identity(captions):
    return torch.diag(torch.ones(len(captions)))


def targets_counts(captions):
    lower = [c.lower() for c in captions]
    return torch.tensor([[float(a == b) for b in lower] for a in lower])


def targets_case_sensitive(captions):
    same = torch.tensor([[float(a == b) for b in captions] for a in captions])
    return same / same.sum(1, keepdim=True)


def weights_not_renormalised(prompt_embeddings):
    return (prompt_embeddings / prompt_embeddings.norm(dim=-1, keepdim=True)).mean(0)


def weights_raw_average(prompt_embeddings):
    mean = prompt_embeddings.sum(dim=0) / prompt_embeddings.shape[0]
    return mean / mean.norm(dim=-1, keepdim=True)


def weights_first_template(prompt_embeddings):
    return F.normalize(prompt_embeddings[0], dim=1)


def search_worst(query_embeddings, gallery_embeddings, k):
    scores = query_embeddings @ gallery_embeddings.T
    order = scores.argsort(dim=1)[:, :k]
    return scores.gather(1, order), order


def search_best_last(query_embeddings, gallery_embeddings, k):
    scores = torch.einsum("qd,nd->qn", query_embeddings, gallery_embeddings)
    order = scores.argsort(dim=1)[:, -k:]
    return scores.gather(1, order), order


def search_per_image(query_embeddings, gallery_embeddings, k):
    return torch.topk(gallery_embeddings @ query_embeddings.T, k, dim=1)


def steer_without_normalising(model, logits, text_features):
    from clipkit.data.transforms import resize_images

    views = resize_images(logits.sigmoid(), model.image_size)
    return 1 - (F.normalize(model.encode_image(views), dim=1) * text_features).sum(dim=1).mean()


def steer_maximising_distance(model, logits, text_features):
    from clipkit.data.transforms import normalize_images, resize_images

    views = normalize_images(resize_images(torch.sigmoid(logits), model.image_size), model.image_mean, model.image_std)
    return F.cosine_similarity(model.encode_image(views), text_features).mean()


def steer_raw_logits(model, logits, text_features):
    from clipkit.data.transforms import normalize_images, resize_images

    views = normalize_images(resize_images(logits, model.image_size), model.image_mean, model.image_std)
    return (1 - F.cosine_similarity(model.encode_image(views), text_features)).mean()


STUDENT_MISTAKES = [
    ("masked_attention", attention_without_mask, "no_mask"),
    ("masked_attention", attention_unscaled, "no_scaling"),
    ("masked_attention", attention_mask_reversed, "mask_reversed"),
    ("pool_at_eot", pool_last, "last_position"),
    ("pool_at_eot", pool_largest_id, "largest_id"),
    ("pool_at_eot", pool_mean, "mean_of_all"),
    ("patchify", patches_channels_last, "colours_last"),
    ("patchify", patches_not_transposed, "not_transposed"),
    ("patchify", patches_by_columns, "grid_by_columns"),
    ("with_class_token", tokens_class_last, "class_token_last"),
    ("with_class_token", tokens_no_positions, "no_positions"),
    ("with_class_token", tokens_positions_before_class, "class_token_without_position"),
    ("clip_loss_by_hand", loss_with_raw_logit_scale, "no_exp"),
    ("clip_loss_by_hand", loss_without_scale, "no_scale"),
    ("clip_loss_by_hand", loss_one_way, "one_direction"),
    ("clip_loss_by_hand", loss_unnormalised, "not_normalised"),
    ("lr_multiplier", schedule_without_floor, "no_floor"),
    ("lr_multiplier", schedule_without_warmup, "no_warmup"),
    ("lr_multiplier", schedule_unclamped, "no_clamp"),
    ("multi_positive_targets", targets_identity, "identity"),
    ("multi_positive_targets", targets_counts, "unnormalised"),
    ("multi_positive_targets", targets_case_sensitive, "case_sensitive"),
    ("classifier_weights", weights_not_renormalised, "not_renormalised"),
    ("classifier_weights", weights_raw_average, "prompts_not_normalised"),
    ("classifier_weights", weights_first_template, "first_template_only"),
    ("top_k_search", search_worst, "least_similar"),
    ("top_k_search", search_best_last, "best_last"),
    ("top_k_search", search_per_image, "over_queries"),
    ("steering_loss_by_hand", steer_without_normalising, "without_normalize_images"),
    ("steering_loss_by_hand", steer_maximising_distance, "similarity_as_loss"),
    ("steering_loss_by_hand", steer_raw_logits, "without_sigmoid"),
]


@pytest.mark.parametrize(("name", "function", "mistake"), STUDENT_MISTAKES, ids=lambda x: getattr(x, "__name__", x))
def test_a_student_mistake_gets_its_specific_message(name, function, mistake, steering_context):
    found = verdict(name, function, steering_context)
    assert (found.kind, found.mistake) == ("mistake", mistake), found.message


def test_every_exercise_has_three_student_written_mistakes_above():
    covered = {}
    for name, _, mistake in STUDENT_MISTAKES:
        covered.setdefault(name, set()).add(mistake)
    assert set(covered) == set(EXERCISES) and all(len(found) >= 3 for found in covered.values())


@pytest.mark.parametrize(("name", "function"), [("pool_at_eot", pool_by_loop), ("patchify", patches_by_loop)])
def test_a_right_answer_written_differently_passes(name, function, steering_context):
    assert verdict(name, function, steering_context).passed


def test_the_lead_example_message_names_the_scale_and_the_largest_logit():
    message = judge(EXERCISES["clip_loss_by_hand"], loss_without_scale).message
    assert message.startswith("logits must be scaled by exp(logit_scale): ") and "largest value is 0." in message


# ---------------------------------------------------------------------------------------------
# Everything else a student can hand in


def test_an_exception_is_reported_in_one_line_and_the_reference_is_returned(capsys):
    def broken(image_features, text_features, logit_scale):
        return image_features @ text_features  # [B, D] @ [B, D]: the shapes do not fit

    found = judge(EXERCISES["clip_loss_by_hand"], broken)
    assert found.kind == "error" and "RuntimeError" in found.message and "5 unnormalised pairs" in found.message
    assert exercises.check_clip_loss_by_hand(broken) is EXERCISES["clip_loss_by_hand"].reference
    printed = capsys.readouterr().out
    assert printed.startswith("Not yet:") and "Traceback" not in printed and "exercises.hint('clip_loss_by_hand')" in printed


def test_forgetting_to_return_and_a_wrong_shape_are_named():
    def no_return(captions):
        torch.eye(len(captions))

    def one_row(captions):
        return torch.ones(1, len(captions)) / len(captions)

    assert "returned None" in judge(EXERCISES["multi_positive_targets"], no_return).message
    found = judge(EXERCISES["multi_positive_targets"], one_row)
    assert found.kind == "wrong" and "shape [1, 5]" in found.message and "shape [5, 5]" in found.message


def test_an_unexplained_wrong_value_points_to_the_solution():
    found = judge(EXERCISES["lr_multiplier"], lambda step, warmup, total, floor: 0.5)
    assert found.kind == "wrong" and "notebooks/05_train_mini_clip.ipynb" in found.message


def test_a_called_function_instead_of_the_function_is_explained():
    found = judge(EXERCISES["top_k_search"], "not a function")
    assert found.kind == "error" and "check_top_k_search(top_k_search)" in found.message


def test_a_correct_function_is_returned_and_praised(capsys):
    from clipkit.exercises.training import lr_multiplier

    def mine(step, warmup, total, floor):
        return lr_multiplier(step, warmup, total, floor)

    assert exercises.check_lr_multiplier(mine) is mine
    assert capsys.readouterr().out.startswith("Correct! lr_multiplier matches the reference")


def test_parameters_may_have_other_names():
    def mine(images, texts, log_scale):
        logits = log_scale.exp() * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
        return (F.cross_entropy(logits, torch.arange(len(logits))) + F.cross_entropy(logits.T, torch.arange(len(logits)))) / 2

    assert judge(EXERCISES["clip_loss_by_hand"], mine).passed


def test_a_function_that_edits_its_input_does_not_spoil_the_other_runs():
    def in_place(prompt_embeddings):
        prompt_embeddings /= prompt_embeddings.norm(dim=-1, keepdim=True)
        return F.normalize(prompt_embeddings.mean(dim=0), dim=-1)

    assert judge(EXERCISES["classifier_weights"], in_place).passed


def test_hints_come_one_at_a_time_then_point_to_the_solution(capsys):
    from clipkit.exercises import core

    core._HINTS_GIVEN.pop("patchify", None)
    count = len(EXERCISES["patchify"].hints)
    for number in range(1, count + 1):
        exercises.hint("patchify")
        printed = capsys.readouterr().out
        assert printed.startswith(f"Hint {number}/{count} for patchify:")
    assert "notebooks/03_image_encoder.ipynb" in printed
    exercises.hint("patchify", every=True)
    assert capsys.readouterr().out.count("Hint ") == count
    with pytest.raises(KeyError, match="the exercises are"):
        exercises.hint("no_such_exercise")


def test_checks_leave_the_global_random_state_and_the_model_as_they_were(steering_context):
    model = steering_context["model"]
    model.train()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state = torch.get_rng_state()
    for name in NAMES:
        judge(EXERCISES[name], EXERCISES[name].reference, **context_for(name, steering_context))
    assert torch.equal(state, torch.get_rng_state())
    assert model.training  # the check ran in eval mode and restored the mode
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_a_loss_without_gradient_is_refused(steering_context):
    from clipkit.exercises.steering import steering_loss_by_hand

    def detached(model, logits, text_features):
        return steering_loss_by_hand(model, logits, text_features).detach()

    found = verdict("steering_loss_by_hand", detached, steering_context)
    assert (found.kind, found.problem) == ("wrong", "no_gradient") and "backward pass cannot reach logits" in found.message


# ---------------------------------------------------------------------------------------------
# Wrong-typed answers: whatever comes back, the check names it, and the notebook goes on with the reference


def _apply_to_tensors(output, change):
    """`change` applied to every tensor of an output (one tensor or a tuple of them)."""
    if isinstance(output, tuple):
        return tuple(change(part) for part in output)
    return change(output)


def _first_tensor(output):
    return output[0] if isinstance(output, tuple) else output


def _returns_tensors(name):
    return name != "lr_multiplier"


# What a student may hand back instead of the right answer, as a change of the reference's output:
# (id, change, the problem the check must name, a phrase its message must hold).
WRONG_TYPES = {
    "none": (lambda out: None, "none", "None"),
    "python_float": (lambda out: float(_first_tensor(out).detach().flatten()[0]), "number", "Python float"),
    "numpy": (lambda out: _apply_to_tensors(out, lambda t: t.detach().cpu().numpy()), "numpy", "numpy"),
    "wrong_shape": (lambda out: _apply_to_tensors(out, lambda t: t.unsqueeze(0)), "shape", "shape"),
    "detached": (lambda out: _apply_to_tensors(out, lambda t: t.detach()), "no_gradient", "gradient"),
}
# lr_multiplier returns a Python number: its wrong types are the tensor kinds instead.
NUMBER_WRONG_TYPES = {
    "none": (lambda out: None, "none", "None"),
    "tensor": (lambda out: torch.tensor(out), "tensor", "torch.Tensor"),
    "numpy": (lambda out: np.array(out), "numpy", "numpy"),
    "list": (lambda out: [out], "type", "list"),
}


def wrong_types_for(name):
    kinds = dict(WRONG_TYPES if _returns_tensors(name) else NUMBER_WRONG_TYPES)
    if not EXERCISES[name].differentiable:
        kinds.pop("detached", None)  # nothing backpropagates: a detached answer is right (tested below)
    if len(EXERCISES[name].returns) > 1:  # a float where a tuple is expected: one value instead of two
        change, _, _ = kinds["python_float"]
        kinds["python_float"] = (change, "count", "must return 2 values")
    return kinds


def answer(name, change):
    reference = EXERCISES[name].reference

    def student(*args):
        return change(reference(*args))

    return student


def raises(*args):
    return 1 / 0


@pytest.mark.parametrize("name", NAMES)
def test_each_wrong_type_gets_its_own_message_naming_it(name, steering_context, capsys):
    kinds = wrong_types_for(name)
    found = {kind: verdict(name, answer(name, change), steering_context) for kind, (change, _, _) in kinds.items()}
    found["raises"] = verdict(name, raises, steering_context)
    for kind, (_, problem, phrase) in wrong_types_for(name).items():
        assert not found[kind].passed and found[kind].problem == problem, (kind, found[kind].message)
        assert phrase in found[kind].message, (kind, found[kind].message)
    assert found["raises"].problem == "raised"
    assert "ZeroDivisionError: division by zero at `return 1 / 0`" in found["raises"].message
    messages = [v.message for v in found.values()]
    assert len(set(messages)) == len(messages), "two different mistakes got the same message"
    assert len({v.problem for v in found.values()}) == len(found)
    for message in messages:  # one sentence, naming the function
        assert message.startswith((name, f"the gradient of {name}")) and not re.search(r"\.\s+[A-Z]", message), message

    for kind, (change, _, _) in wrong_types_for(name).items():
        go_on_with = exercises.check(name, answer(name, change), **context_for(name, steering_context))
        printed = capsys.readouterr().out
        assert go_on_with is EXERCISES[name].reference, kind
        assert printed.startswith("Not yet: ") and "Traceback" not in printed, printed


@pytest.mark.parametrize("name", [n for n in NAMES if not EXERCISES[n].differentiable])
def test_a_detached_answer_passes_where_nothing_backpropagates(name, steering_context):
    def detached(tensor):
        return tensor.detach() if isinstance(tensor, torch.Tensor) else tensor

    found = verdict(name, answer(name, lambda out: _apply_to_tensors(out, detached)), steering_context)
    assert found.passed, found.message


@pytest.mark.parametrize("name", [n for n in NAMES if _returns_tensors(n)])
def test_nan_a_wrong_dtype_and_a_wrong_device_are_named(name, steering_context):
    def floats(change):
        return lambda out: _apply_to_tensors(out, lambda t: change(t) if t.is_floating_point() else t)

    nan = verdict(name, answer(name, floats(lambda t: t + float("nan"))), steering_context)
    assert nan.problem == "not_finite" and "NaN" in nan.message, nan.message
    double = verdict(name, answer(name, floats(lambda t: t.double())), steering_context)
    assert double.problem == "dtype" and "torch.float64" in double.message and "torch.float32" in double.message, double.message
    elsewhere = verdict(name, answer(name, lambda out: _apply_to_tensors(out, lambda t: t.to("meta"))), steering_context)
    assert elsewhere.problem == "device" and "on meta, but the inputs are on cpu" in elsewhere.message, elsewhere.message


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # math.exp on a tensor, as a student might
def test_what_clip_loss_by_hand_says_to_each_wrong_type():
    """The issue's example: `.item()` at the end of a right loss used to be "Correct!", and the next cell failed."""
    from clipkit.exercises.contrastive_loss import clip_loss_by_hand

    def said(function):
        return judge(EXERCISES["clip_loss_by_hand"], function).message

    def with_item(image_features, text_features, logit_scale):
        return clip_loss_by_hand(image_features, text_features, logit_scale).item()

    def math_exp(image_features, text_features, logit_scale):
        logits = math.exp(logit_scale) * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        return (F.cross_entropy(logits, torch.arange(len(logits))) + F.cross_entropy(logits.T, torch.arange(len(logits)))) / 2

    def per_pair(image_features, text_features, logit_scale):
        logits = logit_scale.exp() * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        return -(torch.log_softmax(logits, dim=1).diagonal() + torch.log_softmax(logits, dim=0).diagonal()) / 2

    assert said(with_item).startswith("clip_loss_by_hand returned a Python float (")
    assert "drop the .item()" in said(with_item)
    assert "does not reach logit_scale" in said(math_exp)
    assert "shape [5]" in said(per_pair) and "0-d tensor" in said(per_pair) and ".mean()" in said(per_pair)


def test_returning_one_value_where_two_are_due_names_both():
    from clipkit.exercises.text_encoder import masked_attention

    found = judge(EXERCISES["masked_attention"], lambda q, k, v: masked_attention(q, k, v)[0])
    assert found.problem == "count" and "must return 2 values, `return mixed, weights`" in found.message
    assert "reshape" not in found.message  # the old message sent students to shape comments that do not exist
    swapped = judge(EXERCISES["masked_attention"], lambda q, k, v: masked_attention(q, k, v)[::-1])
    assert swapped.problem == "order" and "wrong order" in swapped.message
    from clipkit.exercises.search import top_k_search

    swapped = judge(EXERCISES["top_k_search"], lambda q, g, k: tuple(top_k_search(q, g, k))[::-1])
    assert swapped.problem == "order", swapped.message


class _Unsized:
    def __len__(self):
        raise RuntimeError("no length")


ODD_RETURNS = {
    "a string": lambda out: "done",
    "a dict": lambda out: {"loss": out},
    "a generator": lambda out: (x for x in [out]),
    "a nested tuple": lambda out: (out, (out,)),
    "an unsized object": lambda out: _Unsized(),
    "a complex tensor": lambda out: torch.ones(3, dtype=torch.complex64),
    "a sparse tensor": lambda out: torch.eye(3).to_sparse(),
    "a bool tensor": lambda out: torch.ones(3, dtype=torch.bool),
    "an empty tensor": lambda out: torch.empty(0),
    "the function itself": lambda out: answer,
    "a bool": lambda out: True,
    "a list of tensors": lambda out: [torch.ones(2), torch.ones(2)],
}


@pytest.mark.parametrize("odd", ODD_RETURNS)
@pytest.mark.parametrize("name", NAMES)
def test_the_check_cell_never_raises_whatever_comes_back(name, odd, steering_context, capsys):
    go_on_with = exercises.check(name, answer(name, ODD_RETURNS[odd]), **context_for(name, steering_context))
    printed = capsys.readouterr().out
    assert go_on_with is EXERCISES[name].reference
    assert printed.startswith("Not yet: ") and "Traceback" not in printed


def test_an_exit_or_an_error_in_the_students_code_is_reported_not_raised(capsys):
    def exits(captions):
        sys.exit(1)

    def indexes(captions):
        return torch.eye(len(captions))[len(captions)]

    assert judge(EXERCISES["multi_positive_targets"], exits).problem == "raised"
    found = judge(EXERCISES["multi_positive_targets"], indexes)
    assert found.problem == "raised" and found.message.startswith("multi_positive_targets raised IndexError: ")
    assert "at `return torch.eye(len(captions))[len(captions)]`" in found.message


def test_a_gradient_cut_inside_the_function_is_named():
    from clipkit.exercises.image_encoder import with_class_token

    def frozen_positions(patch_tokens, class_embedding, positional_embedding):
        return with_class_token(patch_tokens, class_embedding, positional_embedding.detach())

    found = judge(EXERCISES["with_class_token"], frozen_positions)
    assert found.problem == "blocked_gradient" and "does not reach positional_embedding" in found.message
    assert "patch_tokens" not in found.message


def test_a_differentiable_input_changed_in_place_is_named():
    def normalise_in_place(image_features, text_features, logit_scale):
        image_features /= image_features.norm(dim=-1, keepdim=True)
        text_features /= text_features.norm(dim=-1, keepdim=True)
        logits = logit_scale.exp() * image_features @ text_features.T
        return (F.cross_entropy(logits, torch.arange(len(logits))) + F.cross_entropy(logits.T, torch.arange(len(logits)))) / 2

    found = judge(EXERCISES["clip_loss_by_hand"], normalise_in_place)
    assert found.problem == "raised" and "x /= n" in found.message


# ---------------------------------------------------------------------------------------------
# The references agree with the library (and with a naive recomputation)


def test_references_agree_with_clipkit():
    from clipkit.exercises import contrastive_loss, image_encoder, search, text_encoder, training, zero_shot
    from clipkit.image_encoder import VisionTransformer
    from clipkit.loss import clip_loss, multi_positive_clip_loss
    from clipkit.config import VisionConfig
    from clipkit.search import EmbeddingIndex
    from clipkit.transformer import attention_weights
    from clipkit.schedule import warmup_cosine

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    mixed, weights = text_encoder.masked_attention(q, k, v)
    assert torch.allclose(weights, attention_weights(q, k, causal=True), atol=1e-6)
    assert torch.allclose(mixed, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)

    vit = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=8, layers=1, heads=2), 8)
    pixels = torch.randn(2, 3, 16, 16, generator=g)
    by_conv = vit.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, width, 4, 4] -> [B, 16, width]
    by_hand = image_encoder.patchify(pixels, 4) @ vit.patch_embedding.weight.view(8, -1).T
    assert torch.allclose(by_conv, by_hand, atol=1e-5)
    tokens = image_encoder.with_class_token(by_conv, vit.class_embedding, vit.positional_embedding)
    assert torch.allclose(vit.ln_pre(tokens), vit.tokens(pixels), atol=1e-5)

    images, texts = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    scale = torch.tensor(math.log(1 / 0.07))
    logits = scale.exp() * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    assert torch.allclose(contrastive_loss.clip_loss_by_hand(images, texts, scale), clip_loss(logits), atol=1e-6)

    assert all(abs(training.lr_multiplier(s, 10, 100, 0.1) - warmup_cosine(s, 10, 100, 0.1)) < 1e-12 for s in range(130))
    captions = ["a red star", "A red star", "a blue cross", "a red star"]
    targets = training.multi_positive_targets(captions)
    by_targets = (F.cross_entropy(logits[:4, :4], targets) + F.cross_entropy(logits[:4, :4].T, targets.T)) / 2
    assert torch.allclose(by_targets, multi_positive_clip_loss(logits[:4, :4], [c.lower() for c in captions]), atol=1e-6)

    prompts = torch.randn(3, 4, 5, generator=g)
    naive = torch.stack([F.normalize(sum(F.normalize(prompts[t, c], dim=0) for t in range(3)), dim=0) for c in range(4)])
    assert torch.allclose(zero_shot.classifier_weights(prompts), naive, atol=1e-6)

    gallery, queries = F.normalize(torch.randn(20, 5, generator=g), dim=-1), F.normalize(torch.randn(3, 5, generator=g), dim=-1)
    index = EmbeddingIndex(5)
    index.add(gallery)
    found = index.search(queries, k=4)
    scores, indices = search.top_k_search(queries, gallery, 4)
    assert torch.equal(indices, found.indices) and torch.allclose(scores, found.scores, atol=1e-6)


def test_the_steering_reference_is_one_minus_the_cosine_of_embed_images(steering_context):
    from clipkit.exercises.steering import steering_loss_by_hand
    from clipkit.interface import embed_images

    model, text = steering_context["model"], steering_context["text_features"]
    logits = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    expected = 1 - (embed_images(model, torch.sigmoid(logits)) @ text.T).item()
    with torch.no_grad():
        assert abs(steering_loss_by_hand(model, logits, text).item() - expected) < 1e-5


def test_a_numpy_scalar_is_a_number():
    from clipkit.exercises.training import lr_multiplier

    def with_numpy(step, warmup, total, floor):
        return np.float32(lr_multiplier(step, warmup, total, floor))

    assert judge(EXERCISES["lr_multiplier"], with_numpy).passed


@pytest.mark.gpu
def test_on_a_gpu_a_tensor_made_on_the_cpu_is_named(monkeypatch):
    """The inputs the notebook keeps on its device are on it in the check too, so CPU-made tensors show."""
    monkeypatch.delenv("CLIPKIT_DEVICE", raising=False)
    assert judge(EXERCISES["top_k_search"], EXERCISES["top_k_search"].reference).passed

    def scores_on_cpu(query_embeddings, gallery_embeddings, k):
        scores, indices = (query_embeddings @ gallery_embeddings.T).topk(k, dim=1)
        return scores.cpu(), indices

    found = judge(EXERCISES["top_k_search"], scores_on_cpu)
    assert found.problem == "device" and "on cpu, but the inputs are on cuda" in found.message, found.message

    def sum_on_cpu(prompt_embeddings):
        total = torch.zeros(prompt_embeddings.shape[1:])
        for template in F.normalize(prompt_embeddings, dim=-1):
            total = total + template
        return F.normalize(total, dim=-1)

    found = judge(EXERCISES["classifier_weights"], sum_on_cpu)
    assert found.problem == "raised" and "device=x.device" in found.message, found.message


@pytest.mark.parametrize("name", NAMES)
def test_the_worked_solution_in_the_notebook_passes_its_check(name, steering_context):
    """The notebooks run every check on their own solution cell: it must pass the generic demands too."""
    import json
    from pathlib import Path

    from clipkit.data.transforms import normalize_images, resize_images

    notebook = json.loads((Path(__file__).resolve().parents[1] / EXERCISES[name].solution_path).read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    (solution,) = [source for source in sources if f"def {name}(" in source and "# BEGIN SOLUTION" in source]
    namespace = {"math": math, "torch": torch, "F": F, "normalize_images": normalize_images, "resize_images": resize_images}
    exec(solution, namespace)  # noqa: S102 - the repository's own notebook
    found = verdict(name, namespace[name], steering_context)
    assert found.passed, found.message


def test_a_graph_that_fails_backward_is_named():
    from clipkit.exercises.image_encoder import patchify

    def edits_a_saved_result(pixels, patch_size):
        grown = torch.exp(patchify(pixels, patch_size))
        patches = grown.log()
        grown.add_(0.0)  # the same values, but exp's backward needs the result it saved
        return patches

    found = judge(EXERCISES["patchify"], edits_a_saved_result)
    assert found.problem == "backward" and "in-place" in found.message, found.message
