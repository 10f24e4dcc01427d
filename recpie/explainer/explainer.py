"""The facade the joint LightningModule and the PPO code use: one object owning LLM, soft prompt, encoder."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from recpie.config_checks import check_decoding, check_section
from recpie.errors import ConfigError
from recpie.explainer.cache import ExplanationCache
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.encoder import LLMEncoder, SentenceEncoder, VerdictEncoder
from recpie.explainer.forward import (
    OutputHead,
    ResponseOutput,
    attention_implementation,
    continuation_logprobs,
    decoder_of,
    response_logprobs,
    scatter_rows,
    trim_padding,
)
from recpie.explainer.generate import Generation, generate
from recpie.explainer.llm import load_llm, resolve_model_path
from recpie.explainer.parse import CHOICE_END, PREFIX
from recpie.explainer.prompts import candidate_line_ends
from recpie.explainer.soft_prompt import SoftPrompt, build_inputs, input_embedding_rms
from recpie.explainer.vocabulary import data_vocabulary
from recpie.utils.batching import in_row_order, length_groups
from recpie.utils.provenance import quick_digest


class Explainer(nn.Module):
    """`model` is the peft-wrapped LLM (frozen base + LoRA); `soft_prompt` maps user states [B, user_dim]
    to virtual tokens. Prompts (see prompts.py) end with the forced prefix 'may like:'. With
    cfg.vocabulary='data' the output head covers only the tokens of `data`'s prompts, templates and labels."""

    def __init__(self, cfg: ExplainerConfig, user_dim: int, data=None):
        super().__init__()
        self.cfg = cfg
        self.model, self.tokenizer = load_llm(cfg)
        self.device = self.model.get_input_embeddings().weight.device
        self.hidden_size = self.model.config.get_text_config().hidden_size
        check_section(cfg, "explainer")
        check_decoding(cfg)
        if cfg.vocabulary == "data" and data is None:
            raise ValueError("explainer.vocabulary=data needs the check-in data its head is built from")
        ids = data_vocabulary(self.tokenizer, data, cfg).to(self.device) if cfg.vocabulary == "data" else None
        self.head = OutputHead(self.model, ids)
        attention = {"auto": "eager" if self.device.type == "cuda" else "sdpa"}.get(cfg.logprob_attention)
        self.attention = attention or cfg.logprob_attention
        self.soft_prompt = SoftPrompt(
            user_dim, cfg.soft_hidden, self.hidden_size, cfg.soft_tokens, input_embedding_rms(self.model)
        ).to(self.device)
        if cfg.encoder == "llm":
            self.encoder = LLMEncoder(self.model, self.tokenizer, cfg.encoder_max_tokens)
        elif cfg.encoder == "verdict":
            self.encoder = VerdictEncoder(cfg.num_candidates)
        else:
            self.encoder = SentenceEncoder(cfg.encoder, self.device)
        # explainer.choice=readout: each candidate's score from the hidden states ending its prompt line
        self.readout_layers = readout_layers(cfg.readout_layers, self.model.config, decoder_of(self.model))
        self.choice_head = nn.Linear(self.hidden_size * len(self.readout_layers), 1).to(self.device) \
            if cfg.choice == "readout" else None
        if self.choice_head is not None:
            nn.init.zeros_(self.choice_head.weight)
            nn.init.zeros_(self.choice_head.bias)
        self.cache = ExplanationCache(cfg.explanation_cache) if cfg.explanation_cache else None
        self.base_model_tag = base_model_digest(cfg, self.model) if self.cache is not None else ""

    @property
    def encoding_dim(self) -> int:
        return self.encoder.dim

    def soft(self, user_states: torch.Tensor | None) -> torch.Tensor | None:
        if user_states is None or self.cfg.soft_tokens == 0:
            return None
        return self.soft_prompt(user_states.to(self.device))

    def generate(self, prompts: list[str], user_states: torch.Tensor | None, sample: bool,
                 max_new_tokens: int | None = None) -> Generation:
        """Sampled (rollouts, at cfg.temperature) or greedy (evaluation) explanations, no gradients."""
        with torch.no_grad():
            soft = self.soft(user_states)
        return generate(
            self.model, self.tokenizer, prompts, soft, head=self.head, sample=sample,
            temperature=self.cfg.temperature, max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
            static_cache=self.cfg.static_cache, prefill_tokens=self.cfg.forward_tokens, text_prefix=PREFIX,
        )

    def response_logprobs(self, sequences: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                          user_states: torch.Tensor | None, reference: bool = False) -> ResponseOutput:
        """The one log-prob forward (PPO's old, new and reference passes, the warm-up, tests): rows are
        [left-padded prompt | R response tokens] with their mask, the response's mask [B, R]; log-probs (0
        where masked) at cfg.temperature through the same head as sampling, under the policy (with grad) or,
        with reference=True, under the adapter-disabled base with the same soft prompt (no grad).

        Rows run in groups of similar length, cfg.forward_tokens padded tokens at a time, each without
        the padding all its rows share; a training pass bounds its memory by passing one group at a time."""
        def forward(rows: torch.Tensor) -> ResponseOutput:
            seq, mask, scored = trim_padding(sequences[rows], attention_mask[rows], response_mask[rows])
            embeds, mask, pos = build_inputs(self.model, seq, mask,
                                             self.soft(user_states[rows] if user_states is not None else None))
            out = response_logprobs(self.model, seq[:, -scored.shape[1]:], self.cfg.temperature,
                                    attn=self.attention, head=self.head, inputs_embeds=embeds,
                                    attention_mask=mask, position_ids=pos)
            out.logprobs = out.logprobs * scored
            return out

        groups = length_groups(attention_mask.sum(1), self.cfg.forward_tokens)
        with (torch.no_grad() if reference else nullcontext()), \
                (self.model.disable_adapter() if reference else nullcontext()):
            parts = [(rows, forward(rows)) for rows in groups]
        return scatter_rows(parts, response_mask.shape[1])

    def choice_groups(self, prompts: list[str], labels: list[list[str]], user_states: torch.Tensor | None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, log pi [len(rows), K]) per group of similar-length prompts (cfg.forward_tokens padded
        tokens each), each computed when the previous one has been consumed (a training pass backwards one
        group at a time). pi is the K-way choice among each prompt's candidates: with explainer.choice=scored
        the softmax over j of log p(" <label j>," | prompt ending in 'may like:'), the label's tokens and the
        comma that ends a chosen name in the text, through the head and temperature of sampling (candidates
        sharing a label share its score); with explainer.choice=readout the softmax of the choice head's
        reading of the last hidden state at the end of candidate j's line. With grad when grad is enabled."""
        tok = self.tokenizer
        k = len(labels[0])
        if any(len(row) != k for row in labels):
            raise ValueError(f"every prompt needs the same number of candidate labels ({k})")
        readout = self.choice_head is not None
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=True, return_offsets_mapping=readout)
        if readout:
            yield from self._readout_groups(prompts, enc, k, user_states)
            return
        conts = [tok(f" {lab}{CHOICE_END}", add_special_tokens=False).input_ids for row in labels for lab in row]
        ids = torch.full((len(conts), max(map(len, conts))), tok.pad_token_id, dtype=torch.long)
        cmask = torch.zeros_like(ids)
        for r, c in enumerate(conts):
            ids[r, :len(c)], cmask[r, :len(c)] = torch.tensor(c), 1
        width = enc.input_ids.shape[1]
        for rows in length_groups(enc.attention_mask.sum(1), self.cfg.forward_tokens):
            cut = width - int(enc.attention_mask[rows].sum(1).max())  # the group's common left padding
            embeds, mask, pos = build_inputs(
                self.model, enc.input_ids[rows, cut:].to(self.device), enc.attention_mask[rows, cut:].to(self.device),
                self.soft(user_states[rows] if user_states is not None else None))
            pick = (rows[:, None] * k + torch.arange(k)).reshape(-1)
            scores = continuation_logprobs(self.model, self.head, self.cfg.temperature, ids[pick].to(self.device),
                                           cmask[pick].to(self.device), attn=self.attention, inputs_embeds=embeds,
                                           attention_mask=mask, position_ids=pos)
            yield rows, torch.log_softmax(scores, -1)

    def _readout_groups(self, prompts: list[str], enc, k: int, user_states: torch.Tensor | None
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``choice_groups`` of explainer.choice=readout: the choice head on each group's ``_line_groups``."""
        for rows, lines in self._line_groups(prompts, enc, k, user_states):
            yield rows, self.readout_logprobs(lines)

    def _line_groups(self, prompts: list[str], enc, k: int, user_states: torch.Tensor | None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, the hidden states [len(rows), K, D] ending each candidate's prompt line, at
        explainer.readout_layers) per group of similar-length prompts (``enc``: the prompts left-padded, with
        their tokens' character offsets): one prompt forward per group, no continuation."""
        width, m = enc.input_ids.shape[1], self.cfg.soft_tokens if user_states is not None else 0
        # each candidate line's last token, as a column of the left-padded batch: the real token whose
        # characters cover the line's last character (padding and special tokens cover none)
        ends = torch.tensor([candidate_line_ends(prompt, k) for prompt in prompts])[..., None]  # [n, K, 1]
        spans = enc.offset_mapping[:, None]  # [n, 1, L, 2]
        covers = (spans[..., 0] <= ends) & (ends < spans[..., 1]) & enc.attention_mask[:, None].bool()
        if not covers.any(-1).all():
            raise ValueError("explainer.choice=readout: a candidate line's last character is in no prompt token")
        cols = covers.int().argmax(-1)  # [n, K]
        body = decoder_of(self.model)
        # the forward stops at the deepest layer read: a readout of layer i alone costs i of the LLM's layers
        total = self.model.config.num_hidden_layers
        depth = max(total if i == -1 else i for i in self.readout_layers)
        for rows in length_groups(enc.attention_mask.sum(1), self.cfg.forward_tokens):
            cut = width - int(enc.attention_mask[rows].sum(1).max())  # the group's common left padding
            embeds, mask, pos = build_inputs(
                self.model, enc.input_ids[rows, cut:].to(self.device), enc.attention_mask[rows, cut:].to(self.device),
                self.soft(user_states[rows] if user_states is not None else None))
            with attention_implementation(self.model, self.attention), first_layers(body, depth, total):
                out = body(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False,
                           output_hidden_states=len(self.readout_layers) > 1)
            at = (cols[rows] - cut + m).to(self.device)  # the soft prompt sits before the first real token
            yield rows, torch.cat([line_states(body, out, at, total if i == -1 else i, depth)
                                   for i in self.readout_layers], -1)

    def readout_logprobs(self, lines: torch.Tensor) -> torch.Tensor:
        """[n, K] log pi of explainer.choice=readout (at temperature 1): the softmax over the K candidates of
        the choice head's reading of their line states ``lines`` [n, K, D]."""
        return torch.log_softmax(self.choice_head(lines.float()).squeeze(-1), -1)

    def readout_states(self, prompts: list[str], labels: list[list[str]], user_states: torch.Tensor | None
                       ) -> torch.Tensor:
        """[n, K, D] the line states the readout choice's head reads (``_line_groups``), in row order, without
        grad: what PPO of the head alone (rl.trainable=head) computes once per prompt and re-reads each step."""
        if self.choice_head is None:
            raise ValueError("readout_states reads the readout choice's lines: set explainer.choice=readout")
        k = len(labels[0])
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True,
                             return_offsets_mapping=True)
        with torch.no_grad():
            parts = list(self._line_groups(prompts, enc, k, user_states))
        return in_row_order([rows for rows, _ in parts], [lines for _, lines in parts])

    def choice_logprobs(self, prompts: list[str], labels: list[list[str]], user_states: torch.Tensor | None,
                        grad: bool = False) -> torch.Tensor:
        """[n, K] log pi (``choice_groups``) of every prompt, in row order; without grad unless ``grad`` (then
        every group's graph is kept at once: PPO's minibatches of a few prompts)."""
        with torch.no_grad() if not grad else nullcontext():
            parts = list(self.choice_groups(prompts, labels, user_states))
        return in_row_order([rows for rows, _ in parts], [lp for _, lp in parts])

    def explain(self, prompts: list[str], keys: list[str], user_states: torch.Tensor | None,
                version: int, write: Callable[[list[int]], list[str]] | None = None) -> list[str]:
        """Greedy explanations through the disk cache: only (key, version) pairs not cached are written,
        by ``write(indices of the prompts to write)`` (default: greedy generation).

        Each key is extended by what the text depends on beyond its prompt: a digest of the policy's weights
        (LoRA and soft prompt) and base model files (``base_model_digest``), and of the sample's user state,
        so a cached text is reused only where the very same policy would write it again (a resumed run; not
        another code version's run of this config, nor another LLM put at the same path)."""
        keys = self.cache_keys(keys, user_states)
        cached = [self.cache.get(k, version) if self.cache is not None else None for k in keys]
        todo = [i for i, c in enumerate(cached) if c is None]
        if todo:
            if write is not None:
                texts = write(todo)
            else:
                states = user_states[todo] if user_states is not None else None
                texts = self.generate([prompts[i] for i in todo], states, sample=False).texts
            if self.cache is not None:
                self.cache.put_many([keys[i] for i in todo], version, texts)
            for i, t in zip(todo, texts, strict=True):
                cached[i] = t
        return cached

    def cache_keys(self, keys: list[str], user_states: torch.Tensor | None) -> list[str]:
        """``key@<policy digest>[:<user state digest>]``: the cache key of each prompt's greedy text."""
        if self.cache is None:
            return keys
        policy = hashlib.sha1(self.base_model_tag.encode())
        for name, tensor in sorted(self.trainable_state_dict().items()):
            policy.update(name.encode())
            policy.update(_bytes(tensor))
        tag = policy.hexdigest()[:12]
        if user_states is None:
            return [f"{k}@{tag}" for k in keys]
        states = user_states.detach().cpu()  # one device copy, not one per row
        return [f"{k}@{tag}:{hashlib.sha1(_bytes(h)).hexdigest()[:12]}" for k, h in zip(keys, states, strict=True)]

    def encode(self, texts: list[str], candidate_labels: list[list[str]] | None = None) -> torch.Tensor:
        """Frozen embedding [B, encoding_dim] of the explanation texts (float32, no grad). Only the verdict
        encoder reads each text's candidate labels (to tell which candidate a part names)."""
        if isinstance(self.encoder, VerdictEncoder):
            if candidate_labels is None:
                raise ValueError("explainer.encoder=verdict needs the candidate labels of each text")
            return self.encoder(texts, candidate_labels)
        return self.encoder(texts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights, the soft prompt and the readout choice's head: what the explainer's optimizer steps."""
        lora = [p for p in self.model.parameters() if p.requires_grad]
        head = list(self.choice_head.parameters()) if self.choice_head is not None else []
        return lora + list(self.soft_prompt.parameters()) + head

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA + soft prompt only (checkpoints never hold the frozen base), as copies on the CPU: a snapshot
        that later updates do not change (``.cpu()`` of a CPU tensor would alias the live parameter)."""
        names = {id(p) for p in self.trainable_parameters()}
        return {k: v.detach().to("cpu", copy=True) for k, v in self.named_parameters() if id(v) in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = set(self.trainable_state_dict()) - set(state)
        if missing:
            raise KeyError(f"explainer state lacks {sorted(missing)[:3]}... ({len(missing)} keys)")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)


def readout_layers(layers, config, body: nn.Module) -> tuple[int, ...]:
    """explainer.readout_layers as a tuple, each index checked against the LLM's depth (its hidden_states hold
    the embeddings and every layer's output: num_hidden_layers + 1 of them); the last one named -1. Another
    than the last needs a decoder whose layers and final norm are ``layers`` and ``norm`` (Llama, Gemma,
    Qwen, Mistral), which ``first_layers`` and ``line_states`` use."""
    count = config.num_hidden_layers + 1
    if not layers or any(not -count <= i < count for i in layers):
        raise ConfigError(f"explainer.readout_layers={list(layers)}: each must index the LLM's {count} hidden "
                          f"states (0 the embeddings ... {count - 1} or -1 the last layer's), and at least one")
    named = tuple(-1 if i % count == count - 1 else i % count for i in layers)
    if len(set(named)) < len(named):
        raise ConfigError(f"explainer.readout_layers={list(layers)} names a hidden state twice")
    if named != (-1,) and not (isinstance(getattr(body, "layers", None), nn.ModuleList) and hasattr(body, "norm")):
        raise ConfigError(f"explainer.readout_layers={list(layers)}: this LLM's decoder ({type(body).__name__}) "
                          "has no `layers` and `norm` to read a layer before the last through; use [-1]")
    return named


def line_states(body: nn.Module, out, at: torch.Tensor, layer: int, depth: int) -> torch.Tensor:
    """[n, K, d] hidden state ``layer`` (0 the embeddings, i layer i's output) of a forward of ``body``'s first
    ``depth`` layers (its output ``out``) at the columns ``at`` [n, K], through the final norm (``out``'s
    last hidden state already is)."""
    def at_lines(hidden: torch.Tensor) -> torch.Tensor:
        return hidden.gather(1, at[..., None].expand(-1, -1, hidden.shape[-1]))

    return at_lines(out.last_hidden_state) if layer == depth else body.norm(at_lines(out.hidden_states[layer]))


@contextmanager
def first_layers(body: nn.Module, depth: int, total: int) -> Iterator[None]:
    """The decoder ``body`` runs only its first ``depth`` of its ``total`` layers inside the block (its final
    norm then reads layer ``depth``'s output); the whole stack again after it. Untouched when ``depth`` is all
    of them (any decoder: the default readout of the last layer)."""
    if depth >= total:
        yield
        return
    layers = body.layers
    body.layers = layers[:depth]
    try:
        yield
    finally:
        body.layers = layers


def base_model_digest(cfg: ExplainerConfig, model: nn.Module) -> str:
    """What identifies the frozen base LLM's files, cheaply: ``quick_digest`` (each file's name, size and
    first and last MiB) of the folder it loads from, and of a GGUF file; a hub id's resolved commit."""
    parts = [quick_digest(Path(cfg.model).expanduser())] if cfg.model.endswith(".gguf") else []
    path = Path(resolve_model_path(cfg)).expanduser()
    if path.exists():
        parts.append(quick_digest(path))
    else:
        parts.append(f"{cfg.model}@{getattr(model.config, '_commit_hash', None)}")
    return "/".join(parts)


def _bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 included), for digests."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
