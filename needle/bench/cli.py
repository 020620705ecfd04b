"""``needle-bench``: Needle against PyTorch and JAX on matmul, attention, ResNet9 inference,
training steps of an MLP, ResNet9, a Transformer and an LSTM, and single layers' forward +
backward (a convolution, LayerNorm and training BatchNorm). See bench/README.md.

For each case: make the shared NumPy weights and inputs, compute the reference, then for
each backend build it, check its first output against the reference (a mismatch is
reported, not timed), time it (timing.py), and record a row. Results go to JSON, CSV,
Markdown and PNG files in ``--out`` (rewritten after every case, so an interrupted run
keeps what it measured) and a table on the terminal.
"""
import argparse
import dataclasses
import gc
import os
import sys
import time
import traceback

from ..compiler.passes import PIPELINES
from . import metadata, report, roofline, suites
from .backends import NotInSuite, all_backends, select
from .progress import bar
from .timing import Settings, TooSlow, measure, summarize
from .validation import validate

QUICK_SUITE_NOTE = "quick: tiny shapes, 3 iterations, for CI; not a measurement"


def _comma_list(values):
    out = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="needle-bench",
        description="Benchmark Needle's devices against PyTorch (CPU, CUDA eager, torch.compile, "
                    "CUDA graphs) and JAX on matmul, attention, ResNet9 inference, training "
                    "steps (MLP, ResNet9, Transformer, LSTM) and one layer's forward + backward "
                    "(a convolution; LayerNorm and training BatchNorm2d).",
        epilog="Backends that cannot run here are reported as skipped rows with the reason. "
               "Exit status 1 if any row failed validation or raised an error.")
    p.add_argument("--suite", action="append", metavar="NAME",
                   help=f"suite(s) to run: {', '.join(suites.SUITES)} (repeatable or "
                        "comma-separated; default: all)")
    p.add_argument("--backends", metavar="LIST",
                   help="comma-separated backend names or globs, e.g. 'needle-*,torch-cuda' "
                        "(default: all; see --list)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and 3 iterations (a smoke test, as CI runs it)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: bench/out/<gpu-or-host>-<date-time>)")
    p.add_argument("--iters", type=int, metavar="N",
                   help="timed iterations per row (default: adaptive, ~--row-time seconds, "
                        "at least 10)")
    p.add_argument("--warmup", type=int, metavar="N",
                   help="warm-up iterations per row, after 2 estimating steps (default: ~10%% "
                        "of --row-time, 2..50)")
    p.add_argument("--log", action="store_true", help="log-scale y axis in the plots")
    p.add_argument("--row-time", type=float, default=0.3, metavar="S",
                   help="seconds of timed iterations per row in adaptive mode (default 0.3)")
    p.add_argument("--max-row-time", type=float, default=5.0, metavar="S",
                   help="skip a row (as 'too slow') whose minimum iterations would take "
                        "longer than this (default 5)")
    p.add_argument("--time-limit", type=float, default=450.0, metavar="S",
                   help="skip the remaining rows once the run has taken this long "
                        "(default 450; 0 = no limit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared weights and inputs")
    p.add_argument("--opt-level", type=int, default=2, choices=sorted(PIPELINES),
                   help="needle.compile optimisation level of the needle-*-compiled "
                        "backends (default 2)")
    p.add_argument("--list", action="store_true",
                   help="list the backends and whether each can run here, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.suites = _comma_list(args.suite) or list(suites.SUITES)
    unknown = [s for s in args.suites if s not in suites.SUITES]
    if unknown:
        p.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(suites.SUITES)}")
    args.suites = list(dict.fromkeys(args.suites))
    args.backend_patterns = _comma_list([args.backends] if args.backends else [])
    for name in ("iters", "warmup"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "iters" else 0):
            p.error(f"--{name} must be {'>= 1' if name == 'iters' else '>= 0'}")
    return args, p


def settings_from(args):
    if args.quick:
        return Settings(row_time=min(args.row_time, 0.05), max_row_time=args.max_row_time,
                        iters=args.iters or 3, warmup=1 if args.warmup is None else args.warmup)
    return Settings(row_time=args.row_time, max_row_time=args.max_row_time, iters=args.iters,
                    warmup=args.warmup)


def _first_line(e):
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0] if text else ''}"
    return msg[:300]


def run_row(backend, case, data, ref, settings, deadline=None):
    """Build, validate and time ``backend`` on ``case``; returns the row (never raises,
    except KeyboardInterrupt)."""
    row = {"suite": case.suite, "case": case.name, "backend": backend.name,
           "family": backend.family, "note": backend.note, "valid": False}
    reason = backend.unavailable_reason()
    if reason:
        row.update(status=f"skipped: {reason}", unavailable=True)
        return row
    remaining = None if deadline is None else deadline - time.perf_counter()
    if remaining is not None and remaining <= 0:
        row["status"] = "skipped: the run's --time-limit was reached"
        return row
    if remaining is not None and remaining < settings.max_row_time:
        settings = dataclasses.replace(settings, max_row_time=remaining,
                                       budget_name="the time left of --time-limit")
    runnable = None
    try:
        with backend.scope():
            t0 = time.perf_counter()
            runnable = backend.build(case, data)
            row["first_call_s"] = time.perf_counter() - t0
            row.update(runnable.info)
            if isinstance(ref, Exception):
                unvalidated = f"unvalidated: no reference ({_first_line(ref)})"
            else:
                unvalidated = None
                verdict = validate(suites.checks(case, runnable.output, ref, data))
                row.update(rel_err=verdict.rel_err, tol=verdict.tol, check=verdict.what)
                if not verdict.ok:
                    row["status"] = verdict.status
                    return row
                row["valid"] = True
            samples, info = measure(runnable, settings)
        row.update(info)
        row.update(summarize(samples))
        if case.flops:
            row["gflops"] = case.flops / (row["median_ms"] * 1e-3) / 1e9
        row["status"] = unvalidated or "ok"
    except (TooSlow, NotInSuite) as e:
        row["status"] = f"skipped: {e}"
    except Exception as e:  # one backend's failure must not stop the run
        row["status"] = f"error: {_first_line(e)}"
        row["traceback"] = traceback.format_exc(limit=-8)
    finally:
        if runnable is not None:
            cleanup, runnable = runnable.cleanup, None
            gc.collect()
            try:
                cleanup()
            except Exception:
                pass
    return row


def _settings_meta(args, settings, backends, out_dir):
    return {"suites": args.suites, "backends": [b.name for b in backends], "quick": args.quick,
            "seed": args.seed, "opt_level": args.opt_level, "time_limit_s": args.time_limit,
            "out": out_dir, **dataclasses.asdict(settings)}


def write_outputs(out_dir, meta, rows, args, plots=True):
    """JSON, CSV, Markdown, and (at the end) the PNG plots; returns the paths written."""
    report.add_ratios(rows)
    roofline.add_shares(rows, [c for s in args.suites for c in suites.cases(s, args.quick)],
                        meta.get("gpu"))
    paths = [os.path.join(out_dir, n) for n in ("results.json", "results.csv", "results.md")]
    report.write_json(paths[0], meta, rows)
    report.write_csv(paths[1], meta, rows)
    with open(paths[2], "w") as f:
        f.write(report.markdown(meta, rows, args.suites))
    if plots:
        from .plot import plot_suite
        order = list(dict.fromkeys(r["backend"] for r in rows))
        for suite in args.suites:
            path = os.path.join(out_dir, f"{suite}.png")
            try:
                if plot_suite(path, suite, rows, meta, log=args.log, backend_order=order):
                    paths.append(path)
            except ImportError as e:
                print(f"needle-bench: no plots ({e}); pip install matplotlib", file=sys.stderr)
                break
    return paths


def main(argv=None):
    args, parser = parse_args(argv)
    try:
        backends = select(all_backends(args.opt_level), args.backend_patterns)
    except ValueError as e:
        parser.error(str(e))
    if args.list:
        for b in backends:
            reason = b.unavailable_reason()
            print(f"{b.name:22s} {'available' if reason is None else 'unavailable: ' + reason}")
        return 0

    start = time.perf_counter()
    deadline = start + args.time_limit if args.time_limit and args.time_limit > 0 else None
    for b in backends:  # availability first: it imports the libraries the metadata reports
        b.unavailable_reason()
    settings = settings_from(args)
    meta = metadata.collect(argv if argv is not None else sys.argv[1:])
    out_dir = args.out or metadata.default_out_dir(meta)
    os.makedirs(out_dir, exist_ok=True)
    meta["settings"] = _settings_meta(args, settings, backends, out_dir)
    if args.quick:
        meta["note"] = QUICK_SUITE_NOTE

    work = [case for suite in args.suites for case in suites.cases(suite, args.quick)]
    progress = bar(len(work) * len(backends), enabled=not args.no_progress)
    rows = []
    try:
        for case in work:
            if deadline is not None and time.perf_counter() > deadline:
                data = ref = None  # every row of this case will be skipped
            else:
                data = suites.make_data(case, args.seed)
                try:
                    ref = suites.reference(case, data)
                except Exception as e:  # no PyTorch: rows are timed but marked unvalidated
                    ref = e
            for backend in backends:
                progress.set_postfix_str(f"{case.label} {backend.name}")
                row = run_row(backend, case, data, ref, settings, deadline)
                rows.append(row)
                progress.update()
                if row["status"].startswith(("mismatch", "error")):
                    progress.write(f"{case.label} {backend.name}: {row['status']}")
            write_outputs(out_dir, meta, rows, args, plots=False)
    finally:
        progress.close()
        meta["elapsed_s"] = round(time.perf_counter() - start, 1)
        paths = write_outputs(out_dir, meta, rows, args)

    print(f"\nneedle-bench: {metadata.one_line(meta)}")
    for suite in args.suites:
        print(f"\n== {suite} ==  (median ms; /torch-cuda and /best torch are time ratios, "
              "below 1 is faster)")
        print(report.table(rows, suite, width=70), end="")
    missing = report.unavailable(rows)
    if missing:
        print("\nNot run here:")
        for name, reason in missing.items():
            print(f"  {name}: {reason}")
    print(f"\n{len(rows)} rows in {meta['elapsed_s']} s; wrote " + ", ".join(paths))
    bad = [r for r in rows if r["status"].startswith(("mismatch", "error"))]
    if bad:
        print(f"needle-bench: {len(bad)} row(s) failed validation or raised an error",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
