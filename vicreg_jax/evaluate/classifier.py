"""Supervised training of a linear head on an encoder: the linear probe and fine-tuning.

One trainer, :func:`train_classifier`: one ``jax.jit`` step over global batches sharded on the
mesh (labelled sources, :mod:`vicreg_jax.evaluate.sources`), as pretraining. Two modes, as the
official ``evaluate.py``:

* frozen (linear probe, the paper's App. C.2 on images): the encoder runs in eval mode
  (BatchNorm running statistics), gets no gradient and is never updated; only the head
  trains, on random-resized crops + flips; evaluation on resize + centre crop.
* fine-tune (semi-supervised, App. C.2): the encoder runs in train mode (running averages
  updated) and trains with its own learning rate beside the head's, on a label subset: a
  file of image ids (SimCLR's ``1percent.txt`` / ``10percent.txt``) or a fraction drawn with
  a seed. Standard rates (``config.FINETUNE_RATES``): 1% of the labels backbone 0.03 / head
  0.08; 10%: 0.01 / 0.1; momentum 0.9, weight decay 0, 20 epochs, batch 256. BatchNorm
  statistics (``eval.finetune.bn_group_size``): the official protocol, and our default, is
  per group of 32 consecutive examples of the batch of 256, as the official ``evaluate.py``
  computes them (DDP without SyncBN: each of 8 GPUs normalises its 32 images; the saved
  running averages are rank 0's, here the first group's); 0 normalises over the global batch
  (SyncBN, not the official protocol).

Head ``W ~ N(0, init_std)``, bias 0. Optimizer: :func:`vicreg_jax.optim.classifier_sgd`
(PyTorch SGD, per-epoch cosine rate). The loss is the mean cross-entropy over the real rows of
a batch (``weight`` 1; padding 0). After each epoch the held-out source is scored (top-1/top-5
over real rows, percent); the best of each over epochs is reported with the last.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Protocol

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vicreg_jax import optim, parallel
from vicreg_jax.evaluate import accuracy, features


@flax.struct.dataclass
class ClassifierState:
  """Encoder + head being trained (arrays replicated on the mesh).

  Attributes:
    step: i32[] steps taken.
    params: ``{"backbone": encoder params, "head": {"kernel" f32[d, c], "bias" f32[c]}}``.
    batch_stats: the encoder's BatchNorm statistics.
    opt_state: SGD state of the trained groups.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def init_head(key: jax.Array, dim: int, num_classes: int, init_std: float) -> dict:
  """Linear head as the official ``nn.Linear``: kernel f32[dim, c] ~ N(0, init_std), bias 0."""
  return {"kernel": init_std * jax.random.normal(key, (dim, num_classes), jnp.float32),
          "bias": jnp.zeros((num_classes,), jnp.float32)}


# Side of the dummy input used to infer the representation width (any size works after the
# global pooling; 32 px survives the standard stem's 32x downsampling).
PROBE_INPUT_SIDE = 32


def representation_width(backbone, variables: dict) -> int:
  """Width d of the encoder's pooled output, from an abstract forward pass (no compute)."""
  kernel = variables["params"]["conv1"]["kernel"]  # [*window, in_channels, out_channels]
  shape = (1,) + (PROBE_INPUT_SIDE,) * (kernel.ndim - 2) + (kernel.shape[-2],)
  out = jax.eval_shape(lambda v, x: backbone.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct(shape, jnp.float32))
  return out.shape[-1]


def head_logits(head: dict, features: jax.Array) -> jax.Array:
  """Logits f32[n, c] of features [n, d] (computed in float32)."""
  return features.astype(jnp.float32) @ head["kernel"] + head["bias"]


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array
                           ) -> jax.Array:
  """Mean cross-entropy over the rows with weight 1 (padding rows weigh 0)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0)


def create_state(variables: dict, head: dict, tx: optax.GradientTransformation,
                 mesh) -> ClassifierState:
  """Initial state, replicated on ``mesh``; ``variables`` holds the encoder's params/stats."""
  params = {"backbone": variables["params"], "head": head}
  state = ClassifierState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params))
  # Copied: the train step donates its state, which must not free the caller's arrays.
  state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
  return jax.device_put(state, parallel.replicated(mesh))


def encode_in_groups(apply: Callable, images: jax.Array, group_size: int
                     ) -> tuple[jax.Array, Any]:
  """Train-mode features with BatchNorm statistics per group of consecutive examples.

  The batch is reshaped to ``[B / group_size, group_size, ...]`` and ``apply`` is vmapped
  over the groups, so each group is normalised by its own statistics whatever the devices
  (one group = one GPU of the official ``evaluate.py``, which has no SyncBN).

  Args:
    apply: ``images [group_size, ...] -> (features f32[group_size, d], batch_stats)``, the
      encoder in train mode (:func:`features.encode` with ``train=True``).
    images: [B, ...], B a multiple of ``group_size``.
    group_size: examples per group, > 0.

  Returns:
    ``(features f32[B, d], batch_stats)``: the running averages updated by the first group
    only, as the model the official code saves holds (DDP broadcasts rank 0's buffers at
    every forward, so the rank-0 running averages are the ones that persist).
  """
  batch = images.shape[0]
  if batch % group_size:
    raise ValueError(f"--config.eval.finetune.bn_group_size={group_size} does not divide the "
                     f"batch of {batch} examples; set --config.eval.finetune.batch_size to a "
                     "multiple of it, or bn_group_size=0 (statistics over the global batch).")
  groups = images.reshape((batch // group_size, group_size) + images.shape[1:])
  reps, batch_stats = jax.vmap(apply)(groups)
  return (reps.reshape((batch,) + reps.shape[2:]),
          jax.tree.map(lambda stats: stats[0], batch_stats))


def make_steps(backbone, tx: optax.GradientTransformation, *, finetune: bool,
               mean, std, mesh, bn_group_size: int = 0) -> tuple[Callable, Callable]:
  """``(train_step, eval_step)``, both jitted over global batches.

  ``train_step(state, batch) -> (state, {"loss"})``; ``eval_step(state, batch) ->
  {"top1", "top5", "count"}`` (weighted hit counts over the batch's real rows). Batches are
  ``{"image" uint8 [B, S, S, 3], "label" i32[B], "weight" f32[B]}``.

  ``bn_group_size`` (fine-tuning only; ``config.eval.finetune.bn_group_size``): 0 normalises
  the train-mode BatchNorm over the global batch (SyncBN); k > 0 over each group of k
  consecutive examples (:func:`encode_in_groups`; B must be a multiple of k), keeping the
  first group's running averages. Padding rows (weight 0) add nothing to the loss but are
  normalised with, and enter the statistics of, their group (or the global batch).
  """
  if bn_group_size < 0 or (bn_group_size and not finetune):
    raise ValueError(f"--config.eval.finetune.bn_group_size={bn_group_size} must be >= 0 (0 "
                     "for the linear probe, whose frozen encoder uses running statistics).")

  def encode(params, batch_stats, images, train):
    def apply(x):
      return features.encode(backbone, {"params": params, "batch_stats": batch_stats}, x,
                             mean=mean, std=std, train=train)
    if train and bn_group_size:
      return encode_in_groups(apply, images, bn_group_size)
    return apply(images)

  def train_step(state: ClassifierState, batch: dict):
    def loss_fn(params):
      backbone_params = params["backbone"]
      if not finetune:
        backbone_params = jax.lax.stop_gradient(backbone_params)
      reps, batch_stats = encode(backbone_params, state.batch_stats, batch["image"], finetune)
      logits = head_logits(params["head"], reps)
      return weighted_cross_entropy(logits, batch["label"], batch["weight"]), batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    step_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, step_updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {"loss": loss}

  def eval_step(state: ClassifierState, batch: dict):
    reps, _ = encode(state.params["backbone"], state.batch_stats, batch["image"], False)
    logits = head_logits(state.params["head"], reps)
    hits = accuracy.topk_hits(logits, batch["label"], batch["weight"])
    return {**hits, "count": jnp.sum(batch["weight"])}

  replicated = parallel.replicated(mesh)
  return (jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated)),
          jax.jit(eval_step, out_shardings=replicated))


def score(eval_step: Callable, state: ClassifierState, batches: Iterable[dict]
          ) -> dict[str, float]:
  """Top-1/top-5 accuracy (percent) over all real rows of ``batches``."""
  totals = None
  for batch in batches:
    hits = eval_step(state, batch)
    totals = hits if totals is None else jax.tree.map(jnp.add, totals, hits)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  if count == 0:
    raise ValueError("The evaluation split has no examples.")
  return accuracy.percent(totals, count)


def summarize(history: list[dict]) -> dict:
  """Last epoch's top-1/top-5 with the best of each over epochs (the official ``best_acc``)."""
  return {"top1": history[-1]["top1"], "top5": history[-1]["top5"],
          "best_top1": max(h["top1"] for h in history),
          "best_top5": max(h["top5"] for h in history),
          "epochs": len(history), "history": history}


EpochCallback = Callable[[int, ClassifierState, list], None]


class Checkpointer(Protocol):
  """Keeps a protocol's progress across restarts (``checkpoint.EpochCheckpointer``)."""

  def restore(self, state: ClassifierState) -> tuple[ClassifierState, list]:
    """The latest saved ``(state, history)`` shaped like ``state``, else ``(state, [])``."""

  def save(self, epoch: int, state: ClassifierState, history: list) -> None:
    """Saves the state and history after ``epoch`` epochs."""


def fit(state: ClassifierState, steps: tuple[Callable, Callable], train_source, eval_source, *,
        epochs: int, checkpointer: Checkpointer | None = None,
        on_epoch: EpochCallback | None = None) -> tuple[ClassifierState, dict]:
  """Trains for ``epochs`` epochs, scoring ``eval_source`` after each; resumes if it can.

  Args:
    state: initial state.
    steps: ``make_steps``'s ``(train_step, eval_step)``.
    train_source, eval_source: labelled sources (``epoch(e)`` iterables of batches).
    epochs: total number of epochs.
    checkpointer: restores the latest saved epoch before training and saves after each.
    on_epoch: called after every epoch with ``(epochs done, state, history)`` (progress).

  Returns:
    ``(state, summary)`` with :func:`summarize`'s fields; history records are
    ``{"epoch", "loss", "top1", "top5"}``.
  """
  train_step, eval_step = steps
  history = []
  if checkpointer is not None:
    state, history = checkpointer.restore(state)
  for epoch in range(len(history), epochs):
    losses = []
    for batch in train_source.epoch(epoch):
      state, metrics = train_step(state, batch)
      losses.append(metrics["loss"])
    loss = float(jnp.mean(jnp.stack(losses)))
    if not math.isfinite(loss):
      raise FloatingPointError(f"Non-finite loss in epoch {epoch + 1}; lower the learning "
                               "rate(s) of this protocol.")
    history.append({"epoch": epoch + 1, "loss": loss,
                    **score(eval_step, state, eval_source.epoch(0))})
    if checkpointer is not None:
      checkpointer.save(epoch + 1, state, history)
    if on_epoch is not None:
      on_epoch(epoch + 1, state, history)
  return state, summarize(history)


def train_classifier(backbone, variables: dict, train_source, eval_source,
                     settings: ml_collections.ConfigDict, *, finetune: bool, mesh, mean, std,
                     seed: int = 0, checkpointer: Checkpointer | None = None,
                     on_epoch: EpochCallback | None = None) -> tuple[dict, dict]:
  """The linear probe on images (``finetune=False``) or fine-tuning (``finetune=True``).

  Args:
    backbone: the encoder module (``models.create_backbone``); its representation width is
      the head's input. variables: its ``{"params", "batch_stats"}``.
    train_source, eval_source: labelled sources (``train=True`` / ``False``; fine-tuning: the
      label subset), batches of ``settings.batch_size``.
    settings: ``config.eval.linear`` (lr, momentum, weight_decay, epochs, init_std) or, to
      fine-tune, ``config.eval.finetune`` (backbone_lr, head_lr, momentum, weight_decay,
      epochs, init_std, bn_group_size: :func:`make_steps`). ``backbone_lr=0`` keeps the
      encoder's weights (its BatchNorm statistics still follow the data, as in PyTorch's
      train mode).
    finetune: train the encoder too (train mode) instead of freezing it (eval mode).
    mesh: the device mesh the sources shard over.
    mean, std: per-channel normalisation of the encoder's inputs (``config.augment``).
    seed: head initialisation.
    checkpointer: resumes from its latest epoch and saves after every epoch.
    on_epoch: ``(epochs done, state, history)`` callback after every epoch.

  Returns:
    ``(summary, variables)``: :func:`summarize`'s accuracies (percent) and the encoder's
    ``{"params", "batch_stats"}`` after training (unchanged when frozen).
  """
  if finetune:
    head_lr, backbone_lr = settings.head_lr, settings.backbone_lr
  else:
    head_lr, backbone_lr = settings.lr, None
  tx = optim.classifier_sgd(head_lr, backbone_lr, momentum=settings.momentum,
                            weight_decay=settings.weight_decay, epochs=settings.epochs,
                            steps_per_epoch=train_source.steps_per_epoch)
  head = init_head(jax.random.key(seed), representation_width(backbone, variables),
                   train_source.num_classes, settings.init_std)
  state = create_state(variables, head, tx, mesh)
  steps = make_steps(backbone, tx, finetune=finetune, mean=mean, std=std, mesh=mesh,
                     bn_group_size=settings.bn_group_size if finetune else 0)
  state, summary = fit(state, steps, train_source, eval_source, epochs=settings.epochs,
                       checkpointer=checkpointer, on_epoch=on_epoch)
  return summary, {"params": state.params["backbone"], "batch_stats": state.batch_stats}


def linear_probe_images(backbone, variables: dict, train_source, eval_source, *,
                        probe_config: ml_collections.ConfigDict, **kwargs) -> dict:
  """The paper's linear probe on images: :func:`train_classifier`'s summary, frozen encoder."""
  return train_classifier(backbone, variables, train_source, eval_source, probe_config,
                          finetune=False, **kwargs)[0]


def finetune(backbone, variables: dict, train_source, eval_source, *,
             finetune_config: ml_collections.ConfigDict, **kwargs) -> tuple[dict, dict]:
  """Semi-supervised fine-tuning: :func:`train_classifier` with ``finetune=True``."""
  return train_classifier(backbone, variables, train_source, eval_source, finetune_config,
                          finetune=True, **kwargs)
