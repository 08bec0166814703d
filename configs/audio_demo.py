"""Audio demo on CPU: waveform <-> log-mel VICReg on a folder of labelled recordings.

The ESC-50 recipe (``configs/esc50_multimodal.py``) made CPU-sized: 16 kHz, 1 s crops of
2 s clips, narrow 1-D and 2-D ResNet-18s, AdamW. ``--config.data.path`` is a folder of
``<class>/*.{wav,flac,ogg,aiff,mp3}`` (with ``train/`` and ``test/`` sub-folders, or split per
class by a seeded draw); the README's audio demo prepares one from a Debian package of
real recordings. After pretraining it reports kNN and linear-probe accuracy of the
waveform encoder against the same encoder at random initialisation.
Variant ``tiny``: a few steps of even smaller networks on short clips, for tests.
"""

from vicreg_jax.config import audio_recipe, base_config


def get_config(variant: str = ""):
  c = base_config()
  c.data.source = "audio"
  c.data.name = "folder"
  c.data.path = ""                  # set --config.data.path
  c.data.split = "train"
  c.audio = audio_recipe()          # 16 kHz, 2 s clips, 1 s crops, 64 mel bands
  c.model.arch = "resnet18"
  c.model.spatial_dims = 1
  c.model.base_width = 8
  c.model.shared_branches = False
  c.model.branch_b.spatial_dims = 2
  c.model.branch_b.base_width = 8
  c.model.expander = "512-512-512"
  c.model.dtype = "float32"         # bf16 is emulated (slow) on most CPUs
  c.optim.name = "adamw"
  c.optim.base_lr = 5e-4 * 4        # peak 5e-4 at batch 64 (base_lr is per 256)
  c.optim.weight_decay = 1e-2
  c.batch_size = 64
  c.epochs = 30
  c.log_every_steps = 10
  c.checkpoint.every_steps = 100
  c.eval.split = "test"
  c.eval.train_split = "train"
  c.eval.compare_random = True
  c.eval.feature_batch = 64
  if variant == "tiny":
    c.audio.sample_rate = 8000
    c.audio.clip_seconds = 0.5
    c.audio.crop_seconds_a = 0.25
    c.audio.crop_seconds_b = 0.25
    c.audio.n_fft = 256
    c.audio.hop_length = 80
    c.audio.n_mels = 16
    c.audio.fmax = 4000.0
    c.model.base_width = 4
    c.model.branch_b.base_width = 4
    c.model.expander = "32-32-32"
    c.batch_size = 16
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = False
    c.eval.compare_random = False
    c.eval.feature_batch = 16
    c.eval.linear.epochs = 5
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of audio_demo; use '' or 'tiny'.")
  return c
