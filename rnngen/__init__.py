"""rnngen: train recurrent language models on your own text and write new text from a seed."""

__version__ = "0.1.0"
