"""StableHLO's official interpreter tests (../shared/stablehlo-interpret, 509 cases with a
function) through needle.stablehlo.load: on no device may a case give a wrong answer (what
Needle cannot run must be refused by name), and on cpu no case that passed before may stop
passing (docs/stablehlo-conformance.md has the per-file table)."""
import os

import pytest

pytest.importorskip("jaxlib.mlir.dialects.stablehlo", reason="needs jaxlib's MLIR bindings")

import needle  # noqa: E402
from needle.stablehlo import conformance  # noqa: E402

#: where the cases are: $NEEDLE_STABLEHLO_INTERPRET_TESTS, else ../shared next to the checkout
FOLDER = os.environ.get("NEEDLE_STABLEHLO_INTERPRET_TESTS") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "stablehlo-interpret")
#: cases passing on cpu at this commit (the table's total): a change may raise it, never lower
PASSED_ON_CPU = 449


def _run(device):
    if not os.path.isdir(FOLDER):
        pytest.skip(f"the interpreter tests are not here ({os.path.abspath(FOLDER)})")
    return conformance.run_folder(FOLDER, device)


@pytest.fixture(scope="module")
def results():
    return _run(needle.cpu())


def test_no_case_gives_a_wrong_answer(device):
    failed = [f"{file} @{case.name}: {detail}" for file, rows in _run(device).items()
              for case, status, detail in rows if status == "failed"]
    assert not failed, "\n".join(failed)


def test_the_cases_that_passed_still_pass(results):
    _, totals = conformance.table(results)
    assert totals["passed"] >= PASSED_ON_CPU, totals


def test_every_refusal_names_what_is_missing(results):
    for file, rows in results.items():
        for case, status, detail in rows:
            if status == "unsupported":
                assert detail and ("stablehlo." in detail or "func." in detail or
                                   detail.startswith(("harness:", "parse:", "@"))), (file, detail)


def test_a_wrong_result_is_caught(tmp_path):
    """The harness itself: a check that does not hold fails the case."""
    (tmp_path / "wrong.mlir").write_text("""
func.func @wrong() {
  %0 = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %1 = stablehlo.add %0, %0 : tensor<2xf32>
  check.expect_almost_eq_const %1, dense<[2.0, 4.5]> : tensor<2xf32>
  func.return
}

// -----

func.func @right() {
  %0 = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %1 = stablehlo.add %0, %0 : tensor<2xf32>
  check.expect_eq_const %1,
    dense<[2.0, 4.0]> : tensor<2xf32>
  func.return
}
""")
    rows = conformance.run_folder(str(tmp_path), needle.cpu())["wrong.mlir"]
    assert [(case.name, status) for case, status, _ in rows] == [("wrong", "failed"),
                                                                ("right", "passed")]
