"""GPT-2's checkpoints on the Hugging Face Hub: their names, and downloading them once.

    folder = resolve("gpt2")        # <cache>/hf/gpt2, downloaded on first use
    folder = resolve("my/folder")   # an existing folder, as it is

The files go into default_cache_dir()/hf/<name> ($NUMPYGPT_CACHE or ~/.cache/numpygpt), each
written atomically, so a file that exists is complete. Without internet a user downloads
them by hand (the error message says where from and where to).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from .checkpoint import CheckpointError
from .files import atomic_open, default_cache_dir

HF_BASE_URL = "https://huggingface.co"  # the HF_ENDPOINT environment variable overrides it
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_REPO_OWNER = "openai-community"
GPT2_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")


def gpt2_name(name):
    """The short GPT-2 name ("gpt2", ...) for "gpt2" or "openai-community/gpt2", else None."""
    if not isinstance(name, str):
        return None
    owner, _, short = name.rpartition("/")
    if owner in ("", GPT2_REPO_OWNER) and short in GPT2_NAMES:
        return short
    return None


def gpt2_cache_folder(name, cache_dir=None):
    """Where download_gpt2 puts a model: <cache>/hf/<name>, <cache> = cache_dir or
    io.files.default_cache_dir() ($NUMPYGPT_CACHE or ~/.cache/numpygpt)."""
    short = gpt2_name(name)
    if short is None:
        raise ValueError(f"{name!r} is not a GPT-2 name (one of {', '.join(GPT2_NAMES)})")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "hf" / short


def resolve(path_or_name, cache_dir=None):
    """The folder meant by `path_or_name`: an existing folder as it is, or a GPT-2 name's
    cache folder (downloading what it lacks). A folder wins over a name it shadows."""
    path = Path(os.fspath(path_or_name)).expanduser()
    if path.is_dir():
        return path
    if gpt2_name(os.fspath(path_or_name)) is not None:
        return download_gpt2(os.fspath(path_or_name), cache_dir)
    what = "a file, not a folder" if path.exists() else "no such folder"
    raise CheckpointError(f"'{path_or_name}' is {what}: give a folder with config.json and "
                          f"model.safetensors, or one of the names {', '.join(GPT2_NAMES)}")


def download_gpt2(name, cache_dir=None, timeout=30, progress=True):
    """Download GPT-2's config.json, vocab.json, merges.txt and model.safetensors once.

    Files already in the cache folder are used as they are: each one was written atomically
    (temp file + os.replace), so a file that exists is complete. A failed download leaves
    nothing behind but the files that were complete before it.

    Inputs:
    - name: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl" (or "openai-community/gpt2", ...)
    - cache_dir: see gpt2_cache_folder
    - timeout: socket timeout in seconds
    - progress: show a progress bar (tqdm, only on a terminal)

    Returns the folder. Raises CheckpointError saying what to do when a file cannot be fetched.
    """
    short = gpt2_name(name)
    folder = gpt2_cache_folder(short, cache_dir)
    repo = f"{GPT2_REPO_OWNER}/{short}"
    base = (os.environ.get("HF_ENDPOINT") or HF_BASE_URL).rstrip("/")  # e.g. a mirror
    for fname in GPT2_FILES:
        path = folder / fname
        if path.is_file():
            continue
        url = f"{base}/{repo}/resolve/main/{fname}"
        try:
            _fetch(url, path, timeout, progress)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()
                reason = e  # "HTTP Error 404: Not Found"
            else:
                reason = getattr(e, "reason", e)
            raise CheckpointError(
                f"could not download {url} ({reason}); without internet, download "
                f"{', '.join(GPT2_FILES)} by hand from {HF_BASE_URL}/{repo}/tree/main into "
                f"'{folder}' (then '{short}' finds them), or into any folder and pass that "
                f"folder's path instead of '{name}'") from None
    return folder


def _fetch(url, path, timeout, progress):
    """Stream `url` into `path` atomically, checking the length the server announced."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "numpygpt"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None and total.isdigit() else None
        got = 0
        with atomic_open(path) as f, tqdm(total=total, unit="B", unit_scale=True,
                                          desc=path.name, disable=None if progress else True,
                                          leave=False) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            if total is not None and got != total:  # raising here discards the temp file
                raise OSError(f"connection closed after {got:,} of {total:,} bytes")




__all__ = ["resolve", "download_gpt2", "gpt2_name", "gpt2_cache_folder", "GPT2_NAMES",
           "HF_BASE_URL"]
