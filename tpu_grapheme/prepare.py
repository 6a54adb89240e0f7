"""`python -m tpu_grapheme.prepare`: the CLI of `tpu_grapheme.data.prepare`, kept at its documented name."""

from tpu_grapheme.data.prepare import main, prepare  # noqa: F401  (prepare: the import path benchmarks use)

if __name__ == "__main__":
    main()
