"""Walk the live widget tree: touch targets (at least 48 dp each way, at least 8 dp apart:
none overlaps or touches another), text contrast (at least 7:1, WCAG 2.x AAA, against what the
text is painted on), and text that fits: a button's label on one line within its width, no
label's line broken inside a word."""

from __future__ import annotations

from typing import Any

from kivy.core.window import Window
from kivy.metrics import dp
from kivy.uix.behaviors import ButtonBehavior, ToggleButtonBehavior
from kivy.uix.label import Label
from kivy.uix.stencilview import StencilView
from kivy.uix.textinput import TextInput

from tests.app.driver import visible, walk

MIN_TOUCH_DP = 48
MIN_CONTRAST = 7.0
MIN_GAP_DP = 8
TOUCHABLE = (ButtonBehavior, ToggleButtonBehavior, TextInput)


def luminance(rgba: Any) -> float:
    """WCAG relative luminance of an sRGB colour (0..1 components)."""

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in list(rgba)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: Any, bg: Any) -> float:
    """WCAG contrast ratio of two colours."""
    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def background(w: Any) -> Any:
    """The colour a widget's text sits on: its own or the nearest ancestor's painted
    `bg_color` (opaque), else the window's clear colour."""
    node = w
    while node is not None and node is not Window:
        colour = getattr(node, "bg_color", None)
        if colour is not None and len(colour) == 4 and colour[3] > 0.5:
            return colour
        node = node.parent
    return Window.clearcolor


Rect = tuple[float, float, float, float]  # left, bottom, right, top in window coordinates


def shown_rect(w: Any) -> Rect | None:
    """The part of `w` on screen: its window rectangle clipped by every scrolling (stencil)
    ancestor and the window; None when nothing of it shows."""
    x, y = w.to_window(*w.pos)
    left, bottom, right, top = x, y, x + w.width, y + w.height
    node = w.parent
    while node is not None and node is not Window:
        if isinstance(node, StencilView):
            nx, ny = node.to_window(*node.pos)
            left, bottom = max(left, nx), max(bottom, ny)
            right, top = min(right, nx + node.width), min(top, ny + node.height)
        node = node.parent
    left, bottom = max(left, 0), max(bottom, 0)
    right, top = min(right, Window.width), min(top, Window.height)
    return (left, bottom, right, top) if right - left > 1 and top - bottom > 1 else None


def gap(a: Rect, b: Rect) -> float:
    """The distance between two rectangles (negative when they overlap)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def inside(w: Any, outer: Any) -> bool:
    """`w` is a descendant of `outer`."""
    node = w.parent
    while node is not None and node is not Window:
        if node is outer:
            return True
        node = node.parent
    return False


def _name(w: Any) -> str:
    return f"{type(w).__name__} {str(getattr(w, 'text', '') or getattr(w, 'title', ''))[:20]!r}"


def spacing_violations(targets: list[tuple[Any, Rect]]) -> list[str]:
    """Pairs of touch targets closer than 8 dp (overlapping or touching included); a target
    inside another (a button on a tappable row) is part of it, not beside it."""
    limit = dp(MIN_GAP_DP) - 0.5
    out = []
    for i, (a, ra) in enumerate(targets):
        for b, rb in targets[i + 1 :]:
            if inside(a, b) or inside(b, a):
                continue
            if (g := gap(ra, rb)) < limit:
                out.append(f"spacing {g / dp(1):.1f} dp: {_name(a)} / {_name(b)}")
    return out


def mid_word_breaks(w: Label) -> list[str]:
    """Where a label's wrapped lines split a word (two letters or digits of Latin script with
    no space between them; Chinese may break between any two characters)."""
    lines = getattr(w._label, "_cached_lines", None) or []
    text, at, out = str(w.text), 0, []
    for line in lines:
        piece = "".join(str(word.text) for word in line.words)
        if not piece:
            continue
        start = text.find(piece, at)
        if start < 0:  # markup or shortened text: nothing to compare with
            return out
        if line.line_wrap and 0 < start == at and _latin(text[start - 1]) and _latin(text[start]):
            out.append(f"{text[max(0, start - 12) : start]}|{text[start : start + 12]}")
        at = start + len(piece)
    return out


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def text_fit_violations(w: Label) -> list[str]:
    """A button's label on one line (each of its own lines) within the button; any label's
    lines broken only between words; a text too long for its line shortened at its end (…)."""
    out = [f"mid-word break {_name(w)}: {b!r}" for b in mid_word_breaks(w)]
    if w.shorten and w.shorten_from != "right":  # a name cut in its middle reads as another
        out.append(f"shortened in the {w.shorten_from} {_name(w)}")
    if isinstance(w, ButtonBehavior) and str(w.text).strip():
        room = (w.text_size[0] or w.width) if w.text_size else w.width
        lines = getattr(w._label, "_cached_lines", None) or []
        wrapped = any(line.line_wrap for line in lines)
        widest = max(w._label.get_extents(line)[0] for line in str(w.text).split("\n"))
        if wrapped or widest > min(room, w.width) + 0.5:
            out.append(f"text does not fit {_name(w)}: {widest:.0f} px in {room:.0f}")
    return out


def audit(root: Any = None) -> dict[str, Any]:
    """Check every visible widget; returns counts, the lowest contrast and violations."""
    out: dict[str, Any] = {"texts": 0, "targets": 0, "min_contrast": 99.0, "violations": []}
    limit = dp(MIN_TOUCH_DP) - 0.5
    targets: list[tuple[Any, Rect]] = []
    for w in walk(root):
        if not visible(w) or w.disabled:
            continue
        name = type(w).__name__
        if isinstance(w, Label) and str(w.text).strip():
            out["violations"] += text_fit_violations(w)
        if isinstance(w, TOUCHABLE):
            out["targets"] += 1
            if (rect := shown_rect(w)) is not None:
                targets.append((w, rect))
            if w.width < limit or w.height < limit:
                out["violations"].append(
                    f"touch {name} {getattr(w, 'text', '')[:20]!r} {w.width:.0f}x{w.height:.0f}"
                )
        if isinstance(w, TextInput):
            pairs = [(w.foreground_color, w.background_color, w.text or "")]
            if not w.text:
                pairs.append((w.hint_text_color, w.background_color, w.hint_text))
        elif isinstance(w, Label) and str(w.text).strip():
            pairs = [(w.color, background(w), w.text)]
        else:
            continue
        for fg, bg, text in pairs:
            if not str(text).strip():
                continue
            ratio = contrast(fg, bg)
            out["texts"] += 1
            out["min_contrast"] = min(out["min_contrast"], round(ratio, 2))
            if ratio < MIN_CONTRAST:
                out["violations"].append(f"contrast {ratio:.2f} {name} {str(text)[:20]!r}")
    out["violations"] += spacing_violations(targets)
    return out
