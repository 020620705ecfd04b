"""Adam and AdamW with PyTorch's update rules: one backend call for all parameters where the
backend has ``adam_update_many``, one per parameter where it has ``adam_update`` (AdamW adds
one scalar multiply per parameter), else a few NDArray ops."""
from .optimizer import Optimizer, check_number

_UNSET = object()


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and L2 weight decay, as ``torch.optim.Adam``.

    The betas may be given classic Needle's way (``beta1``, ``beta2``, also positionally)
    or PyTorch's (``betas=(beta1, beta2)``), not both. Bias correction counts the steps
    each parameter took part in (``opt.state[p]["step"]``).

    Args:
        params: iterable of Parameters.
        lr: learning rate (>= 0).
        beta1: decay of the running mean of gradients, in [0, 1) (default 0.9).
        beta2: decay of the running mean of squared gradients, in [0, 1) (default 0.999).
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty (>= 0) added to the gradient (see :class:`AdamW` for the
            decoupled form).
        betas: ``(beta1, beta2)``, keyword only, instead of ``beta1`` and ``beta2``.

    Example:
        >>> model = needle.nn.Linear(4, 2)
        >>> opt = needle.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
        >>> loss = model(needle.Tensor(np.ones((3, 4)))).sum()
        >>> opt.reset_grad(); loss.backward(); opt.step()
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    buffers = ("exp_avg", "exp_avg_sq")
    #: AdamW: decay the parameter (``p *= 1 - lr * weight_decay``) instead of the gradient
    decoupled_weight_decay = False

    def __init__(self, params, lr=0.01, beta1=_UNSET, beta2=_UNSET, eps=1e-8, weight_decay=0.0,
                 *, betas=None):
        super().__init__(params)
        if betas is not None:
            if beta1 is not _UNSET or beta2 is not _UNSET:
                raise TypeError(f"{type(self).__name__}: give betas=(beta1, beta2) or "
                                f"beta1/beta2, not both")
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
            beta1, beta2 = betas
        beta1 = 0.9 if beta1 is _UNSET else beta1
        beta2 = 0.999 if beta2 is _UNSET else beta2
        self.check_hyperparameters(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay

    @property
    def betas(self):
        """``(beta1, beta2)``, as PyTorch spells them."""
        return (self.beta1, self.beta2)

    @betas.setter
    def betas(self, value):
        self.beta1, self.beta2 = value

    def check_hyperparameters(self, lr, betas, eps, weight_decay):
        check_number("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        check_number("beta1", betas[0], 0.0, 1.0)
        check_number("beta2", betas[1], 0.0, 1.0)
        check_number("eps", eps)
        check_number("weight_decay", weight_decay)

    def step(self):
        batches = {}  # (backend, dtype, l2) -> the updates one adam_update_many call makes
        for p, data, grad in self._with_grads():
            state = self.state.setdefault(p, {"step": 0})
            if "exp_avg" not in state:
                for name in self.buffers:
                    state[name] = data._new()
                    state[name].fill(0.0)
            t = state["step"] = state["step"] + 1
            l2 = self.weight_decay
            if self.decoupled_weight_decay:
                if self.lr * self.weight_decay:  # in place: the parameter keeps its buffer
                    data[...] = data * (1.0 - self.lr * self.weight_decay)
                l2 = 0.0
            m, v = state["exp_avg"], state["exp_avg_sq"]
            backend = data.device.backend
            if backend.supports("adam_update_many"):
                batches.setdefault((backend, data.dtype, l2), []).append(
                    (p, data, grad._handle, m._handle, v._handle, t))
                continue
            if backend.supports("adam_update"):
                backend.adam_update(data._handle, grad._handle, m._handle, v._handle, self.lr,
                                    self.beta1, self.beta2, self.eps, l2, t)
            else:
                g = grad + data * l2 if l2 else grad
                m = m * self.beta1 + g * (1 - self.beta1)
                v = v * self.beta2 + g * g * (1 - self.beta2)
                state["exp_avg"], state["exp_avg_sq"] = m, v
                m_hat = m / (1 - self.beta1 ** t)
                v_hat = v / (1 - self.beta2 ** t)
                data = data - m_hat * self.lr / (v_hat.sqrt() + self.eps)
            self._updated(p, data)
        for (backend, _, l2), updates in batches.items():
            ps, datas, grads, ms, vs, steps = zip(*updates)
            backend.adam_update_many([d._handle for d in datas], list(grads), list(ms),
                                     list(vs), self.lr, self.beta1, self.beta2, self.eps, l2,
                                     list(steps))
            for p, data in zip(ps, datas):
                self._updated(p, data)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``:
    each step first shrinks the parameter, ``p *= 1 - lr * weight_decay``, then takes the
    Adam step without any L2 term in the gradient.

    Same arguments as :class:`Adam` (``lr`` defaults to 0.01 like Needle's Adam; PyTorch's
    AdamW defaults to 1e-3), except ``weight_decay`` defaults to 0.01, as in PyTorch.

    Example:
        >>> opt = needle.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=0.01, beta1=_UNSET, beta2=_UNSET, eps=1e-8, weight_decay=0.01,
                 *, betas=None):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, betas=betas)
