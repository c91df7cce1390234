"""jaxcirc.data: what the study runs on and the schemas of what it writes; no computation.

emotions     the class list and the languages, defined once (EMOTIONS, EMOTIONAL, NEUTRAL,
             LANGUAGES)
dataset      the prompt record schema, builders of the shipped sets, JSONL I/O, statistics
prompts      the shipped prompt sets (baseline, extended, real-world), as marked-up text
prompts_ja   the same sets in Japanese, each text paired with its English counterpart
lexicon      keyword, politeness and logit-word lexicons
lexicon_ja   Japanese keigo markers, emotion keywords (on UniDic lemmas) and logit words
activations  the activations artifact (residual streams of every prompt) and its file format
"""
