"""Walk the live widget tree: touch targets (at least 48 dp each way) and text contrast (at
least 7:1, WCAG 2.x AAA, against what the text is painted on)."""

from __future__ import annotations

from typing import Any

from kivy.core.window import Window
from kivy.metrics import dp
from kivy.uix.behaviors import ButtonBehavior, ToggleButtonBehavior
from kivy.uix.label import Label
from kivy.uix.textinput import TextInput

from tests.app.driver import visible, walk

MIN_TOUCH_DP = 48
MIN_CONTRAST = 7.0
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


def audit(root: Any = None) -> dict[str, Any]:
    """Check every visible widget; returns counts, the lowest contrast and violations."""
    out: dict[str, Any] = {"texts": 0, "targets": 0, "min_contrast": 99.0, "violations": []}
    limit = dp(MIN_TOUCH_DP) - 0.5
    for w in walk(root):
        if not visible(w) or w.disabled:
            continue
        name = type(w).__name__
        if isinstance(w, TOUCHABLE):
            out["targets"] += 1
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
    return out
