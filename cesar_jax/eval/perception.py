"""Judge-free perception accuracy: check the audio claims of a reasoning chain against ground truth.

In the spirit of MPAR^2's CAFE (arXiv 2603.02266: extract the audio events a chain claims,
check them against the audio), but exact and judge-free: claims are read with the
synthetic benchmark's trace grammar (`cesar_jax.data.traces`) and checked against the
item's `events`.

- Event claims ("I hear a rising chirp from 500 Hz to 1000 Hz between 0.8 s and 1.4 s")
  are aligned, in order, to the true events (longest common subsequence under
  `event_matches`); a claim is correct when it is aligned. Each block of event claims
  (a new one starts at "First, ..." or after other sentences) is one pass over the clip and
  is aligned on its own, so repeating a correct description stays correct.
- Derived claims (counts, order, pitch/loudness comparisons, contour, tempo, the word after
  a beep) are correct when they hold for the true events.

precision = correct claims / claims (the perception accuracy of a chain; NaN without claims);
recall = true events described by the best pass / true events; passes > 1 flags circular
repetition; answer_consistent compares "Therefore, the answer is X." with the answer tag.
Arbitrary text never raises: what fits no sentence form is not a claim.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

from cesar_jax.data import traces as tr

TIME_TOLERANCE_S = 0.12  # traces print times to 0.1 s
FREQ_TOLERANCE = 0.03  # relative; a semitone is 5.9 %
TEMPO_TOLERANCE = 0.05  # relative


@dataclasses.dataclass(frozen=True)
class PerceptionResult:
  checks: tuple[tuple[tr.Claim, bool], ...]  # every claim with its verdict, in trace order
  precision: float  # NaN when the chain makes no claim
  recall: float  # NaN when the clip has no event
  passes: int  # blocks of event claims (circular repetition > 1)
  answer_consistent: bool | None  # None when the conclusion or the answer tag is missing

  @property
  def num_claims(self) -> int:
    return len(self.checks)

  @property
  def num_correct(self) -> int:
    return sum(ok for _, ok in self.checks)


def _close(claimed: float | None, true: float, rel: float) -> bool:
  return claimed is None or abs(claimed - true) <= rel * abs(true)


def event_matches(claim: tr.EventClaim, event: dict) -> bool:
  """Whether an 'I hear ...' claim describes `event` (unstated attributes are not checked)."""
  if claim.kind != event["kind"]:
    return False
  if event["kind"] in ("beep", "tone", "chirp") and not _close(claim.freq_hz, event["freq_hz"], FREQ_TOLERANCE):
    return False
  if event["kind"] == "chirp":
    if not _close(claim.freq_end_hz, event["freq_end_hz"], FREQ_TOLERANCE):
      return False
    if claim.direction and claim.direction != ("rising" if event["freq_end_hz"] > event["freq_hz"] else "falling"):
      return False
  if claim.timbre and claim.timbre != event["timbre"]:
    return False
  if claim.level and claim.level != ("loud" if event["loudness_db"] >= tr.LOUD_THRESHOLD_DB else "soft"):
    return False
  if claim.text is not None and claim.text.lower() != event["text"].lower():
    return False
  if claim.onset_s is not None and abs(claim.onset_s - event["onset_s"]) > TIME_TOLERANCE_S:
    return False
  if claim.offset_s is not None and abs(claim.offset_s - event["offset_s"]) > TIME_TOLERANCE_S:
    return False
  return True


def align(claims: Sequence[tr.EventClaim], events: Sequence[dict]) -> tuple[set[int], set[int]]:
  """Longest order-preserving matching: (indices of matched claims, indices of matched events)."""
  n, m = len(claims), len(events)
  best = np.zeros((n + 1, m + 1), np.int32)
  ok = [[event_matches(c, e) for e in events] for c in claims]
  for i in range(n - 1, -1, -1):
    for j in range(m - 1, -1, -1):
      best[i, j] = max(best[i + 1, j], best[i, j + 1], best[i + 1, j + 1] + 1 if ok[i][j] else 0)
  matched_c, matched_e, i, j = set(), set(), 0, 0
  while i < n and j < m:
    if ok[i][j] and best[i, j] == best[i + 1, j + 1] + 1:
      matched_c.add(i)
      matched_e.add(j)
      i, j = i + 1, j + 1
    elif best[i + 1, j] >= best[i, j + 1]:
      i += 1
    else:
      j += 1
  return matched_c, matched_e


def _of_kind(events: Sequence[dict], kind: str) -> list[dict]:
  return [e for e in events if e["kind"] == kind]


def _nth(items: list[dict], ordinal: str) -> dict | None:
  index = -1 if ordinal == "last" else tr.ORDINALS.index(ordinal)
  return items[index] if -len(items) <= index < len(items) else None


def check_claim(claim: tr.Claim, events: Sequence[dict]) -> bool:
  """Whether a derived (non-event) claim holds for the true events."""
  if isinstance(claim, tr.CountClaim):
    return len(_of_kind(events, claim.kind)) == claim.count
  if isinstance(claim, tr.CountAfterClaim):
    anchors = _of_kind(events, claim.anchor)
    return bool(anchors) and claim.count == sum(
        e["onset_s"] >= anchors[0]["offset_s"] for e in _of_kind(events, claim.kind))
  if isinstance(claim, tr.OrderClaim):
    return tuple(e["kind"] for e in events) == claim.kinds
  if isinstance(claim, tr.CompareClaim):
    items = _of_kind(events, claim.kind)
    a, b = _nth(items, claim.subject), _nth(items, claim.reference)
    if a is None or b is None or a is b:
      return False
    key = "freq_hz" if claim.relation in ("higher", "lower") else "loudness_db"
    return a[key] > b[key] if claim.relation in ("higher", "louder") else a[key] < b[key]
  if isinstance(claim, tr.ContourClaim):
    freqs = [e["freq_hz"] for e in _of_kind(events, "tone")]
    moves = []
    for x, y in zip(freqs[:-1], freqs[1:]):
      move = "rises" if y > x else ("falls" if y < x else "stays")
      if not moves or moves[-1] != move:
        moves.append(move)
    return tuple(moves) == claim.moves
  if isinstance(claim, tr.TempoClaim):
    onsets = [e["onset_s"] for e in _of_kind(events, "beep")]
    if len(onsets) < 2:
      return False
    ioi = float(np.median(np.diff(onsets)))
    return _close(claim.interval_s, ioi, TEMPO_TOLERANCE) and _close(float(claim.bpm), 60 / ioi, TEMPO_TOLERANCE)
  if isinstance(claim, tr.SpeechAfterClaim):
    anchors = _of_kind(events, claim.anchor)
    if not anchors:
      return False
    after = [e for e in _of_kind(events, "speech") if e["onset_s"] >= anchors[0]["offset_s"]]
    return bool(after) and after[0]["text"].lower() == claim.text.lower()
  raise TypeError(f"check_claim: not a derived claim: {claim!r}")


def _normalise(answer: str) -> str:
  return " ".join(re.findall(r"\w+", answer.lower()))


def conclusion_and_answer(text: str, sentences: Sequence[tr.Sentence] | None = None
                          ) -> tuple[str | None, str | None]:
  """(the last "Therefore, the answer is X." of the think part, the answer tag's text); None
  where missing. `sentences`: `traces.parse(text)`, when already computed."""
  text = text if isinstance(text, str) else ""
  sentences = tr.parse(text) if sentences is None else sentences
  conclusions = [s for s in sentences if isinstance(s, tr.Conclusion)]
  _, answer = tr.split_trace(text)
  return (conclusions[-1].answer if conclusions else None), answer


def score(text: str, events: Sequence[dict]) -> PerceptionResult:
  """Perception scores of one reasoning chain (model output or trace) against the true events."""
  sentences = tr.parse(text if isinstance(text, str) else "")
  blocks: list[list[int]] = []  # indices (into sentences) of event claims, per pass
  previous_was_event = False
  for i, s in enumerate(sentences):
    if isinstance(s, tr.EventClaim):
      if not previous_was_event or s.opener == "First, ":
        blocks.append([])
      blocks[-1].append(i)
    previous_was_event = isinstance(s, tr.EventClaim)
  verdict: dict[int, bool] = {}
  best_recall = 0
  for block in blocks:
    matched_c, matched_e = align([sentences[i] for i in block], events)
    verdict.update({i: k in matched_c for k, i in enumerate(block)})
    best_recall = max(best_recall, len(matched_e))
  checks = []
  for i, s in enumerate(sentences):
    if isinstance(s, tr.EventClaim):
      checks.append((s, verdict[i]))
    elif not isinstance(s, (tr.Conclusion, tr.Statement)):
      checks.append((s, check_claim(s, events)))
  conclusion, answer = conclusion_and_answer(text, sentences)
  consistent = None
  if conclusion is not None and answer is not None:
    consistent = _normalise(conclusion) == _normalise(answer)
  num_correct = sum(ok for _, ok in checks)
  return PerceptionResult(
      checks=tuple(checks), precision=num_correct / len(checks) if checks else math.nan,
      recall=best_recall / len(events) if events else math.nan, passes=len(blocks), answer_consistent=consistent)


def think_length(text: str, tokenizer=None) -> int:
  """Length of the think part: tokens with `tokenizer` (anything with .encode), else words."""
  think, _ = tr.split_trace(text if isinstance(text, str) else "")
  return len(tokenizer.encode(think)) if tokenizer is not None else len(think.split())


def accuracy_by_length(lengths: Sequence[float], accuracies: Sequence[float], *,
                       bin_edges: Sequence[float] | None = None, num_bins: int = 8) -> dict[str, np.ndarray]:
  """Perception-decay curve: mean perception accuracy per bin of reasoning length.

  Chains with NaN accuracy (no claims) are left out. Bins are [edge_k, edge_k+1) (the last
  one closed); default edges split [0, max length] evenly. Returns bin_edges f[K+1],
  bin_centers f[K], mean f[K] (NaN for empty bins), sem f[K] (standard error), count i[K].
  """
  lengths = np.asarray(lengths, np.float64)
  accuracies = np.asarray(accuracies, np.float64)
  if lengths.shape != accuracies.shape:
    raise ValueError(f"accuracy_by_length: lengths {lengths.shape} and accuracies {accuracies.shape} differ")
  keep = ~np.isnan(accuracies)
  lengths, accuracies = lengths[keep], accuracies[keep]
  if bin_edges is None:
    top = float(lengths.max()) if lengths.size else 1.0
    bin_edges = np.linspace(0.0, max(top, 1.0), num_bins + 1)
  edges = np.asarray(bin_edges, np.float64)
  index = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
  inside = (lengths >= edges[0]) & (lengths <= edges[-1])
  k = len(edges) - 1
  count = np.bincount(index[inside], minlength=k)
  total = np.bincount(index[inside], weights=accuracies[inside], minlength=k)
  total_sq = np.bincount(index[inside], weights=accuracies[inside] ** 2, minlength=k)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = total / count
    var = np.maximum(total_sq / count - mean ** 2, 0.0) * count / np.maximum(count - 1, 1)
    sem = np.where(count > 1, np.sqrt(var / count), np.nan)
  return dict(bin_edges=edges, bin_centers=(edges[:-1] + edges[1:]) / 2, mean=mean, sem=sem, count=count)
