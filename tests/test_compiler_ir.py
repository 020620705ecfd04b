"""Needle IR: the op table's shape rules, the text form's round trip and the verifier
(needle/compiler/{ops,printer,parser,verifier}.py). No device: these are graphs only."""
import math
import re

import numpy as np
import pytest

from needle.compiler import (OPS, Graph, Node, ParseError, TensorType, VerifyError, add_node,
                             as_text, infer_types, parse, print_graph, verify, with_defaults)
from needle.errors import NeedleError


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


def B(*shape):
    return T(*shape, dtype="bool")


def I32(*shape):
    return T(*shape, dtype="int32")


def I64(*shape):
    return T(*shape, dtype="int64")


MATMUL = dict(lhs_batching_dimensions=[], rhs_batching_dimensions=[],
              lhs_contracting_dimensions=[1], rhs_contracting_dimensions=[0])
NCHW = dict(input_batch_dimension=0, input_feature_dimension=1, input_spatial_dimensions=[2, 3],
            kernel_output_feature_dimension=0, kernel_input_feature_dimension=1,
            kernel_spatial_dimensions=[2, 3], output_batch_dimension=0,
            output_feature_dimension=1, output_spatial_dimensions=[2, 3])
NHWC = dict(input_batch_dimension=0, input_feature_dimension=3, input_spatial_dimensions=[1, 2],
            kernel_input_feature_dimension=2, kernel_output_feature_dimension=3,
            kernel_spatial_dimensions=[0, 1], output_batch_dimension=0,
            output_feature_dimension=3, output_spatial_dimensions=[1, 2])
CONV = dict(window_strides=[1, 1], padding=[(1, 1), (1, 1)], lhs_dilation=[1, 1],
            rhs_dilation=[1, 1], dimension_numbers=NCHW)
TAKE_ROWS = dict(offset_dims=[1], collapsed_slice_dims=[0], start_index_map=[0],
                 index_vector_dim=1, slice_sizes=[1, 4])
SCATTER_ROWS = dict(update_window_dims=[1], inserted_window_dims=[0],
                    scatter_dims_to_operand_dims=[0], index_vector_dim=1, computation="add")
UNARY_FLOAT = ["exponential", "log", "tanh", "logistic", "sqrt", "rsqrt", "sine", "cosine",
               "floor"]
BINARY_NUMERIC = ["add", "subtract", "multiply", "divide", "power", "maximum", "minimum",
                  "remainder"]

# (op, input types, attrs, output types)
GOOD = [
    *[(op, [T(2, 3)], {}, [T(2, 3)]) for op in UNARY_FLOAT],
    *[(op, [T(4, dtype="float64")], {}, [T(4, dtype="float64")]) for op in UNARY_FLOAT[:2]],
    *[(op, [I32(5)], {}, [I32(5)]) for op in ("negate", "abs", "sign")],
    ("negate", [T()], {}, [T()]),
    ("not", [B(3)], {}, [B(3)]),
    ("not", [I64(3)], {}, [I64(3)]),
    *[(op, [T(2, 3), T(2, 3)], {}, [T(2, 3)]) for op in BINARY_NUMERIC],
    *[(op, [I64(7), I64(7)], {}, [I64(7)]) for op in BINARY_NUMERIC],
    ("maximum", [B(2), B(2)], {}, [B(2)]),
    ("and", [B(2, 2), B(2, 2)], {}, [B(2, 2)]),
    ("or", [I32(2), I32(2)], {}, [I32(2)]),
    *[("compare", [T(2, 3), T(2, 3)], {"comparison_direction": d}, [B(2, 3)])
      for d in ("EQ", "NE", "LT", "LE", "GT", "GE")],
    ("compare", [I32(), I32()], {"comparison_direction": "EQ"}, [B()]),
    ("compare", [T(2), T(2)], {"comparison_direction": "LT", "compare_type": "TOTALORDER"},
     [B(2)]),
    ("select", [B(2, 3), T(2, 3), T(2, 3)], {}, [T(2, 3)]),
    ("select", [B(), I32(2, 3), I32(2, 3)], {}, [I32(2, 3)]),
    ("clamp", [T(), T(2, 3), T()], {}, [T(2, 3)]),
    ("clamp", [T(2, 3), T(2, 3), T(2, 3)], {}, [T(2, 3)]),
    ("convert", [T(2, 3)], {"dtype": "int32"}, [I32(2, 3)]),
    ("convert", [B(2)], {"dtype": "float64"}, [T(2, dtype="float64")]),
    ("constant", [], {"value": np.zeros((2, 3))}, [T(2, 3, dtype="float64")]),
    ("constant", [], {"value": np.array(True)}, [B()]),
    ("iota", [], {"iota_dimension": 1, "shape": [2, 3], "dtype": "int64"}, [I64(2, 3)]),
    ("broadcast_in_dim", [T(3)], {"broadcast_dimensions": [1], "shape": [2, 3]}, [T(2, 3)]),
    ("broadcast_in_dim", [T(1, 3)], {"broadcast_dimensions": [0, 2], "shape": [4, 5, 3]},
     [T(4, 5, 3)]),
    ("broadcast_in_dim", [T()], {"broadcast_dimensions": [], "shape": [2]}, [T(2)]),
    ("reshape", [T(2, 3)], {"shape": [3, 2]}, [T(3, 2)]),
    ("reshape", [T(1, 1)], {"shape": []}, [T()]),
    ("transpose", [T(2, 3, 4)], {"permutation": [2, 0, 1]}, [T(4, 2, 3)]),
    ("slice", [T(10, 6)], {"start_indices": [1, 0], "limit_indices": [8, 6], "strides": [3, 2]},
     [T(3, 3)]),
    ("slice", [T(4)], {"start_indices": [2], "limit_indices": [2], "strides": [1]}, [T(0)]),
    ("reverse", [T(2, 3)], {"dimensions": [0, 1]}, [T(2, 3)]),
    ("pad", [T(2, 3), T()], {"edge_padding_low": [1, -1], "edge_padding_high": [0, 2],
                             "interior_padding": [1, 0]}, [T(4, 4)]),
    ("concatenate", [T(2, 3), T(2, 5), T(2, 1)], {"dimension": 1}, [T(2, 9)]),
    ("concatenate", [I32(2)], {"dimension": 0}, [I32(2)]),
    ("reduce", [T(2, 3, 4), T()], {"dimensions": [0, 2], "computation": "add"}, [T(3)]),
    ("reduce", [I32(5), I32()], {"dimensions": [0], "computation": "max"}, [I32()]),
    ("reduce", [T(5), T()], {"dimensions": [], "computation": "min"}, [T(5)]),
    ("dot_general", [T(64, 784), T(784, 128)], MATMUL, [T(64, 128)]),
    ("dot_general", [T(2, 3), T(3, 4)], {**MATMUL, "precision_config": ["HIGH", "HIGH"]},
     [T(2, 4)]),
    ("dot_general", [T(8, 4, 5, 6), T(8, 6, 7)],
     dict(lhs_batching_dimensions=[0], rhs_batching_dimensions=[0],
          lhs_contracting_dimensions=[3], rhs_contracting_dimensions=[1]), [T(8, 4, 5, 7)]),
    ("dot_general", [T(3), T(4)],  # outer product: no contraction
     dict(lhs_batching_dimensions=[], rhs_batching_dimensions=[],
          lhs_contracting_dimensions=[], rhs_contracting_dimensions=[]), [T(3, 4)]),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], CONV, [T(2, 16, 8, 8)]),
    ("convolution", [T(2, 3, 9, 9), T(4, 3, 3, 3)],
     {**CONV, "window_strides": [2, 2], "padding": [(0, 0), (0, 0)]}, [T(2, 4, 4, 4)]),
    ("convolution", [T(1, 5, 5, 4), T(3, 3, 2, 6)],  # NHWC / HWIO, 2 groups, lhs dilation
     {**CONV, "padding": [(0, 0), (0, 0)], "lhs_dilation": [2, 2], "dimension_numbers": NHWC,
      "feature_group_count": 2}, [T(1, 7, 7, 6)]),
    ("convolution", [T(4, 3, 5, 5), T(6, 3, 3, 3)],  # a weight gradient's batch groups
     {**CONV, "padding": [(0, 0), (0, 0)], "batch_group_count": 2}, [T(2, 6, 3, 3)]),
    ("convolution", [T(1, 1, 2, 2), T(1, 1, 5, 5)], CONV, [T(1, 1, 0, 0)]),  # window > input
    ("convolution", [T(2, 3, 8), T(16, 3, 3)],  # 1-d, with StableHLO's optional attributes
     dict(window_strides=[1], padding=[(0, 0)], lhs_dilation=[1], rhs_dilation=[1],
          window_reversal=[True], precision_config=["DEFAULT", "HIGHEST"],
          dimension_numbers=dict(NCHW, input_spatial_dimensions=[2], kernel_spatial_dimensions=[2],
                                 output_spatial_dimensions=[2])), [T(2, 16, 6)]),
    ("gather", [T(5, 4), I32(3)], TAKE_ROWS, [T(3, 4)]),
    ("gather", [T(5, 6, 7), I64(2, 3, 2)],
     dict(offset_dims=[2], collapsed_slice_dims=[0, 1], start_index_map=[0, 1],
          index_vector_dim=2, slice_sizes=[1, 1, 7]), [T(2, 3, 7)]),
    ("gather", [T(2, 3, 4, 2), I64(2, 2, 3, 2)],  # the StableHLO spec's example
     dict(offset_dims=[3, 4], collapsed_slice_dims=[1], operand_batching_dims=[0],
          start_indices_batching_dims=[1], start_index_map=[2, 1], index_vector_dim=3,
          slice_sizes=[1, 1, 2, 2]), [T(2, 2, 3, 2, 2)]),
    ("scatter", [T(5, 4), I32(3, 1), T(3, 4)], SCATTER_ROWS, [T(5, 4)]),
    ("scatter", [T(5, 4), I32(3, 1), T(3, 4)],
     {**SCATTER_ROWS, "indices_are_sorted": True, "unique_indices": False}, [T(5, 4)]),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "indices_are_sorted": False}, [T(3, 4)]),
    ("scatter", [I64(2, 3, 4, 2), I64(2, 2, 3, 2), I64(2, 2, 3, 2, 2)],  # the spec's example
     dict(update_window_dims=[3, 4], inserted_window_dims=[1], input_batching_dims=[0],
          scatter_indices_batching_dims=[1], scatter_dims_to_operand_dims=[2, 1],
          index_vector_dim=3, computation="replace"), [I64(2, 3, 4, 2)]),
]


@pytest.mark.parametrize("op, inputs, attrs, outputs", GOOD, ids=[g[0] for g in GOOD])
def test_infer_good(op, inputs, attrs, outputs):
    assert infer_types(op, inputs, attrs) == outputs


def test_every_op_is_inferred_and_named_as_stablehlo():
    assert {g[0] for g in GOOD} | {"composite"} == set(OPS)
    groups = {"elementwise", "source", "movement", "reduce", "contract", "index", "composite"}
    assert {d.group for d in OPS.values()} == groups
    assert OPS["concatenate"].arity is None and OPS["select"].arity == 3


def _sg(name, *types, outputs=None):
    """A decomposition: inputs of ``types``, returning ``outputs(inputs)`` (or the inputs)."""
    g = Graph(name=name)
    xs = [g.add_input(t) for t in types]
    g.outputs = outputs(g, xs) if outputs else xs
    return g


def test_infer_composite():
    dec = _sg("needle.softmax", T(4, 5), outputs=lambda g, xs: [
        add_node(g, "exponential", xs).output,
        add_node(g, "reduce", [add_node(g, "exponential", xs).output,
                               add_node(g, "constant", [], {"value": np.zeros(
                                   (), np.float32)}).output],
                 {"dimensions": [1], "computation": "add"}).output])
    assert infer_types("composite", [T(4, 5)], {"name": "needle.softmax", "axis": 1}, dec) == \
        [T(4, 5), T(4)]


BAD = [  # (op, input types, attrs, what the message says)
    *[(op, [I32(3)], {}, "operand has dtype int32; expected float32 or float64")
      for op in UNARY_FLOAT],
    *[(op, [B(3)], {}, "operand has dtype bool; expected float32 or float64 or int32 or int64")
      for op in ("negate", "abs", "sign")],
    *[(op, [T(2, 3), T(2, 3)], {}, "operands has dtype float32; expected bool or int32 or int64")
      for op in ("and", "or")],
    *[(op, [T(2, 3), T(2, 4)], {}, "operands must have the same type") for op in BINARY_NUMERIC],
    *[(op, [B(2), B(2)], {}, "operands has dtype bool")
      for op in ("subtract", "divide", "power", "remainder")],
    ("exponential", [I32(3)], {}, "operand has dtype int32; expected float32 or float64"),
    ("negate", [B(3)], {}, "operand has dtype bool"),
    ("not", [T(3)], {}, "expected bool or int32 or int64"),
    ("add", [T(2, 3), T(3, 2)], {}, "operands must have the same type, got float32[2,3] and "
                                    "float32[3,2]"),
    ("add", [T(2), T(2, dtype="float64")], {}, "must have the same type"),
    ("add", [T(2)], {}, "takes 2 inputs, got 1"),
    ("subtract", [B(2), B(2)], {}, "operands has dtype bool"),
    ("and", [T(2), T(2)], {}, "operands has dtype float32"),
    ("negate", [T(2)], {"foo": 1}, "unknown attribute 'foo'; negate takes none"),
    ("compare", [T(2), T(2)], {}, "missing attribute 'comparison_direction'"),
    ("compare", [T(2), T(2)], {"comparison_direction": "LESS"},
     "attribute 'comparison_direction' must be one of 'EQ', 'NE', 'LT', 'LE', 'GT', 'GE', "
     "got 'LESS'"),
    ("compare", [T(2), I32(2)], {"comparison_direction": "EQ"}, "must have the same type"),
    ("select", [T(2, 3), T(2, 3), T(2, 3)], {}, "pred must be bool"),
    ("select", [B(3), T(2, 3), T(2, 3)], {}, "a scalar or of on_true's shape [2, 3]; got bool[3]"),
    ("select", [B(), T(2, 3), T(3, 2)], {}, "on_true and on_false must have the same type"),
    ("clamp", [T(3), T(2, 3), T()], {}, "min must be a float32 scalar or have the operand's type"),
    ("clamp", [T(), T(2, 3), I32()], {}, "max must be a float32 scalar"),
    ("convert", [T(2)], {"dtype": "float8"}, "attribute 'dtype' must be a dtype name"),
    ("convert", [T(2)], {}, "missing attribute 'dtype'"),
    ("constant", [], {"value": [1.0, 2.0]}, "attribute 'value' must be a numpy array"),
    ("constant", [], {"value": np.zeros(2, np.clongdouble)}, "must be a numpy array"),
    ("constant", [T(2)], {"value": np.zeros(2)}, "takes 0 inputs, got 1"),
    ("iota", [], {"iota_dimension": 2, "shape": [2, 3], "dtype": "int32"},
     "iota_dimension 2 out of range for shape [2, 3]"),
    ("iota", [], {"iota_dimension": 0, "shape": [2], "dtype": "bool"}, "numeric dtype"),
    ("iota", [], {"iota_dimension": 0, "shape": [-2], "dtype": "int32"},
     "attribute 'shape' must be a list of non-negative ints"),
    ("broadcast_in_dim", [T(3)], {"broadcast_dimensions": [0, 1], "shape": [2, 3]},
     "needs one entry per dimension of the operand float32[3]"),
    ("broadcast_in_dim", [T(3)], {"broadcast_dimensions": [0], "shape": [2, 3]},
     "operand dimension 0 (size 3) cannot broadcast to dimension 0 (size 2)"),
    ("broadcast_in_dim", [T(3)], {"broadcast_dimensions": [2], "shape": [2, 3]},
     "broadcast_dimensions [2] out of range for rank 2"),
    ("broadcast_in_dim", [T(1, 1)], {"broadcast_dimensions": [1, 1], "shape": [2, 3]},
     "has a repeated dimension"),
    ("broadcast_in_dim", [T(3)], {"broadcast_dimensions": 1, "shape": [2, 3]},
     "attribute 'broadcast_dimensions' must be a list of ints, got 1"),
    ("reshape", [T(2, 3)], {"shape": [4, 2]},
     "cannot reshape float32[2,3] (6 elements) to shape [4, 2] (8 elements)"),
    ("transpose", [T(2, 3)], {"permutation": [0, 0]}, "is not a permutation of the 2 dimensions"),
    ("slice", [T(4)], {"start_indices": [1], "limit_indices": [5], "strides": [1]},
     "dimension 0: need 0 <= start (1) <= limit (5) <= size (4)"),
    ("slice", [T(4)], {"start_indices": [0], "limit_indices": [4], "strides": [0]},
     "stride 0 must be positive"),
    ("slice", [T(4, 4)], {"start_indices": [0], "limit_indices": [4], "strides": [1]},
     "need one entry per dimension"),
    ("reverse", [T(2, 3)], {"dimensions": [1, 1]}, "dimensions [1, 1] has a repeated dimension"),
    ("pad", [T(2, 3), T(1)], {"edge_padding_low": [0, 0], "edge_padding_high": [0, 0],
                              "interior_padding": [0, 0]},
     "padding_value must be a float32 scalar (float32[]), got float32[1]"),
    ("pad", [T(2, 3), T()], {"edge_padding_low": [0, 0], "edge_padding_high": [0, 0],
                             "interior_padding": [-1, 0]}, "must be non-negative"),
    ("pad", [T(2, 3), T()], {"edge_padding_low": [0, -4], "edge_padding_high": [0, 0],
                             "interior_padding": [0, 0]}, "gives a negative size [2, -1]"),
    ("concatenate", [T(2, 3), T(3, 3)], {"dimension": 1},
     "input 1 (float32[3,3]) does not match input 0 (float32[2,3]) outside dimension 1"),
    ("concatenate", [T(2, 3), I32(2, 3)], {"dimension": 1}, "does not match input 0"),
    ("concatenate", [T(2, 3)], {"dimension": 2}, "dimension 2 out of range for float32[2,3]"),
    ("concatenate", [], {"dimension": 0}, "needs at least one input"),
    ("reduce", [T(2, 3), T(dtype="float64")], {"dimensions": [0], "computation": "add"},
     "init_value must be a float32 scalar"),
    ("reduce", [T(2, 3), T()], {"dimensions": [2], "computation": "add"},
     "dimensions [2] out of range for rank 2"),
    ("reduce", [T(2, 3), T()], {"dimensions": [0], "computation": "mean"},
     "attribute 'computation' must be one of 'add', 'max', 'min', 'multiply'"),
    ("dot_general", [T(64, 784), T(785, 128)], MATMUL,
     "contracting dimension 1 of lhs float32[64,784] (size 784) does not match dimension 0 of "
     "rhs float32[785,128] (size 785)"),
    ("dot_general", [T(2, 3), T(3, 2, dtype="float64")], MATMUL, "the same dtype"),
    ("dot_general", [T(2, 3), T(3, 2)], {**MATMUL, "lhs_batching_dimensions": [0]},
     "lhs_batching_dimensions [0] and rhs_batching_dimensions [] differ in length"),
    ("dot_general", [T(2, 3), T(3, 2)], {**MATMUL, "lhs_contracting_dimensions": [2]},
     "lhs batching + contracting dimensions [2] out of range for rank 2"),
    ("dot_general", [T(3, 3), T(3, 3)],
     {**MATMUL, "lhs_batching_dimensions": [1], "rhs_batching_dimensions": [1]},
     "lhs batching + contracting dimensions [1, 1] has a repeated dimension"),
    ("dot_general", [T(2, 3), T(3, 2)], {k: v for k, v in MATMUL.items()
                                         if k != "rhs_contracting_dimensions"},
     "missing attribute 'rhs_contracting_dimensions'"),
    ("convolution", [T(2, 4, 8, 8), T(16, 3, 3, 3)], CONV,
     "input features (4) / feature_group_count (1) must equal the kernel's input features (3)"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3)], CONV, "must have the same rank"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "window_strides": [1]},
     "window_strides needs 2 entries (one per spatial dimension), got 1"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "rhs_dilation": [1, 0]},
     "rhs_dilation [1, 0] must be positive"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "padding": [1, 1]},
     "attribute 'padding' must be a list of (low, high) int pairs"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)],
     {**CONV, "dimension_numbers": {k: v for k, v in NCHW.items()
                                    if k != "output_batch_dimension"}},
     "attribute 'dimension_numbers' must be a dict of input_batch_dimension"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)],
     {**CONV, "dimension_numbers": {**NCHW, "output_spatial_dimensions": [1, 3]}},
     "output dimension numbers [0, 1, 1, 3] has a repeated dimension"),
    ("convolution", [T(4, 4, 8, 8), T(16, 2, 3, 3)],
     {**CONV, "feature_group_count": 2, "batch_group_count": 2}, "one of them 1"),
    ("convolution", [T(3, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "batch_group_count": 2},
     "input batch size 3 is not divisible by batch_group_count 2"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "feature_group_count": 0},
     "must be positive"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "window_reversal": [True]},
     "window_reversal needs 2 entries"),
    ("convolution", [T(2, 3, 8, 8), T(16, 3, 3, 3)], {**CONV, "precision_config": ["FAST"]},
     "attribute 'precision_config' must be a list of two of 'DEFAULT', 'HIGH', 'HIGHEST'"),
    ("compare", [T(2), T(2)], {"comparison_direction": "EQ", "compare_type": "INT"},
     "attribute 'compare_type' must be one of 'SIGNED', 'UNSIGNED', 'FLOAT', 'TOTALORDER'"),
    ("gather", [T(5, 4), T(3)], TAKE_ROWS,
     "start_indices has dtype float32; expected int32 or int64"),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "slice_sizes": [1, 5]},
     "slice_sizes [1, 5] needs one entry per dimension of float32[5,4], each between 0 and"),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "slice_sizes": [2, 4]},
     "must be 0 or 1 in collapsed_slice_dims"),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "start_index_map": [0, 1]},
     "start_index_map [0, 1] needs 1 entries (the index vector's size)"),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "collapsed_slice_dims": []},
     "the operand's rank 2 must equal len(offset_dims) + len(collapsed_slice_dims) + "
     "len(operand_batching_dims) = 1"),
    ("gather", [T(5, 4, 3), I32(3)],
     {**TAKE_ROWS, "offset_dims": [2, 1], "slice_sizes": [1, 4, 3]},
     "offset_dims [2, 1] must be sorted"),
    ("gather", [T(5, 4), I32(3)], {**TAKE_ROWS, "index_vector_dim": 2},
     "index_vector_dim 2 out of range for start_indices int32[3]"),
    ("scatter", [T(5, 4), I32(3, 1), T(2, 4)], SCATTER_ROWS,
     "updates float32[2,4] outside update_window_dims [1] must have the sizes [3]"),
    ("scatter", [T(5, 4), I32(3, 1), T(3, 5)], SCATTER_ROWS,
     "update window dimension 1 (size 5) is larger than operand dimension 1 (size 4)"),
    ("scatter", [T(5, 4), I32(3, 1), I32(3, 4)], SCATTER_ROWS,
     "updates int32[3,4] must have the operand's dtype float32"),
    ("scatter", [T(5, 4), I32(3, 1), T(3, 4)], {**SCATTER_ROWS, "computation": "max"},
     "attribute 'computation' must be one of 'add', 'replace'"),
    ("unknown_op", [T(2)], {}, "unknown op 'unknown_op'"),
    ("composite", [T(2)], {"name": "needle.x"}, "a composite needs its decomposition"),
    ("composite", [T(2)], {}, "missing attribute 'name'"),
]


def test_every_op_has_bad_cases():
    assert {b[0] for b in BAD} >= set(OPS)


@pytest.mark.parametrize("op, inputs, attrs, message", BAD, ids=[b[0] for b in BAD])
def test_infer_bad(op, inputs, attrs, message):
    with pytest.raises(VerifyError, match=re.escape(message)) as info:
        infer_types(op, inputs, attrs)
    assert str(info.value).startswith(f"{op}: ")
    assert isinstance(info.value, NeedleError) and isinstance(info.value, ValueError)


def test_infer_composite_bad():
    dec = _sg("needle.id", T(2, 3))
    with pytest.raises(VerifyError, match=re.escape(
            "the decomposition takes (float32[2,3]) but the node's inputs are (float32[3,2])")):
        infer_types("composite", [T(3, 2)], {"name": "needle.id"}, dec)
    with pytest.raises(VerifyError, match="must be namespaced, as 'needle.softmax'"):
        infer_types("composite", [T(2, 3)], {"name": "softmax"}, dec)
    with pytest.raises(VerifyError, match="attribute 'bad' must be an int, float, bool, string"):
        infer_types("composite", [T(2, 3)], {"name": "needle.id", "bad": object()}, dec)
    with pytest.raises(VerifyError, match="only a composite carries a decomposition"):
        infer_types("negate", [T(2, 3)], {}, dec)


def test_infer_needs_types():
    with pytest.raises(VerifyError, match="negate: input 0 must be a TensorType, got"):
        infer_types("negate", [Graph().add_input(T(2))])


def test_with_defaults():
    assert with_defaults("convolution", CONV)["feature_group_count"] == 1
    assert with_defaults("convolution", {**CONV, "batch_group_count": 2})["batch_group_count"] == 2
    assert with_defaults("gather", TAKE_ROWS)["operand_batching_dims"] == ()
    assert with_defaults("add", {}) == {}
    assert with_defaults("compare", {"comparison_direction": "EQ"})["compare_type"] is None


# ---------------------------------------------------------------------------------------
# text form

def _emit(g, op, *inputs, decomposition=None, **attrs):
    node = add_node(g, op, list(inputs), attrs, decomposition)
    return node.outputs[0] if len(node.outputs) == 1 else node.outputs


def _const(g, value):
    return _emit(g, "constant", value=np.asarray(value))


def every_op_graph():
    """One graph that uses every op of the table (a composite with two outputs too)."""
    g = Graph()
    x, w = g.add_input(T(4, 6)), g.add_input(T(6, 3))
    img, ker = g.add_input(T(2, 3, 5, 5)), g.add_input(T(4, 3, 3, 3))
    idx, state = g.add_input(I32(3)), g.add_input(T(4, 3))
    zero = _const(g, np.float32(0.0))
    h = x
    for op in UNARY_FLOAT + ["negate", "abs", "sign"]:
        h = _emit(g, op, h)
    for op in BINARY_NUMERIC:
        h = _emit(g, op, h, x)
    mask = _emit(g, "compare", h, x, comparison_direction="GT", compare_type="FLOAT")
    mask = _emit(g, "and", mask, _emit(g, "or", mask, _emit(g, "not", mask)))
    h = _emit(g, "select", mask, h, x)
    h = _emit(g, "clamp", zero, h, _const(g, np.float32(6.0)))
    i = _emit(g, "convert", h, dtype="int64")
    i = _emit(g, "add", i, _emit(g, "iota", iota_dimension=1, shape=[4, 6], dtype="int64"))
    h = _emit(g, "add", h, _emit(g, "convert", i, dtype="float32"))
    y = _emit(g, "dot_general", h, w, **MATMUL)                          # [4, 3]
    b = _emit(g, "broadcast_in_dim", _const(g, np.arange(3, dtype=np.float32)),
              broadcast_dimensions=[1], shape=[4, 3])
    y = _emit(g, "add", y, b)
    t = _emit(g, "transpose", _emit(g, "reshape", y, shape=[3, 4]), permutation=[1, 0])
    s = _emit(g, "slice", _emit(g, "reverse", t, dimensions=[0]),
              start_indices=[0, 1], limit_indices=[4, 3], strides=[2, 1])  # [2, 2]
    p = _emit(g, "pad", s, zero, edge_padding_low=[1, 0], edge_padding_high=[0, 1],
              interior_padding=[1, 0])                                    # [4, 3]
    c = _emit(g, "concatenate", p, y, t, dimension=1)                    # [4, 9]
    r = _emit(g, "reduce", c, zero, dimensions=[1], computation="max")   # [4]
    conv = _emit(g, "convolution", img, ker, **CONV, feature_group_count=1,
                 window_reversal=[False, False])                          # [2, 4, 5, 5]
    gathered = _emit(g, "gather", conv, idx, offset_dims=[1, 2, 3], collapsed_slice_dims=[0],
                     start_index_map=[0], index_vector_dim=1, slice_sizes=[1, 4, 5, 5],
                     indices_are_sorted=False)
    updates = _emit(g, "reshape", _emit(g, "slice", gathered, start_indices=[0, 0, 0, 0],
                                        limit_indices=[3, 1, 1, 3], strides=[1, 1, 1, 1]),
                    shape=[3, 3])
    new_state = _emit(g, "scatter", state, _emit(g, "reshape", idx, shape=[3, 1]), updates,
                      update_window_dims=[1], inserted_window_dims=[0],
                      scatter_dims_to_operand_dims=[0], index_vector_dim=1, computation="add")

    def softmax(dg, xs):
        (v,) = xs
        m = _emit(dg, "reduce", v, _const(dg, np.float32(-np.inf)), dimensions=[1],
                  computation="max")
        e = _emit(dg, "exponential", _emit(dg, "subtract", v, _emit(
            dg, "broadcast_in_dim", m, broadcast_dimensions=[0], shape=[4, 3])))
        total = _emit(dg, "reduce", e, _const(dg, np.float32(0)), dimensions=[1],
                      computation="add")
        return [_emit(dg, "divide", e, _emit(dg, "broadcast_in_dim", total,
                                             broadcast_dimensions=[0], shape=[4, 3])), total]

    probs, total = _emit(g, "composite", y, name="needle.softmax", decomposition=_sg(
        "needle.softmax", T(4, 3), outputs=softmax), axis=1, eps=1e-5, flags=[True, False],
        nested={"a-b": [1, 2], "k": "v \"q\" \u00e9"}, table=np.eye(2))
    g.outputs = [r, probs, total, new_state, x]
    g.aliases = {3: 5, 4: 0}
    return g


def _norm(v):
    """A comparable form of an attribute value: arrays by dtype, shape and bytes; floats by
    repr (so -0.0 and nan compare); lists and tuples alike."""
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.name, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (float, np.floating)):
        return ("float", repr(float(v)))
    return v


def assert_same_graph(a, b):
    assert a.name == b.name
    assert [v.type for v in a.inputs] == [v.type for v in b.inputs]
    assert len(a.nodes) == len(b.nodes)
    pos_a = {v: ("in", i) for i, v in enumerate(a.inputs)}
    pos_b = {v: ("in", i) for i, v in enumerate(b.inputs)}
    for k, (na, nb) in enumerate(zip(a.nodes, b.nodes)):
        assert (na.op, [pos_a[v] for v in na.inputs]) == (nb.op, [pos_b[v] for v in nb.inputs])
        assert [v.type for v in na.outputs] == [v.type for v in nb.outputs]
        assert _norm(na.attrs) == _norm(nb.attrs)
        assert (na.decomposition is None) == (nb.decomposition is None)
        if na.decomposition is not None:
            assert_same_graph(na.decomposition, nb.decomposition)
        pos_a.update((v, (k, j)) for j, v in enumerate(na.outputs))
        pos_b.update((v, (k, j)) for j, v in enumerate(nb.outputs))
    assert [pos_a[v] for v in a.outputs] == [pos_b[v] for v in b.outputs]
    assert a.aliases == b.aliases


def round_trip(g):
    text = as_text(verify(g))
    back = verify(parse(text))
    assert as_text(back) == text
    assert_same_graph(g, back)
    return text, back


def test_round_trip_every_op():
    g = every_op_graph()
    used = {n.op for n in g.nodes} | {n.op for n in g.nodes[-1].decomposition.nodes}
    assert used == set(OPS)
    text, back = round_trip(g)
    assert back.aliases == {3: 5, 4: 0}
    composite = back.nodes[-1]
    assert composite.attrs["name"] == "needle.softmax" and composite.attrs["flags"] == (True, False)
    assert composite.attrs["nested"] == {"a-b": (1, 2), "k": "v \"q\" \u00e9"}
    assert composite.decomposition.name == "needle.softmax"
    assert back.count(recursive=True) == g.count(recursive=True)


def test_text_format():
    g = Graph()
    x, w = g.add_input(T(64, 784)), g.add_input(T(784, 128))
    y = _emit(g, "dot_general", x, w, **MATMUL)
    zero = _const(g, np.float32(0.0))
    outs = _emit(g, "composite", y, zero, name="needle.x", decomposition=_sg(
        "needle.x", T(64, 128), T()), eps=1e-05)
    g.outputs, g.aliases = [outs[1], w], {1: 1}
    assert as_text(g) == print_graph(g) == """\
func @main(%0: float32[64,784], %1: float32[784,128]) -> (float32[], float32[784,128]) aliases {1: 1} {
  %2 = dot_general %0, %1 {lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]} : float32[64,128]
  %3 = constant {value = dense<float32[]>[0.0]} : float32[]
  %4:2 = composite %2, %3 {name = "needle.x", eps = 1e-05} : float32[64,128], float32[] {
    func @needle.x(%0: float32[64,128], %1: float32[]) -> (float32[64,128], float32[]) {
      return %0, %1
    }
  }
  return %4#1, %1
}"""
    round_trip(g)


def test_numbering_is_dense_per_graph():
    texts = []
    for _ in range(2):  # the second graph's Values have other ids
        g = Graph()
        x = g.add_input(T(3))
        g.outputs = [_emit(g, "tanh", _emit(g, "negate", x)), x]
        texts.append(as_text(g))
    assert texts[0] == texts[1]
    assert "%1 = negate %0" in texts[0] and "%2 = tanh %1" in texts[0]


def test_attribute_values_round_trip():
    values = {"i": -3, "big": 2 ** 62, "f": 0.1, "neg_zero": -0.0, "inf": float("inf"),
              "ninf": -math.inf, "nan": math.nan, "tiny": 5e-324, "huge": 1.7976931348623157e308,
              "t": True, "f2": False, "s": "with \"quotes\", \\ and \n", "u": "\u00e9\u4e2d",
              "empty": [], "nested": [[1, 2], [3]], "pairs": [(0, 1), (2, 3)],
              "d": {"z": 1, "a": [1.5]}, "np_int": np.int64(7), "np_float": np.float32(0.5),
              "arr": np.array([[1, 2]], np.int64), "weird key!": 1}
    g = Graph()
    x = g.add_input(T(2))
    g.outputs = [_emit(g, "composite", x, name="needle.attrs", decomposition=_sg(
        "needle.attrs", T(2)), **values)]
    _, back = round_trip(g)
    attrs = back.nodes[0].attrs
    assert attrs["pairs"] == ((0, 1), (2, 3)) and attrs["empty"] == ()
    assert math.copysign(1, attrs["neg_zero"]) == -1 and math.isnan(attrs["nan"])
    assert attrs["big"] == 2 ** 62 and type(attrs["big"]) is int and type(attrs["f"]) is float
    assert attrs["np_int"] == 7 and attrs["np_float"] == 0.5


def _bits(dtype, *words):
    return np.array(words, {"float32": np.uint32, "float64": np.uint64}[dtype]).view(dtype)


CONSTANTS = {
    "float32 specials": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 1.1754943e-38,
                                  3.4028235e38, -3.4028235e38, 0.1, 1 / 3, 16777217.0],
                                 np.float32),
    "float32 nan payloads": _bits("float32", 0x7FC00001, 0xFFC00000, 0x7F800001, 0xFFFFFFFF),
    "float64 specials": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324,
                                  2.2250738585072014e-308,
                                  1.7976931348623157e308, 0.1, 1 / 3, 2.0 ** 53 + 1]),
    "float64 nan payloads": _bits("float64", 0x7FF8000000000001, 0xFFF8000000000000,
                                  0x7FF0000000000001),
    "int32": np.array([[-2 ** 31, -1, 0], [1, 7, 2 ** 31 - 1]], np.int32),
    "int64": np.array([-2 ** 63, -1, 0, 2 ** 63 - 1], np.int64),
    "bool": np.array([[True, False], [False, True]]),
    "scalar": np.array(-0.0, np.float32),
    "empty": np.zeros((0, 3), np.float32),
    "splat zeros": np.zeros((64, 32), np.float32),
    "splat -0.0": np.full((3, 2), -0.0),
    "splat nan payload": np.repeat(_bits("float32", 0x7FC00005), 6).reshape(2, 3),
    "splat bool": np.ones((2, 2), bool),
    "strided": np.arange(24, dtype=np.float32).reshape(4, 6).T,
}


@pytest.mark.parametrize("name", list(CONSTANTS))
def test_constants_round_trip_bit_exactly(name):
    value = CONSTANTS[name]
    g = Graph()
    g.outputs = [_const(g, value)]
    text, back = round_trip(g)
    got = back.nodes[0].attrs["value"]
    assert got.dtype == value.dtype and got.shape == value.shape
    assert got.tobytes() == np.ascontiguousarray(value).tobytes()
    if name.startswith("splat"):
        assert "splat(" in text


def test_constant_text_is_readable():
    g = Graph()
    g.outputs = [_const(g, np.array([[1.0, 0.1], [-0.0, np.inf]], np.float32)),
                 _const(g, np.array([1, -2], np.int32)), _const(g, np.array([True, False])),
                 _const(g, _bits("float32", 0x7FC00001, 0x7FC00000))]
    text = as_text(g)
    assert "dense<float32[2,2]>[1.0, 0.1, -0.0, inf]" in text
    assert "dense<int32[2]>[1, -2]" in text and "dense<bool[2]>[true, false]" in text
    assert "dense<float32[2]>[0x7FC00001, nan]" in text


def test_large_random_constant_round_trips(rng):
    # every bit pattern is a float32: NaNs with payloads, subnormals, both zeros
    value = rng.integers(0, 2 ** 32, size=(200, 300), dtype=np.uint32).view(np.float32)
    g = Graph()
    x = g.add_input(T(200, 300))
    g.outputs = [_emit(g, "add", x, _const(g, value))]
    _, back = round_trip(g)
    assert back.nodes[0].attrs["value"].tobytes() == value.tobytes()


ELEMENTWISE_CHAIN_UNARY = ["negate", "exponential", "log", "tanh", "logistic", "sqrt", "rsqrt",
                           "abs", "sine", "cosine", "sign", "floor"]


@pytest.mark.parametrize("trial", range(25))
def test_random_elementwise_chains_round_trip(rng, trial):
    g = Graph(name=f"chain{trial}")
    dtype = ["float32", "float64"][trial % 2]
    shape = tuple(int(n) for n in rng.integers(0, 5, size=rng.integers(0, 4)))
    t = TensorType(shape, dtype)
    values = [g.add_input(t) for _ in range(rng.integers(1, 4))]
    bits = {"float32": np.uint32, "float64": np.uint64}[dtype]
    for _ in range(rng.integers(5, 40)):
        kind = rng.integers(0, 5)
        if kind == 0:
            values.append(_emit(g, str(rng.choice(ELEMENTWISE_CHAIN_UNARY)),
                                values[rng.integers(len(values))]))
        elif kind in (1, 2):
            other = values[rng.integers(len(values))] if kind == 1 else _const(
                g, rng.integers(0, np.iinfo(bits).max, size=shape, dtype=bits,
                                endpoint=True).view(dtype).reshape(shape))
            values.append(_emit(g, str(rng.choice(BINARY_NUMERIC)),
                                values[rng.integers(len(values))], other))
        elif kind == 3:
            a, b = (values[rng.integers(len(values))] for _ in range(2))
            mask = _emit(g, "compare", a, b, comparison_direction=str(
                rng.choice(["EQ", "NE", "LT", "LE", "GT", "GE"])))
            values.append(_emit(g, "select", mask, a, b))
        else:
            scalar = rng.standard_normal(()).astype(dtype)
            values.append(_emit(g, "multiply", values[-1], _emit(
                g, "broadcast_in_dim", _const(g, scalar), broadcast_dimensions=[], shape=shape)))
    g.outputs = [values[i] for i in rng.integers(len(values), size=rng.integers(1, 4))]
    for out in range(len(g.outputs)):
        if rng.random() < 0.5 and len(g.aliases) < len(g.inputs):
            free = [i for i in range(len(g.inputs)) if i not in g.aliases.values()]
            g.aliases[out] = free[0]
    round_trip(g)


def test_hand_written_text_parses():
    g = parse("""
        // names need not be dense in hand-written text
        func @"my graph"(%10: float32[2,3], %7: bool[]) -> (float32[3,2]) {
          %x = transpose %10 {permutation = [1, 0]} : float32[3,2]
          return %x
        }""".replace("%x", "%99"))
    verify(g)
    assert g.name == "my graph" and g.nodes[0].attrs == {"permutation": (1, 0)}
    assert as_text(g).startswith('func @"my graph"(%0: float32[2,3], %1: bool[])')


@pytest.mark.parametrize("text, message", [
    ("func @main() -> () {\n  return\n} extra", "line 3, column 3: expected the end of the text"),
    ("func @main(%0: float32[2]) -> (float32[2]) {\n  return %1\n}",
     "line 2, column 10: %1 is not defined before this use"),
    ("func @main(%0: float8[2]) -> () {\n  return\n}", "unknown dtype"),
    ("func @main(%0: float32[2], %0: float32[2]) -> () {\n  return\n}", "%0 is defined twice"),
    ("func @main() -> (float32[2]) {\n  %0 = constant {value = dense<float32[2]>[1.0]} : "
     "float32[2]\n  return %0\n}", "dense<float32[2]> needs 2 elements, got 1"),
    ("func @main() -> (int32[1]) {\n  %0 = constant {value = dense<int32[1]>[1.5]} : "
     "int32[1]\n  return %0\n}", "bad int32 element"),
    ("func @main(%0: float32[2]) -> (float32[3]) {\n  return %0\n}",
     "returns (float32[2]) but its signature says (float32[3])"),
    ("func @main(%0: float32[2]) -> (float32[2]) {\n  %1:2 = negate %0 : float32[2]\n"
     "  return %1#0\n}", "negate has 1 result types but defines 2 values"),
    ("func @main(%0: float32[2]) -> (float32[2]) {\n  %1 = negate %0 : float32[2] ?\n}",
     "line 2, column 31: expected a node ([%N =] op operands ...) or return"),
    ("func @main(%0: float32[-1]) -> () {\n  return\n}", "negative dimension"),
    ("func @main() -> (float32[2]) {\n  %0 = constant {value = dense<float32[2]>[1.0, one]} : "
     "float32[2]\n  return %0\n}", "line 2, column 26: bad float32 element: 'one'"),
    ("func @main() -> (float32[2]) {\n  %0 = constant {value = dense<float32[2]>splat(1.0, 2.0)}"
     " : float32[2]\n  return %0\n}", "splat takes one element, got 2"),
    ("func @main() -> (float32[2]) {\n  %0 = constant {value = dense<float32[2]>[1.0, 2.0",
     "dense<float32[2]> is not closed"),
    ("func @main() -> (bool[1]) {\n  %0 = constant {value = dense<bool[1]>[1]} : bool[1]\n"
     "  return %0\n}", "bool elements must be true or false"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParseError, match=re.escape(message)) as info:
        parse(text)
    assert isinstance(info.value, NeedleError) and isinstance(info.value, ValueError)


def test_composite_without_outputs_round_trips():
    g = Graph()
    x = g.add_input(T(2))
    node = add_node(g, "composite", [x], {"name": "needle.sink"},
                    _sg("needle.sink", T(2), outputs=lambda dg, xs: []))
    assert node.outputs == []
    g.outputs = [x]
    text, _ = round_trip(g)
    assert '  composite %0 {name = "needle.sink"} : () {' in text


def test_comments_and_spacing_are_ignored():
    g = parse("""func @main(%0: int32[2]) -> (int32[2]) {   // a comment
      %1 = constant {value = dense<int32[2]>[ 1 ,2 ]}:int32[2]  // another
      %2 = add %0,%1 : int32[2]
      return %2 }""")
    verify(g)
    assert g.nodes[0].attrs["value"].tolist() == [1, 2]


def test_parse_does_not_verify():
    g = parse("func @main(%0: float32[2]) -> (float32[3]) {\n  %1 = negate %0 : float32[3]\n"
              "  return %1\n}")
    with pytest.raises(VerifyError, match="output 0 has type float32"):
        verify(g)


# ---------------------------------------------------------------------------------------
# verifier

def _chain():
    g = Graph()
    x = g.add_input(T(2, 3))
    a = _emit(g, "negate", x)
    b = _emit(g, "exponential", a)
    g.outputs = [b]
    return g, x, a, b


def _raises(g, message):
    with pytest.raises(VerifyError, match=re.escape(message)):
        verify(g)


def test_verify_returns_the_graph():
    g = every_op_graph()
    assert verify(g) is g


def test_verify_use_before_def():
    g, *_ = _chain()
    g.nodes.reverse()
    _raises(g, "node 0 (exponential): input 0 is used before it is defined (by node 1, negate)")


def test_verify_value_from_elsewhere():
    g, x, a, b = _chain()
    other = Graph()
    stranger = other.add_input(T(2, 3))
    g.nodes[1].inputs[0] = stranger
    _raises(g, "node 1 (exponential): input 0 (Value(%")
    _raises(g, "is not defined in this graph: neither a graph input nor an earlier node's output")


def test_verify_defined_twice():
    g, *_ = _chain()
    g.nodes.append(g.nodes[1])
    _raises(g, "node 2 (exponential): output 0 is defined twice")
    g, x, *_ = _chain()
    g.inputs.append(x)
    _raises(g, "input 1 is listed twice")
    g, x, a, b = _chain()
    g.inputs.append(a)
    _raises(g, "input 1 is the output of a negate node, not a graph input")


def test_verify_wrong_type():
    g, x, a, b = _chain()
    g.nodes[1] = Node("exponential", [a], [T(3, 2)])
    g.outputs = g.nodes[1].outputs
    _raises(g, "node 1 (exponential): output 0 has type float32[3,2], but the op gives "
               "float32[2,3]")
    g, x, a, b = _chain()
    g.nodes[1] = Node("exponential", [a], [T(2, 3), T(2, 3)])
    g.outputs = g.nodes[1].outputs[:1]
    _raises(g, "node 1 (exponential): has 2 outputs, its op gives 1")
    g = Graph()
    x = g.add_input(I32(4))
    g.outputs = g.add("exponential", [x], [I32(4)]).outputs
    _raises(g, "node 0 (exponential): operand has dtype int32; expected float32 or float64")


def test_verify_bad_attr_and_unknown_op():
    g, x, a, b = _chain()
    g.nodes[0].attrs["axis"] = 1
    _raises(g, "node 0 (negate): unknown attribute 'axis'; negate takes none")
    g = Graph()
    x = g.add_input(T(2, 3))
    g.outputs = g.add("transpose", [x], [T(3, 2)]).outputs
    _raises(g, "node 0 (transpose): missing attribute 'permutation' (a list of ints)")
    g.nodes[0].attrs["permutation"] = [1, 1]
    _raises(g, "node 0 (transpose): permutation [1, 1] is not a permutation")
    g.nodes[0].attrs["permutation"] = "10"
    _raises(g, "node 0 (transpose): attribute 'permutation' must be a list of ints, got '10'")
    g.nodes[0].op = "transpose_"
    _raises(g, "node 0 (transpose_): unknown op 'transpose_'")


def test_verify_negative_input_dimension():
    g = Graph()
    g.outputs = [g.add_input(T(-1))]
    _raises(g, "input 0 has a negative dimension: float32[-1]")


def test_verify_outputs_defined():
    g, x, a, b = _chain()
    g.outputs.append(Graph().add_input(T(1)))
    _raises(g, "output 1 (Value(%")
    _raises(g, "is not defined in this graph")


@pytest.mark.parametrize("aliases, message", [
    ({1: 0}, "alias 1: 0: output position 1 out of range (1 outputs)"),
    ({0: 2}, "alias 0: 2: input position 2 out of range (2 inputs)"),
    ({0: 1}, "alias 0: 1: output 0 has type float32[2,3] but input 1 has float32[3]"),
    ({-1: 0}, "output position -1 out of range"),
])
def test_verify_bad_alias(aliases, message):
    g, x, a, b = _chain()
    g.add_input(T(3))
    g.aliases = aliases
    _raises(g, message)


def test_verify_input_aliased_twice():
    g, x, a, b = _chain()
    g.outputs = [b, a]
    g.aliases = {0: 0, 1: 0}
    _raises(g, "alias 1: 0: input 0 is already aliased by output 0")
    g.aliases = {0: 0}
    verify(g)


def _composite_graph(decomposition, out_types=None):
    g = Graph()
    x = g.add_input(T(4, 3))
    node = g.add("composite", [x], out_types or [v.type for v in decomposition.outputs],
                 {"name": "needle.f"}, decomposition)
    g.outputs = node.outputs
    return g


def test_verify_composite_signature():
    ok = _sg("needle.f", T(4, 3), outputs=lambda dg, xs: [_emit(dg, "tanh", xs[0])])
    verify(_composite_graph(ok))
    _raises(_composite_graph(_sg("needle.f", T(3, 4))),
            "node 0 (composite needle.f): the decomposition takes (float32[3,4]) but the "
            "node's inputs are (float32[4,3])")
    _raises(_composite_graph(ok, [T(4, 3, dtype="float64")]),
            "node 0 (composite needle.f): output 0 has type float64[4,3], but the op gives "
            "float32[4,3]")
    _raises(_composite_graph(ok, [T(4, 3), T(4, 3)]),
            "node 0 (composite needle.f): has 2 outputs, its op gives 1")
    g = _composite_graph(ok)
    g.nodes[0].decomposition = None
    _raises(g, "node 0 (composite needle.f): a composite needs its decomposition (a Graph)")


def test_verify_composite_decomposition_recursively():
    bad = _sg("needle.f", T(4, 3), outputs=lambda dg, xs: [_emit(dg, "tanh", xs[0])])
    bad.nodes[0].attrs["permutation"] = [0]
    _raises(_composite_graph(bad), "node 0 (composite needle.f): decomposition: node 0 (tanh): "
                                   "unknown attribute 'permutation'")
    # a decomposition may not read the outer graph's values
    g = Graph()
    x = g.add_input(T(4, 3))
    dec = _sg("needle.f", T(4, 3), outputs=lambda dg, xs: [_emit(dg, "add", xs[0], x)])
    g.outputs = g.add("composite", [x], [T(4, 3)], {"name": "needle.f"}, dec).outputs
    _raises(g, "node 0 (composite needle.f): decomposition: node 0 (add): input 1")
    # nested composites name the path
    inner = _composite_graph(bad)
    outer = Graph()
    y = outer.add_input(T(4, 3))
    outer.outputs = outer.add("composite", [y], [T(4, 3)], {"name": "needle.outer"},
                              inner).outputs
    _raises(outer, "node 0 (composite needle.outer): decomposition: node 0 (composite "
                   "needle.f): decomposition: node 0 (tanh)")


def test_verify_decomposition_only_on_composite():
    g, x, a, b = _chain()
    g.nodes[0].decomposition = _sg("needle.f", T(2, 3))
    _raises(g, "node 0 (negate): only a composite carries a decomposition")


def test_verify_output_producer_recorded():
    g, x, a, b = _chain()
    g.nodes[0].outputs[0].index = 3
    _raises(g, "node 0 (negate): output 0 does not record this node as its producer")
