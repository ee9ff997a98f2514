"""The course's plot style and drawable text: no empty boxes for tokens no font can draw."""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from numpygpt.course import plots  # noqa: E402


def test_drawable_escapes_what_no_font_has_and_keeps_the_rest():
    families, known = plots._fonts()
    assert families[0] == "DejaVu Sans" and ord("é") in known
    assert plots.drawable("np.array(x)") == "np.array(x)"
    assert plots.drawable("a\nb\tc\x01") == "a\\nb\\tc\\x01"
    missing = next(c for c in range(0x4E00, 0xA000) if c not in known) if len(known) < 1e6 \
        else None
    if missing is not None:  # on a machine with no CJK font (matplotlib's own fonts only)
        assert plots.drawable(chr(missing)) == f"\\u{missing:04x}"
    assert plots.drawable(chr(0x10FFFD)) == "\\U0010fffd"  # a private-use character


def test_a_plot_of_any_tokens_draws_no_empty_box():
    plots.style()
    tokens = ["the", " 中文", "é", "\U0001F600", "\u0627\u0644", "\n"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(len(tokens)), range(len(tokens)))
    ax.set_xticks(range(len(tokens)), [plots.drawable(t) for t in tokens])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        fig.canvas.draw()
    plt.close(fig)


def test_style_sets_readable_sizes():
    plots.style()
    rc = matplotlib.rcParams
    assert rc["xtick.labelsize"] >= 10 and rc["axes.labelsize"] >= 11
    assert rc["legend.framealpha"] > 0.9 and rc["font.sans-serif"][0] == "DejaVu Sans"
