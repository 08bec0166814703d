"""The core package runs where TensorFlow is absent: nothing but the streaming pipeline imports it."""

import subprocess
import sys


def test_core_modules_do_not_import_tensorflow():
  code = ("import sys, vicreg_jax, vicreg_jax.train, vicreg_jax.data, vicreg_jax.export, "
          "vicreg_jax.evaluate.report, vicreg_jax.interop, vicreg_jax.evaluate.run, "
          "vicreg_jax.evaluate.monitor, vicreg_jax.cli; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]; "
          "print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
