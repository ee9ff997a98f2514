"""The benchmark code runs and counts right (no timing is asserted: machines are noisy)."""

import importlib.util
import json
import os
import time

import numpy as np
import pytest
from clirun import run

from numpygpt import bench
from numpygpt.bench.machine import limit_threads
from numpygpt.cli import main
from numpygpt.errors import ConfigError
from numpygpt.models.gpt import GPTConfig, param_count
from numpygpt.training import memory
from numpygpt.training.threads import ThreadTeam


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
    assert "ratio_vs_torch" not in res and "team_ms_per_step" not in res  # one thread
    assert "baby" in bench.format_results([res])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_training_benchmark_on_two_threads_also_times_threads_sharing_the_batch(monkeypatch):
    from numpygpt.bench import machine

    pauses, closed = [], []
    monkeypatch.setattr(machine.time, "sleep", pauses.append)
    close = ThreadTeam.close
    monkeypatch.setattr(ThreadTeam, "close", lambda team: closed.append(close(team)))
    res = bench.bench_training("baby", rounds=1, steps=1, threads=2, peak=1e11)
    assert len(closed) == 1  # the team's pool ended with the benchmark, not the process
    # one pause before each of the two turns: OpenBLAS's spinning workers would take the core
    # a thread of the team needs
    assert pauses == [machine.HANDOVER_SECONDS] * 2
    assert res["team_threads"] == 2 and res["team_ms_per_step"] > 0 and res["team_vs_one"] > 0
    assert "2 threads sharing the batch (train --threads 2)" in bench.format_results([res])
    limit_threads(1)  # what the test before left for the other tests of this process


def test_the_team_step_trains_the_same_model():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    one, two = bench.numpy_step_fn(cfg, 4), bench.numpy_step_fn(cfg, 4, team=2)
    for _ in range(3):
        assert two() == pytest.approx(one(), rel=1e-5)
    two.close()


def test_kv_cache_and_attention_benchmarks_run():
    speedup, same = bench.bench_kv_cache(rounds=1, prompt=8, new=8)
    assert same and speedup > 0
    assert bench.bench_attention(rounds=1, B=1, T=8, C=8, nh=2) > 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_vs_torch_without_torch_is_a_clear_error(capsys):
    assert main(["bench", "--vs-torch", "--config", "baby"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch" in err[0]


# --- bench --config gpt2-finetune, on a tiny model ----------------------------------------

TINY = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
FINETUNE_KEYS = ("full_ms_per_step", "lora_ms_per_step", "lora_vs_full", "full_peak_mem_mb",
                 "lora_peak_mem_mb", "lora_mem_vs_full", "full_gflops", "full_mfu")


def test_gpt2_finetune_config_is_gpt2_small():
    cfg = bench.GPT2_SMALL
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd,
            cfg.dropout) == (50257, 1024, 12, 12, 768, 0.0)
    assert param_count(cfg) == 124_439_808  # GPT-2 small's count, wte tied
    assert bench.FINETUNE_BATCH == (4, 256) and bench.FINETUNE_LORA == (8, 16)


def test_finetune_benchmark_runs_on_a_tiny_model_and_reports_every_figure():
    res = bench.bench_finetune(rounds=2, steps=1, threads=1, peak=1e11, cfg=TINY, B=2, T=8)
    for key in FINETUNE_KEYS:
        assert np.isfinite(res[key]) and res[key] > 0, key
    assert res["config"] == "custom" and (res["batch_size"], res["seq_len"]) == (2, 8)
    assert res["cpu"] and res["blas"]
    # every target with a figure gets a verdict; PyTorch's only with vs_torch
    assert set(res["met"]) == {"lora_vs_full", "lora_mem_vs_full"}
    assert "torch_ms_per_step" not in res and "full_vs_torch" not in res
    # B = 0 at first: the LoRA model's first loss is the plain model's, to the bit
    assert res["first_loss"]["lora"] == res["first_loss"]["full"]
    # 2 layers x 4 maps, A (in, 8) and B (8, out): 8 (3C + C + C + C + C + 4C + 4C + C)
    assert res["lora_params"] == 2 * 8 * 16 * 16
    text = bench.format_finetune(res)
    for needle in ("LoRA step vs our full step", "target <= 0.75x", "LoRA peak memory",
                   "not measured (run with --vs-torch)", res["cpu"]):
        assert needle in text, needle


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_finetune_benchmark_steps_the_same_model_in_torch():
    res = bench.bench_finetune(rounds=1, steps=1, vs_torch=True, threads=1, peak=1e11,
                               cfg=TINY, B=2, T=8, memory=False)
    loss = res["first_loss"]
    assert loss["torch"] == pytest.approx(loss["full"], rel=1e-5)  # same weights, same batch
    assert res["full_vs_torch"] > 0 and res["torch_ms_per_step"] > 0
    assert set(res["met"]) == {"full_vs_torch", "lora_vs_full"}
    assert "full step vs PyTorch eager" in bench.format_finetune(res)


def test_a_lora_step_updates_only_the_adapters():
    step = bench.numpy_step_fn(TINY, 2, T=8, lora=(4, 8))
    model = step.model
    assert set(step.optimizer.params) == model.trainable
    assert model.trainable and all(".lora_" in k for k in model.trainable)
    before = {k: v.copy() for k, v in model.params.items()}
    for _ in range(2):  # two steps: A's gradient is 0 while B = 0
        step()
    for k, v in model.params.items():
        if ".lora_" in k:
            assert not np.array_equal(v, before[k]), f"{k} did not move"
        else:
            assert np.array_equal(v, before[k]), f"frozen {k} changed"
    batch = np.zeros((2, 8), dtype=np.int64)
    model.forward(batch, batch)
    assert set(model.backward()) == model.trainable  # no gradient for a frozen weight


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--rounds", "-1"], "--rounds must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--json", "/no/such/folder/f.json"], "does not exist"),
    (["--rounds", "x"], "invalid int value"),
])
def test_bench_gpt2_finetune_refuses_bad_flags_with_one_line(argv, needle, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the benchmark ran despite a bad flag")

    monkeypatch.setattr(bench, "bench_finetune", boom)
    monkeypatch.setattr(bench, "matmul_peak", boom)
    code, out, err = run(["bench", "--config", "gpt2-finetune", *argv], capsys)
    assert code not in (0, None) and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_bench_all_does_not_run_gpt2_finetune(capsys, monkeypatch):
    ran = []

    def fake_training(name, **kw):
        ran.append(name)
        return {"config": name}

    monkeypatch.setattr(bench, "bench_training", fake_training)
    monkeypatch.setattr(bench, "bench_finetune", lambda **kw: ran.append("gpt2-finetune"))
    monkeypatch.setattr(bench, "format_results", lambda results: "")
    monkeypatch.setattr(bench, "matmul_peak", lambda: 1e11)
    code, _, _ = run(["bench", "--skip-extras"], capsys)
    assert code == 0 and ran == ["baby", "small"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
@pytest.mark.parametrize("argv, threads", [(["--threads", "1"], 1), ([], os.cpu_count())])
def test_bench_measures_the_peak_on_the_threads_it_runs(argv, threads, capsys, monkeypatch):
    """The header's BLAS threads and the peak the MFU is a share of are those of the runs."""
    from threadpoolctl import threadpool_info

    seen = []

    def peak():
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return 1e11

    monkeypatch.setattr(bench, "matmul_peak", peak)
    monkeypatch.setattr(bench, "bench_training", lambda name, **kw: {"config": name})
    monkeypatch.setattr(bench, "format_results", lambda results: "")
    limit_threads(2 if threads == 1 else 1)  # the other count, before the command
    try:
        code, out, _ = run(["bench", "--skip-extras", "--config", "baby", *argv], capsys)
    finally:
        limit_threads(1)
    assert code == 0 and seen == [{threads}]
    assert f"{threads} thread" in out.splitlines()[0]


def test_bench_gpt2_finetune_cli_prints_the_targets_and_writes_json(tmp_path, capsys,
                                                                   monkeypatch):
    calls = []
    real = bench.bench_finetune

    def tiny(**kw):  # the real code on a tiny model, with the CLI's defaults recorded
        calls.append(kw)
        return real(**{**kw, "cfg": TINY, "B": 2, "T": 8, "memory": False})

    monkeypatch.setattr(bench, "bench_finetune", tiny)
    monkeypatch.setattr(bench, "matmul_peak", lambda: 1e11)
    out_json = tmp_path / "ft.json"
    code, out, err = run(["bench", "--config", "gpt2-finetune", "--threads", "1",
                          "--json", out_json], capsys)
    assert code == 0, err
    assert (calls[0]["rounds"], calls[0]["steps"]) == (3, 1)  # the documented defaults
    assert "LoRA step vs our full step" in out and "CPU:" in out and "BLAS:" in out
    assert "attention fwd+bwd" not in out  # no extras for gpt2-finetune
    [res] = json.loads(out_json.read_text())
    assert res["cpu"] and res["blas"] and "lora_vs_full" in res["met"]
    kept = memory.keep_freed_memory()
    assert res["freed_memory_kept"] is kept and bench.memory_note(kept) in out.splitlines()[0]


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"steps": -1}, {"threads": 0},
                                    {"steps": 1.5}])
def test_finetune_benchmark_checks_its_arguments_first(kwargs, monkeypatch):
    from numpygpt.bench import finetune

    monkeypatch.setattr(finetune, "numpy_step_fn", lambda *a, **k: pytest.fail("the bench ran"))
    with pytest.raises(ConfigError):
        bench.bench_finetune(**kwargs)


# --- bench --profile, on a tiny model -----------------------------------------------------

TINY_DROP = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)


def test_profile_rows_add_up_to_the_profiled_step():
    res = bench.profile_step(steps=1, threads=1, peak=1e11, cfg=TINY_DROP, B=2, T=8)
    rows = {r["row"]: r for r in res["rows"]}
    assert list(rows) == list(bench.PROFILE_ROWS)  # every row ran (dropout > 0: a real one)
    for r in res["rows"]:
        parts = [r[k] for k in ("forward_ms", "backward_ms", "update_ms") if k in r]
        assert r["total_ms"] == pytest.approx(sum(parts)) and all(p >= 0 for p in parts), r
    # one step: the rows are that step (the glue is what the layers leave of each phase; it
    # would go negative, caught above, if a layer's time were counted twice)
    assert res["rows_ms"] == pytest.approx(res["profiled_ms_per_step"], rel=1e-6)
    assert sum(r["share"] for r in res["rows"]) == pytest.approx(1.0)
    assert res["gemm_ms"] + res["elementwise_ms"] == pytest.approx(res["rows_ms"])
    assert res["ms_per_step"] > 0 and res["at_peak_ms"] > 0
    # per direction: wte, position, dropout, ln_f, the loss, and 10 per block (2 layer norms,
    # 4 linear maps, 2 dropouts, the heads, GELU)
    assert res["layer_calls"] == 2 * (5 + 10 * 2)
    text = bench.format_profile(res)
    for needle in ("linear c_attn", "attention heads", bench.GLUE, "AdamW", "elementwise",
                   "layer calls per step", "if every GEMM ran at the peak", res["cpu"]):
        assert needle in text, needle


def test_profile_gemm_flops_by_hand():
    """N = B T rows; each linear map: 2 N Din Dout forward, twice that backward (dx and dw);
    the heads: q k^T and att @ v, 2 B T T C each, forward, four such backward; the LM head
    2 N C V forward, two such backward; nothing else has matrix products."""
    B, T, C, V, nl = 2, 8, 16, 50, 2
    N = B * T
    res = bench.profile_step(steps=1, threads=1, peak=1e11, cfg=TINY_DROP, B=B, T=T)
    gflop = {r["row"]: r["gflop"] * 1e9 for r in res["rows"]}
    maps = {"linear c_attn": (C, 3 * C), "linear attn.c_proj": (C, C),
            "linear mlp.c_fc": (C, 4 * C), "linear mlp.c_proj": (4 * C, C)}
    for row, (Din, Dout) in maps.items():
        assert gflop[row] == pytest.approx(nl * 3 * 2 * N * Din * Dout), row
    assert gflop["attention heads"] == pytest.approx(nl * 6 * 2 * B * T * T * C)
    assert gflop[bench.GLUE] == pytest.approx(3 * 2 * N * C * V)
    assert all(gflop[r] == 0 for r in ("embedding", "positional", "dropout", "layer norm",
                                       "GELU", "softmax cross-entropy", "clip", "AdamW"))
    assert sum(gflop.values()) == pytest.approx(bench.step_flops(TINY_DROP, B, T))
    assert bench.gemm_flops("linear_backward", (None, (np.ones((N, C)), np.ones((C, 4 * C)))),
                            {"frozen": True}) == 2 * N * C * 4 * C  # no dw for a frozen w


def test_timed_layers_wraps_the_kernel_table_and_restores_it_also_on_an_error():
    """timed_layers wraps the profiled entries of the kernel table (numpygpt.kernels.ops), and
    only those: the table's other kernels (the Llama's, AdamW) and numpygpt.layers stay."""
    from numpygpt import layers as L
    from numpygpt.kernels import NAMES, ops

    names = [n for k in bench.PROFILED_LAYERS for d in ("forward", "backward")
             if (n := f"{k}_{d}") in NAMES]
    assert "linear_forward" in names and "attention_core_backward" in names
    table = {n: getattr(ops, n) for n in NAMES}
    layers = {n: getattr(L, n) for n in NAMES}

    def untouched():
        return (all(getattr(ops, n) is table[n] for n in NAMES)
                and all(getattr(L, n) is layers[n] for n in NAMES))

    with bench.timed_layers({}) as record:
        assert all(getattr(ops, n) is not table[n] for n in names)
        assert all(getattr(ops, n) is table[n] for n in NAMES if n not in names)
        assert all(getattr(L, n) is layers[n] for n in NAMES)
        ops.gelu_forward(np.ones((2, 3)))
    assert set(record) == {("GELU", "forward")}
    assert untouched()
    step = bench.numpy_step_fn(TINY, 2, T=8)
    with pytest.raises(ValueError), bench.timed_layers({}):
        step.model.forward(np.full((2, 8), 99), None)  # id 99 >= vocab_size 50
    assert untouched()
    with pytest.raises(RuntimeError, match="boom"), bench.timed_layers({}):
        raise RuntimeError("boom")
    assert untouched()


def test_torch_profile_groups_the_same_step_by_operator():
    pytest.importorskip("torch")
    res = bench.profile_torch_step(steps=1, threads=1, cfg=TINY_DROP, B=2, T=8)
    if "unavailable" in res:
        pytest.skip(res["unavailable"])
    groups = res["groups"]
    assert groups["GEMM (mm, addmm, bmm)"] > 0 and groups["attention (SDPA)"] > 0
    assert groups["AdamW + clip (_foreach ops)"] > 0
    # every op's own time once, plus the Python between ops: the profiled step
    assert sum(groups.values()) >= 0.99 * res["profiled_ms_per_step"]
    text = bench.format_profile(
        bench.profile_step(steps=1, threads=1, peak=1e11, cfg=TINY, B=2, T=8), res)
    assert "torch.profiler" in text and "attention (SDPA)" in text
    assert "no breakdown" in bench.format_profile(
        bench.profile_step(steps=1, threads=1, peak=1e11, cfg=TINY, B=2, T=8),
        {"unavailable": "torch.profiler cannot be imported (test)"})


def test_profile_chart_has_a_bar_per_row_and_compares_shares():
    """plot_profile (the course's chart): one forward and one backward bar per layer row, one
    bar for clip and for AdamW; with a PyTorch profile, a second panel of shares in which
    numpygpt's rows and PyTorch's groups each add up to 100%."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = bench.profile_step(steps=1, threads=1, peak=1e11, cfg=TINY_DROP, B=2, T=8)
    fig = bench.plot_profile(res)
    (ax,) = fig.axes
    n_update = sum("update_ms" in row for row in res["rows"])
    assert len(ax.patches) == 2 * (len(res["rows"]) - n_update) + n_update
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["row"] for r in res["rows"]][::-1]
    plt.close(fig)
    groups = {g: 1.0 for g in ("attention (SDPA)", "GEMM (mm, addmm, bmm)", "GELU",
                               "layer norm", "cross-entropy (log_softmax, nll)", "embedding",
                               "dropout", "AdamW + clip (_foreach ops)", bench.TORCH_OTHER,
                               bench.TORCH_PYTHON)}
    fig = bench.plot_profile(res, {"groups": groups, "ms_per_step": 10.0})
    _, ax2 = fig.axes
    bars = ax2.patches
    ours, theirs = bars[:len(bars) // 2], bars[len(bars) // 2:]
    assert sum(b.get_width() for b in ours) == pytest.approx(100.0, abs=4.0)  # tiny groups cut
    assert sum(b.get_width() for b in theirs) == pytest.approx(100.0, abs=1e-9)
    plt.close(fig)

def test_bench_profile_cli_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    calls = []
    real = bench.profile_step

    def tiny(name, **kw):  # the real code on a tiny model, with the CLI's arguments recorded
        calls.append((name, kw))
        return real(name, **{**kw, "cfg": TINY, "B": 2, "T": 8})

    monkeypatch.setattr(bench, "profile_step", tiny)
    monkeypatch.setattr(bench, "matmul_peak", lambda: 1e11)
    out_json = tmp_path / "profile.json"
    code, out, err = run(["bench", "--profile", "--steps", "2", "--threads", "1",
                          "--json", out_json], capsys)
    assert code == 0, err
    assert calls == [("small", {"steps": 2, "threads": 1, "peak": 1e11})]  # small by default
    for needle in ("where one training step's time goes", "linear mlp.c_fc", bench.GLUE,
                   "sum of the rows", "CPU:", "BLAS:"):
        assert needle in out, needle
    assert "attention fwd+bwd" not in out and "tok/s" not in out  # the profile only
    [res] = json.loads(out_json.read_text())
    assert [r["row"] for r in res["rows"]][-2:] == ["clip", "AdamW"]


@pytest.mark.parametrize("config", ["all", "gpt2-finetune"])
def test_bench_profile_takes_one_config(config, capsys, monkeypatch):
    monkeypatch.setattr(bench, "matmul_peak", lambda: pytest.fail("the benchmark ran"))
    code, _, err = run(["bench", "--profile", "--config", config], capsys)
    lines = err.strip().splitlines()
    assert code not in (0, None) and len(lines) == 1, err
    assert "--profile takes one config" in lines[0]


# --- bench --kernels: every kernel, and flash attention's memory ----------------------------

TINY_SHAPES = dict(B=2, T=16, C=24, nh=2, nkv=1, hidden=32, V=11)


def test_kernel_table_times_every_kernel_of_both_models():
    res = bench.bench_kernels(rounds=1, shapes=TINY_SHAPES, threads=1)  # no team: below
    names = [r["kernel"] for r in res["rows"]]
    for kernel in ("layer norm", "RMSNorm", "GELU (tanh)", "SwiGLU MLP", "attention, causal",
                   "attention, dropout 0.2", "flash attention, causal", "GQA heads",
                   "softmax cross-entropy", "AdamW, 12 C^2 params", "embedding"):
        assert kernel in names
    for row in res["rows"]:
        assert row["plain_ms"] > 0 and row["ours_ms"] > 0 and "torch_ms" not in row
    text = bench.format_kernels(res)
    header = next(line for line in text.splitlines() if line.startswith("kernel "))
    assert res["cpu"] in text and "ours/plain" in header and "torch" not in header


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a team needs two cores")
def test_kernel_table_with_two_threads_times_the_teams_kernels():
    # with two threads, a row also times ours as `train --threads 2` runs it; not AdamW,
    # whose update runs on one thread in that step
    res = bench.bench_kernels(rounds=1, shapes=TINY_SHAPES, threads=2,
                              names={"GELU (tanh)", "attention, causal", "AdamW, 12 C^2 params"})
    rows = {r["kernel"]: r for r in res["rows"]}
    assert res["team_threads"] == 2
    for name in ("GELU (tanh)", "attention, causal"):
        assert rows[name]["team_ms"] > 0 and rows[name]["team_vs_ours"] > 0
    assert "team_ms" not in rows["AdamW, 12 C^2 params"]
    text = bench.format_kernels(res)
    assert "team ms" in text and "train --threads 2" in text
    one = bench.bench_kernels(rounds=1, shapes=TINY_SHAPES, threads=1, names={"GELU (tanh)"})
    assert one["team_threads"] == 1 and "team_ms" not in one["rows"][0]
    assert "team" not in bench.format_kernels(one)


def test_the_teams_kernels_run_on_the_shares_of_the_batch():
    from numpygpt.bench import kernels as K
    from numpygpt.kernels import FAST

    seen = []

    def gelu_forward(x):
        seen.append(x.shape)
        return FAST["gelu_forward"](x)

    closures = K._team_closures({**TINY_SHAPES, "B": 3}, 2, {**FAST, "gelu_forward": gelu_forward})
    assert "AdamW, 12 C^2 params" not in closures and len(closures["GELU (tanh)"]) == 2
    for f in closures["GELU (tanh)"]:
        f()
    T, C = TINY_SHAPES["T"], TINY_SHAPES["C"]
    assert seen == [(1, T, 4 * C), (2, T, 4 * C)]  # batch_shares(3, 2): one row, then two


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_kernel_table_against_torch_has_a_ratio_per_row():
    res = bench.bench_kernels(rounds=1, shapes=TINY_SHAPES, vs_torch=True,
                              names={"layer norm", "flash attention, drop 0.2",
                                     "AdamW, 12 C^2 params", "softmax cross-entropy",
                                     "GQA heads", "embedding"})
    assert len(res["rows"]) == 6
    assert all(r["ours_vs_torch"] > 0 and r["torch_ms"] > 0 for r in res["rows"])
    assert "ours/torch" in bench.format_kernels(res)


def test_flash_keeps_no_t_squared_memory():
    rows = bench.bench_flash(lengths=((128, 2),), C=16, nh=2, p=0.2, rounds=1)
    r = rows[0]
    # plain and blocked keep probabilities and dropout mask, 2 x B nh T T float32 = 0.5 MB
    assert r["plain_cache_mb"] >= 2 * 2 * 2 * 128 * 128 * 4 / 2**20
    assert r["flash_cache_mb"] < r["plain_cache_mb"] / 5
    assert r["flash_peak_mb"] < r["plain_peak_mb"]
    assert "flash" in bench.format_flash(rows)


def test_bench_kernels_cli(monkeypatch, capsys, tmp_path):
    from numpygpt.bench import kernels as K

    monkeypatch.setattr(K, "SHAPES", TINY_SHAPES)
    monkeypatch.setattr(K, "FLASH_LENGTHS", ((32, 1),))
    out = tmp_path / "k.json"
    assert main(["bench", "--kernels", "--rounds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layer norm" in text and "flash" in text and "BLAS" in text
    kept = memory.keep_freed_memory()  # what bench set (or could not set) for the process
    assert bench.memory_note(kept) in text
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 12 and len(saved["flash"]) == 2  # dropout 0 and 0.2
    # all the cores by default: with two or more, the team's column (B=2: two threads at most)
    assert saved["team_threads"] == min(os.cpu_count() or 1, 2)
    assert ("team_ms" in saved["rows"][0]) == (saved["team_threads"] > 1)
    assert saved["freed_memory_kept"] is kept
    assert main(["bench", "--kernels", "--profile"]) == 1


def test_bench_kernels_vs_torch_without_torch_is_one_clear_line(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert main(["bench", "--kernels", "--vs-torch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch" in err[0]


def test_contenders_on_several_threads_wait_for_the_idle_workers_before_each_timed_call(
        monkeypatch):
    from numpygpt.bench import kernels as K
    from numpygpt.bench import machine

    log = []
    monkeypatch.setattr(machine.time, "sleep", lambda s: log.append(("sleep", s)))
    machine.hand_over(1, lambda: log.append("warm"))
    assert log == []  # one thread: no workers, no pause
    assert machine.HANDOVER_SECONDS >= 0.2  # OpenBLAS's workers spin about 0.1 s
    # after the pause, untimed calls for WARM_UP_SECONDS: the machine wakes threads that hand
    # the GIL to each other slowly for a while after a pause
    assert machine.WARM_UP_SECONDS >= 0.05
    monkeypatch.setattr(machine, "WARM_UP_SECONDS", 0.02)
    t0 = time.perf_counter()
    machine.hand_over(2, lambda: log.append("warm"))
    assert time.perf_counter() - t0 >= 0.02
    assert log[0] == ("sleep", machine.HANDOVER_SECONDS) and set(log[1:]) == {"warm"}
    assert len(log) > 3  # a fast call runs many times over the warm-up
    log.clear()

    def slow():  # one call longer than the warm-up: it runs once
        log.append("slow")
        t = time.perf_counter()
        while time.perf_counter() - t < 0.03:
            pass

    machine.hand_over(2, slow)
    assert log == [("sleep", machine.HANDOVER_SECONDS), "slow"]
    log.clear()
    monkeypatch.setattr(machine, "WARM_UP_SECONDS", 0.0)  # one untimed call, as below
    times = K._interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")},
                           rounds=2, threads=2, turn=0)
    pause = ("sleep", machine.HANDOVER_SECONDS)
    # one warm-up call each, then every turn (one call: turn=0) after a pause and an untimed
    # call
    assert log == ["a", "b"] + [pause, "a", "a", pause, "b", "b"] * 2
    assert len(times["a"]) == len(times["b"]) == 2
    log.clear()
    K._interleaved({"a": lambda: log.append("a")}, rounds=3, turn=0)
    assert log == ["a"] * 4  # one thread: no pause, no untimed calls
    log.clear()
    # a short kernel fills its turn with calls in a row: its inputs warm, as in a step
    times = K._interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")},
                           rounds=2, turn=1e-3)
    assert log[:2] == ["a", "b"] and log.count("a") > 1 + 2 and log.count("b") > 1 + 2
    first_turn = log[2:log.index("b", 2)]
    assert set(first_turn) == {"a"} and len(first_turn) > 1
    log.clear()
    # the step and fine-tuning benchmarks: `calls` calls a turn, timed together
    times = machine.fair_turns({"a": lambda: log.append("a"), "b": lambda: log.append("b")},
                               rounds=2, calls=3)
    assert log == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert len(times["a"]) == len(times["b"]) == 2


def test_thread_counts_read_as_english():
    from numpygpt.bench import machine

    assert machine.threads_text(1) == "1 thread" and machine.threads_text(2) == "2 threads"
    limit_threads(1)
    text = machine.blas_description()
    assert "1 threads" not in text and ("1 thread" in text or text == "unknown")
