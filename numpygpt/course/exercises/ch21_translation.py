"""Notebook 21 (translation): the Chinese numeral of a number, checked rule by rule; and the
course's number-translation runs, trained once and cached for notebooks 21 and 22.

check_my_chinese(fn) calls the learner's fn(n) -> str on the numbers of each rule of
finetune/numbers.py (the digits, 10-19 alone, 一十 inside a number, one 零 per run of zeros,
none for trailing zeros, 二 not 两, ...), then on every number from 1 to 99,999, and for a
wrong answer names the number, the answer next to the expected one and the rule it breaks.

translation_runs() is the run of notebook 21 (number-translation from scratch, batch 32,
learning rate 3e-3), kept in default_cache_dir()/course/translation-<fast|full>: the
checkpoint at the end ("final") and a copy made half-way ("early": 79% dev exact match
against 95% at the end in a run of 2026-12-06 on the 2-core AMD EPYC), from which notebook 22
preference-tunes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ...finetune import numbers
from .checking import _learner_frames, show_report
from .report import Report, fn_name

# --- the exercise: my_chinese(n) ---------------------------------------------------------------

# (what the numbers test, the numbers, the rule)
RULES = [
    ("the digits", (1, 2, 3, 5, 9),
     "the digits are 一 二 三 四 五 六 七 八 九"),
    ("10-19 alone", (10, 11, 12, 15, 19),
     "a number that is 10-19 itself drops the 一: 十, 十二 (not 一十二)"),
    ("tens", (20, 21, 45, 90, 99),
     "tens are the digit, then 十, then the ones digit if it is not 0: 二十, 四十五"),
    ("hundreds, thousands, ten thousands", (100, 123, 999, 4567, 12345, 99999),
     "each non-zero digit is followed by its unit 万 千 百 十 (the ones have none), the 一 "
     "before a unit written: 一百二十三, 一万二千三百四十五"),
    ("一十 inside a number", (110, 112, 1010, 1213, 10010, 31415),
     "inside a number the 一 before 十 stays: 一百一十二, 一千零一十, 一万零一十"),
    ("one 零 for a run of zeros", (101, 105, 1001, 1005, 1020, 10001, 10050, 10500, 20002,
                                  90909, 10101),
     "one 零 for each run of zeros between non-zero digits, however long the run: 一百零五, "
     "一千零五 (not 一千零零五), 九万零九百零九"),
    ("no 零 for trailing zeros", (1000, 1100, 10000, 11000, 20000, 30100, 99000),
     "zeros at the end get no 零: 一千, 一千一百, 一万, 三万零一百"),
    ("二, never 两", (2, 200, 2000, 20000, 22222, 2002),
     "2 is 二, never 两: 二百, 二千, 二万 (spoken Chinese often says 两百; this task writes 二)"),
]


def _likely(n, yours, expected):
    """(the rule a wrong numeral breaks, the likely mistake) when it is a known pattern, else
    (None, "")."""
    if "两" in yours:
        return "二, never 两", "两 written: 2 is 二 here, never 两"
    if any(c.isdigit() and c.isascii() for c in yours):
        return "the digits", "an Arabic digit in the answer: every digit is a numeral 一 .. 九"
    if 10 <= n <= 19 and yours == "一" + expected:
        return "10-19 alone", "一十 for a number that is 10-19 itself: it drops the 一"
    if "一十" in expected and yours == expected.replace("一十", "十"):
        return "一十 inside a number", ("the 一 before 十 dropped inside a number: only 10-19 "
                                       "alone drop it")
    if "零" in expected and yours == expected.replace("零", ""):
        return "one 零 for a run of zeros", "零 missing between non-zero digits"
    if "零零" in yours:
        return "one 零 for a run of zeros", "a 零 for each zero of the run"
    if yours.endswith("零") or ("零" not in expected and "零" in yours):
        return "no 零 for trailing zeros", "a 零 for zeros that no non-zero digit follows"
    if yours.replace("零", "") == expected.replace("零", ""):
        return "one 零 for a run of zeros", "零 in the wrong place"
    return None, ""


_RULE = {what: rule for what, _, rule in RULES}


class _Stop(Exception):
    """The learner's function is a stub (or returned None): the check stops."""


def _answer(fn, n, report, raised):
    """(answer or None, said): the learner's numeral of n; an error is said once."""
    try:
        out = fn(n)
    except NotImplementedError:
        report.lines.append(f"✗ {fn_name(fn)} raises NotImplementedError: not implemented yet")
        report.not_implemented = True
        raise _Stop() from None
    except Exception as e:  # the learner's code failed: said, never raised
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if text not in raised:
            raised.append(text)
            report.fail(f"call {fn_name(fn)}({n})", f"raised {text[:120]}", _learner_frames(e))
        return None
    if out is None:
        report.lines.append(f"✗ {fn_name(fn)} returned None: not implemented yet (or a "
                            "missing `return`)")
        report.not_implemented = True
        raise _Stop()
    return out


class _Failed:
    """What the learner's function did instead of returning, in the sweep."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _quiet(fn, n):
    """fn(n), or a _Failed saying what it raised (the rules' cases showed the error)."""
    try:
        return fn(n)
    except Exception as e:  # counted as a wrong answer
        return _Failed(f"raised {type(e).__name__}")


@functools.lru_cache(maxsize=1)
def _all_numerals():
    return tuple(numbers.chinese(n) for n in range(1, numbers.MAX_NUMBER + 1))


def check_my_chinese(fn, show=True):
    """fn(n) -> the Chinese numeral of n (a str), for 1 <= n <= 99,999, by the rules of
    numbers.chinese. Tried on the numbers of each rule, then on every number from 1 to
    99,999; a wrong answer is shown with the expected one and the rule it breaks."""
    report = Report("Chinese numerals")
    if not callable(fn):
        report.fail("call", "expects your function itself: pass it without calling it, "
                            "e.g. check_my_chinese(my_chinese)")
        return show_report(report, show)
    raised, shown = [], set()  # the errors and the rules said so far (each said once)
    name = fn_name(fn)
    try:
        for what, ns, rule in RULES:
            for n in ns:
                expected = numbers.chinese(n)
                yours = _answer(fn, n, report, raised)
                if yours is None:  # it raised: said
                    break
                if not isinstance(yours, str):
                    report.fail(what, f"wrong: {name}({n}) returned {type(yours).__name__} "
                                      f"{yours!r}; expected the str {expected!r}")
                    break
                if yours.strip() != expected:
                    broken, likely = _likely(n, yours.strip(), expected)
                    said = _RULE.get(broken, rule)
                    details = ["rule: as above" if said in shown else "rule: " + said]
                    if likely:
                        details.append("this looks like: " + likely)
                    shown.add(said)
                    report.fail(what, f"wrong: {name}({n}) = {yours!r}, expected {expected!r}",
                                details)
                    break
            else:
                report.lines.append(f"✓ {what}: {', '.join(str(n) for n in ns)}")
        wrong, first = 0, None
        for n, expected in enumerate(_all_numerals(), start=1):
            yours = _quiet(fn, n)
            if not isinstance(yours, str) or yours.strip() != expected:
                wrong += 1
                first = first or (n, yours, expected)
        if wrong:
            n, yours, expected = first
            did = f" {yours!r}" if isinstance(yours, _Failed) else f" = {yours!r}"
            report.fail("every number", f"wrong: {wrong:,} of the {numbers.MAX_NUMBER:,} "
                                        f"numbers from 1 to {numbers.MAX_NUMBER:,}; the first: "
                                        f"{name}({n}){did}, expected {expected!r}")
        else:
            report.lines.append(f"✓ every number from 1 to {numbers.MAX_NUMBER:,}")
    except _Stop:
        pass
    return show_report(report, show)


def reference_chinese(n):
    """The right numeral of n (numbers.chinese): what a notebook uses until the learner's
    my_chinese passes."""
    return numbers.chinese(n)


# --- the course's translation runs, trained once --------------------------------------------

TRANSLATION_FORMAT = "numpygpt-course-translation"
# (total steps, the step of the early copy, eval interval, test numbers scored at the end)
_RECIPES = {"full": (600, 300, 60, 1000), "fast": (30, 15, 15, 100)}


def translation_recipe(fast=None):
    """The FinetuneConfig of notebook 21's run: number-translation from scratch (the task's
    recipe: the model of numbers.NEW_MODEL, the dev numbers keep the best checkpoint) with a
    batch of 32 and a peak learning rate of 3e-3, for 600 steps (fast mode: 30). Its `out` is
    a placeholder."""
    from ...finetune.run import FinetuneConfig
    from .checking import fast_mode

    fast = fast_mode() if fast is None else fast
    total, _, every, n_test = _RECIPES["fast" if fast else "full"]
    return FinetuneConfig.for_task(task="number-translation", out="", batch_size=32, lr=3e-3,
                                   max_iters=total, eval_interval=every, log_interval=10,
                                   n_test=n_test, seed=0)


def translation_dir(fast=None):
    """Where the runs are cached: default_cache_dir()/course/translation-<fast|full>."""
    from ...io.files import default_cache_dir
    from .checking import fast_mode

    fast = fast_mode() if fast is None else fast
    return default_cache_dir() / "course" / f"translation-{'fast' if fast else 'full'}"


def _recipe_dict(cfg, early):
    return {**{k: v for k, v in asdict(cfg).items() if k != "out"}, "early_step": early}


def _read_runs(folder, recipe):
    """The cached runs' info, or a str saying why they cannot be used."""
    from ...finetune.run import load_finetuned

    info_path = folder / "translation.json"
    if not info_path.is_file():
        return "it is incomplete (no translation.json: training did not finish)"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"translation.json cannot be read ({e})"
    if not isinstance(info, dict) or info.get("format") != TRANSLATION_FORMAT:
        return "translation.json is not a translation-runs description"
    if info.get("recipe") != recipe:
        return "it was trained with another recipe"
    for name in ("early", "final"):
        try:
            load_finetuned(folder / name)
            json.loads((folder / name / "metrics.json").read_text(encoding="utf-8"))
        except Exception as e:  # any damage means: train again
            return f"its {name} run cannot be loaded ({type(e).__name__}: {e})"
    return info


def _train_runs(folder, cfg, early, progress):
    """Train the recipe in a temporary folder beside `folder`: to `early` steps (the whole
    run's learning-rate schedule), a copy kept as early/, then on to the end by a resume
    (exact, unless the first half's best dev evaluation came before its last step: keep=best
    then put those weights back, and the second half goes on from them); then put it in
    place."""
    from dataclasses import replace

    from ...finetune.run import finetune, resume_config

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-training-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    t0 = time.perf_counter()
    try:
        final = work / "final"
        first = replace(cfg, out=str(final), max_iters=early, lr_decay_iters=cfg.max_iters)
        result = finetune(first, progress=progress)
        if result.metrics["interrupted"]:
            raise KeyboardInterrupt
        shutil.copytree(final, work / "early")
        result = finetune(resume_config(final, max_iters=cfg.max_iters), resume=True,
                          progress=progress)
        if result.metrics["interrupted"]:
            raise KeyboardInterrupt
        info = {"format": TRANSLATION_FORMAT, "version": 1, "recipe": _recipe_dict(cfg, early),
                "wall_seconds": time.perf_counter() - t0}
        (work / "translation.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
            os.replace(folder, old / folder.name)
        os.replace(work, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def translation_runs(fast=None, retrain=False, *, progress=False, verbose=True):
    """Notebook 21's number-translation run, trained once and loaded from the cache after.

    Inputs:
    - fast: the short CI recipe (default: fast_mode())
    - retrain: train again even if a valid cache exists
    - progress: a progress bar while training; verbose: one line saying what happened

    Returns a dict:
    - "folder": the cache folder; "early", "final": the two run folders (load them with
      numpygpt.finetune.load_finetuned; DPO starts from "early")
    - "early_step", "steps": their steps; "recipe": the FinetuneConfig fields
    - "history": the rows of the final run's log.jsonl (the early part included)
    - "early_metrics", "final_metrics": their metrics.json
    - "wall_seconds": the training time; "trained": True if this call trained them
    """
    from .checking import fast_mode

    fast = fast_mode() if fast is None else bool(fast)
    cfg = translation_recipe(fast)
    early = _RECIPES["fast" if fast else "full"][1]
    recipe = _recipe_dict(cfg, early)
    folder = translation_dir(fast)
    say = print if verbose else (lambda *a, **k: None)
    what = (f"{cfg.max_iters} steps, batch {cfg.batch_size}, lr {cfg.lr:g}, a copy at step "
            f"{early}")
    info = None
    if not retrain:
        info = _read_runs(folder, recipe)
        if isinstance(info, str):
            why = "no translation run in the cache yet" if not folder.exists() else \
                f"the cached translation run in {folder} cannot be used: {info}"
            say(f"translation run: {why}; training it ({what})")
            info = None
        else:
            say(f"translation run: loaded from {folder} ({what}; trained in "
                f"{info['wall_seconds']:.0f} s)")
    else:
        say(f"translation run: training it again ({what})")
    trained = info is None
    if trained:
        _train_runs(folder, cfg, early, progress)
        info = _read_runs(folder, recipe)
        if isinstance(info, str):
            raise RuntimeError(f"the translation run just trained in {folder}: {info}")
        say(f"translation run: trained in {info['wall_seconds']:.0f} s; saved in {folder}")
    rows = [json.loads(line) for line in
            (folder / "final" / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {"folder": folder, "early": folder / "early", "final": folder / "final",
            "early_step": early, "steps": cfg.max_iters, "recipe": recipe, "history": rows,
            "early_metrics": json.loads((folder / "early" / "metrics.json").read_text()),
            "final_metrics": json.loads((folder / "final" / "metrics.json").read_text()),
            "wall_seconds": info["wall_seconds"], "trained": trained}


__all__ = ["check_my_chinese", "reference_chinese", "RULES", "translation_recipe",
           "translation_dir", "translation_runs"]
