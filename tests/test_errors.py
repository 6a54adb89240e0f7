"""The did-you-mean hint every unknown-name error shares."""

from __future__ import annotations

from tpu_grapheme.errors import did_you_mean


def test_did_you_mean_suggests_the_closest_name_or_lists_short_choices():
    assert did_you_mean("max_lrr", ["max_lr", "steps"]) == " (did you mean 'max_lr'?)"
    assert did_you_mean("zzz", ["max_lr", "steps"]) == ""
    assert did_you_mean("zzz", ("asha", "fifo"), list_choices=True) == "; one of asha, fifo"
