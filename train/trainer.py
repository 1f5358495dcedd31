"""The trainer: one jit-compiled train step over a mesh of every device, Orbax checkpoints, exact resume.

Read top to bottom: the train state and its shardings; what runs on device (the train step, the eval step); the
host loop (``train_and_evaluate``); evaluating a saved run (``evaluate_workdir``) or a converted checkpoint.
The workdir and its checkpoints are ``workdir``'s, the input pipelines ``data``'s, the optimizer ``optim``'s, the
weights a run starts from and the parts it freezes ``finetune``'s.

Parallelism. The mesh has one axis, ``'data'``, over ``jax.devices()`` (all hosts). The batch is sharded on it;
params, BatchNorm statistics, optimizer state and EMA are replicated, or with ``config.fsdp`` sharded on their
largest axis divisible by the device count. jit inserts the collectives, so BatchNorm statistics are those of the
global batch; ``config.bn_groups = G`` instead splits the batch into G groups and ``vmap``s the model over them,
so each group normalizes with its own statistics (what pmap-era recipes did per device), and the running
statistics the groups produce are averaged.

Steps. ``state.step`` counts micro-steps, i.e. training batches consumed: it is the data position saved in every
checkpoint, and the random key of a step is ``fold_in(seed key, step)``, so a resumed run sees the same batches
and random numbers as an uninterrupted one. With ``config.grad_accum_steps = k`` a micro-batch holds
``batch_size / k`` examples, ``optax.MultiSteps`` applies the mean gradient every k micro-steps, and BatchNorm
running statistics are updated at every micro-step from that micro-batch (as in PyTorch accumulation loops).
The user's guide: ``docs/training.md``.
"""

import dataclasses
import functools
import math
import signal
import time
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import fusionjax
from fusionjax import cards, checkpoints
from fusionjax.arguments import ModelArgumentError
from fusionjax.train import data, finetune, metrics as metrics_lib, optim, workdir as workdir_lib
from fusionjax.train.data.transforms import Transform
from fusionjax.train.errors import ConfigError, RunNotFoundError, TrainingDivergedError
from fusionjax.train.mixup import mix_batch

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # micro-steps done = training batches consumed
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any  # {'params', 'batch_stats'} averaged with config.ema_decay, or None

    def variables(self, ema: bool = False) -> dict:
        source = self.ema if ema else {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": source["params"], "batch_stats": source["batch_stats"]}


# ----------------------------------------------------------------------------------------------------------------
# Model, optimizer and shardings.


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything derived from a config and the data set, before any state exists."""

    config: ml_collections.ConfigDict
    info: data.DatasetInfo
    model: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: Mesh
    micro_batch_size: int
    updates_per_epoch: int
    total_steps: int  # micro-steps
    frozen_norms: frozenset = frozenset()  # config.freeze_batch_stats: norm layers kept as loaded (finetune)


def make_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def build_model(config, num_classes: int):
    if config.dtype not in DTYPES:
        raise ConfigError(f"config.dtype={config.dtype!r} is not one of {', '.join(DTYPES)}.")
    # A config read back from config.json holds lists where the config file had tuples (stage_sizes, ...).
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_overrides.to_dict().items()}
    try:
        return fusionjax.create_model(config.model, num_classes=num_classes, dtype=DTYPES[config.dtype], **overrides)
    except fusionjax.UnknownModelError as error:
        raise ConfigError(f"config.model: {error.args[0]}") from error
    except (TypeError, ModelArgumentError) as error:  # an unknown option (with the ones the model takes), a bad value
        raise ConfigError(f"config.model_overrides: {error}") from error


def make_setup(config, mesh: Mesh | None = None, info: data.DatasetInfo | None = None,
               training: bool = True) -> Setup:
    """Check the config against the data set and devices, and build model, optimizer and mesh.

    ``training=False`` (evaluating a saved run, perhaps on other devices) checks only what evaluation uses.
    """
    mesh = mesh or make_mesh()
    info = info or data.dataset_info(config)
    accum = config.grad_accum_steps
    if accum < 1 or config.batch_size % accum:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of "
                          f"config.grad_accum_steps={accum} (each micro-batch holds batch_size / grad_accum_steps).")
    micro = config.batch_size // accum
    checked = [("batch_size / grad_accum_steps", micro)] if training else []
    for name, size in (*checked, ("eval_batch_size", config.eval_batch_size)):
        if size % mesh.size:
            hint = "." if training else " (fusionjax-eval --batch_size)."
            raise ConfigError(f"config.{name} = {size} must be divisible by the {mesh.size} devices; "
                              f"pick a multiple of {mesh.size}{hint}")
    if training and config.bn_groups and micro % config.bn_groups:
        raise ConfigError(f"config.bn_groups={config.bn_groups} must divide the micro-batch of {micro} examples.")
    updates_per_epoch = info.num_train // config.batch_size
    if updates_per_epoch == 0:
        raise ConfigError(f"config.batch_size={config.batch_size} exceeds the {info.num_train} training examples.")
    total_updates = config.num_train_steps or math.ceil(config.num_epochs * updates_per_epoch)
    model = build_model(config, info.num_classes)
    roles, frozen = None, frozenset()
    if config.freeze or config.head_lr_multiplier != 1:
        layout = finetune.ModelLayout.of(model, info.image_shape)
        frozen = layout.frozen_paths(config.freeze)
        roles = finetune.parameter_roles(layout, frozen)
    tx, schedule = optim.make_optimizer(config, updates_per_epoch, total_updates, roles)
    norms = finetune.frozen_norms(frozen) if config.freeze_batch_stats else frozenset()
    return Setup(config, info, model, tx, schedule, mesh, micro, updates_per_epoch, total_updates * accum, norms)


def _fsdp_spec(shape: tuple[int, ...], num_devices: int) -> P:
    """Shard the largest axis the devices divide; replicate arrays with none."""
    axes = [i for i, n in enumerate(shape) if n % num_devices == 0 and n >= num_devices]
    if not axes:
        return P()
    axis = max(axes, key=lambda i: shape[i])
    return P(*([None] * axis + ["data"]))


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, mesh.size) if fsdp else P()), abstract_state)


def state_from_variables(setup: Setup, variables) -> TrainState:
    """A train state at step 0 around ``{'params', 'batch_stats'}`` (freshly initialized, or e.g. converted)."""
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = {"params": params, "batch_stats": batch_stats} if setup.config.ema_decay else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=setup.tx.init(params), ema=ema)


def _init_fn(setup: Setup):
    def init(key):
        image = jnp.zeros((1, *setup.info.image_shape), jnp.float32)
        return state_from_variables(setup, setup.model.init({"params": key}, image, train=False))

    return init


def init_state(setup: Setup, variables=None) -> TrainState:
    """The state in its shardings: initialized from ``config.seed``, or around ``variables`` when given."""
    if variables is not None:
        make, argument = functools.partial(state_from_variables, setup), variables
    else:
        make, argument = _init_fn(setup), jax.random.key(setup.config.seed)
    shardings = state_shardings(jax.eval_shape(make, argument), setup.mesh, setup.config.fsdp)
    # XLA:CPU compiles the non-partitionable threefry several times faster; the values do not depend on the
    # sharding either way.
    with jax.threefry_partitionable(False):
        return jax.jit(make, out_shardings=shardings)(argument)


def abstract_state(setup: Setup) -> TrainState:
    """The state's shapes, dtypes and shardings on ``setup.mesh``: the restore target on any device count."""
    shapes = jax.eval_shape(_init_fn(setup), jax.random.key(setup.config.seed))
    shardings = state_shardings(shapes, setup.mesh, setup.config.fsdp)
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


# ----------------------------------------------------------------------------------------------------------------
# On device.


def _model_input(images: jax.Array, transform: Transform | None) -> jax.Array:
    return images if transform is None else transform.normalize_on_device(images)


def _top_k_correct(logits, labels, k: int):
    k = min(k, logits.shape[-1])
    return jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(setup: Setup, transform: Transform | None = None):
    """``train_step(state, batch) -> (state, metrics)``, jit-compiled over ``setup.mesh``. With ``transform``
    (the data's) ``batch['image']`` holds uint8 pixels that the step normalizes; without, the model's input."""
    config, model, tx, schedule = setup.config, setup.model, setup.tx, setup.schedule
    num_classes, groups, accum = setup.info.num_classes, config.bn_groups, config.grad_accum_steps
    base_key = jax.random.key(config.seed)
    abstract = abstract_state(setup)
    frozen_statistics = finetune.statistics_mask(abstract.batch_stats, setup.frozen_norms)

    def forward(params, batch_stats, images, key):
        def apply(x, k):
            with nn.intercept_methods(finetune.running_statistics_for(setup.frozen_norms)):
                return model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                   mutable=["batch_stats"], rngs={"dropout": k})

        if not groups:
            logits, updates = apply(images, key)
            return logits, updates["batch_stats"]
        grouped = images.reshape(groups, images.shape[0] // groups, *images.shape[1:])
        logits, updates = jax.vmap(apply)(grouped, jax.random.split(key, groups))
        # Each group's running statistics, averaged: what pmap recipes synchronize before evaluating.
        return logits.reshape(-1, num_classes), jax.tree_util.tree_map(lambda s: s.mean(0), updates["batch_stats"])

    def train_step(state: TrainState, batch: dict):
        mix_key, dropout_key = jax.random.split(jax.random.fold_in(base_key, state.step))
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), config.label_smoothing)
        images = _model_input(batch["image"], transform)
        images, targets = mix_batch(images, targets, mix_key, config.mixup_alpha, config.cutmix_alpha)

        def loss_fn(params):
            logits, batch_stats = forward(params, state.batch_stats, images, dropout_key)
            return optax.softmax_cross_entropy(logits, targets).mean(), (logits, batch_stats)

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if setup.frozen_norms:  # exactly as loaded, whatever the group averaging rounds
            batch_stats = jax.tree_util.tree_map(lambda keep, old, new: old if keep else new, frozen_statistics,
                                                 state.batch_stats, batch_stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if ema is not None:
            averaged = optax.incremental_update({"params": params, "batch_stats": batch_stats}, ema,
                                                1 - config.ema_decay)
            updated = tx.has_updated(opt_state) if accum > 1 else True
            ema = jax.tree_util.tree_map(lambda new, old: jnp.where(updated, new, old), averaged, ema)
        labels = jnp.argmax(targets, -1)  # the dominant label of a mixed example
        step_metrics = {
            "loss": loss,
            "top1": _top_k_correct(logits, labels, 1).mean(),
            "top5": _top_k_correct(logits, labels, 5).mean(),
            "learning_rate": schedule(state.step // accum),
        }
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state, ema=ema)
        # BatchNorm's running statistics can overflow while the loss stays finite: every value is checked.
        step_metrics["finite"] = checkpoints.all_finite(new_state)
        return new_state, step_metrics

    shardings = jax.tree_util.tree_map(lambda x: x.sharding, abstract)
    return jax.jit(train_step, in_shardings=(shardings, batch_sharding(setup.mesh)),
                   out_shardings=(shardings, NamedSharding(setup.mesh, P())), donate_argnums=0)


def make_eval_step(model, mesh: Mesh, transform: Transform | None = None):
    """``eval_step(variables, batch) -> sums`` of loss, top-1, top-5 and count over the real (mask 1) examples,
    and per class (``class_top1``, ``class_count``: one entry per class). ``transform``: as in ``make_train_step``;
    padding rows, zero pixels, normalize to nonzero values that the mask leaves out."""

    def eval_step(variables, batch):
        logits = model.apply(variables, _model_input(batch["image"], transform), train=False)
        mask, labels = batch["mask"], batch["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        top1 = _top_k_correct(logits, labels, 1) * mask
        classes = jax.nn.one_hot(labels, logits.shape[-1])
        return {"loss": (loss * mask).sum(), "top1": top1.sum(),
                "top5": (_top_k_correct(logits, labels, 5) * mask).sum(), "count": mask.sum(),
                "class_top1": top1 @ classes, "class_count": mask @ classes}

    return jax.jit(eval_step, out_shardings=NamedSharding(mesh, P()))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """This host's rows of the batch → global arrays sharded on 'data' (multi-host: every host its own rows)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def evaluate(description: data.DataDescription, batch_size: int, mesh: Mesh, eval_step, variables,
             per_class: bool = False) -> dict[str, float]:
    """Loss, top-1 and top-5 over the eval split of ``description`` (padding excluded), with an ``eval_step`` made
    with ``description.eval_transform``; with ``per_class`` also ``per_class``: ``{class name: {"top1", "count"}}``
    for every class the split holds."""
    totals = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
    class_top1 = class_count = 0.0
    for batch in data.eval_batches(description, global_batch_size=batch_size, process_index=jax.process_index(),
                                   process_count=jax.process_count(), normalized=False):
        sums = jax.device_get(eval_step(variables, global_batch(batch, mesh)))
        for k in totals:
            totals[k] += float(sums[k])
        class_top1, class_count = class_top1 + sums["class_top1"], class_count + sums["class_count"]
    count = totals.pop("count")
    result = {k: v / count for k, v in totals.items()}
    if per_class:
        result["per_class"] = {name: {"top1": float(class_top1[i] / class_count[i]), "count": int(class_count[i])}
                               for i, name in enumerate(description.classes) if class_count[i]}
    return result


# ----------------------------------------------------------------------------------------------------------------
# The host loop.


class _Sigterm:
    """Turns SIGTERM (preemption) into a flag the loop checks after each step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() == 1:  # multi-host runs stop at Orbax's preemption sync point instead
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _TrainLog:
    """Collects per-step metrics on device and turns them into logged means; stops on a NaN/Inf loss or state.

    ``input_wait`` is the fraction of the interval's wall time the loop spent blocked on the next batch: the device
    idles for about that share, so a value near 0 means the input keeps up and one near 1 that it is the bottleneck.
    """

    def __init__(self, writer: metrics_lib.MetricWriter, batch_size: int, manager: ocp.CheckpointManager):
        self.writer, self.batch_size, self.manager = writer, batch_size, manager
        self.pending: list[tuple[int, dict]] = []
        self.wait_seconds = 0.0
        self.started = time.perf_counter()

    def next_batch(self, batches):
        """``next(batches)``, timing how long it blocks."""
        started = time.perf_counter()
        batch = next(batches)
        self.wait_seconds += time.perf_counter() - started
        return batch

    def check(self, state: TrainState) -> list[tuple[int, dict]]:
        """Fetch pending metrics; raise ``TrainingDivergedError`` naming the first step whose loss or new state (the
        train step's ``finite`` flag: params, BatchNorm statistics, optimizer state, EMA) holds NaN/Inf."""
        fetched = [(step, jax.device_get(m)) for step, m in self.pending]
        for step, m in fetched:
            if np.isfinite(m["loss"]) and m["finite"]:
                continue
            cause = (f"Training loss is {float(m['loss'])} at step {step}" if not np.isfinite(m["loss"]) else
                     f"The train state holds NaN/Inf from step {step} on (at step {int(state.step)}: "
                     f"{checkpoints.describe_nonfinite(state)})")
            self.manager.wait_until_finished()
            last = self.manager.latest_step()
            kept = (f"the last good checkpoint, step {last}, is kept in {self.manager.directory}"
                    if last is not None else "no checkpoint had been saved yet")
            raise TrainingDivergedError(
                f"{cause}; stopped, and {kept}. Lower config.learning_rate, add config.warmup_epochs or "
                "config.grad_clip_norm, or try config.dtype='float32'.")
        return fetched

    def write(self, state: TrainState) -> dict[str, float]:
        fetched = self.check(state)
        self.pending = []
        seconds = time.perf_counter() - self.started
        images = self.batch_size * len(fetched)
        logged = {k: float(np.mean([m[k] for _, m in fetched])) for k in ("loss", "top1", "top5")}
        logged.update(learning_rate=float(fetched[-1][1]["learning_rate"]), step_time=seconds / len(fetched),
                      images_per_sec=images / seconds, input_wait=min(self.wait_seconds / seconds, 1.0))
        self.writer.write(fetched[-1][0], "train", logged)
        self.wait_seconds, self.started = 0.0, time.perf_counter()
        return logged


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Train (or resume) the run of ``config`` in ``workdir``; returns the final state.

    Stops early, after saving a checkpoint, on SIGTERM; raises ``TrainingDivergedError`` on a NaN/Inf loss or
    state, ``WorkdirConflictError`` when ``workdir`` holds another config's run or another live run holds it, and
    ``CheckpointError`` when no kept checkpoint restores (docs/reliability.md).
    """
    workdir = Path(workdir)
    data.catalog.parse_dataset(config.dataset)  # a missing or malformed name fails before any weights are read
    source = finetune.prepare(config, workdir)
    workdir_lib.check_workdir(workdir, config)  # before the data is read; config.json is written once it loaded
    description = data.describe(config, workdir=workdir, normalization=source.normalization if source else None,
                                log=print if jax.process_index() == 0 else None)
    setup = make_setup(config, info=description.info)
    with workdir_lib.claim_workdir(workdir, config):
        if jax.process_index() == 0:
            description.save(workdir)
            if description.skipped_images:
                print(f"Skipped {len(description.skipped_images)} unreadable image(s) (config.skip_bad_images), "
                      f"listed in {workdir / cards.WORKDIR_CARD}.", flush=True)
        return _train_in_claimed_workdir(config, workdir, setup, source, description)


def _train_in_claimed_workdir(config, workdir: Path, setup: Setup, source,
                              description: data.DataDescription) -> TrainState:
    """``train_and_evaluate`` once the workdir is this run's: resume (or start), train, evaluate, checkpoint."""
    from tqdm import tqdm

    is_main = jax.process_index() == 0
    workdir_lib.remove_remnants(workdir)
    manager = workdir_lib.checkpoint_manager(workdir, config)
    restored = workdir_lib.restore_latest(manager, abstract_state(setup))
    if restored is None:
        state = init_state(setup)
        if source is not None:
            loaded = finetune.initial_variables(source, state.variables(),
                                                log=functools.partial(print, flush=True) if is_main else None)
            state = init_state(setup, loaded)
    else:
        state = restored
    start = int(state.step)
    train_step = make_train_step(setup, description.transform)
    eval_step = make_eval_step(setup.model, setup.mesh, description.eval_transform)
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
    log = _TrainLog(writer, setup.micro_batch_size, manager)
    batches = data.train_batches(description, seed=config.seed, global_batch_size=setup.micro_batch_size,
                                 start_step=start, process_index=jax.process_index(),
                                 process_count=jax.process_count(), normalized=False)
    steps_per_epoch = setup.updates_per_epoch * config.grad_accum_steps
    eval_every = max(1, round(config.eval_every_epochs * steps_per_epoch))
    if is_main:
        where = f"resuming from step {start}" if restored is not None else "starting"
        print(f"{config.model} on {setup.info.name}: {setup.total_steps} steps of {setup.micro_batch_size} "
              f"examples on {setup.mesh.size} device(s), {where}; workdir {workdir.absolute()}", flush=True)
    progress = tqdm(total=setup.total_steps, initial=start, unit="step", dynamic_ncols=True,
                    disable=not (is_main and config.progress_bar), desc=f"{config.model} on {config.dataset}")
    eval_metrics: dict[str, float] = {}
    try:
        with _Sigterm() as sigterm:
            for step in range(start + 1, setup.total_steps + 1):
                state, step_metrics = train_step(state, global_batch(log.next_batch(batches), setup.mesh))
                if not manager.is_saving_in_progress():  # then this does not wait: it raises a failed save's error
                    manager.wait_until_finished()  # now, not at the next save
                log.pending.append((step, step_metrics))
                progress.update(1)
                last = step == setup.total_steps
                stop = sigterm.received or (jax.process_count() > 1 and manager.reached_preemption(step))
                if step % config.log_every_steps == 0 or last or stop:
                    logged = log.write(state)
                    progress.set_postfix(loss=f"{logged['loss']:.3f}", top1=f"{logged['top1']:.3f}",
                                         input_wait=f"{logged['input_wait']:.0%}", refresh=False)
                evaluate_now = step % eval_every == 0 or last
                if evaluate_now:
                    log.check(state)
                    eval_metrics = evaluate(description, config.eval_batch_size, setup.mesh, eval_step,
                                            state.variables())
                    if state.ema is not None:
                        ema_metrics = evaluate(description, config.eval_batch_size, setup.mesh, eval_step,
                                               state.variables(ema=True))
                        eval_metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
                    writer.write(step, "eval", eval_metrics)
                    progress.write(f"step {step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in eval_metrics.items()))
                if evaluate_now or step % config.checkpoint_every_steps == 0 or stop:
                    log.check(state)  # never save a state that holds NaN/Inf, or that a NaN/Inf loss reached
                    ranking = {"top1": eval_metrics["top1"]} if evaluate_now else None
                    workdir_lib.save_checkpoint(manager, state, ranking)
                if stop:
                    progress.write(f"SIGTERM: saved step {step} in {manager.directory}; rerun the same command "
                                   "to resume.")
                    break
        workdir_lib.finish_saving(manager)
    finally:
        progress.close()
        writer.close()
        manager.close()
    if is_main:
        plot = metrics_lib.plot_curves(workdir)
        print(f"Checkpoints: {manager.directory}\nMetrics: {writer.path} and TensorBoard events in "
              f"{workdir.absolute() / 'tensorboard'}\nPlot: {plot.absolute()}", flush=True)
        if eval_metrics:
            print("Final evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()), flush=True)
    return state


def evaluate_workdir(workdir: str | Path, checkpoint: str = "latest", ema: bool = False,
                     overrides: dict | None = None, per_class: bool = False) -> dict[str, float]:
    """Evaluate a trained run's checkpoint (``'latest'``, ``'best'`` or a step number) on its eval split.

    ``overrides`` change bookkeeping fields of the run's config, e.g. ``{'eval_split': 'train'}``; ``per_class``
    adds each class's top-1 (``evaluate``).
    """
    workdir = Path(workdir)
    config = workdir_lib.load_workdir_config(workdir)
    config.update_from_flattened_dict(overrides or {})
    if ema and not config.ema_decay:
        raise ConfigError(f"The run in {workdir} kept no EMA (config.ema_decay = 0); evaluate without --ema.")
    # The run's own data: its normalization and, for folder data, its files, from the workdir.
    description = data.describe(config, workdir=workdir)
    setup = make_setup(config, info=description.info, training=False)
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    step = workdir_lib.find_checkpoint(manager, checkpoint)
    state = workdir_lib.restore_checkpoint(manager, step, abstract_state(setup))
    manager.close()
    eval_step = make_eval_step(setup.model, setup.mesh, description.eval_transform)
    result = evaluate(description, config.eval_batch_size, setup.mesh, eval_step, state.variables(ema=ema), per_class)
    return {"step": step, **result}


def evaluate_converted(directory: str | Path, config, per_class: bool = False) -> dict[str, float]:
    """Evaluate a ``fusionjax-convert`` output directory on the data set and split that ``config`` names, its images
    normalized as the directory's card says; ``per_class`` adds each class's top-1 (``evaluate``)."""
    from fusionjax import sources

    try:
        source = sources.load(directory)
    except sources.SourceError as error:
        raise RunNotFoundError(str(error)) from None
    if source.kind != "converted":
        raise ConfigError(f"{directory} holds {source.kind} weights; fusionjax-eval --workdir takes a fusionjax-train "
                          "workdir or a fusionjax-convert directory.")
    description = data.describe(config, normalization=source.normalization, channels=source.image_shape[-1])
    mesh = make_mesh()
    model, variables = source.model(), jax.device_put(source.variables, NamedSharding(mesh, P()))
    eval_step = make_eval_step(model, mesh, description.eval_transform)
    return evaluate(description, config.eval_batch_size, mesh, eval_step, variables, per_class)
