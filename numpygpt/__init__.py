"""numpygpt: a GPT language model in pure NumPy, every backward pass derived and coded by hand."""

__version__ = "0.1.0"
