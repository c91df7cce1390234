"""transformers models (torch, CPU, fp32, eager attention) as the reference our models must equal.

Every parameter, biases and layer norms included, is drawn at random, so a layout mistake in any
tensor shows up as a mismatch (zero-initialised biases would hide one). `in_dtype` gives the same
model with its parameters in bf16 / fp16, to hold our runs in those dtypes to it.
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


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def in_dtype(model, dtype: str):
    """A copy of the torch model with every parameter in `dtype` ('bfloat16', ...), as
    `from_pretrained(..., dtype=...)` holds a checkpoint. Buffers stay as they are (rotary
    frequencies fp32, as from_pretrained computes them; `model.to(dtype)` would round them)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.data = p.data.to(TORCH_DTYPES[dtype])
    return out


def state_numpy(model) -> dict[str, np.ndarray]:
    """The torch model's state dict as numpy (fp32 views; bf16 / fp16 widened to fp32)."""
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


def convert(model, hf_config: dict, dtype: str = "float32") -> models.LoadedModel:
    """Our model with the torch model's weights (converted in memory, no files), its params in
    `dtype` (the fp32 weights rounded, as torch's `.to(dtype)` rounds them)."""
    import jax
    import jax.numpy as jnp

    from models.config import DTYPES

    family = families.family_for(hf_config)
    cfg = family.config_from_hf(hf_config, name="test")
    params = family.convert(state_numpy(model), cfg)
    dt = DTYPES[dtype]
    return models.LoadedModel(cfg, jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), params))


def run_hf(model, ids, mask=None):
    """(logits, hidden_states) as numpy; hidden_states [layer + 1, batch, pos, d_model]."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long),
            attention_mask=None if mask is None else torch.as_tensor(np.asarray(mask)).long(),
            output_hidden_states=True,
        )
    return out.logits.float().numpy(), np.stack([h.float().numpy() for h in out.hidden_states])


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


def assert_matches(ours: models.LoadedModel, model, ids, mask=None, atol: float = 1e-4):
    """Our logits and every hidden state equal transformers' at the real positions of `ids`
    [batch, pos] (max abs difference <= atol). transformers' last hidden state is after the
    final layer norm and ours before it, so ours goes through transformers' final norm first."""
    logits, trace = ours.forward(ids, mask, record=models.Record.residuals(logits="all"))
    hl, hh = run_hf(model, ids, mask)
    real = np.ones(np.shape(ids), bool) if mask is None else np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(logits, np.float32)[real], hl[real], atol=atol, rtol=0)
    ours_h = np.asarray(trace.hidden_states(), np.float32)
    np.testing.assert_allclose(ours_h[:-1][:, real], hh[:-1][:, real], atol=atol, rtol=0)
    ln = final_ln(model)
    with torch.no_grad():
        normed = ln(torch.tensor(ours_h[-1]).to(ln.weight.dtype)).float().numpy()
    np.testing.assert_allclose(normed[real], hh[-1][real], atol=atol, rtol=0)
