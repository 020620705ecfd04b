"""Needle's differentiable operations. Each op's ``compute`` calls the NDArray API and its
``gradient`` is written in Tensor ops, so every op works on every device."""
from .elementwise import (Abs, AddScalar, Compare, DivScalar, EWiseAdd, EWiseDiv, EWiseMul,
                          EWisePow, EWiseSub, Exp, Log, Maximum, Minimum, MulScalar, Negate,
                          PowerScalar, ReLU, Sigmoid, Sqrt, Tanh, abs, add, add_scalar, clamp,
                          compare, divide, divide_scalar, exp, log, logical_and, logical_not,
                          logical_or, maximum, minimum, mul_scalar, multiply, negate, power,
                          power_scalar, relu, sigmoid, sqrt, subtract, tanh)
from .attention import Attention, scaled_dot_product_attention
from .fused import (LogSoftmax, batch_norm, batch_norm_train, bias_act, layer_norm,
                    log_softmax, logsoftmax, softmax, softmax_cross_entropy,
                    update_running_stats)
from .indexing import (ScatterAdd, Take, Where, assigned, embedding, get_item, one_hot,
                       set_item_, where)
from .linalg import Conv, MatMul, conv, matmul
from .linear import Linear, gelu, linear
from .movement import (AsType, BroadcastTo, Concatenate, Dilate, Flip, GetItem, Pad, Permute,
                       Reshape, Split, Stack, ToDevice, Transpose, UnDilate, astype,
                       broadcast_to, concatenate, dilate, flatten, flip, make_tuple, pad,
                       permute, reshape, split, squeeze, stack, to_device, transpose,
                       tuple_get_item, undilate, unsqueeze)
from .recurrent import LSTMLayer, LSTMLayerBackward, lstm, lstm_cell
from .reduce import (LogSumExp, Max, Summation, argmax, argmin, logsumexp, max, mean, min,
                     summation)
