"""The compiled tokenizer/counter (geoae._fastcount) against the pure-Python path.

The extension must be built (``pip install -e .`` compiles it in place): an
import failure here is a test failure, not a skip.
"""

import copy
import logging
import pickle
import random
import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

import geoae.features as features
from geoae import _fastcount  # noqa: F401  (a broken build must fail, not skip)
from geoae.features import TfidfFeaturizer, tokenize

TRICKY = [
    "",
    " ",
    "\t\n",
    ":) :-( ;p :D xD xdd <3 </3 ^_^ -_- o_o (: :3 >:(",
    "lol:) hi:)x :)hi a:-( x:p (:x ):  ]-; ^.^ ^^ ^-^ ^_^x -__- -_-x o_ox xo_o",
    ":dx :ddd :px :pd :o :ox :oo :o) :-o :-ox :-- :-* :*x :^) :'( :'(x",
    ":)d :)dx :)3 :)3x :3x :33 :d3x <:) >:d >:dx <<3 <333 <3x </33x </ <//3 xd3",
    "=] =]] ;)) ;;) ::) :::) ==) ^:) @:) :@ :$ :| :\\ :/ :/x http:/x :}{ :{}",
    "|: \\: /: [: ]: ): (: )-: (o: [*; |^= (;x )^:x",
    ":)))))) :(((((( ;pppppp xdddddd <33333 ^___^ -______- !!!!! ?????",
    "soooooo goooood yessss ssss aaaab 1111111 ١١١١١ ....... ,,,,,, __________ ######",
    "http://t.co/abc https://x.y/z?q=1&r=2 www.x www.example.com/path htt://no http:// https:// www. wwww.x",
    "see:http://a.b (http://c.d) xhttp://e.f @http://g.h #http://i.j 'www.k'",
    "@user @USER_abc123 a@b.com x@y @@user @@ @ @_ @é (@user) :@user #@user",
    "#nyc #NYC #_ # #1 #café ## #a#b #a'b #don’t #123.45",
    "1.2. 3,000 1.2.3 1..2 1,2,3,4 .5 5. 1.a 1a.2 10:30 3.5in ٣.٤ 1.٢ 12'34 1'a",
    "don't don’t 'quoted' ‘curly’ rock'n'roll it''s a' 'a o'clock x’y’z don’'t",
    "café CAFÉ ß ẞ ŉ ǅ ǆ İstanbul İ ΣΑΣ ﬁ ﬀ Straße ΌΣΟΣ",
    "٣٤٥ ௧௨ ² ½ Ⅷ ⅷ 〇 ١٢٣abc abc١٢٣ १२.३४",
    "emoji 😀😀😀😀 👍🏽 🇺🇸 :)😀 😀:) 😀😀x 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "中文字符 日本語のテキスト 한국어 ไทย عربى עברית",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeed\x1cfs\u00a0nbsp\u2028ls\u3000ideo",
    "combining e\u0301 a\u0308 \u0301x nul\x00byte surrogate \ud800x",
    "XD Xd xD xd XDD X_X x_x O_O o_O 0_0 ._. >_< =D =P :P ;P :-P :-D",
    "<url> <user> <3<3<3 :):):) ;);) ^_^^_^ :)-: (-:",
]

_NASTY = list(":;=()[]<>/\\|{}@3*$-o'^’dpxDP_#.,0123456789 abcdefghijklmnopqrstuvwxyzéß٣😀\n\t") + list("https://www.")


def _fuzz(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_NASTY) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _c_tokenize(text: str) -> list[str]:
    return _fastcount.tokenize(text.lower())


# --------------------------------------------------------------------------- character classes


def test_character_classes_match_sre():
    """The C \\w, \\d, \\s tables agree with the re module on every code point."""
    flags = np.frombuffer(_fastcount._char_flags(), dtype=np.uint8)
    assert flags.shape == (0x110000,)
    cps = np.arange(0x110000)
    for bit, cls in ((1, "w"), (2, "d"), (4, "s")):
        inside = "".join(map(chr, cps[(flags & bit) != 0]))
        outside = "".join(map(chr, cps[(flags & bit) == 0]))
        assert re.fullmatch(rf"\{cls}*", inside), cls
        assert re.fullmatch(rf"\{cls.upper()}*", outside), cls


# --------------------------------------------------------------------------- token lists


@pytest.mark.parametrize("text", TRICKY)
def test_tokenize_tricky_cases_identical(text):
    assert _c_tokenize(text) == tokenize(text)
    assert _c_tokenize(text.upper()) == tokenize(text.upper())


def test_tokenize_known_outputs():
    """A few spelled-out expectations (both implementations)."""
    cases = {
        "1.2. 3,000": ["1.2", "3,000"],
        "don’t 'quoted'": ["don’t", "quoted"],
        "#Hash # x": ["#hash", "hash", "x"],
        "@@user a@b": ["user", "a", "b"],
        ":dx :D soooooo": ["dx", ":D", "sooo"],
        "see http://x.co now": ["see", "<url>", "now"],
    }
    for text, want in cases.items():
        assert tokenize(text) == want, text
        assert _c_tokenize(text) == want, text


def test_tokenize_fuzz_identical():
    texts = _fuzz(20_000, seed=1234)
    bad = [(t, tokenize(t), _c_tokenize(t)) for t in texts if tokenize(t) != _c_tokenize(t)]
    assert not bad[:5]


def test_keep_mentions_identical():
    texts = _fuzz(5_000, seed=99) + ["@USER_ab12 hi @@x a@b (@Zed) @é_1 rt @user_1:", "@user_a", ""]
    bad = [t for t in texts if tokenize(t, keep_mentions=True) != _fastcount.tokenize(t.lower(), keep_mentions=True)]
    assert not bad[:5]
    assert tokenize("RT @USER_ab12: hi", keep_mentions=True) == ["rt", "<user>", "@user_ab12", "hi"]
    assert "@user_ab12" not in tokenize("RT @USER_ab12: hi")


def test_tokenize_rejects_non_str():
    with pytest.raises(TypeError):
        _fastcount.tokenize(b"bytes")


@pytest.fixture(scope="module")
def geotext_texts():
    from pathlib import Path

    from geoae.documents import read_documents

    cmu = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotext" / "cmu"
    if not cmu.is_dir():
        pytest.skip("../shared absent")
    docs = read_documents([cmu / "user_info.dev.gz", cmu / "user_info.test.gz"])
    return docs["text"].tolist()


@pytest.mark.geotext
def test_tokenize_real_geotext_identical(geotext_texts):
    bad = [i for i, t in enumerate(geotext_texts) if _c_tokenize(t) != tokenize(t)]
    assert bad == []


@pytest.mark.geotext
def test_transform_real_geotext_identical(geotext_texts, monkeypatch):
    f = TfidfFeaturizer(max_features=10000).fit(geotext_texts[:1000])
    fast = f.transform(geotext_texts)
    monkeypatch.setattr(features, "_fastcount", None)
    slow = f.transform(geotext_texts)
    _assert_same_csr(fast, slow)


# --------------------------------------------------------------------------- counting


def _vocab_terms(texts, min_df=1, max_features=None):
    cv = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                         min_df=min_df, max_features=max_features).fit(texts)
    terms = [""] * len(cv.vocabulary_)
    for t, j in cv.vocabulary_.items():
        terms[j] = t
    return terms


def _c_counts(vocab, texts, n_threads=1) -> sp.csr_matrix:
    indptr, indices, counts = vocab.count([t.lower() for t in texts], n_threads)
    return sp.csr_matrix(
        (np.frombuffer(counts, dtype=np.int32), np.frombuffer(indices, dtype=np.int32),
         np.frombuffer(indptr, dtype=np.int64)),
        shape=(len(texts), len(vocab)),
    )


def test_counts_equal_countvectorizer():
    texts = TRICKY + _fuzz(3000, seed=7)
    # fit the vocabulary on part of the data so some tokens are out of vocabulary
    terms = _vocab_terms(texts[:1500])
    rng = random.Random(3)
    rng.shuffle(terms)  # columns in no particular order
    vocab = _fastcount.Vocab(terms)
    assert len(vocab) == len(terms)
    cv = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                         vocabulary={t: j for j, t in enumerate(terms)})
    want = sp.csr_matrix(cv.transform(texts))
    got = _c_counts(vocab, texts)
    for k in range(got.shape[0]):  # columns ascending within each row
        row = got.indices[got.indptr[k]:got.indptr[k + 1]]
        assert (np.diff(row) > 0).all()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


def test_counts_dense_rows_and_empty_vocab():
    """Long documents (sorted through the bitset) and a vocabulary of nothing."""
    words = [f"w{i}" for i in range(500)]
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(n)) for n in (0, 1, 40, 3000, 20000)]
    vocab = _fastcount.Vocab(words[::-1])
    got = _c_counts(vocab, texts).toarray()
    cv = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                         vocabulary={t: j for j, t in enumerate(words[::-1])})
    np.testing.assert_array_equal(got, cv.transform(texts).toarray())
    empty = _c_counts(_fastcount.Vocab([]), texts)
    assert empty.shape == (len(texts), 0) and empty.nnz == 0


def test_count_lower_flag_equals_str_lower():
    texts = TRICKY + [t.upper() for t in TRICKY] + _fuzz(2000, seed=8) + ["ABC DEF :D XD", "ÀB İ ΣΑΣ :P"]
    vocab = _fastcount.Vocab(_vocab_terms(texts))
    assert vocab.count(texts, 1, True) == vocab.count([t.lower() for t in texts], 1)
    assert vocab.count(texts, 3, lower=True) == vocab.count([t.lower() for t in texts], 1)


def test_multithreaded_counts_identical():
    texts = _fuzz(5000, seed=11) + ["soooo :) #nyc " * k for k in range(200)]
    vocab = _fastcount.Vocab(_vocab_terms(texts))
    one = vocab.count([t.lower() for t in texts], 1)
    for n in (2, 3, 8, 100_000):
        assert vocab.count([t.lower() for t in texts], n) == one
    assert vocab.count([], 4) == (bytearray(8), bytearray(), bytearray())


def test_vocab_rejects_bad_input():
    with pytest.raises(ValueError, match="duplicate"):
        _fastcount.Vocab(["a", "b", "a"])
    with pytest.raises(TypeError):
        _fastcount.Vocab(["a", 1])
    vocab = _fastcount.Vocab(["a"])
    with pytest.raises(TypeError):
        vocab.count(["a", None])
    with pytest.raises(TypeError):
        vocab.count(["a"], "2")


# --------------------------------------------------------------------------- TfidfFeaturizer


def _assert_same_csr(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-6)


def _sklearn_transform(f, texts):
    return sp.csr_matrix(f.vectorizer_.transform(features._as_texts(texts)), dtype=np.float32)


@pytest.mark.parametrize("params", [
    {},
    {"sublinear_tf": False},
    {"binary": True},
    {"binary": True, "sublinear_tf": False, "max_features": None},
    {"max_features": 50, "min_df": 1},
    {"mentions": "keep", "min_df": 1},
])
def test_transform_fast_path_matches_sklearn(params):
    texts = TRICKY + _fuzz(2000, seed=5) + [None, float("nan"), ""]
    f = TfidfFeaturizer(**params).fit(texts[:1000])
    fast = f.transform(texts)
    assert f._fast_vocab is not None  # the compiled path ran
    _assert_same_csr(fast, _sklearn_transform(f, texts))
    # through the saved state
    state, arrays = f.get_state()
    g = TfidfFeaturizer.from_state(state, arrays)
    assert g.get_state()[0] == state
    _assert_same_csr(g.transform(texts), _sklearn_transform(g, texts))
    _assert_same_csr(g.transform(texts), fast)


def test_transform_threads_identical():
    texts = _fuzz(3000, seed=9)
    f = TfidfFeaturizer(min_df=1).fit(texts)
    one = f._fast_transform(texts, n_threads=1)
    two = f._fast_transform(texts, n_threads=2)
    assert (one != two).nnz == 0
    np.testing.assert_array_equal(one.indices, two.indices)


def test_ngram_featurizer_uses_sklearn_path():
    texts = _fuzz(300, seed=2)
    f = TfidfFeaturizer(min_df=1, ngram_max=2).fit(texts)
    X = f.transform(texts)
    assert getattr(f, "_fast_vocab", None) is None
    _assert_same_csr(X, _sklearn_transform(f, texts))


def test_fallback_without_extension_warns_once(monkeypatch, caplog):
    texts = _fuzz(200, seed=3)
    f = TfidfFeaturizer(min_df=1).fit(texts)
    fast = f.transform(texts)
    monkeypatch.setattr(features, "_fastcount", None)
    monkeypatch.setattr(features, "_fastcount_warned", False)
    with caplog.at_level(logging.WARNING, logger="geoae.features"):
        slow = f.transform(texts)
        f.transform(texts)
    assert sum("_fastcount" in r.getMessage() for r in caplog.records) == 1
    _assert_same_csr(fast, slow)


def test_cache_is_not_state_and_survives_copies():
    texts = _fuzz(300, seed=4)
    f = TfidfFeaturizer(min_df=1).fit(texts)
    before = f.get_state()
    X = f.transform(texts)
    assert f._fast_vocab is not None
    assert json_equal(f.get_state(), before)
    for g in (copy.deepcopy(f), pickle.loads(pickle.dumps(f))):
        assert getattr(g, "_fast_vocab", None) is None
        _assert_same_csr(g.transform(texts), X)
    # refitting replaces the cached vocabulary
    f.fit(texts[:100])
    _assert_same_csr(f.transform(texts), _sklearn_transform(f, texts))


def json_equal(a, b) -> bool:
    return a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
