"""Files in and out: atomic writes, safe readers, and the formats models are saved in."""
