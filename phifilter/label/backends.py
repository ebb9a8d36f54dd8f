"""Where the answers come from: an OpenAI-compatible HTTP endpoint or a local transformers model.

A backend turns a list of chat-message lists into a list of :class:`Reply`. It says how many
prompts it wants per call (``batch_size``) and how many calls may run at once
(``concurrency``); the annotator does the rest. Errors worth another try (rate limits, server
errors, timeouts, dropped connections, garbled replies) raise :class:`RetryableError`; errors
that another try cannot fix (a rejected key, a wrong URL or model name) raise
:class:`BackendError`, which stops the run.

The HTTP client is the standard library's ``http.client`` (one keep-alive connection per
thread), so no SDK is needed. The API key is held only in the request header: it is never
printed, logged or written, and it is removed from any server message before that message is
shown.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ModelError, OptionError, PhifilterError

MAX_ERROR_CHARS = 300


class BackendError(PhifilterError):
    """The endpoint or model cannot answer, and trying again will not help."""


class RetryableError(Exception):
    """A failure that may go away: worth another attempt after ``retry_after`` seconds or a backoff."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Reply:
    """One answer: the model's text and, when the backend reports them, the tokens it cost."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: str | None = None  # why there is no real answer (e.g. the prompt did not fit)
    cut_at: int | None = None  # characters of the document the model read, when it was cut to fit


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible chat completions


class OpenAIChatBackend:
    """POST ``{base_url}/chat/completions`` (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp, TGI).

    ``api_key`` None sends no Authorization header (local servers need none). A host ending in
    ``.openai.azure.com`` gets the key in Azure's ``api-key`` header instead. A query string in
    ``base_url`` (Azure's ``?api-version=...``) is kept on every request.
    """

    batch_size = 1

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 concurrency: int = 16, temperature: float | None = 0.0, max_tokens: int | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OptionError(f"--base-url {base_url!r}: expected http(s)://host[:port]/path, e.g. https://api.openai.com/v1")
        if not model:
            raise OptionError("--model is required (the model name the endpoint serves)")
        self.base_url = base_url
        self.model = model
        self.model_id = model
        self.timeout = timeout
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/chat/completions" + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "phifilter-label"}
        self._secret = api_key or None
        if api_key:
            if self._host.endswith(".openai.azure.com"):
                self._headers["api-key"] = api_key
            else:
                self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"OpenAIChatBackend(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def endpoint(self) -> str:
        return f"{self._scheme}://{self._host}{f':{self._port}' if self._port else ''}{self._path}"

    def complete(self, batch: list[list[dict]]) -> list[Reply]:
        return [self._complete_one(messages) for messages in batch]

    # -- one request

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _complete_one(self, messages: list[dict]) -> Reply:
        body = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        payload = json.dumps(body).encode("utf-8")
        for fresh_try in (False, True):
            reused = getattr(self._local, "conn", None) is not None
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=payload, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (socket.timeout, TimeoutError):
                self._drop_connection()
                raise RetryableError(f"no reply from {self.endpoint} within {self.timeout:g}s") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop_connection()
                # A kept-alive connection the server closed while idle: try a fresh one at once,
                # without spending a retry. A fresh connection failing this way is a real failure.
                if reused and not fresh_try:
                    continue
                raise RetryableError(f"cannot reach {self.endpoint} ({self._redact(_describe(e))})") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise RetryableError(f"cannot reach {self.endpoint} ({self._redact(_describe(e))})") from None
        if resp.status != 200:
            self._raise_for_status(resp.status, resp.getheader("Retry-After"), data)
        return self._parse(data)

    def _raise_for_status(self, status: int, retry_after: str | None, data: bytes) -> None:
        message = self._redact(_server_message(data))
        where = f"{self.endpoint} answered HTTP {status}"
        if status == 429 or status == 408 or status == 409 or status >= 500:
            raise RetryableError(f"{where}: {message}", parse_retry_after(retry_after))
        if status in (401, 403):
            raise BackendError(f"{where} (the API key was refused): {message}; check the key in the "
                               "environment variable named by --api-key-env (default OPENAI_API_KEY)")
        if status == 404:
            raise BackendError(f"{where} (not found): {message}; check --base-url (usually ending in /v1) "
                               f"and --model {self.model!r}")
        raise BackendError(f"{where}: {message}")

    def _parse(self, data: bytes) -> Reply:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RetryableError(f"{self.endpoint} sent a reply that is not JSON: {data[:80]!r}") from None
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RetryableError(f"{self.endpoint} sent a reply without choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise RetryableError(f"{self.endpoint} sent a choice without a message")
        text = message.get("content")
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        note = None
        if not isinstance(text, str) or not text.strip():
            # A real, paid answer that happens to be empty (refusal, token limit): kept as unparsed.
            text = ""
            note = f"empty reply (finish_reason={choices[0].get('finish_reason')})"
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        return Reply(text, _int_or_none(usage.get("prompt_tokens")), _int_or_none(usage.get("completion_tokens")), note)

    def _redact(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(data: bytes) -> str:
    try:
        doc = json.loads(data)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") if isinstance(err, dict) else err
        text = str(msg if msg is not None else doc)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = data.decode("utf-8", "replace")
    text = " ".join(text.split()) or "(no message)"
    return text[:MAX_ERROR_CHARS]


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _int_or_none(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ---------------------------------------------------------------------------------------------
# local transformers model


class TransformersBackend:
    """A local causal LM (a GGUF file, a folder holding one, or a transformers folder), batched.

    Nothing is downloaded (``local_files_only``); see :mod:`phifilter.label.local_model`. The
    model's own chat template renders the messages; a template that refuses a system message,
    or silently drops it, gets the system text at the top of the first user message instead.
    Without a template, system and user text are joined with blank lines.

    ``temperature`` 0 decodes greedily (deterministic); above 0 samples, seeded per batch from
    ``seed`` and the batch's prompts, so the same batch gives the same answers again.
    ``threads`` sets torch's CPU threads (on a CPU shared with other jobs, 1 thread can be
    many times faster than the default, whose threads wait on each other). ``context`` caps
    the model's context (default: the model's own); :meth:`fit` cuts a document to fit it.
    """

    concurrency = 1

    def __init__(self, model: str, device: str = "auto", batch_size: int = 8, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0, threads: int | None = None, context: int | None = None):
        import torch

        from ..devices import resolve_device
        from .local_model import load_local_model, resolve_local_model

        source = resolve_local_model(model)
        self.model_id = source.model_id
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.seed = int(seed)
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.tokenizer, self.model = load_local_model(source, self.device)
        tok = self.tokenizer
        tok.padding_side = "left"  # generation continues from the right end of every row
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ModelError(f"{model}: tokenizer has neither a pad nor an end-of-sequence token")
            tok.pad_token = tok.eos_token
        cfg = self.model.config
        own = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 1 << 30
        self.context = min(own, context) if context else own
        self.system_role = True  # until the chat template shows it has none

    def __repr__(self) -> str:
        return f"TransformersBackend({self.model_id!r}, device={self.device!r})"

    # -- prompts

    def render(self, messages: list[dict]) -> str:
        """The prompt text the model reads, by its own chat template."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        has_system = bool(messages) and messages[0]["role"] == "system"
        if has_system and self.system_role:
            from jinja2 import TemplateError

            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except TemplateError:  # e.g. "System role not supported" (Gemma, older Mistral)
                self.system_role = False
            else:
                if messages[0]["content"].strip() in text:
                    return text
                self.system_role = False  # the template dropped the rubric without a word
        if has_system:
            messages = merge_system_message(messages)
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    @property
    def prompt_limit(self) -> int:
        """The most prompt tokens that leave room for ``max_new_tokens`` in the context."""
        return self.context - self.max_new_tokens

    def fit(self, document: str, build) -> tuple[list[dict], int | None]:
        """(messages, characters kept): ``build(document)``, with the document cut to fit the context.

        ``build`` turns a document into chat messages. The characters kept are None when the
        whole document fits. The cut falls at the last line break (else space) before the
        token budget, as ``--max-chars`` cuts; a prompt that does not fit even with an empty
        document is returned whole, and :meth:`complete` records it as unanswerable.
        """
        messages = build(document)
        limit = self.prompt_limit
        total = self.count_tokens(messages)
        if total <= limit or not document:
            return messages, None
        overhead = self.count_tokens(build(""))
        if overhead >= limit:
            return messages, None
        from ..chunking import excerpt

        doc_tokens = max(1, total - overhead)
        # Characters per token of this document, then shrink until the prompt fits (the fence
        # and token merges at the cut make the first estimate slightly off).
        keep = int(len(document) * (limit - overhead) / doc_tokens)
        for _ in range(20):
            keep = max(0, min(keep, len(document) - 1))
            cut = excerpt(document, keep) if keep else ""
            messages = build(cut)
            if self.count_tokens(messages) <= limit:
                return messages, len(cut)
            keep = int(keep * 0.95)
        return build(""), 0

    # -- generation

    def complete(self, batch: list[list[dict]]) -> list[Reply]:
        import torch

        prompts = [self.render(m) for m in batch]
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        limit = self.prompt_limit
        replies: list[Reply | None] = [None] * len(batch)
        fits = []
        for i, n in enumerate(lengths):
            if n > limit:
                replies[i] = Reply("", n, 0, note=f"prompt of {n} tokens does not fit the model's context "
                                                  f"({self.context} tokens, {self.max_new_tokens} kept for the answer)")
            else:
                fits.append(i)
        if fits:
            chosen = [prompts[i] for i in fits]
            enc = self.tokenizer(chosen, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            gen = self._generation_config()
            if gen.do_sample:
                torch.manual_seed(batch_seed(self.seed, chosen))
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=gen)
            new = out[:, enc["input_ids"].shape[1]:]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            pad = self.tokenizer.pad_token_id
            for j, i in enumerate(fits):
                produced = int((new[j] != pad).sum()) if pad is not None else int(new.shape[1])
                replies[i] = Reply(texts[j], lengths[i], produced)
        return replies

    def _generation_config(self):
        import copy

        gen = copy.deepcopy(self.model.generation_config)
        gen.max_new_tokens = self.max_new_tokens
        gen.max_length = None
        gen.pad_token_id = self.tokenizer.pad_token_id
        if self.temperature > 0:
            gen.do_sample = True
            gen.temperature = self.temperature
        else:
            # Greedy: clear the sampling settings a model folder may ship (Qwen's top_k, top_p ...)
            # so transformers neither samples nor warns that they are ignored.
            gen.do_sample = False
            gen.temperature, gen.top_p, gen.top_k = None, None, None
        return gen


@dataclass
class BackendConfig:
    """Which model answers `phifilter label`, and how it is reached (:func:`backend_factory`)."""

    kind: str = "openai"  # openai (an OpenAI-compatible endpoint) or transformers (a local model)
    model: str = ""
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    concurrency: int = 16
    temperature: float = 0.0
    max_tokens: int | None = None
    device: str = "auto"
    batch_size: int = 8
    seed: int = 0
    threads: int | None = None
    max_context: int | None = None

    def factory(self, dry_run: bool = False):
        """(a zero-argument callable that builds the backend, the model's id in the cache)."""
        import dataclasses

        options = dataclasses.asdict(self)
        return backend_factory(options.pop("kind"), options.pop("model"), dry_run=dry_run, **options)


def backend_factory(kind: str, model: str, *, base_url: str = "https://api.openai.com/v1",
                    api_key_env: str = "OPENAI_API_KEY", dry_run: bool = False, timeout: float = 60.0,
                    concurrency: int = 16, temperature: float = 0.0, max_tokens: int | None = None,
                    device: str = "auto", batch_size: int = 8, seed: int = 0, threads: int | None = None,
                    max_context: int | None = None):
    """`phifilter label --backend KIND`: (a zero-argument callable that builds the backend, the
    model's id in the cache). Nothing is loaded or sent yet, so a dry run needs neither a key nor
    the weights; what fails now is a missing API key (unless a dry run, or a local endpoint under
    the default variable, which needs none) and a local model path that does not exist.
    """
    if kind == "openai":
        import os

        api_key = os.environ.get(api_key_env) or None
        if api_key is None and not dry_run:
            host = urlsplit(base_url).hostname or ""
            if api_key_env != "OPENAI_API_KEY" or host.endswith(("openai.com", "openai.azure.com")):
                raise BackendError(f"the environment variable {api_key_env} is not set; "
                                   f"export the API key as {api_key_env} (or name another with --api-key-env)")
        return (lambda: OpenAIChatBackend(base_url, model, api_key=api_key, timeout=timeout, concurrency=concurrency,
                                          temperature=temperature, max_tokens=max_tokens)), model
    if kind == "transformers":
        from .local_model import resolve_local_model

        model_id = resolve_local_model(model).model_id  # checks the path before anything is read or loaded
        return (lambda: TransformersBackend(model, device=device, batch_size=batch_size,
                                            max_new_tokens=max_tokens or 256, temperature=temperature, seed=seed,
                                            threads=threads, context=max_context)), model_id
    raise OptionError(f"{kind!r}: expected openai or transformers", option="--backend")


def prompt_style_for(kind: str, style: str = "auto") -> str:
    """``--prompt-style auto``: compact (document first, only the score line) for a local model,
    whose small models follow it better; standard for an endpoint. Other styles are kept."""
    if style != "auto":
        return style
    return "compact" if kind == "transformers" else "standard"


def merge_system_message(messages: list[dict]) -> list[dict]:
    """The system text at the top of the first user message, for templates without a system role."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}] + rest


def batch_seed(seed: int, prompts: list[str]) -> int:
    """A sampling seed from ``seed`` and the prompts: the same batch samples the same answers."""
    import hashlib

    h = hashlib.sha256(str(seed).encode())
    for p in prompts:
        h.update(b"\0")
        h.update(p.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest()[:8], "big") >> 1
