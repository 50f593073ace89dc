from dataclasses import dataclass, field
from typing import Literal

import pytest
from fullchain.core.config import ConfigError, to_dataclass, to_plain


@dataclass
class Inner:
    size: int
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    inner: Inner
    names: list[str] = field(default_factory=list)
    rate: float = 0.1
    maybe: int | None = None

    def __post_init__(self):
        if self.rate > 1:
            raise ValueError(f"rate: must be <= 1, got {self.rate}")


def test_converts_nested_and_coerces_int_to_float():
    cfg = to_dataclass(Outer, {"inner": {"size": 3, "kind": "b"}, "rate": 1, "names": ["x"]}, "s")
    assert cfg.inner == Inner(3, "b") and cfg.rate == 1.0 and isinstance(cfg.rate, float)
    assert to_plain(cfg) == {"inner": {"size": 3, "kind": "b"}, "names": ["x"], "rate": 1.0,
                             "maybe": None}


@pytest.mark.parametrize("data, message", [
    ({"inner": {"size": 3}, "rat": 0.5},
     "s.rat: unknown key for Outer. Did you mean 'rate'? Allowed keys: ['inner', 'maybe', 'names', 'rate']"),
    ({"inner": {"size": "big"}}, "s.inner.size: expected an integer, got 'big'"),
    ({"inner": {"size": 1, "kind": "c"}}, "s.inner.kind: 'c' is not one of the allowed values ['a', 'b']"),
    ({}, "s.inner: required key is missing"),
    ({"inner": {"size": 1}, "names": "x"}, "s.names: expected a list"),
    ({"inner": {"size": 1}, "names": [1]}, "s.names[0]: expected a string"),
    ({"inner": {"size": 1}, "rate": 2}, "s.rate: must be <= 1, got 2.0"),
    ({"inner": {"size": True}}, "s.inner.size: expected an integer, got True"),
])
def test_errors_name_the_full_key(data, message):
    with pytest.raises(ConfigError) as err:
        to_dataclass(Outer, data, "s")
    assert message in str(err.value)


def test_optional_accepts_null_and_value():
    assert to_dataclass(Outer, {"inner": {"size": 1}, "maybe": None}, "s").maybe is None
    assert to_dataclass(Outer, {"inner": {"size": 1}, "maybe": 4}, "s").maybe == 4
