import json

import pytest

from geoae.config import Config, config_from_dict, load_config
from geoae.errors import ConfigError


def test_defaults_validate_and_round_trip():
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    again = config_from_dict(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"modle": {}}, "modle"),
        ({"model": {"hiden": [3]}}, "model.hiden"),
        ({"finetune": {"loss_weights": {"stat": 1}}}, "finetune.loss_weights.stat"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"model": {"hidden": "512"}}, "model.hidden"),
        ({"model": {"hidden": [512, "x", 3]}}, r"model.hidden\[1\]"),
        ({"pretrain": {"epochs": 2.5}}, "pretrain.epochs"),
        ({"features": {"sublinear_tf": "yes"}}, "features.sublinear_tf"),
        ({"finetune": {"lr": "fast"}}, "finetune.lr"),
    ],
)
def test_wrong_types_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"model": {"hidden": [], "noise": []}}, "model.hidden"),
        ({"model": {"noise": [{"kind": "masking", "level": -0.1}, {}, {}]}}, r"model.noise\[0\].level"),
        ({"model": {"noise": [{"kind": "blur", "level": 0.1}, {}, {}]}}, r"model.noise\[0\].kind"),
        ({"model": {"hidden": [8, 4], "noise": [{}]}}, "model.noise"),
        ({"pretrain": {"lr": 0}}, "pretrain.lr"),
        ({"finetune": {"batch_size": 0}}, "finetune.batch_size"),
        ({"finetune": {"epochs": 0}}, "finetune.epochs: must be >= 1"),
        ({"data": {"dev_fraction": 1.5}}, "data.dev_fraction"),
        ({"data": {"on_bad_record": "ignore"}}, "data.on_bad_record"),
        ({"finetune": {"loss_weights": {"state": 0, "coord": 0}}}, "finetune.loss_weights"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"finetune": {"geo_label_smoothing": 1.0}}, "finetune.geo_label_smoothing"),
        ({"finetune": {"geo_label_km": 0}}, "finetune.geo_label_km"),
        ({"data": {"columns": {"tweet": "body"}}}, "data.columns"),
        ({"data": {"columns": ["tweet", "text"]}}, "data.columns: expected a mapping"),
        ({"data": {"columns": {"tweet": 3}}}, "data.columns.tweet: expected a string"),
        ({"model": {"hidden": [10**15, 256, 128]}}, r"model.hidden\[0\]: a layer width must be in"),
        ({"train": {"seed": 2**64}}, r"train.seed: must be in \[0, 4294967295\]"),
        ({"data": {"seed": -1}}, r"data.seed: must be in"),
        ({"finetune": {"lr": 10**400}}, "finetune.lr: expected a finite number"),
        ({"data": {True: 1, "foo": 2}}, "unknown config key data.True"),
        # Carved users put in no split at all, a split named " ", or back into the split they came from.
        ({"data": {"dev_fraction": 0.9, "test_fraction": 0.2}}, r"must be < 1; got 0\.9 \+ 0\.2 = 1\.1"),
        ({"data": {"carve_label": ""}}, "data.carve_label: must be a split name"),
        ({"data": {"carve_label": " "}}, "data.carve_label: must be a split name"),
        ({"data": {"carve_label": "val "}}, "data.carve_label: must be a split name"),
        ({"data": {"split": "column", "dev_fraction": 0.2, "carve_label": "train"}},
         "data.carve_label: 'train' is in data.carve_from"),
    ],
)
def test_impossible_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(raw)


def test_load_config_file_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden: [16, 8, 4]\n")
    cfg = load_config(p, ["pretrain.epochs=3", "model.activation=relu"])
    assert cfg.model.hidden == [16, 8, 4] and cfg.pretrain.epochs == 3 and cfg.model.activation == "relu"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="pretrain.epoch"):
        load_config(p, ["pretrain.epoch=3"])


def test_shipped_configs_are_valid():
    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert {"default.yaml", "geotext.yaml"} <= {p.name for p in shipped}  # not a loop over nothing
    for p in shipped:
        load_config(p)


def test_cli_rejects_bad_config_before_work(tmp_path, capsys):
    from geoae.cli import main

    p = tmp_path / "c.yaml"
    p.write_text("model:\n  noise: [{kind: masking, level: -1}, {}, {}]\n")
    rc = main(["train", "--config", str(p), "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model.noise[0].level" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_numbers_yaml_reads_as_text_are_numbers_and_non_finite_ones_are_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("finetune:\n  lr: 1e-3\n")
    assert load_config(p).finetune.lr == 0.001
    for bad in ("finetune.lr=.nan", "finetune.lr=.inf", "finetune.weight_decay=-.inf"):
        with pytest.raises(ConfigError, match="finite"):
            load_config(None, [bad])
    b = tmp_path / "bin.yaml"
    b.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(b)


def test_packaged_default_config_is_configs_default_yaml():
    """``-c`` left out means geoae/default.yaml (shipped in the package); it must be configs/default.yaml."""
    from pathlib import Path

    from geoae.config import DEFAULT_CONFIG

    repo_copy = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert DEFAULT_CONFIG.parent.name == "geoae" and DEFAULT_CONFIG.is_file()
    assert DEFAULT_CONFIG.read_bytes() == repo_copy.read_bytes(), "copy configs/default.yaml to geoae/default.yaml"


def test_set_errors_name_the_override_not_the_file(tmp_path):
    from geoae.config import DEFAULT_CONFIG

    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT_CONFIG, ["train.seed=1", "model.hiden=[1]"])
    assert str(e.value).startswith("--set model.hiden=[1]: unknown config key model.hiden")
    assert "default.yaml" not in str(e.value)
    # A layer count the file's noise list does not match: blamed on --set, with the fix spelled out.
    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT_CONFIG, ["model.hidden=[512,256]"])
    msg = str(e.value)
    assert msg.startswith("--set model.hidden=[512,256]: model.noise") and "default.yaml" not in msg
    fix = msg.split("--set '", 1)[1].split("'", 1)[0]
    assert load_config(DEFAULT_CONFIG, ["model.hidden=[512,256]", fix]).model.hidden == [512, 256]
    # Indexed keys (as the validation messages spell them) are not settable: say so, with the fix.
    with pytest.raises(ConfigError, match=r"--set model\.noise\[0\]\.level: list items cannot be set one by one; "
                                          r"give the whole list, e\.g\. --set 'model\.noise=\[\.\.\.\]'"):
        load_config(DEFAULT_CONFIG, ["model.noise[0].level=0.5"])
    # A file that is invalid on its own is still blamed, even with overrides.
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: [4]\n")
    with pytest.raises(ConfigError, match=r"^.*bad\.yaml: unknown config key model\.hiden"):
        load_config(bad, ["train.seed=1"])


def test_readme_set_examples_are_valid():
    import re
    from pathlib import Path

    from geoae.config import DEFAULT_CONFIG

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"`([^`]*--set '[^`]*)`", readme.replace("\n", " "))
    assert examples
    for example in examples:
        load_config(DEFAULT_CONFIG, re.findall(r"--set '([^']*)'", example))


@pytest.mark.parametrize("raw", [["data"], "data", 3])
def test_a_config_that_is_not_a_mapping_is_a_config_error(raw):
    with pytest.raises(ConfigError, match="a config must be a mapping of sections"):
        config_from_dict(raw)


def test_a_directory_given_as_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; give the path of a YAML file"):
        load_config(tmp_path)


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: a second ``pretrain:`` section dropped
    every setting of the first (here epochs 3 trained as the default 10)."""
    p = tmp_path / "c.yaml"
    p.write_text("pretrain:\n  epochs: 3\nfinetune:\n  epochs: 5\npretrain:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML/JSON: .*duplicate key 'pretrain'"):
        load_config(p)
    p.write_text("finetune:\n  epochs: 5\n  epochs: 7\n")
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        load_config(p)
    j = tmp_path / "c.json"
    j.write_text('{"train": {"seed": 1, "seed": 2}}')
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        load_config(j)
    with pytest.raises(ConfigError, match=r"--set finetune\.loss_weights=.*duplicate key 'state'"):
        load_config(None, ["finetune.loss_weights={state: 1, state: 0}"])
    # YAML merge keys may still be overridden by the mapping's own keys.
    p.write_text("pretrain: &b {epochs: 3, lr: 0.01}\nfinetune:\n  <<: *b\n  epochs: 9\n")
    cfg = load_config(p)
    assert (cfg.pretrain.epochs, cfg.finetune.epochs, cfg.finetune.lr) == (3, 9, 0.01)


@pytest.mark.parametrize("key", ["transformer_max_length", "transformer_batch_size"])
def test_transformer_sizes_must_be_positive(key):
    """A zero or negative size validated and was clamped to 1 (batch) or failed in the tokenizer (length);
    one over 2**31 - 1 was an OverflowError traceback from the tokenizer."""
    for bad in (0, 2**31, 10**30):
        with pytest.raises(ConfigError, match=rf"features\.{key}: must be in \[1, 2147483647\]; got {bad}"):
            config_from_dict({"features": {key: bad}})
    assert getattr(config_from_dict({"features": {key: 2**31 - 1}}).features, key) == 2**31 - 1


def test_a_split_both_trained_and_early_stopped_on_is_refused_by_train_not_by_loading(tmp_path):
    """Early stopping on the training users themselves, and with finetune.refit each of them twice:
    refused before training; the config itself still validates, so a model stored with it loads."""
    from geoae.pipeline import train

    cfg = config_from_dict({"data": {"train_splits": ["train", "x"], "dev_splits": ["train"]}})
    with pytest.raises(ConfigError, match=r"data\.dev_splits: \['train'\] also in data\.train_splits"):
        train(cfg, tmp_path / "data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "cuda:-1", "cuda:0x"])
def test_a_cuda_device_needs_a_number(device):
    """Passed as cuda:N, then torch.device() raised a RuntimeError traceback on a machine with a GPU."""
    with pytest.raises(ConfigError, match="train.device: must be auto, cpu, cuda or cuda:N"):
        config_from_dict({"train": {"device": device}})
    config_from_dict({"train": {"device": "cuda:1"}})


def test_an_empty_section_takes_its_defaults_also_with_set(tmp_path):
    """``train:`` with every key under it commented out is null in YAML: refused as "expected a mapping
    for section TrainConfig, got NoneType", and with ``--set train.seed=1`` as "train is not a section"."""
    p = tmp_path / "c.yaml"
    p.write_text("train:\n#  seed: 3\nfinetune:\n  loss_weights:\n  epochs: 5\n")
    cfg = load_config(p)
    assert cfg.train.seed == 0 and cfg.finetune.epochs == 5 and cfg.finetune.loss_weights.recon == 0.1
    assert load_config(p, ["train.seed=1"]).train.seed == 1
    assert load_config(p, ["finetune.loss_weights.recon=0.5"]).finetune.loss_weights.recon == 0.5
    # a list item is no section: an empty one is still an error
    with pytest.raises(ConfigError, match=r"model\.noise\[0\]: expected a mapping"):
        config_from_dict({"model": {"noise": [None, {}, {}]}})


@pytest.mark.parametrize("override, match", [
    ("=3", r"--set '=3': expected section\.key=value"),
    (".hidden=3", r"--set '\.hidden=3': expected section\.key=value"),
    ("model.=3", r"--set 'model\.=3': expected section\.key=value"),
    # a list or mapping with a typo was read as a string: "expected a list, got str '[16,8'"
    ("model.hidden=[16,8", r"--set model\.hidden=\[16,8: the value is not valid YAML \(expected ',' or '\]'"),
    ("finetune.loss_weights={state: 1", r"--set finetune\.loss_weights=\{state: 1: the value is not valid YAML"),
])
def test_a_malformed_set_says_what_is_wrong(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "On", "NO", "TRUE"])
def test_a_key_yaml_reads_as_a_boolean_keeps_its_text(tmp_path, word):
    """PyYAML (YAML 1.1) reads a plain `on`, `off`, `yes`, `no` (lower, Title or UPPER case) as
    True/False: the unknown-key error named `True` instead of what was written. (It reads `y` and `n`
    as strings already.)"""
    p = tmp_path / "c.yaml"
    p.write_text(f"finetune:\n  {word}: 3\n")
    with pytest.raises(ConfigError, match=rf"unknown config key finetune\.{word};"):
        load_config(p)
    with pytest.raises(ConfigError, match=rf"unknown config key {word};"):  # also a section name
        load_config(None, [f"{word}.x=1"])


def test_keys_keep_their_text_but_values_still_read_yes_and_off_as_booleans(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("features:\n  binary: yes\n  sublinear_tf: Off\ndata:\n  columns: {on: text, n: lon, 2020: lat}\n")
    cfg = load_config(p, ["finetune.refit=on", "data.fix_swapped=YES"])
    assert cfg.features.binary is True and cfg.features.sublinear_tf is False
    assert cfg.finetune.refit is True and cfg.data.fix_swapped is True
    # column names (mapping keys) are the text written, never True / an integer
    assert cfg.data.columns == {"on": "text", "n": "lon", "2020": "lat"}
    assert load_config(None, ["data.columns={yes: user_id}"]).data.columns == {"yes": "user_id"}
    # `on` and `"on"` are now the same key, so giving both is the duplicate-key error
    p.write_text("train:\n  on: 1\n  'on': 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'on'"):
        load_config(p)
    # YAML's merge key still merges
    from geoae.config import _yaml_load

    assert _yaml_load("b: &b {epochs: 2, off: 1}\npretrain:\n  <<: *b\n  lr: 0.1\n")["pretrain"] == {
        "epochs": 2, "off": 1, "lr": 0.1}


@pytest.mark.parametrize("value, match", [
    ("2020-13-45", r"cannot read '2020-13-45' \(line 2\): ValueError: month must be in 1\.\.12"),
    ("!!int abc", r"cannot read 'abc' \(line 2\): ValueError"),
    ("!!bool maybe", r"cannot read 'maybe' \(line 2\): KeyError"),
    ("!!timestamp x", r"cannot read 'x' \(line 2\): AttributeError"),
    ("9" * 5000, r"cannot read '9{40}\.\.\.' \(line 2\): ValueError: Exceeds the limit \(4300 digits\)"),
    ("[" * 5000 + "]" * 5000, r"nested too deeply"),
])
def test_yaml_python_cannot_build_is_a_config_error_not_a_traceback(tmp_path, value, match):
    """PyYAML's constructors raise plain ValueError/KeyError/AttributeError (an impossible date, a bad
    explicit tag, an integer of more than 4300 digits) and its composer a RecursionError: each was a
    traceback from a config file or a --set value."""
    p = tmp_path / "c.yaml"
    p.write_text(f"pretrain:\n  epochs: {value}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML/JSON: " + match):
        load_config(p)
    with pytest.raises(ConfigError, match=r"^--set pretrain\.epochs="):
        load_config(None, [f"pretrain.epochs={value}"])
    # A plain word YAML would take for a date is the text written, as any value YAML cannot build.
    assert load_config(None, ["data.carve_label=2020-13-45"]).data.carve_label == "2020-13-45"
