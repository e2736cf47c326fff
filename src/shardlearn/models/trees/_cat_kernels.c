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
 * categorical_splits() runs the whole search of categorical.find_best_categorical_splits
 * (one-vs-rest or many-vs-many per feature, the feature mask, the best feature per node)
 * on the (k, C, d, S) histograms in one call: measured 141 -> 17 us per search in the
 * kernel (76 us with its Python wrapper), about 2.5 ms per 31-leaf tree.
 *
 * Arguments: both entry points check their buffers (dtype, C-contiguity, byte lengths from
 * overflow-checked products of the sizes, also of their malloc'd scratch; outputs writable
 * and disjoint) and the feature indices into hist, and raise TypeError / ValueError
 * instead of reading or writing out of bounds (../../_kernel_args.h: how, and why checked
 * buffer protocol rather than Cython). Cost: +0.2 us per many_vs_many call (5 buffers),
 * +0.5 us per categorical_splits call (10 buffers, the nf feature indices), O(1) against
 * the 1-20 us of the search; the loops are unchanged (+0.3% instructions, 16 nodes x 12
 * features, which is the argument checks).
 *
 * Buffers (C-contiguous float64 / int64, checked here):
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

#include "../../_kernel_args.h"

/* NumPy's nan_to_num: NaN -> 0, +-inf -> +-DBL_MAX (so the order matches the NumPy path) */
static double nan_to_num(double x) {
    if (isnan(x)) return 0.0;
    if (isinf(x)) return x > 0 ? DBL_MAX : -DBL_MAX;
    return x;
}

/* Stable sort of idx[0..n) by key (no NaN keys: nan_to_num was applied): insertion sort
 * of runs of 16, then bottom-up merges through tmp (n entries). A plain insertion sort was
 * quadratic: ~10 us per node for 200 categories, most of the search's time. Both give the
 * unique stable order, so the result is the NumPy path's argsort(kind="stable"). */
#define SORT_RUN 16
static void stable_sort(Py_ssize_t *idx, const double *key, Py_ssize_t n, Py_ssize_t *tmp) {
    for (Py_ssize_t lo = 0; lo < n; lo += SORT_RUN) {
        Py_ssize_t hi = lo + SORT_RUN < n ? lo + SORT_RUN : n;
        for (Py_ssize_t i = lo + 1; i < hi; i++) {
            Py_ssize_t v = idx[i], j = i;
            while (j > lo && key[idx[j - 1]] > key[v]) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
    }
    Py_ssize_t *a = idx, *b = tmp;
    for (Py_ssize_t w = SORT_RUN; w < n; w *= 2) {
        for (Py_ssize_t lo = 0; lo < n; lo += 2 * w) {
            Py_ssize_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            Py_ssize_t i = lo, j = mid, o = lo;
            /* ties take the left run first: stable */
            while (i < mid && j < hi) b[o++] = key[a[j]] < key[a[i]] ? a[j++] : a[i++];
            while (i < mid) b[o++] = a[i++];
            while (j < hi) b[o++] = a[j++];
        }
        Py_ssize_t *t = a; a = b; b = t;
    }
    if (a != idx) memcpy(idx, a, sizeof(Py_ssize_t) * (size_t)n);
}

/* The search parameters shared by every row. */
typedef struct {
    Py_ssize_t max_cat_threshold;
    double lam;            /* many-vs-many: lambda_l2 + cat_l2; one-vs-rest: lambda_l2 */
    double cat_smooth, min_child, min_hess, mdpg, rtol;
} cat_params;

/* Index of the first candidate within rtol of the best of cand[0..n) (the NumPy path's
 * argmax(scores >= top - rtol * |top|)); 0 when every candidate is -inf or n == 0. */
static Py_ssize_t first_best(const double *cand, Py_ssize_t n, double rtol) {
    double top = -INFINITY;
    for (Py_ssize_t j = 0; j < n; j++)
        if (cand[j] > top) top = cand[j];
    Py_ssize_t best = 0;
    if (top > -INFINITY) {
        double thr = top - rtol * fabs(top);
        while (!(cand[best] >= thr)) best++;
    }
    return best;
}

/* Many-vs-many search of one row (a node and a feature). hr[c * cs + v]: channel c of
 * category bin v < V (cs: the stride between channels); t: the node's totals. Scratch:
 * sorted (n_grad * V + V: the last V for the sort), key (V), cand (2 * n_grad * L). Writes the chosen scan order's
 * first L bins to order (0 past the eligible ones) and the last position of the best
 * prefix to *length; returns the best score (-inf: none). */
static double mvm_row(const double *hr, Py_ssize_t cs, const double *t, Py_ssize_t C, Py_ssize_t V,
                      Py_ssize_t L, const cat_params *p, Py_ssize_t *sorted, double *key, double *cand,
                      int64_t *order, int64_t *length) {
    Py_ssize_t n_grad = C - 2, n_o = 2 * (C - 2);
    const double *cnt = hr + (C - 1) * cs, *hess = hr + (C - 2) * cs;
    Py_ssize_t used = 0;
    for (Py_ssize_t c = 0; c < n_grad; c++) {
        Py_ssize_t *s = sorted + c * V;
        used = 0;
        for (Py_ssize_t v = 0; v < V; v++) {
            if (cnt[v] >= p->cat_smooth && cnt[v] > 0) {
                s[used++] = v;
                key[v] = nan_to_num(hr[c * cs + v] / (hess[v] + p->cat_smooth));
            }
        }
        stable_sort(s, key, used, sorted + n_grad * V);
    }
    Py_ssize_t lim = (p->max_cat_threshold < (used + 1) / 2) ? p->max_cat_threshold : (used + 1) / 2;
    if (lim > used) lim = used;
    if (lim > L) lim = L;
    for (Py_ssize_t o = 0; o < n_o; o++) {
        const Py_ssize_t *s = sorted + (o / 2) * V;
        int backward = o % 2;
        double *cc = cand + o * L;
        double lc = 0.0, lh = 0.0, group = 0.0;
        double gl[64];   /* left gradient sums per channel; C - 2 <= 64 checked by the callers */
        for (Py_ssize_t c = 0; c < n_grad; c++) gl[c] = 0.0;
        for (Py_ssize_t i = 0; i < L; i++) cc[i] = -INFINITY;
        for (Py_ssize_t i = 0; i < lim; i++) {
            Py_ssize_t v = backward ? s[used - 1 - i] : s[i];
            for (Py_ssize_t c = 0; c < n_grad; c++) gl[c] += hr[c * cs + v];
            lh += hess[v];
            lc += cnt[v];
            group += cnt[v];
            double rc = t[C - 1] - lc, rh = t[C - 2] - lh;
            int ok = lc >= p->min_child && lh >= p->min_hess && rc >= p->min_child && rc >= p->mdpg
                     && rh >= p->min_hess;
            if (!ok || group < p->mdpg) continue;
            group = 0.0;   /* LightGBM: a new group starts after each evaluated prefix */
            if (!(lh + p->lam > 0) || !(rh + p->lam > 0)) continue;
            double sl = 0.0, sr = 0.0;
            for (Py_ssize_t c = 0; c < n_grad; c++) {
                double gr = t[c] - gl[c];
                sl += gl[c] * gl[c];
                sr += gr * gr;
            }
            cc[i] = sl / (lh + p->lam) + sr / (rh + p->lam);
        }
    }
    /* first candidate within rtol of the best (the NumPy path's tie rule) */
    Py_ssize_t best = first_best(cand, n_o * L, p->rtol);
    Py_ssize_t o = best / L;
    *length = best % L;
    const Py_ssize_t *s = sorted + (o / 2) * V;
    for (Py_ssize_t i = 0; i < L; i++) {
        Py_ssize_t q = (o % 2) ? used - 1 - i : i;
        order[i] = (q >= 0 && q < used) ? (int64_t)s[q] : 0;
    }
    return cand[best];
}

/* One-vs-rest search of one row: each category bin alone on the left (categorical.py's
 * _split_scores: the same validity tests and gain expression, channel squares summed in
 * channel order). Scratch cand (V). Returns the best score, its bin in *bin. */
static double ovr_row(const double *hr, Py_ssize_t cs, const double *t, Py_ssize_t C, Py_ssize_t V,
                      const cat_params *p, double *cand, int64_t *bin) {
    Py_ssize_t n_grad = C - 2;
    for (Py_ssize_t v = 0; v < V; v++) {
        double hl = hr[(C - 2) * cs + v], cl = hr[(C - 1) * cs + v];
        double hrr = t[C - 2] - hl, cr = t[C - 1] - cl;
        int ok = cl >= p->min_child && cr >= p->min_child && hl >= p->min_hess && hrr >= p->min_hess
                 && hl + p->lam > 0 && hrr + p->lam > 0;
        double out = -INFINITY;
        if (ok) {
            double sl = 0.0, sr = 0.0;
            for (Py_ssize_t c = 0; c < n_grad; c++) {
                double l = hr[c * cs + v], r = t[c] - l;
                if (c == 0) { sl = l * l; sr = r * r; }
                else { sl += l * l; sr += r * r; }
            }
            out = sl / (hl + p->lam) + sr / (hrr + p->lam);
        }
        cand[v] = out;
    }
    Py_ssize_t best = first_best(cand, V, p->rtol);
    *bin = best;
    return V ? cand[best] : -INFINITY;
}

static PyObject *many_vs_many(PyObject *self, PyObject *args) {
    PyObject *oh, *otot, *oscore, *oorder, *olength;
    Py_ssize_t B, C, V, L;
    cat_params p;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnnnnnddddddOOO", &oh, &otot, &B, &C, &V, &L, &p.max_cat_threshold, &p.lam,
                          &p.cat_smooth, &p.min_child, &p.min_hess, &p.mdpg, &p.rtol, &oscore, &oorder, &olength))
        return NULL;
    /* Checks: B >= 0, 3 <= C <= 66, V >= 1, 1 <= L <= V, max_cat_threshold >= 0; h (B*C*V)
       and tot (B*C) float64; score (B) float64, order (B*L) and length (B) int64, written
       and disjoint. The bins the scan reads are its own (< V): no index comes from a buffer. */
    KA_CALL(K, "many_vs_many");
    PyObject *result = NULL;
    Py_ssize_t *sorted = NULL;
    double *key = NULL, *cand = NULL;
    Py_buffer *hb, *tb, *sb, *ob, *lb;
    if (!(hb = ka_buffer(&K, "h", oh, KA_F64, KA_IN)) || !(tb = ka_buffer(&K, "tot", otot, KA_F64, KA_IN))
        || !(sb = ka_buffer(&K, "score", oscore, KA_F64, KA_OUT))
        || !(ob = ka_buffer(&K, "order", oorder, KA_I64, KA_OUT))
        || !(lb = ka_buffer(&K, "length", olength, KA_I64, KA_OUT)))
        goto done;
    if (ka_at_least(&K, "B", B, 0) || ka_between(&K, "C", C, 3, 66) || ka_at_least(&K, "V", V, 1)
        || ka_between(&K, "L", L, 1, V) || ka_at_least(&K, "max_cat_threshold", p.max_cat_threshold, 0)
        || ka_need(&K, hb, ka_mul(B, ka_mul(C, V)), "B*C*V") || ka_need(&K, tb, ka_mul(B, C), "B*C")
        || ka_need(&K, sb, B, "B") || ka_need(&K, ob, ka_mul(B, L), "B*L") || ka_need(&K, lb, B, "B")
        || ka_disjoint(&K))
        goto done;
    Py_ssize_t n_grad = C - 2, n_o = 2 * (C - 2);
    /* per row: the sorted eligible bins of every gradient channel, the keys, the candidates */
    if (!(sorted = ka_malloc(&K, ka_mul(n_grad + 1, V), sizeof(Py_ssize_t), "(C-1)*V"))
        || !(key = ka_malloc(&K, V, sizeof(double), "V"))
        || !(cand = ka_malloc(&K, ka_mul(n_o, L), sizeof(double), "2*(C-2)*L")))
        goto done;
    const double *h = hb->buf, *tot = tb->buf;
    double *score = sb->buf;
    int64_t *order = ob->buf, *length = lb->buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < B; b++)
        score[b] = mvm_row(h + b * C * V, V, tot + b * C, C, V, L, &p, sorted, key, cand, order + b * L,
                           length + b);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(sorted);
    free(key);
    free(cand);
    ka_release(&K);
    return result;
}

/* The whole categorical search of k nodes (categorical.find_best_categorical_splits up to
 * its last step): for each node and categorical feature j (column feats[j] of hist
 * (k, C, d, S), nb[j] category bins), one-vs-rest when nb[j] + 1 <= max_cat_to_onehot,
 * else many-vs-many; features outside the (k, nf) mask (if given) score -inf; then the
 * first feature within rtol of the best. Outputs per node: score (k,), feature (k,) (the
 * winner's column feats[j]), cat_left (k, S) uint8 its left set, l2 (k,) the L2 penalty of
 * the children (lambda_l2, + cat_l2 for many-vs-many), and left (k, C) its left sums
 * summed over the bins in bin order as the NumPy path's cumsum of hist * cat_left (so
 * both paths give the same bits). In NumPy this is ~60 calls on tiny arrays per search (~140 us); the per-row
 * arithmetic is mvm_row's and ovr_row's, the same as the NumPy path's. */
static PyObject *categorical_splits(PyObject *self, PyObject *args) {
    PyObject *ohist, *otot, *ofeats, *onb, *omask, *oscore, *ofeature, *ocl, *oleft, *ol2;
    Py_ssize_t k, C, d, S, onehot_max;
    cat_params pm, po;    /* many-vs-many and one-vs-rest parameters */
    double lam_l2, cat_l2;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnnnnOOOnndddddddOOOOO", &ohist, &otot, &k, &C, &d, &S, &ofeats, &onb, &omask,
                          &onehot_max, &pm.max_cat_threshold, &lam_l2, &cat_l2, &pm.cat_smooth, &pm.min_child,
                          &pm.min_hess, &pm.mdpg, &pm.rtol, &oscore, &ofeature, &ocl, &oleft, &ol2))
        return NULL;
    /* Checks: k >= 0, 3 <= C <= 66, d >= 0, S >= 2, max_cat_threshold >= 1; hist (k*C*d*S)
       and totals (k*C) float64; feats (nf >= 1) and n_bins (nf) int64, mask (empty or
       k*nf); the outputs written and disjoint: score, l2 (k) float64, feature (k) int64,
       cat_left (k*S) uint8, left (k*C) float64. feats index hist's features: each in
       [0, d), a pre-pass over the nf features. n_bins values are clipped to S - 1 below
       (never an index past the feature's bins). */
    KA_CALL(K, "categorical_splits");
    PyObject *result = NULL;
    Py_ssize_t *sorted = NULL;
    double *key = NULL, *cand = NULL, *fscore = NULL;
    int64_t *forder = NULL, *fpick = NULL;
    Py_buffer *hb, *tb, *fb, *nbb, *mb, *sb, *jb, *clb, *lfb, *l2b;
    if (!(hb = ka_buffer(&K, "hist", ohist, KA_F64, KA_IN)) || !(tb = ka_buffer(&K, "totals", otot, KA_F64, KA_IN))
        || !(fb = ka_buffer(&K, "feats", ofeats, KA_I64, KA_IN))
        || !(nbb = ka_buffer(&K, "n_bins", onb, KA_I64, KA_IN))
        || !(mb = ka_buffer(&K, "mask", omask, KA_FLAG, KA_IN))
        || !(sb = ka_buffer(&K, "score", oscore, KA_F64, KA_OUT))
        || !(jb = ka_buffer(&K, "feature", ofeature, KA_I64, KA_OUT))
        || !(clb = ka_buffer(&K, "cat_left", ocl, KA_FLAG, KA_OUT))
        || !(lfb = ka_buffer(&K, "left", oleft, KA_F64, KA_OUT))
        || !(l2b = ka_buffer(&K, "l2", ol2, KA_F64, KA_OUT)))
        goto done;
    Py_ssize_t nf = ka_items(fb), n_grad = C - 2;
    if (ka_at_least(&K, "k", k, 0) || ka_between(&K, "C", C, 3, 66) || ka_at_least(&K, "d", d, 0)
        || ka_at_least(&K, "S", S, 2) || ka_at_least(&K, "max_cat_threshold", pm.max_cat_threshold, 1)
        || ka_at_least(&K, "len(feats)", nf, 1)
        || ka_need(&K, hb, ka_mul(k, ka_mul(ka_mul(C, d), S)), "k*C*d*S") || ka_need(&K, tb, ka_mul(k, C), "k*C")
        || ka_need(&K, nbb, nf, "len(feats)")
        || (mb->len && ka_need(&K, mb, ka_mul(k, nf), "k*len(feats) (or empty: no mask)"))
        || ka_need(&K, sb, k, "k") || ka_need(&K, jb, k, "k") || ka_need(&K, clb, ka_mul(k, S), "k*S")
        || ka_need(&K, lfb, ka_mul(k, C), "k*C") || ka_need(&K, l2b, k, "k")
        || ka_check_range(&K, "feats", (const int64_t *)fb->buf, nf, 0, d) || ka_disjoint(&K))
        goto done;
    Py_ssize_t Lmax = S < pm.max_cat_threshold ? S : pm.max_cat_threshold;
    po = pm;
    pm.lam = lam_l2 + cat_l2;
    po.lam = lam_l2;
    if (!(sorted = ka_malloc(&K, ka_mul(n_grad + 1, S), sizeof(Py_ssize_t), "(C-1)*S"))
        || !(key = ka_malloc(&K, S, sizeof(double), "S"))
        || !(cand = ka_malloc(&K, ka_add(ka_mul(2 * n_grad, Lmax), S), sizeof(double), "2*(C-2)*L + S"))
        || !(fscore = ka_malloc(&K, nf, sizeof(double), "len(feats)"))
        || !(forder = ka_malloc(&K, ka_mul(nf, Lmax), sizeof(int64_t), "len(feats)*L"))   /* per feature: its order / bin */
        || !(fpick = ka_malloc(&K, nf, sizeof(int64_t), "len(feats)")))   /* per feature: length (-1: one-vs-rest) */
        goto done;
    const double *h = hb->buf, *tot = tb->buf;
    const int64_t *feats = fb->buf, *nb = nbb->buf;
    const uint8_t *mask = mb->len ? (const uint8_t *)mb->buf : NULL;
    double *score = sb->buf;
    int64_t *jbest = jb->buf;
    uint8_t *cat_left = clb->buf;
    double *left = lfb->buf, *l2 = l2b->buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        const double *t = tot + i * C;
        for (Py_ssize_t j = 0; j < nf; j++) {
            /* channel c of bin v of this feature: hr[c * d * S + v] */
            const double *hr = h + (i * C * d + feats[j]) * S;
            Py_ssize_t V = nb[j];
            if (V > S - 1) V = S - 1;                /* the wrapper checks; never read the missing bin */
            if (V < 1) {
                fscore[j] = -INFINITY; fpick[j] = -1; forder[j * Lmax] = 0;
            } else if (nb[j] + 1 <= onehot_max) {    /* LightGBM counts the NaN bin */
                fscore[j] = ovr_row(hr, d * S, t, C, V, &po, cand, forder + j * Lmax);
                fpick[j] = -1;
            } else {
                Py_ssize_t L = V < pm.max_cat_threshold ? V : pm.max_cat_threshold;
                fscore[j] = mvm_row(hr, d * S, t, C, V, L, &pm, sorted, key, cand, forder + j * Lmax, fpick + j);
                for (Py_ssize_t q = L; q < Lmax; q++) forder[j * Lmax + q] = 0;
            }
            if (mask && !mask[i * nf + j]) fscore[j] = -INFINITY;
        }
        Py_ssize_t jb_ = first_best(fscore, nf, pm.rtol);
        score[i] = fscore[jb_];
        jbest[i] = feats[jb_];                       /* the winner's column of hist */
        l2[i] = nb[jb_] + 1 <= onehot_max ? po.lam : pm.lam;   /* the children's L2 penalty */
        uint8_t *cl = cat_left + i * S;
        memset(cl, 0, (size_t)S);
        const int64_t *ord = forder + jb_ * Lmax;
        if (fpick[jb_] < 0)
            cl[ord[0]] = 1;                          /* one-vs-rest: its single bin */
        else
            for (Py_ssize_t q = 0; q <= fpick[jb_]; q++) cl[ord[q]] = 1;
        /* left sums: hist * set, added in bin order from the first product (np.cumsum's order) */
        for (Py_ssize_t c = 0; c < C; c++) {
            const double *hc = h + ((i * C + c) * d + feats[jb_]) * S;
            double run = hc[0] * (double)cl[0];
            for (Py_ssize_t v = 1; v < S; v++) run += hc[v] * (double)cl[v];
            left[i * C + c] = run;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(sorted); free(key); free(cand); free(fscore); free(forder); free(fpick);
    ka_release(&K);
    return result;
}

static PyMethodDef methods[] = {
    {"many_vs_many", many_vs_many, METH_VARARGS,
     "many_vs_many(h, tot, B, C, V, L, max_cat_threshold, lam, cat_smooth, min_child, min_hess, "
     "min_data_per_group, rtol, score, order, length): LightGBM's many-vs-many categorical scan."},
    {"categorical_splits", categorical_splits, METH_VARARGS,
     "categorical_splits(hist, totals, k, C, d, S, feats, n_bins, mask, max_cat_to_onehot, max_cat_threshold, "
     "lambda_l2, cat_l2, cat_smooth, min_child, min_hess, min_data_per_group, rtol, score, feature, cat_left, left, l2): "
     "the best categorical split of each node over the categorical features."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cat_kernels",
                                    "Compiled categorical split search (see categorical.py).", -1, methods};

PyMODINIT_FUNC PyInit__cat_kernels(void) { return PyModule_Create(&module); }
