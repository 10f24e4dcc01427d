"""Soft prompt: the recommender's user state projected to m virtual tokens the LLM reads before the prompt."""
from __future__ import annotations

import torch
from torch import nn

from recpie.explainer.forward import left_pad_position_ids


@torch.no_grad()
def input_embedding_rms(model: nn.Module, sample: int = 4096) -> float:
    """Mean RMS of the vectors the model's blocks actually see for real tokens (Gemma's embedding layer
    multiplies by sqrt(hidden) inside, so measure the layer's output, not its weight)."""
    emb = model.get_input_embeddings()
    n = emb.weight.shape[0]
    ids = torch.linspace(0, n - 1, min(n, sample), device=emb.weight.device).long()
    return emb(ids).float().pow(2).mean(-1).sqrt().mean().item()


class SoftPrompt(nn.Module):
    """MLP(stop-grad(h)) -> m vectors of the LLM hidden size, RMS-normalised to the real embedding scale
    times a learned gain (init 1), so the virtual tokens neither vanish nor dominate at initialisation."""

    def __init__(self, user_dim: int, hidden: int, llm_hidden: int, tokens: int, target_rms: float):
        super().__init__()
        self.tokens, self.llm_hidden = tokens, llm_hidden
        self.mlp = nn.Sequential(
            nn.Linear(user_dim, hidden), nn.GELU(), nn.Linear(hidden, tokens * llm_hidden)
        )
        self.gain = nn.Parameter(torch.ones(tokens, 1))
        self.register_buffer("target_rms", torch.tensor(float(target_rms)))

    def forward(self, user_state: torch.Tensor) -> torch.Tensor:
        """[B, user_dim] -> [B, m, llm_hidden]; the user state is detached (the LLM must not move h)."""
        x = self.mlp(user_state.detach().to(self.mlp[0].weight.dtype))
        x = x.view(-1, self.tokens, self.llm_hidden)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x * self.gain * self.target_rms


def build_inputs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, soft: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs_embeds, attention_mask, position_ids) for a left-padded batch with the soft prompt placed
    right after the padding, i.e. directly before each prompt's first real token.

    Positions count from the first attended element (as generate() does from the mask), so a row's
    numbers do not depend on how much padding its batch needed."""
    tok_emb = model.get_input_embeddings()(input_ids)
    if soft is None or soft.shape[1] == 0:
        mask = attention_mask
        embeds = tok_emb
    else:
        b, m = soft.shape[:2]
        length = input_ids.shape[1]
        embeds = torch.cat([soft.to(tok_emb.dtype), tok_emb], 1)
        mask = torch.cat([attention_mask.new_ones(b, m), attention_mask], 1)
        # move each row's soft tokens from the front to just after its left padding (the leading zeros of
        # its mask: a response's right padding is not left padding)
        pad = attention_mask.long().argmax(1)
        ar = torch.arange(m + length, device=input_ids.device).expand(b, -1)
        inner = torch.where(ar < pad[:, None] + m, ar - pad[:, None], ar)
        src = torch.where(ar < pad[:, None], ar + m, inner)
        embeds = embeds.gather(1, src[..., None].expand(-1, -1, embeds.shape[-1]))
        mask = mask.gather(1, src)
    return embeds, mask, left_pad_position_ids(mask)
