"""Models: Qwen2-Audio and the Qwen2.5-Omni thinker (audio encoder + Qwen2 decoder) in Flax NNX.

`AudioLM` (audio_lm.py; `config.arch` picks the audio encoder: audio_encoder.py or
omni_audio_encoder.py), configs and presets (config.py), audio tokens per clip per architecture
(audio_tokens.py), the KV cache (decoder.py).
"""

from cesar_jax.models.audio_lm import TRAINABLE, AudioLM, num_audio_tokens
from cesar_jax.models.config import AudioLMConfig, from_config_dict, preset
from cesar_jax.models.decoder import KVCache, init_cache

__all__ = ["AudioLM", "AudioLMConfig", "KVCache", "TRAINABLE", "from_config_dict", "init_cache",
           "num_audio_tokens", "preset"]
