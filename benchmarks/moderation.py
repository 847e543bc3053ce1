"""Content moderation on emoji with LiT: calibrated precision and recall per rule, the skin-tone gap, throughput.

    python benchmarks/moderation.py            # LiT trained 2000 steps on emoji (as notebook 11), ~4 minutes
    python benchmarks/moderation.py --quick    # 5 steps, one background per split: seconds, figures meaningless

A LiT model (frozen MiniLM text tower, a small CNN image tower) learns every emoji and every
skin-toned variant under its name on four background colours (`emoji_training_pairs`), then scores
the emoji policy of `clipkit.moderation.worlds` (weapons, alcohol and tobacco, people). Every emoji is
rendered on four backgrounds training never used (white, light grey, pale blue, pale green) and its
renders are split at random, half to validation and half to test (`split_renders`), so the two sets
are exchangeable, the condition under which a calibrated threshold keeps its promise. Thresholds are
calibrated for precision >= 0.9 on validation, then measured on test. A second table calibrates on
the white and grey renders and tests on the blue and green ones: the same emoji under a change of
background. Each test precision comes with the number of images the rule flagged and Wilson's
95% interval: 7-10 emoji per rule to flag make these figures noisy, and a
precision measured on 4 flagged images can neither meet nor miss a target. The audit compares
false-positive rates between the six skin tones, before and after notebook 11's mitigation
(counter-descriptions, and calibration data holding every skin tone rather than only the default
yellow), at the precision-calibrated thresholds and, because a rule that never fires has no gap,
also at thresholds calibrated for recall 0.5. Each setting is measured twice more with every image
read as the 2,010 emoji names LiT was trained on (`PolicyScorer(..., vocabulary=names)`, rows read_*).
Throughput: images scored per second (image tower + every rule, and with the reading), the
policy's texts embedded once beforehand. Prints a table, then one JSON line.

Reading the images as the training names is what brings alcohol and tobacco to its target. The
image tower names an emoji right 97-98% of the time on backgrounds it never saw (2000 steps), but
its embeddings sit at a cosine of ~0.36 from those names: a rule's texts, which it never trained
against, meet mostly noise. Scored through the names instead, the rules get the text tower's
ranking, whose ceiling (each emoji's name embedding scored as if it were the image) is recall 0.90
for alcohol and 0.86 for weapons at precision 0.9. Test precision / recall (flagged) at the
precision-0.9 thresholds, before the mitigation, 2000 steps, 1 thread beside another job:
    seed   weapons: cosine / read          alcohol & tobacco: cosine / read     people: cosine / read_after
    0      1.00 / 0.43 (6)  1.00 / 0.86 (12)   1.00 / 0.10 (2)   0.90 / 0.90 (20)    0.93 / 0.08 (85)  0.90 / 0.19 (224)
    1      never fires      0.92 / 0.86 (13)   0.60 / 0.15 (5)   0.88 / 0.75 (17)    0.92 / 0.06 (64)  0.90 / 0.20 (227)
    2      1.00 / 0.14 (2)  1.00 / 0.86 (12)   never fires      0.89 / 0.80 (18)    0.94 / 0.06 (65)  0.90 / 0.19 (223)
Read through the names, people never fires before the mitigation (names such as "womans hat" sit
among the people), and fires at 0.90 after it; alcohol after the mitigation reads 0.79-0.86. The
reading only works once the tower names emoji reliably: at 1000 steps, alcohol read 0.80 on 5
flagged. Scores are float64: at these scales float32 rounded the surest shares to 1.0 and tied them.

What the training recipe is worth (one thread beside another job, seed 0; test precision / recall
at the precision-0.9 thresholds, before the mitigation):
    recipe                                         weapons      alcohol & tobacco  people
    plain emoji on white, 300 steps                never fires  never fires        0.83 / 0.01
    + every skin tone, 5 backgrounds, 1000 steps   0.86 / 0.43  0.78 / 0.35        0.98 / 0.15
    same, 2000 steps                               1.00 / 0.14  1.00 / 0.20        0.94 / 0.04
    same with augmentation, 1000 steps             1.00 / 0.07  never fires        0.96 / 0.04
Exchangeable halves do not rescue alcohol and tobacco (1 thread beside other jobs, one run: test
precision 0.42 [0.19-0.68] on 12 flagged; calibrated on white and tested on colour, 0.50 on 4): what
keeps it from 0.9 is the model and the rule (10 emoji to flag, at 32 px), not the change of background.
What it confuses (seed 0, 1000 steps): 6 of its 7 test false positives are skin-toned variants,
handshakes and nail polish, which the default-tone calibration set never shows. Calibrated on every
tone (the mitigation), toned handshakes outscore most drinks, and the rule never fires, with more
counter-descriptions ("a handshake", "a soft drink") too. Descriptions nearer the emoji's names ("a beer
mug", "a smoking symbol") reach 0.60 on 10 flagged; after 2000 steps, 0.67 on 3 and 1.00 on 4 flagged:
too few to meet or miss a target. A larger image tower does not help either (1000 steps, seed 0, 1
thread beside other jobs): with a full-resolution stem (its first stage sees 32x32, not 16x16)
neither weapons nor alcohol flags a single test image; 48 px pictures give alcohol 0.75 on 4 flagged,
and weapons never fires. A rule whose false alarms are skin-toned hands is the audit's point
made by the rule itself.
Longer training pushes the scores towards 1 (a logit scale of 100: thresholds of 1 - 1e-9), which
float64 scores keep apart. The default trains 2000 steps on backgrounds that neither calibration
nor test uses, so that validation pictures are as new to the model as test ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from clipkit import seed_everything
from clipkit.data.emoji import SKIN_TONES
from clipkit.moderation import PolicyScorer, audit, calibrate, confusion, largest_gap, wilson_interval
from clipkit.moderation.worlds import (
    EMOJI_COUNTERS, EMOJI_POLICY, TEST_BACKGROUNDS, TRAINING_BACKGROUNDS, VALIDATION_BACKGROUNDS, emoji_moderation_set,
    emoji_training_pairs, split_renders, with_counters,
)
from clipkit.moderation.worlds import concat

TARGET_PRECISION = 0.9
# Where precision 0.9 is out of reach a rule never fires and has no error rates to compare; the audit is
# repeated at thresholds calibrated for this recall, where every rule fires.
AUDIT_RECALL = 0.5


def train_lit(steps: int, batch_size: int, seed: int, backgrounds=TRAINING_BACKGROUNDS):
    """LiT on every emoji's and every skin-toned variant's name, as notebook 11 trains it."""
    from clipkit.lit import LiTModel
    from clipkit.train import TrainConfig, train

    seed_everything(seed)
    pairs = emoji_training_pairs(32, backgrounds)
    model = LiTModel()
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=2e-3, weight_decay=0.05, warmup_steps=max(1, steps // 10),
                         augment=False, log_every=max(1, steps // 10), seed=seed)
    history = train(model, pairs, config, progress=False)
    return model.eval(), history["loss"][-1], pairs


def shown(threshold: float) -> str:
    """A threshold as the table shows it: how far below 1 when it is within 1e-3 of it ("1": out of reach)."""
    if threshold >= 1.0:
        return "1"
    return f"1-{1 - threshold:.0e}" if threshold > 0.999 else f"{threshold:.3f}"


def evaluate(model, policy, calibration, test, tones_only: bool, vocabulary=None):
    """Calibrate on `calibration` (only default-tone and tone-less emoji when `tones_only`, else every
    tone), then per-rule test precision/recall and the audit across skin tones, at precision 0.9 and at
    recall 0.5; with `vocabulary`, each image is read as those texts first (PolicyScorer)."""
    scorer = PolicyScorer(model, policy, vocabulary=vocabulary)
    chosen = calibration.without_tones() if tones_only else calibration
    chosen_scores, chosen_labels = scorer.score_embeddings(chosen.embeddings), chosen.label_matrix(policy)
    calibrated, points = calibrate(policy, chosen_scores, chosen_labels, precision=TARGET_PRECISION)
    by_recall, _ = calibrate(policy, chosen_scores, chosen_labels, precision=None, recall=AUDIT_RECALL)
    test_scores, test_labels = scorer.score_embeddings(test.embeddings), test.label_matrix(policy)
    toned = torch.tensor([g in SKIN_TONES for g in test.groups])
    groups = [g for g in test.groups if g in SKIN_TONES]
    per_group = audit(calibrated, test_scores[toned], test_labels[toned], groups)
    per_group_recall = audit(by_recall, test_scores[toned], test_labels[toned], groups)
    rows = {}
    for r, (rule, point) in enumerate(zip(calibrated.rules, points)):
        at = confusion(test_scores[:, r], test_labels[:, r], rule.threshold)
        gap = largest_gap(per_group[rule.name], "fpr")
        gap_recall = largest_gap(per_group_recall[rule.name], "fpr")
        flagged = at["tp"] + at["fp"]
        rows[rule.name] = {"threshold": rule.threshold, "validation_precision": point.confusion["precision"],
                           "precision": at["precision"], "recall": at["recall"], "flagged": flagged,
                           "precision_interval": wilson_interval(at["tp"], flagged), "fpr_gap": gap["gap"],
                           "fpr_gap_recall": gap_recall["gap"], "worst": gap_recall["highest"], "best": gap_recall["lowest"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds: few steps, one background per split")
    parser.add_argument("--steps", type=int, default=None, help="LiT training steps (default 2000; 5 with --quick)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = args.steps or (5 if args.quick else 2000)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    started = time.perf_counter()
    # --quick trains on validation's own renders: nothing extra to draw, and its figures mean nothing anyway
    backgrounds = VALIDATION_BACKGROUNDS[:1] if args.quick else TRAINING_BACKGROUNDS
    model, final_loss, pairs = train_lit(steps, args.batch_size, args.seed, backgrounds)
    train_images, names = len(pairs), list(dict.fromkeys(pairs.captions))
    train_seconds = time.perf_counter() - started
    # embedded once: every policy and both protocols reuse the embeddings
    on_white = emoji_moderation_set(32, VALIDATION_BACKGROUNDS[:1] if args.quick else VALIDATION_BACKGROUNDS).embedded(model)
    on_colour = emoji_moderation_set(32, TEST_BACKGROUNDS[:1] if args.quick else TEST_BACKGROUNDS).embedded(model)
    validation, test = split_renders(concat([on_white, on_colour]), seed=args.seed)  # exchangeable halves

    before = evaluate(model, EMOJI_POLICY, validation, test, tones_only=True)
    after = evaluate(model, with_counters(EMOJI_POLICY, EMOJI_COUNTERS), validation, test, tones_only=False)
    # the same two, each image read as the emoji names the model was trained on
    read_before = evaluate(model, EMOJI_POLICY, validation, test, tones_only=True, vocabulary=names)
    read_after = evaluate(model, with_counters(EMOJI_POLICY, EMOJI_COUNTERS), validation, test, tones_only=False, vocabulary=names)
    settings = {"before": before, "after": after, "read_before": read_before, "read_after": read_after}
    shifted = evaluate(model, EMOJI_POLICY, on_white, on_colour, tones_only=True)  # calibrated on white, tested on colour

    scorer = PolicyScorer(model, EMOJI_POLICY)
    images = test.images[: 512 if args.quick else 4096]
    scorer.score_images(images[:64])  # warm-up
    tic = time.perf_counter()
    scorer.score_images(images)
    images_per_second = len(images) / (time.perf_counter() - tic)
    reader = PolicyScorer(model, EMOJI_POLICY, vocabulary=names)
    tic = time.perf_counter()
    reader.score_images(images)
    images_per_second_read = len(images) / (time.perf_counter() - tic)

    print(f"LiT on emoji: {steps} steps on {train_images} pictures in {train_seconds:.0f} s (final loss {final_loss:.2f}); "
          f"validation {len(validation)} images, test {len(test)} (each emoji's renders on 4 backgrounds split in halves at random)")
    print(f"thresholds calibrated for precision >= {TARGET_PRECISION} on validation (1: out of reach, the rule never fires; 1-5e-09: that far below 1); test figures below")
    print(f"(FPR gap: largest difference between skin tones; 'at R{AUDIT_RECALL}': thresholds calibrated for recall {AUDIT_RECALL};")
    print(f" read_*: each image read as the {len(names)} emoji names LiT was trained on before the rule is asked, PolicyScorer's vocabulary)")
    print(f"{'rule':<22}{'setting':<12}{'thresh':>8}{'val P':>8}{'test P':>8}{'95% interval':>15}{'flagged':>8}{'test R':>8}"
          f"{'FPR gap':>9}{'at R' + str(AUDIT_RECALL):>9}  worst / best tone there")
    for name in before:
        for label, rows in settings.items():
            row = rows[name]
            low, high = row["precision_interval"]
            print(f"{name:<22}{label:<12}{shown(row['threshold']):>8}{row['validation_precision']:>8.2f}{row['precision']:>8.2f}"
                  f"{f'{low:.2f}-{high:.2f}':>15}{row['flagged']:>8}{row['recall']:>8.2f}{row['fpr_gap']:>9.3f}{row['fpr_gap_recall']:>9.3f}  {row['worst']} / {row['best']}")
    print(f"under a change of background: calibrated on {len(on_white)} renders on white and light grey, "
          f"tested on {len(on_colour)} on pale blue and pale green (before the mitigation)")
    print(f"{'rule':<22}{'thresh':>8}{'test P':>8}{'95% interval':>15}{'flagged':>8}{'test R':>8}")
    for name, row in shifted.items():
        low, high = row["precision_interval"]
        print(f"{name:<22}{shown(row['threshold']):>8}{row['precision']:>8.2f}{f'{low:.2f}-{high:.2f}':>15}{row['flagged']:>8}{row['recall']:>8.2f}")
    print(f"scoring: {images_per_second:,.0f} images/s on {torch.get_num_threads()} CPU thread(s), {len(EMOJI_POLICY.rules)} rules; "
          f"read as {len(names)} names first: {images_per_second_read:,.0f} images/s")

    def worst(rows, key):
        gaps = [row[key] for row in rows.values() if not math.isnan(row[key])]
        return max(gaps) if gaps else float("nan")

    figures = {"lit_steps": steps, "train_seconds": round(train_seconds, 1), "train_images": train_images, "target_precision": TARGET_PRECISION,
               "validation_images": len(validation), "test_images": len(test)}
    for name in before:
        key = name.replace(" ", "_")
        for label, rows in settings.items():
            figures[f"{key}_test_precision_{label}"] = rows[name]["precision"]
            figures[f"{key}_test_recall_{label}"] = rows[name]["recall"]
            figures[f"{key}_test_flagged_images_{label}"] = rows[name]["flagged"]
            figures[f"{key}_test_precision_low95_{label}"], figures[f"{key}_test_precision_high95_{label}"] = rows[name]["precision_interval"]
            figures[f"{key}_fpr_gap_{label}"] = rows[name]["fpr_gap"]
            figures[f"{key}_fpr_gap_at_recall_{label}"] = rows[name]["fpr_gap_recall"]
        figures[f"{key}_shifted_test_precision_before"] = shifted[name]["precision"]
        figures[f"{key}_shifted_test_recall_before"] = shifted[name]["recall"]
        figures[f"{key}_shifted_test_flagged_images_before"] = shifted[name]["flagged"]
    for label, rows in settings.items():
        figures[f"largest_skin_tone_fpr_gap_{label}"] = worst(rows, "fpr_gap")
        figures[f"largest_skin_tone_fpr_gap_at_recall_{label}"] = worst(rows, "fpr_gap_recall")
    figures["audit_recall"] = AUDIT_RECALL
    figures["images_per_second"] = round(images_per_second, 1)
    figures["images_per_second_read"] = round(images_per_second_read, 1)
    print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
