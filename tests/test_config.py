from pathlib import Path

import pytest
import yaml

from atelier import paths
from atelier.config import ConfigError, load_params


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(paths.PARAMS.read_text())
    mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_params_are_valid():
    params = load_params()
    assert params.clean.resolution == 32
    assert params.license.policy.commercial is True


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, lambda d: d["clean"].update(resolutoin=64))
    with pytest.raises(ConfigError, match=r"params\.yaml.*unknown key 'clean\.resolutoin'"):
        load_params(path)


def test_wrong_type_names_key(tmp_path):
    path = _write(tmp_path, lambda d: d["clean"].update(resolution="big"))
    with pytest.raises(ConfigError, match=r"'clean\.resolution'.*'big'"):
        load_params(path)


def test_missing_value_names_key(tmp_path):
    path = _write(tmp_path, lambda d: d["license"]["policy"].pop("commercial"))
    with pytest.raises(ConfigError, match=r"missing value for 'license\.policy\.commercial'"):
        load_params(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("clean: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_cross_field_rule_names_the_section(tmp_path):
    path = _write(tmp_path, lambda d: d["evaluate"].update(headline_guidance=9.0))
    with pytest.raises(ConfigError, match=r"'evaluate'.*headline_guidance 9.0 must be one of guidance"):
        load_params(path)
