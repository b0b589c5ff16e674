"""models/stack.py: layers stacked in one module, run under a scan that traces the layer once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cesar_jax.models import config, decoder, stack

CFG = config.preset("tiny").text


def _layers(count, seed=0):
  return stack.create(lambda r: decoder.DecoderLayer(CFG, dtype=jnp.float32,
                                                     param_dtype=jnp.float32, rngs=r),
                      count, nnx.Rngs(seed))


def _inputs(t=5):
  x = jax.random.normal(jax.random.key(1), (2, t, CFG.hidden_size))
  cos, sin = decoder.rope_tables(jnp.arange(t)[None], CFG.kv_head_dim, CFG.rope_theta, jnp.float32)
  return x, cos, sin, jnp.ones((2, 1, 1, t), bool)


def _run(layers, x, cos, sin, mask, remat="none"):
  def body(layer, x, _):
    return layer(x, cos, sin, mask, is_causal=True)[0], None
  return stack.scan(layers, body, x, remat=remat)[0]


def test_a_stack_holds_every_layer_on_a_leading_axis_named_layers():
  layers = _layers(3)
  kernel = layers.mlp.up_proj.kernel
  assert kernel.get_value().shape == (3, CFG.hidden_size, CFG.intermediate_size)
  assert kernel.get_metadata()["out_sharding"] == ("layers", "embed", "mlp")
  assert stack.depth(layers) == 3
  value = np.asarray(kernel.get_value())
  assert not np.array_equal(value[0], value[1])  # each layer drawn from its own rng split
  first = stack.layer(layers, 1)
  np.testing.assert_array_equal(np.asarray(first.mlp.up_proj.kernel.get_value()), value[1])
  assert first.mlp.up_proj.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
  back = stack.join([stack.layer(layers, i) for i in range(3)])
  np.testing.assert_array_equal(np.asarray(back.mlp.up_proj.kernel.get_value()), value)
  assert back.mlp.up_proj.kernel.get_metadata()["out_sharding"] == ("layers", "embed", "mlp")
  with pytest.raises(ValueError, match="0 layers"):
    _layers(0)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_the_scan_gives_the_loop_over_layers_values_and_gradients(remat):
  layers, (x, cos, sin, mask) = _layers(3), _inputs()

  def loop(layers, x):
    for i in range(stack.depth(layers)):
      x = stack.layer(layers, i)(x, cos, sin, mask, is_causal=True)[0]
    return jnp.sum(jnp.tanh(x))

  def scanned(layers, x):
    return jnp.sum(jnp.tanh(_run(layers, x, cos, sin, mask, remat)))

  want, want_grad = nnx.value_and_grad(loop, argnums=(0, 1))(layers, x)
  got, got_grad = nnx.value_and_grad(scanned, argnums=(0, 1))(layers, x)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got_grad[1], want_grad[1], rtol=1e-4, atol=1e-6)
  for g, w in zip(jax.tree.leaves(got_grad[0]), jax.tree.leaves(want_grad[0])):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(want_grad[1]).max()) > 0


def _dots(count, unrolled):
  layers, inputs = _layers(count), _inputs()
  graphdef, state = nnx.split(layers)
  run = jax.jit(lambda state, *a: _run(nnx.merge(graphdef, state), *a))
  if unrolled:
    with stack.unrolled():
      lowered = run.lower(state, *inputs)
  else:
    lowered = run.lower(state, *inputs)
  return lowered.compile().as_text().count(" dot(")  # the compiled HLO, calls inlined


def test_the_program_does_not_grow_with_depth_unless_unrolled():
  """A scanned stack is one traced layer whatever the depth (compile time flat in depth);
  `stack.unrolled` (compile_check's cost analysis) traces every layer."""
  assert _dots(2, False) == _dots(6, False) > 0
  assert _dots(6, True) == 3 * _dots(2, True) == 6 * _dots(2, False)
