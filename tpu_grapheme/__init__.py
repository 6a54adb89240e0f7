"""tpu_grapheme: a custom-training-loop stack for Bengali grapheme classification on TPUs."""

__version__ = "0.1.0"
