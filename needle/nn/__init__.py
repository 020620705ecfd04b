"""Neural-network layers built from needle.ops."""
from .attention import MultiHeadAttention, TransformerLayer
from .basic import (GELU, Dropout, Flatten, Identity, Linear, ReLU, Residual, Sequential,
                    Sigmoid, SoftmaxLoss, Tanh)
from .conv import Conv
from .module import Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm, LayerNorm1d
from .sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell
