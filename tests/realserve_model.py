"""A tiny causal language model for ``transformers serve``, built offline: ``python THIS OUT``.

Run by the server's own Python (``realserve.py``: torch and transformers are
not in mtrun's environment), never imported by the tests. Nothing comes from
the Hugging Face hub: the tokenizer is built here with ``tokenizers`` (a word
list ``w0`` ... ``w199`` plus the chat template's markers), the weights are
random (seeded), and both are written with ``save_pretrained``, so the server
loads them by the same code it loads a downloaded model with.

The model never stops by itself (no end-of-sequence token in its generation
config) and decodes greedily, so every answer is exactly ``max_tokens`` long
and the same prompt always gets the same answer: a test can ask the server
again and compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = [f"w{i}" for i in range(200)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose decoder puts the spaces back, with a chat template."""
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")
    core.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def model(vocab_size: int) -> LlamaForCausalLM:
    """Two Llama layers of width 32 with seeded random weights, greedy and endless."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    built = LlamaForCausalLM(config)
    built.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=None, pad_token_id=0, do_sample=False
    )
    return built


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    tok.save_pretrained(out)
    model(len(tok)).save_pretrained(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
