"""Optimizers with PyTorch's update rules. Each update is one fused backend call per
parameter where the backend has it, else a few NDArray ops."""



class Optimizer:
    def __init__(self, params):
        self.params = [p for p in params]

    def step(self):
        raise NotImplementedError

    def reset_grad(self):
        """Clear every parameter's gradient (gradients accumulate across backward calls)."""
        for p in self.params:
            p.grad = None

    zero_grad = reset_grad

    def _with_grads(self):
        """(parameter, compact value, compact gradient) of each parameter that has a gradient."""
        for p in self.params:
            if p.grad is None:
                continue
            data, grad = p.realize_cached_data().compact(), p.grad.realize_cached_data().compact()
            if grad.shape != data.shape:
                raise ValueError(f"gradient of shape {grad.shape} does not match parameter {data.shape}")
            yield p, data, grad


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    Args:
        params: iterable of Parameters.
        lr: learning rate.
        momentum: PyTorch's (non-dampened) momentum: ``buf = momentum * buf + grad``.
        weight_decay: L2 penalty added to the gradient.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.u = {}

    def step(self):
        for p, data, grad in self._with_grads():
            first = p not in self.u
            if self.momentum and first:
                self.u[p] = data._new()
            buf = self.u.get(p)
            backend = data.device.backend
            if backend.supports("sgd_update"):
                backend.sgd_update(data._handle, grad._handle, buf._handle if buf is not None else None,
                                   self.lr, self.momentum, self.weight_decay, first)
            else:
                g = grad + data * self.weight_decay if self.weight_decay else grad
                if buf is not None:
                    buf = g if first else buf * self.momentum + g
                    self.u[p] = buf
                    g = buf
                data = data - g * self.lr
            p.cached_data = data


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and L2 weight decay, as ``torch.optim.Adam``."""

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.t = {}  # steps per parameter: bias correction counts only steps it took part in
        self.m, self.v = {}, {}

    def step(self):
        for p, data, grad in self._with_grads():
            if p not in self.m:
                self.m[p] = data._new()
                self.m[p].fill(0.0)
                self.v[p] = data._new()
                self.v[p].fill(0.0)
            m, v = self.m[p], self.v[p]
            t = self.t[p] = self.t.get(p, 0) + 1
            backend = data.device.backend
            if backend.supports("adam_update"):
                backend.adam_update(data._handle, grad._handle, m._handle, v._handle, self.lr,
                                    self.beta1, self.beta2, self.eps, self.weight_decay, t)
            else:
                g = grad + data * self.weight_decay if self.weight_decay else grad
                m = m * self.beta1 + g * (1 - self.beta1)
                v = v * self.beta2 + g * g * (1 - self.beta2)
                self.m[p], self.v[p] = m, v
                m_hat = m / (1 - self.beta1 ** t)
                v_hat = v / (1 - self.beta2 ** t)
                data = data - m_hat * self.lr / (v_hat.sqrt() + self.eps)
            p.cached_data = data



