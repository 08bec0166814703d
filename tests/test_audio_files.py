"""Audio loaders: an ESC-50-layout fixture and a class-folder fixture written here, with
resampling, mono mixing, fixed length, damaged files skipped, and the errors users see."""

import logging

import numpy as np
import pytest
import soundfile

from vicreg_jax.data import audio_files

RATE = 16000
CLIP = RATE // 2  # 0.5 s


def tone(freq, seconds, rate, channels=1):
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.5 * np.sin(2 * np.pi * freq * t)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def peak_hz(clip, rate):
  spectrum = np.abs(np.fft.rfft(clip))
  return np.argmax(spectrum) * rate / len(clip)


def test_decode_resamples_mixes_to_mono_and_fixes_the_length(tmp_path):
  path = tmp_path / "stereo_44k.flac"
  soundfile.write(path, tone(1000.0, 1.0, 44100, channels=2), 44100)
  clip = audio_files.decode_clip(str(path), RATE, CLIP)
  assert clip.shape == (CLIP,) and clip.dtype == np.float32
  assert peak_hz(clip, RATE) == pytest.approx(1000.0, abs=RATE / CLIP)  # still 1 kHz at 16 kHz
  assert np.max(np.abs(clip)) == pytest.approx(0.5, rel=0.02)         # the amplitude kept
  short = tmp_path / "short.wav"
  soundfile.write(short, tone(440.0, 0.1, RATE), RATE)
  clip = audio_files.decode_clip(str(short), RATE, CLIP)
  assert np.any(clip[:RATE // 10]) and not np.any(clip[RATE // 10:])  # zero-padded at the end
  aiff = tmp_path / "tone.aiff"  # Hydrogen's drum kits ship AIFF
  soundfile.write(aiff, tone(500.0, 1.0, 48000), 48000, format="AIFF")
  assert peak_hz(audio_files.decode_clip(str(aiff), RATE, CLIP), RATE) == pytest.approx(
      500.0, abs=RATE / CLIP)
  ogg = tmp_path / "tone.ogg"
  soundfile.write(ogg, tone(2000.0, 1.0, 22050), 22050, format="OGG", subtype="VORBIS")
  assert peak_hz(audio_files.decode_clip(str(ogg), RATE, CLIP), RATE) == pytest.approx(
      2000.0, abs=RATE / CLIP)


def test_damaged_and_empty_files_are_named_in_the_error(tmp_path):
  (tmp_path / "noise.wav").write_bytes(b"not audio at all" * 10)
  soundfile.write(tmp_path / "empty.wav", np.zeros(0), RATE)
  for name in ("noise.wav", "empty.wav"):
    with pytest.raises(audio_files.UnreadableAudio, match=name):
      audio_files.decode_clip(str(tmp_path / name), RATE, CLIP)


def write_esc50(root, damaged=()):
  """A tiny ESC-50: 3 classes (targets 0, 7, 41; 7 is in ESC-10), 2 clips per fold."""
  (root / "audio").mkdir(parents=True)
  (root / "meta").mkdir()
  lines = [",".join(audio_files.ESC50_COLUMNS)]
  classes = {0: ("dog", True), 7: ("insects", False), 41: ("chainsaw", True)}
  for fold in audio_files.ESC50_FOLDS:
    for target, (category, esc10) in classes.items():
      for take in "AB":
        name = f"{fold}-{100 + target}-{take}-{target}.wav"
        if name in damaged:
          (root / "audio" / name).write_bytes(b"\x00" * 100)
        else:
          soundfile.write(root / "audio" / name, tone(200.0 + 50 * target, 0.3, 44100), 44100)
        lines.append(f"{name},{fold},{target},{category},{esc10},{100 + target},{take}")
  (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


def test_esc50_folds_labels_and_esc10(tmp_path):
  write_esc50(tmp_path)
  clips, labels, names = audio_files.load_esc50(str(tmp_path), (1, 2, 3, 4), sample_rate=RATE,
                                                clip_samples=CLIP)
  assert clips.shape == (4 * 3 * 2, CLIP) and labels.dtype == np.int32
  assert names == ["dog", "insects", "chainsaw"] and sorted(set(labels)) == [0, 1, 2]
  # Each clip's label is its class: the tone's frequency says which (200 + 50 * target Hz).
  for clip, label in zip(clips, labels):
    assert peak_hz(clip, RATE) == pytest.approx(200.0 + 50 * [0, 7, 41][label], abs=RATE / CLIP)
  test, test_labels, _ = audio_files.load_esc50(str(tmp_path), (5,), sample_rate=RATE,
                                                clip_samples=CLIP)
  assert len(test) == 6 and np.bincount(test_labels).tolist() == [2, 2, 2]
  ten, ten_labels, ten_names = audio_files.load_esc50(str(tmp_path), (5,), sample_rate=RATE,
                                                      clip_samples=CLIP, esc10=True)
  assert ten_names == ["dog", "chainsaw"] and sorted(set(ten_labels)) == [0, 1] and len(ten) == 4


def test_esc50_skips_damaged_clips_and_explains_bad_input(tmp_path, caplog):
  write_esc50(tmp_path, damaged=("5-100-A-0.wav",))
  with caplog.at_level(logging.WARNING):
    clips, labels, _ = audio_files.load_esc50(str(tmp_path), (5,), sample_rate=RATE,
                                              clip_samples=CLIP)
  assert len(clips) == 5 and np.bincount(labels).tolist() == [1, 2, 2]
  assert "skipped 1" in caplog.text and "5-100-A-0.wav" in caplog.text
  with pytest.raises(ValueError, match=r"folds \[6\]"):
    audio_files.load_esc50(str(tmp_path), (6,), sample_rate=RATE, clip_samples=CLIP)
  with pytest.raises(FileNotFoundError, match="meta/esc50.csv"):
    audio_files.load_esc50(str(tmp_path / "nope"), (1,), sample_rate=RATE, clip_samples=CLIP)
  (tmp_path / "meta" / "esc50.csv").write_text("filename,fold\nx.wav,1\n")
  with pytest.raises(ValueError, match="lacks the columns"):
    audio_files.load_esc50(str(tmp_path), (1,), sample_rate=RATE, clip_samples=CLIP)


def test_audio_folder_classes_and_errors(tmp_path):
  for cls, freq in (("hum", 120.0), ("whistle", 3000.0)):
    (tmp_path / cls).mkdir()
    for i in range(3):
      soundfile.write(tmp_path / cls / f"{i}.wav", tone(freq, 0.2, 22050), 22050)
  (tmp_path / "hum" / "notes.txt").write_text("not audio")  # ignored: not an audio extension
  (tmp_path / "whistle" / "broken.ogg").write_bytes(b"OggS" + b"\x00" * 50)  # skipped
  clips, labels, classes = audio_files.load_audio_folder(str(tmp_path), sample_rate=RATE,
                                                         clip_samples=CLIP)
  assert classes == ["hum", "whistle"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
  assert clips.shape == (6, CLIP)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    audio_files.load_audio_folder(str(tmp_path / "nope"), sample_rate=RATE, clip_samples=CLIP)
  empty = tmp_path / "empty"
  (empty / "cls").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"no audio files \(\.wav, \.flac.*\['cls'\]"):
    audio_files.load_audio_folder(str(empty), sample_rate=RATE, clip_samples=CLIP)
  (empty / "cls" / "a.wav").write_bytes(b"RIFF" + b"\x00" * 40)
  with pytest.raises(FileNotFoundError, match="none of the 1 audio files could be decoded"):
    audio_files.load_audio_folder(str(empty), sample_rate=RATE, clip_samples=CLIP)
