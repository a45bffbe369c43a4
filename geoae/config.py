"""Run configuration: YAML/JSON files validated into frozen-shape dataclasses.

Validation happens before any work starts: unknown keys, wrong types and
impossible values raise ``ConfigError`` naming the dotted key
(``model.noise[1].level``). The resolved config (defaults filled in) is written
beside every output and stored inside every model artifact, so a run can always
be reproduced from what it left behind.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoae.errors import POLICIES, ConfigError

# The config the command line uses when no -c/--config is given. It ships inside the package (so
# it is found from any working directory and in a pip-installed copy) and is byte-identical to
# configs/default.yaml (tests/test_config.py checks). ``load_config(None)`` from Python means the
# dataclass defaults below, which are not the same settings.
DEFAULT_CONFIG = Path(__file__).resolve().with_name("default.yaml")

NOISE_KINDS = ("masking", "gaussian", "salt_pepper", "dropout", "none")
ACTIVATIONS = ("sigmoid", "relu", "tanh", "gelu")
FEATURE_KINDS = ("tfidf", "transformer")
SELECT_RULES = ("frequency", "igr")  # how the tf-idf featurizer picks its max_features terms
OUTSIDE_US_POLICIES = ("drop", "keep", "fail")
SPLIT_RULES = ("column", "geotext_folds", "random")
COORD_LOSSES = ("haversine", "mse")


@dataclass
class DataConfig:
    """Where the tweets come from and how users are split.

    ``split`` decides the train/dev/test assignment: ``column`` keeps the split
    the reader assigned (Rahimi's per-split files, a ``split`` column),
    ``geotext_folds`` applies the official GeoText fold rule, ``random`` draws
    one with ``seed``. ``dev_fraction`` carves a validation set labelled
    ``carve_label`` out of the users whose split is in ``carve_from`` (the
    in-house GeoText protocol trains on the official dev users, so it carves
    ``val`` from ``dev`` and trains on the rest of ``dev``).

    ``unlabelled_splits`` names users whose *text only* (never their state or
    coordinates) joins the unsupervised steps: the TF-IDF vocabulary and idf,
    and greedy SDAE pretraining. This is the semi-supervised use an SDAE is
    built for (pretrain on the users you are about to label); naming a split
    that is later evaluated makes the run transductive, which the artifact
    records and reports state.

    ``columns`` maps a table's own column names to geoae's (CSV, TSV, Parquet:
    ``{author_id: user_id, tweet: text}``), as ``--columns`` does on the command line.
    """

    inputs: list[str] = field(default_factory=list)
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    split: str = "column"
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    dev_splits: list[str] = field(default_factory=lambda: ["dev"])
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    unlabelled_splits: list[str] = field(default_factory=list)
    dev_fraction: float = 0.0
    test_fraction: float = 0.0
    carve_from: list[str] = field(default_factory=lambda: ["train"])
    carve_label: str = "dev"
    on_bad_record: str = "skip"
    fix_swapped: bool = False
    outside_us: str = "drop"
    min_tweets: int = 1
    seed: int = 0


@dataclass
class FeatureConfig:
    """How a user document becomes a vector (fitted on train users only)."""

    kind: str = "tfidf"
    max_features: int = 10000
    min_df: int = 2
    max_df: float = 1.0
    sublinear_tf: bool = True
    binary: bool = False
    ngram_max: int = 1
    mentions: str = "mask"   # mask: @anyone -> <user>; keep: also the account itself (@user_1a2b)
    select: str = "frequency"  # which max_features terms: frequency (most frequent) or igr (information gain ratio for the state)
    transformer_model: str = ""
    transformer_max_length: int = 128
    transformer_batch_size: int = 32


@dataclass
class NoiseConfig:
    kind: str = "masking"
    level: float = 0.3


@dataclass
class ModelConfig:
    """The SDAE: ``hidden`` lists the encoder widths; the last one is ``H3``."""

    hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    activation: str = "relu"
    noise: list[NoiseConfig] = field(
        default_factory=lambda: [NoiseConfig("masking", 0.3), NoiseConfig("gaussian", 0.1), NoiseConfig("gaussian", 0.1)]
    )
    tied_weights: bool = True
    sparsity_l1: float = 0.0
    head_dropout: float = 0.2
    hidden_dropout: float = 0.0   # dropout on the codes between encoder layers while fine-tuning (0: none)


@dataclass
class PretrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class LossWeights:
    state: float = 1.0
    coord: float = 1.0
    recon: float = 0.1


@dataclass
class FinetuneConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    coord_loss: str = "haversine"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    select_metric: str = "dev_loss"
    # auto: the point kind with the lowest median error on the validation users (the state-median
    # point when there are none with coordinates); or regression, state_median, bayes, location.
    point: str = "auto"
    bayes_cap_km: float = 500.0
    # The location point (geo.LocationRisk): users whose top state has probability >= gate keep
    # that state's point; the others get the least-risk training-location cell, with the
    # regression head's estimate as a kernel of this width (km). Chosen by 5-fold CV over the
    # official GeoText dev users (scripts/crossval_geotext.py), never on test.
    location_gate: float = 0.15
    location_tau_km: float = 500.0
    ensemble: int = 1
    # After early stopping on the dev users, fine-tune each member again from the same
    # starting weights on train + dev for the epoch count it was stopped at (dev metrics
    # reported are those measured before the refit, the only honest ones).
    refit: bool = False
    # Keep the pretrained first encoder weight fixed while fine-tuning (its bias still learns).
    # All ensemble members then share one first weight (10k words x 512: ~95 % of the
    # parameters), so prediction computes that product once instead of once per member and
    # fine-tuning skips its gradient: a speed option. Cross-validation over the GeoText dev
    # users found it less accurate (benchmarks/crossval.md), so it is off by default.
    freeze_first_layer: bool = False
    # Geographic label smoothing: this share of each training user's state target is spread
    # over the states by how close their points (training medians) lie to the user's own
    # coordinates, weight exp(-distance / geo_label_km). A wrong state whose point is near the
    # user then costs less than a far one, which is what Acc@161 and the distance metrics
    # reward. 0 = plain one-hot cross-entropy (the shipped setting; see benchmarks/crossval.md).
    geo_label_smoothing: float = 0.0
    geo_label_km: float = 300.0
    # Corrupt the input with model.noise[0] while fine-tuning too (the denoising objective keeps
    # running). false: the encoder sees clean inputs while fine-tuning (pretraining still denoises).
    input_noise: bool = True


@dataclass
class TrainConfig:
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 1


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {_type_name(tp)}, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (list, typing.List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return {_coerce(k, key_tp, f"{key} (a key)"): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError(errs[0] if errs else f"{key}: bad value {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads 1e-3 as a string (it wants 1.0e-3); take what Python reads as a number.
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:  # .nan / .inf would train a NaN model without a word
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names, key=str)  # key=str: a dict built in Python may have True as a key
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if value is None and dataclasses.is_dataclass(hints[name]):
            # A section left empty (``train:`` with every key under it commented out) reads as null in
            # YAML: no keys given, so all take their defaults, as for a section left out.
            value = {}
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _check_choice(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")


MAX_WIDTH = 1 << 20
"""Largest layer width accepted (a million units on a 10k-word input is already 40 GB of float32):
anything wider is a typo, refused before torch tries to lay it out."""
MAX_SEED = 2**32 - 1
MAX_TRANSFORMER_SIZE = 2**31 - 1
"""Largest features.transformer_max_length / transformer_batch_size (the tokenizer takes an unsigned int)."""


def validate(cfg: Config) -> Config:
    """Reject impossible values, naming the key. Returns ``cfg`` for chaining."""
    d, f, m, p, ft, t = cfg.data, cfg.features, cfg.model, cfg.pretrain, cfg.finetune, cfg.train
    _check_choice("data.split", d.split, SPLIT_RULES)
    _check_choice("data.on_bad_record", d.on_bad_record, POLICIES)
    _check_choice("data.outside_us", d.outside_us, OUTSIDE_US_POLICIES)
    for key, frac in (("data.dev_fraction", d.dev_fraction), ("data.test_fraction", d.test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"{key}: must be in [0, 1); got {frac}")
    if d.dev_fraction + d.test_fraction >= 1.0:
        raise ConfigError(f"data.dev_fraction + data.test_fraction must be < 1; got {d.dev_fraction} + {d.test_fraction} "
                          f"= {d.dev_fraction + d.test_fraction:g}")
    if d.min_tweets < 1:
        raise ConfigError(f"data.min_tweets: must be >= 1; got {d.min_tweets}")
    # The carved users take this split: a blank or padded one is a split no *_splits list names (the
    # users would silently leave training), one of carve_from a no-op (no validation users carved).
    if not d.carve_label.strip() or d.carve_label != d.carve_label.strip():
        raise ConfigError(f"data.carve_label: must be a split name without surrounding spaces; got {d.carve_label!r}")
    if d.split != "random" and d.dev_fraction > 0 and d.carve_label in d.carve_from:  # random ignores both
        raise ConfigError(f"data.carve_label: {d.carve_label!r} is in data.carve_from {d.carve_from}: the carved users "
                          "would stay in their split; name a split of their own (e.g. dev or val)")
    from geoae.tweets import TABLE_COLUMNS  # here, not at the top: reading configs needs no pandas

    for name, target in d.columns.items():
        if not name or target not in TABLE_COLUMNS:
            raise ConfigError(f"data.columns: each entry is FILE_COLUMN: TARGET with TARGET one of "
                              f"{', '.join(TABLE_COLUMNS)}; got {name!r}: {target!r}")
    _check_choice("features.kind", f.kind, FEATURE_KINDS)
    if f.max_features < 1:
        raise ConfigError(f"features.max_features: must be >= 1; got {f.max_features}")
    if f.min_df < 1:
        raise ConfigError(f"features.min_df: must be >= 1; got {f.min_df}")
    if not 0.0 < f.max_df <= 1.0:
        raise ConfigError(f"features.max_df: must be in (0, 1]; got {f.max_df}")
    _check_choice("features.mentions", f.mentions, ("mask", "keep"))
    _check_choice("features.select", f.select, SELECT_RULES)
    if f.ngram_max < 1:
        raise ConfigError(f"features.ngram_max: must be >= 1; got {f.ngram_max}")
    for key in ("transformer_max_length", "transformer_batch_size"):  # else clamped to 1, or a tokenizer error
        if not 1 <= getattr(f, key) <= MAX_TRANSFORMER_SIZE:  # above, the tokenizer's OverflowError
            raise ConfigError(f"features.{key}: must be in [1, {MAX_TRANSFORMER_SIZE}]; got {getattr(f, key)}")
    if f.kind == "transformer" and not f.transformer_model:
        raise ConfigError("features.transformer_model: a local model directory is required when features.kind is transformer")
    if not m.hidden:
        raise ConfigError("model.hidden: the layer list is empty; give at least one width, e.g. [1024, 512, 256]")
    for i, h in enumerate(m.hidden):
        if not 1 <= h <= MAX_WIDTH:
            raise ConfigError(f"model.hidden[{i}]: a layer width must be in [1, {MAX_WIDTH}]; got {h}")
    if len(m.noise) != len(m.hidden):
        example = ", ".join(["{kind: masking, level: 0.3}"] + ["{kind: gaussian, level: 0.1}"] * (len(m.hidden) - 1))
        raise ConfigError(
            f"model.noise: needs one entry per hidden layer ({len(m.hidden)}), got {len(m.noise)}; when changing "
            f"model.hidden, give model.noise one entry per layer too, e.g. --set 'model.noise=[{example}]' "
            "(or the same list under model: noise: in the config file)"
        )
    for i, n in enumerate(m.noise):
        _check_choice(f"model.noise[{i}].kind", n.kind, NOISE_KINDS)
        if n.level < 0:
            raise ConfigError(f"model.noise[{i}].level: must be >= 0; got {n.level}")
        if n.kind in ("masking", "salt_pepper", "dropout") and n.level >= 1:
            raise ConfigError(f"model.noise[{i}].level: a {n.kind} rate must be < 1; got {n.level}")
    _check_choice("model.activation", m.activation, ACTIVATIONS)
    if m.sparsity_l1 < 0:
        raise ConfigError(f"model.sparsity_l1: must be >= 0; got {m.sparsity_l1}")
    for key in ("head_dropout", "hidden_dropout"):
        if not 0 <= getattr(m, key) < 1:
            raise ConfigError(f"model.{key}: must be in [0, 1); got {getattr(m, key)}")
    for sect, c in (("pretrain", p), ("finetune", ft)):
        if c.epochs < 0:
            raise ConfigError(f"{sect}.epochs: must be >= 0; got {c.epochs}")
        if c.batch_size < 1:
            raise ConfigError(f"{sect}.batch_size: must be >= 1; got {c.batch_size}")
        if c.lr <= 0:
            raise ConfigError(f"{sect}.lr: must be > 0; got {c.lr}")
        if c.weight_decay < 0:
            raise ConfigError(f"{sect}.weight_decay: must be >= 0; got {c.weight_decay}")
    if ft.epochs < 1:  # pretrain.epochs=0 means no pretraining; 0 here would ship untrained heads
        raise ConfigError(f"finetune.epochs: must be >= 1 (0 would ship the heads untrained); got {ft.epochs}")
    if ft.patience < 1:
        raise ConfigError(f"finetune.patience: must be >= 1; got {ft.patience}")
    _check_choice("finetune.coord_loss", ft.coord_loss, COORD_LOSSES)
    _check_choice("finetune.select_metric", ft.select_metric, ("combined", "dev_loss", "state_acc", "state_nll", "median_km", "mean_km", "loss"))
    if ft.bayes_cap_km <= 0:
        raise ConfigError(f"finetune.bayes_cap_km: must be > 0; got {ft.bayes_cap_km}")
    if ft.ensemble < 1:
        raise ConfigError(f"finetune.ensemble: must be >= 1; got {ft.ensemble}")
    _check_choice("finetune.point", ft.point, ("auto", "regression", "state_median", "bayes", "location"))
    if not 0.0 <= ft.location_gate <= 1.0:
        raise ConfigError(f"finetune.location_gate: must be in [0, 1]; got {ft.location_gate}")
    if ft.location_tau_km <= 0:
        raise ConfigError(f"finetune.location_tau_km: must be > 0; got {ft.location_tau_km}")
    if not 0.0 <= ft.geo_label_smoothing < 1.0:
        raise ConfigError(f"finetune.geo_label_smoothing: must be in [0, 1); got {ft.geo_label_smoothing}")
    if ft.geo_label_km <= 0:
        raise ConfigError(f"finetune.geo_label_km: must be > 0; got {ft.geo_label_km}")
    w = ft.loss_weights
    for name in ("state", "coord", "recon"):
        if getattr(w, name) < 0:
            raise ConfigError(f"finetune.loss_weights.{name}: must be >= 0; got {getattr(w, name)}")
    if w.state == 0 and w.coord == 0:
        raise ConfigError("finetune.loss_weights: state and coord cannot both be 0 (nothing to predict)")
    # cuda:N with N a number: anything else after "cuda:" is a RuntimeError in torch.device()
    if t.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:[0-9]+", t.device):
        raise ConfigError(f"train.device: must be auto, cpu, cuda or cuda:N; got {t.device!r}")
    for key, seed in (("data.seed", d.seed), ("train.seed", t.seed)):
        if not 0 <= seed <= MAX_SEED:  # numpy refuses negative seeds; members use seed + offsets
            raise ConfigError(f"{key}: must be in [0, {MAX_SEED}]; got {seed}")
    if t.threads < 0:
        raise ConfigError(f"train.threads: must be >= 0; got {t.threads}")
    if t.checkpoint_every < 1:
        raise ConfigError(f"train.checkpoint_every: must be >= 1; got {t.checkpoint_every}")
    return cfg


def config_from_dict(raw: dict | None) -> Config:
    """Build and validate a ``Config`` from a plain mapping (missing keys take defaults)."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    return validate(_build(Config, raw or {}))


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Apply a ``section.key=value`` override (value parsed as YAML) to a raw mapping."""
    if "[" in dotted:  # the validation messages say model.noise[0].level, which reads like a settable path
        section = dotted.split("[", 1)[0]
        raise ConfigError(f"--set {dotted}: list items cannot be set one by one; give the whole list, e.g. "
                          f"--set '{section}=[...]' (YAML, as in the config file)")
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        if node.get(p) is None:  # absent, or a section left empty in the file (null: its defaults)
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
    node[parts[-1]] = value


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives one key twice."""

    def __str__(self) -> str:  # the key and its line: YAML's own form quotes the text twice over
        return f"{self.problem} (line {self.problem_mark.line + 1})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping and reads every plain key as
    the text written. PyYAML keeps the last of two equal keys without a word, so a second
    ``pretrain:`` section silently dropped every setting of the first."""

    # PyYAML (YAML 1.1) reads a plain `on`, `off`, `yes`, `no` (lower, Title or UPPER case) as a
    # boolean, `2020` as an integer, `~` as null. Wanted for a value (`binary: yes` is true), not for a
    # key: `on: x` was refused as "unknown config key True", and a data.columns entry `on: text` or
    # `2020: lat` as "expected a string". So a plain key keeps its text: the resolver types it as a
    # string before anything is built. Values resolve as before; explicit tags (`!!int 1: x`, never
    # sent to the resolver) and the merge key `<<` are left alone.
    _composing_key = False

    def compose_node(self, parent, index):
        # The composer asks for a mapping's key with index None (a value's index is its key node);
        # a nested node resets the flag before it asks the resolver anything.
        self._composing_key = isinstance(parent, yaml.MappingNode) and index is None
        return super().compose_node(parent, index)

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if self._composing_key and kind is yaml.ScalarNode and tag != "tag:yaml.org,2002:merge":
            return "tag:yaml.org,2002:str"
        return tag

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` may be overridden: YAML's rule
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if dup:
                    raise DuplicateKeyError("while constructing a mapping", node.start_mark,
                                            f"found duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        self._last_node = node  # the innermost node being built when a constructor fails (see _yaml_load)
        return super().construct_object(node, deep=deep)


class UnreadableValueError(yaml.YAMLError):
    """YAML that parses but that PyYAML cannot build: a value its constructors refuse with a plain Python
    error (an impossible date such as 2020-13-45, ``!!int abc``, an integer of more than 4300 digits)
    or nesting deeper than Python's recursion limit."""


def _yaml_load(text: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise UnreadableValueError(f"nested too deeply (line {loader.get_mark().line + 1})") from None
    # PyYAML's constructors let these through: int() and datetime() errors, a KeyError for `!!bool maybe`,
    # an AttributeError for `!!timestamp x`.
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        node = getattr(loader, "_last_node", None)
        text = node.value if node is not None and isinstance(node.value, str) else None
        what = "a value" if text is None else repr(text if len(text) <= 40 else text[:40] + "...")
        where = f" (line {node.start_mark.line + 1})" if node is not None else ""
        raise UnreadableValueError(f"cannot read {what}{where}: {type(e).__name__}: {str(e)[:120]}") from None
    finally:
        loader.dispose()


def _read_config_file(p: Path) -> dict:
    if p.is_dir():
        raise ConfigError(f"config {p} is a directory; give the path of a YAML file, e.g. configs/default.yaml")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = _yaml_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML/JSON: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (not UTF-8); give a YAML or JSON config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _blame_overrides(message: str, overrides: list[str]) -> str:
    """Prefix ``message`` with the ``--set`` override(s) it comes from: the ones whose key the
    message names, else all of them (e.g. a ``model.hidden`` override that no longer matches
    ``model.noise``)."""
    keys = [ov.split("=", 1)[0].strip() for ov in overrides]
    named = [ov for ov, k in zip(overrides, keys) if k and re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", message)]
    return " ".join(f"--set {ov}" for ov in (named or overrides)) + f": {message}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML/JSON config, apply ``key=value`` overrides, validate.

    ``path=None`` starts from the dataclass defaults (the CLI passes ``DEFAULT_CONFIG`` instead).
    Raises ``ConfigError`` for an unreadable file, a syntax error, an unknown key, a wrong type or
    an impossible value; the message blames the file when the file alone is invalid, otherwise
    the ``--set`` override(s).
    """
    raw: dict = _read_config_file(Path(path)) if path is not None else {}
    overrides = list(overrides or [])
    file_raw = copy.deepcopy(raw)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"--set {ov!r}: expected section.key=value")
        k, v = ov.split("=", 1)
        if not all(part.strip() for part in k.split(".")):  # `=3`, `.hidden=3`: was "unknown config key ;"
            raise ConfigError(f"--set {ov!r}: expected section.key=value, a name on each side of every dot, "
                              "e.g. --set finetune.epochs=20")
        try:
            parsed = _yaml_load(v)
        except DuplicateKeyError as e:  # not read as a plain string below: that would hide the reason
            raise ConfigError(f"--set {ov}: {e}") from None
        except yaml.YAMLError as e:
            if v.strip()[:1] in ("[", "{"):
                # Meant as a list or a mapping (no plain string starts so): taken as a string, it was
                # refused as "expected a list, got str '[16,8'", which hides the typo.
                why = getattr(e, "problem", None) or " ".join(str(e).split())
                raise ConfigError(f"--set {ov}: the value is not valid YAML ({why}); a list is [a, b], a mapping "
                                  "{key: value}, in quotes for the shell") from None
            parsed = v
        set_dotted(raw, k.strip(), parsed)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        err = e
    if overrides:
        try:
            config_from_dict(file_raw)
        except ConfigError as file_err:
            err = file_err  # the file is invalid on its own: report its own first problem
        else:
            raise ConfigError(_blame_overrides(str(err), overrides)) from None
    where = f"{path}: " if path else ""
    raise ConfigError(f"{where}{err}") from None
