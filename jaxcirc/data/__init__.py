"""jaxcirc.data: what the study runs on and the schemas of what it writes; no computation.

emotions     the class list, defined once (EMOTIONS, EMOTIONAL, NEUTRAL)
dataset      the prompt record schema, builders of the shipped sets, JSONL I/O, statistics
prompts      the shipped prompt sets (baseline, extended, real-world), as marked-up text
lexicon      keyword, politeness and logit-word lexicons
activations  the activations artifact (residual streams of every prompt) and its file format
"""
