"""Needle's differentiable operations. Each op's ``compute`` calls the NDArray API and its
``gradient`` is written in Tensor ops, so every op works on every device."""
from .elementwise import (AddScalar, DivScalar, EWiseAdd, EWiseDiv, EWiseMul, EWiseSub, Exp,
                          Log, Maximum, MulScalar, Negate, PowerScalar, ReLU, Sigmoid, Sqrt,
                          Tanh, add, add_scalar, divide, divide_scalar, exp, log, maximum,
                          mul_scalar, multiply, negate, power_scalar, relu, sigmoid, sqrt,
                          subtract, tanh)
from .attention import Attention, scaled_dot_product_attention
from .fused import (batch_norm, batch_norm_train, bias_act, layer_norm, softmax,
                    softmax_cross_entropy)
from .linalg import Conv, MatMul, conv, matmul
from .linear import Linear, gelu, linear
from .movement import (BroadcastTo, Concatenate, Dilate, Flip, GetItem, Pad, Permute, Reshape,
                       Split, Stack, UnDilate, broadcast_to, concatenate, dilate, flip,
                       get_item, make_tuple, pad, permute, reshape, split, stack, transpose,
                       tuple_get_item, undilate)
from .reduce import LogSumExp, Max, Summation, logsumexp, max, summation
