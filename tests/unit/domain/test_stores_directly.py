"""The records built once per message (events, envelopes, commands, the proof of their publisher)
are built by an `__init__` storing their arguments straight into the instance (`events.stores_directly`):
the same parameters, defaults and default factories as the frozen dataclass's own, the same
instance, still frozen."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from commands import COMMAND_TYPES, Actor, Authority, CommandEnvelope, Unverified
from events import Envelope, Event, stores_directly

CLASSES = [Envelope, *typing.get_args(Event), CommandEnvelope, Actor, *COMMAND_TYPES.values(), Authority, Unverified]


def _values(cls) -> dict:
    """A distinct stand-in value for every field (the init stores what it is given, whatever its type)."""
    return {f.name: f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_init_stores_each_argument_under_its_field(cls):
    assert cls.__init__.__code__.co_filename == f"<{cls.__name__}.__init__>"  # the stored-directly one
    values = _values(cls)
    assert vars(cls(*values.values())) == values
    assert vars(cls(**values)) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls(**values).__setattr__(next(iter(values)), "changed")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_field_left_out_takes_its_default_or_a_new_value_of_its_factory(cls):
    fields = dataclasses.fields(cls)
    required = {f.name: f"{cls.__name__}.{f.name}" for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    first, second = cls(**required), cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(first, f.name) == f.default
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(first, f.name) == f.default_factory()
            if isinstance(getattr(first, f.name), (dict, list, set)):
                assert getattr(first, f.name) is not getattr(second, f.name)  # never shared
    assert first == second
    if required:
        with pytest.raises(TypeError):
            cls()
    with pytest.raises(TypeError):
        cls(**required, not_a_field=1)


def test_a_class_whose_init_takes_more_than_its_fields_keeps_its_own():
    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    own = Checked.__init__
    stores_directly(Checked)
    assert Checked.__init__ is own
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
