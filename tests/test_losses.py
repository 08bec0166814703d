"""vicreg_loss against an independent float64 NumPy transcription of the official formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vicreg_jax import losses

COEFFS = dict(sim=25.0, std=25.0, cov=1.0, gamma=1.0, eps=1e-4)


# ----------------------------------------------------------------------------------------
# Float64 reference: the official main_vicreg.py formulas, with hand-derived gradients.
# ----------------------------------------------------------------------------------------
def _ref_branch(x, gamma, eps):
  """Variance and covariance terms of one branch and their gradients w.r.t. x (float64)."""
  n, d = x.shape
  xc = x - x.mean(0)
  var = (xc ** 2).sum(0) / (n - 1)
  std = np.sqrt(var + eps)
  hinge = gamma - std
  v = np.maximum(hinge, 0).mean()
  dv = -((hinge > 0) / (2 * std * d))[None, :] * 2 * xc / (n - 1)
  cov = xc.T @ xc / (n - 1)
  off = cov * (1 - np.eye(d))
  c = (off ** 2).sum() / d
  dc = 4 * xc @ off / ((n - 1) * d)
  return v, dv - dv.mean(0), c, dc - dc.mean(0)


def reference_loss(a, b, *, sim, std, cov, gamma, eps, variance_reduction="mean"):
  """Returns (loss, dloss/da, dloss/db, terms) in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n, d = a.shape
  inv = ((a - b) ** 2).mean()
  dinv = 2 * (a - b) / (n * d)
  va, dva, ca, dca = _ref_branch(a, gamma, eps)
  vb, dvb, cb, dcb = _ref_branch(b, gamma, eps)
  k = 0.5 if variance_reduction == "mean" else 1.0
  loss = sim * inv + std * k * (va + vb) + cov * (ca + cb)
  ga = sim * dinv + std * k * dva + cov * dca
  gb = -sim * dinv + std * k * dvb + cov * dcb
  terms = dict(invariance=inv, variance=k * (va + vb), covariance=ca + cb,
               std_a=a.std(0, ddof=1).mean(), std_b=b.std(0, ddof=1).mean())
  return loss, ga, gb, terms


def embeddings(seed, n, d, dtype=np.float32):
  """Random embedding pairs with unequal scales, a shared component and some dead dims."""
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.05, 2.0, d)  # some dims below gamma -> active hinge, some above
  common = rng.standard_normal((n, d))
  a = (common + 0.5 * rng.standard_normal((n, d))) * scale + rng.standard_normal(d)
  b = (common + 0.5 * rng.standard_normal((n, d))) * scale
  return a.astype(dtype), b.astype(dtype)


def rel_err(x, ref):
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return np.max(np.abs(x - ref)) / np.max(np.abs(ref))


def value_and_grads(fn, a, b):
  (loss, metrics), (ga, gb) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(a, b)
  return loss, metrics, ga, gb


def test_reference_gradient_matches_finite_differences():
  a, b = embeddings(0, 6, 5)
  _, ga, gb, _ = reference_loss(a, b, **COEFFS)
  h = 1e-6
  for x, g, i in ((a, ga, 0), (b, gb, 1)):
    num = np.zeros_like(g)
    for idx in np.ndindex(*x.shape):
      xp, xm = np.array(x, np.float64), np.array(x, np.float64)
      xp[idx] += h
      xm[idx] -= h
      args_p = (xp, b) if i == 0 else (a, xp)
      args_m = (xm, b) if i == 0 else (a, xm)
      num[idx] = (reference_loss(*args_p, **COEFFS)[0]
                  - reference_loss(*args_m, **COEFFS)[0]) / (2 * h)
    assert rel_err(g, num) < 1e-6


# ----------------------------------------------------------------------------------------
# Single device.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(16, 48), (48, 16)], ids=["n<d", "n>d"])
@pytest.mark.parametrize("cov_method", ["auto", "covariance", "gram"])
@pytest.mark.parametrize("variance_reduction", ["mean", "sum"])
def test_matches_float64_reference(n, d, cov_method, variance_reduction):
  a, b = embeddings(n * 1000 + d, n, d)
  fn = jax.jit(functools.partial(losses.vicreg_loss, cov_method=cov_method,
                                 variance_reduction=variance_reduction))
  loss, metrics, ga, gb = value_and_grads(fn, a, b)
  ref, rga, rgb, terms = reference_loss(a, b, variance_reduction=variance_reduction, **COEFFS)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  assert rel_err(loss, ref) <= 1e-5
  assert rel_err(ga, rga) <= 1e-4 and rel_err(gb, rgb) <= 1e-4
  for name, value in terms.items():
    assert rel_err(metrics[name], value) <= 1e-5, name
  assert metrics["variance"] > 0 and metrics["covariance"] > 0  # all terms exercised
  for name, coeff in (("invariance", 25.0), ("variance", 25.0), ("covariance", 1.0)):
    np.testing.assert_allclose(metrics[name + "_weighted"], coeff * metrics[name], rtol=1e-6)


@pytest.mark.parametrize("cov_method", ["covariance", "gram"])
def test_bf16_3x_precision_within_parity_tolerance(cov_method):
  a, b = embeddings(9, 64, 256)
  fn = jax.jit(functools.partial(losses.vicreg_loss, cov_method=cov_method, precision="bf16_3x"))
  loss, _, ga, gb = value_and_grads(fn, a, b)
  ref, rga, rgb, _ = reference_loss(a, b, **COEFFS)
  assert rel_err(loss, ref) <= 1e-5
  assert rel_err(ga, rga) <= 1e-4 and rel_err(gb, rgb) <= 1e-4


def test_official_variance_is_half_the_papers():
  a, b = embeddings(1, 16, 8)
  official = losses.vicreg_loss(a, b)[1]["variance"]
  paper = losses.vicreg_loss(a, b, variance_reduction="sum")[1]["variance"]
  np.testing.assert_allclose(paper, 2 * official, rtol=1e-6)


def test_covariance_and_gram_paths_agree():
  a, _ = embeddings(2, 40, 300)
  grads = {}
  for method in ("covariance", "gram"):
    value, grads[method] = jax.value_and_grad(
        functools.partial(losses.covariance_term, method=method))(a)
    grads[method + "_value"] = value
  assert rel_err(grads["gram_value"], grads["covariance_value"]) < 1e-6
  assert rel_err(grads["gram"], grads["covariance"]) < 1e-5


def test_auto_method_picks_cheaper_path():
  assert losses.resolve_cov_method(256, 8192) == "gram"
  assert losses.resolve_cov_method(8192, 256) == "covariance"
  assert losses.resolve_cov_method(256, 8192, "covariance") == "covariance"


def test_covariance_precision_at_d_65536():
  """The off-diagonal sum stays near fp32 rounding where a naive subtraction loses ~1e-4."""
  a, _ = embeddings(3, 12, 65536)
  got = jax.jit(functools.partial(losses.covariance_term, method="gram"))(a)
  xc = a.astype(np.float64) - a.astype(np.float64).mean(0)
  g = xc @ xc.T
  ref = ((g ** 2).sum() - ((xc ** 2).sum(0) ** 2).sum()) / (11 ** 2 * 65536)
  assert rel_err(got, ref) < 1e-6


def test_large_normaliser_does_not_overflow_int32():
  """(n - 1)^2 * d > 2^31 at n = 1024, d = 2100; the term must stay finite and correct."""
  a, _ = embeddings(8, 1024, 2100)
  got = jax.jit(losses.covariance_term)(a)
  xc = a.astype(np.float64) - a.astype(np.float64).mean(0)
  g = xc @ xc.T
  ref = ((g ** 2).sum() - ((xc ** 2).sum(0) ** 2).sum()) / (1023.0 ** 2 * 2100)
  assert rel_err(got, ref) < 1e-5


def test_collapsed_embeddings():
  """Constant embeddings: hinge at gamma - sqrt(eps) per dim, no covariance, std 0."""
  z = jnp.ones((8, 16))
  _, m = losses.vicreg_loss(z, z)
  np.testing.assert_allclose(m["variance"], 1.0 - np.sqrt(1e-4), rtol=1e-6)
  assert m["covariance"] == 0 and m["invariance"] == 0 and m["std_a"] == 0


def test_bfloat16_inputs_computed_in_float32():
  a, b = embeddings(4, 32, 64)
  a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
  loss, metrics, ga, gb = value_and_grads(jax.jit(losses.vicreg_loss), a16, b16)
  ref, rga, _, _ = reference_loss(np.asarray(a16, np.float32), np.asarray(b16, np.float32),
                                  **COEFFS)
  assert loss.dtype == jnp.float32 and metrics["std_a"].dtype == jnp.float32
  assert rel_err(loss, ref) <= 1e-5
  assert ga.dtype == jnp.bfloat16 and rel_err(ga, rga) <= 1e-2  # bf16 cotangent rounding


@pytest.mark.parametrize("a_shape,b_shape,match", [
    ((4, 2, 3), (4, 2, 3), "shape \\(batch, dim\\)"),
    ((4, 8), (4, 9), "same shape"),
    ((1, 8), (1, 8), "at least 2 samples"),
])
def test_bad_shapes_raise_at_trace_time(a_shape, b_shape, match):
  with pytest.raises(ValueError, match=match):
    jax.jit(losses.vicreg_loss).lower(jnp.zeros(a_shape), jnp.zeros(b_shape))


def test_bad_options_raise():
  z = jnp.zeros((4, 8))
  with pytest.raises(TypeError, match="floating-point"):
    losses.vicreg_loss(jnp.zeros((4, 8), jnp.int32), jnp.zeros((4, 8), jnp.int32))
  with pytest.raises(ValueError, match="cov_method"):
    losses.vicreg_loss(z, z, cov_method="svd")
  with pytest.raises(ValueError, match="variance_reduction"):
    losses.vicreg_loss(z, z, variance_reduction="max")
  with pytest.raises(ValueError, match="precision must be one of"):
    losses.vicreg_loss(z, z, precision="tf16")


# ----------------------------------------------------------------------------------------
# Several devices: jit on sharded arrays, shard_map and pmap with an axis name.
# ----------------------------------------------------------------------------------------
N_DEV = 8


@pytest.fixture(scope="module")
def pair():
  a, b = embeddings(5, 32, 48)
  return a, b, reference_loss(a, b, **COEFFS)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_jit_on_sharded_batch(pair, axis_type):
  a, b, (ref, rga, rgb, _) = pair
  mesh = Mesh(np.asarray(jax.devices()[:N_DEV]), ("data",), axis_types=(axis_type,))
  spec = NamedSharding(mesh, P("data"))
  a_s, b_s = jax.device_put(a, spec), jax.device_put(b, spec)
  with jax.set_mesh(mesh):
    loss, _, ga, gb = value_and_grads(jax.jit(losses.vicreg_loss), a_s, b_s)
  assert rel_err(loss, ref) <= 1e-5
  assert rel_err(ga, rga) <= 1e-4 and rel_err(gb, rgb) <= 1e-4
  assert ga.sharding.is_equivalent_to(spec, 2)


def test_shard_map_with_axis_name(pair):
  """Gradients w.r.t. local embeddings and replicated params equal the full-batch ones."""
  a, b, (ref, rga, rgb, _) = pair
  mesh = Mesh(np.asarray(jax.devices()[:N_DEV]), ("i",), axis_types=(AxisType.Explicit,))
  local = functools.partial(losses.vicreg_loss, axis_name="i")

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P("i"), P("i")),
                     out_specs=(P(), P("i"), P("i")))
  def grads_wrt_embeddings(a, b):
    loss, (ga, gb) = jax.value_and_grad(lambda a, b: local(a, b)[0], argnums=(0, 1))(a, b)
    return loss, ga, gb

  spec = NamedSharding(mesh, P("i"))
  loss, ga, gb = grads_wrt_embeddings(jax.device_put(a, spec), jax.device_put(b, spec))
  assert rel_err(loss, ref) <= 1e-5
  assert rel_err(ga, rga) <= 1e-4 and rel_err(gb, rgb) <= 1e-4

  # A replicated projection W: x_a = a @ W, x_b = b @ W. Reference gradient by chain rule.
  w = np.random.default_rng(6).standard_normal((48, 40)).astype(np.float32) / 7
  wref = a.T.astype(np.float64) @ reference_loss(a @ w, b @ w, **COEFFS)[1] + \
      b.T.astype(np.float64) @ reference_loss(a @ w, b @ w, **COEFFS)[2]

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P("i"), P("i")), out_specs=P())
  def grad_wrt_params(w, a, b):
    return jax.grad(lambda w: local(a @ w, b @ w)[0])(w)

  gw = grad_wrt_params(jax.device_put(w, NamedSharding(mesh, P())), jax.device_put(a, spec),
                       jax.device_put(b, spec))
  assert rel_err(gw, wref) <= 1e-4  # not multiplied by the device count


def test_pmap_with_axis_name_and_pmean_of_grads(pair):
  """Classic pmap data parallelism: grads averaged with pmean match the full batch."""
  a, b, _ = pair
  w = np.random.default_rng(7).standard_normal((48, 40)).astype(np.float32) / 7
  _, rga, rgb, _ = reference_loss(a @ w, b @ w, **COEFFS)
  wref = a.T.astype(np.float64) @ rga + b.T.astype(np.float64) @ rgb

  def step(w, a, b):
    g = jax.grad(lambda w: losses.vicreg_loss(a @ w, b @ w, axis_name="i")[0])(w)
    return jax.lax.pmean(g, "i")

  gw = jax.pmap(step, axis_name="i", in_axes=(None, 0, 0))(
      w, a.reshape(N_DEV, -1, 48), b.reshape(N_DEV, -1, 48))
  assert rel_err(np.asarray(gw)[0], wref) <= 1e-4
