"""Audio view pairs on the device: crops are windows of the clip, gains in range, the mel view
is the spectrogram of its crop, determinism per key, and sharding over 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vicreg_jax import config as config_lib
from vicreg_jax import parallel
from vicreg_jax.data import audio_views, spectrogram


def small_audio(**overrides):
  audio = config_lib.audio_recipe()
  audio.update(dict(sample_rate=8000, clip_seconds=0.5, crop_seconds_a=0.25,
                    crop_seconds_b=0.2, n_fft=256, hop_length=80, n_mels=16, fmax=4000.0))
  audio.update(overrides)
  return audio


def clips_of(n, audio, seed=None):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((n, audio_views.seconds_to_samples(audio.clip_seconds,
                                                                audio.sample_rate))).astype(np.float32)


def locate(window, clip):
  """(start, gain) with window == gain * clip[start:start + len(window)], or None."""
  for start in range(len(clip) - len(window) + 1):
    piece = clip[start:start + len(window)]
    gain = np.dot(window, piece) / np.dot(piece, piece)
    if np.allclose(window, gain * piece, rtol=1e-5, atol=1e-6):
      return start, gain
  return None


def test_views_are_gained_windows_of_the_clip_and_mel_of_view_b():
  audio = small_audio()
  clips = clips_of(6, audio)
  key = jax.random.key(np.random.default_rng().integers(2**31))
  wave, mel = jax.jit(lambda k, c: audio_views.audio_view_pair(k, c, audio))(key, clips)
  assert wave.shape == (6, 2000, 1) and wave.dtype == jnp.float32
  assert mel.shape == (6, 16, spectrogram.num_frames(1600, 80), 1)
  starts = []
  for clip, view in zip(clips, np.asarray(wave)[..., 0]):
    found = locate(view, clip)
    assert found is not None, "view a is not a scaled window of its clip"
    start, gain = found
    assert 10 ** (-6 / 20) - 1e-6 <= gain <= 10 ** (6 / 20) + 1e-6   # within +-6 dB
    starts.append(start)
  assert len(set(starts)) > 1  # random starts, not one fixed offset
  # View b: the spectrogram of its own crop (min-max scaling makes it gain-free).
  crop_key = jax.random.split(key, 4)[1]
  crops = audio_views.random_time_crops(crop_key, jnp.asarray(clips), 1600)
  want = spectrogram.log_mel_spectrogram(
      crops, sample_rate=8000, n_fft=256, hop_length=80, n_mels=16, fmin=0.0, fmax=4000.0,
      scale="slaney", norm="slaney", floor=audio.floor, top_db=audio.top_db)
  np.testing.assert_allclose(mel, want, atol=1e-5)


def test_same_key_same_views_other_key_other_views_noise_added():
  audio = small_audio()
  clips = jnp.asarray(clips_of(4, audio, seed=0))
  pair = lambda k, a=audio: audio_views.audio_view_pair(jax.random.key(k), clips, a)
  np.testing.assert_array_equal(pair(1)[0], pair(1)[0])
  assert not np.allclose(pair(1)[0], pair(2)[0])
  clean, _ = pair(3, small_audio(gain_db=0.0))
  noisy, _ = pair(3, small_audio(gain_db=0.0, noise_std=0.1))
  assert np.std(np.asarray(noisy - clean)) == pytest.approx(0.1, rel=0.05)


def test_sharded_over_eight_devices():
  audio = small_audio()
  mesh = parallel.make_mesh()
  sharding = parallel.batch_sharding(mesh)
  clips = jax.device_put(clips_of(16, audio, seed=1), sharding)
  wave, mel = jax.jit(lambda k, c: audio_views.audio_view_pair(k, c, audio),
                      out_shardings=sharding)(jax.random.key(0), clips)
  assert len(jax.devices()) == 8
  for out in (wave, mel):
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(parallel.DATA_AXIS)), out.ndim)
    assert out.addressable_shards[0].data.shape[0] == 2


def test_crop_longer_than_the_clip_is_refused():
  audio = small_audio(crop_seconds_a=1.0)
  with pytest.raises(ValueError, match="crop_seconds"):
    audio_views.audio_view_pair(jax.random.key(0), jnp.asarray(clips_of(2, audio)), audio)
