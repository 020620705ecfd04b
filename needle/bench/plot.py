"""PNG plots: per suite, grouped bars (one group per case, one bar per backend).
matmul shows GFLOP/s (higher is better); the other suites show ms per step (lower is
better). Each bar is a row's median; rows that were skipped or failed validation have no bar
and are listed under the plot."""
import math
import textwrap

from .metadata import one_line

TITLES = {
    "matmul": ("matmul C = A @ B, fp32 (m x k x n)", "GFLOP/s (median)  - higher is better"),
    "mlp": ("MLP training step (SGD), fp32", "ms per step (median)  - lower is better"),
    "resnet9": ("ResNet9 inference, 3x64x64, fp32", "ms per batch (median)  - lower is better"),
    "attention": ("attention forward + backward", "ms per step (median)  - lower is better"),
    "resnet9-train": ("ResNet9 training step (BatchNorm train mode, SGD momentum), fp32",
                      "ms per step (median)  - lower is better"),
    "transformer": ("causal Transformer LM training step (Adam), fp32",
                    "ms per step (median)  - lower is better"),
    "lstm": ("2-layer LSTM training step (SGD), fp32", "ms per step (median)  - lower is better"),
    "micro-conv-step": ("one convolution (NCHW, stride 1, no bias) forward + backward, fp32",
                        "ms per step (median)  - lower is better"),
    "micro-norms": ("LayerNorm / training BatchNorm2d forward + backward, fp32",
                    "ms per step (median)  - lower is better"),
}


# tab10, then darker tones: distinct colours for up to 15 backends, fixed by backend order
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173")


def _short(v):
    return f"{v / 1000:.3g}k" if v >= 1000 else f"{v:.3g}"


def _value(row):
    if row["suite"] == "matmul":
        return row.get("gflops")
    return row.get("median_ms")


def plot_suite(path, suite, rows, meta, log=False, backend_order=None):
    """Write one suite's grouped-bar PNG to ``path``; returns False if nothing was timed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    srows = [r for r in rows if r["suite"] == suite]
    cases = list(dict.fromkeys(r["case"] for r in srows))
    timed = [r for r in srows if r.get("valid") and _value(r) is not None]
    order = backend_order or list(dict.fromkeys(r["backend"] for r in srows))
    names = [b for b in order if any(r["backend"] == b for r in timed)]
    if not timed:
        return False
    colour = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(order)}
    values = {(r["case"], r["backend"]): _value(r) for r in timed}

    width = 0.8 / max(1, len(names))
    fig_w = min(16.0, max(8.0, 2.5 + len(cases) * (0.15 * len(names) + 0.3)))
    fig, ax = plt.subplots(figsize=(fig_w, 6.2))
    few = len(cases) * len(names) <= 100
    for j, b in enumerate(names):
        xs, hs = [], []
        for i, c in enumerate(cases):
            if (c, b) in values:
                xs.append(i - 0.4 + width * (j + 0.5))
                hs.append(values[(c, b)])
        bars = ax.bar(xs, hs, width * 0.92, label=b, color=colour[b])
        if few:
            ax.bar_label(bars, labels=[_short(h) for h in hs], rotation=90,
                         fontsize=6 if len(cases) * len(names) <= 40 else 5, padding=2)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=20 if max(map(len, cases)) > 9 else 0, ha="right"
                       if max(map(len, cases)) > 9 else "center", fontsize=8)
    title, ylabel = TITLES.get(suite, (suite, "value"))
    ax.set_title(title)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    if log:
        from matplotlib.ticker import FuncFormatter
        ax.set_yscale("log")
        ax.set_ylim(min(values.values()) / 1.6, max(values.values()) * 2.0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5)
            else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax.set_ylim(0, max(values.values()) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    missing = list(dict.fromkeys(
        f"{r['backend']} (unavailable)" if r.get("unavailable") else
        f"{r['backend']} on {r['case']} ({r['status'].split(':')[0]})"
        for r in srows if not (r.get("valid") and _value(r) is not None)))
    notes = one_line(meta)
    if missing:
        notes += "\nno bar: " + "; ".join(missing)
    fig.text(0.01, 0.01, "\n".join(textwrap.fill(line, int(fig_w * 17))
                                   for line in notes.splitlines()), fontsize=6.5,
             va="bottom", ha="left", color="0.3")
    fig.tight_layout(rect=(0, 0.09 + 0.02 * notes.count("\n"), 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True
