"""The tokenizer wrapper: special ids, byte pieces, the Qwen2-Audio chat template."""

import pytest

from cesar_jax import prompts, tokenizers

CORPUS = [
    "<think> First, I hear a rising chirp from 0.5 s to 1.0 s. Then two beeps. Therefore the "
    "answer is three. </think><answer> three </answer>",
    prompts.format_question("How many beeps do you hear?", ["one", "two", "three"]),
] * 20


@pytest.fixture(scope="module")
def tok():
  return tokenizers.train_tokenizer(CORPUS, vocab_size=400)


def test_tags_are_single_special_tokens(tok):
  ids = tok.encode("<think> a </think><answer> b </answer>")
  assert ids[0] == tok.think_open_id and tok.think_close_id in ids
  assert ids[-1] == tok.answer_close_id
  for i in (tok.think_open_id, tok.think_close_id, tok.answer_open_id, tok.answer_close_id,
            tok.eos_id, tok.audio_id):
    assert tok.is_special(i) and tok.token_bytes(i) == b""
  assert len({tok.think_open_id, tok.think_close_id, tok.answer_open_id, tok.answer_close_id,
              tok.eos_id, tok.pad_id, tok.audio_id}) == 7


def test_token_bytes_reassemble_text_including_unicode(tok):
  text = " Café — 12 beeps, then a chirp!"
  ids = tok.encode(text)
  assert b"".join(tok.token_bytes(i) for i in ids).decode("utf-8") == text
  assert tok.decode(ids) == text


def test_pieces_never_mix_letters_digits_and_punctuation(tok):
  for i in range(tok.vocab_size):
    piece = tok.token_bytes(i).lstrip(b" ")
    kinds = {"alpha" if chr(b).isalpha() else "digit" if chr(b).isdigit() else "other"
             for b in piece if b < 128}
    assert len(kinds) <= 1, (i, piece)


def test_prompt_follows_the_qwen2_audio_chat_template(tok):
  user = prompts.format_question("Which tone is higher?", ["the first", "the second"])
  ids = tok.encode_prompt(user, num_audio_tokens=5)
  assert ids.count(tok.audio_id) == 5
  assert tok.decode(ids) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
      "Audio 1: <|audio_bos|>" + "<|AUDIO|>" * 5 + "<|audio_eos|>\n" + user +
      "<|im_end|>\n<|im_start|>assistant\n")


def test_from_file_adds_missing_tags(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  raw = Tokenizer(models.BPE())
  raw.pre_tokenizer = pre_tokenizers.ByteLevel()
  raw.add_special_tokens(list(tokenizers.SPECIAL_TOKENS[:6]))
  raw.save(str(tmp_path / "tokenizer.json"))
  tok = tokenizers.Tokenizer.from_file(tmp_path)
  assert tok.encode("</answer>") == [tok.answer_close_id]
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    tokenizers.Tokenizer.from_file(tmp_path / "missing")


def test_prompted_budget_text():
  assert "less than 50 words" in prompts.format_question("Q?", ["a", "b"], think_budget=50)
  assert "<think>" not in prompts.format_question("Q?", ["a", "b"], think_budget=0)
  assert prompts.format_options(["x", "y"]) == "(A) x (B) y"
  with pytest.raises(ValueError, match="at least one option"):
    prompts.format_question("Q?", [])


def _omni_like(tok):
  """A tokenizer with Qwen2.5-Omni's extra vision tokens, as its tokenizer.json has."""
  backend = tokenizers.hf_tokenizers.Tokenizer.from_str(tok.backend.to_str())
  backend.add_special_tokens(["<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>"])
  return backend


def test_omni_tokenizer_gets_the_thinker_chat_template(tok, tmp_path):
  omni = tokenizers.Tokenizer(_omni_like(tok))
  assert omni.chat_format == "qwen2_5_omni" and tok.chat_format == "qwen2_audio"
  user = prompts.format_question("Which tone is higher?", ["the first", "the second"])
  ids = omni.encode_prompt(user, num_audio_tokens=4)
  assert ids.count(omni.audio_id) == 4
  assert omni.decode(ids) == (
      "<|im_start|>system\nYou are Qwen, a virtual human developed by the Qwen Team, Alibaba "
      "Group, capable of perceiving auditory and visual inputs, as well as generating text and "
      "speech.<|im_end|>\n<|im_start|>user\n<|audio_bos|>" + "<|AUDIO|>" * 4 + "<|audio_eos|>"
      + user + "<|im_end|>\n<|im_start|>assistant\n")
  # The template is read from the vocabulary, so a run's saved tokenizer.json keeps it.
  (tmp_path / "tokenizer.json").write_text(omni.backend.to_str())
  assert tokenizers.Tokenizer.from_file(tmp_path).chat_format == "qwen2_5_omni"
  # Overrides: format and system prompt.
  forced = tokenizers.Tokenizer.from_file(tmp_path, chat_format="qwen2_audio", system_prompt="S.")
  assert forced.decode(forced.encode_prompt("u", 1)).startswith(
      "<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>")
  with pytest.raises(ValueError, match="chat_format='llama' is not one of"):
    tokenizers.Tokenizer(_omni_like(tok), chat_format="llama")


def test_builtin_keeps_the_qwen2_audio_template():
  tok = tokenizers.Tokenizer.builtin()
  assert tok.chat_format == "qwen2_audio" and tok.system_prompt == "You are a helpful assistant."
  omni = tokenizers.Tokenizer.builtin(chat_format="qwen2_5_omni")
  assert omni.chat_format == "qwen2_5_omni" and tokenizers.Tokenizer.builtin() is tok
  assert omni.decode(omni.encode_prompt("u", 2)).endswith(
      "<|audio_bos|><|AUDIO|><|AUDIO|><|audio_eos|>u<|im_end|>\n<|im_start|>assistant\n")
