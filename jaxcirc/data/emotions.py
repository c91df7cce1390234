"""The study's classes, defined once.

EMOTIONS is the label order of every dataset, activation file and class axis (`labels` index into
it); EMOTIONAL are the three emotions a vector, steering run or head score is about; NEUTRAL is the
baseline class they are centred on and contrasted with. LANGUAGES are the languages the prompt sets
and text measures exist in ("en" English, "ja" Japanese); the first is every default.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("gratitude", "anger", "apology", "neutral")
EMOTIONAL: tuple[str, ...] = EMOTIONS[:3]
NEUTRAL: str = "neutral"
NEUTRAL_INDEX: int = EMOTIONS.index(NEUTRAL)
LANGUAGES: tuple[str, ...] = ("en", "ja")
