"""Audio in device memory (``--config.data.source=audio``): splits, view pairs, eval inputs.

The clips of a split are decoded once on the host (:mod:`.audio_files`) and placed on the
devices, replicated, like the in-memory image source; each step takes its slice of the
epoch's permutation and makes both views there (:mod:`.audio_views`): view a a waveform
``[B, t_a, 1]`` for a 1-D encoder, view b a log-mel image ``[B, n_mels, frames, 1]`` for a
2-D encoder. Evaluation encodes the whole stored clip (no crop, no gain) through the branch
being evaluated.

Splits: ``data.name="esc50"``: ``"train"`` is every fold but ``data.test_fold``, ``"test"``
that fold (the paper: folds 1-4 / 5); ``data.esc10`` keeps the ESC-10 subset.
``data.name="folder"``: ``data.path/train`` and ``data.path/test`` when both exist, else
one class folder split per class by a seeded permutation (``data.test_fraction`` of each
class held out, at least one clip).
"""

from __future__ import annotations

import functools
import itertools
import logging
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vicreg_jax import parallel, paths, rng
from vicreg_jax.data import audio_files, audio_views, spectrogram

AUDIO_DATASETS = ("esc50", "folder")
SPLITS = ("train", "test")
# Seed of the per-class train/test split of a single audio folder (fixed: the split must not
# change with the pretraining seed, or evaluation would see training clips).
FOLDER_SPLIT_SEED = 0


def clip_samples(audio: ml_collections.ConfigDict) -> int:
  """Samples of a stored clip: ``audio.clip_seconds`` at ``audio.sample_rate``."""
  return audio_views.seconds_to_samples(audio.clip_seconds, audio.sample_rate)


@functools.lru_cache(maxsize=4)
def _load_folder(root: str, sample_rate: int, samples: int):
  return audio_files.load_audio_folder(root, sample_rate=sample_rate, clip_samples=samples)


def load_audio_split(config: ml_collections.ConfigDict, split: str
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Clips f32 ``[n, clip_samples]``, labels int32 ``[n]`` and class names of ``split``."""
  d, audio = config.data, config.audio
  if split not in SPLITS:
    raise ValueError(f"Audio split {split!r}: use 'train' or 'test'.")
  samples = clip_samples(audio)
  if d.name == "esc50":
    folds = ([d.test_fold] if split == "test" else
             [f for f in audio_files.ESC50_FOLDS if f != d.test_fold])
    return audio_files.load_esc50(d.path, folds, sample_rate=audio.sample_rate,
                                  clip_samples=samples, esc10=d.esc10)
  if d.name != "folder":
    raise ValueError(f"--config.data.name={d.name!r} with data.source=audio; use one of "
                     f"{AUDIO_DATASETS}.")
  split_dirs = [paths.join(d.path, s) for s in SPLITS]
  if all(paths.isdir(p) for p in split_dirs):
    return _load_folder(paths.join(d.path, split), audio.sample_rate, samples)
  clips, labels, classes = _load_folder(d.path, audio.sample_rate, samples)
  generator = np.random.default_rng(FOLDER_SPLIT_SEED)
  held_out = np.zeros(len(labels), bool)
  for cls in range(len(classes)):
    members = generator.permutation(np.flatnonzero(labels == cls))
    held_out[members[:max(1, int(round(d.test_fraction * len(members))))]] = True
  keep = held_out if split == "test" else ~held_out
  return clips[keep], labels[keep], classes


def eval_inputs(clips: jax.Array, audio: ml_collections.ConfigDict, branch: str) -> jax.Array:
  """Whole clips f32 ``[n, T]`` as branch ``branch``'s evaluation input: the waveform ``[n,
  T, 1]`` (branch a) or its log-mel image ``[n, n_mels, frames, 1]`` (branch b)."""
  if branch == "a":
    return clips[..., None]
  return audio_views.log_mel(clips, audio)


def view_shapes(audio: ml_collections.ConfigDict, batch: int) -> tuple[tuple, tuple]:
  """Shapes of one batch's (view a, view b): ``[B, t_a, 1]`` and ``[B, n_mels, frames, 1]``."""
  crop_a = audio_views.seconds_to_samples(audio.crop_seconds_a, audio.sample_rate)
  crop_b = audio_views.seconds_to_samples(audio.crop_seconds_b, audio.sample_rate)
  return (batch, crop_a, 1), (batch, audio.n_mels,
                              spectrogram.num_frames(crop_b, audio.hop_length), 1)


class AudioViewSource:
  """Global ``{"view_a": f32 [B, t_a, 1], "view_b": f32 [B, n_mels, frames, 1]}`` batches,
  one per step, a deterministic function of ``(config.seed, step)`` (stream ``rng.VIEWS``:
  the epoch's permutation from ``fold_in(order_key, epoch)``, the views from
  ``fold_in(view_key, step)``). Attributes: ``num_examples``, ``steps_per_epoch``."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    clips, _, classes = load_audio_split(config, config.data.split)
    self.num_examples = len(clips)
    self.steps_per_epoch = parallel.epoch_steps(config.batch_size, self.num_examples, mesh,
                                                f"{config.data.path} ({config.data.split})")
    self._clips = parallel.replicate(mesh, clips)
    batch, spe, audio = config.batch_size, self.steps_per_epoch, config.audio
    order_key, view_key = jax.random.split(rng.stream_key(config.seed, rng.VIEWS))

    def make_batch(clips, step):
      perm = jax.random.permutation(jax.random.fold_in(order_key, step // spe), clips.shape[0])
      chosen = clips[jax.lax.dynamic_slice(perm, ((step % spe) * batch,), (batch,))]
      view_a, view_b = audio_views.audio_view_pair(jax.random.fold_in(view_key, step), chosen,
                                                   audio)
      return {"view_a": view_a, "view_b": view_b}

    self._make_batch = jax.jit(make_batch, out_shardings=parallel.batch_sharding(mesh))
    self._replicated = parallel.replicated(mesh)
    logging.info("Audio %s: %d clips of %.2f s at %d Hz, %d classes, %d steps per epoch.",
                 config.data.name, self.num_examples, audio.clip_seconds, audio.sample_rate,
                 len(classes), self.steps_per_epoch)

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """The batches of steps ``start_step, start_step + 1, ...`` (endless)."""
    for step in itertools.count(start_step):
      yield self._make_batch(self._clips, jax.device_put(np.int32(step), self._replicated))


def encode_split(config: ml_collections.ConfigDict, mesh, backbone, variables: dict,
                 split: str, branch: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Features f32 ``[n, d]`` (eval mode), labels int32 ``[n]`` and the class count of
  ``split``'s whole clips through branch ``branch``'s ``backbone``, in global batches of
  ``config.eval.feature_batch`` sharded over ``mesh`` (the last one zero-padded)."""
  clips, labels, classes = load_audio_split(config, split)
  batch = config.eval.feature_batch
  parallel.check_batch_divisible(batch, mesh)
  variables = parallel.replicate(mesh, variables)

  @functools.partial(jax.jit, out_shardings=parallel.replicated(mesh))
  def encode(variables, clips):
    return backbone.apply(variables, eval_inputs(clips, config.audio, branch),
                          train=False).astype(jnp.float32)

  out = []
  for start in range(0, len(clips), batch):
    chunk = clips[start:start + batch]
    padded = np.zeros((batch,) + clips.shape[1:], np.float32)
    padded[:len(chunk)] = chunk
    features = encode(variables, jax.device_put(padded, parallel.batch_sharding(mesh)))
    out.append(np.asarray(jax.device_get(features))[:len(chunk)])
  return np.concatenate(out), labels, len(classes)
