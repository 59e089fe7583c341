"""MLP.to_onnx: the model in evaluation mode as an ONNX graph (Gemm layers, the activations,
the loss's link), built with the optional ``onnx`` package (``pip install fastmlp[onnx]``).

Graph, for input ``X`` of shape (N, n_features) in the model's dtype:
  hidden layer:  h = act(Gemm(h, W', b'))    batch norm folded into W', b' with the running
                                             statistics; dropout is the identity at inference
  cross_entropy: probabilities = Softmax(logits), label = ArgMax(logits)          (N, C), (N,)
  bce:           probabilities = Sigmoid(logits), label = probabilities >= 0.5    (N, K) each
  mse:           predictions = logits                                             (N, D)
  poisson:       predictions = Exp(logits), the predicted means                   (N, D)
  gaussian_nll:  mean = Gemm(h, W_mean, b_mean), variance = Exp(Gemm(h, W_logvar, b_logvar))
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Protocol, Tuple

import numpy as np

from ._files import PathLike, write_atomically


class ExportableModel(Protocol):
    """What the export reads of a model (fastmlp.MLP has it; this module never imports mlp,
    which imports it when to_onnx is called)."""

    _network: Any
    loss: str
    dtype: np.dtype
    layer_sizes: List[int]
    activations: List[str]
    leaky_relu_slope: float

    def _check_fitted(self) -> None: ...

# MLP leaves the core's batch norm epsilon at its default.
BATCH_NORM_EPS = 1e-5

# Opset 17 and IR version 8: understood by onnxruntime >= 1.13 and most other runtimes.
OPSET = 17
IR_VERSION = 8


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("MLP.to_onnx needs the onnx package: pip install fastmlp[onnx] "
                          "(or pip install onnx)") from None
    return onnx


def folded_layers(model: ExportableModel) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(W, b) per dense layer in evaluation mode, batch norm folded into the hidden ones.

    Batch norm after a dense layer is affine at inference:
    gamma * (x W + b - mean) / sqrt(var + eps) + beta = x (W * s) + (b - mean) * s + beta,
    with s = gamma / sqrt(var + eps) per output column. Computed in float64, then cast.
    """
    network = model._network
    params = network.params.astype(np.float64)
    running_mean = network.running_mean.astype(np.float64)
    running_var = network.running_var.astype(np.float64)
    layers = []
    running_offset = 0
    for layer in network.layers:
        fan_in, fan_out = layer["fan_in"], layer["fan_out"]
        weight = params[layer["weight"]:layer["weight"] + fan_in * fan_out].reshape(fan_in, fan_out)
        bias = params[layer["bias"]:layer["bias"] + fan_out]
        if layer["gamma"] >= 0:
            gamma = params[layer["gamma"]:layer["gamma"] + fan_out]
            beta = params[layer["beta"]:layer["beta"] + fan_out]
            mean = running_mean[running_offset:running_offset + fan_out]
            var = running_var[running_offset:running_offset + fan_out]
            running_offset += fan_out
            scale = gamma / np.sqrt(var + BATCH_NORM_EPS)
            weight, bias = weight * scale, (bias - mean) * scale + beta
        layers.append((weight.astype(model.dtype), bias.astype(model.dtype)))
    return layers


class _GraphBuilder:
    """Collects nodes and initializers, naming intermediate tensors uniquely."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx, self.helper = onnx, onnx.helper
        self.tensor_type = onnx.TensorProto.DOUBLE if dtype == np.float64 else onnx.TensorProto.FLOAT
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self.count = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: List[str], output: str = "", **attributes: Any) -> str:
        if not output:
            self.count += 1
            output = f"{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def dense(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str, output: str = "") -> str:
        """Gemm: x (N, IN) @ weight (IN, OUT) + bias (OUT)."""
        return self.node("Gemm", [x, self.constant(f"{name}_weight", weight),
                                  self.constant(f"{name}_bias", bias)], output)

    def activation(self, x: str, name: str, slope: float, dtype: np.dtype) -> str:
        if name == "identity":
            return x
        if name == "sigmoid":
            return self.node("Sigmoid", [x])
        if name == "tanh":
            return self.node("Tanh", [x])
        if name == "relu":
            return self.node("Relu", [x])
        if name == "leaky_relu":
            return self.leaky_relu(x, slope, dtype)
        return self.gelu(x, dtype)

    def leaky_relu(self, x: str, slope: float, dtype: np.dtype) -> str:
        """LeakyRelu's alpha is a float32 attribute; a float64 graph spells out
        where(x > 0, x, slope * x) to keep the slope's double precision."""
        if dtype != np.float64:
            return self.node("LeakyRelu", [x], alpha=slope)
        positive = self.node("Greater", [x, self.scalar("zero", 0.0, dtype)])
        return self.node("Where", [positive, x, self.node("Mul", [x, self.scalar("slope", slope, dtype)])])

    def gelu(self, x: str, dtype: np.dtype) -> str:
        """Exact GELU, x * (1 + erf(x / sqrt 2)) / 2. onnxruntime has no double Erf, so in a
        float64 graph erf alone runs in float32 (its value has a relative error near 1e-7)."""
        scaled = self.node("Mul", [x, self.scalar("inv_sqrt2", 1 / math.sqrt(2), dtype)])
        if dtype == np.float64:
            as_float = self.node("Cast", [scaled], to=self.onnx.TensorProto.FLOAT)
            erf = self.node("Cast", [self.node("Erf", [as_float])], to=self.tensor_type)
        else:
            erf = self.node("Erf", [scaled])
        one_plus = self.node("Add", [erf, self.scalar("one", 1.0, dtype)])
        half_x = self.node("Mul", [x, self.scalar("half", 0.5, dtype)])
        return self.node("Mul", [half_x, one_plus])

    def scalar(self, name: str, value: float, dtype: np.dtype) -> str:
        if not any(initializer.name == name for initializer in self.initializers):
            self.constant(name, np.array(value, dtype=dtype))
        return name

    def output_info(self, name: str, tensor_type: int, shape: List[Any]) -> Any:
        return self.helper.make_tensor_value_info(name, tensor_type, shape)


def build_model(model: ExportableModel) -> Any:
    """The ONNX ModelProto of a fitted MLP (checked by onnx.checker)."""
    onnx = _import_onnx()
    dtype = model.dtype
    builder = _GraphBuilder(onnx, dtype)
    layers = folded_layers(model)
    h = "X"
    for index, ((weight, bias), activation) in enumerate(zip(layers[:-1], model.activations)):
        h = builder.dense(h, weight, bias, f"layer{index}")
        h = builder.activation(h, activation, model.leaky_relu_slope, dtype)
    outputs = _output_heads(builder, model, h, layers[-1])
    graph = builder.helper.make_graph(
        builder.nodes, "fastmlp_mlp",
        [builder.output_info("X", builder.tensor_type, ["N", model.layer_sizes[0]])],
        [builder.output_info(name, tensor_type, shape) for name, tensor_type, shape in outputs],
        builder.initializers)
    proto = builder.helper.make_model(
        graph, opset_imports=[builder.helper.make_opsetid("", OPSET)], producer_name="fastmlp",
        producer_version=_version(), doc_string=repr(model))
    proto.ir_version = IR_VERSION
    onnx.helper.set_model_props(proto, _metadata(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _output_heads(builder: _GraphBuilder, model: ExportableModel, h: str,
                  last: Tuple[np.ndarray, np.ndarray]) -> List[Tuple[str, int, List[Any]]]:
    """Nodes after the last hidden layer; returns (name, element type, shape) per output."""
    weight, bias = last
    width = model.layer_sizes[-1]
    values = builder.tensor_type
    int64 = builder.onnx.TensorProto.INT64
    if model.loss == "cross_entropy":
        logits = builder.dense(h, weight, bias, "output")
        builder.node("Softmax", [logits], "probabilities", axis=1)
        builder.node("ArgMax", [logits], "label", axis=1, keepdims=0)
        return [("label", int64, ["N"]), ("probabilities", values, ["N", width])]
    if model.loss == "bce":
        logits = builder.dense(h, weight, bias, "output")
        probabilities = builder.node("Sigmoid", [logits], "probabilities")
        half = builder.scalar("half", 0.5, model.dtype)
        builder.node("Cast", [builder.node("GreaterOrEqual", [probabilities, half])], "label", to=int64)
        return [("label", int64, ["N", width]), ("probabilities", values, ["N", width])]
    if model.loss == "mse":
        builder.dense(h, weight, bias, "output", "predictions")
        return [("predictions", values, ["N", width])]
    if model.loss == "poisson":  # the last layer gives log-means
        log_mean = builder.dense(h, weight, bias, "log_mean")
        builder.node("Exp", [log_mean], "predictions")
        return [("predictions", values, ["N", width])]
    # gaussian_nll: the output layer's first `width` columns are means, the rest log-variances.
    builder.dense(h, weight[:, :width], bias[:width], "mean", "mean")
    log_variance = builder.dense(h, weight[:, width:], bias[width:], "log_variance")
    builder.node("Exp", [log_variance], "variance")
    return [("mean", values, ["N", width]), ("variance", values, ["N", width])]


def _metadata(model: ExportableModel) -> Dict[str, str]:
    return {"loss": model.loss, "layer_sizes": ",".join(map(str, model.layer_sizes)),
            "activations": ",".join(model.activations), "dtype": model.dtype.name}


def _version() -> str:
    from . import __version__
    return __version__


def to_onnx(model: ExportableModel, path: PathLike) -> None:
    """Build and check the graph, then write it atomically; see MLP.to_onnx."""
    model._check_fitted()
    serialized = build_model(model).SerializeToString()
    write_atomically(path, lambda file: file.write(serialized))
