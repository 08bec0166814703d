"""Imports: the core package runs without TensorFlow (only data.tf_input imports it); no cycles."""

import ast
import pathlib
import subprocess
import sys

import vicreg_jax


def test_core_modules_do_not_import_tensorflow():
  code = ("import sys, vicreg_jax, vicreg_jax.train, vicreg_jax.data, vicreg_jax.export, "
          "vicreg_jax.evaluate.report, vicreg_jax.interop, vicreg_jax.evaluate.run, "
          "vicreg_jax.evaluate.monitor, vicreg_jax.cli; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]; "
          "print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr


def _package_imports(package: pathlib.Path) -> dict[str, set[str]]:
  """Module -> the package modules it imports (inside functions too), from the source."""
  root = package.parent
  modules = {}
  for path in package.rglob("*.py"):
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    modules[name.removesuffix(".__init__")] = path
  edges = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        targets.add(node.module)
    resolved = set()
    for target in targets:
      while target and target not in modules:
        target = target.rpartition(".")[0]
      # A package and its own submodules are not a cycle of concern.
      if target and not (name.startswith(target + ".") or target.startswith(name + ".")
                         or target == name):
        resolved.add(target)
    edges[name] = resolved
  return edges


def test_no_import_cycle():
  """No import cycle among vicreg_jax's modules, counting lazy (function-level) imports."""
  edges = _package_imports(pathlib.Path(vicreg_jax.__file__).parent)
  done, path = set(), []

  def visit(module):
    if module in path:
      raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
    if module in done:
      return
    path.append(module)
    for target in sorted(edges[module]):
      visit(target)
    path.pop()
    done.add(module)

  for module in sorted(edges):
    visit(module)
  assert {"vicreg_jax.data.tf_input", "vicreg_jax.data.geometry"} <= set(edges)
