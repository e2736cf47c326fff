/* Compiled inner loops of the histogram trees (LightGBM's data-parallel GBDT, one rank's part).
 *
 * histogram(): one pass over a node's rows accumulates (gradient channels..., hessian, count)
 *   of every (sampled) feature. The codes are row-major (n x d uint8), so a row's codes are
 *   one or two cache lines when the node's rows are gathered; the per-row statistics are
 *   channel-major (Cin x n: gradient(s) then hessian; float64, or float32 for GBDT's gradient
 *   and hessian), the layout the gradients are computed in, so a fit holds them once (a
 *   row's channels are Cin cache lines, prefetched like its codes: measured as fast as a
 *   row-major copy, see histogram()). Accumulators
 *   are interleaved per bin, acc[(f * S + code) * A + c], so a row touches one cache line per
 *   feature instead of one per channel; they are scattered to the (C, d, S) layout that the
 *   split search and the collective use at the end. Float64 sums; counts are float64 too
 *   (exact below 2**53 rows).
 *
 * partition(): stable split of a node's rows (a contiguous range of the tree's row
 *   permutation, as in LightGBM's DataPartition) into left rows then right rows, in place,
 *   by (feature, threshold bin, missing direction). It reads feature f of the row-major
 *   codes (codes[row * d + f]: the one copy of the codes a fit holds); the rows are
 *   ascending, so the reads go front to back. The permutation and the scratch for the right
 *   rows are int32 (local row indices below 2**31; checked), 8 bytes a local row in all.
 *
 * partition_table(): the same stable partition for a categorical split, "goes left" read
 *   from a 256-entry table over the codes.
 *
 * add_leaf_value(): scores[rows[i] * K + k] += value for the rows of one leaf.
 *
 * Row indices (histogram's, the partitions' and add_leaf_value's rows) are int32 only: they
 * are ranges of the tree's int32 row permutation (one index type, not a copy of each loop
 * per type); a fit with more than 2**31 - 1 local rows takes the NumPy path.
 *
 * predict_raw(): prediction on raw features, rows partitioned down each tree (threshold
 *   nodes, and categorical nodes by bitsets over bin codes).
 *
 * best_splits(): the best split of each of k nodes (the vectorised NumPy split search's
 *   arithmetic and tie rule, in the same order, without its (k, C, d, S) temporaries).
 *
 * Arguments: every entry point checks its buffers (dtype, C-contiguity, byte lengths from
 * overflow-checked products of the sizes, outputs writable and disjoint from the rest) and
 * every index it follows into another buffer, and raises TypeError / ValueError instead of
 * reading or writing out of bounds: checked buffer protocol rather than Cython, see
 * ../../_kernel_args.h. The Python wrappers (histogram.py, grower.py, split.py, predict.py)
 * check the same things for their own messages; the C no longer relies on them. Sizes are
 * Py_ssize_t and products of sizes are computed in Py_ssize_t (64-bit).
 *
 * What the checks cost (measured against the unchecked build, interleaved in one process,
 * CPU time, min of 21-31 rounds; instruction counts from callgrind, which do not depend on
 * the other jobs of this shared 2-core machine):
 *   - per call, acquiring the buffers with their formats: +70 ns (add_leaf_value, 2
 *     buffers) to +0.1-0.15 us (partition, histogram, 3-6 buffers), +0.25-0.4 us
 *     (best_splits, 10 buffers) and +0.4-0.9 us (predict_raw, 15 buffers, plus its pass
 *     over the nodes); against calls of 0.3-250 us, each behind several us of Python
 *     wrapper;
 *   - in the loops: histogram +1.5% instructions (a row check, 50k of 100k rows, d = 28,
 *     S = 256), +16% with S = 64 (then every code is checked too, 3-6% slower); partition
 *     and partition_table +2 instructions per row, 187 us for 200k rows as before
 *     (partition, now table-driven: 290 -> 184 us); add_leaf_value +2 instructions per
 *     row (within noise, ~85 us per 200k rows);
 *     best_splits +0.14% instructions, same time; predict_raw's pass over the nodes, ~2-3
 *     ns per node (+1-2% for 100 trees of 61 nodes on 2000 rows, less on more rows);
 *     histogram's loops, recompiled per case, as fast as before or faster (see there).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../_kernel_args.h"

/* ----------------------------------------------------------------------- histogram */

/* A node's rows are spread over the shard, so each row's codes and statistics are a cache
 * miss, and one row's accumulation (d features x a few loads, adds and stores) fills the
 * out-of-order window: without help the CPU waits for one row's miss at a time (measured
 * 4.6 ns per row and feature on 32k of 400k rows, against 1.2 on all rows). Prefetching
 * PREFETCH_AHEAD rows ahead overlaps the misses. */
#define PREFETCH_AHEAD 12
#define PARTITION_AHEAD 24                   /* partition_sparse(): rows ahead */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Prefetch the codes (up to two cache lines) and the summed statistics (one line per channel: they are
 * channel-major, w[q * n + r]) of local row r. */
static inline void prefetch_row(const uint8_t *cd, const char *w, Py_ssize_t esz, Py_ssize_t r, Py_ssize_t d,
                                Py_ssize_t cin, Py_ssize_t n)
{
    PREFETCH(cd + r * d);
    PREFETCH(cd + r * d + d - 1);
    for (Py_ssize_t q = 0; q < cin; q++)
        PREFETCH(w + (q * n + r) * esz);
}

/* Zero the accumulators of the selected features. */
static void zero_acc(double *acc, const int64_t *feats, Py_ssize_t nf, Py_ssize_t S, Py_ssize_t A)
{
    for (Py_ssize_t j = 0; j < nf; j++)
        memset(acc + feats[j] * S * A, 0, (size_t)(S * A) * sizeof(double));
}

/* histogram(codes_rm, n, d, channels, cin, rows, all_rows, feats, S, acc, out, hess_is_count, with_count,
 *           f32=0)
 *
 * codes_rm: (n, d) uint8, row-major; channels: (cin, n) float64 (f32 = 1: float32),
 * channel-major (channel q of row r at q * n + r).
 * Checks: codes (n*d uint8), channels (cin*n float64, or float32 with f32), rows int32, feats
 * int64, acc (d*S*A float64, A accumulators per bin) and out ((cin+1)*d*S float64) written
 * and disjoint from the rest; feats in [0, d) (a pre-pass: d entries at most); every row in [0, n), checked
 * in the loop before its codes are read (one compare and a never-taken branch per row,
 * against d features' accumulation), and every code of an accumulated (row, feature)
 * below S, also in the loop, as it addresses the accumulators. With S >= 256 (max_bin 255,
 * the default) no uint8 code can reach S: the copies of accumulate() for it have no code
 * check at all. */
typedef struct {
    int what;                                         /* 0: fine, 1: a row, 2: a code out of range */
    Py_ssize_t at, f, value;
} hist_bad;

/* Row indices are read zero-extended ((uint32_t)): a negative int32 row becomes >= 2**31, so
 * one unsigned compare against row_lim = min(n, 2**31) checks both ends, and the error
 * reports it as the int32 it was.
 * Measured against the int64 rows of before (160k local rows x 20, min of 40-60 calls
 * interleaved in one process): sign-extended int32 loads cost the histogram 1-1.5%,
 * zero-extended ones 0.1-0.8%; partition 5-8% faster, add_leaf_value the same. */
#define ROW_CHECKED(i)                                                                  \
    Py_ssize_t r = all_rows ? (i) : (Py_ssize_t)(uint32_t)rw[i];                        \
    if (KA_UNLIKELY((size_t)r >= row_lim)) {                                            \
        bad->what = 1; bad->at = (i); bad->value = r;                                   \
        return;                                                                         \
    }
#define CODE_CHECKED(code, row_codes, feature)                                          \
    Py_ssize_t code = (row_codes)[feature];                                             \
    if (check_codes && KA_UNLIKELY(code >= S)) {                                                     \
        bad->what = 2; bad->at = r; bad->f = (feature); bad->value = code;              \
        return;                                                                         \
    }

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* b[0] += x[0], b[1] += x[1] as one two-lane add: the same two IEEE additions. Left to
 * itself GCC compiled the L2 loop with the two halves loaded apart and stored together,
 * which stalls store forwarding when the next row hits the same bin (2.9 against 2.3 ms
 * for 100k rows x 28). */
#if defined(__GNUC__) || defined(__clang__)
typedef double pair_f64 __attribute__((vector_size(16)));
static inline void add_pair(double *b, pair_f64 x)
{
    pair_f64 v;
    memcpy(&v, b, sizeof v);
    v += x;
    memcpy(b, &v, sizeof v);
}
#else
typedef struct { double v[2]; } pair_f64;
static inline void add_pair(double *b, pair_f64 x) { b[0] += x.v[0]; b[1] += x.v[1]; }
#endif

/* The feature loops unrolled by 4 (GCC, Clang): each feature is a separate accumulator, so
 * the additions and their order are unchanged. */
#if defined(__GNUC__) || defined(__clang__)
#define HIST_UNROLL _Pragma("GCC unroll 4")
#else
#define HIST_UNROLL
#endif

/* Channel value i (q * n + r) as a double: the channels are float64, or with f32 float32
 * (GBDT's gradients and hessians, as LightGBM's and scikit-learn's: 8 bytes a row instead of
 * 16), widened exactly, so the sums are float64 sums of the same values either way. */
#define WV(i) (f32 ? (double)((const float *)wv)[i] : ((const double *)wv)[i])

/* The accumulation passes of histogram() (zeroed accumulators in, stops at the first bad
 * row or code); all_rows, dense (nf == d: feature j is j), check_codes and f32 (the
 * channels' type) are constants at each call site. */
static ALWAYS_INLINE void accumulate(const uint8_t *cd, const void *wv, const int32_t *rw, const int64_t *fs,
                                     double *acc, Py_ssize_t n, Py_ssize_t d, Py_ssize_t cin, Py_ssize_t m,
                                     Py_ssize_t nf, Py_ssize_t S, Py_ssize_t A, Py_ssize_t ng, const int all_rows,
                                     const int dense, int with_count, const int check_codes, const int f32,
                                     hist_bad *bad)
{
    const char *wb = (const char *)wv;
    const Py_ssize_t esz = f32 ? 4 : 8;
    /* see ROW_CHECKED (all rows: r = i < n, no int32 read) */
    const size_t row_lim = all_rows || n < ((Py_ssize_t)1 << 31) ? (size_t)n : (size_t)1 << 31;
    if (A == 3 && with_count) {
        /* one gradient channel, hessian, count: the boosting case */
        for (Py_ssize_t i = 0; i < m; i++) {
            ROW_CHECKED(i)
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, wb, esz, (Py_ssize_t)(uint32_t)rw[i + PREFETCH_AHEAD], d, ng, n);
            const uint8_t *c = cd + r * d;
            double g = WV(r), h = WV(n + r);
            if (dense) {
                double *a = acc;
                HIST_UNROLL for (Py_ssize_t f = 0; f < d; f++, a += S * 3) {
                    CODE_CHECKED(code, c, f)
                    double *b = a + code * 3;
                    b[0] += g; b[1] += h; b[2] += 1.0;
                }
            } else {
                HIST_UNROLL for (Py_ssize_t j = 0; j < nf; j++) {
                    CODE_CHECKED(code, c, fs[j])
                    double *b = acc + (fs[j] * S + code) * 3;
                    b[0] += g; b[1] += h; b[2] += 1.0;
                }
            }
        }
    } else if (A == 2 && !with_count) {
        /* gradient and hessian, the count known */
        for (Py_ssize_t i = 0; i < m; i++) {
            ROW_CHECKED(i)
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, wb, esz, (Py_ssize_t)(uint32_t)rw[i + PREFETCH_AHEAD], d, ng, n);
            const uint8_t *c = cd + r * d;
            double g = WV(r), h = WV(n + r);
            HIST_UNROLL for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                CODE_CHECKED(code, c, f)
                double *b = acc + (f * S + code) * 2;
                b[0] += g; b[1] += h;
            }
        }
    } else if (A == 2) {
        /* one gradient channel and the count (L2: the hessian is the count) */
        for (Py_ssize_t i = 0; i < m; i++) {
            ROW_CHECKED(i)
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, wb, esz, (Py_ssize_t)(uint32_t)rw[i + PREFETCH_AHEAD], d, ng, n);
            const uint8_t *c = cd + r * d;
            pair_f64 gc = {WV(r), 1.0};
            HIST_UNROLL for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                CODE_CHECKED(code, c, f)
                double *b = acc + (f * S + code) * 2;
                add_pair(b, gc);
            }
        }
    } else {
        /* several gradient channels (classification forests): generic loop */
        for (Py_ssize_t i = 0; i < m; i++) {
            ROW_CHECKED(i)
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, wb, esz, (Py_ssize_t)(uint32_t)rw[i + PREFETCH_AHEAD], d, ng, n);
            const uint8_t *c = cd + r * d;
            HIST_UNROLL for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                CODE_CHECKED(code, c, f)
                double *b = acc + (f * S + code) * A;
                for (Py_ssize_t q = 0; q < ng; q++)
                    b[q] += WV(q * n + r);    /* channel q of row r */
                if (with_count)
                    b[ng] += 1.0;
            }
        }
    }
}

#undef WV

#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* A copy of the loops for each (all rows?, all features?, codes checked?), their feature
   loops unrolled by 4; one function of these copies per channel type, so that each keeps
   the code (and the placement) it has alone: with both types' copies inlined into
   histogram(), both types' loops ran 23-25% slower on a real tree's child nodes (11.3
   against 9.1 ms for the 29 child histograms of a tree, 400k rows x 20); as two functions
   they take 8.1 ms, either type. These loops issue at the core's full width, so where the
   compiler puts their instructions matters: with the three as run-time flags, loops with
   the same instructions as before the checks ran 14-27% slower (the count-known root
   histogram of every unbagged tree, 400k rows x 28: 6.0-6.4 against 5.3 ms; the L2 loop,
   100k rows: 2.9 against 2.3 ms). Now each S >= 256 loop is as fast as before or faster
   (min of 30-40 calls interleaved with the unchecked build: 5.0-5.1 against 5.2-5.7 ms,
   1.7-2.0 against 1.8-2.2 ms, a node's 200k rows 4.1-4.3 against 4.3-4.4 ms, all rows with
   the count +1%); with S < 256, where every code is checked, 3-6% slower. */
#define ACCUMULATE_ALL(NAME, F32)                                                                             \
    static NOINLINE void NAME(const uint8_t *cd, const void *w, const int32_t *rw, const int64_t *fs,         \
                              double *acc, Py_ssize_t n, Py_ssize_t d, Py_ssize_t cin, Py_ssize_t m,          \
                              Py_ssize_t nf, Py_ssize_t S, Py_ssize_t A, Py_ssize_t ng, int all_rows,         \
                              int with_count, hist_bad *bad)                                                  \
    {                                                                                                         \
        int dense = nf == d;                          /* all features: no indirection */                     \
        if (S >= 256) {                               /* no uint8 code reaches S */                          \
            if (all_rows)                                                                                     \
                dense ? ACCUMULATE(1, 1, 0, F32) : ACCUMULATE(1, 0, 0, F32);                                  \
            else                                                                                              \
                dense ? ACCUMULATE(0, 1, 0, F32) : ACCUMULATE(0, 0, 0, F32);                                  \
        } else {                                                                                              \
            if (all_rows)                                                                                     \
                dense ? ACCUMULATE(1, 1, 1, F32) : ACCUMULATE(1, 0, 1, F32);                                  \
            else                                                                                              \
                dense ? ACCUMULATE(0, 1, 1, F32) : ACCUMULATE(0, 0, 1, F32);                                  \
        }                                                                                                     \
    }
#define ACCUMULATE(ALL_ROWS, DENSE, CHECK_CODES, F32) \
    accumulate(cd, w, rw, fs, acc, n, d, cin, m, nf, S, A, ng, ALL_ROWS, DENSE, with_count, CHECK_CODES, F32, bad)
ACCUMULATE_ALL(accumulate_f64, 0)
ACCUMULATE_ALL(accumulate_f32, 1)
#undef ACCUMULATE
#undef ACCUMULATE_ALL

static PyObject *histogram(PyObject *self, PyObject *args)
{
    PyObject *ocodes, *och, *orows, *ofeats, *oacc, *oout;
    Py_ssize_t n, d, cin, S;
    int all_rows, hess_is_count, with_count, f32 = 0;
    if (!PyArg_ParseTuple(args, "OnnOnOiOnOOii|i", &ocodes, &n, &d, &och, &cin, &orows, &all_rows, &ofeats, &S,
                          &oacc, &oout, &hess_is_count, &with_count, &f32))
        return NULL;
    KA_CALL(K, "histogram");
    Py_buffer *codes, *ch, *rows, *feats, *acc_buf, *out;
    if (!(codes = ka_buffer(&K, "codes", ocodes, KA_U8, KA_IN))
        || !(ch = ka_buffer(&K, "channels", och, f32 ? KA_F32 : KA_F64, KA_IN))
        || !(rows = ka_buffer(&K, "rows", orows, KA_I32, KA_IN))
        || !(feats = ka_buffer(&K, "feats", ofeats, KA_I64, KA_IN))
        || !(acc_buf = ka_buffer(&K, "acc", oacc, KA_F64, KA_OUT))
        || !(out = ka_buffer(&K, "out", oout, KA_F64, KA_OUT)))
        goto fail;
    hess_is_count = hess_is_count != 0;
    with_count = with_count != 0;
    if (ka_at_least(&K, "n", n, 0) || ka_at_least(&K, "d", d, 0) || ka_at_least(&K, "S", S, 1)
        || ka_at_least(&K, hess_is_count ? "cin (with hess_is_count)" : "cin", cin, 1 + hess_is_count))
        goto fail;
    const uint8_t *cd = (const uint8_t *)codes->buf;
    const void *w = ch->buf;
    const int32_t *rw = (const int32_t *)rows->buf;
    const int64_t *fs = (const int64_t *)feats->buf;
    double *acc = (double *)acc_buf->buf;
    double *o = (double *)out->buf;
    Py_ssize_t m = all_rows ? n : ka_items(rows);
    Py_ssize_t nf = ka_items(feats);
    Py_ssize_t ng = hess_is_count ? cin - 1 : cin;  /* channels summed from the data */
    /* ... plus the count, unless the caller knows it (the root of an unbagged tree has
       the same counts every tree: one accumulator less per row and feature) */
    Py_ssize_t A = ng + with_count;
    Py_ssize_t C = cin + 1;                           /* channels of the output */
    if (ka_need(&K, codes, ka_mul(n, d), "n*d") || ka_need(&K, ch, ka_mul(cin, n), "cin*n")
        || ka_need(&K, acc_buf, ka_mul(ka_mul(d, S), A), "d*S*(cin - hess_is_count + with_count)")
        || ka_need(&K, out, ka_mul(ka_mul(C, d), S), "(cin+1)*d*S")
        || ka_check_range(&K, "feats", fs, nf, 0, d) || ka_disjoint(&K))
        goto fail;
    hist_bad bad = {0, 0, 0, 0};

    Py_BEGIN_ALLOW_THREADS
    zero_acc(acc, fs, nf, S, A);
    (f32 ? accumulate_f32 : accumulate_f64)(cd, w, rw, fs, acc, n, d, cin, m, nf, S, A, ng, all_rows, with_count,
                                            &bad);
    if (bad.what)
        goto stop;
    /* scatter the interleaved accumulators to out[channel, feature, slot] */
    for (Py_ssize_t j = 0; j < nf; j++) {
        Py_ssize_t f = fs[j];
        const double *a = acc + f * S * A;
        for (Py_ssize_t q = 0; q < ng; q++) {
            double *oq = o + (q * d + f) * S;
            for (Py_ssize_t s = 0; s < S; s++)
                oq[s] = a[s * A + q];
        }
        if (!with_count)
            continue;                                 /* the caller fills the count */
        double *ocnt = o + ((C - 1) * d + f) * S;
        for (Py_ssize_t s = 0; s < S; s++)
            ocnt[s] = a[s * A + ng];
        if (hess_is_count)
            memcpy(o + ((C - 2) * d + f) * S, ocnt, (size_t)S * sizeof(double));
    }
stop:
    Py_END_ALLOW_THREADS

    if (bad.what == 1) {
        ka_index_error(&K, "rows", bad.at, (int32_t)(uint32_t)bad.value, 0, n);
        goto fail;
    }
    if (bad.what == 2) {
        PyErr_Format(PyExc_ValueError, "histogram: codes: code %zd of row %zd, feature %zd is out of range "
                     "[0, %zd) (S slots)", bad.value, bad.at, bad.f, S);
        goto fail;
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

/* ----------------------------------------------------------------------- partition */

/* Checks of partition() and partition_table(): codes uint8 (the row-major (n, d) codes of
 * all local rows: n = len(codes) / d), d >= 1, feature in [0, d), rows and tmp int32,
 * written, disjoint, tmp at least as long as rows, n below 2**31 (tmp holds row indices);
 * every row in [0, n), checked in the loop before its code is read. A bad row stops the loop
 * and raises ValueError; the right rows found so far are appended as usual, so rows is still
 * a permutation of its input (its first part partitioned). */
static int partition_args(ka_call *K, PyObject *ocodes, Py_ssize_t d, Py_ssize_t feature, PyObject *orows,
                          PyObject *otmp, Py_buffer **codes, Py_buffer **rows, Py_buffer **tmp)
{
    if (!(*codes = ka_buffer(K, "codes", ocodes, KA_U8, KA_IN))
        || !(*rows = ka_buffer(K, "rows", orows, KA_I32, KA_OUT))
        || !(*tmp = ka_buffer(K, "tmp", otmp, KA_I32, KA_OUT)))
        return -1;
    if (ka_at_least(K, "d", d, 1) || ka_between(K, "feature", feature, 0, d - 1)
        || ka_need(K, *tmp, ka_items(*rows), "len(rows)") || ka_disjoint(K))
        return -1;
    if (ka_items(*codes) / d > (Py_ssize_t)INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: codes: %zd rows, more than int32 row indices hold (2**31 - 1)", K->fn,
                     ka_items(*codes) / d);
        return -1;
    }
    return 0;
}

/* The stable in-place partition of partition() and partition_table(): rows whose code c has
 * lut[c] = 1 first. Left rows are written back in place (the write position never passes
 * the read position), right rows go to the int32 scratch and are appended after: stable, no
 * sort; branch-free, storing to both sides and advancing one (the side is unpredictable).
 * Each row is checked against n before its code is read: at the first bad one the loop
 * stops, *bad is its position (else -1), and rows is still a permutation of its input.
 * codes + f: feature f's code of row r is c[r * d] (row-major codes); the rows ascend, so
 * the reads go front to back, a code a row apart: prefetched PREFETCH_AHEAD rows ahead, as
 * in histogram() (measured: see CompiledHistogram.partition in histogram.py). */
#if defined(__GNUC__) || defined(__clang__)
#define COLD __attribute__((cold, noinline))
#else
#define COLD
#endif

/* partition_rows() at a bad row: append the right rows found so far, as at the end. */
static COLD Py_ssize_t partition_stop(int32_t *r, const int32_t *t, Py_ssize_t nl, Py_ssize_t nr, Py_ssize_t i,
                                      Py_ssize_t *bad)
{
    for (Py_ssize_t j = 0; j < nr; j++)
        r[nl + j] = t[j];
    *bad = i;
    return nl;
}

/* One row of the partition loop: row r[i] (checked) to the left (in place) or the right
 * (scratch) side. */
#define PARTITION_ROW(i)                                                                \
    uint64_t row = (uint32_t)r[i];      /* a negative row: >= 2**31 >= n (checked) */   \
    if (KA_UNLIKELY(row >= (uint64_t)n))                                                \
        return partition_stop(r, t, nl, nr, (i), bad);  /* (its own exit) */            \
    Py_ssize_t left = lut[c[row * d]];                                                  \
    r[nl] = (int32_t)row;                                                               \
    t[nr] = (int32_t)row;                                                               \
    nl += left;                                                                         \
    nr += 1 - left;

/* Rows of a node that holds at least a quarter of the local rows are close together: the
 * hardware prefetcher follows the reads, and software prefetching only adds instructions
 * (measured, 160k local rows x 20 features, min of 60 calls: all rows 114 against 130-140
 * us with it). The rows of sparser nodes are a cache line or more apart: prefetched
 * PARTITION_AHEAD rows ahead (10% of the rows: 17 us; 12 ahead 18.7, none 23). A prefetch
 * never faults, so the row it names is not checked (the address is integer arithmetic,
 * then cast). Against the feature-major column the kernel read before (1 byte a row
 * instead of a row's 20-byte stride): 23 -> 27 us for all of 40k rows, 97 -> 114 us for
 * 160k, 9.5 -> 17 us for 10% of 160k. The partition phase is ~5% of a fit's time (and the
 * channels are no longer copied for the histogram): a 40-tree fit on 128k rows measured
 * 0.546 against 0.542 s CPU, min of 15; the fit holds 20 bytes a row less. */
static Py_ssize_t partition_dense(const uint8_t *c, Py_ssize_t d, Py_ssize_t n, int32_t *r, int32_t *t, Py_ssize_t m,
                                  const uint8_t *lut, Py_ssize_t *bad)
{
    Py_ssize_t nl = 0, nr = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        PARTITION_ROW(i)
    }
    for (Py_ssize_t j = 0; j < nr; j++)
        r[nl + j] = t[j];
    return nl;
}

static Py_ssize_t partition_sparse(const uint8_t *c, Py_ssize_t d, Py_ssize_t n, int32_t *r, int32_t *t,
                                   Py_ssize_t m, const uint8_t *lut, Py_ssize_t *bad)
{
    Py_ssize_t nl = 0, nr = 0, i = 0;
    for (; i + PARTITION_AHEAD < m; i++) {
        PREFETCH((const uint8_t *)((uintptr_t)c + (uintptr_t)r[i + PARTITION_AHEAD] * (uintptr_t)d));
        PARTITION_ROW(i)
    }
    for (; i < m; i++) {
        PARTITION_ROW(i)
    }
    for (Py_ssize_t j = 0; j < nr; j++)
        r[nl + j] = t[j];
    return nl;
}
#undef PARTITION_ROW

static Py_ssize_t partition_rows(const uint8_t *c, Py_ssize_t d, Py_ssize_t n, int32_t *r, int32_t *t, Py_ssize_t m,
                                 const uint8_t *lut, Py_ssize_t *bad)
{
    *bad = -1;
    return m >= n / 4 ? partition_dense(c, d, n, r, t, m, lut, bad) : partition_sparse(c, d, n, r, t, m, lut, bad);
}

static PyObject *partition(PyObject *self, PyObject *args)
{
    PyObject *ocodes, *orows, *otmp;
    Py_ssize_t d, feature, thr, miss_slot;
    int missing_left;
    if (!PyArg_ParseTuple(args, "OnnOOnni", &ocodes, &d, &feature, &orows, &otmp, &thr, &miss_slot, &missing_left))
        return NULL;
    KA_CALL(K, "partition");
    Py_buffer *codes, *rows, *tmp;
    if (partition_args(&K, ocodes, d, feature, orows, otmp, &codes, &rows, &tmp))
        goto fail;
    const uint8_t *c = (const uint8_t *)codes->buf + feature;  /* feature's code of row r: c[r * d] */
    int32_t *r = (int32_t *)rows->buf;              /* the node's rows, ascending */
    int32_t *t = (int32_t *)tmp->buf;               /* scratch for the right rows */
    Py_ssize_t m = ka_items(rows), n = ka_items(codes) / d, nl, bad;
    /* "goes left" of every uint8 code (code <= thr, or the missing slot when missing_left),
       as partition_table's table: one L1 load per row instead of two compares. With the
       row check, 200k rows measured 12% slower than before with the compares, 15% faster
       with the table (two memsets per call) */
    uint8_t lut[256];
    Py_ssize_t n_low = thr < 0 ? 0 : thr > 255 ? 256 : thr + 1;     /* codes 0 .. thr */
    memset(lut, 1, (size_t)n_low);
    memset(lut + n_low, 0, (size_t)(256 - n_low));
    if (missing_left && miss_slot >= 0 && miss_slot < 256)
        lut[miss_slot] = 1;
    Py_BEGIN_ALLOW_THREADS
    nl = partition_rows(c, d, n, r, t, m, lut, &bad);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        ka_index_error(&K, "rows", bad, r[bad], 0, n);
        goto fail;
    }
    ka_release(&K);
    return PyLong_FromSsize_t(nl);
fail:
    ka_release(&K);
    return NULL;
}

/* Categorical splits: the same stable in-place partition, with "goes left" read from a
 * 256-entry table over the codes (table[code] is 0 or 1: the split's left set of bins).
 * One L1-resident load replaces the comparison; a uint8 code cannot index past the table,
 * so no code can send a row anywhere but left or right. The table is checked first (256
 * bytes, each 0 or 1: a larger entry would advance the left write position by more than
 * one and write past the rows). */
static PyObject *partition_table(PyObject *self, PyObject *args)
{
    PyObject *ocodes, *orows, *otmp, *otable;
    Py_ssize_t d, feature;
    if (!PyArg_ParseTuple(args, "OnnOOO", &ocodes, &d, &feature, &orows, &otmp, &otable))
        return NULL;
    KA_CALL(K, "partition_table");
    Py_buffer *codes, *rows, *tmp, *table;
    if (partition_args(&K, ocodes, d, feature, orows, otmp, &codes, &rows, &tmp)
        || !(table = ka_buffer(&K, "table", otable, KA_FLAG, KA_IN)) || ka_need(&K, table, 256, "256"))
        goto fail;
    const uint8_t *lut = (const uint8_t *)table->buf;   /* 256 bytes, each 0 or 1 */
    uint64_t high = 0;                                  /* bits other than each byte's lowest */
    for (int q = 0; q < 256; q += 8) {
        uint64_t word;
        memcpy(&word, lut + q, sizeof word);
        high |= word & ~(uint64_t)0x0101010101010101ULL;
    }
    if (high) {
        int q = 0;
        while (lut[q] <= 1)
            q++;
        PyErr_Format(PyExc_ValueError, "partition_table: table: entries must be 0 or 1, got %d at %d", (int)lut[q],
                     q);
        goto fail;
    }
    const uint8_t *c = (const uint8_t *)codes->buf + feature;  /* feature's code of row r: c[r * d] */
    int32_t *r = (int32_t *)rows->buf;              /* the node's rows */
    int32_t *t = (int32_t *)tmp->buf;               /* scratch for the right rows */
    Py_ssize_t m = ka_items(rows), n = ka_items(codes) / d, nl, bad;
    Py_BEGIN_ALLOW_THREADS
    nl = partition_rows(c, d, n, r, t, m, lut, &bad);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        ka_index_error(&K, "rows", bad, r[bad], 0, n);
        goto fail;
    }
    ka_release(&K);
    return PyLong_FromSsize_t(nl);
fail:
    ka_release(&K);
    return NULL;
}

/* ---------------------------------------------------------------- leaf-value update */

/* scores[rows[i] * K + k] += value: one leaf's rows (NumPy's scores[rows, k] += value
 * gathers, adds and scatters in three passes). Checks: scores float64 (n_scores x K),
 * written; 0 <= k < K; rows int32, each in [0, len(scores) / K), checked in the loop
 * before its update (a bad row stops the loop: the rows before it are updated). */
static PyObject *add_leaf_value(PyObject *self, PyObject *args)
{
    PyObject *oscores, *orows;
    Py_ssize_t Kc, k;
    double value;
    if (!PyArg_ParseTuple(args, "OnnOd", &oscores, &Kc, &k, &orows, &value))
        return NULL;
    KA_CALL(K, "add_leaf_value");
    Py_buffer *scores, *rows;
    if (!(scores = ka_buffer(&K, "scores", oscores, KA_F64, KA_OUT)) || !(rows = ka_buffer(&K, "rows", orows, KA_I32, KA_IN))
        || ka_at_least(&K, "K", Kc, 1) || ka_between(&K, "k", k, 0, Kc - 1) || ka_disjoint(&K))
        goto fail;
    double *s = (double *)scores->buf;
    const int32_t *r = (const int32_t *)rows->buf;
    Py_ssize_t m = ka_items(rows), n = ka_items(scores) / Kc, bad = -1;
    /* zero-extended rows: a negative one is >= 2**31, so the bound is min(n, 2**31) */
    const uint64_t row_lim = n < ((Py_ssize_t)1 << 31) ? (uint64_t)n : (uint64_t)1 << 31;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t row = (uint32_t)r[i];
        if (KA_UNLIKELY(row >= row_lim)) {
            bad = i;
            break;
        }
        s[(Py_ssize_t)row * Kc + k] += value;
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        ka_index_error(&K, "rows", bad, r[bad], 0, n);
        goto fail;
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

/* ------------------------------------------------------------------- split search */

/* Best split of each of k nodes from their combined histograms hist[i, c, f, s].
 *
 * For feature f and value bin b < V (V = S - 1, slot V is the missing bin) the candidate
 * "codes <= b go left" has left sums cum[c] = sum_{s<=b} hist[i, c, f, s] with missing values
 * right (dir 0), or cum[c] + miss[c] with missing values left (dir 1; only when n_dir == 2).
 * The arithmetic is split.find_best_splits' NumPy code in the same order (cumulative sums
 * per channel, the same gain expression, -inf for invalid candidates), and so is the
 * choice: the first candidate in (feature, bin, dir) order whose gain is within
 * tie_rtol * |best| of the best. Only one feature's cumulative sums and gains are held at
 * a time (scratch that stays in the first-level cache) instead of (k, C, d, V) arrays.
 *
 * Outputs per node: best[i] (flat index f * V * n_dir + b * n_dir + dir), best_gain[i]
 * (-inf: no valid candidate) and left[i, c] (the candidate's left sums; zeros when none),
 * and decoded: feat[i], bin[i], miss_left[i] (dir == 1; when the node has no missing value
 * in the feature, the side with more rows, split.py's rule, as (left count >= right count)),
 * and gain[i], best_gain[i] minus the node's score (split.node_score; -inf when no valid
 * candidate). Features outside the (k, d) mask (if given) have no candidates and are not
 * scanned. n_dir 0: the kernel decides (2 when some node has a missing value in some
 * feature, else 1, as the NumPy code does). Nodes 0..k1-1 are read from hist, nodes k1..k-1
 * from hist2 (a leaf-wise step's two children, each its own array, without stacking).
 *
 * Speed (boosting: one gradient channel, C = 3; k = 2 nodes, d = 20, S = 256, no missing
 * value, the case of a leaf-wise step: 46 -> 14 us per call, one process): the three
 * channels' cumulative sums run in one loop (three independent addition chains instead of
 * one at a time; each chain adds in bin order, so every sum is the same); the gains of a
 * feature are computed over contiguous bins with the feature's running maximum in the
 * same pass (an AVX2 copy, four bins per instruction, chosen at run time; both copies
 * compute each gain with the same IEEE operations in the same order, no fused
 * multiply-add: the division separates every product from the next addition); the choice
 * computes again only the first feature whose maximum reaches the tie threshold and scans
 * it, instead of a pass for the maximum and a pass for the first near-best over every
 * candidate. The maximum ignores NaN gains (the comparison `g > top` is false), as before.
 * Tried and left out: summing two features' channels in one loop (six chains): no faster,
 * so the sums are not bound by the additions' latency; an AVX-512 copy of the gains:
 * 14 -> 12.4 us, not worth a third copy. */

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define BS_HAVE_AVX2 1
/* AVX2 only, no FMA: nothing for the compiler to contract (-ffp-contract=fast) */
#define BS_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define BS_HAVE_AVX2 0
#endif

/* the baseline copy forced (tests: both copies must give the same results) */
static int bs_force_baseline = 0;

static int bs_use_avx2(void)
{
#if BS_HAVE_AVX2
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") != 0;
    }
    return known && !bs_force_baseline;
#else
    return 0;
#endif
}

/* best_splits_simd(force_baseline=-1) -> "avx2" or "baseline": the copy best_splits uses;
 * 1 forces the baseline copy, 0 lets the CPU decide again, -1 only asks. */
static PyObject *best_splits_simd(PyObject *self, PyObject *args)
{
    int force = -1;
    if (!PyArg_ParseTuple(args, "|i", &force))
        return NULL;
    if (force >= 0)
        bs_force_baseline = force != 0;
    return PyUnicode_FromString(bs_use_avx2() ? "avx2" : "baseline");
}

/* Gains of one feature, one gradient channel, missing values right only (n_dir == 1):
 * gf[b] for b < V from the cumulative sums cg (gradient), ch (hessian), cc (count); returns
 * the largest gain (NaN ignored; -inf when none is valid). */
#define BS_GAIN1(b, l, hl, cl, out)                                                          \
    do {                                                                                     \
        double r_ = tg - (l), hr_ = th - (hl), cr_ = tc - (cl);                               \
        int valid_ = ((b) < nb - 1) | (((b) == nb - 1) & has_miss);                           \
        int ok_ = valid_ & ((cl) >= mcs) & (cr_ >= mcs) & ((hl) >= min_hess) & (hr_ >= min_hess) \
                  & ((hl) + lam > 0) & (hr_ + lam > 0);                                       \
        double gain_ = ((l) * (l)) / ((hl) + lam) + (r_ * r_) / (hr_ + lam);                  \
        (out) = ok_ ? gain_ : -INFINITY;                                                     \
    } while (0)

static double gains_one(const double *cg, const double *ch, const double *cc, Py_ssize_t V, Py_ssize_t nb,
                        int has_miss, double tg, double th, double tc, double lam, double min_hess, double mcs,
                        double *gf)
{
    double top = -INFINITY;
    for (Py_ssize_t b = 0; b < V; b++) {
        double out;
        BS_GAIN1(b, cg[b], ch[b], cc[b], out);
        gf[b] = out;
        if (out > top) top = out;
    }
    return top;
}

#if BS_HAVE_AVX2
BS_TARGET_AVX2 static double gains_one_avx2(const double *cg, const double *ch, const double *cc, Py_ssize_t V,
                                            Py_ssize_t nb, int has_miss, double tg, double th, double tc, double lam,
                                            double min_hess, double mcs, double *gf)
{
    const __m256d vtg = _mm256_set1_pd(tg), vth = _mm256_set1_pd(th), vtc = _mm256_set1_pd(tc);
    const __m256d vlam = _mm256_set1_pd(lam), vmh = _mm256_set1_pd(min_hess), vmcs = _mm256_set1_pd(mcs);
    const __m256d ninf = _mm256_set1_pd(-INFINITY), zero = _mm256_setzero_pd(), four = _mm256_set1_pd(4.0);
    /* bin indices and nb - 1 as doubles: exact (both far below 2**53) */
    const __m256d last = _mm256_set1_pd((double)(nb - 1));
    const __m256d miss = has_miss ? _mm256_castsi256_pd(_mm256_set1_epi64x(-1)) : zero;
    __m256d vb = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0), vtop = ninf;
    Py_ssize_t b = 0;
    for (; b + 4 <= V; b += 4) {
        __m256d l = _mm256_loadu_pd(cg + b), hl = _mm256_loadu_pd(ch + b), cl = _mm256_loadu_pd(cc + b);
        __m256d r = _mm256_sub_pd(vtg, l), hr = _mm256_sub_pd(vth, hl), cr = _mm256_sub_pd(vtc, cl);
        __m256d dl = _mm256_add_pd(hl, vlam), dr = _mm256_add_pd(hr, vlam);
        __m256d valid = _mm256_or_pd(_mm256_cmp_pd(vb, last, _CMP_LT_OQ),
                                     _mm256_and_pd(_mm256_cmp_pd(vb, last, _CMP_EQ_OQ), miss));
        __m256d ok = _mm256_and_pd(valid, _mm256_and_pd(_mm256_cmp_pd(cl, vmcs, _CMP_GE_OQ),
                                                        _mm256_cmp_pd(cr, vmcs, _CMP_GE_OQ)));
        ok = _mm256_and_pd(ok, _mm256_and_pd(_mm256_cmp_pd(hl, vmh, _CMP_GE_OQ), _mm256_cmp_pd(hr, vmh, _CMP_GE_OQ)));
        ok = _mm256_and_pd(ok, _mm256_and_pd(_mm256_cmp_pd(dl, zero, _CMP_GT_OQ), _mm256_cmp_pd(dr, zero, _CMP_GT_OQ)));
        __m256d gain = _mm256_add_pd(_mm256_div_pd(_mm256_mul_pd(l, l), dl), _mm256_div_pd(_mm256_mul_pd(r, r), dr));
        __m256d out = _mm256_blendv_pd(ninf, gain, ok);
        _mm256_storeu_pd(gf + b, out);
        vtop = _mm256_max_pd(out, vtop);        /* out > vtop ? out : vtop: NaN ignored */
        vb = _mm256_add_pd(vb, four);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, vtop);
    double top = lanes[0];
    for (int j = 1; j < 4; j++)
        if (lanes[j] > top) top = lanes[j];
    for (; b < V; b++) {
        double out;
        BS_GAIN1(b, cg[b], ch[b], cc[b], out);
        gf[b] = out;
        if (out > top) top = out;
    }
    return top;
}
#endif

/* Cumulative sums and gains of feature f of one node (its histogram Hi, totals t): the
 * cumulative sums over the value bins per channel (np.cumsum order) into fc[c * V + b], the
 * gains of its candidates into fg[b * n_dir + dir]; returns the largest gain (NaN ignored,
 * -inf when none is valid). The same inputs give the same values bit for bit, so the
 * winner's feature is simply computed again for the choice. */
static double feature_gains(const double *Hi, const double *t, Py_ssize_t C, Py_ssize_t d, Py_ssize_t S,
                            Py_ssize_t f, Py_ssize_t nb, Py_ssize_t n_dir, double lam, double min_hess, double mcs,
                            int avx2, double *fc, double *fg)
{
    Py_ssize_t V = S - 1, ng = C - 2;
    if (C == 3) {
        /* three independent chains in one loop; each adds in bin order as below */
        const double *h0 = Hi + f * S, *h1 = Hi + (d + f) * S, *h2 = Hi + (2 * d + f) * S;
        double *c0 = fc, *c1 = fc + V, *c2 = fc + 2 * V;
        double r0 = 0.0, r1 = 0.0, r2 = 0.0;
        for (Py_ssize_t b = 0; b < V; b++) {
            r0 += h0[b]; r1 += h1[b]; r2 += h2[b];
            c0[b] = r0; c1[b] = r1; c2[b] = r2;
        }
    } else {
        for (Py_ssize_t c = 0; c < C; c++) {
            const double *h = Hi + (c * d + f) * S;
            double *cc = fc + c * V, run = 0.0;
            for (Py_ssize_t b = 0; b < V; b++) { run += h[b]; cc[b] = run; }
        }
    }
    const double *hm = Hi + ((C - 2) * d + f) * S;    /* hessian row */
    const double *cm = Hi + ((C - 1) * d + f) * S;    /* count row */
    int has_miss = cm[V] > 0;
    const double *ch = fc + (C - 2) * V, *cc = fc + (C - 1) * V;
    double top = -INFINITY;
    if (ng == 1 && n_dir == 1) {
#if BS_HAVE_AVX2
        if (avx2)
            return gains_one_avx2(fc, ch, cc, V, nb, has_miss, t[0], t[C - 2], t[C - 1], lam, min_hess, mcs, fg);
#else
        (void)avx2;
#endif
        return gains_one(fc, ch, cc, V, nb, has_miss, t[0], t[C - 2], t[C - 1], lam, min_hess, mcs, fg);
    }
    if (ng == 1) {
        /* one gradient channel, both directions: branch-free over the bins; adding 0.0 for
           "missing right" changes no value here */
        double tg = t[0], th = t[C - 2], tc = t[C - 1];
        for (Py_ssize_t dir = 0; dir < n_dir; dir++) {
            double mg = dir ? Hi[f * S + V] : 0.0, mh = dir ? hm[V] : 0.0, mc = dir ? cm[V] : 0.0;
            for (Py_ssize_t b = 0; b < V; b++) {
                double l = fc[b] + mg, hl = ch[b] + mh, cl = cc[b] + mc;
                double r = tg - l, hr = th - hl, cr = tc - cl;
                int valid = dir ? (b < nb - 1) & has_miss : (b < nb - 1) | ((b == nb - 1) & has_miss);
                int ok = valid & (cl >= mcs) & (cr >= mcs) & (hl >= min_hess) & (hr >= min_hess)
                         & (hl + lam > 0) & (hr + lam > 0);
                double gain = (l * l) / (hl + lam) + (r * r) / (hr + lam);
                double out = ok ? gain : -INFINITY;
                fg[b * n_dir + dir] = out;
                if (out > top) top = out;
            }
        }
        return top;
    }
    for (Py_ssize_t b = 0; b < V; b++) {
        int inner = b < nb - 1, topbin = b == nb - 1;
        for (Py_ssize_t dir = 0; dir < n_dir; dir++) {
            int valid = dir == 0 ? (inner || (topbin && has_miss)) : (inner && has_miss);
            double out = -INFINITY;
            if (valid) {
                double hl = ch[b], cl = cc[b];
                if (dir) { hl = hl + hm[V]; cl = cl + cm[V]; }
                double hr = t[C - 2] - hl, cr = t[C - 1] - cl;
                if (cl >= mcs && cr >= mcs && hl >= min_hess && hr >= min_hess && hl + lam > 0 && hr + lam > 0) {
                    double sl = 0.0, sr = 0.0;
                    for (Py_ssize_t c = 0; c < ng; c++) {
                        double l = fc[c * V + b];
                        if (dir) l = l + Hi[(c * d + f) * S + V];
                        double r = t[c] - l;
                        /* NumPy sums the squares over the channels: first term, then += */
                        if (c == 0) { sl = l * l; sr = r * r; }
                        else { sl += l * l; sr += r * r; }
                    }
                    out = sl / (hl + lam) + sr / (hr + lam);
                }
            }
            fg[b * n_dir + dir] = out;
            if (out > top) top = out;
        }
    }
    return top;
}

/* The search of best_splits() on checked arguments (the sizes as the caller validated them;
 * scratch: C*(S-1) + (S-1)*n_dir + d doubles: one feature's cumulative sums and gains, and
 * each feature's largest gain, about 10 KB for C = 3, S = 256, d = 20: it stays in the
 * first-level cache, and an allocation of that size comes from the heap (a scratch of
 * every feature's sums, 160 KB, was over malloc's mmap threshold often enough to cost
 * ~18 page faults per call in a parameter search). A function of its own, so the loops
 * compile as they did before the argument checks were added in front of them. */
static void best_splits_loop(const double *H, const double *H2, Py_ssize_t k1, const double *T,
                             const int64_t *NB, int nb_per_node,
                             const uint8_t *MASK, Py_ssize_t k, Py_ssize_t C, Py_ssize_t d, Py_ssize_t S,
                             Py_ssize_t n_dir, double lam, double min_hess, double tie_rtol, double mcs,
                             double *scratch, int64_t *BEST, double *BG, double *LEFT, int64_t *FEAT, int64_t *BIN,
                             uint8_t *ML, double *GAIN)
{
    Py_ssize_t V = S - 1, ng = C - 2, per = V * n_dir, n_cand = d * per;
    double *fc = scratch;                              /* one feature's sums, (C, V) */
    double *fg = fc + C * V;                           /* its gains, (V, n_dir) */
    double *fmax = fg + per;                           /* each feature's largest gain, (d,) */
#if BS_HAVE_AVX2
    int avx2 = bs_use_avx2();
#else
    int avx2 = 0;
#endif
    for (Py_ssize_t i = 0; i < k; i++) {
        const double *t = T + i * C;
        const double *Hi = i < k1 ? H + i * C * d * S : H2 + (i - k1) * C * d * S;
        /* a feature outside the mask, or with no value bin (a categorical feature in the
           numerical search, an all-missing one), has no valid candidate: not scanned */
#define BS_SKIPPED(f) ((MASK && !MASK[i * d + (f)]) || NB[nb_per_node ? i * d + (f) : (f)] <= 0)
        for (Py_ssize_t f = 0; f < d; f++)
            fmax[f] = BS_SKIPPED(f) ? -INFINITY
                                    : feature_gains(Hi, t, C, d, S, f, NB[nb_per_node ? i * d + f : f], n_dir, lam,
                                                    min_hess, mcs, avx2, fc, fg);
        double top = -INFINITY;
        for (Py_ssize_t f = 0; f < d; f++)
            if (fmax[f] > top) top = fmax[f];
        /* the first candidate within tie_rtol of the best (NumPy: argmax of flat >= thr, over
           every candidate in (feature, bin, dir) order, -inf for the skipped features'): in
           the first feature whose maximum reaches thr, its gains computed again (a feature
           whose gains are all NaN has maximum -inf but no candidate >= thr: the search goes
           on); none at all (NaN gains only): the last candidate, as a scan of every
           candidate would end. fc then holds the chosen feature's sums (none: skipped). */
        Py_ssize_t best = 0;
        double bg = -INFINITY;
        int sums = 0;
        if (n_cand) {
            double thr = top - tie_rtol * fabs(top);
            Py_ssize_t found = -1;
            for (Py_ssize_t f = 0; f < d && found < 0; f++) {
                if (!(fmax[f] >= thr))
                    continue;
                if (BS_SKIPPED(f)) {                   /* all -inf: thr is -inf too */
                    found = f * per;
                    sums = 0;
                    bg = -INFINITY;
                    break;
                }
                feature_gains(Hi, t, C, d, S, f, NB[nb_per_node ? i * d + f : f], n_dir, lam, min_hess, mcs, avx2,
                              fc, fg);
                sums = 1;
                for (Py_ssize_t q = 0; q < per; q++)
                    if (fg[q] >= thr) { found = f * per + q; bg = fg[q]; break; }
            }
            if (found < 0) {
                found = n_cand - 1;
                Py_ssize_t f = d - 1;
                sums = !BS_SKIPPED(f);
                if (sums)
                    feature_gains(Hi, t, C, d, S, f, NB[nb_per_node ? i * d + f : f], n_dir, lam, min_hess, mcs,
                                  avx2, fc, fg);
                bg = sums ? fg[per - 1] : -INFINITY;
            }
            best = found;
        }
#undef BS_SKIPPED
        BEST[i] = best;
        BG[i] = bg;
        double *li = LEFT + i * C;
        if (n_cand && bg > -INFINITY && sums) {
            Py_ssize_t f = best / per, rest = best % per;
            Py_ssize_t b = rest / n_dir, dir = rest % n_dir;
            for (Py_ssize_t c = 0; c < C; c++)
                li[c] = fc[c * V + b] + (dir ? Hi[(c * d + f) * S + V] : 0.0);
        } else {
            for (Py_ssize_t c = 0; c < C; c++) li[c] = 0.0;
        }
        /* per >= 1: the wrapper needs S >= 2 */
        Py_ssize_t bf = best / per, brest = best % per;
        FEAT[i] = bf;
        BIN[i] = brest / n_dir;
        int node_has_miss = n_cand && Hi[((C - 1) * d + bf) * S + V] > 0;   /* no feature: no read */
        ML[i] = node_has_miss ? (brest % n_dir == 1) : (li[C - 1] >= t[C - 1] - li[C - 1]);
        /* the split's gain over the node's own score, split.node_score's arithmetic (the
           squares summed in channel order: NumPy's order below 8 channels) */
        double den = t[C - 2] + lam, num = t[0] * t[0];
        for (Py_ssize_t c = 1; c < ng; c++) num += t[c] * t[c];
        double score = den > 0 ? num / den : 0.0;
        GAIN[i] = isfinite(bg) ? bg - score : -INFINITY;
    }
}

static PyObject *best_splits(PyObject *self, PyObject *args)
{
    PyObject *ohist, *ototals, *onbins, *omask, *obest, *ogain, *oleft, *ofeat, *obin, *oml, *osplit, *ohist2;
    Py_ssize_t k, C, d, S, n_dir, min_child, k1;
    double lam, min_hess, tie_rtol;
    int nb_per_node;
    if (!PyArg_ParseTuple(args, "OOOiOnnnnndddnOOOOOOOOn", &ohist, &ototals, &onbins, &nb_per_node, &omask, &k, &C,
                          &d, &S, &n_dir, &lam, &min_hess, &tie_rtol, &min_child, &obest, &ogain, &oleft, &ofeat,
                          &obin, &oml, &osplit, &ohist2, &k1))
        return NULL;
    /* Checks: the sizes (k >= 0, C >= 3, d >= 0, S >= 2, n_dir 0, 1 or 2), hist (k*C*d*S),
       totals (k*C), n_bins ((k*)d, only compared: no index) and mask (empty or k*d) with
       their dtypes; the outputs written, disjoint, k entries each (left k*C). O(1). */
    KA_CALL(K, "best_splits");
    double *cum = NULL;
    Py_buffer *hist, *totals, *nbins, *mask, *best_b, *gain_b, *left_b, *feat_b, *bin_b, *ml_b, *split_b, *hist2;
    if (!(hist = ka_buffer(&K, "hist", ohist, KA_F64, KA_IN))
        || !(totals = ka_buffer(&K, "totals", ototals, KA_F64, KA_IN))
        || !(nbins = ka_buffer(&K, "n_bins", onbins, KA_I64, KA_IN))
        || !(mask = ka_buffer(&K, "mask", omask, KA_FLAG, KA_IN))
        || !(best_b = ka_buffer(&K, "best", obest, KA_I64, KA_OUT))
        || !(gain_b = ka_buffer(&K, "best_gain", ogain, KA_F64, KA_OUT))
        || !(left_b = ka_buffer(&K, "left", oleft, KA_F64, KA_OUT))
        || !(feat_b = ka_buffer(&K, "feat", ofeat, KA_I64, KA_OUT))
        || !(bin_b = ka_buffer(&K, "bin", obin, KA_I64, KA_OUT))
        || !(ml_b = ka_buffer(&K, "miss_left", oml, KA_FLAG, KA_OUT))
        || !(split_b = ka_buffer(&K, "gain", osplit, KA_F64, KA_OUT))
        || !(hist2 = ka_buffer(&K, "hist2", ohist2, KA_F64, KA_IN)))
        goto fail;
    if (ka_at_least(&K, "k", k, 0) || ka_at_least(&K, "C", C, 3) || ka_at_least(&K, "d", d, 0)
        || ka_at_least(&K, "S", S, 2) || ka_between(&K, "n_dir", n_dir, 0, 2) || ka_between(&K, "k1", k1, 0, k))
        goto fail;
    Py_ssize_t per_node_hist = ka_mul(ka_mul(C, d), S);
    /* n_dir 0 is decided below (1 or 2): sized for 2. The flat candidate index (up to
       d*V*n_dir) must fit: its product is checked like the others */
    Py_ssize_t V = S - 1, n_cand = ka_mul(ka_mul(d, V), n_dir ? n_dir : 2);
    (void)n_cand;
    /* scratch: one feature's cumulative sums (C, V) and gains (V, n_dir), each feature's
       largest gain (d), + 1 */
    Py_ssize_t n_scratch = ka_add(ka_add(ka_add(ka_mul(C, V), ka_mul(V, n_dir ? n_dir : 2)), d), 1);
    if (ka_need(&K, hist, ka_mul(k1, per_node_hist), "k1*C*d*S")
        || ka_need(&K, hist2, ka_mul(k - k1, per_node_hist), "(k-k1)*C*d*S")
        || ka_need(&K, totals, ka_mul(k, C), "k*C")
        || ka_need(&K, nbins, nb_per_node ? ka_mul(k, d) : d, nb_per_node ? "k*d" : "d")
        || (mask->len && ka_need(&K, mask, ka_mul(k, d), "k*d (or empty: no mask)"))
        || ka_need(&K, best_b, k, "k") || ka_need(&K, gain_b, k, "k") || ka_need(&K, left_b, ka_mul(k, C), "k*C")
        || ka_need(&K, feat_b, k, "k") || ka_need(&K, bin_b, k, "k") || ka_need(&K, ml_b, k, "k")
        || ka_need(&K, split_b, k, "k") || ka_disjoint(&K))
        goto fail;
    const double *H = (const double *)hist->buf, *H2 = (const double *)hist2->buf;
    const double *T = (const double *)totals->buf;
    const int64_t *NB = (const int64_t *)nbins->buf;
    const uint8_t *MASK = mask->len ? (const uint8_t *)mask->buf : NULL;
    int64_t *BEST = (int64_t *)best_b->buf;
    double *BG = (double *)gain_b->buf, *LEFT = (double *)left_b->buf;
    int64_t *FEAT = (int64_t *)feat_b->buf, *BIN = (int64_t *)bin_b->buf;
    uint8_t *ML = (uint8_t *)ml_b->buf;
    double *GAIN = (double *)split_b->buf;
    double mcs = (double)min_child;
    if (n_dir == 0) {
        /* both directions when some node has missing values in some feature (count > 0) */
        n_dir = 1;
        for (Py_ssize_t q = 0; q < k * d && n_dir == 1; q++)
            if ((q / d < k1 ? H + (q / d) * per_node_hist : H2 + (q / d - k1) * per_node_hist)
                    [(C - 1) * d * S + (q % d) * S + S - 1] > 0)
                n_dir = 2;
    }
    if (!(cum = ka_malloc(&K, n_scratch, sizeof(double), "C*(S-1) + (S-1)*n_dir + d + 1")))
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    best_splits_loop(H, H2, k1, T, NB, nb_per_node, MASK, k, C, d, S, n_dir, lam, min_hess, tie_rtol, mcs, cum, BEST, BG, LEFT,
                     FEAT, BIN, ML, GAIN);
    Py_END_ALLOW_THREADS
    free(cum);
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    free(cum);
    ka_release(&K);
    return NULL;
}

/* ---------------------------------------------------------------------- prediction */

/* Do the child links (internal node -> left, right) loop? Then the walk would not end (a
 * node that is its own right child, with a leaf on the left, keeps the stack at two frames
 * forever). Depth-first search over all nodes with colours: O(n_nodes) time, n_nodes bytes
 * and n_nodes int64 of scratch. Children shared by two parents are no loop (the walk
 * visits them twice and adds the right values). Sets ValueError and returns -1 on a loop
 * or no memory; the links must already be in range. */
static int has_cycle(ka_call *K, const int64_t *fe, const int64_t *lf, const int64_t *rt, Py_ssize_t n_nodes)
{
    enum { WHITE, LEFT_NEXT, RIGHT_NEXT, ON_PATH, BLACK };   /* LEFT_NEXT .. ON_PATH: on the path */
    if (n_nodes == 0)
        return 0;
    uint8_t *state = calloc((size_t)n_nodes, 1);
    int64_t *st = malloc((size_t)n_nodes * sizeof(int64_t));
    int loop = 0;
    Py_ssize_t at = 0;
    if (state == NULL || st == NULL) {
        free(state); free(st);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t s0 = 0; s0 < n_nodes && !loop; s0++) {
        if (state[s0] != WHITE)
            continue;
        Py_ssize_t sp = 0;
        st[sp++] = s0;
        state[s0] = LEFT_NEXT;
        while (sp > 0) {
            int64_t u = st[sp - 1], child;
            if (fe[u] >= 0 && state[u] == LEFT_NEXT) {
                state[u] = RIGHT_NEXT;
                child = lf[u];
            } else if (fe[u] >= 0 && state[u] == RIGHT_NEXT) {
                state[u] = ON_PATH;
                child = rt[u];
            } else {
                state[u] = BLACK;                         /* a leaf, or both children done */
                sp--;
                continue;
            }
            if (state[child] == WHITE) {
                state[child] = LEFT_NEXT;
                st[sp++] = child;                         /* at most once per node: fits */
            } else if (state[child] != BLACK) {
                loop = 1;                                 /* a node on the current path */
                at = (Py_ssize_t)child;
                break;
            }
        }
    }
    free(state);
    free(st);
    if (loop)
        PyErr_Format(PyExc_ValueError, "%s: malformed tree: its child links do not form a tree (node %zd is "
                     "its own descendant)", K->fn, at);
    return loop ? -1 : 0;
}

/* out[r, col(t)] += value[leaf of row r in tree t] (n_out == 1) or out[r, :] += value[leaf, :]
 * (n_out > 1, forests), trees in the given order. As in training (and the NumPy path), the
 * rows are partitioned down each tree: a node's rows are a range of one index array, split
 * in place branch-free by "x <= threshold" (NaN goes right unless missing_left) on the
 * feature-major XT, so each node reads one feature column front to back. Walking each row
 * through every tree instead was slower than NumPy (measured 204k vs 265k rows/s: the
 * branches of a walk are unpredictable). Per row the trees are added in order, so the sums
 * equal the NumPy path's. idx and tmp are (n,) int64 scratch; stack is (3 * max nodes
 * of a tree) int64.
 *
 * Categorical nodes (models with categorical features): cat_index[node] >= 0 is a row of
 * cat_bits ((n_cat, cat_bytes) uint8 bitsets over the bins, bin b at bit b % 8 of byte
 * b / 8); the column then holds bin codes (BinMapper.encode) and a row goes left when its
 * code's bit is set. A value that is no code of the bitset (NaN, negative, >= 8 * cat_bytes)
 * goes right, as the missing bin does. An empty cat_index: no categorical node. */
static PyObject *predict_raw(PyObject *self, PyObject *args)
{
    PyObject *oXT, *ofeat, *othr, *oml, *oleft, *oright, *oval, *oroots, *ocols, *oout, *oidx, *otmp, *ostack, *oci,
        *ocb;
    Py_ssize_t n, d, n_out, n_cols, cat_bytes;
    if (!PyArg_ParseTuple(args, "OnnOOOOOOnOOOnOOOOOn", &oXT, &n, &d, &ofeat, &othr, &oml, &oleft, &oright, &oval,
                          &n_out, &oroots, &ocols, &oout, &n_cols, &oidx, &otmp, &ostack, &oci, &ocb, &cat_bytes))
        return NULL;
    /* Checks: the sizes; XT (d*n float64); the node arrays (feature int64 gives n_nodes;
       threshold, missing_left, left, right n_nodes each, value n_nodes*n_out, cat_index
       empty or n_nodes); roots and cols int64 (T each); out (n*n_cols), idx and tmp (n) and
       stack (>= 3) written and disjoint from everything (the walk reads node indices from
       the inputs and row ranges from the stack: none may change under it). Index values, in
       a pre-pass over the nodes (O(n_nodes + T) against the walk's O(rows x depth) per
       tree): roots in [0, n_nodes); of each internal node (feature >= 0) the feature < d,
       the children in [0, n_nodes) and a categorical set (cat_index >= 0) a row of
       cat_bits; cols[t] in [0, n_cols) (n_out == 1), else n_out <= n_cols; and no child link
       loops (has_cycle). In the walk, a stack overflow stops it. */
    KA_CALL(K, "predict_raw");
    Py_buffer *XT, *feat, *thr, *ml, *left, *right, *val, *roots, *cols, *out, *idx_b, *tmp_b, *stack_b, *ci_b, *cb_b;
    if (!(XT = ka_buffer(&K, "XT", oXT, KA_F64, KA_IN)) || !(feat = ka_buffer(&K, "feature", ofeat, KA_I64, KA_IN))
        || !(thr = ka_buffer(&K, "threshold", othr, KA_F64, KA_IN))
        || !(ml = ka_buffer(&K, "missing_left", oml, KA_FLAG, KA_IN))
        || !(left = ka_buffer(&K, "left", oleft, KA_I64, KA_IN))
        || !(right = ka_buffer(&K, "right", oright, KA_I64, KA_IN))
        || !(val = ka_buffer(&K, "value", oval, KA_F64, KA_IN))
        || !(roots = ka_buffer(&K, "roots", oroots, KA_I64, KA_IN))
        || !(cols = ka_buffer(&K, "cols", ocols, KA_I64, KA_IN))
        || !(out = ka_buffer(&K, "out", oout, KA_F64, KA_OUT)) || !(idx_b = ka_buffer(&K, "idx", oidx, KA_I64, KA_OUT))
        || !(tmp_b = ka_buffer(&K, "tmp", otmp, KA_I64, KA_OUT))
        || !(stack_b = ka_buffer(&K, "stack", ostack, KA_I64, KA_OUT))
        || !(ci_b = ka_buffer(&K, "cat_index", oci, KA_I64, KA_IN))
        || !(cb_b = ka_buffer(&K, "cat_bits", ocb, KA_U8, KA_IN)))
        goto fail;
    Py_ssize_t n_nodes = ka_items(feat), T = ka_items(roots), cap = ka_items(stack_b);
    if (ka_at_least(&K, "n", n, 0) || ka_at_least(&K, "d", d, 0) || ka_at_least(&K, "n_out", n_out, 1)
        || ka_at_least(&K, "n_cols", n_cols, n_out) || ka_at_least(&K, "cat_bytes", cat_bytes, 0)
        || ka_need(&K, XT, ka_mul(d, n), "d*n") || ka_need(&K, thr, n_nodes, "n_nodes")
        || ka_need(&K, ml, n_nodes, "n_nodes") || ka_need(&K, left, n_nodes, "n_nodes")
        || ka_need(&K, right, n_nodes, "n_nodes") || ka_need(&K, val, ka_mul(n_nodes, n_out), "n_nodes*n_out")
        || (ci_b->len && ka_need(&K, ci_b, n_nodes, "n_nodes (or empty: no categorical node)"))
        || ka_need(&K, cols, T, "len(roots)") || ka_need(&K, out, ka_mul(n, n_cols), "n*n_cols")
        || ka_need(&K, idx_b, n, "n") || ka_need(&K, tmp_b, n, "n") || ka_need(&K, stack_b, T ? 3 : 0, "3")
        || ka_disjoint(&K))
        goto fail;
    const int64_t *ci = ci_b->len ? (const int64_t *)ci_b->buf : NULL;
    const uint8_t *cb = (const uint8_t *)cb_b->buf;
    Py_ssize_t n_cat = cat_bytes ? ka_items(cb_b) / cat_bytes : 0;   /* rows of cat_bits */
    double n_codes = (double)cat_bytes * 8;      /* codes 0 .. n_codes - 1 have a bit */
    const double *x = (const double *)XT->buf, *th = (const double *)thr->buf, *v = (const double *)val->buf;
    const int64_t *fe = (const int64_t *)feat->buf, *lf = (const int64_t *)left->buf;
    const int64_t *rt = (const int64_t *)right->buf, *ro = (const int64_t *)roots->buf;
    const int64_t *co = (const int64_t *)cols->buf;
    const int8_t *m = (const int8_t *)ml->buf;
    double *o = (double *)out->buf;
    int64_t *idx = (int64_t *)idx_b->buf, *tmp = (int64_t *)tmp_b->buf, *stack = (int64_t *)stack_b->buf;
    if (ka_check_range(&K, "roots", ro, T, 0, n_nodes) || (n_out == 1 && ka_check_range(&K, "cols", co, T, 0, n_cols)))
        goto fail;
    /* one branch-free pass (leaves and splits alternate: a branch per node mispredicts),
       then, only if it found something, the pass that says what */
    int64_t bad = 0, backward = 0;       /* backward: a child at or before its parent */
    for (Py_ssize_t i = 0; i < n_nodes; i++) {
        int64_t split = fe[i] >= 0;
        bad |= split & ((fe[i] >= d) | ((uint64_t)lf[i] >= (uint64_t)n_nodes)
                        | ((uint64_t)rt[i] >= (uint64_t)n_nodes));
        backward |= split & ((lf[i] <= i) | (rt[i] <= i));
    }
    if (ci && cat_bytes > 0)             /* cat_bytes 0: no bit is ever read */
        for (Py_ssize_t i = 0; i < n_nodes; i++)
            bad |= (fe[i] >= 0) & (ci[i] >= n_cat);
    for (Py_ssize_t i = 0; i < n_nodes && bad; i++) {
        if (fe[i] < 0)
            continue;                                     /* a leaf: only its value is read */
        if (fe[i] >= d) {
            ka_index_error(&K, "feature", i, fe[i], 0, d);
            goto fail;
        }
        if (lf[i] < 0 || lf[i] >= n_nodes || rt[i] < 0 || rt[i] >= n_nodes) {
            int l_bad = lf[i] < 0 || lf[i] >= n_nodes;
            ka_index_error(&K, l_bad ? "left" : "right", i, l_bad ? lf[i] : rt[i], 0, n_nodes);
            goto fail;
        }
        if (ci && ci[i] >= n_cat && cat_bytes > 0) {      /* cat_bytes 0: no bit is ever read */
            ka_index_error(&K, "cat_index", i, ci[i], -1, n_cat);
            goto fail;
        }
    }
    if (bad) {                           /* (not reached: the second pass names the culprit) */
        PyErr_SetString(PyExc_ValueError, "predict_raw: tree arrays out of range");
        goto fail;
    }
    /* children after their parents (as the grower stores them) cannot loop: indices grow
       along every path; otherwise search the links for a loop */
    if (backward && has_cycle(&K, fe, lf, rt, n_nodes))
        goto fail;
    int malformed = 0;                   /* (a stack too small for the tree) */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t t = 0; t < T && !malformed; t++) {
        for (Py_ssize_t r = 0; r < n; r++)
            idx[r] = r;
        Py_ssize_t sp = 0;
        stack[0] = ro[t]; stack[1] = 0; stack[2] = n; sp = 3;
        while (sp > 0) {
            sp -= 3;
            int64_t node = stack[sp], lo = stack[sp + 1], hi = stack[sp + 2];
            if (fe[node] < 0) {
                if (n_out == 1) {
                    double val1 = v[node];
                    for (int64_t i = lo; i < hi; i++)
                        o[idx[i] * n_cols + co[t]] += val1;
                } else {
                    for (int64_t i = lo; i < hi; i++)
                        for (Py_ssize_t j = 0; j < n_out; j++)
                            o[idx[i] * n_cols + j] += v[node * n_out + j];
                }
                continue;
            }
            const double *col = x + fe[node] * n;
            int64_t nl = lo, nr = 0;
            if (ci && ci[node] >= 0) {
                const uint8_t *bits = cb + ci[node] * cat_bytes;
                for (int64_t i = lo; i < hi; i++) {
                    int64_t r = idx[i];
                    double xv = col[r];
                    int go = 0;
                    if (xv >= 0.0 && xv < n_codes) {       /* false for NaN */
                        Py_ssize_t code = (Py_ssize_t)xv;
                        go = (bits[code >> 3] >> (code & 7)) & 1;
                    }
                    idx[nl] = r; tmp[nr] = r;
                    nl += go; nr += !go;
                }
            } else {
                double tv = th[node];
                int mleft = m[node] != 0;
                for (int64_t i = lo; i < hi; i++) {
                    int64_t r = idx[i];
                    double xv = col[r];
                    int go = (xv <= tv) | (mleft & (xv != xv));
                    idx[nl] = r; tmp[nr] = r;
                    nl += go; nr += !go;
                }
            }
            memcpy(idx + nl, tmp, (size_t)nr * sizeof(int64_t));
            if (sp + 6 > cap) { malformed = 1; break; }
            /* right pushed first: the left subtree is done first (any order gives the same sums) */
            stack[sp] = rt[node]; stack[sp + 1] = nl; stack[sp + 2] = hi; sp += 3;
            stack[sp] = lf[node]; stack[sp + 1] = lo; stack[sp + 2] = nl; sp += 3;
        }
    }
    Py_END_ALLOW_THREADS
    if (malformed) {
        PyErr_SetString(PyExc_ValueError, "predict_raw: malformed tree: its child links do not form a tree");
        goto fail;
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

static PyMethodDef methods[] = {
    {"histogram", histogram, METH_VARARGS,
     "histogram(codes_rm, n, d, channels, cin, rows, all_rows, feats, S, acc, out, hess_is_count, with_count, f32=0)"},
    {"partition", partition, METH_VARARGS,
     "partition(codes_rm, d, feature, rows, scratch_i32, thr_bin, missing_slot, missing_left) -> n_left"},
    {"partition_table", partition_table, METH_VARARGS,
     "partition_table(codes_rm, d, feature, rows, scratch_i32, table256) -> n_left"},
    {"add_leaf_value", add_leaf_value, METH_VARARGS, "add_leaf_value(scores, K, k, rows, value)"},
    {"best_splits_simd", best_splits_simd, METH_VARARGS,
     "best_splits_simd(force_baseline=-1) -> 'avx2' or 'baseline' (1: force the baseline copy, 0: the CPU's)"},
    {"best_splits", best_splits, METH_VARARGS,
     "best_splits(hist, totals, n_bins, per_node, mask, k, C, d, S, n_dir, lam, min_hess, tie_rtol, min_child, "
     "best, best_gain, left, feat, bin, miss_left, gain, hist2, k1) (n_dir 0: 2 if some node has a missing value, "
     "else 1; nodes k1.. are in hist2)"},
    {"predict_raw", predict_raw, METH_VARARGS,
     "predict_raw(XT, n, d, feature, threshold, missing_left, left, right, value, n_out, roots, cols, out, n_cols, "
     "idx, tmp, stack, cat_index, cat_bits, cat_bytes)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hist_kernels",
                                    "Compiled inner loops of the histogram trees.", -1, methods};

PyMODINIT_FUNC PyInit__hist_kernels(void) { return PyModule_Create(&module); }
