"""A small GPT: pre-LayerNorm decoder blocks, rotary or learned positions, tied embeddings.

Deliberately plain (one file, no fused kernels beyond PyTorch's scaled_dot_product_attention)
so the ablation measures the data, not clever modelling. The same class serves a 10k-parameter
model in the tests and a ~100M-parameter model on a GPU.
"""

from __future__ import annotations

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape [context, head_dim] for rotary position embeddings (RoPE)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # the two halves of a head share frequencies
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: int = 0) -> torch.Tensor:
    """Rotate channel i with channel i + D/2 of x [B, H, T, D] by a position-dependent angle.

    The "rotate half" layout (GPT-NeoX) needs one concatenation instead of interleaving
    even and odd channels, which is noticeably faster on a CPU.
    """
    T = x.shape[-2]
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos[pos : pos + T] + rotated * sin[pos : pos + T]).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0, "d_model must be divisible by n_head"
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.rotary = cfg.positions == "rotary"

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                cache: dict | None = None, pos: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.rotary:
            q, k = apply_rotary(q, cos, sin, pos), apply_rotary(k, cos, sin, pos)
        if cache is not None:
            # Sampling: keep keys and values of earlier positions instead of recomputing them.
            if "k" in cache:
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        # Causal within the new tokens; a single new token may see every cached one.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=T > 1, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    """Pre-LN: normalise before each sublayer, add to the residual stream after."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x, cos, sin, cache=None, pos=0):
        x = x + self.attn(self.ln1(x), cos, sin, cache, pos)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', not {cfg.positions!r}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying: fewer parameters, better small models
        if cfg.positions == "rotary":
            cos, sin = rotary_tables(cfg.context, cfg.d_model // cfg.n_head)
            # Not saved with the weights: recomputed from the config, so checkpoints stay small.
            self.register_buffer("rot_cos", cos, persistent=False)
            self.register_buffer("rot_sin", sin, persistent=False)
        else:
            self.rot_cos = self.rot_sin = None
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's variance
        # from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def forward(self, idx: torch.Tensor, caches: list[dict] | None = None, pos: int = 0) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T] at positions pos.. (pos + T <= context).

        ``caches`` (one dict per block) is for sampling: it holds the keys and values of the
        positions before ``pos``. Training never uses it.
        """
        T = idx.shape[1]
        if pos + T > self.cfg.context:
            raise ValueError(f"positions up to {pos + T} exceed the context {self.cfg.context}")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(pos, pos + T, device=idx.device))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rot_cos, self.rot_sin, None if caches is None else caches[i], pos)
        return self.head(self.ln_f(x))

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay every matrix (the tied embedding too, as nanoGPT does), not the
        LayerNorm gains and biases, whose scale decay would only fight."""
        decay, no_decay = [], []
        for p in self.parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        stop=None,
    ) -> torch.Tensor:
        """Sample continuations of prompt [B, T]; returns only the new tokens [B, <=max_new].

        The prompt is cut from the left so that prompt + new tokens fit the context, and a
        key/value cache makes each new token cost one position, not a whole forward pass.
        ``stop(new_tokens)`` may return True to end early (e.g. every sample finished a function).
        """
        keep = max(1, self.cfg.context - max_new_tokens)
        idx = prompt[:, -keep:]
        caches = [{} for _ in self.blocks]
        logits = self(idx, caches, 0)[:, -1, :].float()
        pos = idx.shape[1]
        new = []
        for _ in range(max_new_tokens):
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            new.append(nxt)
            if pos >= self.cfg.context or (stop is not None and stop(torch.cat(new, dim=1))):
                break
            logits = self(nxt, caches, pos)[:, -1, :].float()
            pos += 1
        return torch.cat(new, dim=1) if new else prompt[:, :0]
