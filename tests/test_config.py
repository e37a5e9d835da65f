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


def test_resolution_must_be_a_supported_power_of_two(tmp_path):
    path = _write(tmp_path, lambda d: d["clean"].update(resolution=48, min_size=48))
    with pytest.raises(ConfigError, match=r"params\.yaml.*clean\.resolution 48 is not supported.*\[32, 64, 128\]"):
        load_params(path)


def test_patch_size_must_divide_the_resolution(tmp_path):
    def mutate(d):
        d["clean"].update(resolution=64, min_size=64)
        d["train_clip"].update(patch_size=12)

    with pytest.raises(
        ConfigError,
        match=r"params\.yaml: clean\.resolution 64 is not divisible by "
        r"train_clip\.patch_size 12",
    ):
        load_params(_write(tmp_path, mutate))


def test_min_size_below_resolution_is_refused(tmp_path):
    path = _write(tmp_path, lambda d: d["clean"].update(resolution=64))  # min_size stays 32
    with pytest.raises(ConfigError, match=r"clean\.min_size 32 is below clean\.resolution 64"):
        load_params(path)


def test_other_resolutions_load(tmp_path):
    for resolution in (64, 128):
        path = _write(tmp_path, lambda d: d["clean"].update(resolution=resolution, min_size=resolution))
        assert load_params(path).clean.resolution == resolution


def test_evaluator_seed_defaults_to_one_and_must_differ_from_seed(tmp_path):
    params = load_params()
    assert params.train_clip.evaluator_seed == 1 != params.train_clip.seed
    path = _write(tmp_path, lambda d: d["train_clip"].pop("evaluator_seed"))
    assert load_params(path).train_clip.evaluator_seed == 1
    path = _write(tmp_path, lambda d: d["train_clip"].update(evaluator_seed=0))
    with pytest.raises(ConfigError, match=r"train_clip\.evaluator_seed 0 equals train_clip\.seed"):
        load_params(path)
