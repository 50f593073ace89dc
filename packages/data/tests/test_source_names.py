"""A source name is checked once, by the rule the packer needs (it names folders and packed
files), when the spec is converted: a bad name fails before any cleaning starts."""
import pytest
from fullchain.core.config import ConfigError, to_dataclass
from fullchain.data.config import SOURCE_NAME, DataConfig, SourceConfig


@pytest.mark.parametrize("name", ["wiki+en", "a b", "../x", "-dash", "", "c4$"])
def test_a_name_the_packer_would_refuse_fails_at_config_time(name):
    spec = {"sources": [{"name": name, "format": "stdlib"}]}
    with pytest.raises(ConfigError, match=r"^data\.sources\[0\]\.name: .* must match"):
        to_dataclass(DataConfig, spec, "data")


def test_config_and_packer_share_one_rule(tmp_path):
    from fullchain.data.pack import _check_sources

    file = tmp_path / "part.jsonl"
    file.write_text("{}\n")
    for name in ("stdlib", "zh_classics", "c4.en-2019", "Wiki_1"):
        SourceConfig(name=name, format="stdlib")
        assert _check_sources([(name, 1.0, [file])])[0][0] == name
    assert not SOURCE_NAME.match("wiki+en")
    with pytest.raises(ValueError, match=r"name 'wiki\+en' must match"):
        _check_sources([("wiki+en", 1.0, [file])])
