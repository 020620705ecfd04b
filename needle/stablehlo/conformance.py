"""Runs StableHLO's interpreter test files (``stablehlo/tests/interpret/*.mlir``) through
:func:`needle.stablehlo.load` and checks them as the interpreter would.

Each case (a file's sections between ``// -----``) is a function without arguments whose
``check.*`` ops compare values with expectations. jaxlib's MLIR bindings do not know the
``check`` dialect, so each check is taken out of the text and its operands returned instead;
the comparisons run here in NumPy:

* ``expect_eq`` / ``expect_eq_const``: exactly equal (NaN equals NaN);
* ``expect_almost_eq`` / ``expect_almost_eq_const``: within the stated absolute tolerance,
  default 1e-4 (infinities equal themselves);
* ``expect_close`` (ULP distance) and ``expect_serialized_eq`` (against an interpreter
  probe dump) are not checked here: such cases count as unsupported.

A case *passed* only if it ran and every check held; *failed* if a check did not hold or it
raised anything but :class:`UnsupportedError`; *unsupported* if Needle refused it (the op or
type is named); *no checks* if it ran but has nothing to compare.

    python -m needle.stablehlo.conformance ../shared/stablehlo-interpret [--device cpu]
"""
import glob
import os
import re
import sys

import numpy as np

DEFAULT_TOLERANCE = 1e-4
_CHECK = re.compile(r"^[ \t]*check\.", re.M)
_CONST = re.compile(r"^check\.(expect_eq_const|expect_almost_eq_const)\s+(%[\w#.$-]+)\s*,\s*"
                    r"(.+?)\s*(\{\s*tolerance\s*=\s*([-+0-9.eE]+)\s*(?::\s*\w+)?\s*\})?$")
_PAIR = re.compile(r"^check\.(expect_eq|expect_almost_eq)\s+(%[\w#.$-]+)\s*,\s*(%[\w#.$-]+)"
                   r"\s*(?:,\s*tolerance\s*=\s*([-+0-9.eE]+))?\s*:\s*(.+)$")


class CaseUnsupported(Exception):
    """The harness cannot express this case's checks."""


class Case:
    """One test function: ``file``, ``index`` (its section), ``name`` and ``text``."""

    def __init__(self, file, index, text):
        self.file, self.index, self.text = file, index, text
        match = re.search(r"func\.func\s+(?:public\s+)?@([\w.$-]+)", text)
        self.name = match.group(1) if match else f"case{index}"


def cases(folder):
    """Every case of every ``.mlir`` file in ``folder``, in file order."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.mlir"))):
        with open(path) as f:
            sections = f.read().split("// -----")
        out += [Case(os.path.basename(path), i, s) for i, s in enumerate(sections)
                if "func.func" in s]
    return out


def _statements(text):
    """``(start, end, statement text on one line)`` of each check op: a statement runs to
    the first line end outside brackets that does not follow a comma (dense literals and
    operand lists span lines)."""
    found = []
    for match in _CHECK.finditer(text):
        start = match.start()
        depth, i = 0, text.index("check.", start)
        while i < len(text):
            ch = text[i]
            if ch in "<[({":
                depth += 1
            elif ch in ">])}" and text[i - 1] != "-":  # (an arrow's ">" closes nothing)
                depth -= 1
            elif ch == "\n" and depth <= 0 and not text[:i].rstrip().endswith(","):
                break
            i += 1
        found.append((start, i, " ".join(text[text.index("check.", start):i].split())))
    return found


def rewrite(case):
    """``(module text, checks)``: the case with its checks taken out and their operands
    returned; each check is ``(kind, tolerance, expected attribute text or None)`` for one
    returned value (``expected`` None: the next returned value is the expectation)."""
    text = case.text
    returned, types, checks = [], [], []
    pieces, last = [], 0
    for start, end, stmt in _statements(text):
        pieces.append(text[last:start])
        last = end
        const, pair = _CONST.match(stmt), _PAIR.match(stmt)
        if const:
            kind, value, attr, _, tol = const.groups()
            kind = "eq" if kind == "expect_eq_const" else "almost_eq"
            typ = attr.rsplit(":", 1)[1].strip()
            returned.append(value)
            types.append(typ)
            checks.append((kind, float(tol) if tol else DEFAULT_TOLERANCE, attr))
        elif pair:
            kind, a, b, tol, typ = pair.groups()
            kind = "eq" if kind == "expect_eq" else "almost_eq"
            returned += [a, b]
            types += [typ.strip()] * 2
            checks.append((kind, float(tol) if tol else DEFAULT_TOLERANCE, None))
        else:
            raise CaseUnsupported(f"check not run by this harness: {stmt.split()[0]}")
    pieces.append(text[last:])
    body = "".join(pieces)
    signature = re.search(r"(func\.func\s+(?:public\s+)?@[\w.$-]+\s*\(\s*\))", body)
    if signature is None:
        raise CaseUnsupported("a test function with arguments")
    results = ", ".join(types)
    body = body.replace(signature.group(1), f"{signature.group(1)} -> ({results})", 1)
    start = body.index(signature.group(1))  # the test function: to the next function
    following = body.find("func.func", start + len(signature.group(1)))
    end = len(body) if following < 0 else following
    ret = list(re.finditer(r"func\.return\b[^\n]*", body[start:end]))
    if not ret:
        raise CaseUnsupported("no func.return")
    operands = f" {', '.join(returned)} : {results}" if returned else ""
    last = ret[-1]
    body = (body[:start + last.start()] + "func.return" + operands +
            body[start + last.end():])
    return body, checks


def _expected(attr_text):
    from ..compiler.stablehlo import context  # noqa: PLC0415
    from .mlir import dense_array  # noqa: PLC0415
    with context():
        return dense_array(attr_text)


def _holds(kind, tol, got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    if _inexact(got) or _inexact(want):  # compared as float64 / complex128 values
        wide = np.complex128 if "c" in (got.dtype.kind, want.dtype.kind) else np.float64
        got, want = got.astype(wide), want.astype(wide)
        if kind == "eq":
            return bool(np.array_equal(got, want, equal_nan=True))
        return bool(np.isclose(got, want, rtol=0.0, atol=tol, equal_nan=True).all())
    return bool(np.array_equal(got, want))


def _inexact(a):
    # (ml_dtypes' bfloat16 and float8 types have kind "V")
    return a.dtype.kind in "fc" or a.dtype.name.startswith(("bfloat", "float8"))


def run_case(case, device=None, opt_level=0):
    """``(status, detail)``: status one of ``"passed"``, ``"failed"``, ``"unsupported"``,
    ``"no checks"``."""
    from ..errors import DTypeError  # noqa: PLC0415
    from . import UnsupportedError, load  # noqa: PLC0415
    try:
        text, checks = rewrite(case)
    except CaseUnsupported as e:
        return "unsupported", f"harness: {e}"
    try:
        prog = load(text, device=device, opt_level=opt_level)
    except (UnsupportedError, DTypeError) as e:  # (DTypeError: a dtype the device lacks)
        return "unsupported", str(e).splitlines()[0]
    except ValueError as e:
        if str(e).startswith("not a StableHLO module"):  # (an op of another dialect)
            return "unsupported", f"parse: {str(e).splitlines()[0][:200]}"
        return "failed", f"load raised ValueError: {str(e).splitlines()[0][:200]}"
    except Exception as e:  # noqa: BLE001 - a bug: reported as a failure
        return "failed", f"load raised {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    try:
        outputs = [o.numpy() if hasattr(o, "numpy") and not isinstance(o, np.ndarray) else o
                   for o in prog()]
    except (UnsupportedError, NotImplementedError) as e:
        return "unsupported", f"run: {str(e).splitlines()[0][:200]}"
    except Exception as e:  # noqa: BLE001
        return "failed", f"run raised {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if not checks:
        return "no checks", ""
    position = 0
    for number, (kind, tol, attr) in enumerate(checks):
        got = outputs[position]
        if attr is None:
            want = outputs[position + 1]
            position += 2
        else:
            try:
                want = _expected(attr)
            except Exception as e:  # noqa: BLE001 - the harness's own error: a failure
                return "failed", f"check {number}: reading {attr[:80]!r}: {e}"
            position += 1
        if not _holds(kind, tol, got, want):
            return "failed", f"check {number} ({kind}): got {np.asarray(got).tolist()!r:.200}, " \
                             f"expected {np.asarray(want).tolist()!r:.200}"
    return "passed", ""


def run_folder(folder, device=None, opt_level=0):
    """``{file: [(case, status, detail), ...]}`` for every case in ``folder``."""
    results = {}
    for case in cases(folder):
        results.setdefault(case.file, []).append((case,) + run_case(case, device, opt_level))
    return results


STATUSES = ("passed", "failed", "unsupported", "no checks")


def table(results):
    """A Markdown table: per file, the count of each status, and the totals."""
    lines = ["| file | " + " | ".join(STATUSES) + " |", "|---|" + "---:|" * len(STATUSES)]
    totals = dict.fromkeys(STATUSES, 0)
    for file, rows in sorted(results.items()):
        counts = dict.fromkeys(STATUSES, 0)
        for _, status, _ in rows:
            counts[status] += 1
            totals[status] += 1
        lines.append(f"| {file} | " + " | ".join(str(counts[s]) for s in STATUSES) + " |")
    lines.append("| **all** | " + " | ".join(f"**{totals[s]}**" for s in STATUSES) + " |")
    return "\n".join(lines), totals


def main(argv):
    import argparse  # noqa: PLC0415
    import needle  # noqa: PLC0415
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--failures", action="store_true", help="list failed cases")
    args = parser.parse_args(argv)
    results = run_folder(args.folder, needle.device(args.device))
    text, _ = table(results)
    print(text)
    for file, rows in sorted(results.items()):
        for case, status, detail in rows:
            if status == "failed" or (args.failures and status != "passed"):
                print(f"{status}: {file} @{case.name}: {detail}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
