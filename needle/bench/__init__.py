"""needle-bench: Needle's benchmark suites (matmul, attention, model inference and training
steps, one layer's forward and backward) against PyTorch and JAX. Run ``needle-bench --help`` or ``python -m needle.bench --help``;
see bench/README.md.

Modules: cli (arguments, orchestration), suites (cases, shared specs and data, references),
backends (the backend registry) with backends_needle / backends_torch / backends_jax,
validation, timing, report (table, JSON, CSV, Markdown), plot (PNG), metadata, progress.
"""


def main(argv=None):
    from .cli import main as _main
    return _main(argv)
