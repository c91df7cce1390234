"""transformers models (torch, CPU, fp32, eager attention) as the reference our models must equal.

Every parameter, biases and layer norms included, is drawn at random, so a layout mistake in any
tensor shows up as a mismatch (zero-initialised biases would hide one).
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

import models
from models import families


def hf_model(hf_config: dict, seed: int = 0):
    cfg = dict(hf_config)
    model_type = cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # layer-norm gains
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.02 * torch.randn_like(p))  # the configs' initializer_range
    return model.eval()


def state_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def convert(model, hf_config: dict) -> models.LoadedModel:
    """Our model with the torch model's weights (converted in memory, no files)."""
    family = families.family_for(hf_config)
    cfg = family.config_from_hf(hf_config, name="test")
    params = family.convert(state_numpy(model), cfg)
    import jax
    import jax.numpy as jnp

    return models.LoadedModel(cfg, jax.tree_util.tree_map(jnp.asarray, params))


def run_hf(model, ids, mask=None):
    """(logits, hidden_states) as numpy; hidden_states [layer + 1, batch, pos, d_model]."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long),
            attention_mask=None if mask is None else torch.as_tensor(np.asarray(mask)).long(),
            output_hidden_states=True,
        )
    return out.logits.numpy(), np.stack([h.numpy() for h in out.hidden_states])


def out_proj(model, layer: int):
    """The module whose input is the concatenated per-head z of `layer`."""
    base = model.base_model
    if hasattr(base, "h"):
        attn = base.h[layer].attn
        return attn.attention.out_proj if hasattr(attn, "attention") else attn.c_proj
    return base.layers[layer].attention.dense


def blocks(model):
    base = model.base_model
    return base.h if hasattr(base, "h") else base.layers


def final_ln(model):
    base = model.base_model
    return base.ln_f if hasattr(base, "ln_f") else base.final_layer_norm
