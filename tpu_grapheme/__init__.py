"""tpu_grapheme: a custom-training-loop stack for Bengali grapheme classification on TPUs."""

from tpu_grapheme import quiet_tf

# TensorFlow's C++ info lines (oneDNN notes, CPU-instruction banner) would bury every CLI's own output.
quiet_tf.install()

__version__ = "0.1.0"
