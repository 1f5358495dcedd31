"""What the trainer's NaN/Inf check costs: ResNet-50's training step with the check fused in, and without it.

    python -m benchmarks.finite_check [--batch 16] [--rounds 5] [--no-append]

Every training step reduces its new state (params, BatchNorm statistics, optimizer state, EMA) to one flag,
``fusionjax.checkpoints.all_finite``, which the trainer reads at each log step and before each save
(docs/reliability.md). This times the trainer's own step (``trainer.make_train_step``, SGD with momentum and an EMA,
so the state is its largest) with that flag and with a constant in its place, alternating, and the check alone as
a program of its own: the most the fused check can cost. The goal: at most 1% of a step.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, records, tables
from fusionjax import checkpoints
from fusionjax.configs import common
from fusionjax.train import data, trainer


def _step(batch: int, checked: bool):
    """A ``harness.Timed`` running the trainer's ResNet-50 step on one synthetic batch, with the check or not."""
    config = common.get_config()
    config.update(model="resnet50", batch_size=batch, eval_batch_size=batch, ema_decay=0.9999, num_train_steps=100)
    info = data.DatasetInfo(name="synthetic", num_classes=1000, image_shape=(224, 224, 3), num_train=100 * batch,
                            num_eval=batch)
    setup = trainer.make_setup(config, trainer.make_mesh(jax.devices()[:1]), info)
    rng = np.random.default_rng(0)
    batch_arrays = trainer.global_batch({"image": rng.normal(size=(batch, 224, 224, 3)).astype(np.float32),
                                         "label": rng.integers(0, 1000, batch).astype(np.int32)}, setup.mesh)
    holder = {"state": trainer.init_state(setup)}
    original = checkpoints.all_finite
    if not checked:
        checkpoints.all_finite = lambda tree: jnp.array(True)
    try:  # traced and compiled now, while the check is or is not in place
        train_step = trainer.make_train_step(setup).lower(holder["state"], batch_arrays).compile()
    finally:
        checkpoints.all_finite = original

    def run():
        holder["state"], metrics = train_step(holder["state"], batch_arrays)
        jax.block_until_ready(metrics)

    return harness.Timed("jax", "with the check" if checked else "without it", "train", run), holder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each, alternating (default 5)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    args = parser.parse_args(argv)
    harness.pin_to_cores()
    started, load_before = records.now(), harness.load_average()
    (checked, holder), (unchecked, _) = _step(args.batch, True), _step(args.batch, False)
    check = jax.jit(checkpoints.all_finite)
    alone = harness.Timed("jax", "the check alone", "check", lambda: jax.block_until_ready(check(holder["state"])))
    harness.time_rounds([checked, unchecked, alone], args.rounds)
    size = sum(x.nbytes for x in jax.tree_util.tree_leaves(holder["state"]))
    rows = [["resnet50", str(args.batch), f"{size / 2**20:.0f}", tables.ms(unchecked), tables.ms(checked),
             f"{100 * (checked.min_s / unchecked.min_s - 1):+.2f}%", tables.ms(alone),
             f"{100 * alone.min_s / unchecked.min_s:.2f}%"]]
    summary = tables.markdown(["model", "batch", "state MiB", "step without the check: ms, min (median)",
                               "with it fused", "difference, min", "the check alone: ms", "alone ÷ step, min"], rows)
    record = "\n".join([
        *records.header("the trainer's NaN/Inf check against a training step", "benchmarks.finite_check", argv,
                        started),
        f"- the trainer's step, SGD with momentum and an EMA, one device, float32, {args.rounds} timed calls of "
        f"each after one warm-up, alternating; load average before {load_before}, after {harness.load_average()}",
        "", summary, "", "Every call (ms):", "",
        *tables.raw_times("resnet50", [unchecked, checked, alone]), ""])
    print(record)
    if not args.no_append:
        path = records.publish(records.RESULTS, started, "finite-check", "the NaN/Inf check's cost", record, summary)
        print(f"recorded in {path} and {records.RESULTS}")


if __name__ == "__main__":
    main()
