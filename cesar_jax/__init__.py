"""cesar_jax: RL for audio-language-model reasoning, and test-time scaling evaluation, in JAX."""

from cesar_jax import platforms as _platforms

# With libtpu installed but no TPU attached, run on the CPU without TPU start-up or warnings.
_platforms.default_to_cpu()
