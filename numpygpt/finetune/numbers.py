"""number-translation: English number words -> Chinese numerals, for 1 to 99,999.

A translation task every learner can check by eye and the machine can score exactly, made
offline from two small functions:

    305    three hundred five                              三百零五
    12345  twelve thousand three hundred forty-five        一万二千三百四十五
    10050  ten thousand fifty                              一万零五十

English: lower-case words, a hyphen in the compounds 21-99 (forty-five), no "and".
Chinese: the digits 一 .. 九, the units 十 百 千 万, and:
- 十二, not 一十二, when the number itself is 10-19; inside a number the 一 stays (一百一十二);
- one 零 for each run of zeros between non-zero digits (一百零五, 一千零五, 一千零一十,
  一万零五十, 一万零五百, 九万零九百零九), none for trailing zeros (一万, 一千一百);
- 二, never 两 (二百, 二千, 二万).

The held-out numbers, never trained on, are those with
    ((n * 2654435761) % 2**32 >> 16) % 10 == 0
(Knuth's multiplicative hash; its high bits, since the low ones keep n's parity): 10,009 of
the 99,999. Of the others, a fixed dev split (chosen by the seed) picks the checkpoint to keep
and is never trained on either.
"""

from __future__ import annotations

import numpy as np

from ..errors import check_int

MAX_NUMBER = 99_999
INSTRUCTION_PREFIX = ""  # the instruction is the English words themselves (a short prompt)
DEV_SIZE = 1000  # training numbers held out to choose the checkpoint
# The model the recipe trains from scratch: the `baby` preset's sizes, with a context for the
# longest example ("Q: " + 50 characters of words + "\nA: " + 9 numerals + the end marker).
NEW_MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=72)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DIGITS = "零一二三四五六七八九"
_UNITS = ("万", "千", "百", "十", "")  # of the five digits of 0 .. 99,999, highest first


def _check(n):
    n = check_int("n", n, minimum=1)
    if n > MAX_NUMBER:
        raise ValueError(f"n must be at most {MAX_NUMBER:,}, got {n:,}")
    return n


def _below_thousand(n):
    """Words of 1 <= n <= 999."""
    words = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n:
        words.append(_ONES[n])
    return " ".join(words)


def english(n):
    """English words of 1 <= n <= 99,999: 'twelve thousand three hundred forty-five'."""
    n = _check(n)
    thousands, rest = divmod(n, 1000)
    words = [_below_thousand(thousands), "thousand"] if thousands else []
    if rest:
        words.append(_below_thousand(rest))
    return " ".join(words)


def chinese(n):
    """The Chinese numeral of 1 <= n <= 99,999: '一万二千三百四十五'."""
    n = _check(n)
    digits = [int(d) for d in f"{n:05d}"]  # 万 千 百 十 ones
    first = next(i for i, d in enumerate(digits) if d)
    out, zeros = [], False
    for i in range(first, 5):
        d = digits[i]
        if d == 0:
            zeros = True  # a run of zeros: one 零, written only if a non-zero digit follows
            continue
        if zeros:
            out.append("零")
            zeros = False
        if not (i == first and i == 3 and d == 1):  # 十二, not 一十二, for 10-19 alone
            out.append(_DIGITS[d])
        out.append(_UNITS[i])
    return "".join(out)


def is_held_out(n):
    """True for the numbers never trained on (10,009 of 1 .. 99,999)."""
    return ((n * 2654435761) % 2**32 >> 16) % 10 == 0


def example(n):
    """The instruction example of n: {"instruction": English words, "input": "", "output"}."""
    return {"instruction": english(n), "input": "", "output": chinese(n)}


def splits(seed=0, dev_size=DEV_SIZE):
    """The numbers of each split: (train, dev, test) int64 arrays, sorted. test: the held-out
    numbers; dev: dev_size training numbers chosen by the seed, kept apart to choose the
    checkpoint; train: the rest."""
    seed = check_int("seed", seed, minimum=0)
    dev_size = check_int("dev_size", dev_size, minimum=0)
    n = np.arange(1, MAX_NUMBER + 1, dtype=np.int64)
    held = ((n * 2654435761) % 2**32 >> 16) % 10 == 0
    rest = n[~held]
    dev = np.sort(np.random.default_rng([seed, 23]).choice(rest, dev_size, replace=False))
    train = np.setdiff1d(rest, dev, assume_unique=True)
    return train, dev, n[held]


def alphabet():
    """Every character of the task's texts (English words, numerals), sorted."""
    chars = set("abcdefghijklmnopqrstuvwxyz -") | set(_DIGITS) | set("十百千万")
    return "".join(sorted(chars))


__all__ = ["english", "chinese", "is_held_out", "example", "splits", "alphabet", "MAX_NUMBER",
           "DEV_SIZE", "NEW_MODEL"]
