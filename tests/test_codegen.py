"""Generated fusion kernels (needle/compiler/codegen): a group's structure, its CUDA source
(compiled with NVRTC for sm_80 and sm_90 wherever NVRTC is installed, the CPU included), and
on a device with a generator, the generated kernel against the same graph run member by
member and against the reference interpreter on fresh random inputs: sizes that are not
multiples of the block, broadcasts, transposed (non-contiguous) inputs, reshapes, row,
column and whole reductions, integer and boolean ops, NaN and infinities."""
import math

import numpy as np
import pytest

import needle
from needle.compiler import Executor, Graph, evaluate, run_passes
from needle.compiler.codegen import Group, Unsupported, generator_for
from needle.compiler.codegen.cuda import literal, recording_generator, source

from test_compiler_passes import T, const, op, random_inputs, scalar_splat


def _nvrtc():
    from needle.backend_ndarray.cuda import nvrtc
    try:
        nvrtc.version()
    except nvrtc.NvrtcError as e:
        pytest.skip(f"NVRTC unavailable: {e}")


def _bcast(g, x, shape, dims):
    return op(g, "broadcast_in_dim", x, broadcast_dimensions=dims, shape=list(shape))


def _sum(g, x, dims, computation="add", init=0.0, dtype="float32"):
    return op(g, "reduce", x, const(g, init, dtype), dimensions=dims, computation=computation)


# -- cases: graphs whose O2 form holds fusion groups ----------------------------------------
def chain():  # broadcast bias, odd sizes
    g = Graph()
    x, b = g.add_input(T(37, 53)), g.add_input(T(53))
    y = op(g, "add", op(g, "multiply", x, scalar_splat(g, 2.5, (37, 53))), _bcast(g, b, (37, 53), [1]))
    g.outputs = [op(g, "tanh", op(g, "maximum", y, scalar_splat(g, 0.0, (37, 53))))]
    return g


def transposed():  # the group reads a transposed view
    g = Graph()
    x, z = g.add_input(T(19, 41)), g.add_input(T(41, 19))
    xt = op(g, "transpose", x, permutation=[1, 0])
    g.outputs = [op(g, "multiply", op(g, "exponential", op(g, "subtract", xt, z)), z)]
    return g


def reshaped():  # a reshape of an input feeds the group
    g = Graph()
    x, y = g.add_input(T(5, 6, 7)), g.add_input(T(30, 7))
    xr = retype(g, "reshape", x, (30, 7))
    g.outputs = [op(g, "logistic", op(g, "add", xr, y)), op(g, "negate", xr)]
    return g


def retype(g, name, x, shape=None, dtype=None):
    """A reshape or convert node."""
    if name == "reshape":
        return op(g, "reshape", x, shape=list(shape))
    return op(g, "convert", x, dtype=dtype)


def row_sum():  # exp(x - 1) is also returned: an elementwise output beside the reduce
    g = Graph()
    x = g.add_input(T(29, 300))
    e = op(g, "exponential", op(g, "subtract", x, scalar_splat(g, 1.0, (29, 300))))
    g.outputs = [_sum(g, op(g, "multiply", e, x), [1]), e]
    return g


def long_row_max():  # rows long enough for a whole block per row
    g = Graph()
    x = g.add_input(T(3, 5000))
    g.outputs = [_sum(g, op(g, "abs", op(g, "negate", x)), [1], "max", -math.inf)]
    return g


def column_sum():  # a bias gradient: sum over the batch of a masked gradient
    g = Graph()
    grad, act = g.add_input(T(300, 45)), g.add_input(T(300, 45))
    mask = op(g, "compare", act, scalar_splat(g, 0.0, (300, 45)), comparison_direction="GT")
    masked = op(g, "select", mask, grad, scalar_splat(g, 0.0, (300, 45)))
    g.outputs = [_sum(g, op(g, "multiply", masked, act), [0])]
    return g


def middle_axis():  # reduce the middle axis: kept axes on both sides
    g = Graph()
    x = g.add_input(T(8, 9, 10))
    g.outputs = [_sum(g, op(g, "multiply", x, x), [1], "min", math.inf)]
    return g


def whole():  # everything to one number, with an init value that is not the identity
    g = Graph()
    x = g.add_input(T(70, 130))
    g.outputs = [_sum(g, op(g, "multiply", x, op(g, "sine", x)), [0, 1], init=0.5)]
    return g


def integers_and_booleans():
    g = Graph()
    a, b = g.add_input(T(33, dtype="int32")), g.add_input(T(33, dtype="int32"))
    x, p = g.add_input(T(33)), g.add_input(T(33, dtype="bool"))
    one = scalar_splat(g, 1, (33,), "int32")
    b1 = op(g, "add", op(g, "abs", b), one)  # never zero
    q, r = op(g, "divide", a, b1), op(g, "remainder", a, b1)
    lt = op(g, "compare", q, r, comparison_direction="LT")
    both = op(g, "and", lt, op(g, "not", p))
    either = op(g, "or", both, p)
    picked = op(g, "select", either, retype(g, "convert", q, dtype="float32"), x)
    fl = op(g, "add", op(g, "floor", op(g, "multiply", x, scalar_splat(g, 3.0, (33,)))),
            op(g, "sign", x))
    cl = op(g, "clamp", const(g, -0.5), op(g, "power", op(g, "abs", x), scalar_splat(g, 1.5, (33,))),
             const(g, 0.75))
    rs = op(g, "rsqrt", op(g, "add", op(g, "abs", x), scalar_splat(g, 0.1, (33,))))
    lg = op(g, "log", op(g, "add", op(g, "abs", x), scalar_splat(g, 1.0, (33,))))
    g.outputs = [q, r, retype(g, "convert", either, dtype="float32"), op(g, "add", picked, fl),
                 op(g, "add", op(g, "add", cl, rs), lg), retype(g, "convert", op(g, "cosine", x), dtype="int32")]
    return g


def doubles():
    g = Graph()
    x, y = g.add_input(T(65, 3, dtype="float64")), g.add_input(T(3, dtype="float64"))
    s = op(g, "sqrt", op(g, "add", op(g, "multiply", x, x), _bcast(g, y, (65, 3), [1])))
    g.outputs = [_sum(g, s, [0], dtype="float64"), op(g, "divide", x, s)]
    return g


def specials():  # NaN propagates through maximum, infinities as constants
    g = Graph()
    x = g.add_input(T(300))
    y = op(g, "maximum", x, scalar_splat(g, math.nan, (300,)))
    z = op(g, "minimum", x, scalar_splat(g, math.inf, (300,)))
    w = op(g, "maximum", op(g, "log", x), scalar_splat(g, -math.inf, (300,)))
    g.outputs = [y, op(g, "add", z, w)]
    return g


CASES = [chain, transposed, reshaped, row_sum, long_row_max, column_sum, middle_axis, whole,
         integers_and_booleans, doubles, specials]
REDUCING = {row_sum, long_row_max, column_sum, middle_axis, whole, doubles}


def _fused(make):
    graph, _ = run_passes(make(), 2)
    assert any(n.op == "composite" for n in graph.nodes), "the case fuses nothing"
    return graph


# -- structure and sources (no GPU) ---------------------------------------------------------
@pytest.mark.parametrize("make,kind", [(chain, "loop"), (row_sum, "row"), (column_sum, "column"),
                                       (middle_axis, "column"), (whole, "row")],
                         ids=lambda x: getattr(x, "__name__", x))
def test_group_kind(make, kind):
    (node,) = [n for n in _fused(make).nodes if n.op == "composite"]
    assert Group(node.decomposition).kind == kind


def test_groups_with_other_ops_are_refused():
    d = Graph()
    a, b = d.add_input(T(4, 4)), d.add_input(T(4, 4))
    d.outputs = [op(d, "exponential", op(d, "dot_general", a, b, lhs_batching_dimensions=[],
                                         rhs_batching_dimensions=[],
                                         lhs_contracting_dimensions=[1],
                                         rhs_contracting_dimensions=[0]))]
    with pytest.raises(Unsupported, match="dot_general"):
        Group(d)
    d = Graph()
    x = d.add_input(T(4, 5))
    d.outputs = [_sum(d, x, [0]), _sum(d, x, [1])]
    with pytest.raises(Unsupported, match="more than one reduce"):
        Group(d)


@pytest.mark.parametrize("value", [0.1, -3.0, 1e-30, 3.4e38, 0.0, -0.0, 1 / 3])
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_literals_are_exact(value, ctype):
    text = literal(value, ctype)
    expected = float(np.float32(value)) if ctype == "float" else value
    parsed = float.fromhex(text.rstrip("f"))
    assert parsed == expected and math.copysign(1, parsed) == math.copysign(1, expected)


def test_special_literals():
    assert "0x7fc00000" in literal(math.nan, "float")
    assert "0x7ff0000000000000" in literal(math.inf, "double")
    assert "0xff800000" in literal(-math.inf, "float")


def test_every_case_compiles_with_nvrtc(rng):
    """Sources recorded on the CPU (with the strides of a real run) compile for sm_80 and
    sm_90, and each has its one entry point."""
    _nvrtc()
    from needle.backend_ndarray.cuda import compiler, launch
    sources = {}
    for make in CASES:
        graph = _fused(make)
        ex = Executor(graph, needle.cpu(), generator=recording_generator(sources))
        assert ex.info["generated_kernels"] >= 1, make.__name__
        got = ex.numpy(ex(*random_inputs(graph, rng)))
        assert len(got) == len(graph.outputs)
    d = Graph(name="needle.fusion")  # a negated negative constant: "-(-0x1.8p+0f)"
    x = d.add_input(T(7))
    d.outputs = [op(d, "add", x, op(d, "negate", scalar_splat(d, -1.5, (7,))))]
    text = source(Group(d), "needle_gen_negated", [(1,)], lambda v: "float32")
    sources["needle_gen_negated"] = text
    for name, text in sources.items():
        for arch in ("80", "90"):
            cubin, params, _ = compiler.compile_file(f"{name}.cu", arch,
                                                     compiler.GENERATED_OPTIONS, text)
            assert list(params) == [name]
            assert all(kind == "u64" for kind in params[name])  # addresses only
            launch.pack_format(params[name])


# -- on the device: generated == member by member == reference -------------------------------
def _generator(device):
    generator = generator_for(device)
    if generator is None:
        pytest.skip(f"needle.compile generates no kernels for {device.name}")
    return generator


@pytest.mark.parametrize("make", CASES, ids=lambda m: m.__name__)
def test_generated_kernel_equals_the_unfused_graph(make, device, rng):
    generator = _generator(device)
    if make in REDUCING and not generator.reductions:
        pytest.skip(f"{device.name}'s generated kernels are loops (reductions run member "
                    f"by member)")
    if make is doubles and "float64" not in device.backend.dtypes:
        pytest.skip(f"{device.name} holds no float64")
    graph = _fused(make)
    generated = Executor(graph, device, generator=generator)
    assert generated.info["generated_kernels"] >= 1
    unfused = Executor(graph, device)
    for _ in range(2):
        inputs = random_inputs(graph, rng)
        got, member = generated.numpy(generated(*inputs)), unfused.numpy(unfused(*inputs))
        expected = evaluate(make(), *inputs)
        for k, (a, b, e) in enumerate(zip(got, member, expected)):
            if make in REDUCING:  # a kernel sums in its own order
                tol = 1e-12 if a.dtype == np.float64 else 2e-5
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"output {k}")
            elif not generator.bitwise:  # FMAs the driver contracted: a product's rounding
                # (an ulp of operands of size ~1, however close to 0 a sum comes out)
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=f"output {k}")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"output {k}")
            np.testing.assert_allclose(a.astype("float64"), np.asarray(e, dtype="float64"),
                                       rtol=1e-4, atol=1e-4, err_msg=f"output {k} vs reference")


def test_debug_src_prints_generated_sources(device, rng, monkeypatch, capsys):
    generator = _generator(device)
    monkeypatch.setenv("NEEDLE_DEBUG", "src")
    graph = _fused(chain)
    ex = Executor(graph, device, generator=generator)
    ex(*random_inputs(graph, rng))
    err = capsys.readouterr().err
    assert "---- generated needle_gen_" in err
    assert '#include "common.cuh"' in err or "// include: math.wgsl" in err


# -- the index math, run as Python (no GPU): every read lands where NumPy's view reads -------
def _run_loop_source(text, n, inputs, out_size):
    """Execute a generated loop kernel's body in Python for i in range(n): its statements
    are declarations of integer index temporaries and values, which translate line by line
    (C integer division becomes //). Only for kernels of movement ops and negation."""
    body = text.split("i += grid_threads()) {", 1)[1].rsplit("}", 2)[0]
    lines = []
    for line in body.strip().splitlines():
        line = line.strip().rstrip(";")
        for prefix in ("const i64 ", "i64 ", "const float ", "const double "):
            if line.startswith(prefix):
                line = line[len(prefix):]
        lines.append(line.replace(" /= ", " //= ").replace(" / ", " // "))
    code = compile("\n".join(lines), "<kernel body>", "exec")
    out = [np.zeros(out_size)]
    env = {f"i{k}": a for k, a in enumerate(inputs)}
    env["o0"] = out[0]
    for i in range(n):
        env["i"] = i
        exec(code, env)  # noqa: S102 - the test's own generated code
    return out[0]


def _movement_chain(g, x, chain):
    for name, attrs in chain:
        x = op(g, name, x, **attrs)
    return x


CHAINS = {
    "slice": [("slice", dict(start_indices=[1, 0], limit_indices=[5, 4], strides=[1, 1]))],
    "strided_slice_of_transpose": [
        ("transpose", dict(permutation=[1, 0])),
        ("slice", dict(start_indices=[1, 2], limit_indices=[4, 6], strides=[2, 3]))],
    "reshape_of_slice": [
        ("slice", dict(start_indices=[2, 1], limit_indices=[6, 4], strides=[1, 1])),
        ("reshape", dict(shape=[3, 4]))],
    "broadcast_of_reshape": [
        ("reshape", dict(shape=[24])),
        ("slice", dict(start_indices=[3], limit_indices=[23], strides=[5])),
        ("broadcast_in_dim", dict(broadcast_dimensions=[1], shape=[3, 4]))],
    "transpose_reshape": [
        ("reshape", dict(shape=[2, 3, 4])),
        ("transpose", dict(permutation=[2, 0, 1])),
        ("reshape", dict(shape=[8, 3]))],
}


@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("layout", ["compact", "transposed"])
def test_index_math_reads_what_numpy_reads(name, layout, rng):
    d = Graph(name="needle.fusion")
    x = d.add_input(T(6, 4))
    d.outputs = [op(d, "negate", _movement_chain(d, x, CHAINS[name]))]
    data = rng.standard_normal((6, 4)).astype("float32")
    if layout == "compact":
        buffer, strides = data.reshape(-1), (4, 1)
    else:  # the input is a transposed view of a (4, 6) buffer
        buffer, strides = np.ascontiguousarray(data.T).reshape(-1), (1, 6)
    group = Group(d)
    text = source(group, "k", [strides], lambda v: "float32")
    got = _run_loop_source(text, group.n_out, [buffer], group.n_out)
    expected = evaluate(d, data)[0].reshape(-1)
    np.testing.assert_array_equal(got.astype("float32"), expected)


def test_wgsl_groups_over_one_binding_run_member_by_member(device, rng, monkeypatch):
    """A webgpu buffer larger than one storage binding cannot be bound whole: the group
    then runs as its members (which the backend splits into binding-sized chunks)."""
    if device.name != "webgpu":
        pytest.skip("a webgpu limit")
    graph = _fused(chain)
    ex, plain = Executor(graph, device, generator=generator_for(device)), Executor(graph, device)
    monkeypatch.setattr(type(device.backend), "max_binding_elements", property(lambda b: 100))
    inputs = [needle.NDArray(a, device=device) for a in random_inputs(graph, rng)]
    before = device.backend.stats()["dispatches"]
    got = ex(*inputs)
    assert device.backend.stats()["dispatches"] - before >= 3  # the members, one by one
    np.testing.assert_array_equal(ex.numpy(got)[0], plain.numpy(plain(*inputs))[0])


# -- independent loops launched as one kernel -----------------------------------------------
def independent_loops():
    """Three independent loop groups: sizes within and beyond a block, one reading a
    transposed view (a movement step between the groups: the batch runs it first)."""
    g = Graph()
    a, b, c = g.add_input(T(5, 7)), g.add_input(T(300)), g.add_input(T(41, 19))
    fa = op(g, "tanh", op(g, "multiply", a, scalar_splat(g, 1.5, (5, 7))))
    fb = op(g, "exponential", op(g, "negate", b))
    fc = op(g, "exponential", op(g, "abs", op(g, "transpose", c, permutation=[1, 0])))
    g.outputs = [fa, fb, fc]
    return g


def _batches(ex):
    from needle.compiler.executor import _Batch
    return [node for _, node, _ in ex._steps if isinstance(node, _Batch)]


def test_independent_loops_run_as_one_launch(device, rng):
    generator = _generator(device)
    if generator.batch is None:
        pytest.skip(f"{device.name} launches each generated kernel alone")
    graph = _fused(independent_loops)
    generated, unfused = Executor(graph, device, generator=generator), Executor(graph, device)
    (batch,) = _batches(generated)
    assert len(batch.members) == 3
    for _ in range(2):
        inputs = random_inputs(graph, rng)
        got, member = generated.numpy(generated(*inputs)), unfused.numpy(unfused(*inputs))
        for k, (a, b) in enumerate(zip(got, member)):
            np.testing.assert_array_equal(a, b, err_msg=f"output {k}")


def test_batched_sources_compile_and_keep_each_member_on_its_blocks():
    """The recorded source of a batch (what CI compiles) gives each member its own block
    range, and running the recording gives the graph's results."""
    _nvrtc()
    from needle.backend_ndarray.cuda import compiler
    sources, cpu = {}, needle.cpu()
    graph = _fused(independent_loops)
    ex = Executor(graph, cpu, generator=recording_generator(sources))
    assert len(_batches(ex)) == 1
    inputs = random_inputs(graph, np.random.default_rng(0))
    for a, e in zip(ex.numpy(ex(*inputs)), evaluate(independent_loops(), *inputs)):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
    (text,) = [t for t in sources.values() if "blockIdx.x <" in t]
    assert "if (blockIdx.x < 1) {" in text and "if (blockIdx.x < 3) {" in text  # 35, 300
    assert "if (blockIdx.x < 7) {" in text  # ... and 779 elements: 1 + 2 + 4 blocks
    name = text.split("void ")[1].split("(")[0]
    cubin, params, _ = compiler.compile_file(f"{name}.cu", 90, compiler.GENERATED_OPTIONS, text)
    assert name in params


def test_a_batch_keeps_its_kernel_parameters_within_4_kib():
    """Hundreds of independent loops (an Adam step over many tensors) make several batches,
    none with more pointers than the 4 KiB every CUDA driver takes."""
    from needle.compiler.executor import BATCH_PARAMETER_BYTES
    g = Graph()
    outs = []
    for _ in range(300):
        x = g.add_input(T(3))
        outs.append(op(g, "tanh", op(g, "exponential", x)))
    g.outputs = outs
    graph = _fused(lambda: g)
    ex = Executor(graph, needle.cpu(), generator=recording_generator({}))
    batches = _batches(ex)
    assert len(batches) >= 2 and sum(len(b.members) for b in batches) == 300
    assert all(8 * (len(b.inputs) + len(b.outputs)) <= BATCH_PARAMETER_BYTES for b in batches)
