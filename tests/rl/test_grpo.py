"""GRPO core against values worked out by hand (the arithmetic is in the comments)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cesar_jax.rl import grpo

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------ advantages

# Three groups of G = 3, contiguous: [0, 1, 2], [5, 5, 5], [0, 2, 4].
REWARDS = jnp.array([0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 0.0, 2.0, 4.0])
# r - group mean: means 1, 5, 2.
CENTERED = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0, -2.0, 0.0, 2.0])


def test_group_advantages_sample_std():
  # ddof=1: group 1 var = (1 + 0 + 1) / 2 = 1 -> std 1; group 3 var = (4 + 0 + 4) / 2 = 4 -> std 2.
  # (ddof=0 would give std sqrt(2/3) and sqrt(8/3).)
  expected = [-1 / 1.0001, 0, 1 / 1.0001, 0, 0, 0, -2 / 2.0001, 0, 2 / 2.0001]
  got = grpo.get_advantage_estimator("group")(REWARDS, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_batch_advantages_use_batch_std():
  # All nine rewards: sum 24, mean 8/3, sum of squares 100 -> SS = 100 - 9 * 64/9 = 36;
  # var = 36 / 8 = 4.5 -> std = sqrt(4.5) = 2.1213203.
  got = grpo.get_advantage_estimator("batch")(REWARDS, 3)
  np.testing.assert_allclose(got, CENTERED / (math.sqrt(4.5) + 1e-4), rtol=1e-6)


def test_none_advantages_are_centered_only():
  got = grpo.get_advantage_estimator("none")(REWARDS, 3)
  np.testing.assert_allclose(got, CENTERED, atol=1e-7)


@pytest.mark.parametrize("name", ["group", "batch", "none"])
def test_identical_rewards_give_exactly_zero(name):
  # 0.1 * 3 / 3 != 0.1 in floating point; the advantage must still be exactly 0, never NaN.
  rewards = jnp.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7])
  got = np.asarray(jax.jit(grpo.get_advantage_estimator(name), static_argnums=1)(rewards, 3))
  assert np.all(got == 0.0), got


def test_single_sample_group_is_zero_not_nan():
  got = grpo.group_advantages(jnp.array([1.0, 3.0]), 1)
  assert np.all(np.asarray(got) == 0.0)


def test_bad_reward_layout_names_shape():
  with pytest.raises(ValueError, match=r"G=4.*\(6,\)"):
    grpo.group_advantages(jnp.zeros(6), 4)


def test_registry_add_and_lookup():
  @grpo.register_advantage_estimator("test_max_baseline")
  def max_baseline(rewards, num_generations):
    g = rewards.reshape(-1, num_generations)
    return (g - g.max(axis=1, keepdims=True)).reshape(-1)

  assert "test_max_baseline" in grpo.advantage_estimators()
  got = grpo.get_advantage_estimator("test_max_baseline")(jnp.array([1.0, 3.0]), 2)
  np.testing.assert_allclose(got, [-2.0, 0.0])
  with pytest.raises(KeyError, match="no_such.*group"):
    grpo.get_advantage_estimator("no_such")
  assert {"grpo", "bnpo", "dr_grpo", "dapo"} <= set(grpo.loss_aggregations())


# ------------------------------------------------------------------------------------ policy loss

# N = 2 sequences, T = 3. Row 1's last token is padding (mask 0) with a wild log-ratio.
MASK = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
ADV = jnp.array([1.0, -2.0])
# log-ratios: row 0 -> ratios [1.5, 0.5, 1.0]; row 1 -> [1.5, 0.5, e^20 (masked)].
OLD = jnp.zeros((2, 3))
LOGP = jnp.log(jnp.array([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]])).at[1, 2].set(50.0)
# eps = 0.2, per token -min(r A, clip(r, 0.8, 1.2) A):
#   row 0 (A = +1): r=1.5 -> -min(1.5, 1.2) = -1.2 (high clip); r=0.5 -> -0.5; r=1 -> -1.0
#   row 1 (A = -2): r=1.5 -> -min(-3, -2.4) = 3.0; r=0.5 -> -min(-1, -1.6) = 1.6 (low clip)
# masked sum = -2.7 + 4.6 = 1.9 over 5 active tokens.


@pytest.mark.parametrize("aggregation,kwargs,expected", [
    ("grpo", {}, (-2.7 / 3 + 4.6 / 2) / 2),  # (-0.9 + 2.3) / 2 = 0.7
    ("bnpo", {}, 1.9 / 5),  # 0.38
    ("dr_grpo", {}, 1.9 / (2 * 3)),  # default max length = T = 3
    ("dr_grpo", {"max_completion_length": 4}, 1.9 / (2 * 4)),  # 0.2375
    ("dapo", {}, 1.9 / 5),  # own batch count
])
def test_aggregations(aggregation, kwargs, expected):
  config = grpo.LossConfig(aggregation=aggregation, **kwargs)
  loss, metrics = grpo.policy_loss(LOGP, ADV, MASK, config, old_logp=OLD)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["policy_loss"], expected, rtol=1e-6)
  assert "kl" not in metrics


def test_dapo_uses_global_token_count():
  # Gradient accumulation: this minibatch has 5 tokens, the global batch 10 -> 1.9 / 10.
  loss, _ = grpo.policy_loss(LOGP, ADV, MASK, grpo.LossConfig(aggregation="dapo"), old_logp=OLD,
                             num_active_tokens=jnp.float32(10))
  np.testing.assert_allclose(loss, 0.19, rtol=1e-6)


def test_clip_metrics_and_ratio_stats():
  _, m = grpo.policy_loss(LOGP, ADV, MASK, grpo.LossConfig(), old_logp=OLD)
  # low: row 1 token 1 (r=0.5 < 0.8, A<0); high: row 0 token 0 (r=1.5 > 1.2, A>0); of 5 tokens.
  np.testing.assert_allclose(m["clip_frac/low"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac/high"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac/region"], 0.4, rtol=1e-6)
  # ratios of active tokens: 1.5, 0.5, 1, 1.5, 0.5 -> mean 1; the masked e^20 is ignored.
  np.testing.assert_allclose(m["ratio/mean"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(m["ratio/min"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["ratio/max"], 1.5, rtol=1e-6)
  assert float(m["completion_tokens"]) == 5.0


def test_asymmetric_clip_higher():
  # eps_high = 0.28: row 0 token 0 -> -min(1.5, 1.28) = -1.28; sum = -2.78 + 4.6 = 1.82.
  config = grpo.LossConfig(aggregation="bnpo", epsilon_high=0.28)
  loss, _ = grpo.policy_loss(LOGP, ADV, MASK, config, old_logp=OLD)
  np.testing.assert_allclose(loss, 1.82 / 5, rtol=1e-6)


def test_gradient_is_zero_on_clipped_tokens():
  config = grpo.LossConfig(aggregation="bnpo")
  grad = jax.grad(lambda lp: grpo.policy_loss(lp, ADV, MASK, config, old_logp=OLD)[0])(LOGP)
  # d/dlogp of -r A / 5 = -r A / 5 where unclipped, 0 where clipped or masked:
  #   row 0: clipped, -0.5/5 = -0.1, -1/5 = -0.2;  row 1: 1.5*2/5 = 0.6, clipped, masked.
  np.testing.assert_allclose(grad, [[0.0, -0.1, -0.2], [0.6, 0.0, 0.0]], atol=1e-6)


def test_on_policy_ratio_one_still_has_gradient():
  logp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
  config = grpo.LossConfig(aggregation="grpo")
  loss, m = grpo.policy_loss(logp, ADV, MASK, config)
  # ratio 1 everywhere: row 0 mean -1, row 1 mean 2 -> loss 0.5.
  np.testing.assert_allclose(loss, 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["ratio/mean"], 1.0)
  grad = jax.grad(lambda lp: grpo.policy_loss(lp, ADV, MASK, config)[0])(logp)
  # grpo: -A_i / (n_i * N): row 0 -1/6, row 1 2/4 = 0.5 on active tokens.
  np.testing.assert_allclose(grad, [[-1 / 6] * 3, [0.5, 0.5, 0.0]], rtol=1e-6)


def test_per_token_advantages():
  adv = jnp.array([[1.0, 0.0, -1.0], [2.0, 2.0, 2.0]])
  loss, _ = grpo.policy_loss(jnp.zeros((2, 3)), adv, MASK, grpo.LossConfig(aggregation="bnpo"))
  # ratio 1: per token -A; masked sum = -(1 + 0 - 1 + 2 + 2) = -4 over 5 tokens.
  np.testing.assert_allclose(loss, -0.8, rtol=1e-6)


def test_k3_kl_term():
  logp = jnp.zeros((2, 3))
  # d = ref - logp: row 0 [0, ln2, -ln2], row 1 [ln2, 0, masked 30].
  ref = jnp.array([[0.0, LN2, -LN2], [LN2, 0.0, 30.0]])
  # k3 = e^d - d - 1: 0; 2 - ln2 - 1 = 0.3068528; 0.5 + ln2 - 1 = 0.1931472.
  k_pos, k_neg = 1 - LN2, LN2 - 0.5
  config = grpo.LossConfig(aggregation="grpo", beta=0.1)
  loss, m = grpo.policy_loss(logp, ADV, MASK, config, ref_logp=ref)
  # on-policy, ratio 1: row 0 per token -1 + 0.1 kl, row 1 2 + 0.1 kl.
  row0 = -1 + 0.1 * (0 + k_pos + k_neg) / 3
  row1 = 2 + 0.1 * (k_pos + 0) / 2
  np.testing.assert_allclose(loss, (row0 + row1) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["policy_loss"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["kl"], (k_pos + k_neg + k_pos) / 5, rtol=1e-6)


def test_kl_is_clamped():
  # d = 20 -> e^20 - 21 ~ 4.85e8, clamped to 10; d = -5 -> e^-5 + 4 = 4.0067 (under the clamp).
  kl = grpo.k3_kl(jnp.zeros(2), jnp.array([25.0, -5.0]), kl_clamp=10.0)
  np.testing.assert_allclose(kl, [10.0, math.exp(-5) + 4], rtol=1e-6)


def test_beta_zero_needs_no_reference():
  config = grpo.LossConfig(beta=0.0)
  loss_none, m = grpo.policy_loss(LOGP, ADV, MASK, config, old_logp=OLD)
  loss_nan, _ = grpo.policy_loss(LOGP, ADV, MASK, config, old_logp=OLD,
                                 ref_logp=jnp.full((2, 3), jnp.nan))
  assert "kl" not in m and float(loss_none) == float(loss_nan)
  with pytest.raises(ValueError, match="ref_logp"):
    grpo.policy_loss(LOGP, ADV, MASK, grpo.LossConfig(beta=0.04), old_logp=OLD)


def test_jit_with_static_config_and_entropy():
  config = grpo.LossConfig(aggregation="dr_grpo", max_completion_length=4)
  fn = jax.jit(functools.partial(grpo.policy_loss, config=config))
  entropy = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
  loss, m = fn(LOGP, ADV, MASK, old_logp=OLD, entropy=entropy)
  np.testing.assert_allclose(loss, 0.2375, rtol=1e-6)
  np.testing.assert_allclose(m["entropy"], 15.0 / 5, rtol=1e-6)  # the masked 100 is ignored


def test_loss_config_errors_name_the_key():
  with pytest.raises(KeyError, match="nope.*bnpo"):
    grpo.LossConfig(aggregation="nope")
  with pytest.raises(ValueError, match="rl.loss.*epsilon"):
    grpo.LossConfig.from_config({"epsilon": 0.2}, where="rl.loss")
  assert grpo.LossConfig.from_config({"beta": 0.04}).beta == 0.04


# ------------------------------------------------------------------------------ log-probs, entropy

LOGITS = jnp.log(jnp.array([[[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]]))  # [B=1, T=2, V=3]


def test_token_log_probs_by_hand():
  tokens = jnp.array([[2, 0]])
  # T=1: softmax of log[1,2,3] = [1/6, 2/6, 3/6]; token 2 -> ln 0.5; uniform -> ln(1/3).
  got = grpo.token_log_probs(LOGITS, tokens, 1.0)
  np.testing.assert_allclose(got, [[math.log(0.5), math.log(1 / 3)]], rtol=1e-6)
  # T=2: logits/2 -> softmax prop. to [1, sqrt2, sqrt3]; token 2 -> sqrt3 / (1 + sqrt2 + sqrt3).
  z = 1 + math.sqrt(2) + math.sqrt(3)
  got = grpo.token_log_probs(LOGITS, tokens, 2.0)
  np.testing.assert_allclose(got, [[math.log(math.sqrt(3) / z), math.log(1 / 3)]], rtol=1e-6)


def test_token_log_probs_matches_log_softmax_bf16_and_jit():
  logits = jax.random.normal(jax.random.key(0), (2, 5, 11)) * 3
  tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)
  got = jax.jit(grpo.token_log_probs)(logits.astype(jnp.bfloat16), tokens, 0.7)
  ref = jnp.take_along_axis(
      jax.nn.log_softmax(logits.astype(jnp.bfloat16).astype(jnp.float32) / 0.7), tokens[..., None],
      axis=-1)[..., 0]
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="temperature"):
    grpo.token_log_probs(logits, tokens, 0.0)


def test_token_entropy_by_hand():
  # p = [1/6, 1/3, 1/2]: H = (1/6) ln 6 + (1/3) ln 3 + (1/2) ln 2 = 1.0114043; uniform: ln 3.
  h = (1 / 6) * math.log(6) + (1 / 3) * math.log(3) + 0.5 * LN2
  np.testing.assert_allclose(grpo.token_entropy(LOGITS), [[h, math.log(3)]], rtol=1e-6)
  # Temperature -> infinity flattens to uniform: T = 1e6 gives ~ln 3 for row 0 too.
  np.testing.assert_allclose(grpo.token_entropy(LOGITS, 1e6), [[math.log(3)] * 2], rtol=1e-5)
