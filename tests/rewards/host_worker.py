"""One process of the two-process test of Python rewards (run by test_host_multiprocess.py).

Process p holds prompts 4p..4p+3 and their G = 2 completions (global rows 8p..8p+7), as the
trainer does: it computes the Python components on its rows only (`host.rollout_values`),
makes them global, and the jitted reward adds them into the total of all 16 rows.
"""

import json
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from cesar_jax import rewards
from cesar_jax import tokenizers as tok_lib
from cesar_jax.parallel import distributed
from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.rewards import host
from cesar_jax.rl import train_lib

import host_fixtures


def main() -> None:
  distributed.initialize()
  pid = jax.process_index()
  tok = tok_lib.Tokenizer.builtin()
  mesh = mesh_lib.make_mesh((1, 2, 2))  # rows over fsdp (one process each), tensor replicas
  examples, texts = host_fixtures.data()
  local_prompts = examples[4 * pid:4 * pid + 4]
  local_texts = texts[8 * pid:8 * pid + 8]
  config = rewards.default_config("mpar2")
  ids, lengths = rewards.api.pad_ids(tok.encode_batch(local_texts), tok.pad_id, 128)
  prompt_index = (4 * pid + np.arange(8) // 2).astype(np.int32)
  g = train_lib.to_global({"ids": ids, "lengths": lengths, "prompt_index": prompt_index}, mesh)
  values = host.rollout_values(config, g["ids"], g["lengths"], g["prompt_index"], local_prompts,
                               tok)
  host_values = train_lib.to_global({"v": values}, mesh)["v"]
  arrays = train_lib.to_global(rewards.encode_examples(local_prompts, tok, config), mesh)
  arrays["sample_to_example"] = g["prompt_index"]
  out = rewards.apply(rewards.build(config, tok), g["ids"], g["lengths"], arrays, host_values)
  gathered = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)).tolist()
              for k, v in out.items()}
  print(json.dumps({"process": pid, "local_rows": len(values), "out": gathered}), flush=True)
  sys.stdout.flush()
  distributed.shutdown()


if __name__ == "__main__":
  main()
