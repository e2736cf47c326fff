/* Compiled inner loops of distributed Lloyd k-means (shardlearn.models.kmeans).
 *
 * One Lloyd pass over a chunk of rows finds each row's nearest center (the argmin of
 * -2 x.c + |c|^2, the GEMM form) and, for the E-step, adds the row to its cluster's
 * sum and count. Two forms, both returning the number of labels that changed:
 *
 *   lloyd_gemm_f32/_f64(x, dist, cc, labels, sums, counts, r, k, d, accumulate)
 *       dist = x @ (-2 C)^T was computed by BLAS (r x k); this adds cc, takes the
 *       argmin and accumulates, in one pass instead of NumPy's four.
 *   lloyd_tiled_f32/_f64(x, ct, cc, labels, sums, counts, r, kp, d, accumulate)
 *       computes the dot products itself, 4 rows x TILE centers at a time held in
 *       vector registers, so the distance matrix never exists. For small k*d the
 *       BLAS GEMM of a narrow (k-column) product runs far below the machine's peak
 *       and this is faster; _lloyd.py picks the form (bench/kmeans.md has the measurements).
 *       ct is (-2 C)^T padded to kp = a multiple of TILE columns with zeros, cc is
 *       padded with +inf, so padded centers never win.
 *   lloyd_tiled_fixed_f32/_f64(x, ct, cc, scale, labels, sums, counts, r, kp, d)
 *       the tiled form for KMeans(exact_reduce=True): each row's values are scaled by the
 *       per-feature power of two scale[t], rounded to the nearest integer and added to int64
 *       sums (counts int64 too), so the sums are exact in any order (_exact.py). The tiled
 *       form is used for every k x d there: a row's distances do not depend on the other
 *       rows of the chunk, which a BLAS GEMM does not promise.
 *   sqdist_f64(x, c, out, r, m, d)
 *       squared distances sum_t (x_t - c_t)^2 row by row, for exact_reduce's initialisations.
 *
 * Conventions: all buffers are C-contiguous; x, dist, ct and cc are in the data's dtype; sums
 * (k x d) and counts (k) are float64 and accumulated into (+=), so float32 data is
 * summed in float64; labels are int32, read (to count changes) and overwritten. With
 * accumulate = 0 only labels are written (prediction, the final relabel). The argmin
 * keeps the first minimum on ties, like numpy.argmin. No NaN reaches here (fit and
 * predict reject NaN input). The loops release the GIL (row blocks may run on threads).
 *
 * Both forms have a second copy compiled for AVX2 (+ FMA), chosen at run time when
 * the CPU has both, so the module still loads on any x86-64 (or other) CPU. In the
 * tiled form fused multiply-adds round once instead of twice, so labels of near-tied
 * rows may differ between CPU kinds; the GEMM form's labels do not depend on the copy.
 * On one machine results are bit-identical run to run.
 *
 * Arguments: each entry point checks the dtypes, contiguity and lengths of its buffers
 * against r, k (kp) and d before the loop runs, and raises TypeError / ValueError instead
 * of reading or writing out of bounds (../../_kernel_args.h says how, and why this is checked
 * buffer protocol rather than Cython). The checks are O(1) per call (+ the < TILE padding
 * entries of cc), +0.1-0.2 us on a call of a 256-row chunk (9.1 us tiled, 256 x 32, k =
 * 16; 5.1 us GEMM form, 256 x 64, k = 64), with chunks of ~2 MiB (_data.py); the loops
 * are their own functions and unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../_kernel_args.h"
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_COPY 1
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define HAVE_AVX2_COPY 0
#endif
#define TARGET_BASE

/* 32-byte vectors (GCC/Clang vector extensions): one AVX register, or two SSE2 ones. */
typedef double vec_f64 __attribute__((vector_size(32)));
typedef float vec_f32 __attribute__((vector_size(32)));
#define LANES_f64 4
#define LANES_f32 8
#define TILE_ROWS 4 /* 4 rows x 2 vectors = 8 accumulators: fits 16 registers */

/* How a labelled row is accumulated: not at all (labels only), into float64 sums and
 * counts, or into int64 fixed-point sums and counts (KMeans(exact_reduce=True)). */
enum { ACC_NONE = 0, ACC_FLOAT = 1, ACC_FIXED = 2 };
/* Fixed point: v = x * scale[t] (a power of two: exact) rounded to the nearest integer
 * (ties to even, as numpy.rint) by adding 1.5 * 2^52 and reading the bits: the sum's
 * exponent is then fixed, so its low mantissa bits are v rounded. Exact for |v| < 2^51
 * (_exact.py keeps |v| <= 2^50); two vectorisable operations where llrint is a
 * conversion per element (bench/exact_reduce.md: +0..7 % of the pass against +34..178 %). */
#define MAGIC_F64 6755399441055744.0         /* 1.5 * 2^52 */
#define MAGIC_I64 0x4338000000000000LL       /* its bits */

/* Label row i as `best`; add it to its cluster when accumulating. */
#define ASSIGN(T)                                                                    \
    do {                                                                             \
        changed += labels[i] != best;                                                \
        labels[i] = best;                                                            \
        const T *restrict xi = x + i * d;                                            \
        if (accumulate == ACC_FLOAT) {                                               \
            ((double *)counts)[best] += 1.0;                                         \
            double *restrict s = (double *)sums + (Py_ssize_t)best * d;              \
            for (Py_ssize_t t = 0; t < d; t++)                                       \
                s[t] += (double)xi[t];                                               \
        } else if (accumulate == ACC_FIXED) {                                        \
            ((int64_t *)counts)[best] += 1;                                          \
            int64_t *restrict s = (int64_t *)sums + (Py_ssize_t)best * d;            \
            for (Py_ssize_t t = 0; t < d; t++) {                                     \
                double m_ = (double)xi[t] * scale[t] + MAGIC_F64;                    \
                int64_t b_;                                                          \
                memcpy(&b_, &m_, sizeof b_);                                         \
                s[t] += b_ - MAGIC_I64;                                              \
            }                                                                        \
        }                                                                            \
    } while (0)

/* Label the (up to TILE_ROWS) real rows of the block starting at row i0. */
#define ASSIGN_TILE(T)                                                               \
    do {                                                                             \
        Py_ssize_t rows_ = r - i0 < TILE_ROWS ? r - i0 : TILE_ROWS;                  \
        for (Py_ssize_t q = 0; q < rows_; q++) {                                     \
            Py_ssize_t i = i0 + q;                                                   \
            int best = bestj[q];                                                     \
            ASSIGN(T);                                                               \
        }                                                                            \
    } while (0)

/* Row q's running minimum: take (v, j) where v is smaller, so the first minimum stays;
 * branch-free, as the winner is unpredictable. */
#define ARGMIN_STEP(T, q, value, j)                                                  \
    do {                                                                             \
        T v_ = (value);                                                              \
        int less_ = v_ < bestv[q];                                                   \
        bestv[q] = less_ ? v_ : bestv[q];                                            \
        bestj[q] = less_ ? (int)(j) : bestj[q];                                      \
    } while (0)

/* ---------------------------------------------------------------- after a BLAS GEMM */
/* Baseline copy: TILE_ROWS rows side by side, so their compare chains overlap.
 * (Lane-wise running minima in generic vectors measured no faster; the AVX2 copy
 * below uses a min tree and a compare mask instead.) */
#define DEFINE_GEMM_FORM(T, SUFFIX, TARGET)                                          \
    TARGET static Py_ssize_t lloyd_gemm_loop_##T##SUFFIX(                            \
        const T *restrict x, const T *restrict dist, const T *restrict cc,           \
        int *restrict labels, void *restrict sums, void *restrict counts,            \
        const double *restrict scale, Py_ssize_t r, Py_ssize_t k, Py_ssize_t d,      \
        int accumulate)                                                              \
    {                                                                                \
        Py_ssize_t changed = 0;                                                      \
        for (Py_ssize_t i0 = 0; i0 < r; i0 += TILE_ROWS) {                           \
            const T *restrict dr[TILE_ROWS];                                         \
            T bestv[TILE_ROWS];                                                      \
            int bestj[TILE_ROWS];                                                    \
            _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++) {            \
                dr[q] = dist + (i0 + q < r ? i0 + q : r - 1) * k;                    \
                bestv[q] = (T)(dr[q][0] + cc[0]);                                    \
                bestj[q] = 0;                                                        \
            }                                                                        \
            for (Py_ssize_t j = 1; j < k; j++)                                       \
                _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++)          \
                    ARGMIN_STEP(T, q, (T)(dr[q][j] + cc[j]), j);                     \
            ASSIGN_TILE(T);                                                          \
        }                                                                            \
        return changed;                                                              \
    }

/* ------------------------------------------------------ distances computed in place */
#define DEFINE_TILED_FORM(T, SUFFIX, TARGET)                                         \
    TARGET static Py_ssize_t lloyd_tiled_loop_##T##SUFFIX(                           \
        const T *restrict x, const T *restrict ct, const T *restrict cc,             \
        int *restrict labels, void *restrict sums, void *restrict counts,            \
        const double *restrict scale, Py_ssize_t r, Py_ssize_t kp, Py_ssize_t d,     \
        int accumulate)                                                              \
    {                                                                                \
        enum { W = LANES_##T, TILE = 2 * LANES_##T };                                \
        Py_ssize_t changed = 0;                                                      \
        for (Py_ssize_t i0 = 0; i0 < r; i0 += TILE_ROWS) {                           \
            const T *xr[TILE_ROWS]; /* a short last block repeats its last row */    \
            T bestv[TILE_ROWS];                                                      \
            int bestj[TILE_ROWS];                                                    \
            _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++)              \
                xr[q] = x + (i0 + q < r ? i0 + q : r - 1) * d;                       \
            for (int q = 0; q < TILE_ROWS; q++) {                                    \
                bestv[q] = (T)INFINITY;                                              \
                bestj[q] = 0;                                                        \
            }                                                                        \
            for (Py_ssize_t j0 = 0; j0 < kp; j0 += TILE) {                           \
                vec_##T acc[TILE_ROWS][2];                                           \
                _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++) {        \
                    acc[q][0] = (vec_##T){0};                                        \
                    acc[q][1] = (vec_##T){0};                                        \
                }                                                                    \
                for (Py_ssize_t t = 0; t < d; t++) {                                 \
                    vec_##T c0, c1;                                                  \
                    memcpy(&c0, ct + t * kp + j0, sizeof c0);                        \
                    memcpy(&c1, ct + t * kp + j0 + W, sizeof c1);                    \
                    _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++) {    \
                        vec_##T xv = (vec_##T){0} + xr[q][t]; /* broadcast */        \
                        acc[q][0] += xv * c0;                                        \
                        acc[q][1] += xv * c1;                                        \
                    }                                                                \
                }                                                                    \
                /* (acc must only be indexed by unrolled loops, or it leaves the   \
                 * registers: measured 30% slower) */                                \
                T dots[TILE_ROWS][TILE];                                             \
                _Pragma("GCC unroll 4") for (int q = 0; q < TILE_ROWS; q++) {        \
                    memcpy(dots[q], &acc[q][0], sizeof acc[q][0]);                   \
                    memcpy(dots[q] + W, &acc[q][1], sizeof acc[q][1]);               \
                }                                                                    \
                for (int q = 0; q < TILE_ROWS; q++)                                  \
                    for (int c = 0; c < TILE; c++)                                   \
                        ARGMIN_STEP(T, q, (T)(dots[q][c] + cc[j0 + c]), j0 + c);     \
            }                                                                        \
            ASSIGN_TILE(T);                                                          \
        }                                                                            \
        return changed;                                                              \
    }

typedef float f32;
typedef double f64;
DEFINE_GEMM_FORM(f32, _base, TARGET_BASE)
DEFINE_GEMM_FORM(f64, _base, TARGET_BASE)
DEFINE_TILED_FORM(f32, _base, TARGET_BASE)
DEFINE_TILED_FORM(f64, _base, TARGET_BASE)
#if HAVE_AVX2_COPY
/* AVX2 argmin of one row of the GEMM form: the row minimum with four vector
 * accumulators, then the first column equal to it (vector compares and a bit mask).
 * dist + cc is computed the same way both times and as in the scalar loop, so the
 * labels equal the baseline copy's exactly. k=64, d=64, 100k rows, one thread: GEMM
 * and pass 30.4 instead of 32.5 ms (float64), 15.7 instead of 17.0 ms (float32). */
#define DEFINE_AVX2_ARGMIN(T, V, W, LOAD, ADD, MIN, SET1, CMPEQ, MASK)                 \
    TARGET_AVX2 static inline int argmin_avx2_##T(const T *restrict di,                \
                                                 const T *restrict cc, Py_ssize_t k)   \
    {                                                                                \
        V m0 = ADD(LOAD(di), LOAD(cc)), m1 = ADD(LOAD(di + W), LOAD(cc + W));        \
        V m2 = ADD(LOAD(di + 2 * W), LOAD(cc + 2 * W));                              \
        V m3 = ADD(LOAD(di + 3 * W), LOAD(cc + 3 * W));                              \
        Py_ssize_t j = 4 * W;                                                        \
        for (; j + 4 * W <= k; j += 4 * W) {                                         \
            m0 = MIN(m0, ADD(LOAD(di + j), LOAD(cc + j)));                           \
            m1 = MIN(m1, ADD(LOAD(di + j + W), LOAD(cc + j + W)));                   \
            m2 = MIN(m2, ADD(LOAD(di + j + 2 * W), LOAD(cc + j + 2 * W)));           \
            m3 = MIN(m3, ADD(LOAD(di + j + 3 * W), LOAD(cc + j + 3 * W)));           \
        }                                                                            \
        T lanes[W];                                                                  \
        memcpy(lanes, (m0 = MIN(MIN(m0, m1), MIN(m2, m3)), &m0), sizeof lanes);      \
        T mn = lanes[0];                                                             \
        for (int l = 1; l < W; l++)                                                  \
            mn = lanes[l] < mn ? lanes[l] : mn;                                      \
        for (; j < k; j++) {                                                         \
            T v = (T)(di[j] + cc[j]);                                                \
            mn = v < mn ? v : mn;                                                    \
        }                                                                            \
        V target = SET1(mn);                                                         \
        for (j = 0; j + W <= k; j += W) {                                            \
            int mask = MASK(CMPEQ(ADD(LOAD(di + j), LOAD(cc + j)), target));         \
            if (mask)                                                                \
                return (int)j + __builtin_ctz((unsigned)mask);                       \
        }                                                                            \
        for (; j < k; j++)                                                           \
            if ((T)(di[j] + cc[j]) == mn)                                            \
                return (int)j;                                                       \
        return 0; /* not reached: the minimum is one of the values */               \
    }

#define CMPEQ_PD(a, b) _mm256_cmp_pd(a, b, _CMP_EQ_OQ)
#define CMPEQ_PS(a, b) _mm256_cmp_ps(a, b, _CMP_EQ_OQ)
DEFINE_AVX2_ARGMIN(f64, __m256d, 4, _mm256_loadu_pd, _mm256_add_pd, _mm256_min_pd,
                   _mm256_set1_pd, CMPEQ_PD, _mm256_movemask_pd)
DEFINE_AVX2_ARGMIN(f32, __m256, 8, _mm256_loadu_ps, _mm256_add_ps, _mm256_min_ps,
                   _mm256_set1_ps, CMPEQ_PS, _mm256_movemask_ps)

/* The GEMM form with that argmin, for rows of at least 4 vectors (else the
 * interleaved scalar loop, which is as fast there). */
#define DEFINE_GEMM_FORM_AVX2(T)                                                     \
    TARGET_AVX2 static Py_ssize_t lloyd_gemm_loop_##T##_avx2(                        \
        const T *restrict x, const T *restrict dist, const T *restrict cc,           \
        int *restrict labels, void *restrict sums, void *restrict counts,            \
        const double *restrict scale, Py_ssize_t r, Py_ssize_t k, Py_ssize_t d,      \
        int accumulate)                                                              \
    {                                                                                \
        if (k < 4 * LANES_##T)                                                       \
            return lloyd_gemm_loop_##T##_base(x, dist, cc, labels, sums, counts, scale, \
                                              r, k, d, accumulate);                  \
        Py_ssize_t changed = 0;                                                      \
        for (Py_ssize_t i = 0; i < r; i++) {                                         \
            int best = argmin_avx2_##T(dist + i * k, cc, k);                         \
            ASSIGN(T);                                                               \
        }                                                                            \
        return changed;                                                              \
    }

DEFINE_GEMM_FORM_AVX2(f32)
DEFINE_GEMM_FORM_AVX2(f64)
DEFINE_TILED_FORM(f32, _avx2, TARGET_AVX2)
DEFINE_TILED_FORM(f64, _avx2, TARGET_AVX2)
#endif

static int use_avx2(void)
{
#if HAVE_AVX2_COPY
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------ Python wrappers */
/* name(x, centers_or_dist, cc, labels, sums, counts, r, k_or_kp, d, accumulate) -> changed
 * name_fixed(x, ct, cc, scale, labels, sums, counts, r, kp, d) -> changed   (tiled only)
 *
 * Argument checks (_kernel_args.h): x (r*d), dist (r*k) or ct (d*kp), cc (k or kp) in the
 * data's dtype; labels (r) int32, written; with accumulate, sums and counts float64 (the
 * _fixed entry points: always accumulate, sums and counts int64, scale (d) float64, read),
 * written, disjoint from the rest. A label is a row index of sums: in the GEMM form it is
 * < k, so sums needs k*d and counts k; the tiled form is given only the padded kp, so its k
 * is taken from counts (k = min(len(counts), kp)) and cc[k:kp] must be +inf, which no
 * distance beats (dist + inf is inf or NaN, never < the running minimum): labels stay < k.
 * Without accumulate sums and counts are not touched (_lloyd.py then passes one small
 * array as both). All of it is O(1) per call, plus the < TILE padding entries. */
#define DEFINE_WRAPPER(NAME, KIND, TILED, TILE, FIXED, LOOP_AVX2, LOOP_BASE)             \
    static PyObject *NAME(PyObject *self, PyObject *args)                              \
    {                                                                                \
        PyObject *ox, *oc, *occ, *olabels, *osums, *ocounts, *oscale = NULL;         \
        Py_ssize_t r, k, d, changed = 0;                                             \
        int acc = 1;                                                                 \
        if (FIXED ? !PyArg_ParseTuple(args, "OOOOOOOnnn", &ox, &oc, &occ, &oscale,   \
                                      &olabels, &osums, &ocounts, &r, &k, &d)        \
                  : !PyArg_ParseTuple(args, "OOOOOOnnnp", &ox, &oc, &occ, &olabels,  \
                                      &osums, &ocounts, &r, &k, &d, &acc))           \
            return NULL;                                                             \
        KA_CALL(K, #NAME);                                                           \
        const char *kname = TILED ? "kp" : "k";                                      \
        int mode = acc ? KA_OUT : KA_IN;                                             \
        ka_kind sum_kind = FIXED ? KA_I64 : KA_F64;                                  \
        Py_buffer *x, *c, *cc, *labels, *sums = NULL, *counts = NULL, *scale = NULL; \
        if (!(x = ka_buffer(&K, "x", ox, KIND, KA_IN))                               \
            || !(c = ka_buffer(&K, TILED ? "ct" : "dist", oc, KIND, KA_IN))          \
            || !(cc = ka_buffer(&K, "cc", occ, KIND, KA_IN))                         \
            || (FIXED && !(scale = ka_buffer(&K, "scale", oscale, KA_F64, KA_IN)))   \
            || !(labels = ka_buffer(&K, "labels", olabels, KA_I32, KA_OUT))          \
            || !(sums = ka_buffer(&K, "sums", osums, sum_kind, mode))                \
            || !(counts = ka_buffer(&K, "counts", ocounts, sum_kind, mode)))         \
            goto fail;                                                               \
        if (ka_at_least(&K, "r", r, 0) || ka_between(&K, kname, k, 1, INT_MAX)       \
            || ka_at_least(&K, "d", d, 0) || ka_need(&K, x, ka_mul(r, d), "r*d")     \
            || ka_need(&K, labels, r, "r") || (FIXED && ka_need(&K, scale, d, "d"))) \
            goto fail;                                                               \
        Py_ssize_t nk = k; /* the clusters that sums and counts hold */              \
        if (TILED) {                                                                 \
            if (k % (TILE) != 0) {                                                   \
                PyErr_Format(PyExc_ValueError, "%s: kp: must be a multiple of %d "   \
                             "(centers per tile), got %zd", K.fn, (int)(TILE), k);   \
                goto fail;                                                           \
            }                                                                        \
            if (ka_need(&K, c, ka_mul(d, k), "d*kp") || ka_need(&K, cc, k, "kp"))    \
                goto fail;                                                           \
            if (acc) {                                                               \
                nk = ka_items(counts) < k ? ka_items(counts) : k;                    \
                const KIND##_T *ccv = (const KIND##_T *)cc->buf;                     \
                for (Py_ssize_t j = nk; j < k; j++)                                  \
                    if (!(ccv[j] == (KIND##_T)INFINITY)) {                           \
                        PyErr_Format(PyExc_ValueError, "%s: cc: cc[%zd] must be +inf " \
                                     "(a padded center: counts has room for %zd "    \
                                     "clusters of the kp = %zd)", K.fn, j, nk, k);   \
                        goto fail;                                                   \
                    }                                                                \
            }                                                                        \
        } else if (ka_need(&K, c, ka_mul(r, k), "r*k") || ka_need(&K, cc, k, "k")) {  \
            goto fail;                                                               \
        }                                                                            \
        if (acc && (ka_need(&K, counts, TILED ? 1 : k, TILED ? "1" : "k")            \
                    || ka_need(&K, sums, ka_mul(nk, d), TILED ? "len(counts)*d" : "k*d"))) \
            goto fail;                                                               \
        if (ka_disjoint(&K))                                                         \
            goto fail;                                                               \
        int avx2 = use_avx2();                                                       \
        int how = !acc ? ACC_NONE : FIXED ? ACC_FIXED : ACC_FLOAT;                   \
        const double *sc = FIXED ? (const double *)scale->buf : NULL;                \
        Py_BEGIN_ALLOW_THREADS                                                       \
        changed = (avx2 ? LOOP_AVX2 : LOOP_BASE)(x->buf, c->buf, cc->buf, labels->buf, \
                                                 sums->buf, counts->buf, sc, r, k, d, how); \
        Py_END_ALLOW_THREADS                                                         \
        ka_release(&K);                                                              \
        return PyLong_FromSsize_t(changed);                                          \
    fail:                                                                            \
        ka_release(&K);                                                              \
        return NULL;                                                                 \
    }

#if HAVE_AVX2_COPY
#define AVX2_COPY(name) name##_avx2
#else
#define AVX2_COPY(name) name##_base
#endif
#define KA_F32_T float
#define KA_F64_T double
DEFINE_WRAPPER(lloyd_gemm_f32, KA_F32, 0, 1, 0, AVX2_COPY(lloyd_gemm_loop_f32), lloyd_gemm_loop_f32_base)
DEFINE_WRAPPER(lloyd_gemm_f64, KA_F64, 0, 1, 0, AVX2_COPY(lloyd_gemm_loop_f64), lloyd_gemm_loop_f64_base)
DEFINE_WRAPPER(lloyd_tiled_f32, KA_F32, 1, 2 * LANES_f32, 0, AVX2_COPY(lloyd_tiled_loop_f32),
               lloyd_tiled_loop_f32_base)
DEFINE_WRAPPER(lloyd_tiled_f64, KA_F64, 1, 2 * LANES_f64, 0, AVX2_COPY(lloyd_tiled_loop_f64),
               lloyd_tiled_loop_f64_base)
DEFINE_WRAPPER(lloyd_tiled_fixed_f32, KA_F32, 1, 2 * LANES_f32, 1, AVX2_COPY(lloyd_tiled_loop_f32),
               lloyd_tiled_loop_f32_base)
DEFINE_WRAPPER(lloyd_tiled_fixed_f64, KA_F64, 1, 2 * LANES_f64, 1, AVX2_COPY(lloyd_tiled_loop_f64),
               lloyd_tiled_loop_f64_base)

/* ------------------------------------------------- squared distances, row by row */
/* out[i, j] = sum_t (x[i, t] - c[j, t])^2 in a fixed order for every row: four lanes (t mod
 * 4, each added in t order), folded as (l0 + l1) + (l2 + l3), then the d mod 4 last
 * features in order. Each entry is computed the same way whatever rows share the call, so
 * the result of a row does not depend on the chunking (a BLAS GEMM does not promise that).
 * No fused multiply-add in either copy (the AVX2 copy is plain avx2: wider vectors, the
 * same roundings), so both copies and the NumPy form in _exact.py give the same bits. Four
 * candidates at a time (independent accumulators: the adds overlap); a last partial group
 * repeats its last candidate and drops the copies. Used by the initialisations of
 * KMeans(exact_reduce=True); x (r x d) and c (m x d) are float64. */
typedef double v4d __attribute__((vector_size(32)));
#define DEFINE_SQDIST(SUFFIX, TARGET)                                                \
    TARGET static void sqdist_loop##SUFFIX(const double *restrict x,                 \
                                           const double *restrict c,                 \
                                           double *restrict out, Py_ssize_t r,       \
                                           Py_ssize_t m, Py_ssize_t d)               \
    {                                                                                \
        const Py_ssize_t d4 = d - d % 4;                                             \
        for (Py_ssize_t i = 0; i < r; i++) {                                         \
            const double *restrict xi = x + i * d;                                   \
            for (Py_ssize_t j0 = 0; j0 < m; j0 += 4) {                               \
                const double *cj[4];                                                 \
                v4d acc[4];                                                          \
                _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {                \
                    cj[q] = c + (j0 + q < m ? j0 + q : m - 1) * d;                   \
                    acc[q] = (v4d){0, 0, 0, 0};                                      \
                }                                                                    \
                for (Py_ssize_t t = 0; t < d4; t += 4) {                             \
                    v4d xv;                                                          \
                    memcpy(&xv, xi + t, sizeof xv);                                  \
                    _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {            \
                        v4d cv, e;                                                   \
                        memcpy(&cv, cj[q] + t, sizeof cv);                           \
                        e = xv - cv;                                                 \
                        e = e * e;                                                   \
                        acc[q] = acc[q] + e;                                         \
                    }                                                                \
                }                                                                    \
                double s[4];                                                         \
                _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {                \
                    double l[4];                                                     \
                    memcpy(l, &acc[q], sizeof l);                                    \
                    s[q] = (l[0] + l[1]) + (l[2] + l[3]);                            \
                }                                                                    \
                for (int q = 0; q < 4 && j0 + q < m; q++) {                          \
                    double v = s[q];                                                 \
                    for (Py_ssize_t t = d4; t < d; t++) {                            \
                        const double e = xi[t] - cj[q][t];                           \
                        const double e2 = e * e;                                     \
                        v = v + e2;                                                  \
                    }                                                                \
                    out[i * m + j0 + q] = v;                                         \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }
DEFINE_SQDIST(_base, TARGET_BASE)
#if HAVE_AVX2_COPY
DEFINE_SQDIST(_avx2, __attribute__((target("avx2"))))
#endif

/* sqdist_f64(x, c, out, r, m, d): x (r*d), c (m*d) float64 read; out (r*m) float64 written. */
static PyObject *sqdist_f64(PyObject *self, PyObject *args)
{
    PyObject *ox, *oc, *oout;
    Py_ssize_t r, m, d;
    if (!PyArg_ParseTuple(args, "OOOnnn", &ox, &oc, &oout, &r, &m, &d))
        return NULL;
    KA_CALL(K, "sqdist_f64");
    Py_buffer *x, *c, *out;
    if (!(x = ka_buffer(&K, "x", ox, KA_F64, KA_IN)) || !(c = ka_buffer(&K, "c", oc, KA_F64, KA_IN))
        || !(out = ka_buffer(&K, "out", oout, KA_F64, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "r", r, 0) || ka_at_least(&K, "m", m, 0) || ka_at_least(&K, "d", d, 0)
        || ka_need(&K, x, ka_mul(r, d), "r*d") || ka_need(&K, c, ka_mul(m, d), "m*d")
        || ka_need(&K, out, ka_mul(r, m), "r*m") || ka_disjoint(&K))
        goto fail;
    {
#if HAVE_AVX2_COPY
        int avx2 = use_avx2();
#endif
        Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_COPY
        if (avx2)
            sqdist_loop_avx2(x->buf, c->buf, out->buf, r, m, d);
        else
#endif
            sqdist_loop_base(x->buf, c->buf, out->buf, r, m, d);
        Py_END_ALLOW_THREADS
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

static PyObject *simd(PyObject *self, PyObject *args)
{
    return PyUnicode_FromString(use_avx2() ? "avx2+fma" : "baseline");
}

static PyMethodDef methods[] = {
    {"lloyd_gemm_f32", lloyd_gemm_f32, METH_VARARGS,
     "lloyd_gemm_f32(x, dist, cc, labels, sums, counts, r, k, d, accumulate) -> changed"},
    {"lloyd_gemm_f64", lloyd_gemm_f64, METH_VARARGS,
     "lloyd_gemm_f64(x, dist, cc, labels, sums, counts, r, k, d, accumulate) -> changed"},
    {"lloyd_tiled_f32", lloyd_tiled_f32, METH_VARARGS,
     "lloyd_tiled_f32(x, ct, cc, labels, sums, counts, r, kp, d, accumulate) -> changed"},
    {"lloyd_tiled_f64", lloyd_tiled_f64, METH_VARARGS,
     "lloyd_tiled_f64(x, ct, cc, labels, sums, counts, r, kp, d, accumulate) -> changed"},
    {"lloyd_tiled_fixed_f32", lloyd_tiled_fixed_f32, METH_VARARGS,
     "lloyd_tiled_fixed_f32(x, ct, cc, scale, labels, sums, counts, r, kp, d) -> changed (int64 sums)"},
    {"lloyd_tiled_fixed_f64", lloyd_tiled_fixed_f64, METH_VARARGS,
     "lloyd_tiled_fixed_f64(x, ct, cc, scale, labels, sums, counts, r, kp, d) -> changed (int64 sums)"},
    {"sqdist_f64", sqdist_f64, METH_VARARGS,
     "sqdist_f64(x, c, out, r, m, d): out[i, j] = sum_t (x[i, t] - c[j, t])^2, row by row"},
    {"simd", simd, METH_NOARGS, "which copy of the tiled loops runs: 'avx2+fma' or 'baseline'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kmeans_kernels",
    "Compiled inner loops of Lloyd k-means (see _kmeans_kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__kmeans_kernels(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* centers per tile of the tiled form: ct and cc are padded to a multiple of it */
    if (PyModule_AddIntConstant(m, "TILE_F32", 2 * LANES_f32) < 0 ||
        PyModule_AddIntConstant(m, "TILE_F64", 2 * LANES_f64) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
