"""The profile as a picture (the course's notebook 09): plot_profile.

matplotlib is the course's dependency, not the library's: only plot_profile imports it.
"""

from __future__ import annotations

import numpy as np

from .profile import TORCH_OTHER

# numpygpt's rows in PyTorch's operator groups, to put the two breakdowns side by side
ROW_TO_TORCH_GROUP = {
    "attention heads": "attention (SDPA)", "GELU": "GELU", "layer norm": "layer norm",
    "softmax cross-entropy": "cross-entropy (log_softmax, nll)", "embedding": "embedding",
    "dropout": "dropout", "clip": "AdamW + clip (_foreach ops)",
    "AdamW": "AdamW + clip (_foreach ops)", "positional": TORCH_OTHER,
}


def plot_profile(r, torch_res=None):
    """The profile as a chart (the course's notebook 09): time per row, forward and backward,
    GEMM rows in blue with their % of the GEMM peak, elementwise rows in orange; with
    torch_res (profile_torch_step), a second panel with each group's share of the step in
    numpygpt and in PyTorch. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt  # the course's dependency, not the library's

    rows = r["rows"][::-1]  # the first layer at the top
    panels = 2 if torch_res is not None and "groups" in torch_res else 1
    # sized to be read on a laptop screen and on the course site (10-point legends and labels)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 0.36 * len(rows) + 1.8),
                             squeeze=False)
    ax = axes[0, 0]
    ypos = np.arange(len(rows))
    for y, row in zip(ypos, rows, strict=True):
        color = "tab:blue" if row["gflop"] else "tab:orange"
        if "update_ms" in row:  # clip and AdamW: one part only
            ax.barh(y, row["total_ms"], color=color, alpha=0.55)
            continue
        fwd, bwd = row.get("forward_ms", 0.0), row.get("backward_ms", 0.0)
        ax.barh(y, fwd, color=color)
        ax.barh(y, bwd, left=fwd, color=color, alpha=0.55)
        if row["gflop"]:
            ax.text(fwd + bwd, y, f" {row['pct_peak']:.0f}% of peak", va="center", fontsize=10)
    ax.set_yticks(ypos, [row["row"] for row in rows])
    ax.set_xlim(0, 1.25 * max(row["total_ms"] for row in rows))
    ax.set(xlabel="ms per training step",
           title=f"{r['config']}, B={r['batch_size']} T={r['seq_len']}: "
                 f"{r['ms_per_step']:.0f} ms per step")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="matrix products (GEMM)"),
                       Patch(color="tab:orange", label="elementwise"),
                       Patch(color="0.4", label="forward"),
                       Patch(color="0.4", alpha=0.55, label="backward (lighter)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=10,
              frameon=False)  # below the axes: never over a bar
    if panels == 2:
        ours = dict.fromkeys(torch_res["groups"], 0.0)
        for row in r["rows"]:
            group = ROW_TO_TORCH_GROUP.get(row["row"], "GEMM (mm, addmm, bmm)")
            ours[group] += 100 * row["share"]
        total = sum(torch_res["groups"].values())
        theirs = {g: 100 * ms / total for g, ms in torch_res["groups"].items()}
        groups = [g for g in ours if ours[g] > 0.5 or theirs[g] > 0.5][::-1]
        ax2 = axes[0, 1]
        y = np.arange(len(groups))
        ax2.barh(y + 0.2, [ours[g] for g in groups], height=0.4, label="numpygpt")
        ax2.barh(y - 0.2, [theirs[g] for g in groups], height=0.4, label="PyTorch eager")
        ax2.set_yticks(y, groups)
        ax2.set(xlabel="% of the step (each library's own step)",
                title=f"shares of the step; PyTorch {torch_res['ms_per_step']:.0f} ms per step")
        ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=10,
                   frameon=False)
    fig.suptitle(f"{r['cpu']}; BLAS: {r['blas']}; float32 GEMM peak "
                 f"{r['peak_gflops']:.0f} GFLOP/s", fontsize=11)
    fig.tight_layout()
    return fig
