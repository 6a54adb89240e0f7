"""`python -m tpu_grapheme.inference`: the ensemble inference CLI (`tpu_grapheme.inference.cli`)."""

import sys

from tpu_grapheme.inference.cli import main

sys.exit(main())
