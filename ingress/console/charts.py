"""Charts for the console, drawn on the server as inline SVG (issue 14): no JavaScript library, nothing for the
Content-Security-Policy to refuse (no style attributes: sizes and colours are SVG attributes and classes of
usage.css). An SVG scales with its container through its viewBox; its text scales with it, so a page draws a
`Size` for a desk and one for a phone and lets CSS show the one that fits (text stays readable on both)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from markupsafe import Markup, escape



@dataclass(frozen=True)
class Size:
    """A drawing's viewBox and margins (room for the y labels at the left, the x labels below)."""

    width: int = 600
    height: int = 220
    left: int = 48
    right: int = 8
    top: int = 12
    bottom: int = 28
    label_every: int = 7   # every n-th x label, counted back from the last (today is always labelled)
    name: str = "wide"     # the SVG's class besides "chart": which CSS shows it


WIDE = Size()
NARROW = Size(width=340, height=200, left=40, label_every=10, name="narrow")


@dataclass(frozen=True)
class Bar:
    label: str      # the x label (a day)
    value: float
    tip: str        # what hovering (or a screen reader) tells about the bar


def nice_max(value: float) -> float:
    """The top of the y axis: 1, 2 or 5 times a power of ten, at least `value` (1 for an empty chart)."""
    if value <= 0:
        return 1.0
    scale = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * scale:
            return float(step * scale)
    return float(10 * scale)


def compact(value: float) -> str:
    """12,345 as 12.3k: axis labels stay narrow."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:g}"


def _grid(top: float, size: Size) -> list[str]:
    """Horizontal lines at 0, half and the top of the axis, labelled."""
    parts = []
    for share in (0.0, 0.5, 1.0):
        y = size.top + (size.height - size.top - size.bottom) * (1 - share)
        parts.append(f'<line class="grid" x1="{size.left}" y1="{y:.1f}" x2="{size.width - size.right}" '
                     f'y2="{y:.1f}"/><text class="axis" x="{size.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(compact(top * share))}</text>')
    return parts


def bar_chart(bars: Sequence[Bar], title: str, size: Size = WIDE) -> Markup:
    """A bar per item, the y axis from 0 to a round maximum, x labels every `size.label_every` bars."""
    top = nice_max(max((b.value for b in bars), default=0))
    plot_w, plot_h = size.width - size.left - size.right, size.height - size.top - size.bottom
    slot = plot_w / max(len(bars), 1)
    parts = [f'<svg class="chart {size.name}" viewBox="0 0 {size.width} {size.height}" width="100%" role="img" '
             f'preserveAspectRatio="xMidYMid meet" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             *_grid(top, size)]
    for i, bar in enumerate(bars):
        h = plot_h * bar.value / top
        x = size.left + i * slot + slot * 0.15
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{size.top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{h:.1f}" data-value="{bar.value:g}"><title>{escape(bar.tip)}</title></rect>')
        if (len(bars) - 1 - i) % size.label_every == 0:
            last = i == len(bars) - 1  # ends at its bar's right edge: never cut off by the drawing's edge
            parts.append(f'<text class="axis" x="{x + slot * (0.7 if last else 0.35):.1f}" y="{size.height - 8}" '
                         f'text-anchor="{"end" if last else "middle"}">{escape(bar.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
