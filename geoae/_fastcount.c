/*
 * geoae._fastcount: a compiled twin of geoae.features.tokenize plus a
 * vocabulary counter, for the tf-idf transform.
 *
 * The scanner reproduces, character for character, what the Python tokenizer
 * does *after* ``text.lower()`` (lowercasing stays in Python, str.lower has
 * multi-character special cases):
 *
 *   1. ``_ELONG_RE.sub(r"\1\1\1", text)`` with ``_ELONG_RE = (\D)\1\1\1+``:
 *      every maximal run of one non-decimal code point that is 4+ long is
 *      cut to 3 (left-to-right, non-overlapping matches are exactly the
 *      maximal runs).
 *   2. ``_TOKEN_RE.findall``: at each position try url, mention, emoticon,
 *      word (hashtag | number | word) in this order, each with the same
 *      backtracking order as the regex engine; if none matches advance by one.
 *
 * Character classes are those of CPython's ``_sre`` for str patterns:
 *   \w = Py_UNICODE_ISALNUM(ch) || ch == '_'
 *   \d = Py_UNICODE_ISDECIMAL(ch)
 *   \s = Py_UNICODE_ISSPACE(ch)
 *
 * Objects:
 *   Vocab(terms)                 open-addressing hash table of code point
 *                                sequences -> column (the index in ``terms``)
 *   Vocab.count(texts, n_threads=1, lower=False, keep_mentions=False) -> (indptr, indices, counts)
 *                                bytearrays: int64 indptr (n + 1), int32
 *                                column indices sorted within each row, int32
 *                                counts. Out-of-vocabulary tokens are ignored.
 *                                lower=True lowercases first: ASCII-only str
 *                                in C (A-Z only, as str.lower), others by
 *                                calling str.lower().
 *                                The GIL is released while scanning; with
 *                                n_threads > 1 contiguous blocks of documents
 *                                (balanced by length) run on pthreads.
 *   tokenize(text) -> list[str]  the token list (for tests): equal to
 *                                features.tokenize(t) for text = t.lower().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <pthread.h>
#define FC_HAVE_PTHREAD 1
#else
#define FC_HAVE_PTHREAD 0
#endif

/* ------------------------------------------------------------------ classes */

#define F_W 1 /* \w */
#define F_D 2 /* \d */
#define F_S 4 /* \s */

static unsigned char bmp_flags[65536];

static unsigned char
classify_slow(Py_UCS4 ch)
{
    unsigned char f = 0;
    if (Py_UNICODE_ISALNUM(ch) || ch == '_')
        f |= F_W;
    if (Py_UNICODE_ISDECIMAL(ch))
        f |= F_D;
    if (Py_UNICODE_ISSPACE(ch))
        f |= F_S;
    return f;
}

static inline unsigned char
classify(Py_UCS4 ch)
{
    return ch < 65536 ? bmp_flags[ch] : classify_slow(ch);
}

static void
init_flags(void)
{
    for (Py_UCS4 c = 0; c < 65536; c++)
        bmp_flags[c] = classify_slow(c);
}

/* ------------------------------------------------------------------ buffers */

typedef struct {
    Py_UCS4 *t;       /* normalised text */
    unsigned char *f; /* flags of t[i] */
    Py_ssize_t cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t n)
{
    if (n <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < n)
        cap *= 2;
    Py_UCS4 *t = (Py_UCS4 *)realloc(b->t, (size_t)cap * sizeof(Py_UCS4));
    if (!t)
        return -1;
    b->t = t;
    unsigned char *f = (unsigned char *)realloc(b->f, (size_t)cap);
    if (!f)
        return -1;
    b->f = f;
    b->cap = cap;
    return 0;
}

static void
buf_free(Buf *b)
{
    free(b->t);
    free(b->f);
    b->t = NULL;
    b->f = NULL;
    b->cap = 0;
}

/* Elongation capping of one str's data into b; returns the new length or -1.
 * LOWER(c) maps each code point first: identity, or A-Z -> a-z for ASCII-only
 * strings (exactly what str.lower does to them). */
#define NO_LOWER(c) (c)
#define ASCII_LOWER(c) ((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))
#define DEFINE_NORMALISE(NAME, CT, LOWER)                                           \
    static Py_ssize_t NAME(const CT *s, Py_ssize_t len, Buf *b)                     \
    {                                                                               \
        if (buf_reserve(b, len + 1) < 0)                                            \
            return -1;                                                              \
        Py_UCS4 *t = b->t;                                                          \
        unsigned char *f = b->f;                                                    \
        Py_ssize_t n = 0, i = 0;                                                    \
        while (i < len) {                                                           \
            Py_UCS4 c = LOWER((Py_UCS4)s[i]);                                       \
            unsigned char fl = classify(c);                                         \
            Py_ssize_t j = i + 1;                                                   \
            if (!(fl & F_D)) {                                                      \
                while (j < len && LOWER((Py_UCS4)s[j]) == c)                        \
                    j++;                                                            \
            }                                                                       \
            Py_ssize_t r = j - i;                                                   \
            if (r > 3)                                                              \
                r = 3;                                                              \
            for (Py_ssize_t k = 0; k < r; k++) {                                    \
                t[n] = c;                                                           \
                f[n] = fl;                                                          \
                n++;                                                                \
            }                                                                       \
            i = j;                                                                  \
        }                                                                           \
        return n;                                                                   \
    }

DEFINE_NORMALISE(normalise1, Py_UCS1, NO_LOWER)
DEFINE_NORMALISE(normalise2, Py_UCS2, NO_LOWER)
DEFINE_NORMALISE(normalise4, Py_UCS4, NO_LOWER)
DEFINE_NORMALISE(normalise_ascii_lower, Py_UCS1, ASCII_LOWER)

typedef struct {
    int kind;
    int ascii_lower; /* ASCII-only str still to be lowercased */
    const void *data;
    Py_ssize_t len;
} DocRef;

static Py_ssize_t
normalise(const DocRef *d, Buf *b)
{
    if (d->ascii_lower)
        return normalise_ascii_lower((const Py_UCS1 *)d->data, d->len, b);
    switch (d->kind) {
    case PyUnicode_1BYTE_KIND:
        return normalise1((const Py_UCS1 *)d->data, d->len, b);
    case PyUnicode_2BYTE_KIND:
        return normalise2((const Py_UCS2 *)d->data, d->len, b);
    default:
        return normalise4((const Py_UCS4 *)d->data, d->len, b);
    }
}

/* ------------------------------------------------------------------ scanner */

enum { TOK_WORD = 0, TOK_URL = 1, TOK_USER = 2, TOK_EMO = 3 };

static inline int is_eyes(Py_UCS4 c) { return c == ':' || c == ';' || c == '='; }

/* [\-o\*'^] */
static inline int is_nose(Py_UCS4 c)
{
    return c == '-' || c == 'o' || c == '*' || c == '\'' || c == '^';
}

/* [\)\]\(\[dpo/\\|\}\{@3\*$] */
static inline int is_mouth(Py_UCS4 c)
{
    switch (c) {
    case ')': case ']': case '(': case '[': case 'd': case 'p': case 'o': case '/':
    case '\\': case '|': case '}': case '{': case '@': case '3': case '*': case '$':
        return 1;
    default:
        return 0;
    }
}

/* [\)\]\(\[/\\|] */
static inline int is_rev_mouth(Py_UCS4 c)
{
    switch (c) {
    case ')': case ']': case '(': case '[': case '/': case '\\': case '|':
        return 1;
    default:
        return 0;
    }
}

/* any character that can start an emoticon alternative */
static inline int is_emo_start(Py_UCS4 c)
{
    switch (c) {
    case '<': case '>': case ':': case ';': case '=':
    case ')': case ']': case '(': case '[': case '/': case '\\': case '|':
    case 'x': case '^': case '-': case 'o':
        return 1;
    default:
        return 0;
    }
}

/* (?<![\w<>:;=^]) is violated by this previous character */
static inline int blocks_emo(Py_UCS4 c, unsigned char f)
{
    return (f & F_W) || c == '<' || c == '>' || c == ':' || c == ';' || c == '=' || c == '^';
}

/* (?!\w) at e */
static inline int no_word_at(const unsigned char *f, Py_ssize_t n, Py_ssize_t e)
{
    return e >= n || !(f[e] & F_W);
}

/* A greedy run ch+ (or, with ch == 0, a run of mouth characters) starting at q,
 * backed off one character at a time until the (?!\w) lookahead passes: the end
 * of the first accepted match, or -1 (the run must be non-empty). */
static Py_ssize_t
run_then_no_word(const Py_UCS4 *t, const unsigned char *f, Py_ssize_t n, Py_ssize_t q, Py_UCS4 ch)
{
    Py_ssize_t k = 0;
    while (q + k < n && (ch ? t[q + k] == ch : is_mouth(t[q + k])))
        k++;
    for (; k >= 1; k--)
        if (no_word_at(f, n, q + k))
            return q + k;
    return -1;
}

/* End of the emoticon starting at i (lookbehind already checked), or -1.
 * Each alternative explores its choices in the regex engine's order (greedy
 * optional first, longest repeat first) and accepts the first that passes the
 * (?!\w) lookahead. */
static Py_ssize_t
match_emoticon(const Py_UCS4 *t, const unsigned char *f, Py_ssize_t n, Py_ssize_t i)
{
    Py_UCS4 c = t[i];
    Py_ssize_t q, k, e;

    /* [<>]?[:;=][\-o\*'^]?[mouth]+ */
    for (int lt = 1; lt >= 0; lt--) {
        if (lt && !(c == '<' || c == '>'))
            continue;
        Py_ssize_t p = i + lt;
        if (p >= n || !is_eyes(t[p]))
            continue;
        p++;
        for (int nose = 1; nose >= 0; nose--) {
            if (nose && !(p < n && is_nose(t[p])))
                continue;
            if ((e = run_then_no_word(t, f, n, p + nose, 0)) >= 0)
                return e;
        }
    }
    /* [\)\]\(\[/\\|][\-o\*'^]?[:;=] */
    if (is_rev_mouth(c)) {
        Py_ssize_t p = i + 1;
        for (int nose = 1; nose >= 0; nose--) {
            if (nose && !(p < n && is_nose(t[p])))
                continue;
            q = p + nose;
            if (q < n && is_eyes(t[q]) && no_word_at(f, n, q + 1))
                return q + 1;
        }
    }
    /* </?3+ */
    if (c == '<') {
        for (int sl = 1; sl >= 0; sl--) {
            if (sl && !(i + 1 < n && t[i + 1] == '/'))
                continue;
            if ((e = run_then_no_word(t, f, n, i + 1 + sl, '3')) >= 0)
                return e;
        }
    }
    /* xd+ */
    if (c == 'x' && (e = run_then_no_word(t, f, n, i + 1, 'd')) >= 0)
        return e;
    /* \^[_\-.]?\^ */
    if (c == '^') {
        for (int opt = 1; opt >= 0; opt--) {
            if (opt && !(i + 1 < n && (t[i + 1] == '_' || t[i + 1] == '-' || t[i + 1] == '.')))
                continue;
            q = i + 1 + opt;
            if (q < n && t[q] == '^' && no_word_at(f, n, q + 1))
                return q + 1;
        }
    }
    /* -_+- */
    if (c == '-') {
        q = i + 1;
        k = 0;
        while (q + k < n && t[q + k] == '_')
            k++;
        for (; k >= 1; k--) {
            Py_ssize_t r = q + k;
            if (r < n && t[r] == '-' && no_word_at(f, n, r + 1))
                return r + 1;
        }
    }
    /* o_o */
    if (c == 'o' && i + 2 < n && t[i + 1] == '_' && t[i + 2] == 'o' && no_word_at(f, n, i + 3))
        return i + 3;
    return -1;
}

/* (?:https?://|www\.) prefix length at i, or 0 */
static inline Py_ssize_t
url_prefix(const Py_UCS4 *t, Py_ssize_t n, Py_ssize_t i)
{
    if (t[i] == 'h') {
        if (i + 7 <= n && t[i + 1] == 't' && t[i + 2] == 't' && t[i + 3] == 'p') {
            if (i + 8 <= n && t[i + 4] == 's' && t[i + 5] == ':' && t[i + 6] == '/' && t[i + 7] == '/')
                return 8;
            if (t[i + 4] == ':' && t[i + 5] == '/' && t[i + 6] == '/')
                return 7;
        }
    }
    else if (t[i] == 'w') {
        if (i + 4 <= n && t[i + 1] == 'w' && t[i + 2] == 'w' && t[i + 3] == '.')
            return 4;
    }
    return 0;
}

/* A token sink: counts in-vocabulary tokens (no Python objects) or, for the
 * tokenize() test helper, appends str objects to a list (GIL held). */
struct Worker;
typedef struct {
    int mode; /* 0 count, 1 list */
    struct Worker *w;
    PyObject *list;
    int keep_mentions; /* a mention also yields the account itself ("@user_1a2b") */
} Sink;

static int sink_emit(Sink *s, int type, const Py_UCS4 *t, Py_ssize_t a, Py_ssize_t e);

/* End of the run of \w characters starting at e. */
static inline Py_ssize_t
word_end(const unsigned char *f, Py_ssize_t n, Py_ssize_t e)
{
    while (e < n && (f[e] & F_W))
        e++;
    return e;
}

/* findall over the normalised buffer; returns 0 or -1 (error from the sink) */
static int
scan(const Py_UCS4 *t, const unsigned char *f, Py_ssize_t n, Sink *s)
{
    Py_ssize_t i = 0, e;
    while (i < n) {
        Py_UCS4 c = t[i];
        unsigned char fc = f[i];

        /* 1 url: (?:https?://|www\.)\S+ */
        if (c == 'h' || c == 'w') {
            Py_ssize_t pl = url_prefix(t, n, i);
            if (pl && i + pl < n && !(f[i + pl] & F_S)) {
                e = i + pl + 1;
                while (e < n && !(f[e] & F_S))
                    e++;
                if (sink_emit(s, TOK_URL, t, i, e) < 0)
                    return -1;
                i = e;
                continue;
            }
        }
        /* 2 mention: (?<![\w@])@\w+ */
        if (c == '@' && i + 1 < n && (f[i + 1] & F_W) &&
            (i == 0 || (!(f[i - 1] & F_W) && t[i - 1] != '@'))) {
            if (sink_emit(s, TOK_USER, t, i, e = word_end(f, n, i + 2)) < 0)
                return -1;
            i = e;
            continue;
        }
        /* 3 emoticon: (?<![\w<>:;=^])(...)(?!\w) */
        if (is_emo_start(c) && (i == 0 || !blocks_emo(t[i - 1], f[i - 1]))) {
            e = match_emoticon(t, f, n, i);
            if (e > i) {
                if (sink_emit(s, TOK_EMO, t, i, e) < 0)
                    return -1;
                i = e;
                continue;
            }
        }
        /* 4 word: \#\w+ | \d+(?:[.,]\d+)+ | \w+(?:['’]\w+)* */
        if (c == '#') {
            if (i + 1 < n && (f[i + 1] & F_W)) {
                if (sink_emit(s, TOK_WORD, t, i, e = word_end(f, n, i + 2)) < 0)
                    return -1;
                i = e;
                continue;
            }
        }
        else if (fc & F_W) {
            if (fc & F_D) {
                e = i + 1;
                while (e < n && (f[e] & F_D))
                    e++;
                int reps = 0;
                while (e + 1 < n && (t[e] == '.' || t[e] == ',') && (f[e + 1] & F_D)) {
                    e += 2;
                    while (e < n && (f[e] & F_D))
                        e++;
                    reps++;
                }
                if (reps) {
                    if (sink_emit(s, TOK_WORD, t, i, e) < 0)
                        return -1;
                    i = e;
                    continue;
                }
            }
            e = i + 1;
            while (e < n && (f[e] & F_W))
                e++;
            while (e + 1 < n && (t[e] == '\'' || t[e] == 0x2019) && (f[e + 1] & F_W)) {
                e += 2;
                while (e < n && (f[e] & F_W))
                    e++;
            }
            if (sink_emit(s, TOK_WORD, t, i, e) < 0)
                return -1;
            i = e;
            continue;
        }
        i++;
    }
    return 0;
}

/* ------------------------------------------------------------------ vocab */

/* One hash table slot, everything a probe needs in 16 bytes (4 per cache line). */
typedef struct {
    int32_t term;  /* column, or -1 for an empty slot */
    uint32_t hash; /* high bits of the term's hash */
    uint32_t off;  /* the term's code points are pool[off : off + len] */
    uint32_t len;
} Slot;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_terms;
    Py_UCS4 *pool;     /* all terms' code points */
    Slot *slots;
    size_t mask;
    int32_t col_url, col_user; /* columns of "<url>", "<user>" or -1 */
} VocabObject;

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static inline uint64_t
hash_finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static inline Py_UCS4 emo_case(Py_UCS4 c) { return c == 'd' ? 'D' : (c == 'p' ? 'P' : c); }

/* hash of s[0:len], with d->D, p->P when dp */
static inline uint64_t
hash_seq(const Py_UCS4 *s, Py_ssize_t len, int dp)
{
    uint64_t h = FNV_OFFSET;
    if (dp) {
        for (Py_ssize_t i = 0; i < len; i++) {
            h ^= emo_case(s[i]);
            h *= FNV_PRIME;
        }
    }
    else {
        for (Py_ssize_t i = 0; i < len; i++) {
            h ^= s[i];
            h *= FNV_PRIME;
        }
    }
    return hash_finish(h);
}

static inline int32_t
vocab_lookup(const VocabObject *v, const Py_UCS4 *s, Py_ssize_t len, int dp)
{
    uint64_t h = hash_seq(s, len, dp);
    uint32_t hi = (uint32_t)(h >> 32);
    size_t idx = (size_t)h & v->mask;
    const Slot *sl;
    while ((sl = &v->slots[idx])->term >= 0) {
        if (sl->hash == hi && (Py_ssize_t)sl->len == len) {
            const Py_UCS4 *p = v->pool + sl->off;
            Py_ssize_t k = 0;
            if (dp) {
                while (k < len && p[k] == emo_case(s[k]))
                    k++;
            }
            else {
                while (k < len && p[k] == s[k])
                    k++;
            }
            if (k == len)
                return sl->term;
        }
        idx = (idx + 1) & v->mask;
    }
    return -1;
}

static void
Vocab_dealloc(VocabObject *self)
{
    free(self->pool);
    free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Vocab_init(VocabObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"terms", NULL};
    PyObject *terms_arg, *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Vocab", kwlist, &terms_arg))
        return -1;
    if (self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "Vocab is already initialised");
        return -1;
    }
    seq = PySequence_Fast(terms_arg, "terms must be a sequence of str");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n >= INT32_MAX / 4) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many terms");
        return -1;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, j);
        if (!PyUnicode_Check(o)) {
            PyErr_Format(PyExc_TypeError, "terms[%zd] is %.100s, not str", j, Py_TYPE(o)->tp_name);
            Py_DECREF(seq);
            return -1;
        }
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0) {
            Py_DECREF(seq);
            return -1;
        }
#endif
        total += PyUnicode_GET_LENGTH(o);
    }
    if (total >= (Py_ssize_t)UINT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "terms are too long in total");
        return -1;
    }
    size_t size = 16; /* load factor <= 2/3 */
    while (size * 2 < (size_t)n * 3)
        size *= 2;
    self->pool = (Py_UCS4 *)malloc((size_t)(total ? total : 1) * sizeof(Py_UCS4));
    self->slots = (Slot *)malloc(size * sizeof(Slot));
    if (!self->pool || !self->slots) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t k = 0; k < size; k++)
        self->slots[k].term = -1;
    self->mask = size - 1;
    self->n_terms = 0;
    Py_ssize_t off = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, j);
        Py_ssize_t len = PyUnicode_GET_LENGTH(o);
        if (!PyUnicode_AsUCS4(o, self->pool + off, len, 0) && len) {
            Py_DECREF(seq);
            return -1;
        }
        const Py_UCS4 *s = self->pool + off;
        if (vocab_lookup(self, s, len, 0) >= 0) {
            PyErr_Format(PyExc_ValueError, "duplicate term %R at position %zd", o, j);
            Py_DECREF(seq);
            return -1;
        }
        uint64_t h = hash_seq(s, len, 0);
        size_t idx = (size_t)h & self->mask;
        while (self->slots[idx].term >= 0)
            idx = (idx + 1) & self->mask;
        self->slots[idx].term = (int32_t)j;
        self->slots[idx].hash = (uint32_t)(h >> 32);
        self->slots[idx].off = (uint32_t)off;
        self->slots[idx].len = (uint32_t)len;
        self->n_terms = j + 1;
        off += len;
    }
    Py_DECREF(seq);
    static const Py_UCS4 url[] = {'<', 'u', 'r', 'l', '>'};
    static const Py_UCS4 user[] = {'<', 'u', 's', 'e', 'r', '>'};
    self->col_url = vocab_lookup(self, url, 5, 0);
    self->col_user = vocab_lookup(self, user, 6, 0);
    return 0;
}

static Py_ssize_t
Vocab_len(VocabObject *self)
{
    return self->n_terms;
}

/* ------------------------------------------------------------------ counting */

typedef struct Worker {
    const VocabObject *v;
    const DocRef *docs;
    Py_ssize_t d0, d1;   /* documents [d0, d1) */
    int64_t *row_nnz;    /* shared, one slot per document */
    int32_t *idx, *val;  /* this block's columns and counts */
    Py_ssize_t nnz, cap;
    int32_t *cnt;        /* per column count in the current document */
    uint64_t *seen;      /* bitset of columns touched in the current document */
    int32_t *touched;    /* columns touched in the current document, in order */
    Py_ssize_t ntouched;
    Buf buf;
    int failed;
    int keep_mentions;
} Worker;

static inline void
count_col(Worker *w, int32_t col)
{
    if (col < 0)
        return;
    if (w->cnt[col]++ == 0) {
        w->touched[w->ntouched++] = col;
        w->seen[col >> 6] |= (uint64_t)1 << (col & 63);
    }
}

/* Append a new reference (NULL: the error is already set) to a list, consuming it. */
static int
append_new(PyObject *list, PyObject *o)
{
    if (!o)
        return -1;
    int rc = PyList_Append(list, o);
    Py_DECREF(o);
    return rc;
}

static int
sink_emit(Sink *s, int type, const Py_UCS4 *t, Py_ssize_t a, Py_ssize_t e)
{
    if (s->mode == 0) {
        Worker *w = s->w;
        const VocabObject *v = w->v;
        switch (type) {
        case TOK_WORD:
            count_col(w, vocab_lookup(v, t + a, e - a, 0));
            if (t[a] == '#')
                count_col(w, vocab_lookup(v, t + a + 1, e - a - 1, 0));
            break;
        case TOK_URL:
            count_col(w, v->col_url);
            break;
        case TOK_USER:
            count_col(w, v->col_user);
            if (s->keep_mentions)
                count_col(w, vocab_lookup(v, t + a, e - a, 0));
            break;
        default:
            count_col(w, vocab_lookup(v, t + a, e - a, 1));
            break;
        }
        return 0;
    }
    /* list mode (GIL held) */
    PyObject *o;
    switch (type) {
    case TOK_WORD:
        if (append_new(s->list, PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, t + a, e - a)) < 0)
            return -1;
        if (t[a] == '#' &&
            append_new(s->list, PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, t + a + 1, e - a - 1)) < 0)
            return -1;
        return 0;
    case TOK_URL:
        o = PyUnicode_FromString("<url>");
        break;
    case TOK_USER:
        if (s->keep_mentions && append_new(s->list, PyUnicode_FromString("<user>")) < 0)
            return -1;
        o = s->keep_mentions ? PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, t + a, e - a)
                             : PyUnicode_FromString("<user>");
        break;
    default: {
        Py_UCS4 *tmp = (Py_UCS4 *)PyMem_Malloc((size_t)(e - a) * sizeof(Py_UCS4));
        if (!tmp) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < e - a; k++)
            tmp[k] = emo_case(t[a + k]);
        o = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, tmp, e - a);
        PyMem_Free(tmp);
        break;
    }
    }
    return append_new(s->list, o);
}

static void
sort_small(int32_t *a, Py_ssize_t n)
{
    for (Py_ssize_t i = 1; i < n; i++) {
        int32_t x = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static int
cmp_i32(const void *x, const void *y)
{
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* Move the current document's counts to the output (columns ascending) and reset. */
static int
flush_doc(Worker *w, Py_ssize_t d)
{
    Py_ssize_t nt = w->ntouched;
    w->row_nnz[d] = nt;
    if (w->nnz + nt > w->cap) {
        Py_ssize_t cap = w->cap ? w->cap : 1024;
        while (cap < w->nnz + nt)
            cap *= 2;
        int32_t *idx = (int32_t *)realloc(w->idx, (size_t)cap * sizeof(int32_t));
        if (!idx)
            return -1;
        w->idx = idx;
        int32_t *val = (int32_t *)realloc(w->val, (size_t)cap * sizeof(int32_t));
        if (!val)
            return -1;
        w->val = val;
        w->cap = cap;
    }
    int32_t *oi = w->idx + w->nnz, *ov = w->val + w->nnz;
    Py_ssize_t nwords = (w->v->n_terms + 63) / 64;
    if (nt > 32 && nwords <= nt * 4) {
        /* dense enough: walk the bitset, which is already in column order */
        Py_ssize_t k = 0;
        for (Py_ssize_t wi = 0; wi < nwords && k < nt; wi++) {
            uint64_t bits = w->seen[wi];
            if (!bits)
                continue;
            w->seen[wi] = 0;
            while (bits) {
                int32_t col = (int32_t)(wi * 64 + __builtin_ctzll(bits));
                bits &= bits - 1;
                oi[k] = col;
                ov[k] = w->cnt[col];
                w->cnt[col] = 0;
                k++;
            }
        }
    }
    else {
        if (nt <= 32)
            sort_small(w->touched, nt);
        else
            qsort(w->touched, (size_t)nt, sizeof(int32_t), cmp_i32);
        for (Py_ssize_t k = 0; k < nt; k++) {
            int32_t col = w->touched[k];
            oi[k] = col;
            ov[k] = w->cnt[col];
            w->cnt[col] = 0;
            w->seen[col >> 6] = 0;
        }
    }
    w->nnz += nt;
    w->ntouched = 0;
    return 0;
}

static void *
worker_run(void *arg)
{
    Worker *w = (Worker *)arg;
    Py_ssize_t V = w->v->n_terms;
    w->cnt = (int32_t *)calloc((size_t)(V ? V : 1), sizeof(int32_t));
    w->touched = (int32_t *)malloc((size_t)(V ? V : 1) * sizeof(int32_t));
    w->seen = (uint64_t *)calloc((size_t)((V + 63) / 64 + 1), sizeof(uint64_t));
    if (!w->cnt || !w->touched || !w->seen) {
        w->failed = 1;
        return NULL;
    }
    Sink s = {0, w, NULL, w->keep_mentions};
    for (Py_ssize_t d = w->d0; d < w->d1; d++) {
        Py_ssize_t n = normalise(&w->docs[d], &w->buf);
        if (n < 0 || scan(w->buf.t, w->buf.f, n, &s) < 0 || flush_doc(w, d) < 0) {
            w->failed = 1;
            return NULL;
        }
    }
    return NULL;
}

static void
worker_free(Worker *w)
{
    free(w->idx);
    free(w->val);
    free(w->cnt);
    free(w->seen);
    free(w->touched);
    buf_free(&w->buf);
}

static PyObject *
Vocab_count(VocabObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"texts", "n_threads", "lower", "keep_mentions", NULL};
    PyObject *texts_arg, *seq = NULL, *result = NULL, *lowered = NULL;
    int lower = 0, keep_mentions = 0;
    PyObject *b_indptr = NULL, *b_indices = NULL, *b_counts = NULL;
    int n_threads = 1;
    DocRef *docs = NULL;
    int64_t *row_nnz = NULL;
    Worker *ws = NULL;
    int nw = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|ipp:count", kwlist, &texts_arg, &n_threads, &lower,
                                     &keep_mentions))
        return NULL;
    if (!self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "Vocab is not initialised");
        return NULL;
    }
    /* a tuple: holds a reference to every str while the GIL is released */
    seq = PySequence_Tuple(texts_arg);
    if (!seq)
        return NULL;
    Py_ssize_t nd = PyTuple_GET_SIZE(seq);
    docs = (DocRef *)PyMem_Malloc((size_t)(nd ? nd : 1) * sizeof(DocRef));
    row_nnz = (int64_t *)PyMem_Malloc((size_t)(nd ? nd : 1) * sizeof(int64_t));
    if (!docs || !row_nnz) {
        PyErr_NoMemory();
        goto done;
    }
    if (lower && !(lowered = PyList_New(0)))
        goto done;
    Py_ssize_t total = 0;
    for (Py_ssize_t d = 0; d < nd; d++) {
        PyObject *o = PyTuple_GET_ITEM(seq, d);
        if (!PyUnicode_Check(o)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] is %.100s, not str", d, Py_TYPE(o)->tp_name);
            goto done;
        }
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0)
            goto done;
#endif
        docs[d].ascii_lower = 0;
        if (lower) {
            if (PyUnicode_IS_ASCII(o)) {
                docs[d].ascii_lower = 1;
            }
            else {
                /* str.lower() (multi-character special cases); the list keeps it alive */
                PyObject *lo = PyObject_CallMethod(o, "lower", NULL);
                if (!lo)
                    goto done;
                int rc = PyList_Append(lowered, lo);
                Py_DECREF(lo);
                if (rc < 0)
                    goto done;
                if (!PyUnicode_Check(lo)) {
                    PyErr_SetString(PyExc_TypeError, "str.lower() did not return a str");
                    goto done;
                }
#if PY_VERSION_HEX < 0x030C0000
                if (PyUnicode_READY(lo) < 0)
                    goto done;
#endif
                o = lo;
            }
        }
        docs[d].kind = PyUnicode_KIND(o);
        docs[d].data = PyUnicode_DATA(o);
        docs[d].len = PyUnicode_GET_LENGTH(o);
        total += docs[d].len;
    }
    if (n_threads < 1)
        n_threads = 1;
    if (!FC_HAVE_PTHREAD)
        n_threads = 1;
    if ((Py_ssize_t)n_threads > nd)
        n_threads = nd > 0 ? (int)nd : 1;
    nw = n_threads;
    ws = (Worker *)PyMem_Calloc((size_t)nw, sizeof(Worker));
    if (!ws) {
        PyErr_NoMemory();
        goto done;
    }
    /* contiguous blocks of documents with about total / nw characters each */
    {
        Py_ssize_t d = 0, acc = 0;
        for (int k = 0; k < nw; k++) {
            ws[k].v = self;
            ws[k].keep_mentions = keep_mentions;
            ws[k].docs = docs;
            ws[k].row_nnz = row_nnz;
            ws[k].d0 = d;
            if (k == nw - 1) {
                d = nd;
            }
            else {
                double goal = (double)(total + nd) * (k + 1) / nw;
                while (d < nd && (double)acc < goal) {
                    acc += docs[d].len + 1;
                    d++;
                }
            }
            ws[k].d1 = d;
        }
    }
    Py_BEGIN_ALLOW_THREADS
#if FC_HAVE_PTHREAD
    if (nw > 1) {
        pthread_t *tids = (pthread_t *)malloc((size_t)nw * sizeof(pthread_t));
        int *started = (int *)calloc((size_t)nw, sizeof(int));
        if (!tids || !started) {
            for (int k = 0; k < nw; k++)
                ws[k].failed = 1;
        }
        else {
            for (int k = 1; k < nw; k++)
                started[k] = pthread_create(&tids[k], NULL, worker_run, &ws[k]) == 0;
            worker_run(&ws[0]);
            for (int k = 1; k < nw; k++) {
                if (started[k])
                    pthread_join(tids[k], NULL);
                else
                    worker_run(&ws[k]); /* could not start a thread: do it here */
            }
        }
        free(tids);
        free(started);
    }
    else
#endif
        worker_run(&ws[0]);
    Py_END_ALLOW_THREADS

    Py_ssize_t nnz = 0;
    for (int k = 0; k < nw; k++) {
        if (ws[k].failed) {
            PyErr_NoMemory();
            goto done;
        }
        nnz += ws[k].nnz;
    }
    b_indptr = PyByteArray_FromStringAndSize(NULL, (nd + 1) * (Py_ssize_t)sizeof(int64_t));
    b_indices = PyByteArray_FromStringAndSize(NULL, nnz * (Py_ssize_t)sizeof(int32_t));
    b_counts = PyByteArray_FromStringAndSize(NULL, nnz * (Py_ssize_t)sizeof(int32_t));
    if (!b_indptr || !b_indices || !b_counts)
        goto done;
    {
        int64_t *ip = (int64_t *)PyByteArray_AS_STRING(b_indptr);
        char *pi = PyByteArray_AS_STRING(b_indices);
        char *pc = PyByteArray_AS_STRING(b_counts);
        ip[0] = 0;
        for (Py_ssize_t d = 0; d < nd; d++)
            ip[d + 1] = ip[d] + row_nnz[d];
        Py_ssize_t at = 0;
        for (int k = 0; k < nw; k++) {
            if (ws[k].nnz) {
                memcpy(pi + at * sizeof(int32_t), ws[k].idx, (size_t)ws[k].nnz * sizeof(int32_t));
                memcpy(pc + at * sizeof(int32_t), ws[k].val, (size_t)ws[k].nnz * sizeof(int32_t));
            }
            at += ws[k].nnz;
        }
    }
    result = PyTuple_Pack(3, b_indptr, b_indices, b_counts);

done:
    Py_XDECREF(b_indptr);
    Py_XDECREF(b_indices);
    Py_XDECREF(b_counts);
    if (ws) {
        for (int k = 0; k < nw; k++)
            worker_free(&ws[k]);
        PyMem_Free(ws);
    }
    PyMem_Free(docs);
    PyMem_Free(row_nnz);
    Py_XDECREF(lowered);
    Py_XDECREF(seq);
    return result;
}

static PyMethodDef Vocab_methods[] = {
    {"count", (PyCFunction)(void (*)(void))Vocab_count, METH_VARARGS | METH_KEYWORDS,
     "count(texts, n_threads=1, lower=False, keep_mentions=False) -> (indptr, indices, counts)\n\n"
     "Token counts of lowercased texts (lower=True: lowercase them first, exactly as\n"
     "str.lower) over this vocabulary, as CSR parts in\n"
     "bytearrays: int64 indptr (len(texts) + 1), int32 column indices (ascending within\n"
     "each row) and int32 counts. Out-of-vocabulary tokens are ignored. The GIL is\n"
     "released while counting; n_threads > 1 splits the documents into contiguous blocks."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Vocab_as_sequence = {
    .sq_length = (lenfunc)Vocab_len,
};

static PyTypeObject VocabType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geoae._fastcount.Vocab",
    .tp_basicsize = sizeof(VocabObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)Vocab_dealloc,
    .tp_as_sequence = &Vocab_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Vocab(terms): fixed vocabulary, term terms[j] -> column j, for count().",
    .tp_methods = Vocab_methods,
    .tp_init = (initproc)Vocab_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ module functions */

static PyObject *
fc_tokenize(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"text", "keep_mentions", NULL};
    PyObject *arg;
    int keep_mentions = 0;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:tokenize", kwlist, &arg, &keep_mentions))
        return NULL;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "tokenize() expects str, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(arg) < 0)
        return NULL;
#endif
    DocRef d = {PyUnicode_KIND(arg), 0, PyUnicode_DATA(arg), PyUnicode_GET_LENGTH(arg)};
    Buf b = {NULL, NULL, 0};
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    Py_ssize_t n = normalise(&d, &b);
    if (n < 0) {
        buf_free(&b);
        Py_DECREF(list);
        return PyErr_NoMemory();
    }
    Sink s = {1, NULL, list, keep_mentions};
    if (scan(b.t, b.f, n, &s) < 0) {
        buf_free(&b);
        Py_DECREF(list);
        return NULL;
    }
    buf_free(&b);
    return list;
}

static PyObject *
fc_char_flags(PyObject *module, PyObject *noargs)
{
    /* one byte per code point 0..0x10FFFF: bit 1 \w, bit 2 \d, bit 4 \s (for tests) */
    PyObject *b = PyBytes_FromStringAndSize(NULL, 0x110000);
    if (!b)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(b);
    for (Py_UCS4 c = 0; c < 0x110000; c++)
        p[c] = classify(c);
    return b;
}

static PyMethodDef module_methods[] = {
    {"tokenize", (PyCFunction)(void (*)(void))fc_tokenize, METH_VARARGS | METH_KEYWORDS,
     "tokenize(text, keep_mentions=False) -> list[str]\n\n"
     "Tokens of an already lowercased text; equals geoae.features.tokenize(t, keep_mentions)\n"
     "for text = t.lower()."},
    {"_char_flags", (PyCFunction)fc_char_flags, METH_NOARGS,
     "bytes of length 0x110000: per code point, 1 = \\w, 2 = \\d, 4 = \\s (test helper)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcount_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "geoae._fastcount",
    .m_doc = "Compiled tokenizer + vocabulary counter for geoae.features (tf-idf transform).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastcount(void)
{
    init_flags();
    if (PyType_Ready(&VocabType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastcount_module);
    if (!m)
        return NULL;
    Py_INCREF(&VocabType);
    if (PyModule_AddObject(m, "Vocab", (PyObject *)&VocabType) < 0) {
        Py_DECREF(&VocabType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "HAVE_THREADS", FC_HAVE_PTHREAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
