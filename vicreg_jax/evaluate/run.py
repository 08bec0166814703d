"""Evaluation of a pretraining workdir: kNN, linear probe and fine-tuning (library + CLI core).

``python -m vicreg_jax.evaluate --config <recipe> --workdir W --protocols knn,linear`` restores
branch a's encoder from ``W/checkpoints`` (latest or ``--step``; a workdir made by ``export
--import_weights`` works the same), builds the labelled sources of ``config.data`` and runs
each protocol with ``config.eval``. The architecture comes from the checkpoint, everything
else from ``--config``. Per protocol ``<name>`` (``linear``, or ``linear_random`` with
``--random_init``) it writes, under ``--output_dir`` (default ``W/eval/``; checked writable
before any work):

* ``<name>.json``: the result (accuracies in percent, per-epoch history) and its settings;
* ``<name>.jsonl``: one progress line per epoch while it runs;
* ``<name>_state/``: the latest epoch's state; rerunning the command resumes from it (not
  for the linear probe on features, ``eval.linear.on_features``, which recomputes: seconds);
* ``finetune_export/``: the fine-tuned encoder, in the formats of ``vicreg_jax.export``.

A rerun with other settings than an existing ``<name>.json`` (linear, finetune) or
``<name>_state/`` is refused, naming what to delete.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import checkpoint, export, models, parallel, paths
from vicreg_jax import workdir as workdir_lib
from vicreg_jax import config as config_lib
from vicreg_jax.evaluate import classifier, features, knn, linear, sources

PROTOCOLS = ("knn", "linear", "finetune")
EVAL_DIR = "eval"


def random_encoder(backbone, seed: int, in_channels: int = 3) -> dict:
  """Fresh ``{"params", "batch_stats"}`` of ``backbone`` from ``seed`` (the baseline)."""
  shape = (1,) + (classifier.PROBE_INPUT_SIDE,) * backbone.spatial_dims + (in_channels,)
  return backbone.init(jax.random.key(seed), jnp.zeros(shape), train=False)


class Encoder(NamedTuple):
  """An encoder restored from a workdir."""
  backbone: models.ResNet
  variables: dict  # {"params", "batch_stats"}
  step: int  # checkpoint step it was restored from
  model_config: ml_collections.ConfigDict  # config.model of the run that wrote it


def load_encoder(workdir: str, step: int | None = None, *, mesh, random_init: bool = False,
                 seed: int = 0, branch: str = "a") -> Encoder:
  """Branch ``branch``'s encoder of a workdir, from the checkpoint at ``step`` (or latest).

  The variables are restored replicated on ``mesh``. ``random_init``: the same architecture
  freshly initialised from ``seed`` instead (the baseline the pretrained encoder is compared
  with).
  """
  variables, saved_config, step = checkpoint.restore_variables(workdir, step, mesh)
  model_config = ml_collections.ConfigDict(saved_config["model"])
  backbone = models.create_backbone(model_config, branch)
  trained = models.backbone_variables(variables, branch)
  if random_init:
    return Encoder(backbone, random_encoder(backbone, seed, models.in_channels(trained)), step,
                   model_config)
  return Encoder(backbone, trained, step, model_config)


def audio_features(config: ml_collections.ConfigDict, mesh, backbone, variables: dict,
                   split: str) -> tuple[np.ndarray, np.ndarray, int]:
  """``data.source=audio``: features of ``split``'s whole clips through ``eval.branch``."""
  from vicreg_jax.data import audio_source  # pylint: disable=g-import-not-at-top
  return audio_source.encode_split(config, mesh, backbone, variables, split, config.eval.branch)


def encoder_fn(config: ml_collections.ConfigDict, mesh, backbone, variables: dict
               ) -> Callable[[jax.Array], jax.Array]:
  """``uint8 images [B, S, S, 3] -> f32[B, d]`` (eval mode), output replicated on the mesh."""
  encode = features.make_encode_fn(backbone, config.augment.mean, config.augment.std, mesh)
  variables = parallel.replicate(mesh, variables)
  return lambda images: encode(variables, images)


def split_features(config: ml_collections.ConfigDict, mesh, encode, split: str
                   ) -> tuple[np.ndarray, np.ndarray, int]:
  """Features f32[n, d], labels i32[n] and class count of a split (evaluation crops)."""
  source = sources.feature_source(config, mesh, split)
  x, labels = features.batch_features(encode, source.epoch(0))
  return x, labels, source.num_classes


def features_fn(config: ml_collections.ConfigDict, mesh, backbone, variables: dict
                ) -> Callable[[str], tuple[np.ndarray, np.ndarray, int]]:
  """``split -> (features f32[n, d], labels i32[n], classes)`` of one encoder: evaluation
  crops of images, or whole audio clips through ``eval.branch`` (``data.source=audio``)."""
  if config.data.source == "audio":
    return lambda split: audio_features(config, mesh, backbone, variables, split)
  encode = encoder_fn(config, mesh, backbone, variables)
  return lambda split: split_features(config, mesh, encode, split)


def run_knn(config: ml_collections.ConfigDict, mesh, backbone, variables: dict) -> dict:
  """kNN top-1/top-5 (percent) of ``eval.split`` against the ``eval.train_split`` bank."""
  features_of = features_fn(config, mesh, backbone, variables)
  bank, bank_labels, num_classes = features_of(config.eval.train_split)
  queries, query_labels, _ = features_of(config.eval.split)
  return knn.knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=num_classes,
                          **config.eval.knn)


def run_linear(config, mesh, backbone, variables, *, checkpointer=None, on_epoch=None) -> dict:
  """The linear probe of ``config.eval.linear`` (on images, or on features if
  ``on_features``: then ``checkpointer`` is not used, the probe taking seconds)."""
  probe = config.eval.linear
  if config.data.source == "audio" or probe.on_features:  # audio: always on features
    features_of = features_fn(config, mesh, backbone, variables)
    x_train, y_train, num_classes = features_of(config.eval.train_split)
    x_test, y_test, _ = features_of(config.eval.split)
    return linear.linear_probe(x_train, y_train, x_test, y_test, num_classes=num_classes,
                               probe_config=probe, seed=config.seed, on_epoch=on_epoch)
  train, held_out = sources.protocol_sources(config, mesh, "linear")
  summary, _ = classifier.train_classifier(
      backbone, variables, train, held_out, probe, finetune=False, mesh=mesh,
      mean=config.augment.mean, std=config.augment.std, seed=config.seed,
      checkpointer=checkpointer, on_epoch=on_epoch)
  return summary


def run_finetune(config, mesh, backbone, variables, *, checkpointer=None, on_epoch=None,
                 model_config=None, export_dir: str = "") -> dict:
  """Semi-supervised fine-tuning of ``config.eval.finetune`` on its label subset.

  With ``export_dir`` (and the encoder's ``model_config``), the fine-tuned encoder is
  exported there as :func:`vicreg_jax.export.export_backbone` does (the head is not).
  """
  train, held_out = sources.protocol_sources(config, mesh, "finetune")
  logging.info("Fine-tuning on %d labelled examples.", train.num_examples)
  summary, tuned = classifier.train_classifier(
      backbone, variables, train, held_out, config.eval.finetune, finetune=True, mesh=mesh,
      mean=config.augment.mean, std=config.augment.std, seed=config.seed,
      checkpointer=checkpointer, on_epoch=on_epoch)
  if export_dir:
    export.export_backbone({name: {"backbone": v} for name, v in tuned.items()}, model_config,
                           export_dir, step=summary["epochs"])
  return {**summary, "labelled_examples": train.num_examples}


class EpochLog:
  """Progress of an epoch-based protocol: a console line and a JSONL record per epoch.

  The JSONL file starts over when the protocol starts at epoch 1 (a resumed one appends).
  """

  def __init__(self, name: str, path: str, epochs: int):
    self._name, self._path, self._epochs = name, path, epochs
    self._start = time.perf_counter()
    self._first_epoch = None
    self._active = jax.process_index() == 0

  def __call__(self, epoch: int, state, history: list) -> None:
    del state
    if self._first_epoch is None:
      self._first_epoch = epoch - 1
    if not self._active:
      return
    record = history[-1]
    done = epoch - self._first_epoch
    per_epoch = (time.perf_counter() - self._start) / done
    best = max(h["top1"] for h in history)
    print(f"{self._name} epoch {epoch}/{self._epochs}  loss {record['loss']:.4f}  "
          f"top-1 {record['top1']:.2f}%  top-5 {record['top5']:.2f}%  (best {best:.2f}%)  "
          f"{per_epoch:.1f} s/epoch  ETA {(self._epochs - epoch) * per_epoch / 60:.1f} min",
          flush=True)
    (paths.write_text if epoch == 1 else paths.append_text)(self._path,
                                                             json.dumps(record) + "\n")


def check_result_settings(out_dir: str, name: str, settings: dict) -> None:
  """Refuses to replace ``out_dir/<name>.json`` if it was made with other ``settings``.

  Raises:
    IncompatibleCheckpointError naming the settings that differ and what to delete.
  """
  path = paths.join(out_dir, f"{name}.json")
  if not paths.exists(path):
    return
  changes = checkpoint.settings_changes(
      json.loads(paths.read_text(path)).get("settings", {}), settings)
  if changes:
    state = paths.join(out_dir, f"{name}_state")
    delete = path + (f" and {state}" if paths.exists(state) else "")
    raise checkpoint.IncompatibleCheckpointError(
        f"{path} holds a result made with other settings (" + "; ".join(changes)
        + f"); delete {delete} to recompute, or pass --output_dir to keep both.")


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, protocols: list[str], *,
                     mesh, step: int | None = None, random_init: bool = False,
                     output_dir: str | None = None) -> dict:
  """Runs ``protocols`` on the workdir's encoder; returns ``{name: result}`` and writes JSON.

  ``mesh``: the program's device mesh (``parallel.make_mesh()`` after
  ``parallel.initialize_distributed``); the encoder and the sources live on it.
  ``output_dir``: where the results go (default ``<workdir>/eval``); the workdir itself is
  only read.

  Raises:
    ValueError for an unknown protocol, FileNotFoundError for a workdir without checkpoints
    or missing data (messages say what to pass instead), PermissionError for an output
    folder that cannot be written and IncompatibleCheckpointError for one that holds a
    result made with other settings (both before any work).
  """
  config_lib.validate_eval(config.eval)
  config_lib.validate_eval_splits(config)
  unknown = sorted(set(protocols) - set(PROTOCOLS))
  if unknown or not protocols:
    raise ValueError(f"Unknown protocol(s) {unknown or protocols}; choose from {PROTOCOLS}.")
  out_dir = output_dir or paths.join(workdir, EVAL_DIR)
  workdir_lib.check_writable(out_dir, "--output_dir")
  if config.data.source == "audio" and "finetune" in protocols:
    raise ValueError("Fine-tuning is not available for data.source=audio; use "
                     "--protocols=knn,linear (a linear probe on frozen features, as the paper).")
  backbone, variables, step, model_config = load_encoder(
      workdir, step, mesh=mesh, random_init=random_init, seed=config.seed + 1,
      branch=config.eval.branch)
  settings = json.loads(json.dumps(
      {"eval": json.loads(config.eval.to_json()), "data": config.data.to_dict(), "step": step,
       "random_init": random_init, "seed": config.seed}))
  suffix = "_random" if random_init else ""
  for protocol in protocols:
    if protocol != "knn":
      check_result_settings(out_dir, protocol + suffix, settings)
  paths.makedirs(out_dir)
  results = {}
  for protocol in protocols:
    name = protocol + suffix
    started = time.perf_counter()
    if protocol == "knn":
      result = run_knn(config, mesh, backbone, variables)
    else:
      log = EpochLog(name, paths.join(out_dir, f"{name}.jsonl"), config.eval[protocol].epochs)
      if protocol == "linear" and (config.eval.linear.on_features
                                   or config.data.source == "audio"):  # no state: seconds
        result = run_linear(config, mesh, backbone, variables, on_epoch=log)
      else:
        saver = checkpoint.EpochCheckpointer(paths.join(out_dir, f"{name}_state"), settings)
        try:
          if protocol == "linear":
            result = run_linear(config, mesh, backbone, variables, checkpointer=saver,
                                on_epoch=log)
          else:
            result = run_finetune(config, mesh, backbone, variables, checkpointer=saver,
                                  on_epoch=log, model_config=model_config,
                                  export_dir=paths.join(out_dir, f"{name}_export"))
        finally:
          saver.close()
    record = {"protocol": protocol, "encoder": "random init" if random_init else "pretrained",
              "step": step, "seconds": round(time.perf_counter() - started, 1),
              "result": result, "settings": settings}
    results[name] = result
    if jax.process_index() == 0:
      paths.write_text(paths.join(out_dir, f"{name}.json"), json.dumps(record, indent=2))
      print(f"{name}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%"
            + (f"  (best top-1 {result['best_top1']:.2f}%)" if "best_top1" in result else "")
            + f"  -> {paths.join(out_dir, name + '.json')}", flush=True)
  return results
