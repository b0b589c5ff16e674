"""The data of the two-process Python-reward test: 8 synthetic prompts, 2 completions each."""

from cesar_jax.data import synthetic


def data():
  """(8 examples with events, 16 completions: each trace and its first half)."""
  items = list(synthetic.generate("test", 8, seed=5, tasks=("sound",), with_audio=False,
                                  hallucination_rate=0.5, trace_times=False))
  texts = [t for item in items for t in (item["trace"], item["trace"][:len(item["trace"]) // 2])]
  return items, texts
