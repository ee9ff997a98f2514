"""Text data: the corpora, the tokenizers (characters, byte-level BPE), splits and batches."""
