"""Text data, the first stage of the trip: a corpus (one long string) becomes token ids, the
ids are split into training and validation parts, and batches of windows are drawn from them.

    corpora.py         the built-in corpora (NumPy's docstrings, tiny shakespeare) and files
    tokenizer_base.py  what every tokenizer shares (JSON save/load, the checks before decoding)
    char.py            one token per character
    bpe.py             byte-level byte-pair encoding, GPT-2's tokenizer
    tokenizers.py      a tokenizer from a run's description, or from a GPT-2 folder
    batches.py         the train/validation split and the batches of windows

The names most used are importable from here: `from numpygpt.data import load_corpus, ...`.
"""

from .batches import get_batch, prepare_corpus, prepare_data, split_ids
from .bpe import BPETokenizer
from .char import CharTokenizer
from .corpora import DataError, load_corpus, numpy_docs_text
from .tokenizer_base import Tokenizer, TokenizerError
from .tokenizers import load_gpt2_tokenizer, tokenizer_for_model, tokenizer_from_dict

__all__ = ["BPETokenizer", "CharTokenizer", "DataError", "Tokenizer", "TokenizerError",
           "get_batch", "load_corpus", "load_gpt2_tokenizer", "numpy_docs_text",
           "prepare_corpus", "prepare_data", "split_ids", "tokenizer_for_model",
           "tokenizer_from_dict"]
