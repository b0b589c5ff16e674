"""Reasoning traces for synthetic items: the correct trace and its controlled corruptions.

A correct trace describes every event in order ("First, I hear ... Then I hear ...
Finally, I hear ..."), states the derived facts the question needs ("There are 3 beeps in
total."), and concludes ("Therefore, the answer is 3."); the answer tag holds the option text.

Corruptions (labelled in the item's `corruption`):
- hallucination: the trace claims an event that is not in the audio (an extra event in a
  silent stretch, or a real event with a wrong attribute/kind); the reasoning and the answer
  follow from the claimed events, so the answer is often wrong.
- inconsistent: correct reasoning that concludes the right option, but the answer tag
  holds a different option.
- rambling: the event description and the derived facts are repeated 2-3 times
  ("Wait, let me listen again. First, I hear ..."), then the correct conclusion.
"""

from __future__ import annotations

import numpy as np

from cesar_jax.data import synth_events as ev
from cesar_jax.data import synth_questions as sq
from cesar_jax.data import traces as tr

CORRUPTIONS = ("none", "hallucination", "inconsistent", "rambling")
RELISTEN = ("Wait, let me listen again.", "Let me check that again.", "Let me go over the sounds once more.")


def _choice(rng: np.random.Generator, seq):
  return seq[int(rng.integers(len(seq)))]


def event_claims(events: list[dict], *, times: bool, level_words: bool = False) -> list[tr.EventClaim]:
  """One 'I hear ...' claim per event, with First / Then / Finally openers."""
  claims = []
  for i, e in enumerate(events):
    opener = "" if len(events) == 1 else ("First, " if i == 0 else ("Finally, " if i == len(events) - 1 else "Then "))
    attrs = {}
    if e["kind"] == "tone":
      attrs = dict(freq_hz=e["freq_hz"], timbre=e["timbre"])
    elif e["kind"] == "chirp":
      attrs = dict(freq_hz=e["freq_hz"], freq_end_hz=e["freq_end_hz"],
                   direction="rising" if e["freq_end_hz"] > e["freq_hz"] else "falling")
    elif e["kind"] == "speech":
      attrs = dict(text=e["text"])
    if level_words and e["kind"] != "speech":
      attrs["level"] = "loud" if e["loudness_db"] >= ev.LOUD_THRESHOLD_DB else "soft"
    if times:
      attrs.update(onset_s=round(e["onset_s"], 1), offset_s=round(e["offset_s"], 1))
    claims.append(tr.EventClaim(e["kind"], opener=opener, **attrs))
  return claims


def reasoning(qtype: sq.QuestionType, spec: dict, events: list[dict],
              times: bool) -> tuple[list[tr.Sentence], list[tr.Sentence], str]:
  """(event claims, derived sentences, answer the events imply)."""
  derived, answer = qtype.derive(spec, events)
  return event_claims(events, times=times, level_words=spec.get("level_words", False)), derived, answer


def _alter(rng: np.random.Generator, opts: ev.SynthOptions, event: dict) -> dict:
  """The same moment claimed wrongly: a different pitch/direction/word, or a different kind."""
  kind = event["kind"]
  if kind == "tone":
    i = ev.TONE_GRID.index(int(event["freq_hz"])) if int(event["freq_hz"]) in ev.TONE_GRID else 12
    shift = int(rng.integers(3, 8)) * (1 if rng.random() < 0.5 else -1)
    j = i + shift if 0 <= i + shift < len(ev.TONE_GRID) else i - shift
    return dict(event, freq_hz=float(ev.TONE_GRID[j]))
  if kind == "chirp":
    return dict(event, freq_hz=event["freq_end_hz"], freq_end_hz=event["freq_hz"])
  if kind == "speech":
    words = ev.COLOR_WORDS if event["text"] in ev.COLOR_WORDS else ev.NUMBER_WORDS
    return dict(event, text=_choice(rng, [w for w in words if w != event["text"]]))
  new_kind = "noise" if kind == "beep" else "beep"
  fake = ev.random_event(rng, opts, new_kind)
  return dict(fake, onset_s=event["onset_s"], offset_s=event["offset_s"], duration_s=None)


def hallucinated_events(rng: np.random.Generator, opts: ev.SynthOptions, events: list[dict]) -> list[dict]:
  """Events as a hallucinating listener claims them: one fabricated or altered event."""
  draft = ev.random_event(rng, opts, _choice(rng, ev.NON_SPEECH_KINDS))
  gaps = [g for g in ev.free_gaps(events, opts.clip_seconds) if g[1] - g[0] >= draft["duration_s"]]
  if gaps and (rng.random() < 0.7 or not events):
    lo, hi = gaps[int(rng.integers(len(gaps)))]
    start = rng.uniform(lo, max(lo, hi - draft["duration_s"]))
    fake = ev.place_at([draft], [start])[0]
    return sorted(events + [fake], key=lambda e: e["onset_s"])
  i = int(rng.integers(len(events)))
  altered = {k: v for k, v in _alter(rng, opts, events[i]).items() if k in ev.EVENT_KEYS}
  return events[:i] + [altered] + events[i + 1:]


def make_trace(qtype: sq.QuestionType, draft: sq.Draft, choices: list[str], corruption: str,
               rng: np.random.Generator, opts: ev.SynthOptions) -> tuple[str, str]:
  """(trace text, the answer the trace gives) for `corruption` in CORRUPTIONS."""
  times = opts.trace_times
  claims, derived, answer = reasoning(qtype, draft.spec, draft.events, times)
  if corruption == "none":
    return tr.render_trace(claims + derived + [tr.Conclusion(answer)], answer), answer
  if corruption == "inconsistent":
    wrong = _choice(rng, [c for c in choices if c != answer])
    return tr.render_trace(claims + derived + [tr.Conclusion(answer)], wrong), wrong
  if corruption == "rambling":
    sentences = claims + derived
    for _ in range(int(rng.integers(1, 3))):
      sentences += [tr.Statement(_choice(rng, RELISTEN))] + claims + derived
    return tr.render_trace(sentences + [tr.Conclusion(answer)], answer), answer
  if corruption == "hallucination":
    for _ in range(8):
      claimed = hallucinated_events(rng, opts, draft.events)
      fake_claims, fake_derived, fake_answer = reasoning(qtype, draft.spec, claimed, times)
      if fake_answer in choices:
        return tr.render_trace(fake_claims + fake_derived + [tr.Conclusion(fake_answer)], fake_answer), fake_answer
    # Rare: every hallucination led outside the options; keep the claim, reason from the real events.
    return tr.render_trace(fake_claims + derived + [tr.Conclusion(answer)], answer), answer
  raise ValueError(f"make_trace: unknown corruption {corruption!r} (one of {CORRUPTIONS})")
