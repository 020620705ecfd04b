"""Neural-network layers built from needle.ops.

PyTorch-style names (``Conv2d``, ``MaxPool2d``, ``CrossEntropyLoss``, ``MultiHeadAttention``,
``TransformerLayer``...) sit beside classic Needle's (``Conv``, ``SoftmaxLoss``,
``LayerNorm1d``, ``AttentionLayer``, ``Transformer``); the course's attention core and
Transformer layer are ``needle.nn.transformer.MultiHeadAttention`` and
``needle.nn.transformer.TransformerLayer``.
"""
from . import transformer
from .attention import MultiHeadAttention, TransformerLayer
from .basic import (GELU, Dropout, Flatten, Identity, Linear, LogSoftmax, ReLU, Residual,
                    Sequential, Sigmoid, Softmax, SoftmaxLoss, Tanh)
from .conv import Conv, Conv2d
from .loss import CrossEntropyLoss, L1Loss, MSELoss
from .module import IncompatibleKeys, Module, ModuleList, Parameter
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm, LayerNorm1d
from .pooling import AvgPool2d, MaxPool2d
from .sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell
from .transformer import AttentionLayer, Transformer
