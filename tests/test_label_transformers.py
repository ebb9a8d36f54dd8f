"""The transformers backend, with a tiny randomly initialised GPT-2 and a tokenizer built here."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.label import LabelConfig, TransformersBackend, build_messages, label_file, load_rubric

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "Educational score: 0 1 2 3 4 5",
    "A fraction is a part of a whole. Chapter one explains fractions.",
    "You are a careful annotator who rates documents for educational value.",
]


def build_tiny_model(folder: Path, chat_template: str | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Trained on the prompt's own wording, so prompts take fewer tokens.
    words = CORPUS + [load_rubric("code").text, load_rubric("web").text, build_messages("x", load_rubric("code"))[1]["content"]]
    tok.train_from_iterator(words * 5, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=fast.vocab_size, n_positions=4096, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
                        pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def write_docs(path: Path, texts) -> Path:
    pq.write_table(pa.table({"text": texts, "domain": ["code"] * len(texts)}), path)
    return path


def test_labels_with_a_local_model_and_caches_answers(tmp_path, tiny_model):
    texts = ["def add(a, b):\n    return a + b\n", "def sub(a, b):\n    return a - b\n", "x = 1\n"]
    src, out = write_docs(tmp_path / "seed.parquet", texts), tmp_path / "labels.parquet"
    model = TransformersBackend(str(tiny_model), device="cpu", batch_size=2, max_new_tokens=12)
    summary = label_file(src, out, model, LabelConfig(), progress=False)
    rows = pq.read_table(out).to_pylist()
    assert summary.sent == 3 and summary.answered == 3
    assert summary.completion_tokens > 0 and summary.prompt_tokens > 100
    for r in rows:
        assert r["llm_model"] == f"transformers:{tiny_model.resolve()}"
        assert r["llm_score"] is None or 0 <= r["llm_score"] <= 5
        assert r["llm_reason"]  # the generated text (a random model's gibberish, kept as the reason)
        assert "careful annotator" not in r["llm_reason"]  # only new tokens are decoded, not the prompt
    # greedy decoding is deterministic: batched and unbatched runs give the same answers
    alone = TransformersBackend(str(tiny_model), device="cpu", batch_size=1, max_new_tokens=12)
    single = label_file(src, tmp_path / "again.parquet", alone, LabelConfig(cache=str(tmp_path / "other.sqlite")),
                        progress=False)
    assert single.sent == 3
    assert pq.read_table(tmp_path / "again.parquet").column("llm_reason").to_pylist() == [r["llm_reason"] for r in rows]
    # a rerun generates nothing
    assert label_file(src, out, model, LabelConfig(), progress=False).sent == 0


def test_prompt_too_long_for_the_model_is_recorded_not_fatal(tmp_path, tiny_model):
    model = TransformersBackend(str(tiny_model), device="cpu", max_new_tokens=8)
    model.context = 64  # pretend the model has a short context
    src, out = write_docs(tmp_path / "seed.parquet", ["def f():\n    pass\n"]), tmp_path / "labels.parquet"
    summary = label_file(src, out, model, LabelConfig(), progress=False)
    row = pq.read_table(out).to_pylist()[0]
    assert row["llm_score"] is None and "does not fit the model's context" in row["llm_reason"]
    assert summary.unparsed == 1


def test_chat_template_is_used_when_the_tokenizer_has_one(tmp_path):
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    folder = build_tiny_model(tmp_path / "chat", chat_template=template)
    model = TransformersBackend(str(folder), device="cpu", max_new_tokens=4)
    messages = build_messages("print(1)\n", load_rubric("code"))
    rendered = model.render(messages)
    assert rendered.startswith("<|system|>You are a careful annotator") and rendered.endswith("<|assistant|>")
    assert len(model.complete([messages])) == 1


def test_not_a_model_folder(tmp_path):
    from phifilter.errors import ModelError

    with pytest.raises(ModelError, match="no such file or folder"):
        TransformersBackend(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"not a model folder \(no config.json and no .gguf file\)"):
        TransformersBackend(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load model or tokenizer"):
        TransformersBackend(str(tmp_path / "broken"))
