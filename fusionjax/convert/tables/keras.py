"""Keras 3 applications' weight paths (``layer/variable``) ↔ fusionjax variable paths.

keras.applications.ResNet50/101/152 (family ``resnet``), ResNet50V2/101V2/152V2 (``preact_resnet``) and
DenseNet121/169/201 (``densenet``). Keras names stages from ``conv2`` and blocks from ``block1``; the zoo from
``layer1`` and ``_0``: hence the ``+1`` offsets. Keras kernels are HWIO and (in, out) already.
"""

from fusionjax.convert.mapping import SAME, SAME_2D, VECTOR, KeyRule


def _conv(source: str, jax: str, family: str, bias: bool = True) -> list[KeyRule]:
    rules = [KeyRule(f"{source}/kernel", f"params/{jax}/kernel", SAME, family=family)]
    return rules + [KeyRule(f"{source}/bias", f"params/{jax}/bias", VECTOR, family=family)] if bias else rules


def _batchnorm(source: str, jax: str, family: str) -> list[KeyRule]:
    return [
        KeyRule(f"{source}/gamma", f"params/{jax}/scale", VECTOR, family=family),
        KeyRule(f"{source}/beta", f"params/{jax}/bias", VECTOR, family=family),
        KeyRule(f"{source}/moving_mean", f"batch_stats/{jax}/mean", VECTOR, family=family),
        KeyRule(f"{source}/moving_variance", f"batch_stats/{jax}/var", VECTOR, family=family),
    ]


def _dense(jax: str, family: str) -> list[KeyRule]:
    return [KeyRule("predictions/kernel", f"params/{jax}/kernel", SAME_2D, family=family),
            KeyRule("predictions/bias", f"params/{jax}/bias", VECTOR, family=family)]


_BLOCK, _JAX_BLOCK = "conv{stage+1}_block{block+1}", "layer{stage}_{block}"
_LAYER, _JAX_LAYER = "conv{block+1}_block{layer}", "denseblock{block}/denselayer{layer}"
KEY_TABLE: tuple[KeyRule, ...] = (
    # ResNet v1: every conv has a bias; the projection shortcut is block 0
    *_conv("conv1_conv", "conv1", "resnet"),
    *_batchnorm("conv1_bn", "bn1", "resnet"),
    *_conv(_BLOCK + "_0_conv", _JAX_BLOCK + "/downsample_conv", "resnet"),
    *_batchnorm(_BLOCK + "_0_bn", _JAX_BLOCK + "/downsample_bn", "resnet"),
    *_conv(_BLOCK + "_{n}_conv", _JAX_BLOCK + "/conv{n}", "resnet"),
    *_batchnorm(_BLOCK + "_{n}_bn", _JAX_BLOCK + "/bn{n}", "resnet"),
    *_dense("fc", "resnet"),
    # ResNet v2: pre-activation; convs followed by a BatchNorm have no bias
    *_conv("conv1_conv", "conv1", "preact_resnet"),
    *_batchnorm(_BLOCK + "_preact_bn", _JAX_BLOCK + "/bn1", "preact_resnet"),
    *_conv(_BLOCK + "_0_conv", _JAX_BLOCK + "/shortcut_conv", "preact_resnet"),
    *_conv(_BLOCK + "_1_conv", _JAX_BLOCK + "/conv1", "preact_resnet", bias=False),
    *_batchnorm(_BLOCK + "_1_bn", _JAX_BLOCK + "/bn2", "preact_resnet"),
    *_conv(_BLOCK + "_2_conv", _JAX_BLOCK + "/conv2", "preact_resnet", bias=False),
    *_batchnorm(_BLOCK + "_2_bn", _JAX_BLOCK + "/bn3", "preact_resnet"),
    *_conv(_BLOCK + "_3_conv", _JAX_BLOCK + "/conv3", "preact_resnet"),
    *_batchnorm("post_bn", "final_bn", "preact_resnet"),
    *_dense("fc", "preact_resnet"),
    # DenseNet: a dense layer is BN (0) → 1×1 conv (1) → BN (1) → 3×3 conv (2); transitions are pool2..4
    *_conv("conv1_conv", "conv0", "densenet", bias=False),
    *_batchnorm("conv1_bn", "norm0", "densenet"),
    *_batchnorm(_LAYER + "_0_bn", _JAX_LAYER + "/norm1", "densenet"),
    *_conv(_LAYER + "_1_conv", _JAX_LAYER + "/conv1", "densenet", bias=False),
    *_batchnorm(_LAYER + "_1_bn", _JAX_LAYER + "/norm2", "densenet"),
    *_conv(_LAYER + "_2_conv", _JAX_LAYER + "/conv2", "densenet", bias=False),
    *_batchnorm("pool{block+1}_bn", "transition{block}/norm", "densenet"),
    *_conv("pool{block+1}_conv", "transition{block}/conv", "densenet", bias=False),
    *_batchnorm("bn", "norm5", "densenet"),
    *_dense("classifier", "densenet"),
)
