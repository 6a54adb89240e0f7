"""SIGTERM and Ctrl-C: raised as KeyboardInterrupt, held while a file is being written."""

from __future__ import annotations

import os
import signal

import pytest

from tpu_grapheme.interrupts import GracefulStop


def test_sigterm_raises_keyboard_interrupt():
    with GracefulStop(), pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)


def test_signal_inside_critical_waits_for_the_block():
    done = []
    with GracefulStop() as stop, pytest.raises(KeyboardInterrupt):
        with stop.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("write finished")  # still runs: the signal is held
        done.append("not reached")
    assert done == ["write finished"]


def test_handlers_restored_on_exit():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
