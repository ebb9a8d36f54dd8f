"""The transformers mean-pool embedder, on tiny randomly initialised BERT and GPT-2 models built here."""

import numpy as np
import pytest

from phifilter import EduClassifier
from phifilter.hf_embed import MeanPoolEmbedder, make_embedder

CORPUS = [
    "def add(a, b): return a + b",
    "the quick brown fox jumps over the lazy dog",
    "class Stack: def push(self, x): self.items.append(x)",
    "binary search halves the interval at every step",
    "import os import sys print hello world",
]


def build_tokenizer(folder, kind):
    """A word-level tokenizer trained on CORPUS with `tokenizers`, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if kind == "bert" else ["<|endoftext|>", "[UNK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS * 3, trainers.WordLevelTrainer(special_tokens=specials))
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return tok.get_vocab_size()


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def tiny_model(request, tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    vocab = build_tokenizer(folder, request.param)
    if request.param == "bert":
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64))
    else:
        model = GPT2Model(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    model.save_pretrained(folder)
    return folder


def test_mean_pool_embeddings(tiny_model):
    emb = make_embedder(f"mean-pool:{tiny_model}", device="cpu", max_length=32, batch_size=2)
    assert isinstance(emb, MeanPoolEmbedder) and emb.dim == 32
    texts = CORPUS + ["", "   "]
    X = emb.encode(texts)
    assert X.shape == (7, 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X[:5], axis=1), 1.0, rtol=1e-5)
    assert not X[5:].any()  # blank texts get zero vectors
    # padding is masked out: a text embedded alone equals the same text in a batch of longer ones
    np.testing.assert_allclose(emb.encode([CORPUS[1]])[0], X[1], atol=1e-5)
    # and the vector is the normalised mean of the last hidden layer
    import torch

    enc = emb._tokenizer([CORPUS[0]], return_tensors="pt")
    with torch.inference_mode():
        hidden = emb._model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[0]
    mean = hidden.mean(0).numpy()
    np.testing.assert_allclose(X[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert emb.count_tokens(["def add ( a , b )"]).tolist() == [len("def add ( a , b )".split())]
    assert set(emb.describe()["sha256"]) >= {"config.json", "model.safetensors"}


def test_classifier_with_the_mean_pool_embedder(tiny_model, tmp_path):
    texts = CORPUS * 4
    scores = [4, 1, 5, 3, 0] * 4
    clf = EduClassifier(embedder=f"mean-pool:{tiny_model}", n_estimators=10, device="cpu", max_length=16,
                        doc_mode="chunk-mean")
    clf.fit(texts, scores)
    clf.save(tmp_path / "m")
    loaded = EduClassifier.load(tmp_path / "m", device="cpu")
    assert loaded.embedder_info_["name"] == f"mean-pool:{tiny_model.name}"
    np.testing.assert_array_equal(loaded.edu_score(CORPUS), clf.edu_score(CORPUS))
    long_text = " ".join(CORPUS * 3)  # longer than 16 tokens: embedded in chunks
    E = loaded.embed_documents([long_text, CORPUS[0]])
    assert E.chunked == 1 and len(E.doc) > 2


def test_missing_folder_is_a_clear_error(tmp_path):
    from phifilter import ModelError

    with pytest.raises(ModelError, match="no such model folder"):
        MeanPoolEmbedder(tmp_path / "nowhere").encode(["x"])
