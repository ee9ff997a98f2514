"""The two READMEs (English and Chinese) and docs/course.md say the same true things.

The Chinese README is a translation, edited by hand after the English one, and it fell behind
once already (three notebooks missing from its course table, "21" notebooks where there were
24). These tests read the files as text and check what a reader would be misled by:

- the course table lists every notebook in notebooks/, in order, in both READMEs, and every
  sentence that counts the notebooks gives their number;
- the package map lists every folder and top-level module of numpygpt/ (but `__init__` and
  `__main__`), the same ones in both;
- the results tables give the same figures (the bold ones, read as numbers).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EN, ZH = ROOT / "README.md", ROOT / "README.zh-CN.md"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the headings of the same sections in the two files
SECTIONS = {"course": ("The course", "课程"), "package": ("The package", "包的结构"),
            "results": ("Results", "结果")}
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n):
    """n (0-99) in English words, as a sentence begins it: 24 -> "Twenty-four"."""
    w = ONES[n] if n < 20 else TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    return w.capitalize()


def section(path, key):
    """The text of one `## ` section of a README (key: SECTIONS), up to the next one."""
    title = SECTIONS[key][path == ZH]
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"{path.name} has no section '## {title}'"
    return m.group(1)


def test_words():
    assert [words(n) for n in (7, 20, 24, 31)] == ["Seven", "Twenty", "Twenty-four",
                                                     "Thirty-one"]


@pytest.mark.parametrize("path", [EN, ZH], ids=["en", "zh-CN"])
def test_the_course_table_lists_every_notebook_in_order(path):
    listed = re.findall(r"^\| `(\d\d_\w+)` \|", section(path, "course"), re.M)
    assert listed == NOTEBOOKS, (
        f"{path.name}'s course table: missing {sorted(set(NOTEBOOKS) - set(listed))}, "
        f"not a notebook {sorted(set(listed) - set(NOTEBOOKS))}, or out of order")


def test_every_count_of_the_notebooks_is_their_number():
    n = len(NOTEBOOKS)
    number_words = {words(k).lower() for k in range(100)}
    course_md = ROOT / "docs" / "course.md"
    count = r"(\S+) (?:course notebooks|notebooks in `notebooks/`)"  # "the 24 course notebooks"
    found = {  # file -> the words that count the notebooks there
        EN: re.findall(count, EN.read_text(encoding="utf-8")),
        ZH: re.findall(r"(\d+) 个(?:课程)?笔记本", ZH.read_text(encoding="utf-8")),
        course_md: re.findall(count, course_md.read_text(encoding="utf-8")),
    }
    for path, before in found.items():
        said = [w for w in before if w.isdigit() or w.lower() in number_words]
        assert said, f"{path.name} no longer counts the notebooks (this test's pattern)"
        for w in said:
            assert w.lower() in (str(n), words(n).lower()), (
                f"{path.name} says {w} notebooks; notebooks/ has {n}")


def test_the_package_map_lists_every_folder_the_same_in_both():
    pkg = ROOT / "numpygpt"
    parts = {p.name + "/" for p in pkg.iterdir() if (p / "__init__.py").exists()}
    parts |= {p.name for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    en, zh = (re.findall(r"^- `([^`]+)`", section(p, "package"), re.M) for p in (EN, ZH))
    assert sorted(en) == sorted(parts), f"README.md's package map against numpygpt/: {en}"
    assert zh == en, "README.zh-CN.md's package map lists other folders than README.md's"


def _bold_figures(path):
    """The numbers in the bold figures of a results table: '**96-101 s**' -> ['96-101']."""
    bold = re.findall(r"\*\*(.+?)\*\*", section(path, "results"))
    return [re.findall(r"\d[\d.,%-]*", b) for b in bold]


def test_the_results_tables_give_the_same_figures():
    en, zh = _bold_figures(EN), _bold_figures(ZH)
    assert en, "README.md's results table has no bold figure (this test's pattern)"
    assert zh == en, f"README.zh-CN.md's results differ from README.md's: {zh} against {en}"
    rows = [len(re.findall(r"^\| ", section(p, "results"), re.M)) for p in (EN, ZH)]
    assert rows[0] == rows[1], f"results rows: README.md {rows[0]}, README.zh-CN.md {rows[1]}"
