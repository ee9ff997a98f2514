"""How fast numpygpt trains, and where the time goes: `python -m numpygpt bench`.

The rule every module keeps: a figure that compares two things (numpygpt vs PyTorch, LoRA vs
full fine-tuning, with vs without the KV cache, N processes vs one) is measured side by side
in one process, in alternating rounds, after warm-up, and reported as the median of the
per-round ratios: these machines are noisy, absolute times drift, a ratio drifts less. Every
report names the CPU and the BLAS it was measured on, since a ratio holds only on that vendor.

The map, one module per job, imports flowing down the list:

    machine.py     the machine: cpu_name, blas_description, matmul_peak (the float32 GEMM
                   peak that MFU is a share of), limit_threads, seconds_per_call
    torch_step.py  the PyTorch reference: nanoGPT's model and training step in PyTorch eager,
                   parameter names as ours (imports torch; imported only when --vs-torch or a
                   torch profile asks for it: PyTorch stays optional)
    step.py        numpygpt's training step (numpy_step_fn, step_flops) and `bench`:
                   bench_training (ms/step, tok/s, MFU, peak memory in a fresh process),
                   bench_kv_cache, bench_attention (vectorised vs the loop reference)
    finetune.py    `bench --config gpt2-finetune`: GPT-2 small, full vs LoRA vs PyTorch
    kernels.py     `bench --kernels [--vs-torch]`: every kernel's forward + backward against
                   its plain twin and PyTorch's op (bench_kernels), and flash attention's
                   memory and time at T=256 and T=1024 (bench_flash)
    profile.py     `bench --profile`: one step's time per kernel, read from the kernel table
                   (timed_layers wraps the entries of numpygpt.kernels.ops while a step runs),
                   and PyTorch's step per operator group under torch.profiler
    chart.py       plot_profile: the profile as a picture (matplotlib, the course's)
    ddp.py         `bench --ddp N`: data-parallel steps over MPI, and the ring all-reduce on
                   paper for more machines

Everything the CLI, the tests and the notebooks use is importable from here:
`from numpygpt.bench import bench_training, profile_step, ...`.
"""

from .chart import plot_profile
from .ddp import RING_SPEEDS_GBIT, bench_ddp, format_ddp, mpiexec_path, ring_allreduce_bytes
from .finetune import (
    FINETUNE_BATCH,
    FINETUNE_LORA,
    FINETUNE_TARGETS,
    GPT2_SMALL,
    bench_finetune,
    format_finetune,
)
from .kernels import bench_flash, bench_kernels, format_flash, format_kernels
from .machine import blas_description, cpu_name, limit_threads, matmul_peak, memory_note
from .profile import (
    GLUE,
    PROFILE_ROWS,
    PROFILED_LAYERS,
    TORCH_OTHER,
    TORCH_PYTHON,
    format_profile,
    gemm_flops,
    profile_step,
    profile_torch_step,
    timed_layers,
)
from .step import (
    BENCH_CONFIGS,
    bench_attention,
    bench_kv_cache,
    bench_training,
    format_results,
    model_config,
    numpy_step_fn,
    step_flops,
)

__all__ = [
    # the machine
    "cpu_name", "blas_description", "matmul_peak", "limit_threads", "memory_note",
    # the training step
    "BENCH_CONFIGS", "model_config", "step_flops", "numpy_step_fn", "bench_training",
    "format_results", "bench_kv_cache", "bench_attention",
    # fine-tuning at GPT-2 size
    "GPT2_SMALL", "FINETUNE_BATCH", "FINETUNE_LORA", "FINETUNE_TARGETS", "bench_finetune",
    "format_finetune",
    # every kernel, and flash attention
    "bench_kernels", "format_kernels", "bench_flash", "format_flash",
    # the profile
    "PROFILED_LAYERS", "PROFILE_ROWS", "GLUE", "TORCH_OTHER", "TORCH_PYTHON", "gemm_flops",
    "timed_layers", "profile_step", "profile_torch_step", "format_profile", "plot_profile",
    # data parallel
    "RING_SPEEDS_GBIT", "ring_allreduce_bytes", "mpiexec_path", "bench_ddp", "format_ddp",
]
