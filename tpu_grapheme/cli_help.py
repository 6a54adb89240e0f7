"""`--help` that states each option's default once: appended unless the help text already says it."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default worth showing (not None, "", [], a
    switch's False) and its text does not speak of one already (e.g. "(default: all cores)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        unset = (
            d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, str | list | tuple) and not d)
        )
        if not unset and action.option_strings and action.nargs != 0 and "default" not in text:
            text += " (default: %(default)s)"
        return text
