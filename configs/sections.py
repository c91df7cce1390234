"""Every setting of every phase, with its comment: the sections `common.base_config()` puts
together. The library takes these sections as arguments and defines no defaults of its own.

Each function returns a fresh ConfigDict; tests use them to build a section and change a field."""

from __future__ import annotations

import ml_collections

from jaxcirc.data import lexicon


def batch(size: int | str) -> ml_collections.FieldReference:
    """A batch setting (jaxcirc.infra.batches.SETTINGS): a whole number, used as given, or
    "auto": the largest that fits the memory at hand, chosen before anything is loaded and
    recorded in the run's config.json. Typed `object` so that either replaces either, in a
    config file or on the command line (--config.extract.batch_size=auto, or =64)."""
    return ml_collections.FieldReference(size, field_type=object)


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
    # Prompt-bootstrap resamples (each class resampled within itself) for the CI of every cosine
    # and probe accuracy, the share of resamples picking each layer as the probe's best, and
    # the token-vs-sentence-end probe comparison (which also draws this many sign flips).
    c.n_boot = 1000
    # Central band of every null and CI (0.95: 2.5th..97.5th percentiles).
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
    # Shuffled-pairing / CKA / random-subspace null samples per figure. Shuffled pairings move
    # whole prompts (a prompt's tokens go together, to the same positions of a prompt of the same
    # length), never single token rows.
    c.n_perm = 100
    # Whole-prompt bootstrap resamples for the CI of every subspace overlap (raw, after the
    # linear map at the first ridge, after Procrustes) and of the difference from the
    # random-init control: bases and maps refit per resample. Cost per resample, layer pair and
    # B side (B and each random-init copy): one Gram eigendecomposition and one d x d SVD, about
    # 0.4 s at d = 768 on one thread (the study's 10 pairings x 13 layers: ~1.5 h at 100), 5 ms
    # at the demo's d = 128.
    c.n_boot = 100
    # Random-init control: the number of randomly initialised copies of each model (same
    # architecture and tokenizer, fed the same prompts) whose activations the study extracts
    # and passes in alignment's Inputs.controls; 0 = no control. Every alignment figure is
    # then also computed with model B replaced by each copy: a map between two networks that
    # read the same tokens beats a shuffled pairing whatever they learnt, so only a figure above
    # the random-init copy's says the TRAINED model shares structure. One copy gives one value
    # (p cannot go below 1/2); the prompt bootstrap gives a CI of the difference.
    c.random_init_draws = 1
    # Seed of the first random-init copy (copy j uses random_init_seed + j).
    c.random_init_seed = 12345
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
    # Random directions for the next-token verdicts (logit differences at the last prompt token):
    # these need no generation, so each of the directions past the n_random_seeds generated ones
    # costs one forward pass per (layer, alpha, prompt) instead of a generation, and p can reach
    # 1 / (n_random_internal + 1) = 0.01 (text verdicts stop at 1 / (n_random_seeds + 1)). Cost:
    # each such direction costs ~1/8 of a generated one. Demo gpt2 stand-in, 2-core CPU
    # (2026-11-30), the whole steering phase (coherence included) against before the verdicts:
    # CPU time +72% with 99 (wall +41% on a quiet machine), +36% with 19.
    c.n_random_internal = 99
    # Label-shuffled control vectors (the second control of every verdict): the study makes
    # n_label_shuffled class-mean differences with the emotion labels permuted among the
    # emotional prompts (neutral prompts keep theirs; seeded by label_shuffle_seed, one
    # permutation per vector), by the same vector_method / vector_centre as the emotion vectors,
    # unit per layer like them (jaxcirc.core.vectors.label_shuffled_vectors). Isotropic random
    # directions are a weak control for anisotropic emotion directions: these share the
    # emotional-vs-neutral part of every emotion vector and lack only the label, so a verdict
    # beyond them is about the emotion, not about "emotional text". 0 = random directions only.
    # All of them serve the next-token verdicts (forward passes: p can reach
    # 1 / (n_label_shuffled + 1) = 0.01); the first n_control_text are also generated for the
    # text verdicts (each costs as much as an emotion vector).
    c.n_label_shuffled = 99
    c.label_shuffle_seed = 0
    c.n_control_text = 10
    # Coherence of each generated cell (jaxcirc.core.coherence), against the unsteered
    # continuations of the same prompts: a cell is "repetitive" when the mean share of repeated
    # token n-grams (n = repetition_n) rose by more than coherence_repetition_rise (0.2: a
    # 10-token sentence said twice adds ~0.45), else "degraded" when the unsteered model's mean
    # loss on the continuation rose by more than coherence_loss_rise nats per token (1.0: tokens
    # e ~ 2.7 times less likely to the unsteered model, on average, than its own continuations),
    # else "coherent". Verdicts choose among coherent cells only.
    c.repetition_n = 2
    c.coherence_repetition_rise = 0.2
    c.coherence_loss_rise = 1.0
    # The loss costs a forward pass of prompt + continuation per distinct generated row (about a
    # third of the generation's own cost): it is scored on the first coherence_prompts prompts of
    # every cell (0 = all; repetition is always scored on all). A cell's mean over 20 prompts
    # sits within ~0.1-0.2 nats of the mean over all on the demo, against a threshold of 1.0.
    c.coherence_prompts = 20
    # Rows (prompt + continuation) per forward call of that loss: memory is about loss_rows *
    # max_new_tokens * d_vocab * 4 bytes for the log-probabilities (GPT-2: 64 rows x 20 tokens
    # = 257 MB) plus the activations.
    c.loss_rows = 64
    # Significance level of every verdict (steering and patching): "beyond_control" when p is at
    # most this; a p at its floor 1 / (n + 1) above it reads "beyond_all_draws" (too few draws).
    c.verdict_level = 0.05
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
    # Language of the generated text: its text measures (jaxcirc.core.scoring.score_texts) and
    # logit-difference words (lexicon.EMOTION_LOGIT_WORDS, or lexicon_ja's _JA ones for "ja").
    # Study configs tie it to dataset.language (configs.common.base_config).
    c.language = "en"
    # Bootstrap over prompts for every effect's 95% CI.
    c.n_boot = 2000
    c.seed = 0
    c.ci_level = 0.95
    # Sample generations saved per cell (the first prompts, in input order).
    c.samples_per_cell = 3
    # Rows (cell x prompt) per decode call and per prompt re-run call, at most: memory is about
    # batch_rows * n_layers * (prompt + new tokens) * d_model * 8 bytes for the caches. The phase
    # fixes one count of each (and one prompt width, a multiple of 8) for all its runs of a
    # model, neutral, real-world and patching alike, so each compiles the same programs
    # (`jaxcirc.phases.steering.bucket_for`). Either may be "auto" (`batch`).
    c.batch_rows = batch(512)
    c.prefill_rows = batch(256)
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
    # Patching verdict: the layer of largest |source - control| against the same maximum after
    # this many random sign flips of each target's difference (p floor 1 / (n + 1) = 0.001).
    c.patch_n_flip = 999
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
    # Prompts per compiled sweep call (the last batch is padded with copies and trimmed), or
    # "auto" (`batch`).
    c.batch_size = batch(32)
    # How head rows run through the later layers: "map" (lax.map over chunks of `chunk` rows
    # folded into the batch). Measured on the 2-core CPU, full-size random GPT-2, 144 heads x 8
    # prompts x 12 tokens, one run (benchmarks/bench_heads.py): map 27.8 s, vmap 29.1 s, fold
    # 33.0 s; map also bounds memory to `chunk` rows x batch whatever the batch.
    c.strategy = "map"
    # Rows (heads x kinds) per chunk for strategy "map".
    c.chunk = 4
    # Random unit directions scored like an emotion vector: each head's projection null band,
    # and the max over heads of each direction's scores: the family-wise null a top-k list is
    # read against (p = (1 + #)/(1 + n_random): 99 lets p reach 0.01). Attribution runs one
    # backward pass per output column (2 + n_random) or one forward-mode pass per (kind, head),
    # whichever is fewer, `grad_chunk` at a time.
    c.n_random = 99
    c.grad_chunk = 16
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
    # Run this part of the heads phase? (False leaves it out of the phase and its stage key.)
    c.enabled = True
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
    # Selection-aware: each prompt set is split in two halves (seeded); candidates and the
    # search see one, every reported effect (joint, sum of singles, interaction) is measured
    # on the other. Candidates: the n heads of largest single effect on the search half (all
    # heads if 0).
    c.n_candidates = 24
    # The control: the same search (candidates, beam, held-out scoring) for this many null
    # targets (random unit directions for the projection, random-word logit differences for
    # logit_diff), searched together; p = (1 + #null >= observed) / (1 + n_null) (99: p can
    # reach 0.01). Costs up to one head sweep per distinct set kept by the null searches at
    # each step (they share sweeps where they keep the same set).
    c.n_null = 99
    # Head sets per forward when found sets are scored on the held-out half.
    c.set_chunk = 32
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
    # Run this part of the heads phase? (False leaves it out of the phase and its stage key.)
    c.enabled = True
    # Layers whose neurons are scored: [first, last) (the study's steering layers 6-7 by default).
    c.layers = (6, 8)
    # Removal kinds: "zero" and/or "mean" (neutral prompts' mean activation).
    c.kinds = ("zero", "mean")
    # Measure for the exact shortlist and the tables: "projection" or "logit_diff" (both are
    # scored by direct and attribution).
    c.measure = "projection"
    # Neurons per emotion whose exact removal effect is computed: the n_exact best by
    # attribution (the shortlist) and n_exact drawn at random from the layer range (seeded):
    # attribution's agreement with the exact effect is reported on both.
    c.n_exact = 32
    # Random unit directions scored like an emotion vector (direct and attribution): the max
    # over all neurons of the range on each is the family-wise null of the top lists
    # (p = (1 + #)/(1 + n_random)). Attribution pulls back one backward pass per direction,
    # `grad_chunk` at a time (4 ran fastest on the 2-core CPU).
    c.n_random = 99
    c.grad_chunk = 4
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
    # Run this part of the heads phase? (False leaves it out of the phase and its stage key.)
    c.enabled = True
    # Which experiments: "ablation" (emotional prompts) and/or "patching" (neutral prompts).
    c.modes = ("ablation", "patching")
    # What ablated heads become: "zero" and/or "mean" (neutral prompts' mean z).
    c.kinds = ("zero", "mean")
    # Named head sets always run, as "name": [[layer, head], ...] (the study's case: L0H0).
    c.named_sets = {"L0H0": ((0, 0),)}
    # Also run the screen's best 1..top_k heads per emotion (exact, projection, mean-ablation),
    # chosen on one half of the emotion's prompts (seeded) and evaluated on the other half;
    # the named sets run on all prompts.
    c.top_k = 3
    # Continuation length in tokens; 0 temperature = greedy, else sampling with `seed`.
    c.n_new = 20
    c.temperature = 0.0
    # EOS cannot be any of the first min_new_tokens generated tokens (transformers'
    # min_new_tokens); 0 = the model may end at once, leaving no text to score.
    c.min_new_tokens = 0
    # Random head sets per set size and condition (the control; distinct, drawn from the heads
    # outside the evaluated sets of that size; all of them when fewer exist), and the seed of
    # everything. They are generated with the clean and edited runs in shared batches; their
    # CIs resample prompts and control sets. p against them is at least 1/(1 + n_control): 10
    # keeps the demo's generation within ~1.5x its time with 3 sets per edit (p >= 0.09, so no
    # set can be beyond the control at 0.05); 19 lets p reach 0.05, 99 reach 0.01 (GPT-2's 144
    # heads allow it; generation time grows about linearly with it).
    c.n_control = 10
    c.seed = 0
    # Neutral prompts the patching runs on: a seeded sample of this many (0 = all). Every
    # condition generates (1 + sets + control sets) continuations per prompt; 35 is the size of
    # the ablation's held-out half of a 70-prompt emotion.
    c.max_neutral = 35
    # Rows (head sets x prompts) per generation call: memory is about batch_rows * n_layers *
    # (prompt + new tokens) * d_model * 8 bytes for the caches. Or "auto" (`batch`).
    c.batch_rows = batch(512)
    # Bootstrap resamples over prompts and CI level.
    c.n_boot = 2000
    c.level = 0.95
    # Prompt settings (as sections.heads()), and labels.
    c.prepend_bos = False
    c.max_len = 64
    c.model_label = ""
    # Language of the generated text, for its measures (as sections.steering().language).
    c.language = "en"
    # Generated texts kept per condition in samples.json.
    c.n_samples = 3
    return c


def cross_language() -> ml_collections.ConfigDict:
    """English vs Japanese (jaxcirc.phases.cross_language): English models beside the study's
    Japanese ones, on the prompts paired by en_id. The map, its nulls and the random-init control
    are the alignment section's; the patching's layer, alphas, ridge, held-out share and random
    directions the cross_model section's; generation and text measures the steering section's."""
    c = ml_collections.ConfigDict()
    # English stand-ins (jaxcirc.demo.standins families, trained on the English demo corpus at
    # the study's stand-in shape and training settings); for checkpoint studies, english_sources.
    c.english_families = ("gpt2",)
    # Where the English stand-ins are cached: the default demo's folder, so a machine that ran
    # configs/demo.py at the same shape reuses its trained models.
    c.english_cache_dir = "~/.cache/jaxcirc/demo"
    # English checkpoints (label, source, revision: as models.sources) for checkpoint studies.
    c.english_sources = ()
    # Cross-model patching across languages: steer each Japanese model with each English model's
    # mapped emotion vectors (off: the alignment part alone).
    c.patch = True
    # ... and the other way: each Japanese model's vectors mapped into each English model, on
    # the English pairs of the same neutral prompts, scored by the English text measures.
    c.patch_back = True
    # Japanese neutral prompts steered (the first of the paired ones).
    c.max_prompts = 24
    return c


def checkpoints() -> ml_collections.ConfigDict:
    """The study across training checkpoints (jaxcirc.phases.checkpoints): the representation
    analyses on every checkpoint of one model, and when the emotion structure forms."""
    c = ml_collections.ConfigDict()
    # Training steps of the checkpoints, ascending; the last is the final model every step is
    # compared with. Stand-ins: the trainer keeps these steps (0 = the random init; the last must
    # be models.train.steps for the final model). Checkpoints: the hub revisions below.
    c.steps = (0, 8, 16, 32, 64, 128, 240)
    # A step's hub revision (checkpoint models): Pythia names them "step0" ... "step143000".
    c.revision = "step{step}"
    # Cache converted params per revision in ~/.cache/jaxcirc/params (12 revisions of
    # Pythia-160M would add ~8 GB); off: convert each from the HF cache when loaded.
    c.param_cache = False
    # Analyses (jaxcirc.phases.checkpoints.ANALYSES): probe accuracy per layer and step, cosines
    # of the neutral-centred emotion vectors, overlap of each step's emotion subspace with the
    # final one's, neutral-fit maps between consecutive steps, each emotion's onset step.
    c.analyses = ("probe", "cosines", "overlap", "maps", "onset")
    # Per-prompt features the probe reads: "sentence_end" (last real token), "span_mean" (mean
    # over the span tokens; each prompt weighs the same).
    c.probe_features = ("sentence_end", "span_mean")
    # The feature the vectors, subspaces, maps and onsets are built from (one of the above).
    c.vector_feature = "sentence_end"
    # Probe: stratified folds, label permutations for its null, LDA shrinkage.
    c.probe_folds = 5
    c.probe_n_perm = 100
    c.probe_shrinkage = "ledoit_wolf"
    # Label permutations (cosine, overlap and onset nulls) and shuffled pairings (map null); one
    # permutation serves every step, so family-wise thresholds are over steps and layers.
    c.n_perm = 200
    # Bootstrap resamples of the prompts (within each class) for the onset step's CI.
    c.n_boot = 1000
    # Dimension of each step's emotion subspace (PCA of the four class means' differences; 1-3).
    c.subspace_k = 3
    # Neutral-fit maps between consecutive steps: relative ridge (ridge = ridge_rel * mean
    # eigenvalue of the inputs' scatter) and the share of neutral prompts held out for R^2. The
    # maps fit fewer prompts than dimensions (52 sentence ends in d_model 128 on the demo), where
    # a small ridge interpolates: on the demo's Pythia stand-in, last layer, ridge_rel 0.1 gave
    # held-out R^2 down to -3.2, 1.0 gave -1.7 to 0.36 (measured 2026-11-30).
    c.map_ridge_rel = 1.0
    c.map_test_fraction = 0.25
    # The layer the curves show (-1 = the last, resid_post); the CSVs hold every layer.
    c.focus_layer = -1
    # Central band of every null, family-wise level of every threshold, and the CI's coverage.
    c.level = 0.95
    # About this many prompts' tokens per forward pass (packed rows, as the extraction phase).
    c.batch_size = 32
    # Prepend the tokenizer's BOS (study configs tie it to their prepend_bos).
    c.prepend_bos = False
    # Write the PNG figures (off: CSV/NPZ/JSON only, for quick runs and tests).
    c.plots = True
    # Seed of every permutation, fold split, held-out split and bootstrap.
    c.seed = 0
    return c
