"""ESC-50, the paper's multi-modal experiment: raw waveform <-> log-mel spectrogram.

Bardes et al., ICLR 2022, Appendix D.2: branch a is a 1-D ResNet-18 on the raw audio
(representation 384, i.e. base width 48), branch b a standard 2-D ResNet-18 on the
one-channel mel spectrogram normalised to [0, 1] (representation 512); AdamW, lr 5e-4,
100 epochs; trained on folds 1-4 (1,600 clips), a linear probe on frozen representations
tested on fold 5 (400 clips): 78.4% top-1 (Barlow Twins 75.4%, supervised 72.7%).
The paper gives no batch size, expander, audio rate, crop lengths or mel settings: the
values below marked "ours" are our choices.

ESC-50 is not downloadable here: clone https://github.com/karolpiczak/ESC-50 (CC BY-NC 3.0)
and pass ``--config.data.path=/path/to/ESC-50``. Variant ``esc10``: the ESC-10 subset.
"""

from vicreg_jax.config import audio_recipe, base_config


def get_config(variant: str = ""):
  c = base_config()
  c.data.source = "audio"
  c.data.name = "esc50"
  c.data.path = ""                  # set --config.data.path to your ESC-50 clone
  c.data.test_fold = 5              # paper: folds 1-4 train, fold 5 test
  c.data.split = "train"
  c.audio = audio_recipe()
  c.audio.clip_seconds = 5.0        # ESC-50 clips are 5 s
  c.audio.crop_seconds_a = 2.0      # ours
  c.audio.crop_seconds_b = 2.0      # ours
  c.model.arch = "resnet18"
  c.model.spatial_dims = 1          # branch a: 1-D ResNet-18 on the waveform
  c.model.base_width = 48           # paper: 1-D representation of 384 = 8 x 48
  c.model.shared_branches = False
  c.model.branch_b.spatial_dims = 2  # branch b: 2-D ResNet-18 on the log-mel image
  c.model.branch_b.base_width = 64  # standard ResNet-18: representation 512
  c.model.expander = "2048-2048-2048"  # ours
  c.optim.name = "adamw"            # paper: AdamW
  c.optim.base_lr = 5e-4            # paper: lr 5e-4 (at our batch 256: peak = base_lr)
  c.optim.momentum = 0.9            # AdamW beta1 (PyTorch default)
  c.optim.weight_decay = 1e-2       # PyTorch AdamW default (paper: not given)
  c.batch_size = 256                # ours
  c.epochs = 100                    # paper
  c.log_every_steps = 10
  c.eval.split = "test"
  c.eval.train_split = "train"
  c.eval.branch = "a"               # the waveform encoder; "b" for the log-mel one
  c.eval.feature_batch = 64
  if variant == "esc10":
    c.data.esc10 = True
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of esc50_multimodal; use '' or 'esc10'.")
  return c
