"""SGD with PyTorch's update rule: one backend call for all parameters where the backend has
``sgd_update_many``, one per parameter where it has ``sgd_update``, else a few NDArray ops."""
from ..backend_ndarray import NDArray
from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay, as
    ``torch.optim.SGD`` (no dampening, no Nesterov).

    Args:
        params: iterable of Parameters.
        lr: learning rate (>= 0).
        momentum: PyTorch's (non-dampened) momentum (>= 0): ``buf = momentum * buf + grad``,
            with ``buf = grad`` on a parameter's first step.
        weight_decay: L2 penalty (>= 0) added to the gradient: ``grad + weight_decay * p``.

    Example:
        >>> model = needle.nn.Linear(4, 2)
        >>> opt = needle.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> loss = model(needle.Tensor(np.ones((3, 4)))).sum()
        >>> opt.reset_grad(); loss.backward(); opt.step()
    """

    hyperparameters = ("lr", "momentum", "weight_decay")
    buffers = ("momentum_buffer",)

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.check_hyperparameters(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def check_hyperparameters(self, lr, momentum, weight_decay):
        check_number("lr", lr)
        check_number("momentum", momentum)
        check_number("weight_decay", weight_decay)

    def step(self):
        batches = {}  # (backend, dtype) -> the updates one sgd_update_many call makes
        for p, data, grad in self._with_grads():
            state = self.state.setdefault(p, {"step": 0})
            buf, first = None, False
            if self.momentum:
                first = "momentum_buffer" not in state
                if first:
                    state["momentum_buffer"] = data._new()
                buf = state["momentum_buffer"]
            state["step"] += 1
            backend = data.device.backend
            if backend.supports("sgd_update_many"):
                batches.setdefault((backend, data.dtype), []).append(
                    (p, data, grad._handle, buf._handle if buf is not None else None, first))
                continue
            if backend.supports("sgd_update"):
                backend.sgd_update(data._handle, grad._handle, buf._handle if buf is not None else None,
                                   self.lr, self.momentum, self.weight_decay, first)
            else:
                g = grad + data * self.weight_decay if self.weight_decay else grad
                if buf is not None:
                    # a copy on the first step: the buffer must not share the gradient's memory
                    buf = NDArray(g) if first else buf * self.momentum + g
                    state["momentum_buffer"] = g = buf
                data = data - g * self.lr
            self._updated(p, data)
        for (backend, _), updates in batches.items():
            ps, datas, grads, bufs, firsts = zip(*updates)
            backend.sgd_update_many([d._handle for d in datas], list(grads), list(bufs), self.lr,
                                    self.momentum, self.weight_decay, list(firsts))
            for p, data in zip(ps, datas):
                self._updated(p, data)
