/* Bin a float matrix into uint8 codes in one pass (BinMapper.transform, compiled).
 *
 * The same codes as the NumPy path (searchsorted(thresholds, x, side="left") per feature,
 * NaN -> the missing code), which stays and which tests/test_binning.py compares with this.
 *
 * Search: feature f's thresholds are padded with +inf to TABLE = 255 entries (the most a
 * feature has is max_bin - 1 = 254), so a branch-free binary search
 *     pos = 0; for step = s0, s0/2, ..., 1: pos += (t[pos + step - 1] < x) ? step : 0
 * returns #{t < x} (the padding is never < x, also for x = +inf). s0 is the smallest power
 * of two with 2 * s0 - 1 >= #thresholds, so a feature with few thresholds takes few steps.
 * NaN compares false everywhere (pos = 0) and is then replaced by the missing code with a
 * select, so the loop has no data-dependent branch. The loads of one search form a chain
 * (each waits for the previous), so LANES rows are searched in lockstep and the CPU runs
 * their chains side by side: 4.5 ns per value on 400k x 28 (np.searchsorted: 65 ns).
 *
 * Layout: rows are processed in blocks of BLOCK rows; within a block feature by feature,
 * so one feature's table (2 KiB) stays in L1 while its BLOCK values are searched, and the
 * block of X (BLOCK x d values) stays in L2 for the next feature. Each block writes the
 * feature-major (d, n) codes (contiguous runs of BLOCK bytes). Writing the row-major copy
 * of the compiled histogram here too was measured slower (+10 ms on 400k x 28) than
 * NumPy's transpose of the finished codes afterwards (6 ms), so it is not done here.
 *
 * X is read through element strides (row stride rs, column stride cs), so C- and
 * F-contiguous float32 / float64 matrices need no copy; a float32 value is widened to
 * double before the comparison, as NumPy's searchsorted does (float64 thresholds).
 *
 * Arguments: bin_columns checks its buffers (dtype, X's matching is_f32, C-contiguity, byte
 * lengths from overflow-checked sizes, outputs writable and disjoint) and s0, and raises
 * TypeError / ValueError instead of reading or writing out of bounds (../_kernel_args.h:
 * how, and why checked buffer protocol rather than Cython). O(d) per call: +0.02%
 * instructions on 20k x 28, time within noise (11 us for 100 x 28, 43 ms for 400k x 28).
 *
 * Buffers (checked here):
 *   X: n*d values (float32 if is_f32 else float64) at X[i*rs + f*cs]
 *   table: (d, TABLE) float64; s0: (d,) int64, -1 = skip the feature (categorical: the
 *   wrapper fills it), 0 = no thresholds (every value code 0, NaN missing)
 *   out: (d, n) uint8; nan_flags: (d,) uint8, set to 1 for a feature with a NaN among
 *   the rows (left untouched otherwise).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_kernel_args.h"

#define TABLE 255
#define BLOCK 512

/* one feature's codes for rows [i0, i1): X values at x[i * rs], i.e. x already offset by f*cs.
 * LANES rows are searched in lockstep: their chains of dependent loads are independent, so
 * the CPU runs them side by side (one search alone waits ~5 cycles per step on its load). */
#define LANES 16
#define DEFINE_BIN_BLOCK(NAME, T)                                                              \
    static int NAME(const T *x, Py_ssize_t rs, Py_ssize_t i0, Py_ssize_t i1, const double *t, \
                    int64_t s0, uint8_t missing, uint8_t *out) {                            \
        int any_nan = 0;                                                                     \
        Py_ssize_t i = i0;                                                                   \
        for (; i + LANES <= i1; i += LANES) {                                                \
            double v[LANES];                                                                 \
            int64_t pos[LANES];                                                              \
            for (int j = 0; j < LANES; j++) {                                                \
                v[j] = (double)x[(i + j) * rs];                                              \
                pos[j] = 0;                                                                  \
            }                                                                                \
            for (int64_t step = s0; step; step >>= 1)                                        \
                for (int j = 0; j < LANES; j++)                                              \
                    pos[j] += (t[pos[j] + step - 1] < v[j]) ? step : 0;                      \
            for (int j = 0; j < LANES; j++) {                                                \
                int is_nan = v[j] != v[j];                                                   \
                any_nan |= is_nan;                                                           \
                out[i + j - i0] = is_nan ? missing : (uint8_t)pos[j];                        \
            }                                                                                \
        }                                                                                    \
        for (; i < i1; i++) { /* the last < LANES rows */                                    \
            double v = (double)x[i * rs];                                                    \
            int64_t pos = 0;                                                                 \
            for (int64_t step = s0; step; step >>= 1)                                        \
                pos += (t[pos + step - 1] < v) ? step : 0;                                   \
            int is_nan = v != v;                                                             \
            any_nan |= is_nan;                                                               \
            out[i - i0] = is_nan ? missing : (uint8_t)pos;                                   \
        }                                                                                    \
        return any_nan;                                                                      \
    }

DEFINE_BIN_BLOCK(bin_block_f64, double)
DEFINE_BIN_BLOCK(bin_block_f32, float)

/* The blocks of bin_columns() on checked arguments: a function of its own, so the search
 * loops compile as they did before the checks were added in front of them (inline there,
 * the same instructions ran 3-4% slower: 10.4 against 10.0 ms on 100k x 28 float32). */
static void bin_loop(const void *X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t rs, Py_ssize_t cs, int is_f32,
                     const double *table, const int64_t *s0, uint8_t missing, uint8_t *out, uint8_t *nan_flags) {
    uint8_t buf[BLOCK];
    for (Py_ssize_t i0 = 0; i0 < n; i0 += BLOCK) {
        Py_ssize_t i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        for (Py_ssize_t f = 0; f < d; f++) {
            if (s0[f] < 0) continue;
            const double *t = table + f * TABLE;
            int any_nan = is_f32
                ? bin_block_f32((const float *)X + f * cs, rs, i0, i1, t, s0[f], missing, buf)
                : bin_block_f64((const double *)X + f * cs, rs, i0, i1, t, s0[f], missing, buf);
            if (any_nan) nan_flags[f] = 1;
            memcpy(out + f * n + i0, buf, (size_t)(i1 - i0));
        }
    }
}

static PyObject *bin_columns(PyObject *self, PyObject *args) {
    PyObject *ox, *otable, *os0, *oout, *onan;
    Py_ssize_t n, d, rs, cs;
    int is_f32, missing;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnnnpOOiOO", &ox, &n, &d, &rs, &cs, &is_f32, &otable, &os0, &missing, &oout,
                          &onan))
        return NULL;
    /* Checks (O(d) per call): X float32 or float64 as is_f32 says, C-contiguous, holding the
       largest element read, (n-1)*rs + (d-1)*cs (strides are non-negative: the wrapper
       passes C- or F-ordered views); table (d*TABLE float64), s0 (d int64, each -1, 0 or a
       power of two <= 128: the search then reads t[0 .. 2*s0 - 2] < TABLE); out (n*d uint8)
       and nan_flags (d) written and disjoint; 0 <= missing <= 255. */
    KA_CALL(K, "bin_columns");
    PyObject *result = NULL;
    Py_buffer *xb, *tb, *sb, *ob, *nb;
    if (!(xb = ka_buffer(&K, "X", ox, is_f32 ? KA_F32 : KA_F64, KA_IN))
        || !(tb = ka_buffer(&K, "table", otable, KA_F64, KA_IN)) || !(sb = ka_buffer(&K, "s0", os0, KA_I64, KA_IN))
        || !(ob = ka_buffer(&K, "out", oout, KA_U8, KA_OUT)) || !(nb = ka_buffer(&K, "nan_flags", onan, KA_FLAG, KA_OUT)))
        goto done;
    if (ka_at_least(&K, "n", n, 0) || ka_at_least(&K, "d", d, 0) || ka_at_least(&K, "rs", rs, 0)
        || ka_at_least(&K, "cs", cs, 0) || ka_between(&K, "missing", missing, 0, 255)
        || (n > 0 && d > 0
            && ka_need(&K, xb, ka_add(ka_add(ka_mul(n - 1, rs), ka_mul(d - 1, cs)), 1), "(n-1)*rs + (d-1)*cs + 1"))
        || ka_need(&K, tb, ka_mul(d, TABLE), "d*255") || ka_need(&K, sb, d, "d") || ka_need(&K, ob, ka_mul(n, d), "n*d")
        || ka_need(&K, nb, d, "d") || ka_disjoint(&K))
        goto done;
    const double *table = tb->buf;
    const int64_t *s0 = sb->buf;
    for (Py_ssize_t f = 0; f < d; f++) {
        if (s0[f] > 128 || (s0[f] & (s0[f] - 1) && s0[f] > 0)) {  /* 2 * s0 - 1 must fit TABLE */
            PyErr_Format(PyExc_ValueError, "bin_columns: s0: s0 must be -1, 0 or a power of two <= 128, got %lld "
                         "at %zd", (long long)s0[f], f);
            goto done;
        }
    }
    uint8_t *out = ob->buf, *nan_flags = nb->buf;
    Py_BEGIN_ALLOW_THREADS
    bin_loop(xb->buf, n, d, rs, cs, is_f32, table, s0, (uint8_t)missing, out, nan_flags);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    ka_release(&K);
    return result;
}

static PyMethodDef methods[] = {
    {"bin_columns", bin_columns, METH_VARARGS,
     "bin_columns(X, n, d, rs, cs, is_f32, table, s0, missing, out, nan_flags): "
     "uint8 bin codes of X (see the source's header)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_binning_kernels",
                                    "Compiled binning of float matrices into uint8 codes.", -1, methods};

PyMODINIT_FUNC PyInit__binning_kernels(void) { return PyModule_Create(&module); }
