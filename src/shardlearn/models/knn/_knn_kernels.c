/* Compiled inner loop of the k-nearest-neighbour search (see models/knn/_local.py).
 *
 * topk_update folds one block of scores into the running k best per query:
 *
 *     v[i, j] = xx[j] + s[j] * g[i, j]     (g: the GEMM block of query i and training row j)
 *
 * e.g. euclidean: xx = |x_j|^2, s = -2, g = q_i . x_j (|q_i|^2 is the same for every j
 * and left out); cosine: xx = 0, s = -1/|x_j|; manhattan: xx = 0, s = 1, g = the distance.
 * best_d[i] (k values, ascending) and best_i[i] (their global row indices) are updated
 * in place: a score enters when it is strictly below the current k-th, and goes after
 * the equal scores already there, so with columns scanned in increasing global index the
 * lists hold the k smallest scores, ties to the lowest index (what NumPy's lexsort of
 * (score, index) gives; NaN never enters). The pass reads g once, at one compare per
 * element for all but the few entries that enter: NumPy needs an argpartition of every
 * row block plus a merge of the candidates, several passes (bench/knn.md measures both).
 *
 * topk_update_counts is the same fold for weighted rows (sample weights as resampling
 * counts): column j is global row ids[j] (increasing) drawn cnt[j] times, and enters as
 * min(cnt[j], k - p) copies at its place p, one neighbour slot per copy (a row drawn c
 * times is c neighbours of the resampled data; rows of count 0 are never passed). The
 * copies of a row are adjacent, after the equal scores already there: the lists are the
 * k smallest slots of the materialised rows, ties to the lowest row.
 *
 * Arguments are checked as every kernel's (_kernel_args.h): float64 / int64 C-contiguous
 * buffers of at least the sizes the loop touches, B, m >= 0, k >= 1, base >= 0 and
 * base + m - 1 fits int64, the outputs disjoint from the inputs: O(1) per call, and
 * topk_update_counts also checks every count >= 1 (O(m), one pass next to the B x m loop).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>

#include "../../_kernel_args.h"

static void topk_loop(const double *g, const double *s, const double *xx, int64_t base, Py_ssize_t B,
                      Py_ssize_t m, Py_ssize_t k, double *best_d, int64_t *best_i)
{
    for (Py_ssize_t i = 0; i < B; i++) {
        const double *gi = g + i * m;
        double *bd = best_d + i * k;
        int64_t *bi = best_i + i * k;
        double thr = bd[k - 1];
        for (Py_ssize_t j = 0; j < m; j++) {
            double v = xx[j] + s[j] * gi[j];
            if (v < thr) {
                Py_ssize_t p = k - 1;
                while (p > 0 && bd[p - 1] > v) {
                    bd[p] = bd[p - 1];
                    bi[p] = bi[p - 1];
                    p--;
                }
                bd[p] = v;
                bi[p] = base + j;
                thr = bd[k - 1];
            }
        }
    }
}

static void topk_counts_loop(const double *g, const double *s, const double *xx, const int64_t *ids,
                             const int64_t *cnt, Py_ssize_t B, Py_ssize_t m, Py_ssize_t k, double *best_d,
                             int64_t *best_i)
{
    for (Py_ssize_t i = 0; i < B; i++) {
        const double *gi = g + i * m;
        double *bd = best_d + i * k;
        int64_t *bi = best_i + i * k;
        double thr = bd[k - 1];
        for (Py_ssize_t j = 0; j < m; j++) {
            double v = xx[j] + s[j] * gi[j];
            if (v < thr) {
                Py_ssize_t p = k - 1;
                while (p > 0 && bd[p - 1] > v)
                    p--;
                Py_ssize_t c = cnt[j] < (int64_t)(k - p) ? (Py_ssize_t)cnt[j] : k - p;
                for (Py_ssize_t q = k - 1; q >= p + c; q--) {
                    bd[q] = bd[q - c];
                    bi[q] = bi[q - c];
                }
                for (Py_ssize_t q = p; q < p + c; q++) {
                    bd[q] = v;
                    bi[q] = ids[j];
                }
                thr = bd[k - 1];
            }
        }
    }
}

static PyObject *topk_update_counts(PyObject *self, PyObject *args)
{
    PyObject *og, *os, *oxx, *oids, *ocnt, *obd, *obi;
    Py_ssize_t B, m, k;
    if (!PyArg_ParseTuple(args, "OOOOOnnnOO", &og, &os, &oxx, &oids, &ocnt, &B, &m, &k, &obd, &obi))
        return NULL;
    KA_CALL(K, "topk_update_counts");
    Py_buffer *g, *s, *xx, *ids, *cnt, *bd, *bi;
    if (!(g = ka_buffer(&K, "g", og, KA_F64, KA_IN))
        || !(s = ka_buffer(&K, "s", os, KA_F64, KA_IN))
        || !(xx = ka_buffer(&K, "xx", oxx, KA_F64, KA_IN))
        || !(ids = ka_buffer(&K, "ids", oids, KA_I64, KA_IN))
        || !(cnt = ka_buffer(&K, "cnt", ocnt, KA_I64, KA_IN))
        || !(bd = ka_buffer(&K, "best_d", obd, KA_F64, KA_OUT))
        || !(bi = ka_buffer(&K, "best_i", obi, KA_I64, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "B", B, 0) || ka_at_least(&K, "m", m, 0)
        || ka_between(&K, "k", k, 1, INT_MAX) || ka_need(&K, g, ka_mul(B, m), "B*m")
        || ka_need(&K, s, m, "m") || ka_need(&K, xx, m, "m") || ka_need(&K, ids, m, "m")
        || ka_need(&K, cnt, m, "m") || ka_need(&K, bd, ka_mul(B, k), "B*k")
        || ka_need(&K, bi, ka_mul(B, k), "B*k") || ka_disjoint(&K))
        goto fail;
    const int64_t *c = cnt->buf;
    for (Py_ssize_t j = 0; j < m; j++)
        if (c[j] < 1) {
            PyErr_Format(PyExc_ValueError, "%s: cnt[%zd] = %lld, counts must be >= 1", K.fn, j, (long long)c[j]);
            goto fail;
        }
    Py_BEGIN_ALLOW_THREADS
    topk_counts_loop(g->buf, s->buf, xx->buf, ids->buf, cnt->buf, B, m, k, bd->buf, bi->buf);
    Py_END_ALLOW_THREADS
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

static PyObject *topk_update(PyObject *self, PyObject *args)
{
    PyObject *og, *os, *oxx, *obd, *obi;
    Py_ssize_t B, m, k, base;
    if (!PyArg_ParseTuple(args, "OOOnnnnOO", &og, &os, &oxx, &base, &B, &m, &k, &obd, &obi))
        return NULL;
    KA_CALL(K, "topk_update");
    Py_buffer *g, *s, *xx, *bd, *bi;
    if (!(g = ka_buffer(&K, "g", og, KA_F64, KA_IN))
        || !(s = ka_buffer(&K, "s", os, KA_F64, KA_IN))
        || !(xx = ka_buffer(&K, "xx", oxx, KA_F64, KA_IN))
        || !(bd = ka_buffer(&K, "best_d", obd, KA_F64, KA_OUT))
        || !(bi = ka_buffer(&K, "best_i", obi, KA_I64, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "base", base, 0) || ka_at_least(&K, "B", B, 0) || ka_at_least(&K, "m", m, 0)
        || ka_between(&K, "k", k, 1, INT_MAX) || ka_need(&K, g, ka_mul(B, m), "B*m")
        || ka_need(&K, s, m, "m") || ka_need(&K, xx, m, "m") || ka_need(&K, bd, ka_mul(B, k), "B*k")
        || ka_need(&K, bi, ka_mul(B, k), "B*k") || ka_disjoint(&K))
        goto fail;
    if (ka_add(base, m) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: base + m overflows Py_ssize_t", K.fn);
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    topk_loop(g->buf, s->buf, xx->buf, (int64_t)base, B, m, k, bd->buf, bi->buf);
    Py_END_ALLOW_THREADS
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

static PyMethodDef methods[] = {
    {"topk_update", topk_update, METH_VARARGS,
     "topk_update(g, s, xx, base, B, m, k, best_d, best_i): fold xx + s * g (B x m) into the k best per row"},
    {"topk_update_counts", topk_update_counts, METH_VARARGS,
     "topk_update_counts(g, s, xx, ids, cnt, B, m, k, best_d, best_i): the same for rows ids drawn cnt times"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_knn_kernels",
    "Compiled inner loop of the k-nearest-neighbour search (see _knn_kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__knn_kernels(void)
{
    return PyModule_Create(&module);
}
