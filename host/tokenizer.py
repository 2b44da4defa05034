"""Tokenizers: the GGUF file's own (through transformers), and a byte-level BPE trained on shipped text."""

import os
import warnings
from pathlib import Path

from .cache import cache_dir, file_hash

DATA = Path(__file__).parent / "data"


def _quiet_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers
    transformers.logging.set_verbosity_error()
    return transformers


def gguf_tokenizer(path):
    """The tokenizer and chat template stored in a GGUF file, cached after the first (slow) conversion."""
    transformers = _quiet_transformers()
    path = Path(path)
    cached = cache_dir("tokenizers", file_hash(path)[:16])
    if (cached / "tokenizer.json").exists():
        import json
        conf = cached / "tokenizer_config.json"
        cls = json.loads(conf.read_text()).get("tokenizer_class") if conf.exists() else None
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            # (the class AutoTokenizer would pick, without AutoTokenizer's imports: torch among them, 3 s)
            return transformers.PreTrainedTokenizerFast.from_pretrained(str(cached))
        return transformers.AutoTokenizer.from_pretrained(str(cached))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.save_pretrained(str(cached))
    return tok


def train_bpe(vocab_size, text_file=DATA / "corpus.txt"):
    """A byte-level BPE of the given size, trained deterministically on text the project ships."""
    transformers = _quiet_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(text_file)], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
