"""The JAX peer the extraction issue sets as the floor: Penzai 0.2.5's GPT-NeoX (Pythia), run under
jit and capturing every block input plus the last block's output, i.e. the same 13 residual
streams jaxcirc's `Record.residuals()` returns (without the last block's output XLA would drop
that block as dead code, and Penzai would be timed on 11 blocks to our 12).

Penzai 0.2.5 was written against transformers 4; two shims let it read a transformers 5 model:
the config's rotary settings under their old names, and `lm_head.weight` also as `embed_out.weight`.
Both only rename; the weights are the same tensors.
"""

from __future__ import annotations

import jax.numpy as jnp


def available() -> bool:
    try:
        import penzai  # noqa: F401
    except ImportError:
        return False
    return True


def residual_runner(hf_model):
    """(jitted fn: ids [batch, pos] -> [layer + 1, batch, pos, d_model]) for a transformers
    GPTNeoXForCausalLM. Right padding needs no mask: attention is causal, so real positions
    never see the padding after them (their values equal an unpadded run's)."""
    from penzai import pz
    from penzai.models.transformer import model_parts
    from penzai.models.transformer.variants import gpt_neox
    from penzai.toolshed.save_intermediates import SaveIntermediate

    rope = hf_model.config.rope_parameters
    hf_model.config.rotary_emb_base = rope["rope_theta"]
    hf_model.config.rotary_pct = rope.get("partial_rotary_factor", 1.0)
    state_dict = hf_model.state_dict
    hf_model.state_dict = lambda: {
        **state_dict(),
        "embed_out.weight": state_dict()["lm_head.weight"],
    }
    try:
        model = gpt_neox.gpt_neox_from_huggingface_model(hf_model)
    finally:
        del hf_model.state_dict
    # A fresh saver on each side of every block (one shared instance would share its state).
    model = (
        pz.select(model)
        .at_instances_of(model_parts.TransformerBlock)
        .apply(lambda b: pz.nn.Sequential([SaveIntermediate(), b, SaveIntermediate()]))
    )

    @pz.variable_jit
    def run(m, tokens):
        m(tokens)
        saved = pz.select(m).at_instances_of(SaveIntermediate).get_sequence()
        keep = list(saved[0::2]) + [saved[-1]]  # every block's input, the last block's output
        return jnp.stack([s.saved.value.unwrap("batch", "seq", "embedding") for s in keep])

    return lambda ids: run(model, pz.nx.wrap(jnp.asarray(ids), "batch", "seq"))
