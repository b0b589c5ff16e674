"""Default keyword phrases and stopwords: the project's documented choice.

Provenance. CESAR (Fan et al., ICLR 2026, arXiv 2510.20867, Sec. 3) defines R_keywords =
R_pattern + R_logic + R_domain over "reasoning keywords" listed in its Tables 7-9, which are not
public (shared/REFERENCES.md). The paper's text names the families and gives examples; the lists
below start from those examples and add the common words of each family:

* pattern: sequential organisation ("first", "then", "finally"), comparison ("compared to"),
  elimination ("option A is unlikely").
* logic: "therefore", "because", "if ... then", "based on", evidence-based conclusions.
* domain: acoustic / musical / speech terms ("timbre", "frequency", "amplitude", "pitch",
  "tempo", "key", "chord progression", "prosody", "formant", ...).

Phrases are matched on normalised words (see `text.py`: lower-case [a-z0-9] runs, one plural
"s" stripped), contiguously; "..." is a gap of any length ("if ... then": an "if" somewhere
before a "then"). Every phrase has weight 1 by default and each family is capped at 1 (config):
one phrase of a family saturates it, repeating or adding phrases earns nothing.

The stopwords are NLTK's English list (nltk.corpus.stopwords, 179 words; contractions are
split into their [a-z0-9] parts, which the list already holds), used to keep function words
out of the concept sets of the consistency reward.
"""

PATTERN = (
    # Sequential organisation.
    "first", "second", "third", "then", "next", "finally", "lastly", "after that",
    "at the end", "in the beginning", "step by step",
    # Comparison.
    "compared to", "compared with", "in contrast", "whereas", "similar to", "rather than",
    "more than", "less than",
    # Elimination.
    "unlikely", "rule out", "ruled out", "eliminate", "excluded", "does not match",
    "doesn't match", "not consistent with", "inconsistent with",
)

LOGIC = (
    "therefore", "because", "since", "thus", "hence", "so the", "if ... then", "based on",
    "consequently", "as a result", "which means", "this means", "this suggests", "suggests",
    "indicates", "implies", "evidence", "this confirms", "consistent with", "due to",
    "given that",
)

DOMAIN = (
    # Acoustics.
    "timbre", "frequency", "amplitude", "pitch", "loudness", "volume", "decibel", "hz",
    "spectrum", "spectral", "harmonic", "overtone", "resonance", "reverb", "reverberation",
    "echo", "noise", "waveform", "attack", "decay", "sine", "square wave", "sawtooth",
    # Music.
    "tempo", "bpm", "beat", "rhythm", "melody", "harmony", "chord", "chord progression",
    "key", "major", "minor", "scale", "note", "octave", "interval", "bass", "treble",
    "instrument", "percussion", "staccato", "legato", "crescendo", "dynamics", "genre",
    # Speech.
    "prosody", "formant", "intonation", "accent", "phoneme", "syllable", "speech rate",
    "emotion", "speaker", "vocal", "voice", "tone of voice", "stress",
)

# NLTK English stopwords (179), lower-case.
STOPWORDS = (
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "you're", "you've",
    "you'll", "you'd", "your", "yours", "yourself", "yourselves", "he", "him", "his", "himself",
    "she", "she's", "her", "hers", "herself", "it", "it's", "its", "itself", "they", "them",
    "their", "theirs", "themselves", "what", "which", "who", "whom", "this", "that", "that'll",
    "these", "those", "am", "is", "are", "was", "were", "be", "been", "being", "have", "has",
    "had", "having", "do", "does", "did", "doing", "a", "an", "the", "and", "but", "if", "or",
    "because", "as", "until", "while", "of", "at", "by", "for", "with", "about", "against",
    "between", "into", "through", "during", "before", "after", "above", "below", "to", "from",
    "up", "down", "in", "out", "on", "off", "over", "under", "again", "further", "then", "once",
    "here", "there", "when", "where", "why", "how", "all", "any", "both", "each", "few", "more",
    "most", "other", "some", "such", "no", "nor", "not", "only", "own", "same", "so", "than",
    "too", "very", "s", "t", "can", "will", "just", "don", "don't", "should", "should've", "now",
    "d", "ll", "m", "o", "re", "ve", "y", "ain", "aren", "aren't", "couldn", "couldn't", "didn",
    "didn't", "doesn", "doesn't", "hadn", "hadn't", "hasn", "hasn't", "haven", "haven't", "isn",
    "isn't", "ma", "mightn", "mightn't", "mustn", "mustn't", "needn", "needn't", "shan", "shan't",
    "shouldn", "shouldn't", "wasn", "wasn't", "weren", "weren't", "won", "won't", "wouldn",
    "wouldn't",
)
