"""HYPOTHESIS_PROFILE selects one of the registered profiles; ci is the default."""

from __future__ import annotations

import pytest

from rig.testing import profiles


def test_ci_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(profiles.ENV, raising=False)
    chosen = profiles.selected()
    assert (chosen.max_examples, chosen.stateful_step_count, chosen.deadline) == (50, 30, None)


@pytest.mark.parametrize(("name", "examples", "steps"), [("hil", 20, 100), ("debug", 10, 30)])
def test_the_environment_selects_a_profile(monkeypatch: pytest.MonkeyPatch, name: str,
                                           examples: int, steps: int) -> None:
    monkeypatch.setenv(profiles.ENV, name)
    chosen = profiles.selected()
    assert (chosen.max_examples, chosen.stateful_step_count) == (examples, steps)
    assert chosen.deadline is None


def test_an_unknown_profile_names_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(profiles.ENV, "nightly")
    with pytest.raises(ValueError, match=r"unknown profile 'nightly'.*ci, hil, debug"):
        profiles.selected()
