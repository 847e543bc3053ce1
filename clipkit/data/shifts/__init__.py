"""Distribution-shift suites: the shapes world's vocabulary drawn in ways training never shows.

- `draw`: an independent renderer (PIL outlines at supersampled resolution), backgrounds, blur, JPEG;
- `suites`: `ShiftSpec`, the named `SUITES` (plain data) and `draw_suite`, which returns one-object
  images labelled by `world.pairs` for the seen ("train") or held-out pairs.
"""

from clipkit.data.shifts.draw import OUTLINES, background, finish, shape_coverage
from clipkit.data.shifts.suites import SUITES, ShiftSample, ShiftSpec, draw_suite, draw_suites, shaded_palette, suite_spec

__all__ = [
    "OUTLINES",
    "SUITES",
    "ShiftSample",
    "ShiftSpec",
    "background",
    "draw_suite",
    "draw_suites",
    "finish",
    "shaded_palette",
    "shape_coverage",
    "suite_spec",
]
