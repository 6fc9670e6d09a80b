"""One colour per backend on every chart, and the marks for generator-bound results.

Okabe–Ito colours (distinguishable with the common colour-vision deficiencies); the two JWT
backends share a purple family so that "sessions vs JWT" reads at a glance.
"""

from __future__ import annotations

from matplotlib.colors import to_hex, to_rgb
from matplotlib.patches import Patch
from matplotlib.typing import LineStyleType

BACKEND_COLOURS: dict[str, str] = {
    "session-file": "#E69F00",
    "session-postgres": "#0072B2",
    "session-redis": "#D55E00",
    "session-memcached": "#009E73",
    "jwt": "#CC79A7",
    "jwt-denylist": "#6A3D9A",
}
UNKNOWN_COLOUR = "#777777"
# Configurations of one backend share its colour; these tell them apart on line charts.
LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
GENERATOR_HATCH = "////"
GENERATOR_MARK = "†"
GENERATOR_NOTE = (
    f"{GENERATOR_MARK} / hatched: load generator above 80% CPU; "
    "latency there is partly the generator's"
)


def colour(backend: str) -> str:
    """Return the fixed colour of `backend` (grey for one this palette does not know)."""
    return BACKEND_COLOURS.get(backend, UNKNOWN_COLOUR)


def tint(hex_colour: str, amount: float = 0.55) -> str:
    """Return `hex_colour` mixed with white by `amount` (0 = unchanged, 1 = white)."""
    r, g, b = to_rgb(hex_colour)
    return to_hex((r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount))


def style_for(index: int) -> tuple[LineStyleType, str]:
    """Return (linestyle, marker) for the `index`-th configuration of one backend."""
    return LINESTYLES[index % len(LINESTYLES)], MARKERS[index % len(MARKERS)]


def backend_legend(backends: list[str]) -> list[Patch]:
    """Return legend handles, one colour swatch per backend in `backends` (order kept)."""
    seen = list(dict.fromkeys(backends))
    return [Patch(facecolor=colour(b), edgecolor="none", label=b) for b in seen]


def generator_legend() -> Patch:
    """Return the legend handle explaining the generator-bound hatch."""
    return Patch(
        facecolor="white", edgecolor="#444444", hatch=GENERATOR_HATCH, label=GENERATOR_NOTE
    )


def label(config: str, generator_bound: bool) -> str:
    """Return a configuration's axis label, marked when its load generator was saturated."""
    return f"{config} {GENERATOR_MARK}" if generator_bound else config
