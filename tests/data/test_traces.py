"""Trace grammar (render <-> parse) and the controlled corruptions of synthetic traces."""

import re

from hypothesis import given, settings, strategies as st
import pytest

from cesar_jax.data import synth_audio
from cesar_jax.data import synthetic
from cesar_jax.data import traces as tr

TASKS = None if synth_audio.espeak_available() else ("sound", "music")

CLAIMS = [
    tr.EventClaim("beep", opener="First, ", onset_s=0.5, offset_s=0.6),
    tr.EventClaim("tone", freq_hz=440.0, timbre="square", level="loud", opener="Then "),
    tr.EventClaim("chirp", freq_hz=500.0, freq_end_hz=1000.0, direction="rising", onset_s=1.2, offset_s=1.9),
    tr.EventClaim("chirp", direction="falling", opener="Finally, "),
    tr.EventClaim("noise", level="soft", onset_s=2.0, offset_s=2.4),
    tr.EventClaim("speech", text="seven"),
    tr.CountClaim("beep", 3), tr.CountClaim("noise", 1), tr.CountClaim("chirp", 0),
    tr.CountAfterClaim("beep", "chirp", 2), tr.CountAfterClaim("beep", "noise", 1),
    tr.CountAfterClaim("beep", "chirp", 0),
    tr.OrderClaim(("beep", "noise", "tone")),
    tr.CompareClaim("tone", "second", "higher", "first"), tr.CompareClaim("noise", "last", "softer", "first"),
    tr.ContourClaim(("rises", "falls")), tr.ContourClaim(("falls",)),
    tr.TempoClaim(0.5, 120), tr.TempoClaim(0.67, 90),
    tr.SpeechAfterClaim("beep", "three"),
    tr.Conclusion("rising then falling"), tr.Conclusion("beep, then noise burst, then tone"),
]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: type(c).__name__)
def test_render_parse_round_trip(claim):
  assert tr.parse_sentence(tr.render(claim)) == claim


def test_rendered_sentences_read_as_documented():
  assert tr.render(CLAIMS[0]) == "First, I hear a beep between 0.5 s and 0.6 s."
  assert tr.render(CLAIMS[2]) == "I hear a rising chirp from 500 Hz to 1000 Hz between 1.2 s and 1.9 s."
  assert tr.render(tr.CountClaim("beep", 1)) == "There is 1 beep in total."
  assert tr.render(tr.CountClaim("noise", 0)) == "There are no noise bursts."
  assert tr.render(tr.CountAfterClaim("beep", "chirp", 1)) == "1 beep comes after the chirp."
  assert tr.render(tr.TempoClaim(2 / 3, 90)) == "The beeps are 0.67 s apart, so the tempo is 90 BPM."


def test_parse_is_lenient_about_case_and_spacing():
  text = "<think>first,  I HEAR a Sine tone at 262 Hz.  then i hear a beep.The melody rises</think><answer>x</answer>"
  parsed = tr.parse(text)
  assert parsed[0] == tr.EventClaim("tone", freq_hz=262.0, timbre="sine", opener="First, ")
  # "beep.The" has no space after the period: one (unparseable) sentence, not two claims.
  assert isinstance(parsed[1], tr.Statement) and len(parsed) == 2
  assert tr.split_trace(text) == (text[len("<think>"):text.index("</think>")], "x")
  assert tr.split_trace("I hear a beep.") == ("I hear a beep.", None)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("I hear a beep tone between 0.5 s and Hz<think></think><answer>.,")) ),
       st.text())
def test_parse_never_raises(grammarish, anything):
  for text in (grammarish, anything, grammarish + anything):
    for s in tr.parse(text):
      assert isinstance(s, (tr.EventClaim, tr.CountClaim, tr.CountAfterClaim, tr.OrderClaim, tr.CompareClaim,
                            tr.ContourClaim, tr.TempoClaim, tr.SpeechAfterClaim, tr.Conclusion, tr.Statement))


@pytest.fixture(scope="module")
def corrupted():
  opts = dict(tasks=TASKS, with_audio=False, hallucination_rate=1 / 3, inconsistent_rate=1 / 3, rambling_rate=1 / 3)
  items = list(synthetic.generate("train", 300, seed=4, **opts))
  clean = {i["id"]: i for i in synthetic.generate("train", 300, seed=4, tasks=TASKS, with_audio=False)}
  return items, clean


def _conclusion(trace: str) -> str:
  return [s for s in tr.parse(trace) if isinstance(s, tr.Conclusion)][-1].answer


def test_corruptions_do_what_they_say(corrupted):
  items, clean = corrupted
  kinds = {i["corruption"] for i in items}
  assert kinds == {"hallucination", "inconsistent", "rambling"}
  for item in items:
    ref = clean[item["id"]]
    assert item["question"] == ref["question"] and item["events"] == ref["events"]  # only the trace changes
    answer_tag = tr.split_trace(item["trace"])[1]
    assert answer_tag == item["trace_answer"] and item["trace_answer"] in item["choices"]
    if item["corruption"] == "inconsistent":
      assert _conclusion(item["trace"]) == item["answer"] != item["trace_answer"]
    elif item["corruption"] == "rambling":
      assert item["trace_answer"] == item["answer"]
      body = tr.split_trace(ref["trace"])[0].split(" Therefore, the answer is")[0]
      assert item["trace"].count(body) >= 2
      assert re.search(r"listen again|check that again|once more", item["trace"])
    else:  # hallucination: the event sentences differ from the true description
      events_said = [s for s in tr.parse(item["trace"]) if isinstance(s, tr.EventClaim)]
      true_said = [s for s in tr.parse(ref["trace"]) if isinstance(s, tr.EventClaim)]
      assert events_said != true_said
      assert _conclusion(item["trace"]) == item["trace_answer"]
  wrong = [i for i in items if i["corruption"] == "hallucination" and i["trace_answer"] != i["answer"]]
  assert wrong, "some hallucinations should mislead the answer"


def test_traces_without_times():
  item = next(synthetic.generate("train", 1, seed=0, question_types=("count_beeps",), trace_times=False,
                                 with_audio=False))
  n = int(item["answer"])
  assert " s and " not in item["trace"] and item["trace"].count("I hear a beep.") == n
  assert item["trace"].endswith(f"Therefore, the answer is {n}.</think><answer>{n}</answer>")
