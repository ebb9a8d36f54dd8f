"""The training loop: AdamW, warmup + cosine, gradient accumulation, checkpoints that resume.

Batches are random windows of ``context + 1`` tokens from an arm's memmap (documents are
separated by end-of-text ids, so a window may span two documents, as in GPT-2). Windows come
from a numpy Generator seeded by the run's seed, and its state is checkpointed, so a resumed run
draws exactly the batches an uninterrupted one would have.

Checkpoints hold no pickle: weights and optimizer moments go to safetensors, everything else
(step, sampler state, loss curve, config) to JSON. A checkpoint folder is written under a
temporary name and swapped in whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, OutputError
from .config import GPTConfig, LoopConfig
from .model import GPT

CHECKPOINT = "checkpoint"


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fast, no loss scaling needed); plain fp32 elsewhere, because CPU
    bf16 matmuls are slow on most CPUs and the small models here gain nothing from them."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, total: int, loop: LoopConfig) -> float:
    """Linear warmup to lr, then cosine decay to lr * min_lr_ratio at the last step."""
    warmup = max(1, int(loop.warmup_fraction * total))
    if step < warmup:
        return loop.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    min_lr = loop.lr * loop.min_lr_ratio
    return min_lr + 0.5 * (loop.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_batch(tokens: np.ndarray, batch_size: int, context: int, rng: np.random.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    starts = rng.integers(0, tokens.size - context - 1, size=batch_size, endpoint=True)
    rows = np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64)
    xy = torch.from_numpy(rows).to(device, non_blocking=True)
    return xy[:, :-1], xy[:, 1:]


def window_starts(n_tokens: int, context: int, n_windows: int) -> np.ndarray:
    """Evenly spaced, non-overlapping where possible: the same windows for every model."""
    last = n_tokens - context - 1
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    n = max(1, min(n_windows, last // context + 1))
    return np.linspace(0, last, n).astype(np.int64)


@torch.no_grad()
def windows_loss(model: GPT, tokens: np.ndarray, starts: np.ndarray, device: torch.device,
                 batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per token) over the given windows."""
    if starts.size == 0:
        return float("nan")
    ctx = model.cfg.context
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, starts.size, batch_size):
        rows = np.stack([tokens[s : s + ctx + 1] for s in starts[i : i + batch_size]]).astype(np.int64)
        xy = torch.from_numpy(rows).to(device)
        with autocast(device):
            logits = model(xy[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), xy[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += xy[:, 1:].numel()
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from safetensors.torch import save_file, save_model

    from ..atomic import replace_folder

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding/head
        opt = optimizer.state_dict()
        tensors = {f"state.{pid}.{k}": v.detach().cpu().contiguous()
                   for pid, st in opt["state"].items() for k, v in st.items() if torch.is_tensor(v)}
        tensors["torch_rng"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = dict(state, param_groups=opt["param_groups"])
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))

    replace_folder(run_dir / CHECKPOINT, fill)


def load_checkpoint(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer | None) -> dict | None:
    """Restore weights (and optimizer, RNG) in place; returns the saved state or None."""
    from safetensors.torch import load_file, load_model

    folder = run_dir / CHECKPOINT
    if not (folder / "state.json").is_file():
        return None
    try:
        state = json.loads((folder / "state.json").read_text())
        load_model(model, str(folder / "model.safetensors"))
        if optimizer is not None:
            tensors = load_file(str(folder / "optimizer.safetensors"))
            torch.set_rng_state(tensors.pop("torch_rng"))
            per_param: dict[int, dict] = {}
            for key, value in tensors.items():
                _, pid, name = key.split(".", 2)
                per_param.setdefault(int(pid), {})[name] = value
            optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise OutputError(f"{folder}: unusable checkpoint ({e}); delete it to retrain this run") from None
    return state


# ---------------------------------------------------------------------------------------------
# the loop


def train_gpt(
    model_cfg: GPTConfig,
    loop: LoopConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    steps: int,
    seed: int,
    run_dir: Path,
    device: torch.device,
    compile: bool = True,
    progress: bool = False,
    desc: str = "training",
) -> tuple[GPT, dict]:
    """Train (or resume) one model; returns it and {curve, seconds, parameters, steps}."""
    from tqdm import tqdm

    ctx = model_cfg.context
    if train_tokens.size < ctx + 2:
        raise InputError(f"{desc}: only {train_tokens.size} training tokens; a run needs more than "
                         f"one context ({ctx + 1}); lower --threshold or use more data")
    torch.manual_seed(seed)  # the same initial weights for every arm with this seed
    model = GPT(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.optimizer_groups(loop.weight_decay), lr=loop.lr,
                                  betas=tuple(loop.betas))
    rng = np.random.default_rng(seed)
    state = load_checkpoint(run_dir, model, optimizer)
    if state is not None:
        if state.get("model") != asdict(model_cfg) or state.get("steps") != steps:
            raise OutputError(f"{run_dir / CHECKPOINT}: was made with another model or step count; "
                              "delete it or use another output folder")
        rng.bit_generator.state = state["sampler"]
        step, curve, seconds = state["step"], state["curve"], state["seconds"]
    else:
        step, curve, seconds = 0, [], 0.0
    run_model = model
    if compile and device.type == "cuda":
        run_model = torch.compile(model)  # worth its warm-up only on GPU-sized runs
    val_starts = window_starts(val_tokens.size, ctx, loop.eval_batches * loop.batch_size)
    tokens_per_step = loop.batch_size * loop.grad_accum * ctx
    model.train()
    step_at_start = step
    running, running_n = 0.0, 0
    t0 = time.time()
    with tqdm(total=steps, initial=step, unit="step", desc=desc, disable=not progress) as bar:
        while step < steps:
            lr = lr_at(step, steps, loop)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for _ in range(loop.grad_accum):
                x, y = sample_batch(train_tokens, loop.batch_size, ctx, rng, device)
                with autocast(device):
                    logits = run_model(x)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
                (loss / loop.grad_accum).backward()
                running += loss.item()
                running_n += 1
            if loop.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % loop.eval_every == 0 or step == steps:
                val = windows_loss(model, val_tokens, val_starts, device)
                curve.append({"step": step, "tokens": step * tokens_per_step,
                              "train_loss": running / max(1, running_n), "val_loss": val, "lr": lr})
                bar.set_postfix(train=f"{curve[-1]['train_loss']:.3f}", val=f"{val:.3f}")
                running, running_n = 0.0, 0
            if step % loop.checkpoint_every == 0 or step == steps:
                elapsed = seconds + time.time() - t0
                save_checkpoint(run_dir, model, optimizer, {
                    "step": step, "steps": steps, "seed": seed, "sampler": rng.bit_generator.state,
                    "curve": curve, "seconds": elapsed, "model": asdict(model_cfg), "loop": asdict(loop),
                })
    if step_at_start < steps:
        seconds += time.time() - t0  # training time summed over resumes
    model.eval()
    return model, {"curve": curve, "seconds": seconds, "parameters": model.num_parameters(),
                   "steps": steps, "tokens": steps * tokens_per_step}
