"""User document -> feature vector, as scikit-learn style estimators.

Two featurizers share one interface (``fit``/``transform``, fitted attributes
with a trailing underscore, ``n_features_``, ``get_state``/``from_state``):

* ``TfidfFeaturizer``: tf-idf over a tweet-aware tokenizer (the paper's
  input representation). Its learned state is a vocabulary and an idf vector,
  saved as JSON + a numpy array (no pickle: a model directory must never run
  code when loaded).
* ``TransformerEmbedder``: mean-pooled sentence embeddings from a *local*
  Hugging Face model, averaged over the user's tweets. Nothing is learned, so
  its state is only the model directory and parameters.

Both are fitted on training users only; the caller guarantees that.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from geoae.config import MAX_TRANSFORMER_SIZE, SELECT_RULES, FeatureConfig
from geoae.errors import ArtifactError, ConfigError, DataError, plural
from geoae.tweets import is_missing

try:  # optional C extension (setup.py): the same tokens as ``tokenize``, counted without Python objects
    from geoae import _fastcount
except ImportError:  # not built (no compiler at install time): the sklearn path is used
    _fastcount = None

log = logging.getLogger(__name__)

TOKENIZER_VERSION = "geoae-tweet-v1"
"""Stored with a fitted featurizer; bump when ``tokenize`` changes its output."""

# --------------------------------------------------------------------------- tokenizer

# Letters/punctuation repeated 4+ times are capped at 3 ("soooooo" -> "sooo",
# ":))))" -> ":)))"); digits are left alone so 10000 stays 10000.
_ELONG_RE = re.compile(r"(\D)\1\1\1+")

# Emoticons, matched on lowercased text; the letters D and P are restored to
# their conventional case afterwards (":D", "xD", ":P").
_EMOTICON = r"""
    (?:
        [<>]?[:;=][\-o\*'^]?[\)\]\(\[dpo/\\|\}\{@3\*$]+       # :) :-( ;p :d :/ =] :3 >:(
      | [\)\]\(\[/\\|][\-o\*'^]?[:;=]                        # (: )-: reversed
      | </?3+                                               # <3 </3 <333
      | xd+                                                 # xd
      | \^[_\-.]?\^ | -_+- | o_o                            # ^_^ -_- o_o
    )
"""
# One pass over the text; exactly one group is non-empty per match.
_TOKEN_RE = re.compile(
    rf"""
    ((?:https?://|www\.)\S+)                      # 1 url
  | ((?<![\w@])@\w+)                              # 2 mention (GeoText: @USER_abc123)
  | (?<![\w<>:;=^])({_EMOTICON})(?!\w)            # 3 emoticon
  | (\#\w+|\d+(?:[.,]\d+)+|\w+(?:['’]\w+)*)       # 4 hashtag, number, word
    """,
    re.VERBOSE,
)
_EMO_CASE = str.maketrans("dp", "DP")


def _keep_mentions_tokenize(text: str) -> list[str]:
    return tokenize(text, keep_mentions=True)


def tokenize(text: str, keep_mentions: bool = False) -> list[str]:
    """Split one tweet or user document into tokens.

    Lowercases words; URLs become ``<url>`` and @mentions ``<user>`` (a
    specific link or account name does not generalise across users);
    hashtags give ``#tag`` plus the bare ``tag`` so both spellings share a
    feature; emoticons (``:)``, ``:-(``, ``<3``, ``:D``, ``xD``, ``^_^``) are
    kept as tokens in a canonical case; elongations are capped at three
    repeats (``soooooo`` -> ``sooo``) so variants of the same emphasis share a
    feature; numbers are kept (``3.5``, years, area codes); other punctuation
    is dropped. With ``keep_mentions`` a mention also gives the account itself
    (``@user_1a2b``): GeoText anonymises accounts consistently, so users who
    address the same local account share a feature. One precompiled regex pass does the work (about 1-2 s per
    10 MB of text).
    """
    if not text:
        return []
    text = _ELONG_RE.sub(r"\1\1\1", text.lower())
    out: list[str] = []
    ap = out.append
    for url, user, emo, word in _TOKEN_RE.findall(text):
        if word:
            ap(word)
            if word[0] == "#":
                ap(word[1:])
        elif url:
            ap("<url>")
        elif user:
            ap("<user>")
            if keep_mentions:
                ap(user)
        else:
            ap(emo.translate(_EMO_CASE))
    return out


# --------------------------------------------------------------------------- tf-idf

IDF_MAX = 1.0 + math.log(2.0**63)
"""The largest smoothed idf a fit can store, 1 + ln(1 + documents) for as many documents as an int64
counts (about 44.7); a stored idf above it is damage."""


def igr_scores(presence: sp.spmatrix, y: np.ndarray) -> np.ndarray:
    """Information gain ratio of each term for the classes ``y`` (Han, Cook & Baldwin 2012:
    "location indicative words"), from a binary document x term matrix.

    IG(w) = H(C) - P(w) H(C | w) - P(not w) H(C | not w), divided by the term's own entropy
    -P(w) log P(w) - P(not w) log P(not w), so a frequent word must be *much* more informative
    than a rare one to rank above it. In ranking a term used by few users of one state scores high,
    a function word used everywhere scores near zero. Vectorised: one [C, n] x [n, V] product.
    """
    X = sp.csr_matrix(presence, dtype=np.float64)
    X.data[:] = 1.0
    y = np.asarray(y, dtype=np.int64)
    n, n_cls = X.shape[0], int(y.max()) + 1
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), y)), shape=(n, n_cls))
    with_w = np.asarray((onehot.T @ X).todense())           # [C, V] documents of class c containing w
    n_c = np.bincount(y, minlength=n_cls).astype(np.float64)[:, None]
    n_w = with_w.sum(axis=0)
    without_w = n_c - with_w

    def entropy(counts: np.ndarray, total: np.ndarray) -> np.ndarray:
        p = counts / np.maximum(total, 1e-12)
        return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=0)

    p_w = n_w / n
    gain = entropy(n_c, np.float64(n))[0] - p_w * entropy(with_w, n_w) - (1 - p_w) * entropy(without_w, n - n_w)
    own = -(p_w * np.log(np.where(p_w > 0, p_w, 1.0)) + (1 - p_w) * np.log(np.where(p_w < 1, 1 - p_w, 1.0)))
    return np.where(own > 0, gain / np.where(own > 0, own, 1.0), 0.0)


class TfidfFeaturizer(BaseEstimator, TransformerMixin):
    """Tf-idf vectors of user documents (float32 CSR, rows L2-normalised).

    Parameters mirror ``FeatureConfig``. ``fit`` learns ``vocabulary_``
    (term -> column) and ``idf_``; ``transform`` refuses to run unfitted.
    ``get_state``/``from_state`` round-trip through JSON + arrays without
    pickle and reproduce the output exactly.

    ``transform`` (unigrams) counts tokens with the compiled ``geoae._fastcount``
    when it is built: the same tokens as ``tokenize`` and the same arithmetic as
    sklearn's ``TfidfTransformer``, so the output is identical, 10x+ faster.
    Without the extension (or with ``ngram_max > 1``) sklearn's vectorizer does
    the work. ``fit`` always uses sklearn.
    """

    kind = "tfidf"

    def __init__(
        self,
        max_features: int | None = 10000,
        min_df: int | float = 2,
        max_df: float = 1.0,
        sublinear_tf: bool = True,
        binary: bool = False,
        ngram_max: int = 1,
        mentions: str = "mask",
        select: str = "frequency",
    ):
        self.select = select
        self.max_features = max_features
        self.min_df = min_df
        self.max_df = max_df
        self.sublinear_tf = sublinear_tf
        self.binary = binary
        self.ngram_max = ngram_max
        self.mentions = mentions

    @classmethod
    def from_config(cls, cfg: FeatureConfig) -> "TfidfFeaturizer":
        return cls(
            max_features=cfg.max_features, min_df=cfg.min_df, max_df=cfg.max_df,
            sublinear_tf=cfg.sublinear_tf, binary=cfg.binary, ngram_max=cfg.ngram_max, mentions=cfg.mentions,
            select=cfg.select,
        )

    def _vectorizer(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            tokenizer=_keep_mentions_tokenize if self.mentions == "keep" else tokenize, lowercase=False, token_pattern=None, preprocessor=None,
            ngram_range=(1, int(self.ngram_max)), max_features=self.max_features,
            min_df=self.min_df, max_df=self.max_df, sublinear_tf=self.sublinear_tf,
            binary=self.binary, norm="l2", use_idf=True, smooth_idf=True,
            dtype=np.float32, vocabulary=vocabulary,
        )

    def fit(self, docs_text: Iterable[str], y=None) -> "TfidfFeaturizer":
        """Learn the vocabulary and idf from training documents (one string per user).

        ``select="frequency"`` keeps the ``max_features`` most frequent terms (``y`` is ignored);
        ``select="igr"`` keeps the ``max_features`` terms with the highest information gain ratio
        for the labels ``y`` (one per document; ``None`` or ``""`` for an unlabelled document,
        which then counts for ``min_df`` and the idf but not for the ranking).
        """
        texts = _as_texts(docs_text)
        if not texts:
            raise DataError("cannot fit tf-idf features on zero documents")
        if self.select not in SELECT_RULES:
            raise ConfigError(f"features.select: must be one of {', '.join(SELECT_RULES)}; got {self.select!r}")
        try:
            if self.select == "igr":
                vocabulary, idf = self._igr_selection(texts, y)
                vec = self._vectorizer(vocabulary=vocabulary)
                vec.idf_ = idf  # as from_state does: the vectorizer is then fitted
            else:
                vec = self._vectorizer().fit(texts)
        except ValueError as e:  # "After pruning, no terms remain", "max_df < min_df"
            raise DataError(
                f"tf-idf vocabulary is empty for {plural(len(texts), 'training document')} ({e}); "
                "lower features.min_df or raise features.max_df"
            ) from None
        self._set_fitted(vec)
        log.info("tf-idf: %d features (%s) from %d documents", self.n_features_, self.select, len(texts))
        return self

    def _igr_selection(self, texts: list[str], y) -> tuple[dict[str, int], np.ndarray]:
        """The ``max_features`` candidate terms (``min_df``/``max_df`` as usual) with the highest
        information gain ratio, as a term -> column map in alphabetical order, and their idf
        (sklearn's, from the same document counts: the texts are tokenized once)."""
        from sklearn.feature_extraction.text import TfidfTransformer

        if y is None:
            raise DataError("features.select=igr ranks terms by their labels: fit needs one label per document")
        labels = np.asarray(["" if is_missing(v) else str(v) for v in y], dtype=object)
        if len(labels) != len(texts):
            raise DataError(f"features.select=igr: {len(labels)} labels for {len(texts)} documents")
        known = labels != ""
        if len(set(labels[known])) < 2:
            raise DataError("features.select=igr: needs labelled documents from at least two classes")
        cand = self._vectorizer()
        cand.set_params(max_features=None, binary=True, use_idf=False, norm=None)
        presence = cand.fit_transform(texts).tocsr()
        scores = igr_scores(presence[known], np.unique(labels[known], return_inverse=True)[1])
        terms = cand.get_feature_names_out()  # alphabetical, so ties break the same way everywhere
        keep = np.sort(np.argsort(-scores, kind="stable")[: self.max_features])
        idf = TfidfTransformer(smooth_idf=True).fit(presence[:, keep]).idf_.astype(np.float32)
        return {str(t): j for j, t in enumerate(terms[keep])}, idf

    def _set_fitted(self, vec) -> None:
        self.vectorizer_ = vec
        self.vocabulary_ = vec.vocabulary_
        self.idf_ = vec.idf_
        self._fast_vocab = None

    @property
    def n_features_(self) -> int:
        check_is_fitted(self, "vocabulary_")
        return len(self.vocabulary_)

    def fit_transform(self, docs_text: Iterable[str], y=None) -> sp.csr_matrix:
        texts = _as_texts(docs_text)  # once: a one-shot iterable would reach transform empty
        return self.fit(texts, y).transform(texts)

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        check_is_fitted(self, ("vocabulary_", "idf_"))
        texts = _as_texts(texts)
        if not texts:  # sklearn's normalize/TfidfTransformer refuse 0 rows; no documents, no rows
            return sp.csr_matrix((0, self.n_features_), dtype=np.float32)
        if int(self.ngram_max) == 1 and _fastcount_available():
            return self._fast_transform(texts)
        X = self.vectorizer_.transform(texts)
        return sp.csr_matrix(X, dtype=np.float32)

    def _fast_transform(self, texts: list[str], n_threads: int | None = None) -> sp.csr_matrix:
        """``transform`` through ``geoae._fastcount``: the same counts as the sklearn
        vectorizer (same tokens, same vocabulary), then TfidfTransformer's arithmetic."""
        counts = self._fast_counts(texts, n_threads)
        vec = self.vectorizer_
        if vec.binary:  # CountVectorizer.transform
            counts.data.fill(1)
        # TfidfTransformer.transform (float32 data, as the vectorizer's dtype)
        if vec.sublinear_tf:
            np.log(counts.data, counts.data)
            counts.data += 1.0
        counts.data *= vec.idf_[counts.indices]
        X = normalize(counts, norm=vec.norm, copy=False) if vec.norm is not None else counts
        return sp.csr_matrix(X, dtype=np.float32)

    def _fast_counts(self, texts: list[str], n_threads: int | None = None) -> sp.csr_matrix:
        """float32 CSR of in-vocabulary token counts (columns sorted), computed in C."""
        cached = getattr(self, "_fast_vocab", None)
        if cached is None or cached[0] is not self.vocabulary_:
            terms = [""] * len(self.vocabulary_)
            for t, j in self.vocabulary_.items():
                terms[j] = t
            cached = (self.vocabulary_, _fastcount.Vocab(terms))
            self._fast_vocab = cached  # a cache, not learned state: dropped by __getstate__
        vocab = cached[1]
        if n_threads is None:
            n_threads = _count_threads(texts)
        # lower=True: str.lower() as in tokenize (done in C for ASCII-only texts)
        indptr, indices, counts = vocab.count(texts, n_threads, True, self.mentions == "keep")
        X = sp.csr_matrix(
            (np.frombuffer(counts, dtype=np.int32).astype(np.float32),
             np.frombuffer(indices, dtype=np.int32), np.frombuffer(indptr, dtype=np.int64)),
            shape=(len(texts), len(vocab)),
        )
        X.has_sorted_indices = True
        return X

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ may return __dict__ itself
        state.pop("_fast_vocab", None)
        return state

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "vocabulary_")
        return self.vectorizer_.get_feature_names_out()

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(json_dict, arrays)``: params + vocabulary in column order, and ``{"idf": idf_}``."""
        check_is_fitted(self, ("vocabulary_", "idf_"))
        terms = [""] * len(self.vocabulary_)
        for t, j in self.vocabulary_.items():
            terms[j] = t
        state = {
            "kind": self.kind,
            "tokenizer": TOKENIZER_VERSION,
            "params": self.get_params(),
            "vocabulary": terms,
            "n_features": len(terms),
        }
        return state, {"idf": np.ascontiguousarray(self.idf_)}

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray]) -> "TfidfFeaturizer":
        """Rebuild a fitted featurizer; ``ArtifactError`` if the state is inconsistent."""
        try:
            if state.get("kind") != cls.kind:
                raise ValueError(f"kind is {state.get('kind')!r}, expected {cls.kind!r}")
            if state.get("tokenizer") != TOKENIZER_VERSION:
                raise ValueError(f"tokenizer {state.get('tokenizer')!r} differs from this version's {TOKENIZER_VERSION!r}")
            terms = state["vocabulary"]
            # a list of str: list() of one string would split it into characters, and a
            # non-str term only fails later, in transform
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError("vocabulary must be a list of strings")
            idf = np.asarray(arrays["idf"])
            if idf.ndim != 1 or len(idf) != len(terms) or len(set(terms)) != len(terms):
                raise ValueError(f"{len(terms)} terms ({len(set(terms))} distinct) but idf has shape {idf.shape}")
            if idf.dtype not in (np.float32, np.float64):  # what fit stores; an int or complex idf is damage
                raise ValueError(f"idf is {idf.dtype}, expected float32 or float64")
            # Smoothed idf is 1 + ln((1 + documents) / (1 + document frequency)): at least 1, and at most
            # IDF_MAX. A larger finite value (3e38) loaded, then overflowed every prediction to inf.
            if not (np.isfinite(idf).all() and (idf > 0).all() and (idf <= IDF_MAX).all()):
                raise ValueError(f"idf has values that are not finite, positive and at most {IDF_MAX:.2f} "
                                 "(1 + ln of the largest document count)")
            self = cls(**state["params"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"featurizer state is invalid: {e}") from None
        vec = self._vectorizer(vocabulary={t: j for j, t in enumerate(terms)})
        vec.idf_ = idf  # sklearn's setter validates the length and marks the vectorizer fitted
        self._set_fitted(vec)
        return self


# --------------------------------------------------------------------------- transformer


class TransformerEmbedder(BaseEstimator, TransformerMixin):
    """Mean-pooled embeddings from a local Hugging Face encoder, one per user.

    A user document is many tweets (one per line). Each tweet is embedded on
    its own (truncated to ``max_length`` tokens, so nothing but the tail of an
    overlong tweet is lost, unlike truncating the whole document), tweets of
    many users are batched together sorted by length, and a user's vector is
    the mean of its tweet vectors, L2-normalised. Empty documents give a zero
    vector. Only local model directories are accepted (``local_files_only``):
    nothing is downloaded at run time.
    """

    kind = "transformer"

    def __init__(self, model_dir: str = "", max_length: int = 128, batch_size: int = 32,
                 device: str = "cpu", separator: str = "\n"):
        self.model_dir = model_dir
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.separator = separator

    @classmethod
    def from_config(cls, cfg: FeatureConfig, device: str = "cpu") -> "TransformerEmbedder":
        return cls(model_dir=cfg.transformer_model, max_length=cfg.transformer_max_length,
                   batch_size=cfg.transformer_batch_size, device=device)

    def _check_params(self) -> None:
        """``ValueError`` for parameters ``get_state`` cannot have stored (a hand-edited artifact): each
        was a traceback in transform (``int('x')``, ``str.split('')``, a tokenizer ``OverflowError``)."""
        for key in ("max_length", "batch_size"):
            v = getattr(self, key)
            if type(v) is not int or not 1 <= v <= MAX_TRANSFORMER_SIZE:
                raise ValueError(f"params.{key} must be a whole number in [1, {MAX_TRANSFORMER_SIZE}]; got {v!r}")
        for key in ("model_dir", "separator"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"params.{key} must be a non-empty string; got {getattr(self, key)!r}")
        if not (isinstance(self.device, str) and re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", self.device)):
            raise ValueError(f"params.device must be auto, cpu, mps, cuda or cuda:N; got {self.device!r}")

    def _load(self):
        """Load tokenizer + model once (cached on the instance, not a fitted attribute)."""
        cached = getattr(self, "_loaded", None)
        if cached is not None and cached[0] == (self.model_dir, self.device):
            return cached[1], cached[2], cached[3]
        import torch
        from transformers import AutoModel, AutoTokenizer

        d = Path(self.model_dir).expanduser() if self.model_dir else None
        if d is None or not d.is_dir():
            raise ConfigError(
                f"features.transformer_model: model directory {self.model_dir!r} does not exist; "
                "give a local directory written by save_pretrained (nothing is downloaded)"
            )
        if not (d / "config.json").is_file():
            raise ConfigError(f"features.transformer_model: {d} has no config.json; it is not a saved Hugging Face model")
        try:
            tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            model = AutoModel.from_pretrained(str(d), local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as e:
            raise ConfigError(f"features.transformer_model: cannot load a model and tokenizer from {d}: {e}") from None
        dev = self.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model.to(dev).eval()
        except (RuntimeError, AssertionError) as e:  # torch without CUDA raises AssertionError
            raise ConfigError(f"features: cannot run the Hugging Face model in {d} on device {dev!r} ({e})") from None
        self._loaded = ((self.model_dir, self.device), tok, model, dev)
        return tok, model, dev

    def fit(self, docs_text=None, y=None) -> "TransformerEmbedder":
        """Nothing to learn; loads the model to check it and records ``n_features_``."""
        _, model, _ = self._load()
        self.n_features_ = int(model.config.hidden_size)
        return self

    def transform(self, texts: Iterable[str]) -> np.ndarray:
        """``(n_users, hidden)`` float32, rows L2-normalised (zero rows for empty documents)."""
        check_is_fitted(self, "n_features_")
        tok, model, dev = self._load()
        texts = _as_texts(texts)
        out = np.zeros((len(texts), self.n_features_), dtype=np.float32)
        # (owner, tweet) for all non-empty tweets; processed in bounded chunks of users
        chunk_tweets = max(self.batch_size * 64, 1)
        start = 0
        while start < len(texts):
            owners, tweets = [], []
            end = start
            while end < len(texts) and (end == start or len(tweets) < chunk_tweets):
                for t in texts[end].split(self.separator):
                    t = t.strip()
                    if t:
                        owners.append(end)
                        tweets.append(t)
                end += 1
            if tweets:
                emb = self._embed(tweets, tok, model, dev)  # (n_tweets, hidden) float32
                sums = np.zeros((end - start, emb.shape[1]), dtype=np.float64)
                np.add.at(sums, np.asarray(owners) - start, emb)
                norms = np.linalg.norm(sums, axis=1, keepdims=True)
                out[start:end] = np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0)
            start = end
        return out

    def _embed(self, tweets: list[str], tok, model, dev) -> np.ndarray:
        import torch

        order = np.argsort([len(t) for t in tweets], kind="stable")
        res = np.zeros((len(tweets), self.n_features_), dtype=np.float32)
        bs = max(int(self.batch_size), 1)
        with torch.no_grad():
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                enc = tok([tweets[j] for j in idx], padding=True, truncation=True,
                          max_length=int(self.max_length), return_tensors="pt")
                enc = {k: v.to(dev) for k, v in enc.items()}
                hidden = model(**enc).last_hidden_state  # (b, L, h)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=1)
                res[idx] = pooled.cpu().numpy()
        return res

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Model directory and parameters only: the weights stay where they are."""
        check_is_fitted(self, "n_features_")
        params = self.get_params()
        params["model_dir"] = str(Path(self.model_dir).expanduser().resolve())
        return {"kind": self.kind, "params": params, "n_features": int(self.n_features_)}, {}

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray] | None = None) -> "TransformerEmbedder":
        try:
            if state.get("kind") != cls.kind:
                raise ValueError(f"kind is {state.get('kind')!r}, expected {cls.kind!r}")
            self = cls(**state["params"])
            n = int(state["n_features"])
            self._check_params()
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"featurizer state is invalid: {e}") from None
        try:
            self.fit()
        except ConfigError as e:  # said as of a config key, but nothing on the command line can change it
            raise ArtifactError(f"the featurizer's Hugging Face model cannot be used: {e}; it must be where, and "
                                "as, it was when the model was trained") from None
        if self.n_features_ != n:
            raise ArtifactError(
                f"the model in {self.model_dir} has hidden size {self.n_features_}, but the artifact was "
                f"trained on {n}; the model directory was changed since training"
            )
        return self


# --------------------------------------------------------------------------- factories


def make_featurizer(cfg: FeatureConfig, device: str = "cpu"):
    """An unfitted featurizer for ``features.kind``."""
    if cfg.kind == "tfidf":
        return TfidfFeaturizer.from_config(cfg)
    if cfg.kind == "transformer":
        return TransformerEmbedder.from_config(cfg, device=device)
    raise ConfigError(f"features.kind: must be one of tfidf, transformer; got {cfg.kind!r}")


_KINDS = {"tfidf": TfidfFeaturizer, "transformer": TransformerEmbedder}


def featurizer_from_state(state: dict, arrays: dict[str, np.ndarray] | None = None):
    """Rebuild a fitted featurizer from ``get_state()`` output, dispatching on ``state["kind"]``."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in _KINDS:
        raise ArtifactError(f"unknown featurizer kind {kind!r} in the artifact (known: {', '.join(_KINDS)})")
    return _KINDS[kind].from_state(state, arrays or {})


FASTCOUNT_THREADS: int | None = None
"""Threads for the compiled tf-idf counter; ``None``: the usable CPUs (at most 8), one for small inputs."""

_FASTCOUNT_MIN_CHARS_PER_THREAD = 1 << 20
_fastcount_warned = False


def _fastcount_available() -> bool:
    global _fastcount_warned
    if _fastcount is not None:
        return True
    if not _fastcount_warned:
        _fastcount_warned = True
        log.warning(
            "geoae._fastcount (C extension) is not built; tf-idf transform falls back to the "
            "pure-Python tokenizer, about 16x slower (reinstall with a C compiler: pip install -e .)"
        )
    return False


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _count_threads(texts: list[str]) -> int:
    if FASTCOUNT_THREADS is not None:
        return max(int(FASTCOUNT_THREADS), 1)
    n_chars = sum(map(len, texts))
    return max(1, min(available_cpus(), 8, n_chars // _FASTCOUNT_MIN_CHARS_PER_THREAD))


def _as_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a sequence of documents, got a single string")
    return ["" if is_missing(t) else str(t) for t in texts]
