"""Build every registered model and print name / parameters / GFLOPs / output shape.

    python -m fusionjax.demo [PATTERN]     # e.g. 'resnet*'; or the console script fusionjax-demo

Models are traced, not run: parameters come from ``jax.eval_shape`` and FLOPs from XLA's cost analysis of the
lowered (uncompiled) forward pass of the plain ops (``kernels.use('reference')``: the model's arithmetic, not a
platform's rewrite of it), so the table costs seconds, not an ImageNet-sized forward per model.
"""

import argparse
import math

import jax
import jax.numpy as jnp

from fusionjax import kernels
from fusionjax.models import create_model, get_model_spec, list_models


def describe(name: str) -> tuple[int, float, tuple[int, ...]]:
    """(parameters, GFLOPs of one forward pass at the model's own input size, output shape) for batch 1."""
    spec = get_model_spec(name)
    model = create_model(name)
    x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    params = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(variables["params"]))
    with kernels.use("reference"):
        flops = jax.jit(model.apply).lower(variables, x).cost_analysis()["flops"]
    return params, flops / 1e9, jax.eval_shape(model.apply, variables, x).shape


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments, checked; ``names`` are the models to describe."""
    parser = argparse.ArgumentParser(prog="fusionjax-demo", description=__doc__.split("\n")[0])
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter of model names (default: all)")
    args = parser.parse_args(argv)
    args.names = list_models(args.pattern)
    if not args.names:
        parser.error(f"no model matches {args.pattern!r}; known models: {', '.join(list_models())}")
    return args


def main(argv: list[str] | None = None) -> None:
    names = parse(argv).names
    print(f"{'model':<22} {'input':>9} {'params':>13} {'GFLOPs':>8} {'MACs (G)':>9}  output  source")
    for name in names:
        spec = get_model_spec(name)
        params, gflops, shape = describe(name)
        size = f"{spec.input_size}x{spec.input_size}"
        print(f"{name:<22} {size:>9} {params:>13,d} {gflops:>8.2f} {gflops / 2:>9.2f}  {shape}  {spec.source}",
              flush=True)
    print("GFLOPs: XLA's count (a multiply-add is 2 FLOPs); torchvision's docs list multiply-adds (the MACs column).")


if __name__ == "__main__":
    main()
