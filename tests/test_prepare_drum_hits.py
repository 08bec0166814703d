"""experiments/prepare_drum_hits.py: instrument names to classes, a kit-wise split, and the
real Hydrogen kits where the Debian packages are installed."""

import os

import numpy as np
import pytest
import soundfile

from conftest import CONFIG_DIR, load_experiment
from vicreg_jax import config as config_lib
from vicreg_jax.data import audio_source

KIT_XML = """<?xml version="1.0"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{kit}</name>
 <instrumentList>
  <instrument><name>Kick Hard 1</name><layer><filename>k.wav</filename></layer></instrument>
  <instrument><name>Snare1</name><layer><filename>s.wav</filename></layer>
   <layer><filename>s2.wav</filename></layer></instrument>
  <instrument><name>Hand Clap</name><layer><filename>c.wav</filename></layer></instrument>
  <instrument><name>crash16inch</name><filename>x.wav</filename></instrument>
 </instrumentList>
</drumkit_info>
"""


@pytest.fixture(scope="module")
def script():
  return load_experiment("prepare_drum_hits")


def test_instrument_names(script):
  expected = {"Kick Hard 1": "kick", "a3 - bass drum 4": "kick", "Snare1": "snare",
              "Pearl Snare Rimshot": "snare", "Hat Pedal": "hihat", "Side OHH": "hihat",
              "Hi-Hat Open (Paiste)": "hihat", "Ride Bell": "cymbal", "crash20inch--2": "cymbal",
              "tomhi2": "tom", "Floor Tom": "tom", "Hand Clap": None, "Cowbell": None,
              "Pearl Side Stick": None, "Conga 2": None, "Drum 1": None}
  assert {name: script.instrument_class(name) for name in expected} == expected


def test_fixture_kits_split_by_kit_with_links(script, tmp_path, capsys):
  kits = tmp_path / "drumkits"
  for kit in ("TrainKit", script.TEST_KITS[0], script.EXCLUDED_KITS[0]):
    (kits / kit).mkdir(parents=True)
    (kits / kit / "drumkit.xml").write_text(KIT_XML.format(kit=kit))
    for name in ("k.wav", "s.wav", "s2.wav", "c.wav", "x.wav"):
      soundfile.write(kits / kit / name, np.zeros(100, np.float32), 8000)
  counts = script.main(["--out", str(tmp_path / "out"), "--drumkits", str(kits)])
  assert counts == {("train", "kick"): 1, ("train", "snare"): 2, ("train", "cymbal"): 1,
                    ("test", "kick"): 1, ("test", "snare"): 2, ("test", "cymbal"): 1}
  link = tmp_path / "out" / "test" / "snare" / f"{script.TEST_KITS[0]}__s2.wav"
  assert link.is_symlink() and os.path.samefile(link, kits / script.TEST_KITS[0] / "s2.wav")
  assert "| train | 1 | 1 | 2 | 4 |" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="not empty"):
    script.main(["--out", str(tmp_path / "out"), "--drumkits", str(kits)])
  with pytest.raises(SystemExit, match="apt-get install"):
    script.main(["--out", str(tmp_path / "o2"), "--drumkits", str(tmp_path / "nope")])


@pytest.mark.skipif(not os.path.isdir("/usr/share/hydrogen/data/drumkits"),
                    reason="Debian's hydrogen-drumkits is not installed (apt-get install -y "
                    "hydrogen-drumkits hydrogen-data)")
def test_real_drum_kits_load_as_an_audio_folder(script, tmp_path):
  counts = script.main(["--out", str(tmp_path / "hits")])
  assert {cls for _, cls in counts} == {"kick", "snare", "hihat", "tom", "cymbal"}
  config = config_lib.load_config_file(f"{CONFIG_DIR}/audio_demo.py",
                                       **{"data.path": str(tmp_path / "hits")})
  clips, labels, classes = audio_source.load_audio_split(config, "test")
  assert classes == ["cymbal", "hihat", "kick", "snare", "tom"]
  assert len(clips) == sum(n for (split, _), n in counts.items() if split == "test")
  assert np.abs(clips).max(axis=1).min() > 0  # every hit decoded to sound
