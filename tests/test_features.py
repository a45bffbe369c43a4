import json
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from geoae.config import FeatureConfig
from geoae.errors import ArtifactError, ConfigError, DataError
from geoae.features import (
    TfidfFeaturizer,
    TransformerEmbedder,
    featurizer_from_state,
    igr_scores,
    make_featurizer,
    tokenize,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DOCS = [
    "Sooooo happy in #NYC today :) http://t.co/abc @USER_1a2b3c\ngoing to the subway",
    "yall ready for the game?? #Texans xD\nhouston traffic is the worst :(",
    "chicago deep dish pizza <3 #chicago\nthe bean was cold today",
    "cold day in the city :-( need coffee\ncoffee coffee coffee",
    "nyc subway again lol\ngame night in the city",
]


# --------------------------------------------------------------------------- tokenizer


def test_tokenize_tweet_features():
    toks = tokenize("Soooooo HAPPY :) :-( <3 :D xD at http://t.co/abc #NYC @USER_abc123 it's 3.5 in 2013!!! 10000")
    assert toks == [
        "sooo", "happy", ":)", ":-(", "<3", ":D", "xD", "at", "<url>", "#nyc", "nyc", "<user>",
        "it's", "3.5", "in", "2013", "10000",
    ]


def test_tokenize_edge_cases():
    assert tokenize("") == []
    assert tokenize("www.example.com/x and HTTPS://X.CO") == ["<url>", "and", "<url>"]
    # times and list markers are not emoticons; emails are not mentions
    assert tokenize("at 10:30 (see 8) mail a@b.com") == ["at", "10", "30", "see", "8", "mail", "a", "b", "com"]
    assert tokenize("lol XD ^_^ (: -_- </3 :P ;p café señor") == [
        "lol", "xD", "^_^", "(:", "-_-", "</3", ":P", ";P", "café", "señor",
    ]
    assert tokenize("hahaha :)))))") == ["hahaha", ":)))"]


def test_tokenize_speed():
    rng = np.random.default_rng(0)
    words = np.array("the quick brown fox :) http://t.co/x @USER_1 #nyc soooo 123 lol".split())
    docs = [" ".join(rng.choice(words, 500)) for _ in range(1000)]  # ~3 MB
    t = time.process_time()
    n = sum(len(tokenize(d)) for d in docs)
    assert n >= 500_000
    assert time.process_time() - t < 5.0


# --------------------------------------------------------------------------- tf-idf


def test_tfidf_fit_transform():
    f = TfidfFeaturizer(max_features=1000, min_df=1)
    with pytest.raises(NotFittedError):
        f.transform(DOCS)
    X = f.fit(DOCS).transform(DOCS)
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32
    assert X.shape == (len(DOCS), f.n_features_)
    np.testing.assert_allclose(sp.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert "<url>" in f.vocabulary_ and "#nyc" in f.vocabulary_ and ":)" in f.vocabulary_
    assert f.idf_.shape == (f.n_features_,)
    # unseen text maps to an all-zero row, not an error
    assert f.transform(["zzzz qqqq"]).nnz == 0


def _counts(f, docs, ngram_max):
    """Raw term counts of ``docs`` over ``f``'s vocabulary (sklearn's own counting, the same tokens)."""
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, ngram_max),
                         vocabulary=f.vocabulary_)
    return sp.csr_matrix(cv.transform(docs), dtype=np.float64)


def test_tfidf_params_respected():
    from sklearn.preprocessing import normalize

    f = TfidfFeaturizer(max_features=5, min_df=2, ngram_max=2, sublinear_tf=False, binary=True).fit(DOCS)
    assert f.n_features_ <= 5
    big = TfidfFeaturizer(min_df=1, ngram_max=2).fit(DOCS)
    assert any(" " in t for t in big.vocabulary_)  # bigrams present
    # min_df: every kept term is in at least two documents, and min_df=1 keeps terms of one document
    two = TfidfFeaturizer(min_df=2).fit(DOCS)
    assert ((_counts(two, DOCS, 1) > 0).sum(0) >= 2).all()
    one = TfidfFeaturizer(min_df=1).fit(DOCS)
    assert ((_counts(one, DOCS, 1) > 0).sum(0) == 1).any() and set(two.vocabulary_) < set(one.vocabulary_)
    # the tf each setting asks for ("coffee" is 4 times in DOCS[3]), times the idf, l2-normalised
    for params, tf in (({"binary": True, "sublinear_tf": False}, lambda c: np.ones_like(c)),
                       ({"binary": False, "sublinear_tf": True}, lambda c: 1 + np.log(c)),
                       ({"binary": False, "sublinear_tf": False}, lambda c: c)):
        g = TfidfFeaturizer(min_df=1, ngram_max=2, **params).fit(DOCS)
        c = _counts(g, DOCS, 2)
        assert c.max() >= 4
        c.data = tf(c.data)
        want = normalize(sp.csr_matrix(c.multiply(g.idf_.astype(np.float64))))
        np.testing.assert_allclose(g.transform(DOCS).toarray(), want.toarray(), atol=1e-6, err_msg=str(params))


def test_tfidf_empty_vocabulary_is_data_error():
    with pytest.raises(DataError, match="min_df"):
        TfidfFeaturizer(min_df=10).fit(DOCS)


def test_tfidf_state_round_trip(tmp_path):
    from safetensors.numpy import load_file, save_file

    f = TfidfFeaturizer(max_features=50, min_df=1, ngram_max=2).fit(DOCS)
    state, arrays = f.get_state()
    (tmp_path / "feat.json").write_text(json.dumps(state), encoding="utf-8")
    save_file(arrays, str(tmp_path / "feat.safetensors"))
    state2 = json.loads((tmp_path / "feat.json").read_text(encoding="utf-8"))
    arrays2 = load_file(str(tmp_path / "feat.safetensors"))
    g = featurizer_from_state(state2, arrays2)
    assert isinstance(g, TfidfFeaturizer)
    assert g.get_params() == f.get_params()
    assert g.vocabulary_ == f.vocabulary_
    new = DOCS + ["the city subway #nyc :) totally new words", ""]
    a, b = f.transform(new), g.transform(new)
    assert (a != b).nnz == 0 and a.dtype == b.dtype and a.shape == b.shape


def test_igr_scores_rank_location_words_above_everyday_words():
    # 6 users, 2 classes. "pure" is used by 2 users of class 0 only, "everywhere" by all,
    # "mixed" by 2 users of class 0 and 1 of class 1, "never" by nobody.
    presence = sp.csr_matrix(np.array([
        # pure everywhere mixed never
        [1, 1, 1, 0],
        [1, 1, 1, 0],
        [0, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 0, 0],
        [0, 1, 0, 0],
    ]))
    y = np.array([0, 0, 0, 1, 1, 1])
    s = igr_scores(presence, y)
    assert s[0] > s[2] > 0
    assert s[1] == 0 and s[3] == 0  # no information in a word everybody (or nobody) uses
    # Hand computation for "pure": H(C) = ln 2; given the word both users are class 0 (H = 0);
    # without it 1 of class 0 and 3 of class 1; divided by the word's own entropy H(1/3).
    h = lambda *p: -sum(x * np.log(x) for x in p if x > 0)  # noqa: E731
    ig = h(0.5, 0.5) - (4 / 6) * h(0.25, 0.75)
    assert s[0] == pytest.approx(ig / h(1 / 3, 2 / 3))


def test_tfidf_igr_selection_keeps_the_informative_terms(tmp_path):
    docs = ["yall houston rodeo the game", "yall houston the game", "the bean chicago game",
            "chicago the bean game", "the game tonight", "the game"]
    states = ["TX", "TX", "IL", "IL", "", None]  # the last two are unlabelled: vocabulary and idf only
    f = TfidfFeaturizer(max_features=4, min_df=1, select="igr").fit(docs, states)
    assert set(f.vocabulary_) == {"yall", "houston", "chicago", "bean"}
    assert list(f.vocabulary_.values()) == list(range(4)) and sorted(f.vocabulary_) == list(f.vocabulary_)
    # the idf is fitted on all six documents (unlabelled included), as with frequency selection
    ref = TfidfFeaturizer(max_features=None, min_df=1).fit(docs)
    for t, j in f.vocabulary_.items():
        assert f.idf_[j] == pytest.approx(ref.idf_[ref.vocabulary_[t]])
    X = f.transform(["the game", "houston the game"])
    assert X[0].nnz == 0 and X[1].nnz == 1
    # round trip through the artifact state keeps the selection
    g = featurizer_from_state(*f.get_state())
    assert g.vocabulary_ == f.vocabulary_ and g.select == "igr"
    assert (g.transform(docs) != f.transform(docs)).nnz == 0
    with pytest.raises(DataError, match="one label per document"):
        TfidfFeaturizer(select="igr", min_df=1).fit(docs)
    with pytest.raises(DataError, match="at least two classes"):
        TfidfFeaturizer(select="igr", min_df=1).fit(docs, ["TX"] * 2 + [""] * 4)
    with pytest.raises(DataError, match="6 documents"):
        TfidfFeaturizer(select="igr", min_df=1).fit(docs, ["TX", "IL"])
    with pytest.raises(ConfigError, match="features.select"):
        TfidfFeaturizer(select="chi", min_df=1).fit(docs, states)
    cfg = FeatureConfig(select="igr", max_features=4, min_df=1)
    assert make_featurizer(cfg).fit(docs, states).vocabulary_ == f.vocabulary_


def test_tfidf_bad_state():
    f = TfidfFeaturizer(min_df=1).fit(DOCS)
    state, arrays = f.get_state()
    with pytest.raises(ArtifactError):
        TfidfFeaturizer.from_state(state, {"idf": arrays["idf"][:-1]})
    with pytest.raises(ArtifactError):
        featurizer_from_state({**state, "kind": "bogus"}, arrays)
    with pytest.raises(ArtifactError):
        TfidfFeaturizer.from_state({k: v for k, v in state.items() if k != "vocabulary"}, arrays)


def test_make_featurizer():
    f = make_featurizer(FeatureConfig(kind="tfidf", max_features=7, min_df=1, ngram_max=2))
    assert isinstance(f, TfidfFeaturizer) and f.max_features == 7 and f.ngram_max == 2
    t = make_featurizer(FeatureConfig(kind="transformer", transformer_model="/x", transformer_max_length=64))
    assert isinstance(t, TransformerEmbedder) and t.model_dir == "/x" and t.max_length == 64


# --------------------------------------------------------------------------- transformer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for doc in DOCS for w in doc.lower().split()} | {"city", "new", "words"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_transformer_embedder(tiny_model):
    e = TransformerEmbedder(model_dir=str(tiny_model), max_length=16, batch_size=3)
    with pytest.raises(NotFittedError):
        e.transform(DOCS)
    assert e.fit(DOCS) is e and e.n_features_ == 32
    X = e.transform(DOCS + [""])
    assert X.shape == (len(DOCS) + 1, 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X[:-1], axis=1), 1.0, rtol=1e-5)
    assert not X[-1].any()  # empty document -> zero vector
    # deterministic, independent of batching and of the other documents in the call
    Y = TransformerEmbedder(model_dir=str(tiny_model), max_length=16, batch_size=1).fit().transform(DOCS[::-1])
    np.testing.assert_allclose(X[: len(DOCS)][::-1], Y, atol=1e-5)
    # different texts give different vectors
    assert np.abs(X[0] - X[1]).max() > 1e-3
    # a user's vector is the mean of its tweets' vectors (renormalised)
    tweets = DOCS[0].split("\n")
    T = e.transform(tweets)
    m = T.sum(0) / np.linalg.norm(T.sum(0))
    np.testing.assert_allclose(X[0], m, atol=1e-5)


def test_transformer_state_round_trip(tiny_model, tmp_path):
    e = TransformerEmbedder(model_dir=str(tiny_model), max_length=16).fit()
    state, arrays = e.get_state()
    assert arrays == {} and json.loads(json.dumps(state)) == state
    g = featurizer_from_state(json.loads(json.dumps(state)), {})
    np.testing.assert_allclose(g.transform(DOCS), e.transform(DOCS), atol=1e-6)


@pytest.mark.parametrize("key, value, pattern", [
    ("max_length", "x", r"params\.max_length must be a whole number in \[1, 2147483647\]; got 'x'"),
    ("max_length", 10**30, r"params\.max_length must be a whole number"),
    ("batch_size", None, r"params\.batch_size must be a whole number"),
    ("separator", "", r"params\.separator must be a non-empty string"),
    ("model_dir", 5, r"params\.model_dir must be a non-empty string"),
    ("device", "meta", r"params\.device must be auto, cpu, mps, cuda or cuda:N; got 'meta'"),
])
def test_transformer_state_with_impossible_params_is_refused(tiny_model, key, value, pattern):
    """Loaded, then each was a traceback in transform (int('x'), str.split(''), the tokenizer's
    OverflowError, a meta tensor)."""
    state, arrays = TransformerEmbedder(model_dir=str(tiny_model), max_length=16).fit().get_state()
    state["params"][key] = value
    with pytest.raises(ArtifactError, match=pattern):
        featurizer_from_state(state, arrays)


def test_transformer_state_whose_model_cannot_be_used_is_an_artifact_error(tiny_model, tmp_path):
    """A missing model directory said "features.transformer_model: ... give a local directory" as if a
    config key could fix it, and a device this machine lacks was an AssertionError traceback."""
    import torch

    state, arrays = TransformerEmbedder(model_dir=str(tiny_model), max_length=16).fit().get_state()
    with pytest.raises(ArtifactError, match=r"Hugging Face model cannot be used: .*does not exist.*it must be where"):
        featurizer_from_state({**state, "params": {**state["params"], "model_dir": str(tmp_path / "gone")}}, arrays)
    if not torch.cuda.is_available():
        with pytest.raises(ArtifactError, match=r"cannot run the Hugging Face model in .* on device 'cuda:0'"):
            featurizer_from_state({**state, "params": {**state["params"], "device": "cuda:0"}}, arrays)


def test_transformer_missing_model(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TransformerEmbedder(model_dir=str(tmp_path / "nope")).fit()
    with pytest.raises(ConfigError, match="config.json"):
        TransformerEmbedder(model_dir=str(tmp_path)).fit()
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError):
        TransformerEmbedder(model_dir=str(tmp_path)).fit()


def test_missing_texts_of_every_kind_are_empty_documents_not_words():
    """pd.NA became the text "<NA>" (the word 'na'), a float32 NaN the word 'nan'."""
    import pandas as pd

    from geoae.features import TfidfFeaturizer

    f = TfidfFeaturizer(min_df=1).fit(["na na bagel", "nan x y", "na"])
    X = f.transform(pd.Series(["bagel", pd.NA, np.float32("nan"), None, float("nan"), pd.NaT], dtype=object))
    assert X[0].nnz == 1 and all(X[i].nnz == 0 for i in range(1, 6))
    # an unlabelled document (pd.NA) is no class "<NA>": the same terms as with None
    docs = ["g d", "g d", "a c", "e d", "d c", "d c"]  # a case where a class "<NA>" changes the terms
    labels = [None, "NY", None, "NY", "CA", "NY"]
    want = TfidfFeaturizer(min_df=1, max_features=2, select="igr").fit(docs, labels).vocabulary_
    got = TfidfFeaturizer(min_df=1, max_features=2, select="igr").fit(
        docs, pd.Series([pd.NA if v is None else v for v in labels], dtype=object)).vocabulary_
    assert got == want


def test_tfidf_transform_of_no_documents_is_an_empty_matrix():
    """transform([]) raised sklearn's "Found array with 0 sample(s)" (from normalize on the
    compiled path, from TfidfTransformer on the sklearn one) instead of a 0-row matrix."""
    for ngram_max in (1, 2):  # compiled path, sklearn path
        f = TfidfFeaturizer(min_df=1, ngram_max=ngram_max).fit(DOCS)
        X = f.transform([])
        assert sp.isspmatrix_csr(X) and X.dtype == np.float32
        assert X.shape == (0, f.n_features_)


def test_tfidf_fit_transform_takes_a_one_shot_iterable():
    """fit_transform(generator): fit consumed the documents, transform then got none."""
    want = TfidfFeaturizer(min_df=1).fit(DOCS).transform(DOCS)
    got = TfidfFeaturizer(min_df=1).fit_transform(d for d in DOCS)
    assert got.shape == want.shape and (got != want).nnz == 0


def test_tfidf_state_vocabulary_must_be_a_list_of_strings():
    """A vocabulary given as one string (split into its characters) or holding non-str terms
    was accepted; it must be an ArtifactError like any other inconsistent state."""
    f = TfidfFeaturizer(min_df=1).fit(DOCS)
    state, arrays = f.get_state()
    idf = arrays["idf"]
    with pytest.raises(ArtifactError):
        TfidfFeaturizer.from_state({**state, "vocabulary": "".join(chr(0x4E00 + i) for i in range(len(idf)))}, arrays)
    with pytest.raises(ArtifactError):
        TfidfFeaturizer.from_state({**state, "vocabulary": list(range(len(idf)))}, arrays)


def test_tfidf_empty_vocabulary_counts_its_documents_right():
    with pytest.raises(DataError, match=r"for 1 training document \("):
        TfidfFeaturizer(min_df=2).fit(["only one document here"])
    with pytest.raises(DataError, match=r"for 2 training documents \("):
        TfidfFeaturizer(min_df=3).fit(["one document", "another"])


def test_tfidf_state_idf_larger_than_any_fit_can_store_is_refused():
    """A finite but huge idf (3e38, a flipped exponent) loaded, then every prediction overflowed to inf
    and crashed in sklearn's normalize with a traceback."""
    from geoae.features import IDF_MAX

    docs = DOCS * 3
    f = TfidfFeaturizer(min_df=1).fit(docs)
    state, arrays = f.get_state()
    assert arrays["idf"].max() <= IDF_MAX
    huge = arrays["idf"].copy()
    huge[0] = 3e38
    with pytest.raises(ArtifactError, match=r"idf has values that are not finite, positive and at most 44\.67"):
        TfidfFeaturizer.from_state(state, {"idf": huge})
    big = arrays["idf"].copy()
    big[0] = IDF_MAX  # the bound itself is a value a fit can store
    TfidfFeaturizer.from_state(state, {"idf": big}).transform(docs)
