"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2.

Text -> UTF-8 bytes -> tokens. The vocabulary starts with the 256 single bytes, so any text can
be encoded and nothing is ever "unknown". Training then repeats one step: find the most frequent
pair of adjacent tokens and add their concatenation as a new token (a *merge*). Encoding applies
the learned merges in the order they were learned (their *rank*), as GPT-2's `bpe()` does.

Before any merging the text is cut into chunks with GPT-2's regex (words with their leading
space, numbers, runs of punctuation, whitespace), and merges never cross a chunk boundary: so
"dog." and "dog!" share the token " dog" instead of learning "dog." and "dog!" separately.

GPT-2's files (vocab.json: token string -> id, merges.txt: one "left right" pair per line) write
each byte as a printable character (`bytes_to_unicode`): the space 0x20 becomes "Ġ", so " the"
is written "Ġthe". Inside this module tokens are bytes; the printable form is only for files.

Shapes: N tokens of a text. Ids are int64.
"""

from __future__ import annotations

import functools
import heapq
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..io.files import (
    MAX_TOKENIZER_BYTES,
    atomic_write_json,
    atomic_write_text,
    quote,
    read_json,
    read_text,
)
from .tokenizer_base import Tokenizer, TokenizerError

# GPT-2's pre-tokenizer: contractions, words (with one leading space), numbers, punctuation runs,
# and whitespace (a run of spaces keeps its last space for the word that follows: \s+(?!\S)).
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

_CACHE_LIMIT = 1 << 18  # chunks remembered by encode (a 1 MB English text has ~30k distinct)


@functools.cache
def bytes_to_unicode():
    """GPT-2's table byte -> printable character, used to write tokens in vocab.json/merges.txt.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the 68 others (control bytes, space, DEL, NBSP, soft hyphen) are moved, in
    order, to the characters U+0100, U+0101, ... so the space 0x20 becomes 'Ġ' (U+0120).

    Returns:
    - table: dict int (0..255) -> str of length 1, a bijection
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    moved = (b for b in range(256) if b not in table)
    for offset, b in enumerate(moved):
        table[b] = chr(256 + offset)
    return table


@functools.cache
def _unicode_to_bytes():
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token):
    """bytes -> GPT-2's printable form, e.g. b' the' -> 'Ġthe'."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(s):
    """GPT-2's printable form -> bytes, e.g. 'Ġthe' -> b' the'. ValueError for a character
    outside the 256 of `bytes_to_unicode`."""
    table = _unicode_to_bytes()
    try:
        return bytes(table[c] for c in s)
    except KeyError as e:
        raise TokenizerError(f"token {s!r:.60} has the character {e.args[0]!r}, which is not "
                             f"one of GPT-2's 256 byte characters") from None


@functools.cache
def _split_regex():
    try:
        import regex  # the stdlib `re` has no \p{L} (letter) or \p{N} (number) classes
    except ImportError:
        raise ImportError("the BPE tokenizer needs the 'regex' package: pip install regex") \
            from None
    return regex.compile(GPT2_SPLIT_PATTERN)


def pre_split(text):
    """Cut text into GPT-2's chunks; merges never cross their boundaries.

    Inputs:
    - text: str

    Returns:
    - chunks: list of str, whose concatenation is `text`
      e.g. "Hello world's 42!!" -> ['Hello', ' world', "'s", ' 42', '!!']
    """
    return _split_regex().findall(text)


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in `ids` by `new_id`, scanning left to right.

    Occurrences do not overlap: with pair (a, a), [a, a, a] becomes [new_id, a].

    Inputs:
    - ids: list of int
    - pair: (int, int)
    - new_id: int

    Returns:
    - out: a new list of int
    """
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: `train` one on a text, or load GPT-2's own files.

    Inputs:
    - vocab: list of bytes, vocab[i] is the byte string of token i; unique, and it must hold
      all 256 single bytes (in any order: GPT-2's ids for them are not the byte values)
    - merges: list of (left_id, right_id) pairs in rank order; the merge of a pair makes the
      token whose bytes are vocab[left] + vocab[right], which must be in vocab
    """

    kind = "bpe"

    def __init__(self, vocab, merges):
        vocab = [bytes(t) for t in vocab]
        index = {}
        for i, t in enumerate(vocab):
            if not t:
                raise TokenizerError(f"token {i} is empty")
            if t in index:
                raise TokenizerError(f"tokens {index[t]} and {i} are the same bytes {t!r}")
            index[t] = i
        missing = [b for b in range(256) if bytes([b]) not in index]
        if missing:
            raise TokenizerError(f"the vocabulary lacks {len(missing)} of the 256 single bytes "
                                 f"(e.g. byte 0x{missing[0]:02x}), so some text could not be "
                                 "encoded")
        ranks = {}  # (left, right) -> (rank, id of the merged token)
        for rank, pair in enumerate(merges):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                            for i in pair)):
                raise TokenizerError(f"merge {rank} must be a pair of token ids, got {pair!r}")
            a, b = int(pair[0]), int(pair[1])
            if not (0 <= a < len(vocab) and 0 <= b < len(vocab)):
                raise TokenizerError(f"merge {rank} ({a}, {b}) refers to a token id outside "
                                     f"[0, {len(vocab)})")
            if (a, b) in ranks:
                raise TokenizerError(f"merge {rank} ({a}, {b}) repeats merge {ranks[a, b][0]}")
            new = index.get(vocab[a] + vocab[b])
            if new is None:
                raise TokenizerError(f"merge {rank} ({a}, {b}) makes {vocab[a] + vocab[b]!r}, "
                                     f"which is not in the vocabulary")
            ranks[a, b] = (rank, new)
        self._vocab = vocab
        self._merges = [(a, b) for a, b in ranks]  # dicts keep insertion (= rank) order
        self._ranks = ranks
        self._byte_ids = [index[bytes([b])] for b in range(256)]  # byte value -> token id
        self._cache = {}  # chunk -> its token ids

    # --- training ------------------------------------------------------------------------------

    @classmethod
    def train(cls, text, vocab_size=512):
        """Learn vocab_size - 256 merges from `text`, most frequent pair first.

        Ties go to the smallest pair (left id, then right id), so training is deterministic.
        Ids 0..255 are the bytes themselves and merge k makes id 256 + k. A text too short to
        offer vocab_size - 256 merges gives a smaller vocabulary.

        Inputs:
        - text: str, the training text
        - vocab_size: int >= 256, the number of tokens wanted

        Returns:
        - tokenizer: BPETokenizer
        """
        if not isinstance(text, str):
            raise TypeError(f"train takes a str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (one token per byte), got {vocab_size}")
        # Count each distinct chunk once: a 1 MB text has ~200k chunks but only ~20k distinct.
        chunk_counts = Counter(pre_split(text))
        words, freqs = [], []  # token ids of each distinct chunk, and how often it occurs
        for chunk, n in chunk_counts.items():
            w = list(_utf8(chunk))
            if len(w) >= 2:  # a single byte has no pair to merge
                words.append(w)
                freqs.append(n)

        # Pair statistics, kept up to date incrementally: each merge only touches the words
        # that contain the pair, instead of recounting the whole text.
        counts = defaultdict(int)  # pair -> occurrences in the text
        where = defaultdict(set)  # pair -> indices of the words that contain it
        for wi, (w, n) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(w):
                counts[pair] += n
                where[pair].add(wi)
        # Max-heap of (-count, pair): the smallest entry is the most frequent pair, ties broken
        # by the smallest pair. Outdated entries stay in the heap and are skipped when popped.
        heap = [(-n, pair) for pair, n in counts.items()]
        heapq.heapify(heap)

        vocab = [bytes([b]) for b in range(256)]
        index = {t: i for i, t in enumerate(vocab)}
        merges = []
        while len(vocab) < vocab_size and heap:
            neg, pair = heapq.heappop(heap)
            if counts.get(pair, 0) != -neg:
                continue  # outdated entry
            joined = vocab[pair[0]] + vocab[pair[1]]
            new = index.get(joined)
            if new is None:  # always, in practice; else reuse the id: files name tokens by bytes
                new = index[joined] = len(vocab)
                vocab.append(joined)
            merges.append(pair)
            changed = set()
            for wi in where.pop(pair):
                w, n = words[wi], freqs[wi]
                w2 = merge(w, pair, new)
                old_pairs, new_pairs = Counter(pairwise(w)), Counter(pairwise(w2))
                for q, k in old_pairs.items():
                    counts[q] -= k * n
                    if q not in new_pairs and q != pair:
                        where[q].discard(wi)
                for q, k in new_pairs.items():
                    counts[q] += k * n
                    where[q].add(wi)
                changed.update(old_pairs)
                changed.update(new_pairs)
                words[wi] = w2
            for q in changed:
                if counts[q] > 0:
                    heapq.heappush(heap, (-counts[q], q))
                else:
                    del counts[q]
        return cls(vocab, merges)

    # --- encoding and decoding -----------------------------------------------------------------

    @property
    def vocab_size(self):
        """Number of tokens (V); ids are 0..V-1."""
        return len(self._vocab)

    @property
    def merges(self):
        """The merges as (left_id, right_id) pairs, in rank order (a new list)."""
        return list(self._merges)

    @property
    def vocab(self):
        """The tokens as bytes: vocab[i] is token i (a new list)."""
        return list(self._vocab)

    def _bpe(self, chunk):
        """Token ids of one chunk: start from its bytes, then apply the lowest-ranked merge
        present, all its occurrences at once, until no pair of neighbours has a merge."""
        ids = [self._byte_ids[b] for b in _utf8(chunk)]
        ranks = self._ranks
        while len(ids) >= 2:
            best = min((ranks[p] + p for p in pairwise(ids) if p in ranks), default=None)
            if best is None:
                break
            _, new, a, b = best
            ids = merge(ids, (a, b), new)
        return ids

    def encode(self, text):
        """Map a string to its token ids.

        Inputs:
        - text: str (any Unicode text; a lone surrogate, which UTF-8 cannot encode, is a
          ValueError)

        Returns:
        - ids: int64 array of shape (N,)
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        cache, ids = self._cache, []
        for chunk in pre_split(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._bpe(chunk)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids += chunk_ids
        return np.array(ids, dtype=np.int64)

    def decode(self, ids):
        """Map token ids back to a string.

        Inputs:
        - ids: a 1-D array, list or other iterable of integer ids, each in [0, V)

        Returns:
        - text: str. Bytes that do not form valid UTF-8 (e.g. a sequence that ends in the
          middle of a multi-byte character) become U+FFFD '�'.
        """
        ids = self._ids_to_decode(ids)
        if ids.size == 0:
            return ""
        vocab = self._vocab
        return b"".join([vocab[i] for i in ids.tolist()]).decode("utf-8", errors="replace")

    # --- saving and loading --------------------------------------------------------------------

    def to_dict(self):
        """A JSON-ready description: {"kind": "bpe", "vocab": [...], "merges": [[a, b], ...]},
        with the tokens written in GPT-2's printable form ('Ġthe' for b' the')."""
        return {"kind": self.kind, "vocab": [token_to_str(t) for t in self._vocab],
                "merges": [[a, b] for a, b in self._merges]}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a tokenizer from `to_dict()`'s output, with a ValueError if it is malformed."""
        cls._check_description(d)
        vocab, merges = d.get("vocab"), d.get("merges")
        if not (isinstance(vocab, list) and all(isinstance(s, str) for s in vocab)):
            raise TokenizerError("tokenizer 'vocab' must be a list of strings")
        if not isinstance(merges, list):
            raise TokenizerError("tokenizer 'merges' must be a list of [left, right] id pairs")
        return cls([str_to_token(s) for s in vocab], merges)

    @classmethod
    def from_gpt2_files(cls, vocab_json_path, merges_txt_path, root=None):
        """Load GPT-2's vocab.json ({token string: id}) and merges.txt ("#version" line, then
        one "left right" pair per line, in rank order). Ids come from vocab.json.

        Each file must be a regular file of at most MAX_TOKENIZER_BYTES (and, if `root` is
        given, must not leave that folder through symbolic links). Raises ValueError."""
        table = read_json(vocab_json_path, "vocab file", MAX_TOKENIZER_BYTES, root)
        where = f"vocab file {quote(vocab_json_path)}"
        if not isinstance(table, dict):
            raise TokenizerError(f"{where} must hold a JSON object {{token: id}}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in table.values()):
            raise TokenizerError(f"{where}: every id must be an integer")
        if sorted(table.values()) != list(range(len(table))):
            raise TokenizerError(f"{where}: the ids must be 0..{len(table) - 1}, each used once")
        by_id = sorted(table, key=table.get)  # token strings in id order
        try:
            vocab = [str_to_token(s) for s in by_id]
        except TokenizerError as e:
            raise TokenizerError(f"{where}: {e}") from None

        where = f"merges file {quote(merges_txt_path)}"
        text = read_text(merges_txt_path, "merges file", MAX_TOKENIZER_BYTES, root)
        merges = []
        # (messages quote at most 60 characters of a line: one line, however long the line)
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise TokenizerError(f"{where} line {lineno}: expected two tokens separated by one "
                                     f"space, got {line!r:.60}")
            for p in parts:
                if p not in table:
                    raise TokenizerError(f"{where} line {lineno}: token {p!r:.60} is not in the "
                                         f"vocabulary")
            if parts[0] + parts[1] not in table:
                raise TokenizerError(f"{where} line {lineno}: the merged token "
                                     f"{parts[0] + parts[1]!r:.60} is not in the vocabulary")
            merges.append((table[parts[0]], table[parts[1]]))
        try:
            return cls(vocab, merges)
        except TokenizerError as e:
            raise TokenizerError(f"GPT-2 files {quote(vocab_json_path)}, "
                                 f"{quote(merges_txt_path)}: {e}") from None

    def save_gpt2_files(self, folder):
        """Write folder/vocab.json and folder/merges.txt in GPT-2's format (atomically).

        Returns:
        - (vocab_path, merges_path): the two Paths
        """
        folder = Path(folder)
        strs = [token_to_str(t) for t in self._vocab]
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        atomic_write_json(vocab_path, {s: i for i, s in enumerate(strs)})
        lines = [f"{strs[a]} {strs[b]}\n" for a, b in self._merges]
        atomic_write_text(merges_path, "#version: 0.2\n" + "".join(lines))
        return vocab_path, merges_path

    def __eq__(self, other):
        return (isinstance(other, BPETokenizer) and self._vocab == other._vocab
                and self._merges == other._merges)

    def __hash__(self):
        return hash((self.kind, tuple(self._vocab), tuple(self._merges)))

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)})"


def _utf8(chunk):
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = chunk[e.start]
        raise TokenizerError(f"the text holds {ch!r} (U+{ord(ch):04X}), a lone surrogate, which "
                             f"UTF-8 cannot encode") from None
