"""The reasoning-trace grammar of the synthetic benchmark: claims <-> sentences.

A trace is `<think>S1 S2 ... Sn</think><answer>OPTION TEXT</answer>`; each sentence ends
with ". " and is one of the forms below (F: integer Hz, T: seconds with one decimal,
NOUN: beep | tone | chirp | noise burst | voice, ORD: first | second | ... | last):

  event        [First, | Then | Finally, ]I hear a [loud |soft ]DESC[ between T s and T s].
               DESC: beep[ at F Hz] | (sine|square|sawtooth) tone[ at F Hz]
                     | (rising|falling) chirp[ from F Hz to F Hz] | noise burst
                     | voice saying WORD
  count        There are no NOUNs. | There is 1 NOUN in total. | There are N NOUNs in total.
  count after  No NOUNs come after the NOUN. | 1 NOUN comes after the NOUN. | N NOUNs come after the NOUN.
  order        The order is NOUN, then NOUN[, then NOUN]...
  compare      The ORD NOUN is (higher|lower|louder|softer) than the ORD NOUN.
  contour      The melody (rises|falls)[ then (rises|falls)]...
  tempo        The beeps are X s apart, so the tempo is N BPM.
  speech after The voice after the NOUN says WORD.
  conclusion   Therefore, the answer is OPTION TEXT.
  statement    any other sentence (arithmetic, "Let me listen again."): not a claim.

An event sentence opened by "First," starts a new pass over the clip (a trace that
describes the clip twice has two passes). Parsing is lenient about case and spacing and
never raises: a sentence that fits no form is a `Statement`.
"""

from __future__ import annotations

import dataclasses
import re

NOUNS = {"beep": "beep", "tone": "tone", "chirp": "chirp", "noise": "noise burst", "speech": "voice"}
KIND_OF_NOUN = {v: k for k, v in NOUNS.items()}
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
OPENERS = ("First, ", "Then ", "Finally, ")
LOUD_THRESHOLD_DB = -20.0  # level words: "loud" iff an event's loudness_db >= this, else "soft"


@dataclasses.dataclass(frozen=True)
class EventClaim:
  """'I hear a ...': one event; unstated attributes are None."""
  kind: str  # beep | tone | chirp | noise | speech
  freq_hz: float | None = None
  freq_end_hz: float | None = None
  timbre: str | None = None
  direction: str | None = None  # chirps: rising | falling
  level: str | None = None  # loud | soft
  text: str | None = None
  onset_s: float | None = None
  offset_s: float | None = None
  opener: str = ""  # "First, " starts a new pass


@dataclasses.dataclass(frozen=True)
class CountClaim:
  kind: str
  count: int


@dataclasses.dataclass(frozen=True)
class CountAfterClaim:
  kind: str
  anchor: str
  count: int


@dataclasses.dataclass(frozen=True)
class OrderClaim:
  kinds: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CompareClaim:
  """The `subject`-th `kind` is `relation` than the `reference`-th (ordinal words; 'last' allowed)."""
  kind: str
  subject: str
  relation: str  # higher | lower | louder | softer
  reference: str


@dataclasses.dataclass(frozen=True)
class ContourClaim:
  moves: tuple[str, ...]  # e.g. ("rises", "falls")


@dataclasses.dataclass(frozen=True)
class TempoClaim:
  interval_s: float
  bpm: int


@dataclasses.dataclass(frozen=True)
class SpeechAfterClaim:
  anchor: str
  text: str


@dataclasses.dataclass(frozen=True)
class Conclusion:
  answer: str


@dataclasses.dataclass(frozen=True)
class Statement:
  text: str


Claim = (EventClaim | CountClaim | CountAfterClaim | OrderClaim | CompareClaim | ContourClaim
         | TempoClaim | SpeechAfterClaim)
Sentence = Claim | Conclusion | Statement


def plural(kind: str) -> str:
  return NOUNS[kind] + "s"


def format_seconds(x: float) -> str:
  return f"{x:.1f}"


def format_interval(x: float) -> str:
  return f"{round(x, 2):g}"


def _event_desc(c: EventClaim) -> str:
  level = f"{c.level} " if c.level else ""
  if c.kind == "beep":
    desc = "beep" + (f" at {c.freq_hz:.0f} Hz" if c.freq_hz else "")
  elif c.kind == "tone":
    desc = f"{c.timbre} tone" + (f" at {c.freq_hz:.0f} Hz" if c.freq_hz else "")
  elif c.kind == "chirp":
    desc = f"{c.direction} chirp" + (f" from {c.freq_hz:.0f} Hz to {c.freq_end_hz:.0f} Hz" if c.freq_hz else "")
  elif c.kind == "noise":
    desc = "noise burst"
  elif c.kind == "speech":
    return f"voice saying {c.text}"
  else:
    raise ValueError(f"traces: unknown event kind {c.kind!r} in {c}")
  return level + desc


def render(s: Sentence) -> str:
  """One sentence (ending with '.') for a claim, conclusion or statement."""
  if isinstance(s, EventClaim):
    times = ""
    if s.onset_s is not None:
      times = f" between {format_seconds(s.onset_s)} s and {format_seconds(s.offset_s)} s"
    return f"{s.opener}I hear a {_event_desc(s)}{times}."
  if isinstance(s, CountClaim):
    if s.count == 0:
      return f"There are no {plural(s.kind)}."
    if s.count == 1:
      return f"There is 1 {NOUNS[s.kind]} in total."
    return f"There are {s.count} {plural(s.kind)} in total."
  if isinstance(s, CountAfterClaim):
    anchor = NOUNS[s.anchor]
    if s.count == 0:
      return f"No {plural(s.kind)} come after the {anchor}."
    if s.count == 1:
      return f"1 {NOUNS[s.kind]} comes after the {anchor}."
    return f"{s.count} {plural(s.kind)} come after the {anchor}."
  if isinstance(s, OrderClaim):
    return "The order is " + ", then ".join(NOUNS[k] for k in s.kinds) + "."
  if isinstance(s, CompareClaim):
    noun = NOUNS[s.kind]
    return f"The {s.subject} {noun} is {s.relation} than the {s.reference} {noun}."
  if isinstance(s, ContourClaim):
    return "The melody " + " then ".join(s.moves) + "."
  if isinstance(s, TempoClaim):
    return f"The beeps are {format_interval(s.interval_s)} s apart, so the tempo is {s.bpm} BPM."
  if isinstance(s, SpeechAfterClaim):
    return f"The voice after the {NOUNS[s.anchor]} says {s.text}."
  if isinstance(s, Conclusion):
    return f"Therefore, the answer is {s.answer}."
  if isinstance(s, Statement):
    return s.text if s.text.endswith(".") else s.text + "."
  raise TypeError(f"traces.render: not a sentence: {s!r}")


def render_trace(sentences: list[Sentence], answer: str) -> str:
  return "<think>" + " ".join(render(s) for s in sentences) + "</think><answer>" + answer + "</answer>"


# Parsing ------------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)?"
_NOUN = "|".join(sorted(NOUNS.values(), key=len, reverse=True))
_ORD = "|".join(ORDINALS + ("last",))
_EVENT = re.compile(
    rf"(?P<opener>first,?\s+|then,?\s+|finally,?\s+|next,?\s+)?i hear an? (?:(?P<level>loud|soft) )?"
    rf"(?:(?P<beep>beep)(?: at (?P<beep_f>{_NUM}) hz)?"
    rf"|(?P<timbre>sine|square|sawtooth) tone(?: at (?P<tone_f>{_NUM}) hz)?"
    rf"|(?P<direction>rising|falling) chirp(?: from (?P<chirp_f0>{_NUM}) hz to (?P<chirp_f1>{_NUM}) hz)?"
    rf"|(?P<noise>noise burst)"
    rf"|voice saying (?P<text>[a-z]+))"
    rf"(?: between (?P<t0>{_NUM}) s and (?P<t1>{_NUM}) s)?")
_COUNT = re.compile(rf"there (?:is|are) (?P<n>\d+|no) (?P<noun>{_NOUN})s?(?: in total)?")
_COUNT_AFTER = re.compile(rf"(?P<n>\d+|no) (?P<noun>{_NOUN})s? comes? after the (?P<anchor>{_NOUN})")
_ORDER = re.compile(rf"the order is (?P<nouns>(?:{_NOUN})(?:, then (?:{_NOUN}))+)")
_COMPARE = re.compile(rf"the (?P<a>{_ORD}) (?P<noun>{_NOUN}) is (?P<rel>higher|lower|louder|softer) "
                      rf"than the (?P<b>{_ORD}) (?P=noun)")
_CONTOUR = re.compile(r"the melody (?P<moves>(?:rises|falls)(?: then (?:rises|falls))*)")
_TEMPO = re.compile(rf"the beeps are (?P<ioi>{_NUM}) s apart, so the tempo is (?P<bpm>\d+) bpm")
_SPEECH_AFTER = re.compile(rf"the voice after the (?P<anchor>{_NOUN}) says (?P<text>[a-z]+)")
_CONCLUSION = re.compile(r"therefore,? the answer is (?P<answer>.+)", re.I | re.S)
_SENTENCE_END = re.compile(r"\.(?=\s|$|<)")


def _kind(noun: str) -> str:
  return KIND_OF_NOUN[noun]


def parse_sentence(sentence: str) -> Sentence:
  """The claim a sentence makes (Statement when it fits no form). Never raises."""
  raw = " ".join(sentence.strip().rstrip(".").split())
  s = raw.lower()
  try:
    if m := _EVENT.fullmatch(s):
      opener = m["opener"] or ""
      opener = "First, " if opener.startswith("first") else ("Finally, " if opener.startswith("finally")
                                                             else ("Then " if opener else ""))
      times = dict(onset_s=float(m["t0"]), offset_s=float(m["t1"])) if m["t0"] else {}
      common = dict(level=m["level"], opener=opener, **times)
      if m["beep"]:
        return EventClaim("beep", freq_hz=float(m["beep_f"]) if m["beep_f"] else None, **common)
      if m["timbre"]:
        return EventClaim("tone", freq_hz=float(m["tone_f"]) if m["tone_f"] else None, timbre=m["timbre"], **common)
      if m["direction"]:
        f0 = float(m["chirp_f0"]) if m["chirp_f0"] else None
        f1 = float(m["chirp_f1"]) if m["chirp_f1"] else None
        return EventClaim("chirp", freq_hz=f0, freq_end_hz=f1, direction=m["direction"], **common)
      if m["noise"]:
        return EventClaim("noise", **common)
      return EventClaim("speech", text=m["text"], **common)
    if m := _COUNT.fullmatch(s):
      return CountClaim(_kind(m["noun"]), 0 if m["n"] == "no" else int(m["n"]))
    if m := _COUNT_AFTER.fullmatch(s):
      return CountAfterClaim(_kind(m["noun"]), _kind(m["anchor"]), 0 if m["n"] == "no" else int(m["n"]))
    if m := _ORDER.fullmatch(s):
      return OrderClaim(tuple(_kind(n) for n in m["nouns"].split(", then ")))
    if m := _COMPARE.fullmatch(s):
      return CompareClaim(_kind(m["noun"]), m["a"], m["rel"], m["b"])
    if m := _CONTOUR.fullmatch(s):
      return ContourClaim(tuple(m["moves"].split(" then ")))
    if m := _TEMPO.fullmatch(s):
      return TempoClaim(float(m["ioi"]), int(m["bpm"]))
    if m := _SPEECH_AFTER.fullmatch(s):
      return SpeechAfterClaim(_kind(m["anchor"]), m["text"])
    if m := _CONCLUSION.fullmatch(raw):
      return Conclusion(m["answer"].strip())
  except (ValueError, KeyError, OverflowError):
    pass
  return Statement(raw)


def split_trace(text: str) -> tuple[str, str | None]:
  """(think text, answer text or None). Without <think> tags the text before <answer> is the think."""
  text = text or ""
  answer = None
  m = re.search(r"<answer>(.*?)</answer>", text, re.S)
  if m:
    answer = m.group(1).strip()
  think_m = re.search(r"<think>(.*?)(?:</think>|<answer>|$)", text, re.S)
  if think_m:
    think = think_m.group(1)
  else:
    think = text.split("<answer>")[0]
  return think, answer


def split_sentences(think: str) -> list[str]:
  return [p.strip() for p in _SENTENCE_END.split(think) if p.strip()]


def parse(text: str) -> list[Sentence]:
  """All sentences of a trace's think part, parsed in order. Never raises."""
  think, _ = split_trace(text)
  return [parse_sentence(p) for p in split_sentences(think)]
