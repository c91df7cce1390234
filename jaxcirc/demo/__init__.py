"""jaxcirc.demo: the offline stand-ins the default demo runs on.

corpus     the training corpus the project writes (covers every prompt's words)
corpus_ja  its Japanese counterpart (covers every Japanese prompt's words)
bpe        a byte-level BPE tokenizer trained on it
standins   small GPT-2 / GPT-NeoX / GPT-Neo models trained on it, cached by their settings
"""
