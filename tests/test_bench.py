"""The benchmark code runs and counts right (no timing is asserted: machines are noisy)."""

import importlib.util

import numpy as np
import pytest

from numpygpt import bench
from numpygpt.cli import main
from numpygpt.model import GPTConfig


def test_step_flops_by_hand():
    """Per token: 72 C^2 L for the four linear maps (x3 for forward + backward), 12 L T C for
    q k^T and att @ v, 6 C V for the tied LM head (nanoGPT's 6N + 12 L T C estimate)."""
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    B, T, C, L, V = 12, 64, 128, 4, 65
    assert bench.step_flops(cfg, B) == B * T * (72 * C * C * L + 12 * L * T * C + 6 * C * V)


def test_bench_configs_follow_the_presets():
    baby, small = bench.model_config("baby"), bench.model_config("small")
    assert (baby.n_layer, baby.n_embd, baby.block_size, baby.dropout) == (4, 128, 64, 0.0)
    assert (small.n_layer, small.n_embd, small.block_size, small.dropout) == (6, 384, 256, 0.2)
    assert bench.BENCH_CONFIGS["small"][1] == 16


def test_training_benchmark_runs_and_reports_every_figure():
    res = bench.bench_training("baby", rounds=1, steps=1, threads=1, peak=1e11)
    for key in ("ms_per_step", "tokens_per_sec", "gflops", "mfu", "peak_mem_mb"):
        assert np.isfinite(res[key]) and res[key] > 0, key
    assert res["tokens_per_sec"] == pytest.approx(12 * 64 / (res["ms_per_step"] / 1e3))
    assert "ratio_vs_torch" not in res
    assert "baby" in bench.format_results([res])


def test_kv_cache_and_attention_benchmarks_run():
    speedup, same = bench.bench_kv_cache(rounds=1, prompt=8, new=8)
    assert same and speedup > 0
    assert bench.bench_attention(rounds=1, B=1, T=8, C=8, nh=2) > 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_vs_torch_without_torch_is_a_clear_error(capsys):
    assert main(["bench", "--vs-torch", "--config", "baby"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch" in err[0]
