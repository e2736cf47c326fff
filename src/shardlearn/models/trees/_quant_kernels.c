/* Quantized-gradient boosting kernels: stochastic rounding and packed integer histograms.
 *
 * quantize(g, h, grows, key, inv_g, inv_h, bits, shift_g, shift_h, packed, channels[, start])
 *     Per row r: 64 random bits z = SplitMix64(grows[r] * GOLDEN + key) (the bits of
 *     shardlearn.rng.row_bits for the stream whose key is `key`), u1 = (z >> 32) * 2^-32,
 *     u2 = (z & 0xffffffff) * 2^-32, then
 *         gi = clamp(floor(g[r] * inv_g + u1), -2^(bits-1), 2^(bits-1))
 *         hi = clamp(floor(h[r] * inv_h + u2), 0, 2^bits)      (1 when h is empty)
 *     and either packed[r] = gi << shift_g | hi << shift_h | 1 (shift_g >= 0; no hessian
 *     field when h is empty) or channels[0, r] = gi, channels[1, r] = hi as float64.
 *     With start >= 0, grows is empty and the global rows are start, start + 1, ... (a rank's
 *     contiguous block: 8 bytes per row less to read). The reference is quantize.quantize_numpy: the same two roundings (product, then sum).
 *     This function is compiled without floating-point contraction (see QUANT_NO_CONTRACT),
 *     so no fused multiply-add changes a rounding; baseline x86-64 has no FMA anyway.
 *
 * histogram_packed(codes_rm, n, d, vals, rows, all_rows, feats, S, out)
 *     out[f * S + codes_rm[r * d + f]] += vals[r] for every row r of `rows` (int32: a range of
 *     the tree's row permutation; all n rows when all_rows) and feature f of `feats`; out
 *     (d * S) int64 is zeroed first. One int64 add per row and feature where the float
 *     histogram does three float64 adds (gradient, hessian, count), and a third of the
 *     accumulator bytes (8 per bin instead of 24), so one feature's bins stay in fewer cache
 *     lines. The sums are exact integers: the order of the rows does not matter (quantize.py
 *     explains the packing and why fields cannot carry into each other).
 *
 * gradients(F, K, k, y, w, binary, g, h, y_u8=0, f32=0) -> (max |g|, max h)
 *     One pass over the rows: binary log-loss (p = 1 / (1 + exp(-F[r, k])), g = p - y,
 *     h = p (1 - p): scipy.special.expit's formula with the same libm exp, so the same bits
 *     as gbdt.py's NumPy forms) or L2 (g = F[r, k] - y, h = 1, not written), both times
 *     w[r] when w is not empty (L2: h = w), and the local maxima the quantization scales
 *     need, so no second pass finds them. y: float64 labels, or with y_u8 = 1 (binary only)
 *     uint8 0/1 labels, a byte a row instead of eight (converted exactly: the same bits).
 *     f32 = 1: g and h are float32, each computed as a double and rounded once (the values
 *     the NumPy forms give when stored into float32 channels; the maxima are the doubles').
 *
 * leaf_fixed_sums(g, h, rows, spans, eg, eh, out)
 *     out[j] = (sum of rint(g[r] / 2^eg), sum of rint(h[r] / 2^eh)) as int64 over the rows
 *     r = rows[start : start + length] of span j = (start, length) (rows: the tree's int32 row
 *     permutation; spans int64); the row count instead of the second sum when h is empty.
 *     The exact fixed-point leaf sums of quantize.py's exact_sums (the same integers:
 *     x * 2^-e is the correctly rounded ldexp, rint rounds half to even), for every leaf of
 *     a tree in one call over the tree's row permutation.
 *
 * best_splits_packed(hist, tot, n_bins, nb_per_node, mask, k, d, S, bits, L, const_hess, sg, sh,
 *                    lam, min_hess, tie_rtol, min_child, best_gain, left, feat, bin, miss_left)
 *     The best split of each of k nodes straight from their packed integer histograms
 *     (hist (k, d, S) int64, tot (k, 3) int64 the nodes' integer totals (gradient, hessian,
 *     count; the hessian is the count when const_hess); the packing of
 *     quantize.Packing(bits, L, const_hess)): per feature ONE cumulative int64 sum over the
 *     packed bins (the packing is linear, so the running packed sum decodes to the exact
 *     cumulative gradient, hessian and count), the fields decoded per candidate, and only
 *     the gain in float: with l = GL * sg, hl = HL * sh (the count when const_hess),
 *     r = (G - GL) * sg, hr = (H - HL) * sh,
 *         gain = l^2 / (hl + lam) + r^2 / (hr + lam)
 *     under split.py's constraints (min_child rows and min_hess on each side) and its
 *     candidates and order: (feature, bin, missing right before missing left), codes <= b
 *     left, the missing slot S-1 left or right where the node has missing values in the
 *     feature, b = n_bins - 1 only as "all values left, missing right"; the winner is the
 *     first candidate within tie_rtol of the best. A bin with no rows (b > 0) is skipped: its
 *     candidates are those of bin b - 1, which come first. Outputs per node: best_gain, the
 *     winner's gain minus the node's own score G^2 / (H + lam) (0 where H + lam <= 0; as
 *     split.node_score on the real totals G * sg, H * sh) (-inf: no candidate), left (3) the winner's integer left sums (gradient, hessian, count) as
 *     float64 (exact), feat, bin, miss_left (split.py's rule where the node has no missing
 *     value in the feature: the side with more rows). No float histogram is formed.
 *
 * Argument checks: _kernel_args.h. Row indices are checked in the loop (one compare per
 * row); codes against S when S < 256 (one compare per code; with S >= 256 no uint8 code
 * can be out of range).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "../../_kernel_args.h"

#if defined(__GNUC__) && !defined(__clang__)
#define QUANT_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define QUANT_NO_CONTRACT
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH_T(p) __builtin_prefetch(p)
#else
#define PREFETCH_T(p) ((void)0)
#endif

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define M1 0xBF58476D1CE4E5B9ULL
#define M2 0x94D049BB133111EBULL

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * M1;
    z = (z ^ (z >> 27)) * M2;
    return z ^ (z >> 31);
}

QUANT_NO_CONTRACT
static void quantize_loop(const double *g, const double *h, const int64_t *grows, int64_t start, Py_ssize_t n,
                          uint64_t key,
                          double inv_g, double inv_h, int bits, Py_ssize_t shift_g, Py_ssize_t shift_h,
                          int64_t *packed, double *ch)
{
    const double gtop = (double)(1LL << (bits - 1)), htop = (double)(1LL << bits);
    const double unit = 1.0 / 4294967296.0;  /* 2^-32 */
    for (Py_ssize_t r = 0; r < n; r++) {
        uint64_t z = mix64((uint64_t)(grows ? grows[r] : start + r) * GOLDEN + key);
        double u1 = (double)(z >> 32) * unit;
        volatile double prod = g[r] * inv_g;   /* its own rounding, as NumPy's g * inv_g */
        double gi = floor(prod + u1);
        gi = gi < -gtop ? -gtop : (gi > gtop ? gtop : gi);
        double hi = 1.0;
        if (h != NULL) {
            double u2 = (double)(z & 0xFFFFFFFFULL) * unit;
            volatile double hp = h[r] * inv_h;
            hi = floor(hp + u2);
            hi = hi < 0.0 ? 0.0 : (hi > htop ? htop : hi);
        }
        if (packed != NULL) {
            uint64_t v = (uint64_t)(int64_t)gi << shift_g;
            if (h != NULL)
                v += (uint64_t)(int64_t)hi << shift_h;
            packed[r] = (int64_t)(v + 1);
        } else {
            ch[r] = gi;
            ch[n + r] = hi;
        }
    }
}

static PyObject *quantize(PyObject *self, PyObject *args)
{
    PyObject *og, *oh, *orows, *opacked, *och;
    unsigned long long key;
    double inv_g, inv_h;
    int bits;
    Py_ssize_t shift_g, shift_h;
    long long start = -1;
    if (!PyArg_ParseTuple(args, "OOOKddinnOO|L", &og, &oh, &orows, &key, &inv_g, &inv_h, &bits, &shift_g, &shift_h,
                          &opacked, &och, &start))
        return NULL;
    KA_CALL(K, "quantize");
    Py_buffer *g, *h, *rows, *packed, *ch;
    if (!(g = ka_buffer(&K, "g", og, KA_F64, KA_IN)) || !(h = ka_buffer(&K, "h", oh, KA_F64, KA_IN))
        || !(rows = ka_buffer(&K, "grows", orows, KA_I64, KA_IN))
        || !(packed = ka_buffer(&K, "packed", opacked, KA_I64, KA_OUT))
        || !(ch = ka_buffer(&K, "channels", och, KA_F64, KA_OUT)))
        goto fail;
    Py_ssize_t n = ka_items(g);
    int with_h = ka_items(h) > 0;
    int to_packed = shift_g >= 0;
    if (start >= 0 && (ka_items(rows) != 0 || start > ((long long)1 << 62))) {
        PyErr_Format(PyExc_ValueError, "quantize: with start (%lld) grows must be empty and start at most 2^62",
                     start);
        goto fail;
    }
    if (ka_between(&K, "bits", bits, 2, 16) || (start < 0 && ka_need(&K, rows, n, "len(g)"))
        || (with_h && ka_need(&K, h, n, "len(g)")))
        goto fail;
    if (to_packed) {
        /* the fields of one row: gradient at shift_g (bits - 1 magnitude bits and a sign),
           hessian (bits + 1 bits) at shift_h below it */
        if (ka_between(&K, "shift_g", shift_g, 1, 62 - bits)
            || (with_h && ka_between(&K, "shift_h", shift_h, 1, shift_g - bits - 1))
            || ka_need(&K, packed, n, "len(g)"))
            goto fail;
    } else if (ka_need(&K, ch, ka_mul(2, n), "2*len(g)")) {
        goto fail;
    }
    if (ka_disjoint(&K))
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    quantize_loop((const double *)g->buf, with_h ? (const double *)h->buf : NULL,
                  start >= 0 ? NULL : (const int64_t *)rows->buf, (int64_t)start, n,
                  (uint64_t)key, inv_g, inv_h, bits, shift_g, shift_h, to_packed ? (int64_t *)packed->buf : NULL,
                  to_packed ? NULL : (double *)ch->buf);
    Py_END_ALLOW_THREADS
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

/* ------------------------------------------------------------------ gradients */

/* Label r: float64 labels, or uint8 ones (binary 0/1 labels in one byte a row instead of
 * eight; converted exactly, so the same gradients). */
#define LABEL(r) (yb != NULL ? (double)yb[r] : y[r])

/* g and h are float64 (gradients_loop_f64) or float32 (gradients_loop_f32: each value
 * rounded once, from the same double); the maxima are those of the doubles. One function per
 * output type, so neither loop tests the type per row. */
#define GRADIENTS_LOOP(NAME, T)                                                                               \
    QUANT_NO_CONTRACT                                                                                         \
    static void NAME(const double *F, Py_ssize_t K, Py_ssize_t k, const double *y, const uint8_t *yb,         \
                     const double *w, Py_ssize_t n, int binary, T *g, T *h, double *gmax, double *hmax)      \
    {                                                                                                         \
        double mg = 0.0, mh = 0.0;                                                                            \
        for (Py_ssize_t r = 0; r < n; r++) {                                                                  \
            double f = F[r * K + k], gr, hr;                                                                  \
            if (binary) {                                                                                     \
                /* scipy.special.expit's own formula, with the same libm exp: the same bits */               \
                volatile double p = 1.0 / (1.0 + exp(-f));                                                    \
                gr = p - LABEL(r);                                                                            \
                hr = p * (1.0 - p);                                                                           \
            } else {                                                                                          \
                gr = f - LABEL(r);                                                                            \
                hr = 1.0;                                                                                     \
            }                                                                                                 \
            if (w != NULL) {                                                                                  \
                gr = gr * w[r];                                                                               \
                hr = binary ? hr * w[r] : w[r];                                                               \
            }                                                                                                 \
            g[r] = (T)gr;                                                                                     \
            double a = fabs(gr);                                                                              \
            mg = a > mg ? a : mg;                                                                             \
            if (h != NULL) {                                                                                  \
                h[r] = (T)hr;                                                                                 \
                mh = hr > mh ? hr : mh;                                                                       \
            }                                                                                                 \
        }                                                                                                     \
        *gmax = mg;                                                                                           \
        *hmax = mh;                                                                                           \
    }
GRADIENTS_LOOP(gradients_loop_f64, double)
GRADIENTS_LOOP(gradients_loop_f32, float)
#undef GRADIENTS_LOOP

static PyObject *gradients(PyObject *self, PyObject *args)
{
    PyObject *oF, *oy, *ow, *og, *oh;
    Py_ssize_t K, k;
    int binary, y_u8 = 0, f32 = 0;
    if (!PyArg_ParseTuple(args, "OnnOOiOO|ii", &oF, &K, &k, &oy, &ow, &binary, &og, &oh, &y_u8, &f32))
        return NULL;
    KA_CALL(C, "gradients");
    Py_buffer *F, *y, *w, *g, *h;
    if (!(F = ka_buffer(&C, "F", oF, KA_F64, KA_IN))
        || !(y = ka_buffer(&C, "y", oy, y_u8 ? KA_U8 : KA_F64, KA_IN))
        || !(w = ka_buffer(&C, "w", ow, KA_F64, KA_IN))
        || !(g = ka_buffer(&C, "g", og, f32 ? KA_F32 : KA_F64, KA_OUT))
        || !(h = ka_buffer(&C, "h", oh, f32 ? KA_F32 : KA_F64, KA_OUT)))
        goto fail;
    Py_ssize_t n = ka_items(y);
    int with_w = ka_items(w) > 0, with_h = ka_items(h) > 0;
    if (ka_at_least(&C, "K", K, 1) || ka_between(&C, "k", k, 0, K - 1) || ka_between(&C, "binary", binary, 0, 1)
        || ka_between(&C, "y_u8", y_u8, 0, binary)        /* uint8 labels: binary 0/1 ones only */
        || ka_need(&C, F, ka_mul(n, K), "len(y)*K") || ka_need(&C, g, n, "len(y)")
        || (with_w && ka_need(&C, w, n, "len(y)")) || (with_h && ka_need(&C, h, n, "len(y)")))
        goto fail;
    if ((binary || with_w) && !with_h && n > 0) {  /* (no rows: nothing to write) */
        PyErr_SetString(PyExc_ValueError, "gradients: h: empty, but the hessians are not all 1 (binary or weighted)");
        goto fail;
    }
    if (ka_disjoint(&C))
        goto fail;
    double gmax = 0.0, hmax = 0.0;
    Py_BEGIN_ALLOW_THREADS
    const double *Fb = (const double *)F->buf, *wb = with_w ? (const double *)w->buf : NULL;
    const double *yd = y_u8 ? NULL : (const double *)y->buf;
    const uint8_t *yu = y_u8 ? (const uint8_t *)y->buf : NULL;
    if (f32)
        gradients_loop_f32(Fb, K, k, yd, yu, wb, n, binary, (float *)g->buf, with_h ? (float *)h->buf : NULL,
                           &gmax, &hmax);
    else
        gradients_loop_f64(Fb, K, k, yd, yu, wb, n, binary, (double *)g->buf, with_h ? (double *)h->buf : NULL,
                           &gmax, &hmax);
    Py_END_ALLOW_THREADS
    ka_release(&C);
    return Py_BuildValue("dd", gmax, hmax);
fail:
    ka_release(&C);
    return NULL;
}

/* ------------------------------------------------------------- exact leaf sums */

/* round half to even, as rint in the default rounding mode: below 2^52, adding 2^52 leaves
 * no fraction bits, so the sum rounds to the nearest integer, ties to even; at or above
 * 2^52 every double is an integer */
static inline double rint_even(double x)
{
    const double t = 4503599627370496.0;   /* 2^52 */
    double a = fabs(x);
    if (a < t)
        a = (a + t) - t;
    return copysign(a, x);
}

/* ldexp(x, k): a product with the power of two where that is a normal double (both are the
 * correctly rounded x * 2^k), else libm's ldexp */
static inline double scale_pow2(double x, int k)
{
    if (k >= -1022 && k <= 1023) {
        union { uint64_t u; double d; } p = {(uint64_t)(k + 1023) << 52};
        return x * p.d;
    }
    return ldexp(x, k);
}

/* rint(x * 2^k) as int64, |x * 2^k| < 2^63: on x86-64 ONE cvtsd2si, which rounds by the
 * current rounding mode (nearest, ties to even, as rint and rint_even) where the scaled value
 * is not already an integer; elsewhere rint_even and a conversion of the integer value */
static inline int64_t fixed_i64(double x, int k)
{
#if defined(__SSE2__) && defined(__x86_64__)
    return _mm_cvtsd_si64(_mm_set_sd(scale_pow2(x, k)));
#else
    return (int64_t)rint_even(scale_pow2(x, k));
#endif
}

static void leaf_fixed_loop(const double *g, const double *h, const int32_t *rw, const int64_t *spans,
                            Py_ssize_t m, int eg, int eh, int64_t *out)
{
    for (Py_ssize_t j = 0; j < m; j++) {
        const int32_t *r = rw + spans[2 * j];
        const int64_t len = spans[2 * j + 1];
        int64_t sg = 0, sh = 0;
        for (int64_t i = 0; i < len; i++) {
            int64_t ra = r[i + 16 < len ? i + 16 : i];
            PREFETCH_T(g + ra);
            sg += fixed_i64(g[r[i]], -eg);
            if (h != NULL) {
                PREFETCH_T(h + ra);
                sh += fixed_i64(h[r[i]], -eh);
            }
        }
        out[2 * j] = sg;
        out[2 * j + 1] = h != NULL ? sh : len;
    }
}

static PyObject *leaf_fixed_sums(PyObject *self, PyObject *args)
{
    PyObject *og, *oh, *orows, *ospans, *oout;
    int eg, eh;
    if (!PyArg_ParseTuple(args, "OOOOiiO", &og, &oh, &orows, &ospans, &eg, &eh, &oout))
        return NULL;
    KA_CALL(K, "leaf_fixed_sums");
    Py_buffer *g, *h, *rows, *spans, *out;
    if (!(g = ka_buffer(&K, "g", og, KA_F64, KA_IN)) || !(h = ka_buffer(&K, "h", oh, KA_F64, KA_IN))
        || !(rows = ka_buffer(&K, "rows", orows, KA_I32, KA_IN))
        || !(spans = ka_buffer(&K, "spans", ospans, KA_I64, KA_IN))
        || !(out = ka_buffer(&K, "out", oout, KA_I64, KA_OUT)))
        goto fail;
    Py_ssize_t n = ka_items(g), nr = ka_items(rows), m = ka_items(spans) / 2;
    int with_h = ka_items(h) > 0;
    if (ka_items(spans) % 2) {
        PyErr_Format(PyExc_ValueError, "leaf_fixed_sums: spans: (start, length) pairs expected, got %zd items",
                     ka_items(spans));
        goto fail;
    }
    if ((with_h && ka_need(&K, h, n, "len(g)")) || ka_need(&K, out, ka_mul(2, m), "len(spans)")
        || ka_between(&K, "eg", eg, -1100, 1100) || ka_between(&K, "eh", eh, -1100, 1100)
        || ka_check_range_i32(&K, "rows", (const int32_t *)rows->buf, nr, 0, n) || ka_disjoint(&K))
        goto fail;
    const int64_t *sp = (const int64_t *)spans->buf;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (sp[2 * j] < 0 || sp[2 * j + 1] < 0 || sp[2 * j] > nr - sp[2 * j + 1]) {
            PyErr_Format(PyExc_ValueError, "leaf_fixed_sums: spans: span %zd (start %lld, length %lld) is out of "
                         "range of the %zd rows", j, (long long)sp[2 * j], (long long)sp[2 * j + 1], nr);
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    leaf_fixed_loop((const double *)g->buf, with_h ? (const double *)h->buf : NULL, (const int32_t *)rows->buf, sp,
                    m, eg, eh, (int64_t *)out->buf);
    Py_END_ALLOW_THREADS
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define ALWAYS_INLINE inline
#define PREFETCH(p) ((void)0)
#endif
#define PREFETCH_AHEAD 12

typedef struct {
    int what;          /* 0 ok, 1 bad row, 2 bad code */
    Py_ssize_t at, value, f;
} quant_bad;

/* The feature loops unrolled by 4 (GCC, Clang): the adds and their targets are unchanged. */
#if defined(__GNUC__) || defined(__clang__)
#define PACKED_UNROLL _Pragma("GCC unroll 4")
#else
#define PACKED_UNROLL
#endif

static ALWAYS_INLINE void packed_loop(const uint8_t *cd, const int64_t *vals, const int32_t *rw, const int64_t *fs,
                                      int64_t *out, Py_ssize_t n, Py_ssize_t d, Py_ssize_t m, Py_ssize_t nf,
                                      Py_ssize_t S, const int all_rows, const int dense, const int check_codes,
                                      quant_bad *bad)
{
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
        if (!all_rows) {
            if (KA_UNLIKELY((size_t)r >= (size_t)n)) {
                bad->what = 1, bad->at = i, bad->value = r;
                return;
            }
            if (i + PREFETCH_AHEAD < m) {
                /* a hint only (a prefetch never faults): both cache lines a row's codes
                   may span, and its value */
                uintptr_t ra = (uintptr_t)rw[i + PREFETCH_AHEAD];
                PREFETCH((const char *)cd + ra * (uintptr_t)d);
                PREFETCH((const char *)cd + ra * (uintptr_t)d + (uintptr_t)(d - 1));
                PREFETCH((const char *)vals + ra * sizeof(int64_t));
            }
        }
        const uint8_t *c = cd + r * d;
        const int64_t v = vals[r];
        if (dense) {
            int64_t *a = out;
            PACKED_UNROLL for (Py_ssize_t f = 0; f < d; f++, a += S) {
                Py_ssize_t code = c[f];
                if (check_codes && KA_UNLIKELY(code >= S)) {
                    bad->what = 2, bad->at = r, bad->value = code, bad->f = f;
                    return;
                }
                a[code] += v;
            }
        } else {
            PACKED_UNROLL for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = fs[j], code = c[f];
                if (check_codes && KA_UNLIKELY(code >= S)) {
                    bad->what = 2, bad->at = r, bad->value = code, bad->f = f;
                    return;
                }
                out[f * S + code] += v;
            }
        }
    }
}

static PyObject *histogram_packed(PyObject *self, PyObject *args)
{
    PyObject *ocodes, *ovals, *orows, *ofeats, *oout;
    Py_ssize_t n, d, S;
    int all_rows;
    if (!PyArg_ParseTuple(args, "OnnOOiOnO", &ocodes, &n, &d, &ovals, &orows, &all_rows, &ofeats, &S, &oout))
        return NULL;
    KA_CALL(K, "histogram_packed");
    Py_buffer *codes, *vals, *rows, *feats, *out;
    if (!(codes = ka_buffer(&K, "codes", ocodes, KA_U8, KA_IN))
        || !(vals = ka_buffer(&K, "vals", ovals, KA_I64, KA_IN))
        || !(rows = ka_buffer(&K, "rows", orows, KA_I32, KA_IN))
        || !(feats = ka_buffer(&K, "feats", ofeats, KA_I64, KA_IN))
        || !(out = ka_buffer(&K, "out", oout, KA_I64, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "n", n, 0) || ka_at_least(&K, "d", d, 0) || ka_between(&K, "S", S, 1, 256))
        goto fail;
    const int64_t *fs = (const int64_t *)feats->buf;
    Py_ssize_t nf = ka_items(feats);
    if (ka_need(&K, codes, ka_mul(n, d), "n*d") || ka_need(&K, vals, n, "n")
        || ka_need(&K, out, ka_mul(d, S), "d*S") || ka_check_range(&K, "feats", fs, nf, 0, d) || ka_disjoint(&K))
        goto fail;
    const uint8_t *cd = (const uint8_t *)codes->buf;
    const int64_t *v = (const int64_t *)vals->buf;
    const int32_t *rw = (const int32_t *)rows->buf;
    int64_t *o = (int64_t *)out->buf;
    Py_ssize_t m = all_rows ? n : ka_items(rows);
    quant_bad bad = {0, 0, 0, 0};
    int dense = nf == d;
    Py_BEGIN_ALLOW_THREADS
    memset(o, 0, (size_t)(d * S) * sizeof(int64_t));
#define LOOP(ALL, DENSE, CHECK) packed_loop(cd, v, rw, fs, o, n, d, m, nf, S, ALL, DENSE, CHECK, &bad)
    if (S >= 256) {
        if (all_rows)
            dense ? LOOP(1, 1, 0) : LOOP(1, 0, 0);
        else
            dense ? LOOP(0, 1, 0) : LOOP(0, 0, 0);
    } else {
        if (all_rows)
            dense ? LOOP(1, 1, 1) : LOOP(1, 0, 1);
        else
            dense ? LOOP(0, 1, 1) : LOOP(0, 0, 1);
    }
#undef LOOP
    Py_END_ALLOW_THREADS
    if (bad.what == 1) {
        ka_index_error(&K, "rows", bad.at, bad.value, 0, n);
        goto fail;
    }
    if (bad.what == 2) {
        PyErr_Format(PyExc_ValueError, "histogram_packed: codes: code %zd of row %zd, feature %zd is out of range "
                     "[0, %zd) (S slots)", bad.value, bad.at, bad.f, S);
        goto fail;
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}


/* ------------------------------------------------------------ split search */

/* decode a packed sum into its integer fields (quantize.decode) */
static inline void unpack3(int64_t x, int L, int shift_g, int64_t hmask, int const_hess, int64_t *g, int64_t *h,
                           int64_t *c)
{
    *c = x & (((int64_t)1 << L) - 1);
    *h = const_hess ? *c : (x >> L) & hmask;
    *g = x >> shift_g;                       /* arithmetic shift: floor, the signed field */
}

QUANT_NO_CONTRACT
static void packed_splits_loop(const int64_t *H, const int64_t *T, const int64_t *NB, int nb_per_node,
                               const uint8_t *MASK, Py_ssize_t k, Py_ssize_t d, Py_ssize_t S, int bits, int L,
                               int const_hess, double sg, double sh, double lam, double min_hess, double tie_rtol,
                               int64_t mcs, double *gains, int64_t *idx, double *BG, double *LEFT, int64_t *FEAT,
                               int64_t *BIN, uint8_t *ML)
{
    const Py_ssize_t V = S - 1;
    const int shift_g = const_hess ? L : 2 * L + bits;
    const int64_t hmask = ((int64_t)1 << (bits + L)) - 1;
    for (Py_ssize_t i = 0; i < k; i++) {
        const int64_t tg = T[3 * i], th = T[3 * i + 1], tc = T[3 * i + 2];
        const double TG = (double)tg * sg, THR = (double)th * sh;
        const double parent = THR + lam > 0 ? (TG * TG) / (THR + lam) : 0.0;
        Py_ssize_t n = 0;
        for (Py_ssize_t f = 0; f < d; f++) {
            Py_ssize_t nb = (Py_ssize_t)NB[nb_per_node ? i * d + f : f];
            if ((MASK && !MASK[i * d + f]) || nb <= 0)
                continue;
            const int64_t *h = H + (i * d + f) * S;
            const int64_t miss = h[V];
            int64_t mg, mh, mc;
            unpack3(miss, L, shift_g, hmask, const_hess, &mg, &mh, &mc);
            const int has_miss = mc > 0;
            const Py_ssize_t last = nb - 1 < V - 1 ? nb - 1 : V - 1;   /* highest candidate bin */
            int64_t run = 0;
            for (Py_ssize_t b = 0; b <= last; b++) {
                const int64_t x = h[b];
                if (x == 0 && b > 0)
                    continue;                /* no rows: the candidates of bin b - 1 again */
                run += x;
                /* run is the sum of bins 0..b only after the skipped bins, all zero */
                int64_t gl, hl, cl;
                unpack3(run, L, shift_g, hmask, const_hess, &gl, &hl, &cl);
                if (tc - cl < mcs)
                    break;                   /* no later bin leaves min_child rows right */
                if (cl + mc < mcs)
                    continue;
                const int inner = b < nb - 1;
                for (int dir = 0; dir < 2; dir++) {
                    if (dir ? !(inner && has_miss) : !(inner || has_miss))
                        continue;
                    int64_t g1 = gl, h1 = hl, c1 = cl;
                    if (dir) { g1 += mg; h1 += mh; c1 += mc; }
                    const int64_t cr = tc - c1;
                    if (c1 < mcs || cr < mcs)
                        continue;
                    const double hlr = (double)h1 * sh, hrr = (double)(th - h1) * sh;
                    if (!(hlr >= min_hess) || !(hrr >= min_hess) || !(hlr + lam > 0) || !(hrr + lam > 0))
                        continue;
                    const double l = (double)g1 * sg, r = TG - l;
                    gains[n] = (l * l) / (hlr + lam) + (r * r) / (hrr + lam);
                    idx[n] = (f * V + b) * 2 + dir;
                    n++;
                }
            }
        }
        double *li = LEFT + 3 * i;
        if (n == 0) {
            BG[i] = -INFINITY;
            FEAT[i] = BIN[i] = 0;
            ML[i] = 0;
            li[0] = li[1] = li[2] = 0.0;
            continue;
        }
        double top = -INFINITY;
        for (Py_ssize_t q = 0; q < n; q++)
            if (gains[q] > top) top = gains[q];
        const double thr = top - tie_rtol * fabs(top);
        Py_ssize_t q = 0;
        while (q < n - 1 && !(gains[q] >= thr)) q++;
        const int64_t best = idx[q];
        const Py_ssize_t f = (Py_ssize_t)(best / 2 / V), b = (Py_ssize_t)(best / 2 % V);
        const int dir = (int)(best % 2);
        const int64_t *h = H + (i * d + f) * S;
        int64_t run = 0;
        for (Py_ssize_t c = 0; c <= b; c++)
            run += h[c];
        if (dir)
            run += h[V];
        int64_t gl, hl, cl;
        unpack3(run, L, shift_g, hmask, const_hess, &gl, &hl, &cl);
        BG[i] = gains[q] - parent;
        FEAT[i] = f;
        BIN[i] = b;
        li[0] = (double)gl;
        li[1] = (double)hl;
        li[2] = (double)cl;
        const int node_has_miss = (h[V] & (((int64_t)1 << L) - 1)) > 0;
        ML[i] = node_has_miss ? (uint8_t)dir : (uint8_t)(cl >= tc - cl);
    }
}

static PyObject *best_splits_packed(PyObject *self, PyObject *args)
{
    PyObject *ohist, *otot, *onbins, *omask, *ogain, *oleft, *ofeat, *obin, *oml;
    Py_ssize_t k, d, S, min_child;
    int nb_per_node, bits, L, const_hess;
    double sg, sh, lam, min_hess, tie_rtol;
    if (!PyArg_ParseTuple(args, "OOOiOnnniiidddddnOOOOO", &ohist, &otot, &onbins, &nb_per_node, &omask, &k, &d, &S,
                          &bits, &L, &const_hess, &sg, &sh, &lam, &min_hess, &tie_rtol, &min_child, &ogain, &oleft,
                          &ofeat, &obin, &oml))
        return NULL;
    KA_CALL(K, "best_splits_packed");
    double *gains = NULL;
    int64_t *idx = NULL;
    Py_buffer *hist, *tot, *nbins, *mask, *gain_b, *left_b, *feat_b, *bin_b, *ml_b;
    if (!(hist = ka_buffer(&K, "hist", ohist, KA_I64, KA_IN)) || !(tot = ka_buffer(&K, "tot", otot, KA_I64, KA_IN))
        || !(nbins = ka_buffer(&K, "n_bins", onbins, KA_I64, KA_IN))
        || !(mask = ka_buffer(&K, "mask", omask, KA_FLAG, KA_IN))
        || !(gain_b = ka_buffer(&K, "best_gain", ogain, KA_F64, KA_OUT))
        || !(left_b = ka_buffer(&K, "left", oleft, KA_F64, KA_OUT))
        || !(feat_b = ka_buffer(&K, "feat", ofeat, KA_I64, KA_OUT))
        || !(bin_b = ka_buffer(&K, "bin", obin, KA_I64, KA_OUT))
        || !(ml_b = ka_buffer(&K, "miss_left", oml, KA_FLAG, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "k", k, 0) || ka_at_least(&K, "d", d, 0) || ka_between(&K, "S", S, 2, 1 << 20)
        || ka_between(&K, "bits", bits, 2, 16) || ka_between(&K, "L", L, 1, 40)
        || ka_between(&K, "const_hess", const_hess, 0, 1)
        || ka_between(&K, "L layout", (const_hess ? 2 * L + bits : 3 * L + 2 * bits), 1, 64)
        || ka_at_least(&K, "min_child", min_child, 0))
        goto fail;
    if (ka_need(&K, hist, ka_mul(ka_mul(k, d), S), "k*d*S") || ka_need(&K, tot, ka_mul(k, 3), "3*k")
        || ka_need(&K, nbins, nb_per_node ? ka_mul(k, d) : d, nb_per_node ? "k*d" : "d")
        || (mask->len && ka_need(&K, mask, ka_mul(k, d), "k*d (or empty: no mask)"))
        || ka_need(&K, gain_b, k, "k") || ka_need(&K, left_b, ka_mul(k, 3), "3*k") || ka_need(&K, feat_b, k, "k")
        || ka_need(&K, bin_b, k, "k") || ka_need(&K, ml_b, k, "k") || ka_disjoint(&K))
        goto fail;
    Py_ssize_t n_cand = ka_add(ka_mul(ka_mul(d, S), 2), 1);
    if (!(gains = ka_malloc(&K, n_cand, sizeof(double), "2*d*S + 1"))
        || !(idx = ka_malloc(&K, n_cand, sizeof(int64_t), "2*d*S + 1")))
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    packed_splits_loop((const int64_t *)hist->buf, (const int64_t *)tot->buf, (const int64_t *)nbins->buf,
                       nb_per_node, mask->len ? (const uint8_t *)mask->buf : NULL, k, d, S, bits, L, const_hess, sg,
                       sh, lam, min_hess, tie_rtol, (int64_t)min_child, gains, idx, (double *)gain_b->buf,
                       (double *)left_b->buf, (int64_t *)feat_b->buf, (int64_t *)bin_b->buf, (uint8_t *)ml_b->buf);
    Py_END_ALLOW_THREADS
    free(gains);
    free(idx);
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    free(gains);
    free(idx);
    ka_release(&K);
    return NULL;
}

static PyMethodDef methods[] = {
    {"quantize", quantize, METH_VARARGS,
     "quantize(g, h, grows, key, inv_g, inv_h, bits, shift_g, shift_h, packed, channels)"},
    {"gradients", gradients, METH_VARARGS,
     "gradients(F, K, k, y, w, binary, g, h, y_u8=0, f32=0) -> (max |g|, max h)"},
    {"leaf_fixed_sums", leaf_fixed_sums, METH_VARARGS, "leaf_fixed_sums(g, h, rows, spans, eg, eh, out)"},
    {"histogram_packed", histogram_packed, METH_VARARGS,
     "histogram_packed(codes_rm, n, d, vals, rows, all_rows, feats, S, out)"},
    {"best_splits_packed", best_splits_packed, METH_VARARGS,
     "best_splits_packed(hist, tot, n_bins, nb_per_node, mask, k, d, S, bits, L, const_hess, sg, sh, lam, min_hess, "
     "tie_rtol, min_child, best_gain, left, feat, bin, miss_left)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_quant_kernels",
                                    "Quantized-gradient kernels (see the C source).", -1, methods};

PyMODINIT_FUNC PyInit__quant_kernels(void) { return PyModule_Create(&module); }
