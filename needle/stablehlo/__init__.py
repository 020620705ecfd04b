"""StableHLO programs on Needle devices: ``load`` parses StableHLO (the portable form JAX,
TensorFlow and PyTorch/XLA emit) with jaxlib's MLIR bindings (``pip install
'needle[stablehlo]'``), converts it to Needle's IR and runs it on any device.

Example:
    >>> prog = needle.stablehlo.load('''
    ... func.func @main(%x: tensor<3xf32>) -> tensor<3xf32> {
    ...   %0 = stablehlo.exponential %x : tensor<3xf32>
    ...   func.return %0 : tensor<3xf32>
    ... }''')
    >>> prog.signature
    (float32[3]) -> (float32[3])
    >>> prog(np.zeros(3, np.float32))[0].numpy()
    array([1., 1., 1.], dtype=float32)

What runs is listed in ``docs/stablehlo.md``; anything else raises
:class:`UnsupportedError` naming the op, its location and its types.
"""
import os
import sys

from .importer import CONVERTERS, import_module
from .mlir import UnsupportedError
from .program import Program, Signature

__all__ = ["load", "from_jax", "Program", "Signature", "UnsupportedError", "CONVERTERS"]


def _parse(text):
    try:
        from jaxlib.mlir import ir  # noqa: PLC0415 - the extra
    except ImportError as e:
        raise ImportError(f"needle.stablehlo needs jaxlib's MLIR bindings: pip install "
                          f"'needle[stablehlo]' ({e})") from None
    from ..compiler.stablehlo import context  # noqa: PLC0415
    ctx = context()
    with ctx:
        try:
            module = ir.Module.parse(text)
        except ir.MLIRError as e:
            raise ValueError(f"not a StableHLO module jaxlib can parse: {e}") from None
        if "chlo." in text:
            _legalize_chlo(module)
    return ctx, module


def _legalize_chlo(module):
    """CHLO ops (JAX emits ``chlo.erf``, ``erf_inv``, ``erfc``, ``lgamma``, ``top_k``, ...
    in ordinary programs: ``jax.random.normal``, exact GELU) rewritten into StableHLO by
    StableHLO's own ``chlo-legalize-to-stablehlo`` pass."""
    from jaxlib.mlir import passmanager  # noqa: PLC0415
    from jaxlib.mlir._mlir_libs import _stablehlo  # noqa: PLC0415
    _stablehlo.register_stablehlo_passes()
    try:
        passmanager.PassManager.parse(
            "builtin.module(func.func(chlo-legalize-to-stablehlo))").run(module.operation)
    except Exception as e:  # noqa: BLE001 - an op the pass cannot lower stays, and is refused
        raise UnsupportedError(f"a CHLO op StableHLO's legalization cannot lower: "
                               f"{str(e).splitlines()[0][:200]}") from None


def load(text_or_path, device=None, opt_level=2, function=None):
    """Load a StableHLO module (MLIR text, pretty or generic form, or a path to a file).

    Args:
        text_or_path: the module's text, or the path of a ``.mlir`` file.
        device: the Needle device to run on (default: cpu).
        opt_level: the compiler passes to run on the imported graph (0-3, as
            ``needle.compile``).
        function: the function to run (default: ``main``, else the only public one).

    Returns:
        A :class:`Program`.

    Raises:
        UnsupportedError: an op, type or attribute Needle cannot run yet.
        ValueError: the text does not parse, or names no function to run.
    """
    text = text_or_path
    if "{" not in text and os.path.exists(text):
        with open(text) as f:
            text = f.read()
    ctx, module = _parse(text)
    with ctx:
        imported = import_module(module, function)
    return Program(imported, device, opt_level)


def from_jax(fn, *example_args, device=None, opt_level=2, donate_argnums=()):
    """``fn`` lowered by ``jax.jit`` for arguments like ``example_args`` (pytrees of arrays)
    and loaded as a Needle program: the returned function takes arguments of the same
    structure, shapes and dtypes (NumPy arrays or Needle Tensors) and returns ``fn``'s
    output structure with Needle results (see :class:`Program`); ``.program`` is the
    :class:`Program`. Needs ``jax``.

    Imported here for the first time, JAX is told not to preallocate GPU memory
    (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless set), so that it leaves the memory
    Needle's GPU devices use. JAX decides the program's dtypes (float32 unless
    ``jax_enable_x64`` is set).

    ``donate_argnums`` are donated as with ``jax.jit``: a donated argument that JAX pairs
    with an output of its type, given as a Needle Tensor (each leaf of a pytree), is updated
    in place to that output and returned as it (:attr:`Program.aliases`), as a training
    step updates its parameters.
    """
    if "jax" not in sys.modules:  # JAX would take 75% of the GPU a Needle device shares
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax  # noqa: PLC0415 - the extra
    except ImportError as e:
        raise ImportError(f"needle.stablehlo.from_jax needs JAX: pip install jax ({e})") from None
    lowered = jax.jit(fn, keep_unused=True, donate_argnums=donate_argnums).lower(*example_args)
    program = load(lowered.as_text(), device=device, opt_level=opt_level)
    in_tree, out_tree = jax.tree_util.tree_structure(example_args), lowered.out_tree

    def run(*args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != in_tree:
            raise TypeError(f"{getattr(fn, '__name__', 'the function')} was loaded for "
                            f"arguments {in_tree}, got {tree}")
        return jax.tree_util.tree_unflatten(out_tree, list(program(*leaves)))

    run.program = program
    run.__name__ = getattr(fn, "__name__", "from_jax")
    return run
