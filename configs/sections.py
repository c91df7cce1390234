"""Every setting of every phase, with its comment: the sections `common.base_config()` puts
together. The library takes these sections as arguments and defines no defaults of its own.

Each function returns a fresh ConfigDict; tests use them to build a section and change a field."""

from __future__ import annotations

import ml_collections

from jaxcirc.data import lexicon


def vectors() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Ways to read a class direction (jaxcirc.core.vectors.METHODS): last real token, the span
    # tokens, the change at the span tokens.
    c.methods = ("sentence_end", "token", "token_delta")
    # Centrings (jaxcirc.core.vectors.CENTRES): raw class mean, minus the neutral mean, minus the mean
    # of the four class means. Raw cosines sit near 1 in anisotropic streams: report all three.
    c.centres = ("raw", "neutral", "grand")
    # Label permutations for the cosine null (class sizes kept).
    c.n_perm = 1000
    # Central band of every null (0.95: 2.5th..97.5th percentiles).
    c.level = 0.95
    # Probe: stratified folds, label permutations for its null, LDA shrinkage, which per-prompt
    # features ("sentence_end": last token; "span_mean": mean over the span tokens).
    c.probe_folds = 5
    c.probe_n_perm = 100
    c.probe_shrinkage = "ledoit_wolf"
    c.probe_features = ("sentence_end", "span_mean")
    # Dimension of the per-layer emotion subspace (PCA of the four class means' differences;
    # at most 3).
    c.subspace_k = 3
    # Write the PNG figures (off: CSV/NPZ/JSON only, for quick runs and tests).
    c.plots = True
    # Seed of every permutation and fold split.
    c.seed = 0
    return c


def alignment() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Dimension of each model's emotion subspace (1..3; see module docstring).
    c.k = 3
    # Class means that define the subspace: "sentence_end" (the study's) or "token" (span tokens).
    c.subspace_from = "sentence_end"
    # Rows the maps are fit on, neutral prompts only: "all_tokens" = every real token when both
    # models tokenise identically, else per prompt ("sentence_end" AND "prompt_mean", both
    # reported); or force one per-prompt pairing: "sentence_end" / "prompt_mean".
    c.fit_on = "all_tokens"
    # Relative ridge strengths of the linear map (0 = plain least squares, the study's; see the
    # module docstring). The first gets the full report; each further one repeats the
    # shuffled-pairing null (n_perm refits, Procrustes included) for its linear row.
    c.ridges_rel = (0.0, 0.1)
    # Shuffled-pairing / CKA / random-subspace null samples per figure.
    c.n_perm = 100
    # Central band of every null.
    c.level = 0.95
    # Share of neutral prompts held out (by prompt) for the held-out R^2.
    c.test_fraction = 0.25
    # Compare every `layer_stride`-th layer of A (the last layer always included).
    c.layer_stride = 1
    # Write the PNG figures (off: CSV/JSON only, for quick runs and tests).
    c.plots = True
    # Seed of the split and of every null.
    c.seed = 0
    return c


def steering() -> ml_collections.ConfigDict:
    """Settings of phases 4-5 (steering, patching); every number in the outputs carries them."""
    c = ml_collections.ConfigDict()
    # Which vectors are steered along: labels written beside every number (the caller passes the
    # vectors, chosen by these): "sentence_end" | "token" | "token_delta"; "raw" | "neutral" |
    # "grand" (see jaxcirc.core.vectors).
    c.vector_method = "sentence_end"
    c.vector_centre = "neutral"
    # Block inputs to steer at (resid_pre[L], L = 0 is the embedding); empty = every layer.
    c.layers = ()
    # Steering strengths in units of alpha_unit * norm[L] (module docstring): > 0 along the
    # emotion vector, < 0 against it. 0 is the unsteered run (run once, shared by all layers).
    c.alphas = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
    # Fraction of the layer's typical residual norm that alpha = 1 adds.
    c.alpha_unit = 0.125
    # Random directions of equal norm per emotion sweep (control); each seed is one direction
    # per layer, isotropic Gaussian in d_model, unit-normalised.
    c.n_random_seeds = 10
    c.random_seed = 1000
    # Generation: new tokens per prompt; temperature 0 = greedy; top_k 0 = no cut; sample_seed
    # makes each prompt's draws (the same draws in every cell: paired comparisons).
    c.max_new_tokens = 20
    # EOS cannot be chosen as any of the first min_new_tokens new tokens (transformers'
    # min_new_tokens). 0 = the model may end at once; a continuation that does holds no text for
    # the text measures to score (the summary's empty_continuations says how many do).
    c.min_new_tokens = 0
    c.temperature = 0.0
    c.top_k = 0
    c.sample_seed = 0
    # Tokenisation of the prompts (models.tokens): whether a BOS token is prepended.
    c.prepend_bos = False
    # Bootstrap over prompts for every effect's 95% CI.
    c.n_boot = 2000
    c.seed = 0
    c.ci_level = 0.95
    # Sample generations saved per cell (the first prompts, in input order).
    c.samples_per_cell = 3
    # Rows (cell x prompt) per decode call and per prompt re-run call: memory is about
    # batch_rows * n_layers * (prompt + new tokens) * d_model * 8 bytes for the caches.
    c.batch_rows = 512
    c.prefill_rows = 256
    # Prompt re-runs cover only the slots their longest prompt needs, rounded up to a multiple
    # of window_step: smaller steps do less padded work, but every distinct window is one more
    # compile (~1 s each on the demo stand-ins, where the work saved is smaller than that).
    c.window_step = 4
    # Patching: which activations are replaced (resid_pre = block input, attn_out, mlp_out of
    # block L), at which prompt positions ("last": the last token; "all": every position, the
    # two prompts aligned at their last token), and which layers (empty = every layer).
    c.patch_sites = ("resid_pre", "attn_out", "mlp_out")
    c.patch_positions = "last"
    c.patch_layers = ()
    return c


def heads() -> ml_collections.ConfigDict:
    """Phase-7 head screening settings (every field commented; lock it once parsed)."""
    c = ml_collections.ConfigDict()
    # Screening methods to run, a subset of ("exact", "direct", "attribution").
    c.methods = ("exact", "direct", "attribution")
    # Emotion measures, a subset of ("projection", "logit_diff").
    c.measures = ("projection", "logit_diff")
    # Removal kinds: "zero" (z -> 0) and "mean" (z -> the neutral prompts' mean z per head).
    c.kinds = ("zero", "mean")
    # Words whose logits make the logit-difference measure (one-token words kept, rest reported).
    c.logit_words = {e: tuple(w) for e, w in lexicon.EMOTION_LOGIT_WORDS.items()}
    # Prepend the tokenizer's BOS to every prompt (changes every position index: say so).
    c.prepend_bos = False
    # Longest prompt in tokens; a longer one raises (never truncated silently).
    c.max_len = 64
    # Prompts per compiled sweep call (the last batch is padded with copies and trimmed).
    c.batch_size = 32
    # How head rows run through the later layers: "map" (lax.map over chunks of `chunk` rows
    # folded into the batch). Measured on the 2-core CPU, full-size random GPT-2, 144 heads x 8
    # prompts x 12 tokens, one run (benchmarks/bench_heads.py): map 27.8 s, vmap 29.1 s, fold
    # 33.0 s; map also bounds memory to `chunk` rows x batch whatever the batch.
    c.strategy = "map"
    # Rows (heads x kinds) per chunk for strategy "map".
    c.chunk = 4
    # Random unit directions scored like an emotion vector: each head's projection null band.
    c.n_random = 16
    # Heads listed per (method, measure, kind, emotion) in top_k.json (most supportive and most
    # suppressive).
    c.top_k = 10
    # Bootstrap resamples (over prompts) for each score's CI, and the CI level.
    c.n_boot = 2000
    c.level = 0.95
    # Head-label permutations for the rank-correlation null band.
    c.n_perm = 1000
    # Seed for random directions, bootstrap and permutations (recorded in every output).
    c.seed = 0
    # What the emotion vectors are (method and centring), written beside every projection score.
    c.vector_label = "unspecified emotion vectors"
    # Model label for titles and tables.
    c.model_label = ""
    # Annotate heatmap cells with values when layers x heads is at most this.
    c.annotate_max_cells = 64
    return c


def heads_circuits() -> ml_collections.ConfigDict:
    """Circuit-search settings (every field commented)."""
    c = ml_collections.ConfigDict()
    # Which searches to run: "ablation" (on emotional prompts) and/or "patching" (on neutral).
    c.modes = ("ablation", "patching")
    # The measure searched on: "projection" or "logit_diff".
    c.measure = "projection"
    # What ablated heads become: "zero" or "mean" (the neutral prompts' mean z). Patching always
    # uses the emotion's own mean z.
    c.kind = "mean"
    # Largest set size.
    c.k_max = 4
    # Beam width (1 = greedy).
    c.beam = 1
    # Candidates: the best n heads of the exact single-head screen (all heads if 0).
    c.n_candidates = 24
    # Random head sets per k for the control band.
    c.n_random_sets = 32
    # Bootstrap resamples over prompts, CI level, and the seed of everything random.
    c.n_boot = 2000
    c.level = 0.95
    c.seed = 0
    # How candidate rows run through later layers (see sections.heads().strategy).
    c.strategy = "map"
    c.chunk = 4
    # Labels for tables and titles.
    c.model_label = ""
    c.vector_label = "unspecified emotion vectors"
    return c


def heads_neurons() -> ml_collections.ConfigDict:
    """Neuron-analysis settings (every field commented)."""
    c = ml_collections.ConfigDict()
    # Layers whose neurons are scored: [first, last) (the study's steering layers 6-7 by default).
    c.layers = (6, 8)
    # Removal kinds: "zero" and/or "mean" (neutral prompts' mean activation).
    c.kinds = ("zero", "mean")
    # Measure for the exact shortlist and the tables: "projection" or "logit_diff" (both are
    # scored by direct and attribution).
    c.measure = "projection"
    # Neurons per emotion whose exact removal effect is computed (best by attribution).
    c.n_exact = 32
    # Neurons listed per (method, measure, kind, emotion) in neurons_top.csv.
    c.top_k = 20
    # Rows per chunk for the exact sweep (neurons x prompts are folded into the batch in chunks).
    c.chunk = 16
    # Bootstrap resamples, CI level, seed.
    c.n_boot = 2000
    c.level = 0.95
    c.seed = 0
    # Prompt settings (as sections.heads()).
    c.prepend_bos = False
    c.max_len = 64
    c.model_label = ""
    c.vector_label = "unspecified emotion vectors"
    return c


def heads_generation() -> ml_collections.ConfigDict:
    """Generation-under-head-edits settings (every field commented)."""
    c = ml_collections.ConfigDict()
    # Which experiments: "ablation" (emotional prompts) and/or "patching" (neutral prompts).
    c.modes = ("ablation", "patching")
    # What ablated heads become: "zero" and/or "mean" (neutral prompts' mean z).
    c.kinds = ("zero", "mean")
    # Named head sets always run, as "name": [[layer, head], ...] (the study's case: L0H0).
    c.named_sets = {"L0H0": ((0, 0),)}
    # Also run the screen's best 1..top_k heads per emotion (exact, projection, mean-ablation).
    c.top_k = 3
    # Continuation length in tokens; 0 temperature = greedy, else sampling with `seed`.
    c.n_new = 20
    c.temperature = 0.0
    # EOS cannot be any of the first min_new_tokens generated tokens (transformers'
    # min_new_tokens); 0 = the model may end at once, leaving no text to score.
    c.min_new_tokens = 0
    # Random head sets of the same size per edit (the control), and the seed of everything.
    c.n_control = 3
    c.seed = 0
    # Bootstrap resamples over prompts and CI level.
    c.n_boot = 2000
    c.level = 0.95
    # Prompt settings (as sections.heads()), and labels.
    c.prepend_bos = False
    c.max_len = 64
    c.model_label = ""
    # Generated texts kept per condition in samples.json.
    c.n_samples = 3
    return c
