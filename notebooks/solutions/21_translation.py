# Solutions for notebooks/21_translation.ipynb.
#
# One block per exercise (`# %% <function name>`, it replaces the stub cell when the course runs
# with solutions) and one per open question (`# %% <question name>`, Markdown in comments).

# %% my_chinese
def my_chinese(n):
    """The Chinese numeral of n.

    Inputs:
    - n: an int, 1 <= n <= 99,999

    Returns: a str such as "三百零五" for 305, "一万零五十" for 10,050
    """
    digits = "零一二三四五六七八九"
    units = ("万", "千", "百", "十", "")  # of the five digits, highest first
    five = [int(d) for d in f"{n:05d}"]
    first = next(i for i, d in enumerate(five) if d)  # the first non-zero digit
    out = []
    zero_due = False  # a run of zeros was passed since the last non-zero digit
    for i in range(first, 5):
        d = five[i]
        if d == 0:
            zero_due = True  # written only if a non-zero digit follows: not for trailing zeros
            continue
        if zero_due:
            out.append("零")  # one 零 for the whole run
            zero_due = False
        if not (i == first and i == 3 and d == 1):  # 10-19 alone: 十二, not 一十二
            out.append(digits[d])
        out.append(units[i])
    return "".join(out)

# %% what_the_model_learns
# **What it learns.** The English words come in groups: a part for the thousands ("ten
# thousand", "twelve thousand", "ninety-nine thousand") and a part below a thousand ("three
# hundred forty-five"). Chinese groups by 万 (ten thousand), so the model cannot copy word by
# word. It has to split "twelve thousand" into 一万 and 二千, and "ninety-nine thousand" into
# 九万 and 九千. The teens and the -ty words ("fifty") become two characters or one (五十,
# 十 alone only for 10-19). Some words must not be copied at all: "thousand" and "hundred" become
# units placed after digits, and "ten" becomes 一万 when it is part of "ten thousand". And it
# must *add* what English never says: the 零 of "ten thousand fifty" (一万零五十) stands for the
# empty thousands and hundreds, which it can only know from which words are *missing*. That is
# a rule, not a lookup: it works for numbers never seen because every number is built from the
# same few dozen words and the same positions.
#
# **Why short numbers can be harder.** They are rare: about 1% of the training numbers have
# fewer than four digits (section 1): a batch of 32 holds one about every third step, next to
# some 29 five-digit numbers. Almost every
# training answer starts with a digit and 万, and a short numeral starts differently: 三百零五
# has no 万 and no 千, and "twelve" alone is 十二, without the 一 that every 一十 inside a larger
# number keeps. A model that has mostly learned the five-digit shape tends to write it there
# too. Whether this run shows it is in section 5's table by size (only 107 test numbers are
# below 1,000, so their percentages are rough) and in the patterns: a short number written in
# a longer number's shape shows up as a unit missing or extra, or as an answer that goes on
# too long; 十 vs 一十 is the other short-number trap. A 零 can only go wrong where zeros sit
# between non-zero digits, which happens more often in the long numbers.
