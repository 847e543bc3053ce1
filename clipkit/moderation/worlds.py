"""Worlds whose right answers are known: the shapes world (a toy policy) and emoji (skin tone as the group).

The shapes world's policy flags red shapes and stars: every sample's colour and shape are known, so
its labels are exact (`shapes_moderation_set`), and every word is in a shapes model's vocabulary.

On emoji, a policy flags weapons, alcohol and tobacco, and people (to blur).

The notebook (11) and the benchmark share these, so the figures the benchmark prints are the ones
the notebook discusses. Labels come from `clipkit.data.emoji` (hand-chosen label sets by Unicode
name, and "people": whole human figures); every emoji that takes a skin-tone modifier appears in all
six tones, so error rates can be compared tone by tone. Validation and test sets are the same emoji
rendered on different background colours: a held-out rendering, not held-out emoji (each rule has
only 7-10 emoji to flag, too few to split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clipkit.moderation.policy import Policy, Rule

# Ordinary things every rule is weighed against. No "a person" here: "people" is a rule of its own.
EMOJI_NEUTRAL = ("an object", "a symbol", "a face", "an animal", "a plant", "food", "a building", "a vehicle", "a tool")
EMOJI_POLICY = Policy(rules=(
    Rule("weapons", ("a weapon", "a gun", "a pistol", "a knife", "a dagger", "a sword", "a bomb", "a bow and arrow", "an axe"),
         action="block"),
    Rule("alcohol and tobacco", ("an alcoholic drink", "a glass of beer", "a glass of wine", "a cocktail",
                                 "a bottle of champagne", "a bottle of sake", "a glass of whisky", "a cigarette"), action="review"),
    Rule("people", ("a person", "a man", "a woman", "a child", "a baby"), action="blur"),
), neutral=EMOJI_NEUTRAL)
# The notebook's mitigation: counter-descriptions naming what the rules confuse with their targets.
EMOJI_COUNTERS = {
    "weapons": ("a hand", "a person", "a hand gesture", "a kitchen utensil"),
    "alcohol and tobacco": ("a hand", "a person", "a cup of coffee", "a glass of milk"),
    "people": ("a hand", "a hand gesture", "a body part"),
}
_NOT_RED = ("blue", "green", "yellow")
SHAPES_POLICY = Policy(rules=(
    Rule("red shapes", ("a red circle", "a red square", "a red triangle", "a red star", "a red heart"), action="block"),
    Rule("stars", ("a red star", "a blue star", "a green star", "a yellow star"), action="review"),
), neutral=tuple(f"a {colour} {shape}" for colour in _NOT_RED for shape in ("circle", "square", "heart", "hexagon")))
VALIDATION_BACKGROUNDS = ((255, 255, 255), (232, 232, 232))  # calibration renders on these
TEST_BACKGROUNDS = ((226, 236, 252), (236, 250, 236))  # held-out renders: pale blue, pale green
# LiT learns the emoji on backgrounds that neither calibration nor test uses (cream, pink, peach,
# grey): a threshold set on pictures the model was trained on is set on over-confident scores, and
# its precision falls on new pictures (trained on white, calibrated on white: alcohol's test
# precision 0.78 for a target of 0.9).
TRAINING_BACKGROUNDS = ((250, 244, 222), (248, 228, 236), (252, 232, 218), (214, 214, 214))
NO_TONE = "none"  # the group of emoji that take no skin tone (objects, animals, symbols)


def with_counters(policy: Policy, counters: dict[str, Sequence[str]]) -> Policy:
    """The policy with these counter-descriptions added to the named rules."""
    from dataclasses import replace

    rules = tuple(replace(rule, counter=tuple(dict.fromkeys(rule.counter + tuple(counters.get(rule.name, ())))))
                  for rule in policy.rules)
    return replace(policy, rules=rules)


@dataclass
class ModerationSet:
    """Images with a yes/no answer per label and a group per image."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    captions: list[str]  # what each image is (the emoji's name, with its skin tone)
    labels: dict[str, torch.Tensor]  # label name -> bool [N]: should a rule of that name fire?
    groups: list[str]  # the group attribute of each image (a skin tone, or NO_TONE)
    embeddings: torch.Tensor | None = None  # unit image embeddings [N, D] of one model, once embedded (embedded())

    def __len__(self) -> int:
        return len(self.images)

    def label_matrix(self, policy: Policy) -> torch.Tensor:
        """bool [N, R]: the answers for each rule of `policy`, matched by rule name."""
        missing = [name for name in policy.names if name not in self.labels]
        if missing:
            raise KeyError(f"no labels for rules {missing}: this set has labels {sorted(self.labels)}")
        return torch.stack([self.labels[name] for name in policy.names], dim=1)

    def subset(self, keep) -> ModerationSet:
        index = torch.as_tensor(keep)
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.long()
        positions = index.tolist()
        return ModerationSet(self.images[index], [self.captions[i] for i in positions],
                             {name: value[index] for name, value in self.labels.items()}, [self.groups[i] for i in positions],
                             None if self.embeddings is None else self.embeddings[index])

    def embedded(self, model, batch_size: int = 256) -> ModerationSet:
        """This set with `model`'s image embeddings attached: every policy scored on it reuses them."""
        from dataclasses import replace

        from clipkit.interface import embed_images

        return replace(self, embeddings=embed_images(model, self.images, batch_size=batch_size).cpu())

    def without_tones(self) -> ModerationSet:
        """Only default-tone and tone-less emoji: a calibration set as an emoji picker's first page shows it."""
        return self.subset(torch.tensor([group in ("default", NO_TONE) for group in self.groups]))


def concat(sets: Sequence[ModerationSet]) -> ModerationSet:
    """One set of all of these, in order; embeddings kept when every set has them."""
    embedded = all(s.embeddings is not None for s in sets)
    return ModerationSet(torch.cat([s.images for s in sets]), [c for s in sets for c in s.captions],
                         {name: torch.cat([s.labels[name] for s in sets]) for name in sets[0].labels},
                         [g for s in sets for g in s.groups], torch.cat([s.embeddings for s in sets]) if embedded else None)


def split_renders(data: ModerationSet, seed: int = 0) -> tuple[ModerationSet, ModerationSet]:
    """Validation and test sets that are exchangeable: each emoji's renders (one per background) shuffled,
    half of them to each side (the odd one out alternates), so both sides hold every emoji on a random
    half of the backgrounds.

    A threshold calibrated on one side keeps its precision on the other only when both are drawn from
    the same distribution; calibrating on white and testing on pale blue measures a change of
    renderer as well (alcohol and tobacco: precision 0.38 at a 0.9 calibration, benchmarks/moderation.py)."""
    generator = torch.Generator().manual_seed(seed)
    renders: dict[str, list[int]] = {}
    for index, caption in enumerate(data.captions):
        renders.setdefault(caption, []).append(index)
    validation, test = [], []
    for number, indices in enumerate(renders.values()):
        shuffled = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        half = (len(shuffled) + number % 2) // 2
        validation += shuffled[:half]
        test += shuffled[half:]
    return data.subset(sorted(validation)), data.subset(sorted(test))


def shapes_moderation_set(world, size: int, seed: int = 0, split: str = "train") -> ModerationSet:
    """`size` shapes-world samples labelled exactly for SHAPES_POLICY from their scenes (does any object
    have that colour, that shape?); the group is the first object's size ("small" or "large")."""
    data = world.sample(size, seed=seed, split=split)
    pairs = [scene.pairs for scene in data.scenes]
    labels = {"red shapes": torch.tensor([any(colour == "red" for colour, _ in p) for p in pairs]),
              "stars": torch.tensor([any(shape == "star" for _, shape in p) for p in pairs])}
    return ModerationSet(data.images, list(data.captions), labels, [scene.objects[0].size for scene in data.scenes])


def emoji_training_pairs(image_size: int = 32, backgrounds: Sequence[tuple[int, int, int]] = TRAINING_BACKGROUNDS,
                         font_path=None):
    """What a moderation model learns emoji from: every emoji and every skin-toned variant under its
    name ("thumbs up sign: dark skin tone"), on each background; one label per distinct name, so
    copies of an emoji on other backgrounds are positives of each other, not negatives.

    The skin-toned variants are there because a model that never saw a dark-toned hand named has
    only the default yellow to go by: trained on plain emoji alone, people's recall at precision
    0.9 was 0.01 (benchmarks/moderation.py)."""
    from clipkit.data import CaptionedImages
    from clipkit.data.emoji import load_emoji, load_skin_tone_emoji

    images, captions = [], []
    for background in backgrounds:
        for part in (load_emoji(image_size, font_path=font_path, background=background),
                     load_skin_tone_emoji(image_size, font_path=font_path, background=background)):
            images.append(part.images)
            captions += part.captions
    label_of = {caption: label for label, caption in enumerate(dict.fromkeys(captions))}
    return CaptionedImages(torch.cat(images), captions, labels=torch.tensor([label_of[c] for c in captions]))


def emoji_moderation_set(image_size: int = 32, backgrounds: Sequence[tuple[int, int, int]] = VALIDATION_BACKGROUNDS,
                         font_path=None) -> ModerationSet:
    """Every emoji once and every skin-toned emoji in all six tones, on each background, labelled."""
    from clipkit.data.emoji import load_emoji, load_skin_tone_emoji, moderation_labels

    parts = []
    for background in backgrounds:
        plain = load_emoji(image_size, font_path=font_path, background=background)
        toned = load_skin_tone_emoji(image_size, font_path=font_path, background=background)
        toned_bases = set(toned.bases)
        # the default-tone copies live in the toned set; drop them here so no image appears twice
        plain = plain.subset([i for i, caption in enumerate(plain.captions) if caption not in toned_bases])
        for images, captions, groups in ((plain.images, plain.captions, [NO_TONE] * len(plain)),
                                         (toned.images, toned.captions, toned.tones)):
            parts.append(ModerationSet(images, list(captions), moderation_labels(captions), list(groups)))
    return concat(parts)
