"""Per-rule scores: how much more an image looks like what a rule flags than like ordinary things.

A softmax over the policy's rules is not a probability that an image breaks a rule: it sums to one
over the rules, so every image "breaks" some rule, and adding a rule lowers every other rule's
score. Here each rule is a small two-sided question of its own: its descriptions ("a gun", "a
knife", ...: a rule names several kinds of thing) against its counter-descriptions and the policy's
neutral set, each text a class of its own (averaged over the policy's templates). The rule's score
is the softmax share of its flagged side, the image being any of the things the rule describes:

    score_r(x) = sum over d in descriptions_r of softmax(scale * [x . t for t in descriptions_r + counter_r + neutral])[d]

so it lies in [0, 1] and depends on that rule's texts only; no other rule enters it. Scores are
float64: at a logit scale of 100, float32 rounds every share above 1 - 6e-8 to 1.0, so the images a
rule is surest of would tie at the top and a calibrated threshold would lose its resolution.

An image tower trained against a locked text tower on a few thousand names (LiT on emoji) learns to
pick its picture's name among them (97% top-1 on backgrounds it never saw) while its embeddings stay
at a cosine of ~0.4 from those names: the modality gap. Its cosine with a text it never trained
against ("an alcoholic drink") is then mostly noise. With a `vocabulary` (the names it was trained
on), each image is first read as the texts it resembles, a softmax-weighted mean of their embeddings,
and the rule is asked of that reading: the text tower's own knowledge of "beer mug" then reaches the
rule. The price: an image can only be described in the vocabulary's words.

    scorer = PolicyScorer(model, policy)        # embeds the policy's texts once
    scores = scorer.score_images(images)        # [N, R]
    decisions = scorer.decide(picture)          # [{"rule", "score", "threshold", "action", "flagged"}, ...]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipkit.moderation.policy import Policy, Rule


def _ensemble(model, texts: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """One unit embedding per text, each the renormalised mean over the templates: [len(texts), D]."""
    from clipkit.interface import embed_texts

    filled = [template.format(text) for text in texts for template in templates]
    embeddings = embed_texts(model, filled)  # [T * P, D], unit rows
    embeddings = embeddings.reshape(len(texts), len(templates), -1)  # [T * P, D] -> [T, P, D]
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def rule_classes(model, rule: Rule, policy: Policy) -> torch.Tensor:
    """A rule's question as unit rows [F + K, D]: its F descriptions first, then one row per
    counter-description and neutral text (neutral texts the rule names as counter come once)."""
    others = list(rule.counter) + [text for text in policy.neutral if text not in rule.counter]
    return _ensemble(model, list(rule.descriptions) + others, policy.templates)


def rule_scores(image_embeddings: torch.Tensor, classes: torch.Tensor, flagged: int, scale: float) -> torch.Tensor:
    """One rule's scores [N] from unit image rows [N, D] and its classes [F + K, D], the first `flagged`
    of them its descriptions. With nothing to weigh against (K = 0) the best description's cosine,
    mapped to [0, 1], is the score."""
    similarity = image_embeddings.cpu().double() @ classes.cpu().double().T  # [N, F + K], on the CPU: MPS has no float64
    if classes.shape[0] == flagged:
        return (similarity.max(dim=-1).values + 1) / 2
    return (scale * similarity).softmax(dim=-1)[:, :flagged].sum(dim=-1)


def read_as_vocabulary(image_embeddings: torch.Tensor, vocabulary: torch.Tensor, scale: float) -> torch.Tensor:
    """Unit image rows [N, D] read as the texts they resemble: the softmax-weighted (at `scale`) mean of
    the vocabulary's unit rows [V, D], renormalised: [N, D]."""
    weights = (scale * image_embeddings @ vocabulary.T).softmax(dim=-1)  # [N, V]
    return F.normalize(weights @ vocabulary, dim=-1)


class PolicyScorer:
    """A policy's texts embedded once for `model`; scores images rule by rule (a rule's score never
    depends on the others). With `vocabulary` (texts, e.g. the captions the model was trained on)
    each image is first read as those texts (`read_as_vocabulary`). Rebuild it when the model's
    weights or the policy change."""

    def __init__(self, model, policy: Policy, vocabulary: Sequence[str] | None = None):
        from clipkit.interface import embed_texts

        self.model = model
        self.policy = policy
        with model.evaluating():
            self.scale = float(model.logit_scale_exp())
            classes = [rule_classes(model, rule, policy) for rule in policy.rules]
            self.vocabulary = None if vocabulary is None else embed_texts(model, list(dict.fromkeys(vocabulary))).cpu().double()
        # Padded into one tensor so all rules score in one matrix product: [R, W, D], W the most classes of a rule
        self.sizes = torch.tensor([len(c) for c in classes])
        width = int(self.sizes.max())
        self.classes = torch.zeros(len(classes), width, classes[0].shape[-1], dtype=torch.float64)  # CPU: MPS has no float64
        for position, rule_rows in enumerate(classes):
            self.classes[position, : len(rule_rows)] = rule_rows
        columns = torch.arange(width)[None, :]
        self.padding = columns >= self.sizes[:, None]  # [R, W], True where no class
        self.flagged_count = torch.tensor([len(rule.descriptions) for rule in policy.rules])
        self.flagged = columns < self.flagged_count[:, None]  # [R, W], True at a rule's descriptions

    @property
    def names(self) -> list[str]:
        return self.policy.names

    @property
    def thresholds(self) -> torch.Tensor:
        return torch.tensor([rule.threshold for rule in self.policy.rules])

    def score_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Scores [N, R] in [0, 1] (float64) of unit image embeddings [N, D]."""
        image_embeddings = image_embeddings.detach().cpu().double()
        if self.vocabulary is not None:
            image_embeddings = read_as_vocabulary(image_embeddings, self.vocabulary, self.scale)
        similarity = torch.einsum("nd,rkd->nrk", image_embeddings, self.classes)  # [N, R, W]
        logits = (self.scale * similarity).masked_fill(self.padding, float("-inf"))
        scores = (logits.softmax(dim=-1) * self.flagged).sum(dim=-1)  # [N, R]
        alone = self.sizes == self.flagged_count  # nothing to weigh against: best cosine in [0, 1]
        if alone.any():
            best = similarity.masked_fill(~self.flagged, -1.0).max(dim=-1).values  # [N, R]
            scores[:, alone] = (best[:, alone] + 1) / 2
        return scores

    def score_images(self, images, batch_size: int = 256) -> torch.Tensor:
        """Scores [N, R] of images (PIL list, uint8 [N, 3, H, W] or floats in [0, 1])."""
        from clipkit.interface import embed_images

        return self.score_embeddings(embed_images(self.model, images, batch_size=batch_size))

    def decide(self, image) -> list[dict]:
        """One image's verdict per rule: score, threshold, action and whether it fires."""
        scores = self.score_images([image] if not isinstance(image, (list, torch.Tensor)) else image)[0]
        return [
            {"rule": rule.name, "score": float(score), "threshold": float(rule.threshold), "action": rule.action,
             "flagged": bool(score >= rule.threshold)}
            for rule, score in zip(self.policy.rules, scores.tolist())
        ]


def score_images(model, policy: Policy, images, batch_size: int = 256) -> torch.Tensor:
    """Scores [N, R] of images under each rule of `policy` (see PolicyScorer)."""
    return PolicyScorer(model, policy).score_images(images, batch_size=batch_size)


def flags(scores: torch.Tensor, policy: Policy) -> torch.Tensor:
    """Which rules fire: bool [N, R], score >= each rule's threshold."""
    thresholds = torch.tensor([rule.threshold for rule in policy.rules], dtype=scores.dtype)
    return scores >= thresholds
