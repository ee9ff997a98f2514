"""How the course site renders a notebook: formulas typeset to MathML, Markdown to HTML,
code highlighted, a cell's outputs (text, tables, plots) to HTML, and the site's style.

Formulas are typeset at build time: `latex2mathml` turns the TeX into MathML, which browsers
render natively, so the site needs no network and no script. The Markdown parser never sees a
formula (each one is swapped for a placeholder first), so `_`, `*` and `\\` inside TeX survive.
A formula latex2mathml cannot convert is shown as its TeX source in `<code class="tex-fallback">`
and counted (MathTypesetter.fallbacks).

site.py builds the pages with these pieces.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# What a formula that could not be typeset became


@dataclass
class MathFallback:
    """A formula latex2mathml could not typeset: the page shows its TeX source instead."""

    where: str
    tex: str
    problem: str


# --------------------------------------------------------------------------------------------
# Formulas: find them, hide them from Markdown, typeset them to MathML

# Fenced code blocks hold no math (their `$` are code).
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[^\n]*$", re.M | re.S)
_MATH = re.compile(r"""
      (?P<code>(?P<ticks>`+).+?(?P=ticks))                    # a code span: no math inside
    | (?P<esc>\\\$)                                             # an escaped dollar
    | \$\$(?P<display>.+?)\$\$                                  # $$ display $$
    | (?P<env>\\begin\{(?P<envname>[A-Za-z]+\*?)\}.*?\\end\{(?P=envname)\})  # a bare environment
    | \$(?P<inline>(?:\\.|[^$\\])+?)\$                         # $ inline $
""", re.S | re.X)
_PLACEHOLDER = re.compile(r"MATHPH(\d+)END")


def split_math(markdown):
    """Markdown with every formula swapped for a placeholder, and the formulas.

    Returns (text, [(tex, display)]): formula n became the word `MATHPH<n>END`, which no
    Markdown parser touches. Formulas are `$...$` (inline), `$$...$$` and a bare
    `\\begin{env}...\\end{env}` (display), as Jupyter reads them; code spans, fenced code
    and `\\$` are left alone, and an inline `$` never spans a blank line.
    """
    maths, parts, pos = [], [], 0
    for fence in _FENCE.finditer(markdown):
        parts.append(_split_math_text(markdown[pos:fence.start()], maths))
        parts.append(fence.group(0))
        pos = fence.end()
    parts.append(_split_math_text(markdown[pos:], maths))
    return "".join(parts), maths


def _split_math_text(text, maths):
    out, pos = [], 0
    while True:
        m = _MATH.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        if m.group("code") or m.group("esc"):
            out.append(text[pos:m.end()])
            pos = m.end()
            continue
        tex = m.group("display") or m.group("env") or m.group("inline")
        display = m.group("inline") is None
        if not tex.strip() or re.search(r"\n[ \t]*\n", tex):
            out.append(text[pos:m.start() + 1])  # not a formula: keep the '$' and go on
            pos = m.start() + 1
            continue
        out.append(text[pos:m.start()] + f"MATHPH{len(maths)}END")
        maths.append((tex.strip(), display))
        pos = m.end()


# latex2mathml (3.8x) has no `aligned`, `gathered` or `\arg`; these rewrite them into what it has.
_TEX_REWRITES = [
    (re.compile(r"\\begin\{aligned\}"), r"\\begin{align*}"),
    (re.compile(r"\\end\{aligned\}"), r"\\end{align*}"),
    (re.compile(r"\\arg(?![A-Za-z])"), r"\\operatorname{arg}"),
]
_UNCONVERTED = re.compile(r">[^<]*(\\[A-Za-z_%#$]+|&(?!#?\w+;))[^<]*<")
# latex2mathml keeps TeX's escapes inside \text{...} (min\_lr): the reader wants min_lr
_ESCAPED = re.compile(r"\\([_%#$])")
# latex2mathml puts no space after \log, \ln, \exp...: TeX's thin space before an operand
_FUNCTION = re.compile(r"(<mi>(?:arccos|arcsin|arctan|cos|cosh|det|exp|lg|ln|log|sin|sinh|tan|"
                       r"tanh)</mi>|<msub><mi>log</mi><mn>[^<]*</mn></msub>)"
                       r"(?=<(?:mi|mn|msub|msup|msubsup|mfrac|msqrt)[ >])")


class MathTypesetter:
    """TeX to MathML with latex2mathml; what it cannot do is counted and shown as TeX."""

    def __init__(self, converter):
        self._convert = converter.convert
        self.fallbacks = []

    def __call__(self, tex, display, where):
        prepared = tex
        for pattern, repl in _TEX_REWRITES:
            prepared = pattern.sub(repl, prepared)
        try:
            mathml = self._convert(prepared, display="block" if display else "inline")
            mathml = _FUNCTION.sub(r'\1<mspace width="0.167em"></mspace>', mathml)
            mathml = _ESCAPED.sub(r"\1", mathml)
            bad = _UNCONVERTED.search(mathml)
            problem = f"left {bad.group(1)!r} unconverted" if bad else ""
        except Exception as e:  # latex2mathml raises many kinds; any of them means "cannot"
            problem = f"{type(e).__name__}: {e}"
        if problem:
            self.fallbacks.append(MathFallback(where, tex, problem))
            delim = "$$" if display else "$"
            return (f'<code class="tex-fallback" title="{html.escape(problem)}">'
                    f"{html.escape(delim + tex + delim)}</code>")
        return mathml


# --------------------------------------------------------------------------------------------
# Markdown and code


def _slug(text, taken):
    text = re.sub(r"<[^>]+>", "", _PLACEHOLDER.sub("", text))
    slug = re.sub(r"[^\w]+", "-", html.unescape(text).lower(), flags=re.UNICODE).strip("-")
    slug = slug or "section"
    base, n = slug, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _local_href(url):
    """A link to a course notebook points to its page on the site."""
    m = re.fullmatch(r"(?:\./)?(\d\d_[\w.-]+)\.ipynb(#.*)?", url)
    return f"{m.group(1)}.html{m.group(2) or ''}" if m else url


def _highlight(source):
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    return highlight(source, _python_lexer(), HtmlFormatter(nowrap=True))


def _python_lexer():
    try:  # knows %magics and !shell lines; IPython brings it
        from ipython_pygments_lexers import IPython3Lexer
        return IPython3Lexer()
    except ImportError:
        from pygments.lexers import PythonLexer
        return PythonLexer()


def code_block(source, cls="code"):
    return f'<pre class="{cls}"><code>{_highlight(source)}</code></pre>\n'


class Markdown:
    """Markdown + formulas to HTML, with ids on headings and .ipynb links made .html."""

    def __init__(self, mistune, typeset):
        self._mistune = mistune
        self.typeset = typeset
        self.taken = set()  # heading ids of the current page

    def renderer(self):
        md = self

        class Renderer(self._mistune.HTMLRenderer):
            def heading(self, text, level, **attrs):
                slug = _slug(text, md.taken)
                return (f'<h{level} id="{slug}">{text} <a class="anchor" href="#{slug}" '
                        f'aria-label="link to this section">#</a></h{level}>\n')

            def link(self, text, url, title=None):
                return super().link(text, _local_href(url), title)

            def codespan(self, text):
                # GFM: a pipe inside a table cell's code span is written \| (else it would
                # split the cell); the reader sees a plain |
                return super().codespan(text.replace("\\|", "|"))

            def block_code(self, code, info=None):
                if info and info.split()[0].lower() in ("python", "py", "ipython", "python3"):
                    return code_block(code)
                return super().block_code(code, info)

        return Renderer(escape=False)

    def __call__(self, text, where, inline=False):
        text, maths = split_math(text)
        parse = self._mistune.create_markdown(renderer=self.renderer(),
                                              plugins=["table", "strikethrough", "url"])
        out = parse(text)
        if inline:  # one paragraph, without its <p>
            out = re.sub(r"^\s*<p>(.*)</p>\s*$", r"\1", out, flags=re.S)
        rendered = [self.typeset(tex, display, where) for tex, display in maths]

        def block(m):
            n = int(m.group(1))
            return f'<div class="math-display">{rendered[n]}</div>'

        out = re.sub(r"<p>\s*MATHPH(\d+)END\s*</p>",
                     lambda m: block(m) if maths[int(m.group(1))][1] else m.group(0), out)

        def place(m):
            n = int(m.group(1))
            return rendered[n] if n < len(rendered) else m.group(0)

        return _PLACEHOLDER.sub(place, out)


def plain_text(html_text):
    """Visible text of a bit of HTML (for alt text and titles)."""
    text = re.sub(r"<annotation[^>]*>.*?</annotation>", "", html_text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


# --------------------------------------------------------------------------------------------
# Outputs

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal_text(text):
    """Text as a terminal would show it: no colour codes, a '\\r' rewrites its line."""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def png_size(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


def outputs_html(outputs, save_image, md, where):
    """The outputs of one code cell. `save_image(data, ext, metadata)` -> <img> HTML."""
    parts, stream = [], None  # consecutive stream outputs of one name are one block
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            name = out.get("name", "stdout")
            if stream and stream[0] == name:
                stream[1].append(out.get("text", ""))
                continue
            stream = (name, [out.get("text", "")])
            parts.append(stream)
            continue
        stream = None
        if kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            image = next((m for m in _IMAGE_TYPES if m in data), None)
            if image:
                raw = data[image]
                raw = raw.encode() if image == "image/svg+xml" else base64.b64decode(raw)
                meta = out.get("metadata", {}).get(image, {})
                parts.append(f'<div class="output image">'
                             f'{save_image(raw, _IMAGE_TYPES[image], meta)}</div>\n')
            elif "text/markdown" in data:
                parts.append(f'<div class="output markdown">'
                             f'{md(data["text/markdown"], where)}</div>\n')
            elif "text/plain" in data:
                text = html.escape(terminal_text(data["text/plain"]))
                parts.append(f'<pre class="output result">{text}</pre>\n')
            elif "text/html" in data:
                parts.append(f'<div class="output html">{data["text/html"]}</div>\n')
        elif kind == "error":
            trace = "\n".join(out.get("traceback", [])) or \
                f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
            parts.append(f'<pre class="output error">{html.escape(terminal_text(trace))}'
                         f"</pre>\n")
    html_parts = []
    for p in parts:
        if isinstance(p, tuple):
            text = terminal_text("".join(p[1])).rstrip("\n")
            if text:
                html_parts.append(f'<pre class="output {p[0]}">{html.escape(text)}</pre>\n')
        else:
            html_parts.append(p)
    return "".join(html_parts)


# --------------------------------------------------------------------------------------------
# The site's style


def style_css():
    from pygments.formatters import HtmlFormatter

    return _CSS + HtmlFormatter(style="default").get_style_defs("pre.code")


_CSS = """\
:root {
  --text: #1f2328; --muted: #59636e; --bg: #ffffff; --soft: #f6f8fa; --line: #d1d9e0;
  --accent: #0b5cad; --ex: #fff8e6; --ex-line: #e3b341; --q: #eef6ff; --q-line: #7ab3ef;
  --err: #fff0f0; --err-line: #e5534b;
}
* { box-sizing: border-box; }
html { background: var(--bg); color: var(--text); }
body {
  margin: 0 auto; padding: 0 1.25rem 3rem; max-width: 62rem;
  font: 17px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue",
        Arial, "Noto Sans CJK SC", sans-serif;
}
a { color: var(--accent); }
h1, h2, h3, h4 { line-height: 1.25; margin: 1.6em 0 0.6em; }
h1 { font-size: 2rem; margin-top: 0.8em; }
h2 { font-size: 1.45rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1.2rem; }
a.anchor { visibility: hidden; text-decoration: none; color: var(--muted); font-weight: normal; }
h1:hover a.anchor, h2:hover a.anchor, h3:hover a.anchor, h4:hover a.anchor { visibility: visible; }
code, pre { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas,
            monospace; font-size: 0.86em; }
:not(pre) > code { background: var(--soft); padding: 0.1em 0.3em; border-radius: 4px; }
pre { margin: 0; padding: 0.7em 0.9em; overflow-x: auto; line-height: 1.45; }
pre.code, pre.shell { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; }
pre.code code, pre.shell code, pre.output { font-size: 13px; }
.cell { margin: 1.1rem 0; }
.cell.code > pre.code { border-bottom-left-radius: 0; border-bottom-right-radius: 0; }
pre.output {
  border: 1px solid var(--line); border-top: none; background: #fff; white-space: pre-wrap;
  max-height: 36em; overflow: auto;
}
pre.output.stderr { background: #fffbea; }
pre.output.error { background: var(--err); border-color: var(--err-line); }
div.output { border: 1px solid var(--line); border-top: none; padding: 0.6em; background: #fff; }
div.output.image { text-align: center; }
img { max-width: 100%; height: auto; }
.math-display { overflow-x: auto; overflow-y: hidden; margin: 0.9em 0; padding: 0.1em 0; }
math { font-size: 1.08em;
       font-family: "Latin Modern Math", "STIX Two Math", "Cambria Math", "DejaVu Math TeX Gyre",
                    math; }
math[display="block"] { margin: 0.4em 0; }
menclose[notation="box"] { border: 1px solid currentColor; padding: 0.15em 0.3em; }
mtd[columnalign="left"] { text-align: left; }
mtd[columnalign="right"] { text-align: right; }
code.tex-fallback { background: var(--err); color: #8b1a1a; }
table { border-collapse: collapse; margin: 1em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: 0.35em 0.7em; text-align: left;
         vertical-align: top; }
th { background: var(--soft); }
blockquote { margin: 1em 0; padding: 0 1em; color: var(--muted);
             border-left: 4px solid var(--line); }
.label { font-size: 0.8rem; font-weight: 600; letter-spacing: 0.03em; text-transform: uppercase;
         color: var(--muted); margin-bottom: 0.35em; }
.label code { text-transform: none; letter-spacing: 0; font-size: 0.95rem; }
section.exercise { background: var(--ex); border: 1px solid var(--ex-line);
                   border-left-width: 5px; border-radius: 6px; padding: 0.8em 1em; }
section.exercise > pre.code { background: #fff; }
section.question { background: var(--q); border: 1px solid var(--q-line);
                   border-left-width: 5px; border-radius: 6px; padding: 0.6em 1em; }
section.question h1, section.question h2, section.question h3 { margin-top: 0.4em; }
details { margin: 0.7em 0 0.2em; }
details > summary {
  display: inline-block; cursor: pointer; list-style: none; user-select: none;
  padding: 0.25em 0.8em; border: 1px solid var(--line); border-radius: 999px;
  background: #fff; color: var(--accent); font-size: 0.9rem; font-weight: 600;
}
details > summary::-webkit-details-marker { display: none; }
details > summary::before { content: "\\25B8\\00a0"; }
details[open] > summary::before { content: "\\25BE\\00a0"; }
details > summary:hover { background: var(--soft); }
details[open] > summary { margin-bottom: 0.5em; }
details.solution > pre.code { background: #fff; border-left: 4px solid #2da44e; }
/* a hint in a notebook's text (<details><summary>Hint</summary> ...): set apart once opened */
.cell.text > details[open] { border-left: 4px solid var(--ex-line); padding-left: 0.9em; }
.answer-body { background: #fff; border: 1px solid var(--line); border-left: 4px solid #2da44e;
               border-radius: 6px; padding: 0.2em 1em; }
.top { padding: 0.8rem 0 0.4rem; border-bottom: 1px solid var(--line); }
footer { margin-top: 3rem; border-top: 1px solid var(--line); padding-top: 0.8rem; }
nav.pager { display: flex; justify-content: space-between; gap: 1em; font-size: 0.92rem; }
nav.pager > * { flex: 1; }
nav.pager .home { text-align: center; flex: 0 0 auto; }
nav.pager .next { text-align: right; }
.build-note, .source { color: var(--muted); font-size: 0.85rem; }
.lead { font-size: 1.1rem; }
ol.course-map { list-style: none; padding: 0; }
ol.course-map > li { border: 1px solid var(--line); border-radius: 8px; padding: 0.2em 1.1em 0.6em;
                     margin: 0.9em 0; }
ol.course-map h2 { font-size: 1.2rem; border: none; margin: 0.6em 0 0.2em; }
ol.course-map h2 a { text-decoration: none; }
ol.course-map p { margin: 0.3em 0; }
ol.course-map .exercises, ol.course-map .questions { font-size: 0.92rem; }
ol.course-map details.goals > summary { font-size: 0.85rem; }
"""
