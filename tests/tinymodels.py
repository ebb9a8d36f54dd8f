"""Small real foreign models, built in the test (nothing from a hub): a random-weight BERT
sequence classifier with its own WordPiece vocabulary, and a fastText model trained on the fly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORDS = ("def return class import the a of to and is in for with this function value list data "
         "example explains how each step we use print self if else while loop python code test").split()


def build_bert(folder: Path, num_labels: int = 1, labels: list[str] | None = None, seed: int = 0,
               max_positions: int = 512) -> Path:
    """A 2-layer BERT (hidden 32) with random weights, saved with save_pretrained (safetensors)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
             *"abcdefghijklmnopqrstuvwxyz0123456789", *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"],
             *list("()[]{}:.,=+-*/\"'#_<>!?")]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    extra = {}
    if labels:
        extra = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                        num_labels=num_labels, initializer_range=0.3, **extra)  # wide init: outputs differ per text
    if num_labels == 1:
        config.problem_type = "regression"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # centred on the 0-5 scale, some outputs outside it (int_score clips)
        model.classifier.weight.normal_(0, 1.5)
        model.classifier.bias.fill_(2.5)
    model.save_pretrained(folder, safe_serialization=True)
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(folder)
    return folder


def bert_reference(folder: Path, texts: list[str], max_length: int = 512, label_index: int | None = None):
    """The model's own prediction, computed here with plain transformers (float32, CPU)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    out = []
    for t in texts:
        if not t or t.isspace():
            out.append(0.0)
            continue
        enc = tok([t], truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0].float()
        out.append(float(logits[0] if label_index is None else torch.softmax(logits, -1)[label_index]))
    return np.asarray(out)


_TRAIN = ("import json, sys, fasttext; a = json.loads(sys.argv[1]); "
          "fasttext.train_supervised(**a).save_model(sys.argv[2])")


def train_fasttext(path: Path, seed: int = 0) -> Path:
    """A fastText classifier (labels hq / cc) trained on generated lines, in a fresh process."""
    import random

    rng = random.Random(seed)
    good = "this example explains how each step of the function works and why we use a list".split()
    bad = "click here buy now free offer subscribe login cookie banner sale deal".split()
    lines = []
    for i in range(400):
        words, label = (good, "hq") if i % 2 else (bad, "cc")
        lines.append(f"__label__{label} " + " ".join(rng.choice(words) for _ in range(12)))
    train = path.with_suffix(".txt")
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = {"input": str(train), "epoch": 5, "lr": 0.5, "dim": 16, "wordNgrams": 2, "bucket": 20000,
            "minCount": 1, "thread": 1, "seed": seed, "verbose": 0}
    subprocess.run([sys.executable, "-c", _TRAIN, json.dumps(args), str(path)], check=True)
    return path


def fasttext_reference(path: Path, texts: list[str], label: str = "__label__hq"):
    """P(label) from fastText itself, for the text on one line with whitespace collapsed."""
    import fasttext
    import numpy as np

    model = fasttext.load_model(str(path))
    out = []
    for t in texts:
        if not t or t.isspace():
            out.append(0.0)
            continue
        labels, probs = model.predict(" ".join(t.split()), k=-1)
        out.append(min(1.0, float(dict(zip(labels, probs)).get(label, 0.0))))
    return np.asarray(out)
