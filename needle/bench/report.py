"""Results out: the terminal table, JSON, CSV and a Markdown summary.

Ratios are time ratios of medians, ``t(backend) / t(peer)`` on the same case: below 1 is
faster than the peer. ``vs_torch_cuda`` compares with PyTorch CUDA eager, ``vs_best_torch``
with the fastest valid PyTorch variant of that case (which one is in ``best_torch``).
``compile_s`` (the compiled Needle backends) is its own column: never part of a step time.
"""
import csv
import io
import json
import math


CSV_FIELDS = ("suite", "case", "backend", "status", "valid", "median_ms", "gflops",
              "pct_fp32_peak", "pct_bandwidth", "mean_ms",
              "std_ms", "min_ms", "p95_ms", "p99_ms", "iters", "samples", "steps_per_sample",
              "warmup", "timer", "vs_torch_cuda", "vs_best_torch", "best_torch", "rel_err",
              "tol", "check", "first_call_s", "compile_s", "traces", "launches_per_call",
              "opt_level", "family", "note")


def add_ratios(rows):
    """Fill ``vs_torch_cuda``, ``vs_best_torch`` and ``best_torch`` of every timed row."""
    by_case = {}
    for r in rows:
        by_case.setdefault((r["suite"], r["case"]), []).append(r)
    for group in by_case.values():
        timed = [r for r in group if r.get("median_ms") is not None]
        eager = next((r for r in timed if r["backend"] == "torch-cuda"), None)
        torch_rows = [r for r in timed if r.get("family") == "torch" and r.get("valid")]
        best = min(torch_rows, key=lambda r: r["median_ms"]) if torch_rows else None
        for r in timed:
            r["vs_torch_cuda"] = r["median_ms"] / eager["median_ms"] if eager else None
            r["vs_best_torch"] = r["median_ms"] / best["median_ms"] if best else None
            r["best_torch"] = best["backend"] if best else None
    return rows


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path, meta, rows):
    with open(path, "w") as f:
        json.dump(_clean({"metadata": meta, "rows": rows}), f, indent=1, allow_nan=False)
        f.write("\n")


def _meta_lines(meta):
    for k, v in meta.items():
        yield f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"


def write_csv(path, meta, rows):
    """CSV with the metadata first, as ``# key: value`` comment lines (pandas:
    ``read_csv(path, comment="#")``)."""
    with open(path, "w", newline="") as f:
        for line in _meta_lines(meta):
            f.write(f"# {line}\n")
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _clean(r.get(k)) is None else _clean(r.get(k)))
                        for k in CSV_FIELDS})


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def _ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def unavailable(rows, suite=None):
    """{backend: reason} of the backends that cannot run here (listed once, not per case)."""
    return {r["backend"]: r["status"][len("skipped: "):] for r in rows
            if (suite is None or r["suite"] == suite) and r.get("unavailable")}


def table(rows, suite, width=None):
    """The terminal table of one suite, less the backends that cannot run here (see
    unavailable())."""
    show_rate = any(r.get("gflops") is not None for r in rows if r["suite"] == suite)
    show_compile = any(r.get("compile_s") is not None for r in rows if r["suite"] == suite)
    show_share = any(r.get("pct_bandwidth") is not None for r in rows if r["suite"] == suite)
    head = ["case", "backend", "median ms"] + (["GFLOP/s"] if show_rate else []) + \
        ["p95 ms", "iters", "/torch-cuda", "/best torch"] + \
        (["%fp32", "%HBM"] if show_share else []) + \
        (["compile s"] if show_compile else []) + ["status"]
    lines = []
    for r in rows:
        if r["suite"] != suite or r.get("unavailable"):
            continue
        status = r["status"]
        if width and len(status) > width:
            status = status[:width - 3] + "..."
        cells = [r["case"], r["backend"], _num(r.get("median_ms"), ".4f")]
        if show_rate:
            cells.append(_num(r.get("gflops"), ".1f"))
        cells += [_num(r.get("p95_ms"), ".4f"), _num(r.get("iters"), "d"),
                  _ratio(r.get("vs_torch_cuda")), _ratio(r.get("vs_best_torch"))]
        if show_share:
            cells += [_num(r.get("pct_fp32_peak"), ".1f"), _num(r.get("pct_bandwidth"), ".1f")]
        if show_compile:
            cells.append(_num(r.get("compile_s"), ".3f"))
        lines.append(cells + [status])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    numeric = set(range(2, len(head) - 1))

    def fmt(cells):
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = io.StringIO()
    out.write(fmt(head) + "\n" + "  ".join("-" * w for w in widths) + "\n")
    prev = None
    for cells in lines:
        if prev is not None and cells[0] != prev:
            out.write("\n")
        prev = cells[0]
        out.write(fmt(cells) + "\n")
    return out.getvalue()


def markdown(meta, rows, suites):
    """A Markdown summary (median ms, GFLOP/s, ratios, compile s) for pasting into
    bench/README.md."""
    out = io.StringIO()
    out.write(f"Run: {meta.get('date')}, GPU {meta.get('gpu')} (driver {meta.get('driver')}), "
              f"CPU {meta.get('cpu')}, commit {(meta.get('git_commit') or 'unknown')[:10]}.\n"
              f"Versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}.\n")
    for suite in suites:
        srows = [r for r in rows if r["suite"] == suite]
        if not srows:
            continue
        rate = any(r.get("gflops") is not None for r in srows)
        compiled = any(r.get("compile_s") is not None for r in srows)
        share = any(r.get("pct_bandwidth") is not None for r in srows)
        out.write(f"\n### {suite}\n\n| case | backend | median ms |"
                  + (" GFLOP/s |" if rate else "") + " / torch-cuda | / best torch |"
                  + (" % fp32 peak | % HBM |" if share else "")
                  + (" compile s |" if compiled else "") + " status |\n"
                  + "|---|---|---:|" + ("---:|" if rate else "") + "---:|---:|"
                  + ("---:|---:|" if share else "")
                  + ("---:|" if compiled else "") + "---|\n")
        for r in srows:
            if r.get("unavailable"):
                continue
            out.write(f"| {r['case']} | {r['backend']} | {_num(r.get('median_ms'), '.4f')} |"
                      + (f" {_num(r.get('gflops'), '.1f')} |" if rate else "")
                      + f" {_ratio(r.get('vs_torch_cuda'))} | {_ratio(r.get('vs_best_torch'))} |"
                      + (f" {_num(r.get('pct_fp32_peak'), '.1f')} | "
                         f"{_num(r.get('pct_bandwidth'), '.1f')} |" if share else "")
                      + (f" {_num(r.get('compile_s'), '.3f')} |" if compiled else "")
                      + f" {r['status'].replace('|', '/')} |\n")
        missing = unavailable(rows, suite)
        if missing:
            out.write("\nNot run here: " + "; ".join(f"{k} ({v})" for k, v in missing.items())
                      + ".\n")
    return out.getvalue()

