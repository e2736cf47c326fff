/* Compiled loops of the linear models' exact objective (exact_reduce=True, _exact.py).
 *
 *   rowdot_f64(x, at, z, n, d, K)
 *       z[i, k] = x_i . at_k for rows x (n x d) and coefficient columns at (K x d), each
 *       entry in a fixed order for every row: four lanes (j mod 4, each added in j order),
 *       folded as (l0 + l1) + (l2 + l3), then the d mod 4 last features in order. A row's
 *       value does not depend on the rows around it (BLAS GEMV/GEMM do not promise that),
 *       so z, the loss and the residual of a row are the same bits on any rank.
 *   xtr_fixed_f64(x, r, scale, g, n, d, K)
 *       g[k, j] += round(x_ij * r_ik * scale[k, j]) as int64 (K x d, class-major so the
 *       inner loop is contiguous; accumulated): the gradient's X^T r in int64 fixed point,
 *       exact in any order. scale[k, j] is a power of two that keeps every rounded value below 2^50 and every sum of n_total of them
 *       below 2^62 (shardlearn.util.fixed.fixed_scales). Rounding to nearest, ties to even,
 *       by the magic number (v + 1.5 * 2^52 read as an integer; exact for |v| < 2^51), as
 *       in _kmeans_kernels.c.
 *   wsum_fixed_f64(v, w, scale, n) -> int
 *       sum_i round(v_i * w_i * scale): a weighted loss sum in fixed point.
 *   colrange_f64(x, hi, lo, n, d)
 *       per-column maxima and minima (accumulated into hi, lo): the setup's extremes.
 *
 * No fused multiply-add in either copy (the AVX2 copy is plain avx2: wider vectors, the
 * same roundings; setup.py's -ffp-contract=fast cannot fuse without an FMA target), so
 * both copies and the NumPy forms in _exact.py give the same bits. x is float64 (the
 * caller widens float32 row blocks, as the float path does); all buffers C-contiguous.
 * The loops release the GIL.
 *
 * Arguments: each entry point checks dtypes, contiguity, lengths against n, d, K and that
 * the output is disjoint from the inputs (../../_kernel_args.h), O(1) per call; the
 * callers pass blocks of ~2^18 values (_objective.CHUNK_ELEMENTS), so the checks are far
 * below a microsecond against milliseconds of loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../../_kernel_args.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_COPY 1
#else
#define HAVE_AVX2_COPY 0
#endif
#define TARGET_BASE

#define MAGIC_F64 6755399441055744.0   /* 1.5 * 2^52 */
#define MAGIC_I64 0x4338000000000000LL /* its bits */

typedef double v4d __attribute__((vector_size(32)));

#define DEFINE_ROWDOT(SUFFIX, TARGET)                                                \
    TARGET static void rowdot_loop##SUFFIX(const double *restrict x,                 \
                                           const double *restrict at,                \
                                           double *restrict z, Py_ssize_t n,         \
                                           Py_ssize_t d, Py_ssize_t K)               \
    {                                                                                \
        const Py_ssize_t d4 = d - d % 4;                                             \
        for (Py_ssize_t i = 0; i < n; i++) {                                         \
            const double *restrict xi = x + i * d;                                   \
            for (Py_ssize_t k = 0; k < K; k++) {                                     \
                const double *restrict a = at + k * d;                               \
                v4d acc = {0, 0, 0, 0};                                              \
                for (Py_ssize_t j = 0; j < d4; j += 4) {                             \
                    v4d xv, av, p;                                                   \
                    memcpy(&xv, xi + j, sizeof xv);                                  \
                    memcpy(&av, a + j, sizeof av);                                   \
                    p = xv * av;                                                     \
                    acc = acc + p;                                                   \
                }                                                                    \
                double l[4];                                                         \
                memcpy(l, &acc, sizeof l);                                           \
                double s = (l[0] + l[1]) + (l[2] + l[3]);                            \
                for (Py_ssize_t j = d4; j < d; j++) {                                \
                    const double p = xi[j] * a[j];                                   \
                    s = s + p;                                                       \
                }                                                                    \
                z[i * K + k] = s;                                                    \
            }                                                                        \
        }                                                                            \
    }

#define DEFINE_XTR(SUFFIX, TARGET)                                                   \
    TARGET static void xtr_loop##SUFFIX(const double *restrict x,                    \
                                        const double *restrict r,                    \
                                        const double *restrict scale,                \
                                        int64_t *restrict g, Py_ssize_t n,           \
                                        Py_ssize_t d, Py_ssize_t K)                  \
    {                                                                                \
        for (Py_ssize_t i = 0; i < n; i++) {                                         \
            const double *restrict xi = x + i * d;                                   \
            const double *restrict ri = r + i * K;                                   \
            for (Py_ssize_t k = 0; k < K; k++) {                                     \
                const double rik = ri[k];                                            \
                if (rik == 0.0)                                                      \
                    continue; /* adds round(0) = 0: skipping is the same sum */      \
                const double *restrict sk = scale + k * d;                           \
                int64_t *restrict gk = g + k * d;                                    \
                for (Py_ssize_t j = 0; j < d; j++) {                                 \
                    const double p = xi[j] * rik;                                    \
                    const double v = p * sk[j];                                      \
                    const double m = v + MAGIC_F64;                                  \
                    int64_t b;                                                       \
                    memcpy(&b, &m, sizeof b);                                        \
                    gk[j] += b - MAGIC_I64;                                          \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }

/* sum_i round(v_i * w_i * scale) as int64 (the weighted loss sums) */
#define DEFINE_WSUM(SUFFIX, TARGET)                                                  \
    TARGET static int64_t wsum_loop##SUFFIX(const double *restrict v,                \
                                            const double *restrict w, double scale,  \
                                            Py_ssize_t n)                            \
    {                                                                                \
        int64_t acc = 0;                                                             \
        for (Py_ssize_t i = 0; i < n; i++) {                                         \
            const double p = v[i] * w[i];                                            \
            const double q = p * scale;                                              \
            const double m = q + MAGIC_F64;                                          \
            int64_t b;                                                               \
            memcpy(&b, &m, sizeof b);                                                \
            acc += b - MAGIC_I64;                                                    \
        }                                                                            \
        return acc;                                                                  \
    }

/* hi[j] = max(hi[j], x_ij), lo[j] = min(lo[j], x_ij) over the rows: one pass (NumPy's
 * max/min along axis 0 of a C-contiguous array take two slow ones) */
#define MAX_(a, b) ((a) > (b) ? (a) : (b))
#define MIN_(a, b) ((a) < (b) ? (a) : (b))
#define DEFINE_RANGE(SUFFIX, TARGET)                                                 \
    TARGET static void range_loop##SUFFIX(const double *restrict x,                  \
                                          double *restrict hi, double *restrict lo,  \
                                          Py_ssize_t n, Py_ssize_t d)                \
    {                                                                                \
        Py_ssize_t i = 0;                                                            \
        for (; i + 4 <= n; i += 4) { /* four rows per visit of hi and lo */          \
            const double *restrict x0 = x + i * d, *restrict x1 = x0 + d;            \
            const double *restrict x2 = x1 + d, *restrict x3 = x2 + d;               \
            for (Py_ssize_t j = 0; j < d; j++) {                                     \
                const double a = MAX_(x0[j], x1[j]), b = MAX_(x2[j], x3[j]);         \
                const double c = MIN_(x0[j], x1[j]), e = MIN_(x2[j], x3[j]);         \
                const double m = MAX_(a, b), q = MIN_(c, e);                         \
                hi[j] = MAX_(hi[j], m);                                              \
                lo[j] = MIN_(lo[j], q);                                              \
            }                                                                        \
        }                                                                            \
        for (; i < n; i++) {                                                         \
            const double *restrict xi = x + i * d;                                   \
            for (Py_ssize_t j = 0; j < d; j++) {                                     \
                hi[j] = MAX_(hi[j], xi[j]);                                          \
                lo[j] = MIN_(lo[j], xi[j]);                                          \
            }                                                                        \
        }                                                                            \
    }

DEFINE_ROWDOT(_base, TARGET_BASE)
DEFINE_RANGE(_base, TARGET_BASE)
DEFINE_XTR(_base, TARGET_BASE)
DEFINE_WSUM(_base, TARGET_BASE)
#if HAVE_AVX2_COPY
DEFINE_ROWDOT(_avx2, __attribute__((target("avx2"))))
DEFINE_XTR(_avx2, __attribute__((target("avx2"))))
DEFINE_WSUM(_avx2, __attribute__((target("avx2"))))
DEFINE_RANGE(_avx2, __attribute__((target("avx2"))))
#endif

static int use_avx2(void)
{
#if HAVE_AVX2_COPY
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2");
    }
    return known;
#else
    return 0;
#endif
}

/* rowdot_f64(x, at, z, n, d, K): x (n*d), at (K*d) float64 read; z (n*K) float64 written. */
static PyObject *rowdot_f64(PyObject *self, PyObject *args)
{
    PyObject *ox, *oa, *oz;
    Py_ssize_t n, d, K;
    if (!PyArg_ParseTuple(args, "OOOnnn", &ox, &oa, &oz, &n, &d, &K))
        return NULL;
    KA_CALL(C, "rowdot_f64");
    Py_buffer *x, *at, *z;
    if (!(x = ka_buffer(&C, "x", ox, KA_F64, KA_IN)) || !(at = ka_buffer(&C, "at", oa, KA_F64, KA_IN))
        || !(z = ka_buffer(&C, "z", oz, KA_F64, KA_OUT)))
        goto fail;
    if (ka_at_least(&C, "n", n, 0) || ka_at_least(&C, "d", d, 0) || ka_at_least(&C, "K", K, 1)
        || ka_need(&C, x, ka_mul(n, d), "n*d") || ka_need(&C, at, ka_mul(K, d), "K*d")
        || ka_need(&C, z, ka_mul(n, K), "n*K") || ka_disjoint(&C))
        goto fail;
    {
        int avx2 = use_avx2();
        Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_COPY
        if (avx2)
            rowdot_loop_avx2(x->buf, at->buf, z->buf, n, d, K);
        else
#endif
            rowdot_loop_base(x->buf, at->buf, z->buf, n, d, K);
        Py_END_ALLOW_THREADS
        (void)avx2;
    }
    ka_release(&C);
    Py_RETURN_NONE;
fail:
    ka_release(&C);
    return NULL;
}

/* xtr_fixed_f64(x, r, scale, g, n, d, K): x (n*d), r (n*K), scale (K*d) float64 read;
 * g (K*d, class-major) int64 accumulated. */
static PyObject *xtr_fixed_f64(PyObject *self, PyObject *args)
{
    PyObject *ox, *or_, *os, *og;
    Py_ssize_t n, d, K;
    if (!PyArg_ParseTuple(args, "OOOOnnn", &ox, &or_, &os, &og, &n, &d, &K))
        return NULL;
    KA_CALL(C, "xtr_fixed_f64");
    Py_buffer *x, *r, *s, *g;
    if (!(x = ka_buffer(&C, "x", ox, KA_F64, KA_IN)) || !(r = ka_buffer(&C, "r", or_, KA_F64, KA_IN))
        || !(s = ka_buffer(&C, "scale", os, KA_F64, KA_IN)) || !(g = ka_buffer(&C, "g", og, KA_I64, KA_OUT)))
        goto fail;
    if (ka_at_least(&C, "n", n, 0) || ka_at_least(&C, "d", d, 0) || ka_at_least(&C, "K", K, 1)
        || ka_need(&C, x, ka_mul(n, d), "n*d") || ka_need(&C, r, ka_mul(n, K), "n*K")
        || ka_need(&C, s, ka_mul(K, d), "K*d") || ka_need(&C, g, ka_mul(K, d), "K*d") || ka_disjoint(&C))
        goto fail;
    {
        int avx2 = use_avx2();
        Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_COPY
        if (avx2)
            xtr_loop_avx2(x->buf, r->buf, s->buf, g->buf, n, d, K);
        else
#endif
            xtr_loop_base(x->buf, r->buf, s->buf, g->buf, n, d, K);
        Py_END_ALLOW_THREADS
        (void)avx2;
    }
    ka_release(&C);
    Py_RETURN_NONE;
fail:
    ka_release(&C);
    return NULL;
}

/* wsum_fixed_f64(v, w, scale, n) -> int: v (n), w (n) float64 read; scale a float. */
static PyObject *wsum_fixed_f64(PyObject *self, PyObject *args)
{
    PyObject *ov, *ow;
    double scale;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOdn", &ov, &ow, &scale, &n))
        return NULL;
    KA_CALL(C, "wsum_fixed_f64");
    Py_buffer *v, *w;
    if (!(v = ka_buffer(&C, "v", ov, KA_F64, KA_IN)) || !(w = ka_buffer(&C, "w", ow, KA_F64, KA_IN)))
        goto fail;
    if (ka_at_least(&C, "n", n, 0) || ka_need(&C, v, n, "n") || ka_need(&C, w, n, "n"))
        goto fail;
    int64_t acc;
    {
        int avx2 = use_avx2();
        Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_COPY
        if (avx2)
            acc = wsum_loop_avx2(v->buf, w->buf, scale, n);
        else
#endif
            acc = wsum_loop_base(v->buf, w->buf, scale, n);
        Py_END_ALLOW_THREADS
        (void)avx2;
    }
    ka_release(&C);
    return PyLong_FromLongLong((long long)acc);
fail:
    ka_release(&C);
    return NULL;
}

/* colrange_f64(x, hi, lo, n, d): x (n*d) float64 read; hi, lo (d) float64 updated. */
static PyObject *colrange_f64(PyObject *self, PyObject *args)
{
    PyObject *ox, *oh, *ol;
    Py_ssize_t n, d;
    if (!PyArg_ParseTuple(args, "OOOnn", &ox, &oh, &ol, &n, &d))
        return NULL;
    KA_CALL(C, "colrange_f64");
    Py_buffer *x, *hi, *lo;
    if (!(x = ka_buffer(&C, "x", ox, KA_F64, KA_IN)) || !(hi = ka_buffer(&C, "hi", oh, KA_F64, KA_OUT))
        || !(lo = ka_buffer(&C, "lo", ol, KA_F64, KA_OUT)))
        goto fail;
    if (ka_at_least(&C, "n", n, 0) || ka_at_least(&C, "d", d, 0) || ka_need(&C, x, ka_mul(n, d), "n*d")
        || ka_need(&C, hi, d, "d") || ka_need(&C, lo, d, "d") || ka_disjoint(&C))
        goto fail;
    {
        int avx2 = use_avx2();
        Py_BEGIN_ALLOW_THREADS
#if HAVE_AVX2_COPY
        if (avx2)
            range_loop_avx2(x->buf, hi->buf, lo->buf, n, d);
        else
#endif
            range_loop_base(x->buf, hi->buf, lo->buf, n, d);
        Py_END_ALLOW_THREADS
        (void)avx2;
    }
    ka_release(&C);
    Py_RETURN_NONE;
fail:
    ka_release(&C);
    return NULL;
}

static PyObject *simd(PyObject *self, PyObject *args)
{
    return PyUnicode_FromString(use_avx2() ? "avx2" : "baseline");
}

static PyMethodDef methods[] = {
    {"rowdot_f64", rowdot_f64, METH_VARARGS,
     "rowdot_f64(x, at, z, n, d, K): z[i, k] = x_i . at_k in a fixed order per row"},
    {"xtr_fixed_f64", xtr_fixed_f64, METH_VARARGS,
     "xtr_fixed_f64(x, r, scale, g, n, d, K): g[k, j] += round(x_ij r_ik scale[k, j]) (int64)"},
    {"wsum_fixed_f64", wsum_fixed_f64, METH_VARARGS,
     "wsum_fixed_f64(v, w, scale, n) -> sum_i round(v_i w_i scale) (int)"},
    {"colrange_f64", colrange_f64, METH_VARARGS,
     "colrange_f64(x, hi, lo, n, d): hi = max(hi, column maxima), lo = min(lo, column minima)"},
    {"simd", simd, METH_NOARGS, "which copy of the loops runs: 'avx2' or 'baseline'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_linear_kernels",
    "Compiled loops of the linear models' exact objective (see _linear_kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__linear_kernels(void)
{
    return PyModule_Create(&module);
}
