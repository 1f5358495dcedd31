"""A small, deterministic training loop for the claims: SGD with Nesterov momentum, warm-up then cosine decay,
weight decay on kernels, no augmentation; the seed draws the initialization and the order of the batches.

Training error and loss are measured on the whole training split in evaluation mode (BatchNorm's running
statistics), test error on the test split, at evenly spaced steps.
"""

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fusionjax.analysis.gradients import cross_entropy
from fusionjax.claims.data import Dataset

EVAL_BATCH = 500


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: int
    batch_size: int
    learning_rate: float = 0.1
    weight_decay: float = 5e-4
    evals: int = 8  # measurement points along the way, the last at the final step
    warmup: float = 0.05  # share of the steps over which the learning rate rises linearly from 0

    def describe(self) -> str:
        return (f"{self.steps} steps of batch {self.batch_size} (SGD, Nesterov 0.9, lr {self.learning_rate} "
                f"after a {self.warmup_steps}-step linear warm-up, cosine decay, weight decay {self.weight_decay:g})")

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.steps * self.warmup))


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained model: its curves at ``steps`` and its final variables."""

    steps: tuple[int, ...]
    train_loss: tuple[float, ...]
    train_error: tuple[float, ...]
    test_error: tuple[float, ...]
    variables: dict
    seconds: float


def _kernels(params):
    """Weight decay's mask: convolution and dense kernels, not biases or norm parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


class Trainer:
    """The compiled initialization, training step and evaluation of one model on one image shape, reused for
    every seed and data set of that shape."""

    def __init__(self, model: nn.Module, budget: Budget, image_shape: tuple[int, ...]):
        self.model, self.budget = model, budget
        schedule = optax.warmup_cosine_decay_schedule(0.0, budget.learning_rate, budget.warmup_steps,
                                                      budget.steps)
        self.optimizer = optax.chain(optax.add_decayed_weights(budget.weight_decay, mask=_kernels),
                                     optax.sgd(schedule, momentum=0.9, nesterov=True))
        example = jnp.zeros((1, *image_shape), jnp.float32)
        self._init = jax.jit(lambda key: model.init(key, example, train=False))
        self._step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self._evaluate = jax.jit(self._eval_batch)

    def _train_step(self, variables, opt_state, images, labels):
        def loss_of(params):
            logits, updates = self.model.apply({**variables, "params": params}, images, train=True,
                                               mutable=["batch_stats"])
            return cross_entropy(logits, labels), updates

        (loss, updates), grads = jax.value_and_grad(loss_of, has_aux=True)(variables["params"])
        changes, opt_state = self.optimizer.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], changes), **updates}, opt_state, loss

    def _eval_batch(self, variables, images, labels, mask):
        logits = self.model.apply(variables, images, train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        wrong = jnp.argmax(logits, -1) != labels
        return jnp.sum(losses * mask), jnp.sum(wrong * mask)

    def evaluate(self, variables: dict, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(mean loss, error rate) over all ``images``, in fixed-size batches (one compiled program)."""
        total_loss = total_wrong = 0.0
        for start in range(0, len(images), EVAL_BATCH):
            x, y = images[start:start + EVAL_BATCH], labels[start:start + EVAL_BATCH]
            pad = EVAL_BATCH - len(x)
            mask = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(pad, y.dtype)])
            loss, wrong = self._evaluate(variables, x, y, mask)
            total_loss, total_wrong = total_loss + float(loss), total_wrong + float(wrong)
        return total_loss / len(images), total_wrong / len(images)

    def train(self, data: Dataset, seed: int) -> Run:
        budget, started = self.budget, time.perf_counter()
        if len(data.train_labels) < budget.batch_size:
            raise ValueError(f"{data.name}: {len(data.train_labels)} training images, fewer than one batch "
                             f"of {budget.batch_size}.")
        variables = self._init(jax.random.key(seed, impl="rbg"))  # XLA's generator: less to compile than threefry
        opt_state = self.optimizer.init(variables["params"])
        rng = np.random.default_rng(seed)
        eval_at = set(np.linspace(0, budget.steps, budget.evals + 1).round().astype(int)[1:])
        per_epoch = len(data.train_labels) // budget.batch_size
        curves = {"steps": [], "train_loss": [], "train_error": [], "test_error": []}
        order = rng.permutation(len(data.train_labels))
        for step in range(1, budget.steps + 1):
            batch = (step - 1) % per_epoch
            if batch == 0 and step > 1:
                order = rng.permutation(len(data.train_labels))
            index = order[batch * budget.batch_size:(batch + 1) * budget.batch_size]
            variables, opt_state, _ = self._step(variables, opt_state, data.train_images[index],
                                                 data.train_labels[index])
            if step in eval_at:
                train_loss, train_error = self.evaluate(variables, data.train_images, data.train_labels)
                _, test_error = self.evaluate(variables, data.test_images, data.test_labels)
                for name, value in zip(curves, (step, train_loss, train_error, test_error)):
                    curves[name].append(value)
        return Run(**{name: tuple(values) for name, values in curves.items()}, variables=variables,
                   seconds=time.perf_counter() - started)


def trained(ctx, label: str, build, data: Dataset, budget: Budget, seeds) -> list[Run]:
    """The runs of model ``label`` (made by ``build()``) on ``data``, one per seed, trained once per claims run:
    claims that share a model, data set and budget share the runs, and the compiled step serves every seed."""
    trainer = ctx.cached(("trainer", label, data.image_shape, budget),
                         lambda: Trainer(build(), budget, data.image_shape))
    return [ctx.cached(("run", label, data.name, budget, seed), lambda seed=seed: trainer.train(data, seed))
            for seed in seeds]
