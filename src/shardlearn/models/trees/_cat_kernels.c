/* Many-vs-many categorical split search (LightGBM's sorted-gradient scan), compiled.
 *
 * The same computation as categorical._many_vs_many in NumPy (which stays, and which the
 * tests compare with this): per row (a node and a feature), the categories with at least
 * cat_smooth rows are sorted by G / (H + cat_smooth) (stably: ties keep bin order), then
 * prefixes of that order are scanned from both ends with LightGBM's min_data_per_group
 * grouping, and the best prefix is picked with the same tie rule (the first candidate
 * within rtol of the best, candidates ordered channel, direction, prefix length).
 * In NumPy this is ~40 calls on tiny arrays per search; here one pass per row.
 *
 * Buffers (validated by the Python wrapper: float64 / int64, C-contiguous):
 *   h (B, C, V): channels 0..C-3 gradients, C-2 hessian, C-1 count, per category bin
 *   tot (B, C): node totals
 * Outputs: score (B,) best score (-inf: none), order (B, L) the chosen scan order's first
 * L bins, length (B,) index of the last bin of the best prefix in that order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* NumPy's nan_to_num: NaN -> 0, +-inf -> +-DBL_MAX (so the order matches the NumPy path) */
static double nan_to_num(double x) {
    if (isnan(x)) return 0.0;
    if (isinf(x)) return x > 0 ? DBL_MAX : -DBL_MAX;
    return x;
}

/* stable insertion sort of idx[0..n) by key (n <= 255 category bins: quadratic is fine) */
static void stable_sort(Py_ssize_t *idx, const double *key, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        Py_ssize_t v = idx[i];
        Py_ssize_t j = i;
        while (j > 0 && key[idx[j - 1]] > key[v]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

static PyObject *many_vs_many(PyObject *self, PyObject *args) {
    Py_buffer hb, tb, sb, ob, lb;
    Py_ssize_t B, C, V, L, max_cat_threshold;
    double lam, cat_smooth, min_child, min_hess, mdpg, rtol;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnnnddddddw*w*w*", &hb, &tb, &B, &C, &V, &L, &max_cat_threshold,
                          &lam, &cat_smooth, &min_child, &min_hess, &mdpg, &rtol, &sb, &ob, &lb))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_grad = C - 2, n_o = 2 * (C - 2);
    Py_ssize_t *sorted = NULL;
    double *key = NULL, *cand = NULL;
    if (B < 0 || C < 3 || C - 2 > 64 || V < 1 || L < 1 || L > V
        || hb.len < (Py_ssize_t)sizeof(double) * B * C * V || tb.len < (Py_ssize_t)sizeof(double) * B * C
        || sb.len < (Py_ssize_t)sizeof(double) * B || ob.len < (Py_ssize_t)sizeof(int64_t) * B * L
        || lb.len < (Py_ssize_t)sizeof(int64_t) * B) {
        PyErr_SetString(PyExc_ValueError, "many_vs_many: buffer sizes do not match the shapes");
        goto done;
    }
    /* per row: the sorted eligible bins of every gradient channel, the keys, the candidates */
    sorted = malloc(sizeof(Py_ssize_t) * (size_t)(n_grad * V));
    key = malloc(sizeof(double) * (size_t)V);
    cand = malloc(sizeof(double) * (size_t)(n_o * L));
    if (!sorted || !key || !cand) {
        PyErr_NoMemory();
        goto done;
    }
    const double *h = hb.buf, *tot = tb.buf;
    double *score = sb.buf;
    int64_t *order = ob.buf, *length = lb.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < B; b++) {
        const double *hr = h + b * C * V, *t = tot + b * C;
        const double *cnt = hr + (C - 1) * V, *hess = hr + (C - 2) * V;
        Py_ssize_t used = 0;
        for (Py_ssize_t c = 0; c < n_grad; c++) {
            Py_ssize_t *s = sorted + c * V;
            used = 0;
            for (Py_ssize_t v = 0; v < V; v++) {
                if (cnt[v] >= cat_smooth && cnt[v] > 0) {
                    s[used++] = v;
                    key[v] = nan_to_num(hr[c * V + v] / (hess[v] + cat_smooth));
                }
            }
            stable_sort(s, key, used);
        }
        Py_ssize_t lim = (max_cat_threshold < (used + 1) / 2) ? max_cat_threshold : (used + 1) / 2;
        if (lim > used) lim = used;
        if (lim > L) lim = L;
        for (Py_ssize_t o = 0; o < n_o; o++) {
            const Py_ssize_t *s = sorted + (o / 2) * V;
            int backward = o % 2;
            double *cs = cand + o * L;
            double lc = 0.0, lh = 0.0, group = 0.0;
            double gl[64];   /* left gradient sums per channel; C - 2 <= 64 checked below */
            for (Py_ssize_t c = 0; c < n_grad; c++) gl[c] = 0.0;
            for (Py_ssize_t i = 0; i < L; i++) cs[i] = -INFINITY;
            for (Py_ssize_t i = 0; i < lim; i++) {
                Py_ssize_t v = backward ? s[used - 1 - i] : s[i];
                for (Py_ssize_t c = 0; c < n_grad; c++) gl[c] += hr[c * V + v];
                lh += hess[v];
                lc += cnt[v];
                group += cnt[v];
                double rc = t[C - 1] - lc, rh = t[C - 2] - lh;
                int ok = lc >= min_child && lh >= min_hess && rc >= min_child && rc >= mdpg && rh >= min_hess;
                if (!ok || group < mdpg) continue;
                group = 0.0;   /* LightGBM: a new group starts after each evaluated prefix */
                if (!(lh + lam > 0) || !(rh + lam > 0)) continue;
                double sl = 0.0, sr = 0.0;
                for (Py_ssize_t c = 0; c < n_grad; c++) {
                    double gr = t[c] - gl[c];
                    sl += gl[c] * gl[c];
                    sr += gr * gr;
                }
                cs[i] = sl / (lh + lam) + sr / (rh + lam);
            }
        }
        /* first candidate within rtol of the best (the NumPy path's tie rule) */
        double top = -INFINITY;
        for (Py_ssize_t j = 0; j < n_o * L; j++)
            if (cand[j] > top) top = cand[j];
        Py_ssize_t best = 0;
        if (top > -INFINITY) {
            double thr = top - rtol * fabs(top);
            while (!(cand[best] >= thr)) best++;
        }
        score[b] = cand[best];
        Py_ssize_t o = best / L;
        length[b] = best % L;
        const Py_ssize_t *s = sorted + (o / 2) * V;
        for (Py_ssize_t i = 0; i < L; i++) {
            Py_ssize_t p = (o % 2) ? used - 1 - i : i;
            order[b * L + i] = (p >= 0 && p < used) ? (int64_t)s[p] : 0;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(sorted);
    free(key);
    free(cand);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&lb);
    return result;
}

static PyMethodDef methods[] = {
    {"many_vs_many", many_vs_many, METH_VARARGS,
     "many_vs_many(h, tot, B, C, V, L, max_cat_threshold, lam, cat_smooth, min_child, min_hess, "
     "min_data_per_group, rtol, score, order, length): LightGBM's many-vs-many categorical scan."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cat_kernels",
                                    "Compiled categorical split search (see categorical.py).", -1, methods};

PyMODINIT_FUNC PyInit__cat_kernels(void) { return PyModule_Create(&module); }
