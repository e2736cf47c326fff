/* Compiled inner loops of the single decision tree's exact bins (models/trees/exact.py).
 *
 * The codes are uint16: feature f has nb[f] value bins (codes 0 .. nb[f] - 1, up to 65535
 * of them) and its missing code nb[f]. A histogram is ragged: feature f owns the slots
 * off[f] .. off[f] + nb[f] (its value bins, then its missing slot), off[d] = T slots in all,
 * so its size follows each feature's distinct count instead of d x 256. A node's histogram
 * holds only the slots of a sorted list (its parent's non-empty slots, exact.py): deep
 * nodes with few rows then cost O(their rows x d + their parent's non-empty slots), not
 * O(T), and a row pass is one slot lookup per feature whatever the number of bins.
 *
 * histogram(): one pass over a node's rows (row-major codes n x d and statistics n x cin)
 *   accumulates (channels..., count) into the list's slots through a slot -> list position
 *   table (T int32, all -1 between calls: set for the list's slots on entry, reset on exit).
 *   Interleaved accumulators acc[j * A + c], scattered to out[c, j] at the end. Float64 sums
 *   in row order.
 * partition(): stable in-place split of a node's rows by (feature codes, threshold bin,
 *   missing code, missing side), as _hist_kernels.partition for uint16 codes.
 * best_splits(): the best split of each of k nodes from their list histograms, scored as
 *   split.find_best_splits (sum_c G_c^2 / (H + lambda) per side: Gini / variance) or as
 *   criterion.find_best_splits_entropy (crit 1), candidates in (feature, bin, missing
 *   side) order, the first within tie_rtol of the best, as there.
 *
 * Arguments are checked as ../../_kernel_args.h describes: buffers (dtype, contiguity,
 * lengths from overflow-checked products), outputs disjoint, and every index read from one
 * buffer to address another (rows, codes, slots) range-checked, in the loop for rows and
 * codes (one compare and a never-taken branch each), in a pre-pass for the slot lists.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../_kernel_args.h"

#define KA_U16 ((ka_kind){"H", 2, "uint16", "'H'"})
#define KA_I32S ((ka_kind){"i", 4, "int32", "'i'"})

#define PREFETCH_AHEAD 12
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Check off (d + 1 int64, off[0] = 0, increasing by at least 1: each feature has its missing
 * slot) and return T = off[d], or -1 with ValueError. */
static Py_ssize_t check_offsets(ka_call *K, const int64_t *off, Py_ssize_t d)
{
    if (off[0] != 0) {
        PyErr_Format(PyExc_ValueError, "%s: off: off[0] must be 0, got %lld", K->fn, (long long)off[0]);
        return -1;
    }
    for (Py_ssize_t f = 0; f < d; f++)
        if (off[f + 1] <= off[f] || off[f + 1] - off[f] > 65536) {
            PyErr_Format(PyExc_ValueError, "%s: off: feature %zd has %lld slots, expected 1..65536", K->fn, f,
                         (long long)(off[f + 1] - off[f]));
            return -1;
        }
    return (Py_ssize_t)off[d];
}

/* ----------------------------------------------------------------------- histogram */

/* histogram(codes_rm, n, d, off, channels_rm, cin, rows, all_rows, table, slots, acc, out)
 *
 * codes_rm (n*d uint16), off (d+1 int64), channels_rm (n*cin float64), rows (int64, its
 * m = len entries, or all n rows with all_rows), table (T int32, written, -1 everywhere on
 * entry and exit), slots (L int64, increasing, in [0, T)), acc (L*(cin+1) float64 scratch),
 * out ((cin+1)*L float64): out[c, j] = sum over the rows of channel c (c < cin) or the row
 * count (c = cin) where the row's slot of some feature is slots[j]. A row whose slot is not
 * in the list is an error (the list must cover the node's rows: its parent's non-empty
 * slots). */
static PyObject *histogram(PyObject *self, PyObject *args)
{
    PyObject *ocodes, *ooff, *och, *orows, *otable, *oslots, *oacc, *oout;
    Py_ssize_t n, d, cin;
    int all_rows;
    if (!PyArg_ParseTuple(args, "OnnOOnOiOOOO", &ocodes, &n, &d, &ooff, &och, &cin, &orows, &all_rows, &otable,
                          &oslots, &oacc, &oout))
        return NULL;
    KA_CALL(K, "histogram");
    Py_buffer *codes, *offb, *ch, *rows, *table, *slots, *accb, *out;
    if (!(codes = ka_buffer(&K, "codes", ocodes, KA_U16, KA_IN))
        || !(offb = ka_buffer(&K, "off", ooff, KA_I64, KA_IN))
        || !(ch = ka_buffer(&K, "channels", och, KA_F64, KA_IN))
        || !(rows = ka_buffer(&K, "rows", orows, KA_I64, KA_IN))
        || !(table = ka_buffer(&K, "table", otable, KA_I32S, KA_OUT))
        || !(slots = ka_buffer(&K, "slots", oslots, KA_I64, KA_IN))
        || !(accb = ka_buffer(&K, "acc", oacc, KA_F64, KA_OUT))
        || !(out = ka_buffer(&K, "out", oout, KA_F64, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "n", n, 0) || ka_at_least(&K, "d", d, 0) || ka_at_least(&K, "cin", cin, 1)
        || ka_need(&K, offb, d + 1, "d+1"))
        goto fail;
    const int64_t *off = (const int64_t *)offb->buf;
    Py_ssize_t T = check_offsets(&K, off, d);
    if (T < 0)
        goto fail;
    Py_ssize_t L = ka_items(slots), A = cin + 1;
    Py_ssize_t m = all_rows ? n : ka_items(rows);
    if (ka_need(&K, codes, ka_mul(n, d), "n*d") || ka_need(&K, ch, ka_mul(n, cin), "n*cin")
        || ka_need(&K, table, T, "T = off[d]") || ka_need(&K, accb, ka_mul(L, A), "len(slots)*(cin+1)")
        || ka_need(&K, out, ka_mul(A, L), "(cin+1)*len(slots)") || ka_disjoint(&K))
        goto fail;
    const uint16_t *cd = (const uint16_t *)codes->buf;
    const double *w = (const double *)ch->buf;
    const int64_t *rw = (const int64_t *)rows->buf;
    const int64_t *sl = (const int64_t *)slots->buf;
    int32_t *tab = (int32_t *)table->buf;
    double *acc = (double *)accb->buf, *o = (double *)out->buf;
    /* pre-pass: the list (increasing, in range) into the table */
    for (Py_ssize_t j = 0; j < L; j++) {
        if (sl[j] < 0 || sl[j] >= T || (j && sl[j] <= sl[j - 1])) {
            for (Py_ssize_t q = 0; q < j; q++)
                tab[sl[q]] = -1;
            PyErr_Format(PyExc_ValueError, "histogram: slots: entry %zd (%lld) is out of [0, %zd) or not above the "
                         "one before", j, (long long)sl[j], T);
            goto fail;
        }
        if (tab[sl[j]] != -1) {
            for (Py_ssize_t q = 0; q < j; q++)
                tab[sl[q]] = -1;
            PyErr_Format(PyExc_ValueError, "histogram: table: entry %lld is %d, expected -1 (the table must be "
                         "all -1 between calls)", (long long)sl[j], (int)tab[sl[j]]);
            goto fail;
        }
        tab[sl[j]] = (int32_t)j;
    }
    Py_ssize_t bad_at = -1, bad_f = -1, bad_what = 0, bad_value = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(acc, 0, (size_t)(L * A) * sizeof(double));
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
        if (KA_UNLIKELY((size_t)r >= (size_t)n)) {
            bad_what = 1; bad_at = i; bad_value = r;
            break;
        }
        if (!all_rows && i + PREFETCH_AHEAD < m) {
            Py_ssize_t ra = (Py_ssize_t)rw[i + PREFETCH_AHEAD];
            if ((size_t)ra < (size_t)n) {
                PREFETCH(cd + ra * d);
                PREFETCH(w + ra * cin);
            }
        }
        const uint16_t *c = cd + r * d;
        const double *wr = w + r * cin;
        for (Py_ssize_t f = 0; f < d; f++) {
            int64_t s = off[f] + (int64_t)c[f];
            int32_t j = KA_UNLIKELY(s >= off[f + 1]) ? -2 : tab[s];
            if (KA_UNLIKELY(j < 0)) {
                bad_what = j == -2 ? 2 : 3; bad_at = r; bad_f = f; bad_value = c[f];
                goto done;
            }
            double *b = acc + (Py_ssize_t)j * A;
            for (Py_ssize_t q = 0; q < cin; q++)
                b[q] += wr[q];
            b[cin] += 1.0;
        }
    }
done:
    for (Py_ssize_t j = 0; j < L; j++)
        tab[sl[j]] = -1;
    if (!bad_what)
        for (Py_ssize_t q = 0; q < A; q++) {
            double *oq = o + q * L;
            for (Py_ssize_t j = 0; j < L; j++)
                oq[j] = acc[j * A + q];
        }
    Py_END_ALLOW_THREADS
    if (bad_what == 1) {
        ka_index_error(&K, "rows", bad_at, bad_value, 0, n);
        goto fail;
    }
    if (bad_what == 2) {
        PyErr_Format(PyExc_ValueError, "histogram: codes: code %zd of row %zd, feature %zd is above the feature's "
                     "missing code", bad_value, bad_at, bad_f);
        goto fail;
    }
    if (bad_what == 3) {
        PyErr_Format(PyExc_ValueError, "histogram: slots: code %zd of row %zd, feature %zd has no slot in the list "
                     "(the list must hold every slot of the node's rows)", bad_value, bad_at, bad_f);
        goto fail;
    }
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

/* ----------------------------------------------------------------------- partition */

/* partition(col, rows, tmp, thr, miss_code, missing_left) -> number of left rows.
 *
 * col: one feature's uint16 codes of all n local rows; rows (int64, written) the node's rows,
 * reordered in place: rows going left (code <= thr and not the missing code, or the missing
 * code when missing_left) first, both sides in their order; tmp (int64 scratch, at least
 * len(rows)). Every row is checked against n before its code is read. */
static PyObject *partition(PyObject *self, PyObject *args)
{
    PyObject *ocol, *orows, *otmp;
    Py_ssize_t thr, miss;
    int missing_left;
    if (!PyArg_ParseTuple(args, "OOOnni", &ocol, &orows, &otmp, &thr, &miss, &missing_left))
        return NULL;
    KA_CALL(K, "partition");
    Py_buffer *col, *rows, *tmp;
    if (!(col = ka_buffer(&K, "col", ocol, KA_U16, KA_IN)) || !(rows = ka_buffer(&K, "rows", orows, KA_I64, KA_OUT))
        || !(tmp = ka_buffer(&K, "tmp", otmp, KA_I64, KA_OUT)) || ka_need(&K, tmp, ka_items(rows), "len(rows)")
        || ka_disjoint(&K))
        goto fail;
    const uint16_t *c = (const uint16_t *)col->buf;
    int64_t *r = (int64_t *)rows->buf, *t = (int64_t *)tmp->buf;
    Py_ssize_t m = ka_items(rows), n = ka_items(col), nl = 0, nr = 0, bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t row = r[i];
        if (KA_UNLIKELY((uint64_t)row >= (uint64_t)n)) {
            bad = i;
            break;
        }
        Py_ssize_t code = c[row];
        Py_ssize_t left = code == miss ? (missing_left != 0) : (code <= thr);
        r[nl] = row;
        t[nr] = row;
        nl += left;
        nr += 1 - left;
    }
    memcpy(r + nl, t, (size_t)nr * sizeof(int64_t));
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

/* ------------------------------------------------------------------- split search */

static inline double xlogx(double x) { return x > 0.0 ? x * log(x) : 0.0; }

/* The score of one side: crit 0 sum_c s_c^2 / (h + lam) (NumPy's order: the squares summed
 * over the channels, then divided); crit 1 sum_c xlogx(max(-s_c, 0)) - xlogx(max(h, 0)). */
static inline double side_score(const double *s, Py_ssize_t ng, double h, double lam, int crit)
{
    double acc = 0.0;
    if (crit == 0) {
        for (Py_ssize_t c = 0; c < ng; c++)
            acc = c ? acc + s[c] * s[c] : s[0] * s[0];
        return acc / (h + lam);
    }
    for (Py_ssize_t c = 0; c < ng; c++) {
        double v = xlogx(-s[c] > 0.0 ? -s[c] : 0.0);
        acc = c ? acc + v : v;
    }
    return acc - xlogx(h > 0.0 ? h : 0.0);
}

/* best_splits(hist, starts, slots, off, nb, totals, k, C, crit, lam, min_hess, tie_rtol, min_child,
 *             scratch, best_gain, left, feat, bin, miss_left)
 *
 * Node i's histogram is hist[C * starts[i] :][c * L_i + j] over its slot list
 * slots[starts[i] : starts[i + 1]] (L_i entries, increasing, in [0, off[d])). Candidates:
 * for each value slot j of feature f (bin b = slots[j] - off[f]) "codes <= b go left", with
 * the missing slot right (dir 0) or left (dir 1, when the node has missing values in f),
 * valid as in split.py (b < nb - 1, or b = nb - 1 with missing values going right; the
 * constraints min_child rows, min_hess weight and a positive h + lam per side); plus, where
 * the feature's first listed value bin is above 0 and the node has missing values, the dense
 * histogram's (bin 0, missing left): the missing rows alone left. So the candidates, their
 * order and the choice are those of a scan of the dense histogram (empty bins only repeat
 * the partition of the bin before them). Outputs per
 * node: best_gain (the raw score of both children, -inf: none), left (its C sums), feat,
 * bin, miss_left (dir 1; with no missing value in f at the node: left count >= right count).
 * scratch: 3 * max L_i doubles (per list entry: that candidate, dir 0, dir 1). */
static PyObject *best_splits(PyObject *self, PyObject *args)
{
    PyObject *ohist, *ostarts, *oslots, *ooff, *onb, *otot, *oscr, *ogain, *oleft, *ofeat, *obin, *oml;
    Py_ssize_t k, C, min_child;
    int crit;
    double lam, min_hess, tie_rtol;
    if (!PyArg_ParseTuple(args, "OOOOOOnnidddnOOOOOO", &ohist, &ostarts, &oslots, &ooff, &onb, &otot, &k, &C, &crit,
                          &lam, &min_hess, &tie_rtol, &min_child, &oscr, &ogain, &oleft, &ofeat, &obin, &oml))
        return NULL;
    KA_CALL(K, "best_splits");
    Py_buffer *hist, *starts, *slots, *offb, *nbb, *tot, *scr, *gain_b, *left_b, *feat_b, *bin_b, *ml_b;
    if (!(hist = ka_buffer(&K, "hist", ohist, KA_F64, KA_IN))
        || !(starts = ka_buffer(&K, "starts", ostarts, KA_I64, KA_IN))
        || !(slots = ka_buffer(&K, "slots", oslots, KA_I64, KA_IN))
        || !(offb = ka_buffer(&K, "off", ooff, KA_I64, KA_IN))
        || !(nbb = ka_buffer(&K, "nb", onb, KA_I64, KA_IN))
        || !(tot = ka_buffer(&K, "totals", otot, KA_F64, KA_IN))
        || !(scr = ka_buffer(&K, "scratch", oscr, KA_F64, KA_OUT))
        || !(gain_b = ka_buffer(&K, "best_gain", ogain, KA_F64, KA_OUT))
        || !(left_b = ka_buffer(&K, "left", oleft, KA_F64, KA_OUT))
        || !(feat_b = ka_buffer(&K, "feat", ofeat, KA_I64, KA_OUT))
        || !(bin_b = ka_buffer(&K, "bin", obin, KA_I64, KA_OUT))
        || !(ml_b = ka_buffer(&K, "miss_left", oml, KA_FLAG, KA_OUT)))
        goto fail;
    if (ka_at_least(&K, "k", k, 0) || ka_at_least(&K, "C", C, 3) || ka_between(&K, "crit", crit, 0, 1)
        || ka_need(&K, starts, k + 1, "k+1") || ka_need(&K, tot, ka_mul(k, C), "k*C")
        || ka_need(&K, gain_b, k, "k") || ka_need(&K, left_b, ka_mul(k, C), "k*C") || ka_need(&K, feat_b, k, "k")
        || ka_need(&K, bin_b, k, "k") || ka_need(&K, ml_b, k, "k") || ka_disjoint(&K))
        goto fail;
    Py_ssize_t d = ka_items(offb) - 1;
    if (d < 0 || ka_need(&K, nbb, d, "len(off) - 1")) {
        if (d < 0)
            PyErr_SetString(PyExc_ValueError, "best_splits: off: at least one entry expected");
        goto fail;
    }
    const int64_t *off = (const int64_t *)offb->buf, *NB = (const int64_t *)nbb->buf;
    Py_ssize_t T = check_offsets(&K, off, d);
    if (T < 0)
        goto fail;
    for (Py_ssize_t f = 0; f < d; f++)
        if (NB[f] != off[f + 1] - off[f] - 1) {
            PyErr_Format(PyExc_ValueError, "best_splits: nb: feature %zd has %lld value bins, its slots say %lld", f,
                         (long long)NB[f], (long long)(off[f + 1] - off[f] - 1));
            goto fail;
        }
    const int64_t *st = (const int64_t *)starts->buf, *sl = (const int64_t *)slots->buf;
    Py_ssize_t Ltot = ka_items(slots), Lmax = 0;
    if (st[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "best_splits: starts: starts[0] must be 0");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        if (st[i + 1] < st[i] || st[i + 1] > Ltot) {
            PyErr_Format(PyExc_ValueError, "best_splits: starts: node %zd spans [%lld, %lld), outside [0, %zd) or "
                         "decreasing", i, (long long)st[i], (long long)st[i + 1], Ltot);
            goto fail;
        }
        for (Py_ssize_t j = st[i]; j < st[i + 1]; j++)
            if (sl[j] < 0 || sl[j] >= T || (j > st[i] && sl[j] <= sl[j - 1])) {
                PyErr_Format(PyExc_ValueError, "best_splits: slots: entry %zd (%lld) of node %zd is out of [0, %zd) "
                             "or not above the one before", j, (long long)sl[j], i, T);
                goto fail;
            }
        if (st[i + 1] - st[i] > Lmax)
            Lmax = st[i + 1] - st[i];
    }
    if (ka_need(&K, hist, ka_mul(C, st[k]), "C*starts[k]") || ka_need(&K, scr, ka_mul(3, Lmax), "3*max L"))
        goto fail;
    const double *H = (const double *)hist->buf, *TT = (const double *)tot->buf;
    double *g = (double *)scr->buf, *BG = (double *)gain_b->buf, *LEFT = (double *)left_b->buf;
    int64_t *FEAT = (int64_t *)feat_b->buf, *BIN = (int64_t *)bin_b->buf;
    uint8_t *ML = (uint8_t *)ml_b->buf;
    Py_ssize_t ng = C - 2;
    double mcs = (double)min_child;
    double *cum = NULL, *lv = NULL, *rv = NULL;
    if (!(cum = ka_malloc(&K, 3 * C, sizeof(double), "3*C")))
        goto fail;
    lv = cum + C;
    rv = lv + C;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t L = st[i + 1] - st[i];
        const double *h = H + C * st[i];
        const int64_t *s = sl + st[i];
        const double *t = TT + i * C;
        Py_ssize_t j = 0, f = 0;
        while (j < L) {
            while (s[j] >= off[f + 1]) f++;                   /* the feature of slot s[j] */
            Py_ssize_t j1 = j;
            while (j1 < L && s[j1] < off[f + 1]) j1++;        /* the feature's entries [j, j1) */
            Py_ssize_t nb = (Py_ssize_t)NB[f], mslot = (Py_ssize_t)off[f] + nb;
            int has_miss = s[j1 - 1] == mslot && h[(C - 1) * L + j1 - 1] > 0;
            Py_ssize_t mj = s[j1 - 1] == mslot ? j1 - 1 : -1;
            for (Py_ssize_t c = 0; c < C; c++) cum[c] = 0.0;
            for (Py_ssize_t q = j; q < j1; q++) {
                g[3 * q] = g[3 * q + 1] = g[3 * q + 2] = -INFINITY;
                if (q == mj) continue;
                Py_ssize_t b = s[q] - off[f];
                /* the dense histogram's candidate (bin 0, missing left) when bin 0 is empty:
                   the missing rows alone go left (the list holds no slot for it) */
                int virt = q == j && b > 0 && has_miss;
                if (!virt)
                    for (Py_ssize_t c = 0; c < C; c++) cum[c] += h[c * L + q];
                for (int k3 = virt ? 0 : 1; k3 < 3; k3++) {
                    int dir = k3 != 1;
                    Py_ssize_t bb = k3 ? b : 0;
                    int valid = dir ? (bb < nb - 1) && has_miss : (bb < nb - 1) || (bb == nb - 1 && has_miss);
                    if (!valid) continue;
                    for (Py_ssize_t c = 0; c < C; c++) {
                        lv[c] = dir ? cum[c] + h[c * L + mj] : cum[c];
                        rv[c] = t[c] - lv[c];
                    }
                    double hl = lv[C - 2], hr = rv[C - 2], cl = lv[C - 1], cr = rv[C - 1];
                    if (cl >= mcs && cr >= mcs && hl >= min_hess && hr >= min_hess && hl + lam > 0 && hr + lam > 0)
                        g[3 * q + k3] = side_score(lv, ng, hl, lam, crit) + side_score(rv, ng, hr, lam, crit);
                    if (k3 == 0)
                        for (Py_ssize_t c = 0; c < C; c++) cum[c] += h[c * L + q];
                }
            }
            j = j1;
        }
        double top = -INFINITY;
        for (Py_ssize_t q = 0; q < 3 * L; q++)
            if (g[q] > top) top = g[q];
        double *li = LEFT + i * C;
        if (top == -INFINITY) {
            BG[i] = -INFINITY;
            FEAT[i] = BIN[i] = 0;
            ML[i] = 0;
            for (Py_ssize_t c = 0; c < C; c++) li[c] = 0.0;
            continue;
        }
        double thr = top - tie_rtol * fabs(top);
        Py_ssize_t best = 0;
        while (!(g[best] >= thr)) best++;
        BG[i] = g[best];
        Py_ssize_t q = best / 3, k3 = best % 3, dir = k3 != 1;
        f = 0;
        while (s[q] >= off[f + 1]) f++;
        Py_ssize_t j0 = q, mslot = (Py_ssize_t)off[f] + (Py_ssize_t)NB[f];
        while (j0 > 0 && s[j0 - 1] >= off[f]) j0--;
        Py_ssize_t j1 = q;
        while (j1 < L && s[j1] < off[f + 1]) j1++;
        Py_ssize_t mj = s[j1 - 1] == mslot ? j1 - 1 : -1;
        for (Py_ssize_t c = 0; c < C; c++) cum[c] = 0.0;
        for (Py_ssize_t p = j0; p <= q - (k3 == 0); p++)      /* the same sums in the same order */
            for (Py_ssize_t c = 0; c < C; c++) cum[c] += h[c * L + p];
        for (Py_ssize_t c = 0; c < C; c++) li[c] = dir ? cum[c] + h[c * L + mj] : cum[c];
        FEAT[i] = f;
        BIN[i] = k3 ? s[q] - off[f] : 0;
        int node_has_miss = mj >= 0 && h[(C - 1) * L + mj] > 0;
        ML[i] = node_has_miss ? (uint8_t)dir : (uint8_t)(li[C - 1] >= t[C - 1] - li[C - 1]);
    }
    Py_END_ALLOW_THREADS
    free(cum);
    ka_release(&K);
    Py_RETURN_NONE;
fail:
    ka_release(&K);
    return NULL;
}

static PyMethodDef methods[] = {
    {"histogram", histogram, METH_VARARGS,
     "histogram(codes_rm, n, d, off, channels_rm, cin, rows, all_rows, table, slots, acc, out)"},
    {"partition", partition, METH_VARARGS, "partition(col, rows, tmp, thr, miss_code, missing_left) -> n_left"},
    {"best_splits", best_splits, METH_VARARGS,
     "best_splits(hist, starts, slots, off, nb, totals, k, C, crit, lam, min_hess, tie_rtol, min_child, scratch, "
     "best_gain, left, feat, bin, miss_left)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_exact_kernels",
                                    "Compiled loops of the decision tree's exact (uint16) bins.", -1, methods};

PyMODINIT_FUNC PyInit__exact_kernels(void) { return PyModule_Create(&module); }
