"""Host cost of one cuDNN graph execution, per call form of graphs.Graphs.form: "ordered"
(the frontend's public ``execute`` with addresses and uids) and "raw" (its C++ call under
that, graphs._RawExecute). The convolution is tiny so that the host, not the GPU, sets the
pace; the outputs of both forms are compared.

    python tools/bench_cudnn_execute.py      # on a GPU machine with the cudnn extra
"""
import time

import numpy as np

import needle
from needle.backend_ndarray.cuda.memory import CudaBuffer


def main(calls=4000):
    backend = needle.cudnn().backend
    n, h, w, c, k, c_out = 1, 8, 8, 8, 3, 8
    g = backend._conv_graph("fprop", np.dtype("float32"), (n, h, w, c), k, c_out, 1, 1, True)
    rng = np.random.default_rng(0)
    x, wt = (CudaBuffer(size, "float32") for size in (n * h * w * c, k * k * c * c_out))
    for buf in (x, wt):
        backend.from_numpy(rng.standard_normal(buf.size).astype(np.float32), buf)
    graphs, outputs = backend.graphs, {}
    for form in ("ordered", "raw", "ordered", "raw"):
        graphs.form = form
        y = CudaBuffer(n * h * w * c_out, "float32")
        for _ in range(50):
            graphs.run(g, (x.ptr, wt.ptr, y.ptr))
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            graphs.run(g, (x.ptr, wt.ptr, y.ptr))
        issued = (time.perf_counter() - start) / calls * 1e6
        backend.synchronize()
        total = (time.perf_counter() - start) / calls * 1e6
        outputs[form] = backend.to_numpy(y, (y.size,), (1,), 0)
        print(f"{form:>8}: {issued:6.1f} us/call issued, {total:6.1f} us/call with the GPU")
    print("raw path in use:", bool(g.raw), "| outputs equal:",
          np.array_equal(outputs["raw"], outputs["ordered"]))
    graphs.form = "raw"


if __name__ == "__main__":
    main()
