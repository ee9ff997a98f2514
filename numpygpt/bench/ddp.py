"""Data parallel over MPI: `python -m numpygpt bench --ddp N`.

The same training step as train() runs it with N ranks: each computes its B/N rows of one
global batch, one all-reduce averages the gradients, then clip and AdamW. On one machine the
ranks share its cores, so N ranks x (cores / N) BLAS threads is compared with one process
using all the cores (and with one thread, the per-core speed). What more machines would give
is worked out on paper from the measured compute time and the bytes a ring all-reduce sends.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from ..errors import ConfigError, check_int
from ..models.gpt import GPT, param_count
from ..training.optim import AdamW, clip_grad_norm
from ..training.parallel import GradAllReduce, get_world, shard_rows
from .machine import limit_threads, seconds_per_call
from .step import BENCH_CONFIGS, model_config

RING_SPEEDS_GBIT = (1, 10, 100)  # network speeds for the paper estimate, Gbit/s


def ring_allreduce_bytes(n_params, N, itemsize=4):
    """Bytes each of N workers sends (and receives) in a ring all-reduce of n_params numbers:
    N-1 reduce-scatter steps and N-1 all-gather steps, each passing one 1/N chunk, so
    2 (N-1)/N x the gradient's bytes, whatever N (about twice the model per step)."""
    return 2 * (N - 1) / N * n_params * itemsize


def _ddp_worker(spec):
    """(Run by bench_ddp in every rank: under mpiexec, or alone for N = 1.) Time spec["rounds"]
    rounds of spec["steps"] training steps; rank 0 prints the medians as one JSON line."""
    limit_threads(spec["threads"])
    world = get_world()
    cfg, B = model_config(spec["config"]), spec["B"]
    rows = shard_rows(B, world.rank, world.size)
    model = GPT(cfg, seed=0, dtype=np.float32)
    opt = AdamW(model.params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(0)  # the same global batch on every rank
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))[rows]  # (B/N, T)
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))[rows]
    average = GradAllReduce(world, model.params) if world.size > 1 else None
    comm = [0.0]

    def step():
        _, loss = model.forward(x, y)
        grads = model.backward()
        if average is not None:
            t0 = time.perf_counter()
            grads = average(grads)  # includes waiting for the slower rank
            world.allreduce_scalars([loss, 0.0])  # the loss and stop flag, as train() does
            comm[0] += time.perf_counter() - t0
        clip_grad_norm(grads, 1.0)
        opt.step(grads)

    for _ in range(2):
        step()
    times, comms = [], []
    for _ in range(spec["rounds"]):
        world.barrier()
        comm[0] = 0.0
        times.append(seconds_per_call(step, spec["steps"]))
        comms.append(comm[0] / spec["steps"])
    if world.is_root:
        t = statistics.median(times)
        print(json.dumps({"ranks": world.size, "threads": spec["threads"], "s_per_step": t,
                          "comm_s": statistics.median(comms),
                          "tokens_per_sec": B * cfg.block_size / t}))


def mpiexec_path():
    """The mpiexec beside this Python (`pip install mpich` puts it there), else PATH's."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.isfile(beside) else shutil.which("mpiexec")


def bench_ddp(N, config="baby", rounds=5, steps=3):
    """tokens/s of data-parallel training on this machine: one process with all cores and
    with one thread, and N MPI ranks with cores // N threads each, at the same global batch.
    Returns a dict: "runs" (one row per setting), "n_params", "cores", and "paper": the ring
    all-reduce's bytes per step for a few N and their time at 1, 10, 100 Gbit/s."""
    N = check_int("--ddp", N, minimum=1)
    cfg, B = model_config(config), BENCH_CONFIGS[config][1]
    if B % N:
        raise ConfigError(f"--ddp {N}: the {config} benchmark's batch of {B} is not divisible "
                          f"by {N} processes")
    cores = os.cpu_count() or 1
    # Other work on the machine takes cores from every setting (and hurts BLAS threads most):
    # the load average before the runs goes with the figures.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    settings = [(1, cores), (1, 1)] + ([(N, max(1, cores // N))] if N > 1 else [])
    mpiexec = mpiexec_path() if N > 1 else None
    if N > 1:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            mpiexec = None
        if mpiexec is None:
            raise ConfigError("--ddp needs mpi4py and an mpiexec: pip install -e .[mpi]")
    runs = []
    for ranks, threads in settings:
        spec = {"config": config, "B": B, "threads": threads, "rounds": rounds,
                "steps": steps}
        cmd = [sys.executable, "-c",
               f"from numpygpt.bench.ddp import _ddp_worker; _ddp_worker({spec!r})"]
        if ranks > 1:
            cmd = [mpiexec, "-n", str(ranks), *cmd]
        # No launcher variables from outside (a bench itself run under mpiexec).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise RuntimeError(f"the {ranks}-process run failed:\n{out.stderr[-2000:]}"
                               f"{out.stdout[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    P = param_count(cfg)
    paper = [{"N": n, "bytes": ring_allreduce_bytes(P, n),
              "seconds": {g: ring_allreduce_bytes(P, n) * 8 / (g * 1e9)
                          for g in RING_SPEEDS_GBIT}} for n in (2, 4, 8, 64)]
    return {"config": config, "batch_size": B, "block_size": cfg.block_size, "n_params": P,
            "cores": cores, "load_average": load, "runs": runs, "paper": paper}


def format_ddp(r):
    # the reference: the faster one-process setting (with all cores busy elsewhere, BLAS
    # threads can cost more than they give)
    one = min(run["s_per_step"] for run in r["runs"] if run["ranks"] == 1)
    lines = [f"{r['config']}: global batch {r['batch_size']} x {r['block_size']} tokens, "
             f"{r['n_params']:,} parameters, {r['cores']} cores"
             + (f" (load average {r['load_average']:.1f} before: other work was running, the "
                f"figures are low)" if (r.get("load_average") or 0) > 0.5 else "")]
    for run in r["runs"]:
        comm = (f"  (all-reduce + waiting {1e3 * run['comm_s']:.1f} ms)"
                if run["ranks"] > 1 else "")
        lines.append(f"  {run['ranks']} process(es) x {run['threads']} BLAS thread(s): "
                     f"{1e3 * run['s_per_step']:8.1f} ms/step {run['tokens_per_sec']:9,.0f} "
                     f"tok/s  {one / run['s_per_step']:.2f}x the best 1-process{comm}")
    # On paper: N machines like this one, each with B/N rows; the compute time per step
    # shrinks like 1/N while the ring all-reduce's time does not (2 (N-1)/N x the model).
    lines.append(f"on paper, N machines, one all-reduce of {4 * r['n_params'] / 1e6:.2f} MB "
                 f"of float32 gradients per step (ring: 2 (N-1)/N x that sent per worker), "
                 f"vs the best 1-process step here, {1e3 * one:.1f} ms, / N:")
    header = "    N   MB sent   compute/N  " + "  ".join(f"{g:>4} Gbit/s" for g in
                                                      RING_SPEEDS_GBIT)
    lines.append(header)
    for p in r["paper"]:
        times = "  ".join(f"{1e3 * s:8.2f} ms" for s in p["seconds"].values())
        lines.append(f"  {p['N']:3d} {p['bytes'] / 1e6:8.2f}  {1e3 * one / p['N']:8.2f} ms  "
                     f"{times}")
    return "\n".join(lines)
