"""Checkpoints: Hugging Face safetensors import/export (hf.py); orbax training state (manager.py)."""
