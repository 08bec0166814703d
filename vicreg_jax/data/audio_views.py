"""Two views of each audio clip, on the device: a waveform for one branch, a log-mel image for
the other (the paper's ESC-50 experiment, Bardes et al., ICLR 2022, Appendix D.2).

Each view is an independent random time crop of the clip with a random gain (uniform in
decibels) and optional white noise; view a stays a waveform ``[n, t_a, 1]`` (a 1-D ResNet's
input), view b becomes a one-channel log-mel image ``[n, mels, frames, 1]`` in [0, 1]
(:mod:`.spectrogram`). Everything is drawn from the key given, one per clip, so a batch is
a deterministic function of ``(seed, step)`` like the image views.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from vicreg_jax.data import spectrogram


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
  """``round(seconds * sample_rate)``: the samples of a duration in seconds."""
  return int(round(seconds * sample_rate))


def random_time_crops(key: jax.Array, clips: jax.Array, length: int) -> jax.Array:
  """f32 ``[n, T]`` -> f32 ``[n, length]``: per clip, a window starting uniformly in
  ``[0, T - length]`` (one key per clip from ``key``)."""
  total = clips.shape[-1]
  if not 0 < length <= total:
    raise ValueError(f"audio crop of {length} samples from clips of {total}: a crop must be "
                     "positive and at most the clip (lower --config.audio.crop_seconds_* or "
                     "raise --config.audio.clip_seconds).")
  starts = jax.random.randint(key, (clips.shape[0],), 0, total - length + 1)
  return jax.vmap(lambda clip, start: jax.lax.dynamic_slice(clip, (start,), (length,)))(
      clips, starts)


def perturb(key: jax.Array, crops: jax.Array, gain_db: float, noise_std: float) -> jax.Array:
  """Per clip: gain ``10^(g / 20)`` with ``g ~ U[-gain_db, gain_db]``, plus N(0, noise_std²)."""
  gain_key, noise_key = jax.random.split(key)
  gains = jax.random.uniform(gain_key, (crops.shape[0], 1), minval=-gain_db, maxval=gain_db)
  out = crops * 10.0 ** (gains / 20.0)
  if noise_std:
    out = out + noise_std * jax.random.normal(noise_key, crops.shape, crops.dtype)
  return out


def log_mel(waves: jax.Array, audio: ml_collections.ConfigDict) -> jax.Array:
  """f32 ``[n, t]`` waveforms -> f32 ``[n, n_mels, frames, 1]`` log-mel images in [0, 1], with
  the mel settings of ``audio`` (``config.audio``)."""
  return spectrogram.log_mel_spectrogram(
      waves, sample_rate=audio.sample_rate, n_fft=audio.n_fft, hop_length=audio.hop_length,
      n_mels=audio.n_mels, fmin=audio.fmin, fmax=audio.fmax, scale=audio.mel_scale,
      norm=audio.mel_norm, floor=audio.floor, top_db=audio.top_db)


def audio_view_pair(key: jax.Array, clips: jax.Array,
                    audio: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """f32 ``[n, T]`` clips -> (waveform f32 ``[n, t_a, 1]``, log-mel f32 ``[n, n_mels,
  frames, 1]``) with the crop lengths, perturbations and mel settings of ``audio``
  (``config.audio``; durations in seconds at ``audio.sample_rate`` Hz)."""
  crop_a_key, crop_b_key, perturb_a_key, perturb_b_key = jax.random.split(key, 4)
  rate = audio.sample_rate
  clips = clips.astype(jnp.float32)
  wave_a = random_time_crops(crop_a_key, clips, seconds_to_samples(audio.crop_seconds_a, rate))
  wave_b = random_time_crops(crop_b_key, clips, seconds_to_samples(audio.crop_seconds_b, rate))
  wave_a = perturb(perturb_a_key, wave_a, audio.gain_db, audio.noise_std)
  wave_b = perturb(perturb_b_key, wave_b, audio.gain_db, audio.noise_std)
  return wave_a[..., None], log_mel(wave_b, audio)
