"""Ratios of one backend against a peer across several needle-bench runs, as a Markdown table.

Host-bound rows (thin matmuls, MLP steps, ResNet9 at small batches) move by up to 2x from
one run to the next on a shared machine, for PyTorch and Needle alike; one run's ratio is
then a sample, not a result. This prints, per case, the ratio t(backend) / t(peer) of every
run, their median and their range, and in how many runs it was at most ``1 + tolerance``.

    python tools/compare_runs.py --backend needle-cudnn --peer torch-cuda run*/results.json
"""
import argparse
import json
import statistics


def medians(path):
    """{(suite, case, backend): median ms} of the valid rows of one results.json."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    return {(r["suite"], r["case"], r["backend"]): r["median_ms"] for r in rows
            if r.get("valid") and r.get("median_ms")}


def table(runs, backend, peer, tolerance):
    cases = [key[:2] for key in runs[0] if key[2] == backend]
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [f"| suite | case | {head} | median | range | ≤ {1 + tolerance:.2f} |",
             "|---|---|" + "---:|" * (len(runs) + 3)]
    for suite, case in cases:
        per_run = [run[(suite, case, backend)] / run[(suite, case, peer)]
                   if (suite, case, backend) in run and (suite, case, peer) in run else None
                   for run in runs]
        ratios = [r for r in per_run if r is not None]
        if not ratios:
            continue
        cells = " | ".join("–" if r is None else f"{r:.2f}" for r in per_run)
        within = sum(r <= 1.0 + tolerance for r in ratios)
        lines.append(f"| {suite} | {case} | {cells} | {statistics.median(ratios):.2f} | "
                     f"{min(ratios):.2f}–{max(ratios):.2f} | {within}/{len(ratios)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files, one per run")
    parser.add_argument("--backend", default="needle-cudnn")
    parser.add_argument("--peer", default="torch-cuda")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="count the runs at most 1 + this (e.g. 0.03 for 'within 3%%')")
    args = parser.parse_args(argv)
    print(table([medians(p) for p in args.results], args.backend, args.peer, args.tolerance))


if __name__ == "__main__":
    main()
