"""Host cost of one cuDNN graph execution through the frontend, per call form: the
{tensor: address} dict and the ordered tuple with ``tensor_uids`` (graphs.Graphs.ordered).

    python tools/bench_cudnn_execute.py      # on a GPU machine with the cudnn extra
"""
import time

import needle
from needle.backend_ndarray.cuda.memory import CudaBuffer


def main(calls=2000):
    backend = needle.cudnn().backend
    n, h, w, c, k, c_out = 64, 16, 16, 32, 3, 32
    g = backend._conv_graph("fprop", CudaBuffer(1, "float32").dtype, (n, h, w, c), k, c_out, 1, 1,
                            True)
    x, wt, y = (CudaBuffer(size, "float32") for size in (n * h * w * c, k * k * c * c_out,
                                                         n * h * w * c_out))
    bindings = {g.x: x.ptr, g.w: wt.ptr, g.y: y.ptr}
    graphs = backend.graphs
    for ordered in (False, True, False, True):
        graphs.ordered = ordered
        for _ in range(50):
            graphs.run(g, bindings)
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            graphs.run(g, bindings)
        issued = (time.perf_counter() - start) / calls * 1e6
        backend.synchronize()
        total = (time.perf_counter() - start) / calls * 1e6
        form = "ordered tuple" if ordered else "dict"
        print(f"{form:>14}: {issued:6.1f} us/call issued, {total:6.1f} us/call with the GPU")


if __name__ == "__main__":
    main()
