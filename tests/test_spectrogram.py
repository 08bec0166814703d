"""Log-mel spectrogram: a float64 loop reference, filterbank properties derived by hand, and
librosa where it is installed."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicreg_jax.data import spectrogram as spec

SR = 16000
SETTINGS = dict(sample_rate=SR, n_fft=512, hop_length=160, n_mels=40, fmin=0.0, fmax=8000.0,
                floor=1e-10, top_db=80.0)


def reference_mel_point(hz, scale):
  """One frequency -> mels, written from the published definitions (float64, scalar)."""
  if scale == "htk":
    return 2595.0 * math.log10(1.0 + hz / 700.0)
  if hz < 1000.0:
    return 3.0 * hz / 200.0
  return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def reference_hz_point(mel, scale):
  lo, hi = 0.0, 1e6  # bisection on the monotone forward map: independent of mel_to_hz
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if reference_mel_point(mid, scale) < mel else (lo, mid)
  return (lo + hi) / 2


def reference_log_mel(clip, *, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, scale,
                      norm, floor, top_db):
  """Loops in float64: pad, window, DFT per frame, triangle per band, dB, [0, 1]."""
  clip = np.asarray(clip, np.float64)
  half = n_fft // 2
  padded = np.concatenate([np.zeros(half), clip, np.zeros(half)])
  window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * k / n_fft) for k in range(n_fft)])
  frames = 1 + len(clip) // hop_length
  bins = n_fft // 2 + 1
  power = np.zeros((frames, bins))
  k = np.arange(n_fft)
  for j in range(frames):
    seg = padded[j * hop_length: j * hop_length + n_fft] * window
    for b in range(bins):
      z = np.sum(seg * np.exp(-2j * math.pi * b * k / n_fft))
      power[j, b] = z.real ** 2 + z.imag ** 2
  m_lo, m_hi = reference_mel_point(fmin, scale), reference_mel_point(fmax, scale)
  edges = [reference_hz_point(m_lo + (m_hi - m_lo) * i / (n_mels + 1), scale)
           for i in range(n_mels + 2)]
  freqs = [b * sample_rate / n_fft for b in range(bins)]
  weights = np.zeros((bins, n_mels))
  for i in range(n_mels):
    lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
    for b, f in enumerate(freqs):
      w = (f - lo) / (c - lo) if lo <= f <= c else (hi - f) / (hi - c) if c < f <= hi else 0.0
      weights[b, i] = w * (2.0 / (hi - lo) if norm == "slaney" else 1.0)
  db = 10 * np.log10(np.maximum(power @ weights, floor)).T  # [mels, frames]
  db = np.maximum(db, db.max() - top_db)
  return (db - db.min()) / (db.max() - db.min())


def test_mel_scales_at_known_points():
  assert spec.hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
  assert spec.hz_to_mel(6400.0, "slaney") == pytest.approx(15.0 + 27.0)  # 27 steps per x6.4
  assert spec.hz_to_mel(200.0, "slaney") == pytest.approx(3.0)
  assert spec.hz_to_mel(700.0, "htk") == pytest.approx(2595.0 * math.log10(2.0))
  hz = np.array([0.0, 50.0, 999.0, 1000.0, 1001.0, 4000.0, 22050.0])
  for scale in spec.MEL_SCALES:
    np.testing.assert_allclose(spec.mel_to_hz(spec.hz_to_mel(hz, scale), scale), hz, atol=1e-9)
    got = spec.hz_to_mel(hz, scale)
    np.testing.assert_allclose(got, [reference_mel_point(h, scale) for h in hz], rtol=1e-12)


@pytest.mark.parametrize("scale", spec.MEL_SCALES)
@pytest.mark.parametrize("norm", spec.MEL_NORMS)
def test_filterbank_triangles_edges_and_normalisation(scale, norm):
  n_fft, n_mels, fmin, fmax = 2048, 24, 100.0, 7000.0
  fb = spec.mel_filterbank(sample_rate=SR, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                           scale=scale, norm=norm)
  assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == np.float32
  fb = fb.astype(np.float64)
  freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
  edges = spec.mel_band_edges(n_mels, fmin, fmax, scale)
  # Edges: fmin and fmax at the ends, equal steps in mel between.
  assert edges[0] == pytest.approx(fmin) and edges[-1] == pytest.approx(fmax)
  np.testing.assert_allclose(np.diff(spec.hz_to_mel(edges, scale)),
                             (spec.hz_to_mel(fmax, scale) - spec.hz_to_mel(fmin, scale)) / (n_mels + 1))
  bin_width = SR / n_fft
  for i in range(n_mels):
    lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
    w = fb[:, i]
    assert (w >= 0).all()
    assert not w[(freqs <= lo) | (freqs >= hi)].any()           # zero outside its band
    inside = np.flatnonzero(w)
    peak = inside[np.argmax(w[inside])]
    assert abs(freqs[peak] - c) <= bin_width                       # peaks at its centre
    assert (np.diff(w[inside[0]:peak + 1]) >= 0).all() and (np.diff(w[peak:inside[-1] + 1]) <= 0).all()
    scale_factor = 2.0 / (hi - lo) if norm == "slaney" else 1.0
    # Linear ramps: on the rising side w = (f - lo) / (c - lo) times the normalisation.
    rising = inside[freqs[inside] <= c]
    np.testing.assert_allclose(w[rising], scale_factor * (freqs[rising] - lo) / (c - lo), rtol=1e-6)
    if norm == "slaney" and hi - lo > 20 * bin_width:  # unit area (a Riemann sum over bins)
      assert np.sum(w) * bin_width == pytest.approx(1.0, rel=0.02)
    if norm is None:
      assert w.max() <= 1.0


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None)])
def test_log_mel_matches_a_float64_loop_reference(scale, norm):
  rng = np.random.default_rng()  # fresh inputs every run
  t = np.arange(SR // 4) / SR
  clips = np.stack([
      0.5 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.05 * rng.standard_normal(t.size),
      0.3 * np.sin(2 * np.pi * (300 + 4000 * t) * t),                           # chirp
      0.1 * rng.standard_normal(t.size)]).astype(np.float32)                   # noise
  got = jax.jit(lambda x: spec.log_mel_spectrogram(x, scale=scale, norm=norm, **SETTINGS))(clips)
  frames = spec.num_frames(t.size, SETTINGS["hop_length"])
  assert got.shape == (3, SETTINGS["n_mels"], frames, 1) and got.dtype == jnp.float32
  for clip, image in zip(clips, np.asarray(got)):
    want = reference_log_mel(clip, scale=scale, norm=norm, **SETTINGS)
    # On [0, 1] over an 80 dB range: 1e-4 is 0.008 dB (float32 FFT vs float64 DFT).
    np.testing.assert_allclose(image[..., 0], want, atol=1e-4)
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)


def test_silence_maps_to_zeros_and_bad_arguments_are_named():
  out = spec.log_mel_spectrogram(jnp.zeros((2, 1600)), scale="slaney", norm="slaney", **SETTINGS)
  assert not np.asarray(out).any()
  with pytest.raises(ValueError, match="fmax"):
    spec.mel_filterbank(sample_rate=SR, n_fft=512, n_mels=8, fmin=0.0, fmax=9000.0,
                        scale="htk", norm=None)
  with pytest.raises(ValueError, match="scale='mel'"):
    spec.mel_filterbank(sample_rate=SR, n_fft=512, n_mels=8, fmin=0.0, fmax=8000.0,
                        scale="mel", norm=None)
  with pytest.raises(ValueError, match=r"\[clips, samples\]"):
    spec.log_mel_spectrogram(jnp.zeros((1600,)), scale="htk", norm=None, **SETTINGS)


@pytest.mark.parametrize("scale", spec.MEL_SCALES)
def test_matches_librosa_where_installed(scale):
  librosa = pytest.importorskip("librosa", reason="librosa is not installed (optional check)")
  norm = "slaney"
  fb = spec.mel_filterbank(sample_rate=SR, n_fft=512, n_mels=40, fmin=0.0, fmax=8000.0,
                           scale=scale, norm=norm)
  want = librosa.filters.mel(sr=SR, n_fft=512, n_mels=40, fmin=0.0, fmax=8000.0,
                             htk=scale == "htk", norm=norm)
  np.testing.assert_allclose(fb.T, want, rtol=1e-6, atol=1e-6 * want.max())  # measured 1e-7
  clip = np.random.default_rng().standard_normal(SR // 2).astype(np.float32) * 0.1
  mel = librosa.feature.melspectrogram(y=clip, sr=SR, n_fft=512, hop_length=160, n_mels=40,
                                       fmin=0.0, fmax=8000.0, htk=scale == "htk", norm=norm,
                                       center=True, pad_mode="constant", power=2.0)
  db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
  want = (db - db.min()) / (db.max() - db.min())
  got = spec.log_mel_spectrogram(clip[None], scale=scale, norm=norm, **SETTINGS)
  np.testing.assert_allclose(np.asarray(got)[0, ..., 0], want, atol=1e-5)  # measured 3e-7
