"""Notebook 02 (positional encoding): the sinusoidal position table."""

import numpy as np

from ... import layers as L
from .checking import Case, run, variant


def _table(T, C, swap=False, exponent=None, start=0):
    pos = np.arange(start, T + start, dtype=np.float64)[:, None]
    i = np.arange(0, C, 2) if exponent is None else exponent(C)
    angle = pos / np.power(10000.0, i / C)
    out = np.empty((T, C))
    sin, cos = (np.cos, np.sin) if swap else (np.sin, np.cos)
    out[:, 0::2] = sin(angle)
    out[:, 1::2] = cos(angle[:, : C // 2])
    return out


def _table_halves(T, C):
    pos = np.arange(T, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(0, C, 2) / C)
    return np.concatenate([np.sin(angle), np.cos(angle[:, : C // 2])], axis=1)


def _table_per_column(T, C):
    pos = np.arange(T, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(C) / C)
    out = np.cos(angle)
    out[:, 0::2] = np.sin(angle[:, 0::2])
    return out


SINUSOIDAL_MISTAKES = [
    ("sin and cos swapped: even columns are sines, odd columns cosines",
     variant(_table, swap=True)),
    ("exponent 2i/C written as i/C: columns 2i and 2i+1 share the frequency 1/10000^(2i/C)",
     variant(_table, exponent=lambda C: np.arange((C + 1) // 2))),
    ("each column j used its own exponent j/C: the pair 2i, 2i+1 shares 2i/C",
     _table_per_column),
    ("sines in the first half and cosines in the second: this table interleaves them "
     "(even columns sin, odd columns cos)", _table_halves),
    ("positions start at 1: the first position is t = 0", variant(_table, start=1)),
]


def check_sinusoidal_table(fn, show=True):
    """fn(T, C) -> the (T, C) float64 table PE[t, 2i] = sin(t / 10000^(2i/C)),
    PE[t, 2i+1] = cos(...). Tried with an even and an odd C (then the last column is a sine)."""
    cases = [Case((T, C), ("table",), (L.sinusoidal_table(T, C, np.float64),),
                  label=f"T={T}, C={C}", arg_names=("T", "C"),
                  hint="" if C % 2 == 0 else "with an odd C there is one more sine column "
                                             "than cosine columns")
             for T, C in ((16, 8), (7, 5))]
    return run("sinusoidal position table", fn, cases, SINUSOIDAL_MISTAKES, {}, show)
