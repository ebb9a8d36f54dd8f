"""Evaluation of a trained model: losses on texts and pass@k with sandboxed test runs.

Loss on a benchmark is the per-token cross-entropy of prompt + reference solution, each
sequence preceded by the end-of-text id (as documents are in training), averaged over all
tokens of all problems (so long problems weigh more, like any per-token loss). Sequences longer
than the context are scored in consecutive windows.

pass@k uses the unbiased estimator of Chen et al. (2021): with n samples of which c pass,
pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems. A sample passes only when its
program (prompt, completion and the problem's tests) runs to its end in the sandbox and returns
normally; an exception, ``SystemExit`` or ``os._exit`` fails it (see :mod:`.sandbox`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import EOT
from .evalsets import Problem
from .loop import autocast
from .model import GPT
from .ngram import BigramModel
from .sandbox import require_sandbox, run_program


def encode_texts(tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    eot = tokenizer.token_to_id(EOT)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray([eot] + e.ids, dtype=np.int64) for e in encodings]


@torch.no_grad()
def sequences_loss(model: GPT, sequences: Sequence[np.ndarray], device: torch.device,
                   batch_size: int = 32) -> float:
    """Per-token loss over every token after the leading end-of-text of each sequence.

    Sequences are cut into windows of context + 1 tokens (overlapping by one, so each token
    is predicted once), padded and scored in batches; padding is ignored by the loss.
    """
    ctx = model.cfg.context
    windows = [seq[start : start + ctx + 1] for seq in sequences for start in range(0, seq.size - 1, ctx)]
    windows.sort(key=len)  # similar lengths together: less padding
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        width = max(w.size for w in group)
        rows = np.zeros((len(group), width), dtype=np.int64)
        targets = np.full((len(group), width - 1), -100, dtype=np.int64)  # -100: ignored
        for r, w in enumerate(group):
            rows[r, : w.size] = w
            targets[r, : w.size - 1] = w[1:]
        x = torch.from_numpy(rows[:, :-1]).to(device)
        y = torch.from_numpy(targets).to(device)
        with autocast(device):
            logits = model(x)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 ignore_index=-100, reduction="sum").item()
        count += int((y != -100).sum())
    return total / count if count else float("nan")


def bigram_sequences_loss(bigram: BigramModel, sequences: Sequence[np.ndarray]) -> float:
    parts = [bigram._token_nll(s[:-1], s[1:], None) for s in sequences if s.size > 1]
    return float(np.concatenate(parts).mean()) if parts else float("nan")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def sample_completions(model: GPT, tokenizer, problem: Problem, n: int, max_new_tokens: int,
                       temperature: float, generator: torch.Generator, device: torch.device) -> list[str]:
    prompt = encode_texts(tokenizer, [problem.prompt])[0]
    prompt = torch.from_numpy(prompt).to(device)[None].repeat(n, 1)  # generate() crops it to fit

    def all_stopped(new: torch.Tensor) -> bool:
        # Decoding is cheap next to a forward pass; check every 8 tokens.
        if new.shape[1] % 8:
            return False
        texts = tokenizer.decode_batch(new.tolist())
        return all(any(s in t for s in problem.stops) for t in texts)

    with autocast(device):
        new = model.generate(prompt, max_new_tokens, temperature=temperature, generator=generator,
                             stop=all_stopped)
    return [truncate_at_stop(t, problem.stops) for t in tokenizer.decode_batch(new.tolist())]


def evaluate_pass_at_k(model: GPT, tokenizer, problems: Sequence[Problem], samples: int,
                       max_new_tokens: int, temperature: float, timeout: float, seed: int,
                       device: torch.device, progress: bool = False, desc: str = "pass@k") -> dict:
    """{"pass@1", "pass@<samples>", "problems", "samples", "solved", "timeouts"}."""
    from tqdm import tqdm

    require_sandbox()
    generator = torch.Generator(device=device).manual_seed(seed)
    per_problem, timeouts = [], 0
    for problem in tqdm(problems, unit="problem", desc=desc, disable=not progress):
        completions = sample_completions(model, tokenizer, problem, samples, max_new_tokens,
                                         temperature, generator, device)
        correct = 0
        for completion in completions:
            program = problem.program(completion)
            try:
                compile(program, "<completion>", "exec")  # most tiny-model samples end here
            except (SyntaxError, ValueError):
                continue
            result = run_program(program, timeout=timeout)
            correct += result.passed
            timeouts += result.status == "timeout"
        per_problem.append(correct)
    c = np.asarray(per_problem)
    ks = sorted({1, samples})
    out = {f"pass@{k}": float(np.mean([pass_at_k(samples, int(x), k) for x in c])) if c.size else float("nan")
           for k in ks}
    out.update(problems=len(problems), samples=samples, solved=int((c > 0).sum()), timeouts=timeouts)
    return out
