"""The course: its notebooks, their exercises and solutions.

What the notebooks and this module agree on:

- An **exercise** is a code cell whose metadata holds ``"exercise": "<name>"`` (the name of the
  function the learner writes, e.g. ``"my_layernorm_backward"``). The committed cell is a stub:
  the signature, a docstring with the shapes, ``# your code here`` and
  ``raise NotImplementedError``. The checker runs in the *next* cell, so a stub prints
  "not implemented yet" there and the notebook goes on (the checkers never raise).
- Its **solution** lives apart, in ``notebooks/solutions/<notebook stem>.py``, in a block that
  starts with the line ``# %% <name>`` and runs to the next ``# %%`` line. The block replaces the
  whole stub cell when the course runs "with solutions" (the tests, the course site).
- An **open question** is a markdown cell whose metadata holds ``"question": "<name>"``; its
  answer is the block ``# %% <name>`` of the same solutions file, written as Markdown in ``#``
  comment lines (the site shows it folded under the question).
"""

from __future__ import annotations

import copy
import re
from dataclasses import fields
from pathlib import Path

from ..errors import UserError

_BLOCK = re.compile(r"^# %% (\S+)[ \t]*$", re.MULTILINE)


class CourseError(UserError):
    """The course files are missing or do not fit together (a user's or an author's mistake)."""


def default_notebook_dir():
    """The course's notebooks: the `notebooks/` folder beside the package in a checkout."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def notebook_paths(folder=None):
    """The course notebooks in `folder` (default: the course's), in course order."""
    folder = Path(folder) if folder is not None else default_notebook_dir()
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise CourseError(f"no course notebooks (NN_name.ipynb) in {folder}: run this from a "
                          "checkout of numpygpt, or name the folder")
    return paths


def solutions_path(notebook_path):
    """Where the solutions of a notebook live: solutions/<stem>.py beside it."""
    notebook_path = Path(notebook_path)
    return notebook_path.parent / "solutions" / f"{notebook_path.stem}.py"


def read_solutions(path):
    """{name: text} for the blocks of a solutions file (empty if the file does not exist).

    A code block's text is its source as written; an answer's text is its Markdown with the
    leading '# ' of each comment line removed.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    marks = list(_BLOCK.finditer(text))
    blocks = {}
    for m, nxt in zip(marks, [*marks[1:], None][:len(marks)], strict=True):
        name = m.group(1)
        if name in blocks:
            raise CourseError(f"{path.name}: the block '# %% {name}' appears twice")
        body = text[m.end():nxt.start() if nxt else len(text)].strip("\n")
        blocks[name] = body.rstrip() + "\n"
    return blocks


def answer_markdown(block):
    """The Markdown of an answer block: its comment lines without their '# '."""
    lines = []
    for line in block.splitlines():
        if line.startswith("# "):
            lines.append(line[2:])
        elif line.rstrip() == "#":
            lines.append("")
        elif line.strip():
            raise CourseError(f"an answer block holds a line that is not a comment: {line!r}")
    return "\n".join(lines).strip() + "\n"


def exercises(nb):
    """[(cell index, name)] of the exercise cells of a notebook (nbformat node or dict)."""
    return [(i, c["metadata"]["exercise"]) for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and "exercise" in c.get("metadata", {})]


def questions(nb):
    """[(cell index, name)] of the open-question cells of a notebook."""
    return [(i, c["metadata"]["question"]) for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown" and "question" in c.get("metadata", {})]


def with_solutions(nb, solutions, name="notebook"):
    """A copy of `nb` whose exercise cells hold their solutions instead of the stubs."""
    nb = copy.deepcopy(nb)
    for i, ex in exercises(nb):
        if ex not in solutions:
            raise CourseError(f"{name}: exercise '{ex}' has no '# %% {ex}' solution block")
        nb["cells"][i]["source"] = solutions[ex].rstrip("\n")
    return nb


# --- the course model: notebook 09 trains it once, 10, 11 and 14 load it ---------------------

COURSE_MODEL_FORMAT = "numpygpt-course-model"
COURSE_PROMPT = "Parameters\n----------\n"  # what the samples of 09 continue
_COURSE_RECIPES = {
    # name: (preset, overrides, the steps after which a sample is written)
    "full": ("baby", dict(max_iters=2000, eval_interval=250, eval_iters=40, log_interval=10),
             (0, 250, 750, 2000)),
    "fast": ("tiny", dict(max_iters=200, eval_interval=50, eval_iters=4, log_interval=5),
             (0, 50, 200)),
}


def course_recipe(fast=None):
    """The TrainConfig of the course model: nanoGPT's `baby` recipe on numpy-docs for 2000
    steps (the CLI's default run), or in fast mode (CI) `tiny` for 200 steps. Its `out` is
    a placeholder: course_model() trains in its cache folder."""
    from ..training.train import TrainConfig
    from .exercises import fast_mode

    fast = fast_mode() if fast is None else fast
    preset, overrides, _ = _COURSE_RECIPES["fast" if fast else "full"]
    return TrainConfig.preset_config(preset, data="numpy-docs", seed=1337, out="",
                                     **overrides)


def course_model_dir(fast=None):
    """Where the course model is cached: default_cache_dir()/course/<fast|full>."""
    from ..io.files import default_cache_dir
    from .exercises import fast_mode

    fast = fast_mode() if fast is None else fast
    return default_cache_dir() / "course" / ("fast" if fast else "full")


def _recipe_dict(cfg):
    from dataclasses import asdict

    return {k: v for k, v in asdict(cfg).items() if k != "out"}


def _text_sha256(text):
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_course_model(folder, recipe, data_sha256):
    """(model, tokenizer, info) from the cache folder; CourseError saying why it cannot."""
    import json

    import numpy as np

    from ..data import tokenizer_for_model
    from ..io.checkpoint import CheckpointError, load_checkpoint
    from ..models.gpt import GPT, GPTConfig

    info_path = folder / "course.json"
    if not info_path.is_file():
        raise CourseError("it is incomplete (no course.json: training did not finish)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CourseError(f"course.json cannot be read ({e})") from None
    if not isinstance(info, dict) or info.get("format") != COURSE_MODEL_FORMAT:
        raise CourseError("course.json is not a course-model description")
    missing = {"samples", "metrics", "history"} - set(info)
    if missing:
        raise CourseError(f"course.json lacks {', '.join(sorted(missing))}")
    saved = info.get("recipe")
    if isinstance(saved, dict):
        # a setting added to TrainConfig since the cache was written (arch, ...) had its
        # default value then: a cache made before it still holds the same model
        from ..training.train import TrainConfig

        defaults = {f.name: f.default for f in fields(TrainConfig)}
        saved = {**{k: defaults[k] for k in _recipe_dict(recipe) if k not in saved}, **saved}
    if saved != _recipe_dict(recipe):
        raise CourseError("it was trained with another recipe")
    if info.get("data_sha256") != data_sha256:
        raise CourseError("it was trained on another version of the corpus (another NumPy?)")
    try:
        ckpt = load_checkpoint(folder)
        config = GPTConfig.from_dict(ckpt.config["model"])
        tokenizer = tokenizer_for_model(ckpt.tokenizer, config.vocab_size, f"'{folder}'")
        if config != recipe.model_config(tokenizer.vocab_size):
            raise CourseError(f"its model ({config}) is not the recipe's")
        if ckpt.train_state.get("step") != recipe.max_iters:
            raise CourseError(f"its checkpoint is at step {ckpt.train_state.get('step')}, "
                              f"not {recipe.max_iters}")
        model = GPT(config, dtype=np.float32)
        model.load_params(ckpt.params)
    except (CheckpointError, ValueError, KeyError, TypeError) as e:
        raise CourseError(f"{type(e).__name__}: {e}") from None
    model.eval()
    return model, tokenizer, info


def _train_course_model(folder, recipe, sample_steps, data_sha256, progress, callback):
    """Train the recipe in stages (a sample after each), in a temporary folder beside
    `folder`, then put it in place. Returns the info dict."""
    import dataclasses
    import os
    import shutil
    import tempfile
    import time

    from ..io.files import atomic_write_json
    from ..training.train import train

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-training-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    decay = recipe.max_iters if recipe.lr_decay_iters is None else recipe.lr_decay_iters
    t0 = time.perf_counter()
    try:
        samples = []
        for i, stop in enumerate(sample_steps):
            # Resuming is exact, so the stages add up to one run; the schedule is the whole run's.
            cfg = dataclasses.replace(recipe, out=str(work), max_iters=stop, lr_decay_iters=decay)
            result = train(cfg, resume=i > 0, progress=progress, callback=callback)
            if result.metrics["interrupted"]:  # Ctrl-C: train() stopped cleanly; so do we
                raise KeyboardInterrupt
            prompt = result.tokenizer.encode(COURSE_PROMPT)[None]  # (1, T0)
            ids = result.model.generate(prompt, 160, temperature=0.8, seed=0)
            samples.append({"step": stop, "text": result.tokenizer.decode(ids[0])})
        # train() measured the last stage only; the cache describes the whole run
        metrics = {**result.metrics, "wall_seconds": time.perf_counter() - t0}
        atomic_write_json(work / "metrics.json", metrics)
        info = {"format": COURSE_MODEL_FORMAT, "version": 1, "recipe": _recipe_dict(recipe),
                "data_sha256": data_sha256, "prompt": COURSE_PROMPT, "samples": samples,
                "metrics": metrics, "history": result.history}
        atomic_write_json(work / "course.json", info)  # written last: the cache is complete
        olds = []
        for attempt in range(3):  # another process may be swapping in its copy at the same time
            if folder.exists():
                olds.append(Path(tempfile.mkdtemp(dir=folder.parent,
                                                  prefix=f".{folder.name}-old-")))
                try:
                    os.replace(folder, olds[-1] / folder.name)
                except FileNotFoundError:
                    pass
            try:
                os.replace(work, folder)
                break
            except OSError:
                if attempt == 2:
                    raise
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def course_model(fast=None, retrain=False, *, progress=False, callback=None, verbose=True,
                 recipe=None, sample_steps=None):
    """The course's main model, trained once (notebook 09) and loaded from a cache afterwards.

    Inputs:
    - fast: the small CI recipe (default: fast_mode(), i.e. NUMPYGPT_FAST=1 or CI)
    - retrain: train again even if a valid cache exists
    - progress, callback: passed to numpygpt.training.train.train while training
    - verbose: print one line saying what was loaded or why it is trained
    - recipe, sample_steps: another TrainConfig and the steps after which to sample (for
      tests; its corpus must hold the characters of COURSE_PROMPT); by default
      course_recipe(fast) and that recipe's steps

    The cache is default_cache_dir()/course/<fast|full> ($NUMPYGPT_CACHE/course/...): the
    checkpoint (ckpt.npz, read without pickle), log.jsonl, metrics.json and course.json
    (recipe, corpus hash, samples, history), written last. A cache that is missing,
    incomplete, damaged, or made with another recipe or corpus is trained again (the reason
    is printed); training is deterministic, so it gives the same weights.

    Returns (model, tokenizer, info):
    - model: a GPT (float32, eval mode); tokenizer: its CharTokenizer
    - info: dict with "folder" (Path), "trained" (True if trained by this call), "recipe"
      (the TrainConfig fields), "metrics" (step, train_loss, val_loss, wall_seconds of the
      whole training, ...), "history" (the rows of log.jsonl), "samples" ([{"step", "text"}],
      continuations of info["prompt"] after each stage)
    """
    from ..data.corpora import load_corpus
    from .exercises import fast_mode

    fast = fast_mode() if fast is None else bool(fast)
    if recipe is None:
        recipe = course_recipe(fast)
        sample_steps = _COURSE_RECIPES["fast" if fast else "full"][2]
    elif sample_steps is None:
        sample_steps = (0, recipe.max_iters)
    sample_steps = sorted(set(sample_steps) | {recipe.max_iters})
    if sample_steps[0] < 0 or sample_steps[-1] != recipe.max_iters:
        raise ValueError(f"sample steps must lie in [0, {recipe.max_iters}], got {sample_steps}")
    folder = course_model_dir(fast)
    data_sha256 = _text_sha256(load_corpus(recipe.data)[0])

    say = print if verbose else (lambda *a, **k: None)
    what = f"'{recipe.preset}' recipe, {recipe.max_iters} steps on {recipe.data}"
    if not retrain:
        try:
            model, tokenizer, info = _load_course_model(folder, recipe, data_sha256)
        except CourseError as e:
            why = "no course model in the cache yet" if not folder.exists() else \
                f"the cached course model in {folder} cannot be used: {e}"
            say(f"course model: {why}; training it ({what})")
        else:
            m = info["metrics"]
            say(f"course model: loaded from {folder} ({what}: val loss {m['val_loss']:.3f}, "
                f"trained in {m['wall_seconds']:.0f} s)")
            info.update(folder=folder, trained=False)
            return model, tokenizer, info
    else:
        say(f"course model: training it again ({what})")
    info = _train_course_model(folder, recipe, sample_steps, data_sha256, progress, callback)
    model, tokenizer, info = _load_course_model(folder, recipe, data_sha256)
    m = info["metrics"]
    say(f"course model: trained in {m['wall_seconds']:.0f} s, val loss {m['val_loss']:.3f}; "
        f"saved in {folder}")
    info.update(folder=folder, trained=True)
    return model, tokenizer, info
