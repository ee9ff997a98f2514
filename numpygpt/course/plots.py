"""The course's plots: one look for every notebook, and text a font can draw.

    import matplotlib.pyplot as plt
    from numpygpt.course import plots
    plots.style()                        # once, in a notebook's first cell
    ax.set_xticklabels([plots.drawable(t) for t in tokens])

`style()` sets sizes that read on a laptop screen and on the course site (whose pages show a
figure at most 760 px wide): tick labels of 10 pt, axis labels of 11 pt, titles of 12 pt, and
legends with an opaque frame, so that a legend that must sit over lines hides them rather than
mixing with them. (Where a legend goes is each plot's own choice: outside the axes, or in a
corner the data leave empty.) It also puts the fonts this machine has for other scripts (CJK,
emoji) behind DejaVu Sans, so that matplotlib falls back to them glyph by glyph.

`drawable(text)` is for text from data (tokens, vocabularies): a character that no font here
can draw (a CJK character on a machine without a CJK font, an emoji) would come out as an empty
box; it is written as its escape instead ("\\u4e2d"), so that the plot still says what it is.
"""

from __future__ import annotations

import functools

# Fonts with the scripts DejaVu Sans lacks, in order of preference, if the machine has them.
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans",
                  "WenQuanYi Zen Hei", "Droid Sans Fallback", "Noto Color Emoji",
                  "Noto Emoji", "Symbola")

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.framealpha": 0.95,  # a legend over lines hides them instead of blending in
    "legend.edgecolor": "0.8",
}


@functools.lru_cache(maxsize=1)
def _fonts():
    """(the families to use, in order; the set of code points some font of them can draw)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    installed = {}
    for f in font_manager.fontManager.ttflist:
        installed.setdefault(f.name, f.fname)
    families = ["DejaVu Sans"] + [name for name in FALLBACK_FONTS if name in installed]
    chars = set()
    for name in families:
        path = installed.get(name) or font_manager.findfont(name, fallback_to_default=True)
        try:
            chars.update(FT2Font(path).get_charmap())
        except (OSError, RuntimeError, ValueError):  # a font file it cannot read: skip it
            continue
    return families, frozenset(chars)


def style():
    """Apply the course's plot style (sizes, legends, layout, font fallbacks) to matplotlib."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)
    mpl.rcParams["font.family"] = "sans-serif"
    mpl.rcParams["font.sans-serif"] = list(_fonts()[0])


def drawable(text):
    """`text` with every character no installed font can draw written as its escape
    (\\u4e2d, \\U0001f600); control characters (newline, tab) as \\n, \\t, \\xNN."""
    known = _fonts()[1]
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 32 or code == 127:
            out.append(f"\\x{code:02x}")
        elif code in known:
            out.append(ch)
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


__all__ = ["style", "drawable", "STYLE", "FALLBACK_FONTS"]
