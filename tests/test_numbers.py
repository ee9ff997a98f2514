"""number-translation's data: every number from 1 to 99,999 read back by independent parsers,
the issue's examples, the held-out rule, the splits."""

import re

import numpy as np
import pytest

from numpygpt.finetune import numbers as N

EXAMPLES = {305: "三百零五", 12345: "一万二千三百四十五", 12: "十二", 112: "一百一十二",
            105: "一百零五", 1005: "一千零五", 1010: "一千零一十", 10050: "一万零五十",
            10500: "一万零五百", 90909: "九万零九百零九", 10000: "一万", 20000: "二万",
            10: "十", 19: "十九", 110: "一百一十", 10010: "一万零一十", 200: "二百",
            1100: "一千一百", 99999: "九万九千九百九十九", 1: "一"}


def read_chinese(s):
    """An independent reader: digit-unit pairs, 零 skipped, a leading 十 meaning 1 x 10."""
    units = {"万": 10000, "千": 1000, "百": 100, "十": 10}
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")}
    total, digit = 0, None
    for k, ch in enumerate(s):
        if ch in units:
            total += (1 if digit is None and k == 0 else digit) * units[ch]
            digit = None
        elif ch == "零":
            digit = None
        else:
            digit = digits[ch]
    return total + (digit or 0)


def read_english(s):
    small = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten "
                                        "eleven twelve thirteen fourteen fifteen sixteen "
                                        "seventeen eighteen nineteen".split())}
    tens = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy "
                                            "eighty ninety".split()) if i >= 2}
    total = part = 0
    for w in s.split():
        if w == "hundred":
            part *= 100
        elif w == "thousand":
            total, part = (total + part) * 1000, 0
        elif "-" in w:
            a, b = w.split("-")
            part += tens[a] + small[b]
        else:
            part += tens.get(w, small.get(w, -10**9))
    return total + part


def test_the_examples_of_the_task():
    for n, expected in EXAMPLES.items():
        assert N.chinese(n) == expected, n
    assert N.english(305) == "three hundred five"
    assert N.english(12345) == "twelve thousand three hundred forty-five"
    assert N.english(10050) == "ten thousand fifty"


def test_every_number_reads_back_and_follows_the_rules():
    for n in range(1, N.MAX_NUMBER + 1):
        zh, en = N.chinese(n), N.english(n)
        assert read_chinese(zh) == n, (n, zh)
        assert read_english(en) == n, (n, en)
        assert "两" not in zh and "零零" not in zh and not zh.endswith("零")
        assert not zh.startswith("一十")
        assert re.fullmatch(r"[a-z]+(-[a-z]+)?( [a-z]+(-[a-z]+)?)*", en) and " and " not in en
        if 21 <= n % 100 <= 99 and n % 10:  # a compound: one hyphen
            assert re.search(r"[a-z]+-[a-z]+$", en), en


def test_held_out_numbers_and_splits():
    train, dev, test = N.splits(seed=0)
    assert len(test) == 10_009 and all(N.is_held_out(int(n)) for n in test[:500])
    assert len(dev) == N.DEV_SIZE and len(train) + len(dev) + len(test) == N.MAX_NUMBER
    assert not set(train.tolist()) & set(dev.tolist())
    assert not (set(train.tolist()) | set(dev.tolist())) & set(test.tolist())
    again = N.splits(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, dev, test), strict=True))
    assert not np.array_equal(N.splits(seed=1)[1], dev)  # the dev split follows the seed
    assert set("".join(N.chinese(int(n)) + N.english(int(n)) for n in test)) <= set(N.alphabet())


@pytest.mark.parametrize("bad", [0, 100_000, -5, 2.5, True])
def test_numbers_out_of_range_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        N.chinese(bad)
