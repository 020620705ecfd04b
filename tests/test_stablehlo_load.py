"""needle.stablehlo.load and from_jax: StableHLO programs (written by hand, lowered by JAX,
exported by needle.compile) run on every device and give what JAX (the oracle) or the
compiled function gives; what cannot run is refused with the op, its location and types."""
import re

import numpy as np
import pytest

pytest.importorskip("jaxlib.mlir.dialects.stablehlo", reason="needs jaxlib's MLIR bindings")

import needle  # noqa: E402
from needle import nn  # noqa: E402
from needle.stablehlo import UnsupportedError, from_jax, load  # noqa: E402

jax = pytest.importorskip("jax")
jax.config.update("jax_default_matmul_precision", "highest")  # (JAX on a GPU uses TF32 otherwise)
jnp, lax = jax.numpy, jax.lax


def _values(outputs):
    return [o.numpy() if isinstance(o, needle.Tensor) else o for o in outputs]


def _mlp(x, w1, b1, w2):
    h = jnp.tanh(x @ w1 + b1)
    return jax.nn.softmax(h @ w2, axis=-1), jax.nn.logsumexp(h, axis=1)


def _conv(x, w):  # NHWC, HWIO, stride 2, padding 1 (and a dilation of the kernel)
    dn = ("NHWC", "HWIO", "NHWC")
    return (lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=dn),
            lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2),
                                     dimension_numbers=dn))


def _layer_norm(x, g):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * g


def _select_and_movement(x, y):
    z = jnp.where(x > y, x, jnp.maximum(y, 0.5))
    w = jnp.concatenate([z[::-1], jnp.pad(y, ((1, 0), (0, 2)))[1:, 1:4]], axis=0).T
    return w.reshape(-1)[::2], jnp.clip(x, -0.5, 0.5).max(axis=0)


JAX_CASES = {
    "mlp": (_mlp, [(5, 7), (7, 9), (9,), (9, 3)]),
    "conv": (_conv, [(2, 7, 6, 3), (3, 3, 3, 4)]),
    "layer_norm": (_layer_norm, [(4, 10), (10,)]),
    "select_and_movement": (_select_and_movement, [(4, 3), (4, 3)]),
}


@pytest.mark.parametrize("name", JAX_CASES)
def test_jax_programs_give_jaxs_results(device, rng, name):
    fn, shapes = JAX_CASES[name]
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    run = from_jax(fn, *args, device=device)
    want = jax.tree_util.tree_leaves(jax.jit(fn)(*args))
    got = jax.tree_util.tree_leaves(run(*args), is_leaf=lambda x: isinstance(x, needle.Tensor))
    assert len(got) == len(want)
    for g, w in zip(_values(got), want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=2e-5, atol=2e-5)
    fresh = [rng.standard_normal(s).astype(np.float32) for s in shapes]  # a second call
    for g, w in zip(_values(jax.tree_util.tree_leaves(
            run(*fresh), is_leaf=lambda x: isinstance(x, needle.Tensor))),
            jax.tree_util.tree_leaves(jax.jit(fn)(*fresh))):
        np.testing.assert_allclose(g, np.asarray(w), rtol=2e-5, atol=2e-5)


def test_from_jax_keeps_the_pytrees(rng):
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32)}
    x = rng.standard_normal((2, 3)).astype(np.float32)
    run = from_jax(lambda p, x: {"y": x @ p["w"] + p["b"], "n": (x * x).sum()}, params, x)
    out = run(params, x)
    assert set(out) == {"y", "n"} and isinstance(out["y"], needle.Tensor)
    np.testing.assert_allclose(out["y"].numpy(), x @ params["w"] + params["b"], rtol=1e-5)
    with pytest.raises(TypeError, match="loaded for arguments"):
        run(x, params)


GENERIC = """
"func.func"() <{function_type = (tensor<2x2xf32>) -> tensor<2xf32>, sym_name = "main"}> ({
^bb0(%arg0: tensor<2x2xf32>):
  %0 = "stablehlo.constant"() <{value = dense<0xFF800000> : tensor<f32>}> : () -> tensor<f32>
  %1 = "stablehlo.reduce"(%arg0, %0) <{dimensions = array<i64: 1>}> ({
  ^bb0(%a: tensor<f32>, %b: tensor<f32>):
    %2 = "stablehlo.maximum"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
    "stablehlo.return"(%2) : (tensor<f32>) -> ()
  }) : (tensor<2x2xf32>, tensor<f32>) -> tensor<2xf32>
  "func.return"(%1) : (tensor<2xf32>) -> ()
}) : () -> ()
"""


def test_the_generic_form_loads(device, rng):
    x = rng.standard_normal((2, 2)).astype(np.float32)
    prog = load(GENERIC, device=device)
    assert repr(prog.signature) == "(float32[2, 2]) -> (float32[2])"
    np.testing.assert_array_equal(prog(x)[0].numpy(), x.max(axis=1))
    assert "reduce" in prog.lower().as_text()


BOOLS = """
func.func @main(%x: tensor<4xf32>, %y: tensor<4xf32>) -> (tensor<4xi1>, tensor<4xi64>, tensor<4xf32>) {
  %gt = stablehlo.compare GT, %x, %y : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xi1>
  %fin = stablehlo.is_finite %x : (tensor<4xf32>) -> tensor<4xi1>
  %both = stablehlo.xor %gt, %fin : tensor<4xi1>
  %iota = stablehlo.iota dim = 0 : tensor<4xi64>
  %big = stablehlo.constant dense<[5, -7, 9007199254740992, 3]> : tensor<4xi64>
  %pick = stablehlo.select %both, %iota, %big : tensor<4xi1>, tensor<4xi64>
  %c = stablehlo.ceil %x : tensor<4xf32>
  func.return %both, %pick, %c : tensor<4xi1>, tensor<4xi64>, tensor<4xf32>
}
"""


def test_booleans_and_exact_integers(rng):
    x = np.array([1.5, np.inf, -2.5, np.nan], np.float32)
    y = np.zeros(4, np.float32)
    both, pick, c = load(BOOLS)(x, y)
    expected = (x > y) ^ np.isfinite(x)
    np.testing.assert_array_equal(both, expected)
    assert pick.dtype == np.int64  # 2**53 is exact in float64 storage
    np.testing.assert_array_equal(pick, np.where(expected, np.arange(4),
                                                 [5, -7, 2 ** 53, 3]))
    np.testing.assert_array_equal(c.numpy(), np.ceil(x))


def _module(body, args="", results="tensor<2xf32>"):
    return f"func.func @main({args}) -> {results} {{\n{body}\n}}"


INTEGERS = """
func.func @main(%x: tensor<3xi32>, %f: tensor<3xf32>) -> (tensor<3xi32>, tensor<3xi32>, tensor<3xi64>, tensor<3xi32>) {
  %big = stablehlo.constant dense<[2147483647, -7, 1152921504606846976]> : tensor<3xi64>
  %one = stablehlo.constant dense<1> : tensor<3xi32>
  %sum = stablehlo.add %x, %one : tensor<3xi32>
  %q = stablehlo.divide %x, %sum : tensor<3xi32>
  %w = stablehlo.multiply %big, %big : tensor<3xi64>
  %t = stablehlo.convert %f : (tensor<3xf32>) -> tensor<3xi32>
  func.return %sum, %q, %w, %t : tensor<3xi32>, tensor<3xi32>, tensor<3xi64>, tensor<3xi32>
}
"""


def test_integers_are_native_on_cpu():
    """On cpu integers wrap and divide as StableHLO says (toward zero)."""
    x = np.array([2147483647, -7, 5], np.int32)
    f = np.array([2.7, -2.7, -0.5], np.float32)
    total, q, w, t = load(INTEGERS)(x, f)
    np.testing.assert_array_equal(total, [-2147483648, -6, 6])  # wraps
    np.testing.assert_array_equal(q, [0, 1, 0])  # 2147483647 // -2147483648 -> 0; -7 / -6 -> 1
    big = np.array([2147483647, -7, 2 ** 60], np.int64)
    np.testing.assert_array_equal(w, big * big)  # (wraps in int64, as NumPy's arrays do)
    np.testing.assert_array_equal(t, [2, -2, 0])  # toward zero


def test_float_storage_devices_refuse_what_they_could_get_wrong(device):
    """Devices that hold integers as floats refuse integer arithmetic, float -> int
    conversion and constants beyond what they store exactly, naming the op."""
    if device.name == "cpu":
        pytest.skip("cpu holds integers natively")
    with pytest.raises(UnsupportedError, match=r"stablehlo.add at .*integer arithmetic on int32"):
        load(INTEGERS, device=device)
    convert = _module("""  %0 = stablehlo.constant dense<[1.5, 2.5]> : tensor<2xf32>
  %1 = stablehlo.convert %0 : (tensor<2xf32>) -> tensor<2xi32>
  %2 = stablehlo.convert %1 : (tensor<2xi32>) -> tensor<2xf32>
  func.return %2 : tensor<2xf32>""")
    with pytest.raises(UnsupportedError, match=r"float32 -> int32 conversion"):
        load(convert, device=device)
    big = _module("""  %0 = stablehlo.constant dense<[16777217, 2]> : tensor<2xi64>
  %1 = stablehlo.convert %0 : (tensor<2xi64>) -> tensor<2xf32>
  func.return %1 : tensor<2xf32>""")
    if "float64" not in device.backend.dtypes:  # 2**24 + 1 is not a float32
        with pytest.raises(UnsupportedError, match=r"integer constants up to 16777217"):
            load(big, device=device)
    else:
        np.testing.assert_array_equal(load(big, device=device)()[0].numpy(), [16777216, 2])


def test_subnormal_constants_are_refused_where_the_device_flushes_them(device, monkeypatch):
    """Vulkan on NVIDIA flushes subnormals to zero (WGSL allows it): ceil(1e-45) would be 0
    there, so a program computing on subnormal constants is refused, not answered wrongly."""
    from needle.stablehlo import program
    ceil = _module("""  %0 = stablehlo.constant dense<[1.0e-45, 2.5]> : tensor<2xf32>
  %1 = stablehlo.ceil %0 : (tensor<2xf32>) -> tensor<2xf32>
  func.return %1 : tensor<2xf32>""")
    if device.name == "cpu":
        np.testing.assert_array_equal(load(ceil, device=device)()[0].numpy(), [1.0, 3.0])
        return
    flushes = program._flushes_subnormals(device)
    if not flushes:
        np.testing.assert_array_equal(load(ceil, device=device)()[0].numpy(), [1.0, 3.0])
    monkeypatch.setitem(program._FLUSHES, device.name, True)  # as such an adapter measures
    with pytest.raises(UnsupportedError, match=r"float32 constant holds subnormal numbers"):
        load(ceil, device=device)


@pytest.mark.parametrize("body,match", [
    ("""  %0 = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf8E8M0FNU>
  %1 = stablehlo.convert %0 : (tensor<2xf8E8M0FNU>) -> tensor<2xf32>
  func.return %1 : tensor<2xf32>""", r"stablehlo.constant at .*element type f8E8M0FNU"),
    ("""  %0 = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %1 = stablehlo.custom_call @my_kernel(%0) : (tensor<2xf32>) -> tensor<2xf32>
  func.return %1 : tensor<2xf32>""",
     r"stablehlo.custom_call at .*\(tensor<2xf32>\) -> \(tensor<2xf32>\): not supported"),
])
def test_what_cannot_run_is_refused_by_name(body, match):
    with pytest.raises(UnsupportedError, match=match):
        load(_module(body))


LOOP = """func.func @main(%x: tensor<f32>, %step: tensor<f32>) -> tensor<f32> {
  %limit = stablehlo.constant dense<3.0> : tensor<f32>
  %0 = stablehlo.while(%i = %x) : tensor<f32>
    cond {
      %p = stablehlo.compare LT, %i, %limit : (tensor<f32>, tensor<f32>) -> tensor<i1>
      stablehlo.return %p : tensor<i1>
    } do {
      %n = stablehlo.add %i, %step : tensor<f32>
      stablehlo.return %n : tensor<f32>
    }
  func.return %0 : tensor<f32>
}"""


def test_a_while_loop_runs_on_every_device(device):
    """A loop whose regions read values from outside it (%limit, %step): as Python runs it,
    zero turns included."""
    prog = load(LOOP, device=device)
    for x, step in [(0.5, 1.0), (-4.0, 0.75), (7.0, 1.0)]:
        want = np.float32(x)
        while want < 3.0:
            want = np.float32(want + np.float32(step))
        got = prog(np.float32(x), np.float32(step))[0]
        np.testing.assert_array_equal(got.numpy(), want)


def test_control_flow_prints_parses_and_runs_on_the_executor(rng):
    """The while node and its regions survive the IR's text form, and the executor (what
    the GPU devices run, here on cpu) gives the reference's results."""
    from needle.compiler import reference
    from needle.compiler.executor import Executor
    from needle.compiler.parser import parse
    from needle.compiler.verifier import verify
    graph = load(LOOP).graph
    assert [n.op for n in graph.nodes if n.regions] == ["while"]
    again = parse(graph_text := load(LOOP).lower().as_text())
    verify(again)
    assert again.nodes[-1].op == "while" and len(again.nodes[-1].regions) == 2
    from needle.compiler.printer import as_text
    assert as_text(again) == graph_text
    ex = Executor(again, needle.cpu())
    for x in rng.uniform(-3, 3, 4).astype(np.float32):
        want = reference.evaluate(graph, x, np.float32(0.5))
        np.testing.assert_array_equal(ex.numpy(ex(x, np.float32(0.5)))[0], want[0])


def test_a_region_with_the_wrong_signature_is_refused():
    from needle.compiler.ir import Graph, TensorType
    from needle.compiler.ops import VerifyError, add_node
    scalar = TensorType((), "float32")
    cond, body = Graph(), Graph()
    cond.outputs = [cond.add_input(scalar)]  # a float, not a bool
    body.outputs = [body.add_input(scalar)]
    g = Graph()
    with pytest.raises(VerifyError, match=r"while: its cond must return one bool\[\]"):
        add_node(g, "while", [g.add_input(scalar)], regions=(cond, body))
    with pytest.raises(VerifyError, match="only while and case carry regions"):
        add_node(g, "exponential", [g.add_input(scalar)], regions=(cond,))


def test_bad_arguments_get_clear_errors():
    prog = load(_module("  %0 = stablehlo.exponential %x : tensor<2xf32>\n"
                        "  func.return %0 : tensor<2xf32>", "%x: tensor<2xf32>"))
    with pytest.raises(needle.DTypeError, match="argument 0 is float64"):
        prog(np.zeros(2))
    with pytest.raises(needle.ShapeError, match=r"argument 0 has shape \(3,\)"):
        prog(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="takes 1 arguments"):
        prog()
    with pytest.raises(ValueError, match="not a StableHLO module"):
        load("func.func @main( {")


def test_a_compiled_function_round_trips(device, rng):
    """needle.compile(...).lower(...).as_stablehlo() loads back and computes the same."""
    np.random.seed(3)
    model = nn.Sequential(nn.Linear(6, 8, device=device), nn.ReLU(),
                          nn.Linear(8, 4, device=device), nn.Softmax())
    model.eval()
    compiled = needle.compile(lambda x: model(x))
    x = needle.Tensor(rng.standard_normal((5, 6)).astype(np.float32), device=device)
    want = compiled(x).numpy()
    lowered = compiled.lower(x)
    prog = load(lowered.as_stablehlo(), device=device)
    got = prog(*lowered.arguments(x))
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-6)


def test_the_docstring_example_runs():
    import doctest

    import needle.stablehlo
    result = doctest.testmod(needle.stablehlo, extraglobs={"needle": needle, "np": np},
                             report=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


DTYPE_PROGRAM = """
func.func @main(%h: tensor<3xf16>, %b: tensor<3xbf16>, %u: tensor<3xui8>, %c: tensor<2xcomplex<f32>>) -> (tensor<3xf16>, tensor<3xbf16>, tensor<3xui8>, tensor<2xf32>) {
  %h2 = stablehlo.multiply %h, %h : tensor<3xf16>
  %b2 = stablehlo.add %b, %b : tensor<3xbf16>
  %u2 = stablehlo.add %u, %u : tensor<3xui8>
  %m = stablehlo.abs %c : (tensor<2xcomplex<f32>>) -> tensor<2xf32>
  func.return %h2, %b2, %u2, %m : tensor<3xf16>, tensor<3xbf16>, tensor<3xui8>, tensor<2xf32>
}
"""


def test_every_dtype_is_native_on_cpu_and_refused_by_name_elsewhere(device):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    h = np.array([300.0, 0.1, -2.0], np.float16)
    b = np.array([1.5, 3.0e38, -0.25], ml_dtypes.bfloat16)
    u = np.array([200, 7, 255], np.uint8)
    c = np.array([3 + 4j, -1j], np.complex64)
    if device.name != "cpu":
        with pytest.raises(needle.DTypeError, match=re.escape(f"uses float16, which {device}")):
            load(DTYPE_PROGRAM, device=device)
        return
    h2, b2, u2, m = load(DTYPE_PROGRAM, device=device)(h, b, u, c)
    assert h2.dtype == np.float16 and b2.dtype == ml_dtypes.bfloat16
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h2, h * h)  # 300**2 overflows float16: inf
        np.testing.assert_array_equal(b2.astype(np.float32), (b + b).astype(np.float32))
    np.testing.assert_array_equal(u2, (u + u).astype(np.uint8))  # wraps at 256
    np.testing.assert_allclose(m.numpy(), [5.0, 1.0])


def test_an_imported_program_round_trips_through_export(rng):
    """load -> lower().as_stablehlo() -> load computes the same, in every dtype."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    args = (np.array([300.0, 0.1, -2.0], np.float16),
            np.array([1.5, 3.0e38, -0.25], ml_dtypes.bfloat16),
            np.array([200, 7, 255], np.uint8), np.array([3 + 4j, -1j], np.complex64))
    first = load(DTYPE_PROGRAM, opt_level=0)
    again = load(first.lower().as_stablehlo(), opt_level=0)
    assert repr(again.signature) == repr(first.signature)
    for a, b in zip(first(*args), again(*args)):
        np.testing.assert_array_equal(_values([b])[0], _values([a])[0])


def _mlp_sgd_step(params, x, y):
    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"]
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, axis=1))
    value, grads = jax.value_and_grad(loss)(params)
    return value, jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)


def _cnn_grad(w, x):
    def loss(w):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.sum(jax.nn.relu(y) ** 2)
    return jax.value_and_grad(loss)(w)


def _attention_adam_step(params, m, v, x):
    def loss(p):
        q, k = x @ p["wq"], x @ p["wk"]
        scores = q @ k.T / np.sqrt(q.shape[-1])
        out = jax.nn.softmax(scores, axis=-1) @ (x @ p["wv"])
        mean = out.mean(axis=-1, keepdims=True)
        normed = (out - mean) / jnp.sqrt(((out - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
        return jnp.sum(normed * normed * p["g"])
    value, grads = jax.value_and_grad(loss)(params)
    m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
    params = jax.tree_util.tree_map(lambda p, m, v: p - 1e-3 * (m / 0.1) /
                                    (jnp.sqrt(v / 0.001) + 1e-8), params, m, v)
    return value, params, m, v


def _training_args(name, rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    if name == "mlp_sgd":
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4)]
        return _mlp_sgd_step, ({"w1": f(5, 8), "b1": f(8), "w2": f(8, 3)}, f(4, 5), y)
    if name == "cnn":
        return _cnn_grad, (f(4, 2, 3, 3), f(2, 2, 6, 6))
    p = {"wq": f(6, 4), "wk": f(6, 4), "wv": f(6, 4), "g": f(4)}
    zeros = {k: np.zeros_like(a) for k, a in p.items()}
    return _attention_adam_step, (p, zeros, zeros, f(5, 6))


@pytest.mark.parametrize("name", ["mlp_sgd", "cnn", "attention_adam"])
def test_jax_training_steps_give_jaxs_results(device, rng, name):
    fn, args = _training_args(name, rng)
    run = from_jax(fn, *args, device=device)
    leaf = lambda x: isinstance(x, needle.Tensor)  # noqa: E731
    got = jax.tree_util.tree_leaves(run(*args), is_leaf=leaf)
    want = jax.tree_util.tree_leaves(jax.jit(fn)(*args))
    for g, w in zip(_values(got), want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-4, atol=1e-5)


def _cond_on_data(x):
    return lax.cond(x.sum() > 0, lambda v: jnp.tanh(v) * 2, lambda v: v - 1.0, x)


def _while_on_data(x):
    return lax.while_loop(lambda v: jnp.abs(v).sum() < 100.0, lambda v: v * 1.5 + 0.1, x)


def _scan(x):
    def step(carry, row):
        carry = jnp.tanh(carry + row)
        return carry, carry * 2
    return lax.scan(step, jnp.zeros(x.shape[1], x.dtype), x)


def _fori(x):
    return lax.fori_loop(0, 5, lambda i, v: v * 0.5 + i, x)


@pytest.mark.parametrize("fn", [_cond_on_data, _while_on_data, _scan, _fori])
def test_jax_control_flow_gives_jaxs_results(device, rng, fn):
    """lax.cond and lax.while_loop on computed values run on every device; lax.scan and
    lax.fori_loop count with int32 (and scan slices with dynamic_slice), which only the
    cpu device runs exactly for now: elsewhere they are refused by name."""
    x = rng.standard_normal((4, 3)).astype(np.float32)
    if device.name != "cpu" and fn in (_scan, _fori):
        with pytest.raises(UnsupportedError, match="integer arithmetic on int32|dynamic_slice"):
            from_jax(fn, x, device=device)
        return
    run = from_jax(fn, x, device=device)
    for sign in (1, -1):  # both branches; loops of different lengths
        got = jax.tree_util.tree_leaves(run(sign * x), is_leaf=lambda t: isinstance(t, needle.Tensor))
        want = jax.tree_util.tree_leaves(jax.jit(fn)(sign * x))
        for g, w in zip(_values(got), _values(want)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


#: programs whose lowering holds CHLO ops (legalized into StableHLO on load), and where
#: they run: everywhere, or (with the reason a GPU device gives) on cpu only
CHLO_PROGRAMS = {
    "erf": (lambda x: jax.scipy.special.erf(x), None),
    "gelu_exact": (lambda x: jax.nn.gelu(x, approximate=False), None),
    "erf_inv": (lambda x: jax.scipy.special.erfinv(jnp.tanh(x) * 0.9), None),
    "lgamma": (lambda x: lax.lgamma(jnp.abs(x) + 0.5), None),
    "top_k": (lambda x: lax.top_k(x, 3), "sort"),
    "random_normal": (lambda x: jax.random.normal(jax.random.PRNGKey(3), x.shape) + x,
                      "uint32"),
}


@pytest.mark.parametrize("name", CHLO_PROGRAMS)
def test_jax_programs_with_chlo_ops_give_jaxs_results(device, rng, name):
    """JAX lowers erf, erf_inv (jax.random.normal), lgamma and top_k to CHLO ops, which
    StableHLO's chlo-legalize-to-stablehlo pass rewrites on load: they then run as any
    program does (top_k's sort in total order), or are refused by name where they cannot."""
    fn, gpu_refusal = CHLO_PROGRAMS[name]
    x = rng.standard_normal((4, 8)).astype(np.float32)
    assert "chlo." in jax.jit(fn).lower(x).as_text()
    if device.name != "cpu" and gpu_refusal is not None:
        with pytest.raises((UnsupportedError, needle.DTypeError), match=gpu_refusal):
            from_jax(fn, x, device=device)
        return
    got = jax.tree_util.tree_leaves(from_jax(fn, x, device=device)(x),
                                    is_leaf=lambda t: isinstance(t, needle.Tensor))
    for g, w in zip(_values(got), jax.tree_util.tree_leaves(jax.jit(fn)(x))):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)


def test_log_plus_one_and_exp_minus_one_keep_small_arguments_exact(device, rng):
    """Devices without log1p / expm1 kernels run them as a series near 0 (log(1 + x) there
    would lose x, and WGSL's log may be off by 2**-21 near 1), so tiny and moderate
    arguments both come out within a few ulps; infinities and NaN as NumPy gives them."""
    text = _module("""  %0 = stablehlo.log_plus_one %x : tensor<64xf32>
  %1 = stablehlo.exponential_minus_one %x : tensor<64xf32>
  func.return %0, %1 : tensor<64xf32>, tensor<64xf32>""", "%x: tensor<64xf32>",
                   "(tensor<64xf32>, tensor<64xf32>)")
    x = np.concatenate([[1e-30, -1e-30, 1e-8, -1e-8, 0.0999, -0.1, 0.1, -0.5, -1.0, -2.0,
                         20.0, np.inf, -np.inf, np.nan, -30.0, 0.0],
                        rng.uniform(-0.25, 0.25, 32), rng.standard_normal(16) * 3])
    x = x.astype(np.float32)
    got = [o.numpy() for o in load(text, device=device)(x)]
    with np.errstate(all="ignore"):
        for g, want in zip(got, (np.log1p(x.astype(np.float64)), np.expm1(x.astype(np.float64)))):
            np.testing.assert_allclose(g, want.astype(np.float32), rtol=3e-6, atol=0)
    if "float64" in device.backend.dtypes:  # the executor's float64 series (cpu included)
        from needle.compiler.executor import Executor
        ex = Executor(load(text.replace("f32", "f64")).graph, device)
        wide = x.astype(np.float64)
        with np.errstate(all="ignore"):
            for g, want in zip(ex.numpy(ex(wide)), (np.log1p(wide), np.expm1(wide))):
                np.testing.assert_allclose(g, want, rtol=2e-15, atol=0)


def test_a_total_order_sort_puts_signed_zeros_and_nans_in_place():
    """sort with compare_type TOTALORDER (what lax.top_k and jnp.sort of floats become):
    -NaN < -inf < -0.0 < 0.0 < inf < NaN, as IEEE's totalOrder; other TOTALORDER
    comparisons are still refused."""
    text = _module("""  %0:2 = "stablehlo.sort"(%x, %i) ({
  ^bb0(%a: tensor<f32>, %b: tensor<f32>, %c: tensor<i32>, %d: tensor<i32>):
    %p = stablehlo.compare LT, %a, %b, TOTALORDER : (tensor<f32>, tensor<f32>) -> tensor<i1>
    stablehlo.return %p : tensor<i1>
  }) {dimension = 0 : i64} : (tensor<6xf32>, tensor<6xi32>) -> (tensor<6xf32>, tensor<6xi32>)
  func.return %0#1 : tensor<6xi32>""", "%x: tensor<6xf32>, %i: tensor<6xi32>", "tensor<6xi32>")
    x = np.array([np.nan, 0.0, -0.0, -np.inf, 1.0, -np.nan], np.float32)
    x[5] = np.copysign(np.float32(np.nan), np.float32(-1.0))
    order = load(text)(x, np.arange(6, dtype=np.int32))[0]
    np.testing.assert_array_equal(order, [5, 3, 2, 1, 4, 0])
    compare = _module("""  %0 = stablehlo.compare LT, %x, %x, TOTALORDER : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xi1>
  func.return %0 : tensor<2xi1>""", "%x: tensor<2xf32>", "tensor<2xi1>")
    with pytest.raises(UnsupportedError, match="TOTALORDER"):
        load(compare)


def _sgd_step(params, x, y):
    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w"]) + p["b"] - y) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), value


def test_donated_arguments_are_updated_in_place(device, rng):
    """donate_argnums: the parameters given as Tensors take the new values in place (the
    same Tensors come back, their versions moved on) over three steps that equal JAX's; a
    donated NumPy argument is left as it was."""
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32)}
    x, y = (rng.standard_normal(s).astype(np.float32) for s in ((8, 4), (8, 3)))
    step = from_jax(_sgd_step, params, x, y, device=device, donate_argnums=(0,))
    assert step.program.aliases == {0: 0, 1: 1}  # (the leaves b, w)
    tensors = {k: needle.Tensor(v, device=device) for k, v in params.items()}
    versions = {k: t._version for k, t in tensors.items()}
    want = params
    for turn in range(1, 4):
        new, loss = step(tensors, x, y)
        want, want_loss = jax.jit(_sgd_step)(want, x, y)
        assert all(new[k] is tensors[k] and tensors[k]._version > versions[k] for k in new)
        versions = {k: t._version for k, t in tensors.items()}
        np.testing.assert_allclose(loss.numpy(), want_loss, rtol=1e-5)
        for k in params:
            np.testing.assert_allclose(tensors[k].numpy(), want[k], rtol=1e-5, atol=1e-6)
    kept = {k: v.copy() for k, v in params.items()}
    new, _ = step(params, x, y)  # NumPy: nothing to update, new Tensors out
    assert all(np.array_equal(params[k], kept[k]) for k in params)
    assert not np.array_equal(new["w"].numpy(), params["w"])
    assert "tf.aliasing_output" in step.program.lower().as_stablehlo()


def test_every_imported_op_has_a_converter_and_a_reference():
    """IMPORTED_OPS (the ops only the cpu device runs) all come from a StableHLO converter
    and run on the reference interpreter."""
    from needle.compiler import reference
    from needle.compiler.ops import IMPORTED_OPS
    from needle.stablehlo.importer import CONVERTERS
    assert set(IMPORTED_OPS) <= set(reference.OPS)
    assert {f"stablehlo.{op}" for op in IMPORTED_OPS} <= set(CONVERTERS)
