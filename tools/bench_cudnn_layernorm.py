"""LayerNorm forward + backward: Needle's own CUDA kernels against cuDNN's (GPU only).

The cudnn device routes an op to a library only where the library is faster; this measures
that question for LayerNorm. Times each with CUDA events, median of 200 runs, after warm-up,
and checks that both agree. Usage: python tools/bench_cudnn_layernorm.py
"""
import numpy as np

SHAPES = [(64 * 128, 768), (8 * 512, 1024), (4096, 4096), (512, 512)]
EPS = 1e-5


def _events_ms(fn, reps=200, warmup=20):
    import cupy
    for _ in range(warmup):
        fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def cudnn_layernorm(rows, cols):
    """(forward, backward) callables over fresh CuPy buffers, and the buffers."""
    import cudnn
    import cupy
    f32 = cudnn.data_type.FLOAT
    handle = cudnn.create_handle()
    cudnn.set_stream(handle, cupy.cuda.get_current_stream().ptr)
    rng = np.random.default_rng(0)
    buf = {n: cupy.asarray(rng.standard_normal(s, dtype=np.float32))
           for n, s in (("x", (rows, cols)), ("dy", (rows, cols)), ("w", (cols,)), ("b", (cols,)))}
    for n, s in (("y", (rows, cols)), ("dx", (rows, cols)), ("dw", (cols,)), ("db", (cols,)),
                 ("mean", (rows,)), ("rstd", (rows,))):
        buf[n] = cupy.empty(s, dtype=np.float32)

    def mat(g, name):
        return g.tensor(name=name, dim=[rows, cols, 1, 1], stride=[cols, 1, cols, cols], data_type=f32)

    def vec(g, name):
        return g.tensor(name=name, dim=[1, cols, 1, 1], stride=[cols, 1, cols, cols], data_type=f32)

    def stat(t):
        return t.set_output(True).set_dim([rows, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)

    fwd = cudnn.pygraph(io_data_type=f32, intermediate_data_type=f32, compute_data_type=f32,
                        handle=handle)
    x, w, b = mat(fwd, "x"), vec(fwd, "w"), vec(fwd, "b")
    e = fwd.tensor_scalar(EPS, cudnn.scalar_type.RUNTIME_PARAM)
    y, mean, rstd = fwd.layernorm(name="ln", norm_forward_phase=cudnn.norm_forward_phase.TRAINING,
                                  input=x, scale=w, bias=b, epsilon=e)
    y.set_output(True).set_data_type(f32)
    stat(mean), stat(rstd)
    bwd = cudnn.pygraph(io_data_type=f32, intermediate_data_type=f32, compute_data_type=f32,
                        handle=handle)
    bx, bw, bdy = mat(bwd, "x"), vec(bwd, "w"), mat(bwd, "dy")
    bmean = bwd.tensor(name="mean", dim=[rows, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)
    brstd = bwd.tensor(name="rstd", dim=[rows, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)
    dx, dw, db = bwd.layernorm_backward(name="dln", grad=bdy, input=bx, scale=bw, mean=bmean,
                                        inv_variance=brstd)
    for t in (dx, dw, db):
        t.set_output(True).set_data_type(f32)
    for g in (fwd, bwd):
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
    ws = cupy.empty(max(fwd.get_workspace_size(), bwd.get_workspace_size(), 1), dtype=np.uint8)
    p = {n: a.data.ptr for n, a in buf.items()}

    def forward():
        fwd.execute({x: p["x"], w: p["w"], b: p["b"], y: p["y"], mean: p["mean"],
                     rstd: p["rstd"]}, ws.data.ptr, handle=handle)

    def backward():
        bwd.execute({bx: p["x"], bw: p["w"], bdy: p["dy"], bmean: p["mean"], brstd: p["rstd"],
                     dx: p["dx"], dw: p["dw"], db: p["db"]}, ws.data.ptr, handle=handle)
    return forward, backward, buf


def needle_layernorm(buf):
    """The cuda device's layernorm kernels on the same CuPy buffers."""
    from needle.backend_ndarray.cuda.backend import CudaBackend
    be = CudaBackend()
    rows, cols = buf["x"].shape

    class View:  # what the backend reads from a buffer: ptr, size, dtype
        def __init__(self, a):
            self.ptr, self.size, self.dtype = a.data.ptr, a.size, a.dtype

    v = {n: View(a) for n, a in buf.items()}
    out = {n: View(buf[n].copy()) for n in ("y", "dx", "dw", "db", "mean", "rstd")}
    keep = [buf, out]  # noqa: F841 - the copies must outlive the views

    def forward():
        be.layernorm(v["x"], v["w"], v["b"], out["y"], out["mean"], out["rstd"], rows, cols, EPS)

    def backward():
        be.layernorm_backward(v["dy"], v["x"], v["w"], out["mean"], out["rstd"], out["dx"],
                              out["dw"], out["db"], rows, cols)
    return forward, backward, out, keep


def main():
    import cupy
    print(f"{'rows x cols':>14}  {'needle fwd':>10} {'cudnn fwd':>10}  {'needle bwd':>10} "
          f"{'cudnn bwd':>10}  max|dy| diff")
    for rows, cols in SHAPES:
        c_fwd, c_bwd, buf = cudnn_layernorm(rows, cols)
        n_fwd, n_bwd, out, keep = needle_layernorm(buf)
        c_fwd(), c_bwd(), n_fwd(), n_bwd()
        cupy.cuda.runtime.deviceSynchronize()
        diff = max(float(abs(buf[n] - _as_cupy(out[n], buf[n])).max())
                   for n in ("y", "dx", "dw", "db"))
        times = [_events_ms(f) for f in (n_fwd, c_fwd, n_bwd, c_bwd)]
        print(f"{rows:>7} x {cols:<5}  " + "  ".join(f"{t:10.4f}" for t in times) + f"  {diff:.2e}")


def _as_cupy(view, like):
    import cupy
    mem = cupy.cuda.UnownedMemory(view.ptr, like.nbytes, None)
    return cupy.ndarray(like.shape, like.dtype, cupy.cuda.MemoryPointer(mem, 0))


if __name__ == "__main__":
    main()
