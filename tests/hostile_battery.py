"""The hostile battery: every way a user (or the machine) can hurt a run, as real processes.

    python tests/hostile_battery.py                 # every case, a table, exit 1 if one fails
    python tests/hostile_battery.py --only sizes    # the cases whose family or name matches
    python tests/hostile_battery.py --list          # the cases, not run
    python tests/hostile_battery.py --json out.json # also the details of each case

Each case runs `python -m numpygpt ...` (or a short Python snippet against the API) in a
fresh folder, under an address-space limit of 1.5 GiB (RLIMIT_AS) and a time limit, and is
*handled* when:
- a refusal: the exit code is non-zero (not a crash by signal), stderr is exactly one line
  holding what the case expects, no traceback, and no file in the case's folder changed
  (nothing created, nothing removed, no byte different);
- a run that must work: exit 0, no traceback, and the case's own check of what it wrote
  (a checkpoint of the step it stopped at, a kept link, the user's files unchanged, ...).

The families: two processes on one folder, signals, what --overwrite and the course build
replace, sizes declared by a file or a flag, MPI ranks that disagree (where mpiexec is
installed), what used to be a traceback or a silent acceptance, messages that name the line,
and the earlier bad-input cases. The pytest suite runs a few of these cases
(tests/test_hostile_battery.py) to keep the harness honest; the whole battery takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
GiB = 1 << 30
LIMIT = int(1.5 * GiB)  # RLIMIT_AS of every case
TINY = ["--preset", "tiny", "--no-progress", "--sample-tokens", "0"]
FOREVER = ["--max-iters", "1000000", "--eval-interval", "100000"]  # trains until stopped
REPO = Path(__file__).resolve().parent.parent
PEAK = [0.0]  # the largest peak RSS (MB) of the processes of the case running


# --- running one process ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a process did: exit code (negative: killed by that signal), output, time, peak RSS."""

    code: int
    out: str
    err: str
    seconds: float
    rss_mb: float
    timed_out: bool = False


class Proc:
    """A process under the battery's limits, its output in files (no pipe to fill up)."""

    def __init__(self, argv, cwd, env=None, limit=LIMIT, fsize=None):
        self.t0 = time.monotonic()
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()

        def limits():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        self.p = subprocess.Popen(argv, cwd=cwd, stdout=self._out, stderr=self._err,
                                  env={**os.environ, **(env or {})}, preexec_fn=limits,
                                  start_new_session=True)
        self.pid = self.p.pid
        self.result = None

    def signal(self, sig):
        if self.result is None:
            os.kill(self.pid, sig)

    def running(self):
        if self.result is not None:
            return False
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._done(status, usage)
        return False

    def wait(self, timeout):
        """The Outcome; past `timeout` seconds the whole process group is killed."""
        end = time.monotonic() + timeout
        while self.result is None:
            if not self.running():
                break
            if time.monotonic() > end:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status, usage = os.wait4(self.pid, 0)
                self._done(status, usage, timed_out=True)
                break
            time.sleep(0.05)
        return self.result

    def _done(self, status, usage, timed_out=False):
        self.p.returncode = code = os.waitstatus_to_exitcode(status)
        try:  # what the process left running in its group (an MPI rank, a kernel) goes too
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        text = []
        for f in (self._out, self._err):
            f.seek(0)
            text.append(f.read().decode("utf-8", "replace"))
            f.close()
        self.result = Outcome(code, text[0], text[1], time.monotonic() - self.t0,
                              usage.ru_maxrss / 1024, timed_out)
        PEAK[0] = max(PEAK[0], self.result.rss_mb)


def numpygpt(w, *args, **kwargs):
    """`python -m numpygpt args...` in the case folder w."""
    return Proc([PY, "-m", "numpygpt", *args], cwd=w, **kwargs)


def snippet(w, code, **kwargs):
    """A Python snippet against the API: a numpygpt UserError (or ValueError) is printed as
    one line and exits 1, as the CLI would; anything else keeps its traceback (a failure)."""
    wrapped = ("import sys\nfrom numpygpt.errors import UserError\ntry:\n"
               + "".join(f"    {line}\n" for line in code.strip().splitlines())
               + "except (UserError, ValueError) as e:\n"
               "    print(f'{type(e).__name__}: {e}', file=sys.stderr)\n    sys.exit(1)\n")
    return Proc([PY, "-c", wrapped], cwd=w, **kwargs)


def wait_for(predicate, seconds=60):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- what a folder holds ----------------------------------------------------------------------


def snapshot(folder):
    """{relative path: what it is}: a file's sha256, a link's target, "dir"."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = os.fsdecode(p.relative_to(folder))
            if "__pycache__" in rel:
                continue
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.stat().st_size > 64 << 20:  # a 100 MB corpus, a sparse 51 GB file
                st = p.stat()
                out[rel] = f"{st.st_size} bytes, modified {st.st_mtime_ns}"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


def changes(before, after):
    """What differs between two snapshots, in words (empty: nothing)."""
    said = [f"{k} removed" for k in before if k not in after]
    said += [f"{k} created" for k in after if k not in before]
    said += [f"{k} changed" for k in before if k in after and before[k] != after[k]]
    return said


def traceback_in(o):
    return "Traceback (most recent call last)" in o.err or "Traceback" in o.out


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def refused(o, needle="", where=None, before=None):
    """Why `o` is not a clean one-line refusal (None if it is)."""
    if o.timed_out:
        return "timed out"
    if o.code <= 0:
        return f"exit code {o.code}, expected a refusal (>0)"
    if traceback_in(o):
        return "traceback"
    err = lines(o.err)
    if len(err) != 1:
        return f"{len(err)} lines on stderr, expected 1"
    if needle and not re.search(needle, err[0]):
        return f"message lacks {needle!r}"
    if where is not None and before is not None:
        changed = changes(before, snapshot(where))
        if changed:
            return "files changed: " + ", ".join(changed[:4])
    return None


def worked(o, needle=""):
    """Why `o` is not a clean success (None if it is)."""
    if o.timed_out:
        return "timed out"
    if o.code != 0:
        return f"exit code {o.code}: {(lines(o.err) or [''])[-1][:200]}"
    if traceback_in(o):
        return "traceback"
    if needle and not re.search(needle, o.err + o.out):
        return f"output lacks {needle!r}"
    return None


def stopped(o, code, w, run="run"):
    """Why `o` is not a clean stop by a signal: exit `code`, one-line report, the checkpoint
    of the step it stopped at, "interrupted" and the signal in metrics.json, no lock left."""
    if o.timed_out:
        return "timed out"
    if o.code != code:
        return f"exit code {o.code}, expected {code}: {o.err[-300:]}"
    if traceback_in(o):
        return "traceback"
    if run is None:
        return None if len(lines(o.err)) == 1 else f"{len(lines(o.err))} lines on stderr"
    try:
        metrics = json.loads((w / run / "metrics.json").read_text())
        from numpygpt.io.checkpoint import load_checkpoint

        step = load_checkpoint(w / run).train_state["step"]
    except Exception as e:  # noqa: BLE001 (a report, not a crash)
        return f"no usable record: {type(e).__name__}: {e}"
    if not metrics.get("interrupted") or metrics.get("step") != step:
        return (f"metrics.json: interrupted {metrics.get('interrupted')}, step "
                f"{metrics.get('step')}; the checkpoint's step {step}")
    if (w / run / ".numpygpt.lock").exists():
        return "the lock file was left"
    return None


# --- cases --------------------------------------------------------------------------------------


@dataclass
class Case:
    family: str
    name: str
    run: object  # run(w) -> None if handled, else why not
    setup: object = None  # setup(w): files the case starts from
    needs: tuple = ()  # shared things it copies in: "base", "llama", "hf-gpt2", "hf-llama", ...
    slow: bool = False
    mpi: bool = False
    notes: dict = field(default_factory=dict)


CASES = []


def case(family, name, **kw):
    def register(fn):
        CASES.append(Case(family, name, fn, **kw))
        return fn
    return register


def refusal(family, name, args, needle="", setup=None, needs=(), api=False, env=None,
            timeout=120):
    """A case whose whole story is: refused in one line, nothing in its folder changed."""
    def run(w):
        before = snapshot(w)
        p = snippet(w, args, env=env) if api else numpygpt(w, *args, env=env)
        return refused(p.wait(timeout), needle, w, before)
    CASES.append(Case(family, name, run, setup, needs))


SHARED = {}  # name -> folder, made once per battery run (make_shared)


def use(w, name, as_=None):
    """Copy a shared folder (a trained run, a saved model, a corpus) into the case folder."""
    src = SHARED[name]
    dst = w / (as_ or name)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)
    return dst


def write(w, name, text, encoding="utf-8"):
    (w / name).write_text(text, encoding=encoding)


def long_run(w, *args, folder="run", **kw):
    """Start a run that trains until stopped; returns once it has written a checkpoint."""
    t0 = time.time()
    p = numpygpt(w, *args, **kw)
    ckpt = w / folder / "ckpt.npz"
    wait_for(lambda: ckpt.exists() and ckpt.stat().st_mtime >= t0 or not p.running(), 120)
    return p


def start_training(w, *extra):
    """A fresh tiny run (checkpoints every 20 steps) in w/run, returned once it has saved."""
    return long_run(w, "train", *TINY, "--out", "run", "--max-iters", "1000000",
                    "--eval-interval", "20", "--eval-iters", "1", *extra)


# 1. two processes on one folder -----------------------------------------------------------------


def second_refused(w, second, first_cmd="numpygpt train", first=None, run="run"):
    first = first or start_training(w)
    if not first.running():
        return "the first run ended: " + first.wait(1).err[-300:]
    o = numpygpt(w, *second).wait(60)
    first.signal(signal.SIGINT)
    f = first.wait(120)
    why = refused(o, rf"in use by {first_cmd} \(pid {first.pid} ")
    if why:
        return "second: " + why
    return stopped(f, 130, w, run)


case("two processes", "train + train on one --out")(
    lambda w: second_refused(w, ["train", *TINY, "--out", "run"]))
case("two processes", "train + train --overwrite")(
    lambda w: second_refused(w, ["train", *TINY, "--out", "run", "--overwrite"]))
case("two processes", "train + finetune on one --out", needs=("base",))(
    lambda w: second_refused(w, ["finetune", "--ckpt", "base", "--out", "run", "--overwrite",
                                 "--no-progress"]))
@case("two processes", "resume + resume", needs=("base",))
def _(w):
    first = numpygpt(w, "train", "--resume", "--out", "base", "--no-progress",
                     "--max-iters", "1000000", "--eval-interval", "1000000")
    time.sleep(2.0)
    o = numpygpt(w, "train", "--resume", "--out", "base", "--no-progress").wait(60)
    first.signal(signal.SIGINT)
    why = refused(o, rf"in use by numpygpt train \(pid {first.pid} ")
    return ("second: " + why) if why else stopped(first.wait(120), 130, w, "base")


@case("two processes", "finetune + finetune on one --out", needs=("base",))
def _(w):
    args = ["finetune", "--ckpt", "base", "--out", "ft", "--no-progress", "--max-iters",
            "1000000", "--eval-interval", "10"]
    first = long_run(w, *args, folder="ft")
    return second_refused(w, args, "numpygpt finetune", first, "ft") if first.running() \
        else "the first run ended"


@case("two processes", "sample from a run being trained")
def _(w):
    first = start_training(w)
    o = numpygpt(w, "sample", "--ckpt", "run", "--tokens", "40").wait(60)
    first.signal(signal.SIGTERM)
    return worked(o) or (None if len(o.out.strip()) > 0 else "no text") \
        or stopped(first.wait(120), 143, w)


@case("two processes", "the lock of a killed run is taken over")
def _(w):
    first = start_training(w)
    first.signal(signal.SIGKILL)
    first.wait(30)
    if not (w / "run" / ".numpygpt.lock").exists():
        return "the killed run left no lock to take over"
    o = numpygpt(w, "train", "--resume", "--out", "run", "--no-progress", "--max-iters",
                 "1000000", "--eval-interval", "100000")
    time.sleep(3)
    o.signal(signal.SIGINT)
    o = o.wait(120)
    if "took over" not in o.err:
        return "no message about the stale lock: " + o.err[-300:]
    return stopped(o, 130, w)


@case("two processes", "two course builds into one folder", needs=("course-slow",))
def _(w):
    first = numpygpt(w, "course", "build", "--notebooks", "course-slow", "--out", "site",
                     "--fast")
    wait_for(lambda: any(p.name.startswith("site.tmp-") for p in w.iterdir()), 60)
    o = numpygpt(w, "course", "build", "--notebooks", "course-slow", "--out", "site",
                 "--fast").wait(60)
    first.signal(signal.SIGINT)
    f = first.wait(60)
    return refused(o, rf"in use by numpygpt course build \(pid {first.pid} ") or \
        (None if f.code == 130 and not traceback_in(f) else f"first build: exit {f.code}")


# 2. signals ------------------------------------------------------------------------------------


def signalled(w, sig, code, first=None, run="run"):
    p = first or start_training(w)
    if not p.running():
        return "ended before the signal: " + p.wait(1).err[-300:]
    time.sleep(1.0)  # steps past the checkpoint
    p.signal(sig)
    return stopped(p.wait(120), code, w, run)


case("signals", "train, SIGTERM")(lambda w: signalled(w, signal.SIGTERM, 143))
case("signals", "train, SIGHUP")(lambda w: signalled(w, signal.SIGHUP, 129))
case("signals", "train, SIGINT")(lambda w: signalled(w, signal.SIGINT, 130))
case("signals", "train --arch llama, SIGTERM")(
    lambda w: signalled(w, signal.SIGTERM, 143, start_training(w, "--arch", "llama")))
case("signals", "train --resume, SIGTERM", needs=("base",))(
    lambda w: signalled(w, signal.SIGTERM, 143, long_run(
        w, "train", "--resume", "--out", "base", "--no-progress", "--max-iters", "1000000",
        "--eval-interval", "10", folder="base"), run="base"))


def _finetune_signal(sig, code):
    def run(w):
        p = long_run(w, "finetune", "--ckpt", "base", "--out", "ft", "--no-progress",
                     "--max-iters", "1000000", "--eval-interval", "10", folder="ft")
        return signalled(w, sig, code, p, run="ft")
    return run


case("signals", "finetune, SIGTERM", needs=("base",))(_finetune_signal(signal.SIGTERM, 143))
case("signals", "finetune, SIGHUP", needs=("base",))(_finetune_signal(signal.SIGHUP, 129))


def _one_line_stop(args, sig, code, wait=2.0, needs_file=None):
    def run(w):
        p = numpygpt(w, *args)
        if needs_file:
            wait_for(lambda: (w / needs_file).exists(), 60)
        time.sleep(wait)
        p.signal(sig)
        o = p.wait(120)
        return stopped(o, code, w, run=None) or (
            None if "interrupted" in o.err else "no word of the interruption: " + o.err[-200:])
    return run


case("signals", "sample, SIGTERM", needs=("base",))(
    _one_line_stop(["sample", "--ckpt", "base", "--tokens", "100000"], signal.SIGTERM, 143))
case("signals", "gradcheck, SIGTERM")(
    _one_line_stop(["gradcheck"], signal.SIGTERM, 143))
case("signals", "bench, SIGHUP")(
    _one_line_stop(["bench", "--config", "baby", "--skip-extras"], signal.SIGHUP, 129))
case("signals", "reading a 100 MB corpus, SIGTERM", needs=("big.txt",))(
    _one_line_stop(["train", *TINY, "--data", "big.txt", "--out", "run"], signal.SIGTERM, 143,
                   wait=1.5))
case("signals", "train --eval-iters 1e9, SIGINT")(
    _one_line_stop(["train", *TINY, "--out", "run", "--eval-iters", "1000000000",
                    "--eval-interval", "1"], signal.SIGINT, 130, wait=4.0))


def _course_signal(sig, code):
    def run(w):
        first = numpygpt(w, "course", "build", "--notebooks", "course", "--out", "site",
                         "--fast").wait(120)
        if worked(first):
            return "the first build: " + worked(first)
        before = snapshot(w / "site")
        p = numpygpt(w, "course", "build", "--notebooks", "course-slow", "--out", "site",
                     "--fast")
        wait_for(lambda: any(q.name.startswith("site.tmp-") for q in w.iterdir()), 60)
        time.sleep(3.0)  # the kernel is running the slow cell
        p.signal(sig)
        o = p.wait(60)
        if o.code != code or traceback_in(o) or len(lines(o.err)) != 1 \
                or "died" in o.err or "AssertionError" in o.err:
            return f"exit {o.code}: {o.err[-300:]}"
        left = [q.name for q in w.iterdir() if q.name.startswith("site.")]
        if left:
            return f"left beside the site: {left}"
        return "; ".join(changes(before, snapshot(w / "site"))) or None
    return run


case("signals", "course build, SIGINT", needs=("course", "course-slow"))(
    _course_signal(signal.SIGINT, 130))
case("signals", "course build, SIGTERM", needs=("course", "course-slow"))(
    _course_signal(signal.SIGTERM, 143))


# 3. what --overwrite and the course build replace ---------------------------------------------


RUN_FILES = ("ckpt.npz", "config.json", "tokenizer.json", "log.jsonl", "metrics.json")


def _old_record_kept(w, o, what):
    before = SHARED["base-snapshot"]
    now = snapshot(w / "base")
    lost = [f for f in RUN_FILES if now.get(f) != before.get(f)]
    return f"{what}; the old run's {', '.join(lost)} changed" if lost else None


@case("overwrite", "--overwrite whose first save fails (file too large)", needs=("base",))
def _(w):
    o = numpygpt(w, "train", *TINY, "--out", "base", "--overwrite", "--max-iters", "6",
                 "--eval-interval", "3", fsize=64 * 1024).wait(120)
    return refused(o, "(?i)too large|no space|cannot") or _old_record_kept(w, o, "refused")


@case("overwrite", "--overwrite killed before its first save", needs=("base", "big.txt"))
def _(w):
    p = numpygpt(w, "train", *TINY, "--out", "base", "--overwrite", "--data", "big.txt")
    time.sleep(1.0)  # reading the corpus: the new run has saved nothing yet
    p.signal(signal.SIGKILL)
    p.wait(30)
    return _old_record_kept(w, None, "killed")


@case("overwrite", "finetune --overwrite whose first save fails", needs=("base", "ft"))
def _(w):
    before = snapshot(w / "ft")
    o = numpygpt(w, "finetune", "--ckpt", "base", "--out", "ft", "--overwrite", "--no-progress",
                 "--max-iters", "4", "--eval-interval", "2", "--seed", "5",
                 fsize=64 * 1024).wait(120)
    return refused(o, "(?i)too large|no space|cannot") or (
        "; ".join(c for c in changes(before, snapshot(w / "ft")) if ".numpygpt.lock" not in c)
        or None)


@case("overwrite", "--overwrite keeps the user's own files in the run folder", needs=("base",))
def _(w):
    write(w / "base", "notes.txt", "my notes")
    o = numpygpt(w, "train", *TINY, "--out", "base", "--overwrite", "--max-iters", "3").wait(120)
    return worked(o) or (None if (w / "base" / "notes.txt").read_text() == "my notes"
                         else "notes.txt changed")


refusal("overwrite", "--overwrite on a ckpt.npz that is not ours", ["train", *TINY, "--out",
        "mine", "--overwrite"], "not a numpygpt checkpoint",
        setup=lambda w: ((w / "mine").mkdir(), write(w / "mine", "ckpt.npz", "my own file")))
refusal("overwrite", "--out a folder of user files", ["train", *TINY, "--out", "mine"],
        "not empty", setup=lambda w: ((w / "mine").mkdir(), write(w / "mine", "a.txt", "x")))
refusal("overwrite", "--out . in a folder of user files", ["train", *TINY, "--out", "."],
        "not empty", setup=lambda w: write(w, "a.txt", "x"))
refusal("overwrite", "--out a file", ["train", *TINY, "--out", "a.txt"], "is a file",
        setup=lambda w: write(w, "a.txt", "x"))


@case("overwrite", "train --out LINK keeps the link")
def _(w):
    (w / "real").mkdir()
    (w / "link").symlink_to("real")
    o = numpygpt(w, "train", *TINY, "--out", "link", "--max-iters", "2").wait(120)
    return worked(o) or (None if (w / "link").is_symlink() and (w / "real" / "ckpt.npz")
                         .exists() else "the link was replaced")


@case("overwrite", "course build --out LINK keeps the link", needs=("course",))
def _(w):
    (w / "real").mkdir()
    (w / "link").symlink_to("real")
    for _ in range(2):  # a build, then a rebuild
        o = numpygpt(w, "course", "build", "--notebooks", "course", "--out", "link",
                     "--fast").wait(120)
        if worked(o):
            return worked(o)
    return None if (w / "link").is_symlink() and (w / "real" / "index.html").exists() \
        else "the link was replaced"


@case("overwrite", "a rebuild keeps the user's files in the site", needs=("course",))
def _(w):
    o = numpygpt(w, "course", "build", "--notebooks", "course", "--out", "site",
                 "--fast").wait(120)
    if worked(o):
        return worked(o)
    write(w / "site", "notes.txt", "mine")
    o = numpygpt(w, "course", "build", "--notebooks", "course", "--out", "site",
                 "--fast").wait(120)
    return worked(o) or (None if (w / "site" / "notes.txt").read_text() == "mine"
                         else "notes.txt lost")


@case("overwrite", "course build --out . is refused before anything runs",
      needs=("course-slow",))
def _(w):
    (w / "empty").mkdir()
    before = snapshot(w)
    o = Proc([PY, "-m", "numpygpt", "course", "build", "--notebooks", "../course-slow",
              "--out", ".", "--fast"], cwd=w / "empty").wait(60)
    return refused(o, "folder you are in", w, before) or (
        None if o.seconds < 20 else f"took {o.seconds:.0f} s")


refusal("overwrite", "course build --out a folder of user files",
        ["course", "build", "--notebooks", "course", "--out", "mine", "--fast"],
        "not a course site", needs=("course",),
        setup=lambda w: ((w / "mine").mkdir(), write(w / "mine", "a.txt", "x")))


# 4. sizes declared by a file or a flag ------------------------------------------------------------


@case("sizes", "train on a 100 MB text file", needs=("big.txt",), slow=True)
def _(w):
    o = numpygpt(w, "train", *TINY, "--data", "big.txt", "--out", "run", "--max-iters", "5",
                 "--eval-iters", "2").wait(900)
    return worked(o)


refusal("sizes", "a 95 MB classification CSV", ["finetune", "--ckpt", "base", "--data",
        "big.csv", "--out", "ft", "--no-progress"], "MB", needs=("base",),
        setup=lambda w: _big_csv(w / "big.csv", 95_000_000))


def _big_csv(path, nbytes):
    row = "a text of a few words to classify by its label,label\n"
    with open(path, "w") as f:
        f.write("text,label\n")
        f.write(row * (nbytes // len(row)))


def _labels_case(ext, n):
    def setup(w):
        with open(w / f"d.{ext}", "w") as f:
            if ext == "csv":
                f.write("text,label\n")
            for i in range(3 * n):
                label = i % n
                if ext == "csv":
                    f.write(f"text number {i},label {label}\n")
                else:
                    f.write(json.dumps({"text": f"text number {i}", "label": label}) + "\n")

    def run(w):
        o = numpygpt(w, "finetune", "--ckpt", "base", "--data", f"d.{ext}", "--out", "ft",
                     "--no-progress", "--max-iters", "2", "--batch-size", "4").wait(600)
        if worked(o):
            return worked(o)
        size = (w / "ft" / "metrics.json").stat().st_size
        return None if size < 1_000_000 else f"metrics.json is {size / 1e6:.0f} MB"
    return setup, run


for _ext, _n in (("csv", 8000), ("jsonl", 12000)):
    _setup, _run = _labels_case(_ext, _n)
    CASES.append(Case("sizes", f"classification with {_n:,} labels ({_ext})", _run, _setup,
                      ("base",), slow=True))


def _lying_meta(key, value, run="base"):
    """A run whose checkpoint's own config (meta.json inside ckpt.npz) says model.key=value."""
    def setup(w):
        import numpy as np

        path = w / run / "ckpt.npz"
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays["meta.json"].tobytes())
        meta["config"]["model"][key] = value
        arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return setup


CASES.append(Case(
    "sizes", "a Llama run with block_size 1e9, sample",
    lambda w: worked(numpygpt(w, "sample", "--ckpt", "llama", "--tokens", "20").wait(120)),
    _lying_meta("block_size", 10**9, "llama"), ("llama",)))


def _hf_llama_positions(n):
    def run(w):
        path = w / "hf-llama" / "config.json"
        config = json.loads(path.read_text())
        config["max_position_embeddings"] = n
        path.write_text(json.dumps(config))
        o = snippet(w, "import numpy as np\nfrom numpygpt import Llama\n"
                    "m = Llama.from_pretrained('hf-llama')\n"
                    "print(m.config.block_size, m.generate(np.array([[1, 2]]), 20).shape)")
        o = o.wait(120)
        return worked(o) or (None if o.out.split() == [str(n), "(1,", "22)"] else o.out)
    return run


for _n in (10**9, 10**12):
    CASES.append(Case("sizes", f"a Llama folder with max_position_embeddings {_n:.0e}, generate",
                      _hf_llama_positions(_n), None, ("hf-llama",)))
refusal("sizes", "sample --ckpt a Hugging Face Llama folder", ["sample", "--ckpt", "hf-llama"],
        "Llama.from_pretrained", needs=("hf-llama",))


def _sparse_safetensors(w, kind):
    """A folder whose model.safetensors declares 51+ GB of consistent tensors (a sparse file:
    no blocks on disk), so that only a check of the sizes against the RAM can refuse it."""
    import numpy as np

    from numpygpt import GPTConfig, LlamaConfig
    from numpygpt.io import hf_llama
    from numpygpt.models.gpt import param_shapes
    from numpygpt.models.llama import llama_param_shapes

    folder = w / "huge"
    folder.mkdir()
    if kind == "gpt2":
        config = {"model_type": "gpt2", "vocab_size": 200_000, "n_positions": 64,
                  "n_embd": 64_000, "n_layer": 1, "n_head": 2}
        shapes = param_shapes(GPTConfig(vocab_size=200_000, block_size=64, n_layer=1,
                                        n_head=2, n_embd=64_000))
    else:
        config = {"model_type": "llama", "vocab_size": 200_000, "hidden_size": 64_000,
                  "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "max_position_embeddings": 64,
                  "tie_word_embeddings": True}
        shapes = hf_llama.hf_shapes(llama_param_shapes(LlamaConfig(
            vocab_size=200_000, block_size=64, n_layer=1, n_head=2, n_kv_head=2,
            n_embd=64_000, intermediate_size=128, tie_embeddings=True)))
    (folder / "config.json").write_text(json.dumps(config))
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)


refusal("sizes", "a GPT-2 safetensors declaring 51 GB", ["sample", "--ckpt", "huge"],
        "GB", setup=lambda w: _sparse_safetensors(w, "gpt2"))
refusal("sizes", "a Llama safetensors declaring 51 GB", "from numpygpt import Llama\n"
        "Llama.from_pretrained('huge')", "GB", api=True,
        setup=lambda w: _sparse_safetensors(w, "llama"))


def _lying_npz(w):
    """A run whose ckpt.npz holds an array whose header declares 40 GB."""
    import zipfile

    use(w, "base", "run")
    with zipfile.ZipFile(w / "run" / "ckpt.npz", "a") as z:
        header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000,), }")
        header += " " * (118 - len(header)) + "\n"
        z.writestr("huge.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                   + header.encode() + b"\0" * 64)


refusal("sizes", "a ckpt.npz declaring a 40 GB array", ["sample", "--ckpt", "run"],
        "", setup=_lying_npz, needs=("base",))


def _config_field(run, path, value):
    def setup(w):
        p = w / run / "config.json"
        config = json.loads(p.read_text())
        d = config
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        p.write_text(json.dumps(config))
    return setup


for _key, _v in (("n_layer", 10**6), ("n_embd", 10**7), ("block_size", 10**12),
                 ("vocab_size", 10**10)):
    refusal("sizes", f"a checkpoint whose config says {_key} {_v:.0e}",
            ["sample", "--ckpt", "base"], "", setup=_lying_meta(_key, _v), needs=("base",))
refusal("sizes", "a GPT-2 config.json with n_positions 1e9", ["sample", "--ckpt", "hf-gpt2"],
        "", setup=_config_field("hf-gpt2", ("n_positions",), 10**9), needs=("hf-gpt2",))
refusal("sizes", "sample --tokens 1e9", ["sample", "--ckpt", "base", "--tokens",
        "1000000000"], "and 100,000", needs=("base",))
refusal("sizes", "sample --tokens 1e9 (Llama)", ["sample", "--ckpt", "llama", "--tokens",
        "1000000000"], "and 100,000", needs=("llama",))
refusal("sizes", "train --sample-tokens 1e9", ["train", "--preset", "tiny", "--out", "run",
        "--sample-tokens", "1000000000"], "and 100,000")
refusal("sizes", "bench --threads 100000", ["bench", "--threads", "100000"], "at most")
refusal("sizes", "bench --rounds 1e9", ["bench", "--rounds", "1000000000"], "at most")
refusal("sizes", "bench --steps 1e9", ["bench", "--steps", "1000000000"], "at most")
refusal("sizes", "train --block-size 1e9", ["train", *TINY, "--out", "run", "--block-size",
        "1000000000"], "")
refusal("sizes", "train --n-embd 1e6", ["train", *TINY, "--out", "run", "--n-embd", "1000000",
        "--n-head", "1"], "")
refusal("sizes", "train --n-layer 1e6", ["train", *TINY, "--out", "run", "--n-layer",
        "1000000"], "")
refusal("sizes", "train --batch-size 1e9", ["train", *TINY, "--out", "run", "--batch-size",
        "1000000000"], "")
refusal("sizes", "train --vocab-size 1e9 (BPE)", ["train", *TINY, "--out", "run",
        "--tokenizer", "bpe", "--vocab-size", "1000000000"], "")
refusal("sizes", "finetune --max-new-tokens 1e9", ["finetune", "--ckpt", "base", "--task",
        "instruct", "--out", "ft", "--max-new-tokens", "1000000000", "--no-progress"], "",
        needs=("base",))
refusal("sizes", "finetune --eval-generate 1e9", ["finetune", "--ckpt", "base", "--task",
        "instruct", "--out", "ft", "--eval-generate", "1000000000", "--no-progress"], "",
        needs=("base",))


# 5. MPI ranks that disagree -----------------------------------------------------------------------


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    path = Path(PY).parent / "mpiexec"
    return str(path) if path.exists() else shutil.which("mpiexec")


def _ranks(flag, a, b):
    def run(w):
        common = ["-m", "numpygpt", "train", *TINY, "--out", "run", "--max-iters", "6"]
        o = Proc([_mpiexec(), "-n", "1", PY, *common, flag, a, ":", "-n", "1", PY, *common,
                  flag, b], cwd=w).wait(180)
        errors = [ln for ln in o.err.splitlines() if "error:" in ln]
        if o.timed_out:
            return "hung"
        if o.code == 0 or traceback_in(o) or "truncated" in o.err.lower():
            return f"exit {o.code}: {o.err[-300:]}"
        if len(errors) != 1 or flag not in errors[0]:
            return f"{len(errors)} error lines: {o.err[-300:]}"
        return "the run folder was made" if (w / "run").exists() else None
    return run


for _flag, _a, _b in (("--max-iters", "6", "8"), ("--eval-interval", "2", "3"),
                      ("--batch-size", "4", "8"), ("--lr", "1e-3", "2e-3"), ("--seed", "1", "2"),
                      ("--weight-decay", "0.1", "0"), ("--grad-clip", "1", "0.5")):
    CASES.append(Case("mpi", f"ranks with different {_flag}", _ranks(_flag, _a, _b), mpi=True))


@case("mpi", "ranks that agree", mpi=True)
def _(w):
    o = Proc([_mpiexec(), "-n", "2", PY, "-m", "numpygpt", "train", *TINY, "--out", "run",
              "--max-iters", "4", "--batch-size", "4"], cwd=w).wait(180)
    return worked(o)


# 6. what was a traceback, or silently accepted -------------------------------------------------


def _few_per_class(w, ext):
    rows = [("hello world", "a"), ("bye world", "b"), ("good day", "a")]
    if ext == "csv":
        write(w, "d.csv", "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    elif ext == "jsonl":
        write(w, "d.jsonl", "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    else:
        write(w, "d.json", json.dumps([{"text": t, "label": y} for t, y in rows]))


for _ext in ("csv", "jsonl", "json"):
    refusal("tracebacks", f"classification, two examples per class ({_ext})",
            ["finetune", "--ckpt", "base", "--data", f"d.{_ext}", "--out", "ft", "--no-progress"],
            "too few examples", needs=("base",),
            setup=lambda w, _e=_ext: _few_per_class(w, _e))
for _f in ("\u00b2", "\u2460", "1\u00b2", "\u0663"):
    refusal("tracebacks", f"--freeze {_f}", ["finetune", "--ckpt", "base", "--out", "ft",
            "--freeze", _f, "--no-progress"], "--freeze", needs=("base",))

BAD = os.fsdecode(b"r\xffn")  # a file name that is not UTF-8


def _bad_name_case(name, args, needs=(), setup=None):
    def run(w):
        if setup:
            setup(w)
        before = snapshot(w)
        argv = [PY, "-m", "numpygpt", *[os.fsencode(a) if a == BAD else a for a in args]]
        return refused(Proc(argv, cwd=w).wait(120), "", w, before)
    CASES.append(Case("tracebacks", name, run, None, needs))


_bad_name_case("train --out, a name that is not UTF-8", ["train", *TINY, "--out", BAD])
_bad_name_case("train --data, a name that is not UTF-8", ["train", *TINY, "--data", BAD,
               "--out", "run"], setup=lambda w: (w / BAD).write_text("some text " * 99))
_bad_name_case("train --resume, a name that is not UTF-8", ["train", "--resume", "--out", BAD,
               "--no-progress"], needs=("base",),
               setup=lambda w: os.rename(w / "base", w / BAD))
_bad_name_case("finetune --out, a name that is not UTF-8", ["finetune", "--ckpt", "base",
               "--out", BAD, "--no-progress"], needs=("base",))
refusal("tracebacks", "GPT-2 format for a Llama config",
        "from numpygpt import LlamaConfig\nfrom numpygpt.io import hf_gpt2\n"
        "hf_gpt2.hf_config(LlamaConfig())", "Llama", api=True)
refusal("tracebacks", "GPT.from_pretrained of a Llama folder",
        "from numpygpt import GPT\nGPT.from_pretrained('hf-llama')", "", api=True,
        needs=("hf-llama",))
refusal("tracebacks", "Llama.from_pretrained of a GPT-2 folder",
        "from numpygpt import Llama\nLlama.from_pretrained('hf-gpt2')", "", api=True,
        needs=("hf-gpt2",))
refusal("tracebacks", "a bogus NUMPYGPT_KERNELS", ["train", *TINY, "--out", "run"],
        "NUMPYGPT_KERNELS", env={"NUMPYGPT_KERNELS": "bogus"})

refusal("silent", "a CSV with a duplicate column", ["finetune", "--ckpt", "base", "--data",
        "d.csv", "--out", "ft", "--no-progress"], "twice", needs=("base",),
        setup=lambda w: write(w, "d.csv", "text,label,text\n" + "x,a,y\n" * 10))


@case("silent", "finetune --resume after the data file was edited", needs=("base",))
def _(w):
    write(w, "d.csv", "text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    o = numpygpt(w, "finetune", "--ckpt", "base", "--data", "d.csv", "--out", "ft",
                 "--no-progress", "--max-iters", "2").wait(120)
    if worked(o):
        return "the first run: " + worked(o)
    write(w, "d.csv", (w / "d.csv").read_text() + "text 99,a\n")
    before = snapshot(w)
    o = numpygpt(w, "finetune", "--out", "ft", "--resume", "--max-iters", "3",
                 "--no-progress").wait(120)
    return refused(o, "has changed since", w, before)


@case("silent", "sample --temperature 1e-310", needs=("base",))
def _(w):
    o = numpygpt(w, "sample", "--ckpt", "base", "--tokens", "40", "--temperature",
                 "1e-310").wait(60)
    greedy = numpygpt(w, "sample", "--ckpt", "base", "--tokens", "40", "--top-k", "1").wait(60)
    if worked(o) or worked(greedy):
        return worked(o) or worked(greedy)
    if o.err.strip():
        return "stderr: " + o.err[-200:]
    return None if o.out == greedy.out else "not the greedy text"


refusal("silent", "--min-lr above --lr", ["train", *TINY, "--out", "run", "--lr", "1e-4",
        "--min-lr", "1e-3"], "min-lr")
refusal("silent", "a preset's min-lr above --lr", ["train", "--preset", "baby", "--out", "run",
        "--lr", "5e-5", "--no-progress"], "min-lr")


@case("silent", "a BPE tokenizer smaller than asked")
def _(w):
    write(w, "small.txt", "hello world, hello numpy. " * 200)
    o = numpygpt(w, "train", *TINY, "--tokenizer", "bpe", "--vocab-size", "100000", "--data",
                 "small.txt", "--out", "run", "--max-iters", "1").wait(120)
    return worked(o, "warning: the BPE tokenizer learned")


# 7. messages that name the line ------------------------------------------------------------------


refusal("messages", "a bad character on line 7 of a CSV", ["finetune", "--ckpt", "base",
        "--data", "d.csv", "--out", "ft", "--no-progress"], "line 7", needs=("base",),
        setup=lambda w: write(w, "d.csv", "text,label\n" + "".join(
            f"text {i},{'ab'[i % 2]}\n" for i in range(5)) + "bad \u2603 char,a\n"
            + "".join(f"more {i},{'ab'[i % 2]}\n" for i in range(10))))
refusal("messages", "a bad character on line 4 of a JSONL", ["finetune", "--ckpt", "base",
        "--data", "d.jsonl", "--out", "ft", "--no-progress"], "line 4", needs=("base",),
        setup=lambda w: write(w, "d.jsonl", "".join(json.dumps(
            {"text": "bad \u2603" if i == 3 else f"text {i}", "label": "ab"[i % 2]}) + "\n"
            for i in range(16))))
refusal("messages", "a bad character on line 3 of an instruction file",
        ["finetune", "--ckpt", "base", "--task", "instruct", "--data", "qa.jsonl", "--out", "ft",
         "--no-progress"], "line 3", needs=("base",),
        setup=lambda w: write(w, "qa.jsonl", "".join(json.dumps(
            {"instruction": f"say {i}", "output": "\u2603" if i == 2 else f"it is {i}"}) + "\n"
            for i in range(12))))
refusal("messages", "an instruction file of one example",
        ["finetune", "--ckpt", "base", "--task", "instruct", "--data", "qa.jsonl", "--out", "ft",
         "--no-progress"], "too few examples", needs=("base",),
        setup=lambda w: write(w, "qa.jsonl", '{"instruction": "say hi", "output": "hi"}\n'))
refusal("messages", "a CSV row with a field too many", ["finetune", "--ckpt", "base",
        "--data", "d.csv", "--out", "ft", "--no-progress"], "line 5", needs=("base",),
        setup=lambda w: write(w, "d.csv", "text,label\n" + "a,b\n" * 3 + "a,b,c\n" + "x,y\n" * 9))


# 8. the earlier bad-input cases ------------------------------------------------------------------


def _truncate(run, name, keep):
    def setup(w):
        p = w / run / name
        p.write_bytes(p.read_bytes()[:keep])
    return setup


refusal("earlier", "--resume from a truncated ckpt.npz", ["train", "--resume", "--out", "base",
        "--no-progress"], "", needs=("base",), setup=_truncate("base", "ckpt.npz", 5000))
# config.json and tokenizer.json are copies for people: the checkpoint holds both
CASES.append(Case("earlier", "--resume with a truncated config.json (a copy)", lambda w: worked(
    numpygpt(w, "train", "--resume", "--out", "base", "--no-progress", "--max-iters", "6")
    .wait(120)) or (None if json.loads((w / "base" / "config.json").read_text()) else "?"),
    _truncate("base", "config.json", 40), ("base",)))
CASES.append(Case("earlier", "sample with a truncated tokenizer.json (a copy)", lambda w: worked(
    numpygpt(w, "sample", "--ckpt", "base", "--tokens", "20").wait(60)),
    _truncate("base", "tokenizer.json", 30), ("base",)))
refusal("earlier", "--resume where there is no run", ["train", "--resume", "--out", "nothing",
        "--no-progress"], "")
refusal("earlier", "--data a missing file", ["train", *TINY, "--data", "missing.txt", "--out",
        "run"], "missing.txt")
refusal("earlier", "--data a folder", ["train", *TINY, "--data", "folder", "--out", "run"],
        "folder", setup=lambda w: (w / "folder").mkdir())
refusal("earlier", "--data an empty file", ["train", *TINY, "--data", "e.txt", "--out", "run"],
        "e.txt", setup=lambda w: write(w, "e.txt", ""))
refusal("earlier", "--data a file that is not UTF-8", ["train", *TINY, "--data", "b.txt",
        "--out", "run"], "UTF-8", setup=lambda w: (w / "b.txt").write_bytes(b"ok \xff\xfe" * 99))
refusal("earlier", "sample --ckpt a missing folder", ["sample", "--ckpt", "nothing"], "")
refusal("earlier", "sample --ckpt a folder of user files", ["sample", "--ckpt", "mine"], "",
        setup=lambda w: ((w / "mine").mkdir(), write(w / "mine", "a.txt", "x")))
refusal("earlier", "sample --prompt with characters the model never saw",
        ["sample", "--ckpt", "base", "--prompt", "\u2603\u2603"], "", needs=("base",))
refusal("earlier", "train --out where nothing can be written", ["train", *TINY, "--out",
        "/proc/numpygpt-run"], "")
refusal("earlier", "finetune --ckpt a run that is not one", ["finetune", "--ckpt", "mine",
        "--out", "ft", "--no-progress"], "",
        setup=lambda w: ((w / "mine").mkdir(), write(w / "mine", "config.json", "{}")))
refusal("earlier", "an unknown preset", ["train", "--preset", "huge"], "huge")
refusal("earlier", "a negative learning rate", ["train", *TINY, "--out", "run", "--lr", "-1"],
        "lr")


@case("earlier", "a full disk at the first save of a new run")
def _(w):
    o = numpygpt(w, "train", *TINY, "--out", "run", "--max-iters", "4", "--eval-interval", "2",
                 fsize=64 * 1024).wait(120)
    why = refused(o, "(?i)too large|no space|cannot")
    left = [p.name for p in (w / "run").iterdir()] if (w / "run").exists() else []
    partial = [n for n in left if n.endswith(".tmp") or n == "ckpt.npz"]
    return why or (f"left {partial}" if partial else None)


# --- the shared things, made once ----------------------------------------------------------------


def make_shared(root, names):
    """Train, save and write what the selected cases copy in (only what they need)."""
    s = root / "_shared"
    s.mkdir(exist_ok=True)

    def cli(*args):
        o = numpygpt(s, *args).wait(600)
        if o.code != 0:
            raise SystemExit(f"making the shared {args[:3]} failed: {o.err[-2000:]}")

    if {"base", "ft"} & names:
        cli("train", *TINY, "--out", "base", "--max-iters", "4")
        SHARED["base"] = s / "base"
        SHARED["base-snapshot"] = snapshot(s / "base")
    if "ft" in names:
        cli("finetune", "--ckpt", "base", "--out", "ft", "--no-progress", "--max-iters", "2")
        SHARED["ft"] = s / "ft"
    if "llama" in names:
        cli("train", *TINY, "--arch", "llama", "--out", "llama", "--max-iters", "2")
        SHARED["llama"] = s / "llama"
    if {"hf-gpt2", "hf-llama"} & names:
        code = ("from numpygpt import GPT, GPTConfig, Llama, LlamaConfig\n"
                "GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8),"
                " seed=0).save_pretrained('hf-gpt2')\n"
                "Llama(LlamaConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, "
                "n_kv_head=1, n_embd=8, intermediate_size=16)).save_pretrained('hf-llama')\n")
        o = Proc([PY, "-c", code], cwd=s).wait(120)
        if o.code != 0:
            raise SystemExit(f"saving the HF folders failed: {o.err[-2000:]}")
        SHARED["hf-gpt2"], SHARED["hf-llama"] = s / "hf-gpt2", s / "hf-llama"
    if "big.txt" in names:
        line = "the quick brown fox jumps over the lazy dog, np.array(x) -> y; \u00e9 \u03bb\n"
        with open(s / "big.txt", "w", encoding="utf-8") as f:
            f.write(line * (100_000_000 // len(line.encode())))
        SHARED["big.txt"] = s / "big.txt"
    for name, code in (("course", "1 + 1"), ("course-slow", "import time\ntime.sleep(120)")):
        if name in names:
            _tiny_course(s / name, code)
            SHARED[name] = s / name


def _tiny_course(folder, code):
    """A course of one notebook (and its empty solutions file)."""
    folder.mkdir()
    (folder / "solutions").mkdir()
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "cells": [{"cell_type": "markdown", "id": "a", "metadata": {},
                     "source": "# 00 \u00b7 X\n\nText."},
                    {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": code}]}
    (folder / "00_x.ipynb").write_text(json.dumps(nb))
    (folder / "solutions" / "00_x.py").write_text("")


# --- the battery --------------------------------------------------------------------------------


def run_cases(cases, root, log=print):
    """Run the cases, each in a fresh folder under root; returns their rows."""
    names = {n for c in cases for n in c.needs}
    if any(c.needs and "base" in c.needs for c in cases) or any("ft" in c.needs for c in cases):
        names.add("base")
    make_shared(root, names)
    rows = []
    for i, c in enumerate(cases):
        w = root / f"{i:03d}"
        w.mkdir()
        for name in c.needs:
            use(w, name)
        t0, PEAK[0] = time.monotonic(), 0.0
        try:
            if c.setup:
                c.setup(w)
            why = c.run(w)
        except Exception as e:  # noqa: BLE001 (the harness reports, and goes on)
            why = f"the harness failed: {type(e).__name__}: {e}"
        row = {"family": c.family, "case": c.name, "handled": why is None, "why": why,
               "seconds": round(time.monotonic() - t0, 1), "peak_rss_mb": round(PEAK[0])}
        rows.append(row)
        log(f"{'ok  ' if why is None else 'FAIL'} {row['seconds']:6.1f} s {row['peak_rss_mb']:5d} "
            f"MB  {c.family:<14} {c.name}" + (f"\n        {why}" if why else ""))
    return rows


def select(only=None, mpi=None, slow=True):
    mpi = _mpiexec() is not None if mpi is None else mpi
    chosen = [c for c in CASES if (mpi or not c.mpi) and (slow or not c.slow)]
    if only:
        chosen = [c for c in chosen if re.search(only, f"{c.family}: {c.name}", re.I)]
    return chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="a regular expression on 'family: case'")
    ap.add_argument("--list", action="store_true", help="list the cases, run none")
    ap.add_argument("--quick", action="store_true", help="skip the slow cases (100 MB inputs)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--keep", action="store_true", help="keep the case folders")
    args = ap.parse_args(argv)
    cases = select(args.only, slow=not args.quick)
    if args.list:
        for c in cases:
            print(f"{c.family:<14} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    root = Path(tempfile.mkdtemp(prefix="numpygpt-battery-"))
    env_cache = root / "_cache"
    os.environ.setdefault("NUMPYGPT_CACHE", str(env_cache))
    os.environ.setdefault("PYTHONPATH", str(REPO))
    t0 = time.monotonic()
    try:
        rows = run_cases(cases, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    failed = [r for r in rows if not r["handled"]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases handled in "
          f"{time.monotonic() - t0:.0f} s (address space {LIMIT / GiB:.1f} GiB per case)"
          + ("" if _mpiexec() else "; no mpiexec: the MPI cases did not run"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
