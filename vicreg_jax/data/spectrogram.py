"""Log-mel spectrograms on the device: frames, power spectrum, mel filterbank, dB, [0, 1].

The audio branch of the paper's ESC-50 experiment (Bardes et al., ICLR 2022, Appendix D.2)
feeds a one-channel mel spectrogram "normalised to [0, 1]" to a 2-D ResNet-18; the paper
gives no further parameters, so every one is an argument here (and a config key where a
recipe uses it). Conventions, chosen so the values match librosa's defaults
(``librosa.feature.melspectrogram(center=True, pad_mode="constant")`` then
``power_to_db``):

* frames: the clip is zero-padded by ``n_fft // 2`` on both sides, so frame ``j`` is
  centred on sample ``j * hop_length``; ``1 + t // hop_length`` frames of a ``t``-sample clip;
* window: periodic Hann, ``0.5 - 0.5 cos(2 pi k / n_fft)``; power ``|rfft|^2``;
* mel scale: ``"slaney"`` (linear below 1 kHz, 3 per 200 Hz; logarithmic above, 27 steps per
  factor 6.4 — the Auditory Toolbox's scale, librosa's default) or ``"htk"``
  (``2595 log10(1 + f / 700)``, torchaudio's default);
* filters: ``n_mels`` triangles whose edges and centres are ``n_mels + 2`` points evenly
  spaced on the mel scale from ``fmin`` to ``fmax``, evaluated at the ``n_fft // 2 + 1``
  bin frequencies; ``norm="slaney"`` scales each triangle by ``2 / (upper - lower edge in
  Hz)`` (unit area), ``None`` keeps peak 1;
* dB: ``10 log10(max(mel power, floor))``, then clipped at ``top_db`` below the clip's maximum;
* [0, 1]: per clip, ``(dB - min) / (max - min)`` (a constant clip gives zeros).

The filterbank is a host constant (NumPy, float64 while built); everything after the
waveform is ``jnp`` and jits, shards over the batch axis and runs on any backend.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)

# The Slaney (Auditory Toolbox) scale: linear, 3 mels per 200 Hz, up to 1 kHz (= 15 mels);
# logarithmic above, 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0
# HTK: mel = 2595 log10(1 + f / 700).
_HTK_FACTOR = 2595.0
_HTK_BREAK_HZ = 700.0


def hz_to_mel(hz, scale: str) -> np.ndarray:
  """Frequencies in Hz (array-like, float64) -> mels on ``scale`` ("slaney" or "htk")."""
  hz = np.asarray(hz, dtype=np.float64)
  _check_choice("scale", scale, MEL_SCALES)
  if scale == "htk":
    return _HTK_FACTOR * np.log10(1.0 + hz / _HTK_BREAK_HZ)
  break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
  log_part = break_mel + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
  return np.where(hz < _SLANEY_BREAK_HZ, hz / _SLANEY_HZ_PER_MEL, log_part)


def mel_to_hz(mel, scale: str) -> np.ndarray:
  """The inverse of ``hz_to_mel``."""
  mel = np.asarray(mel, dtype=np.float64)
  _check_choice("scale", scale, MEL_SCALES)
  if scale == "htk":
    return _HTK_BREAK_HZ * (10.0 ** (mel / _HTK_FACTOR) - 1.0)
  break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
  log_part = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (np.maximum(mel, break_mel) - break_mel))
  return np.where(mel < break_mel, mel * _SLANEY_HZ_PER_MEL, log_part)


def mel_band_edges(n_mels: int, fmin: float, fmax: float, scale: str) -> np.ndarray:
  """The ``n_mels + 2`` filter edge/centre frequencies (Hz, float64): band ``i`` rises from
  ``edges[i]`` to its peak at ``edges[i + 1]`` and falls to zero at ``edges[i + 2]``."""
  return mel_to_hz(np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2),
                   scale)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float,
                   scale: str, norm: str | None) -> np.ndarray:
  """Triangular mel filters as a float32 ``[n_fft // 2 + 1, n_mels]`` matrix (power
  spectrum ``@`` filterbank = mel power). Frequencies in Hz; see the module docstring."""
  _check_choice("norm", norm, MEL_NORMS)
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f"mel filterbank: need 0 <= fmin ({fmin}) < fmax ({fmax}) <= "
                     f"sample_rate / 2 ({sample_rate / 2}); lower fmax or raise the sample rate.")
  if n_mels < 1 or n_fft < 2:
    raise ValueError(f"mel filterbank: n_mels ({n_mels}) must be >= 1 and n_fft ({n_fft}) >= 2.")
  freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  edges = mel_band_edges(n_mels, fmin, fmax, scale)
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (freqs[:, None] - lower) / (centre - lower)
  falling = (upper - freqs[:, None]) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  if norm == "slaney":
    weights = weights * (2.0 / (upper - lower))
  return weights.astype(np.float32)


def num_frames(num_samples: int, hop_length: int) -> int:
  """Frames of a centred STFT of ``num_samples`` samples: ``1 + num_samples // hop_length``."""
  return 1 + num_samples // hop_length


def power_spectrogram(waveform: jnp.ndarray, *, n_fft: int, hop_length: int) -> jnp.ndarray:
  """f32 ``[..., t]`` waveform -> f32 ``[..., frames, n_fft // 2 + 1]`` power ``|STFT|^2``
  (centred frames, zero padding, periodic Hann window)."""
  half = n_fft // 2
  padded = jnp.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(half, half)])
  frames = num_frames(waveform.shape[-1], hop_length)
  index = hop_length * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
  spectrum = jnp.fft.rfft(padded[..., index] * window.astype(np.float32), axis=-1)
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel_spectrogram(waveform: jnp.ndarray, *, sample_rate: int, n_fft: int,
                        hop_length: int, n_mels: int, fmin: float, fmax: float, scale: str,
                        norm: str | None, floor: float, top_db: float) -> jnp.ndarray:
  """f32 ``[n, t]`` waveforms (amplitude, ``sample_rate`` Hz) -> f32 ``[n, n_mels, frames,
  1]`` log-mel images in [0, 1] per clip (frequency rows from low to high, time columns),
  ready for a one-channel 2-D ResNet. ``floor``: smallest mel power before the log;
  ``top_db``: dynamic range kept below each clip's maximum (dB)."""
  if waveform.ndim != 2:
    raise ValueError(f"log_mel_spectrogram expects [clips, samples], got shape {waveform.shape}.")
  filters = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                           fmax=fmax, scale=scale, norm=norm)
  power = power_spectrogram(waveform.astype(jnp.float32), n_fft=n_fft, hop_length=hop_length)
  mel = jnp.einsum("nfk,km->nmf", power, filters, precision="highest")
  db = 10.0 * jnp.log10(jnp.maximum(mel, floor))
  top = jnp.max(db, axis=(1, 2), keepdims=True)
  db = jnp.maximum(db, top - top_db)
  bottom = jnp.min(db, axis=(1, 2), keepdims=True)
  span = top - bottom
  scaled = jnp.where(span > 0, (db - bottom) / jnp.where(span > 0, span, 1.0), 0.0)
  return scaled[..., None]


def _check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"mel {name}={value!r}; choose one of {choices}.")
