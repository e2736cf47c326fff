/* Compiled inner loops of the histogram trees (LightGBM's data-parallel GBDT, one rank's part).
 *
 * histogram(): one pass over a node's rows accumulates (gradient channels..., hessian, count)
 *   of every (sampled) feature. The codes are row-major (n x d uint8), so a row's codes are
 *   one or two cache lines when the node's rows are gathered, and the per-row statistics are
 *   row-major too (n x Cin float64: gradient(s) then hessian, one cache line). Accumulators
 *   are interleaved per bin, acc[(f * S + code) * A + c], so a row touches one cache line per
 *   feature instead of one per channel; they are scattered to the (C, d, S) layout that the
 *   split search and the collective use at the end. Float64 sums; counts are float64 too
 *   (exact below 2**53 rows).
 *
 * partition(): stable split of a node's rows (a contiguous range of the tree's row
 *   permutation, as in LightGBM's DataPartition) into left rows then right rows, in place,
 *   by (feature, threshold bin, missing direction). It reads the feature-major codes: the
 *   rows are ascending, so one feature's codes are read front to back.
 *
 * partition_table(): the same stable partition for a categorical split, "goes left" read
 *   from a 256-entry table over the codes.
 *
 * add_leaf_value(): scores[rows[i] * K + k] += value for the rows of one leaf.
 *
 * predict_raw(): prediction on raw features, rows partitioned down each tree (threshold
 *   nodes, and categorical nodes by bitsets over bin codes).
 *
 * best_splits(): the best split of each of k nodes (the vectorised NumPy split search's
 *   arithmetic and tie rule, in the same order, without its (k, C, d, S) temporaries).
 *
 * The Python wrappers (histogram.py, grower.py, split.py) check dtypes, shapes, contiguity
 * and index ranges before calling: the C code trusts them. Sizes are Py_ssize_t and products
 * of sizes are computed in Py_ssize_t (64-bit), so no int overflow on large shards.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------------- histogram */

/* A node's rows are spread over the shard, so each row's codes and statistics are a cache
 * miss, and one row's accumulation (d features x a few loads, adds and stores) fills the
 * out-of-order window: without help the CPU waits for one row's miss at a time (measured
 * 4.6 ns per row and feature on 32k of 400k rows, against 1.2 on all rows). Prefetching
 * PREFETCH_AHEAD rows ahead overlaps the misses. */
#define PREFETCH_AHEAD 12
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Prefetch the codes (up to two cache lines) and statistics of local row r. */
static inline void prefetch_row(const uint8_t *cd, const double *w, Py_ssize_t r, Py_ssize_t d,
                                Py_ssize_t cin)
{
    PREFETCH(cd + r * d);
    PREFETCH(cd + r * d + d - 1);
    PREFETCH(w + r * cin);
}

/* Zero the accumulators of the selected features. */
static void zero_acc(double *acc, const int64_t *feats, Py_ssize_t nf, Py_ssize_t S, Py_ssize_t A)
{
    for (Py_ssize_t j = 0; j < nf; j++)
        memset(acc + feats[j] * S * A, 0, (size_t)(S * A) * sizeof(double));
}

static PyObject *histogram(PyObject *self, PyObject *args)
{
    Py_buffer codes, ch, rows, feats, acc_buf, out;
    Py_ssize_t n, d, cin, S;
    int all_rows, hess_is_count, with_count;
    if (!PyArg_ParseTuple(args, "y*nny*ny*iy*nw*w*ii", &codes, &n, &d, &ch, &cin, &rows, &all_rows,
                          &feats, &S, &acc_buf, &out, &hess_is_count, &with_count))
        return NULL;
    const uint8_t *cd = (const uint8_t *)codes.buf;
    const double *w = (const double *)ch.buf;
    const int64_t *rw = (const int64_t *)rows.buf;
    const int64_t *fs = (const int64_t *)feats.buf;
    double *acc = (double *)acc_buf.buf;
    double *o = (double *)out.buf;
    Py_ssize_t m = all_rows ? n : rows.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t nf = feats.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t ng = hess_is_count ? cin - 1 : cin;  /* channels summed from the data */
    /* ... plus the count, unless the caller knows it (the root of an unbagged tree has
       the same counts every tree: one accumulator less per row and feature) */
    Py_ssize_t A = ng + (with_count ? 1 : 0);
    Py_ssize_t C = cin + 1;                           /* channels of the output */
    int dense = nf == d;                              /* all features: no indirection */

    Py_BEGIN_ALLOW_THREADS
    zero_acc(acc, fs, nf, S, A);
    if (A == 3 && with_count) {
        /* one gradient channel, hessian, count: the boosting case */
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, w, (Py_ssize_t)rw[i + PREFETCH_AHEAD], d, cin);
            const uint8_t *c = cd + r * d;
            double g = w[r * cin], h = w[r * cin + 1];
            if (dense) {
                double *a = acc;
                for (Py_ssize_t f = 0; f < d; f++, a += S * 3) {
                    double *b = a + (Py_ssize_t)c[f] * 3;
                    b[0] += g; b[1] += h; b[2] += 1.0;
                }
            } else {
                for (Py_ssize_t j = 0; j < nf; j++) {
                    double *b = acc + (fs[j] * S + (Py_ssize_t)c[fs[j]]) * 3;
                    b[0] += g; b[1] += h; b[2] += 1.0;
                }
            }
        }
    } else if (A == 2 && !with_count) {
        /* gradient and hessian, the count known */
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, w, (Py_ssize_t)rw[i + PREFETCH_AHEAD], d, cin);
            const uint8_t *c = cd + r * d;
            double g = w[r * cin], h = w[r * cin + 1];
            for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                double *b = acc + (f * S + (Py_ssize_t)c[f]) * 2;
                b[0] += g; b[1] += h;
            }
        }
    } else if (A == 2) {
        /* one gradient channel and the count (L2: the hessian is the count) */
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, w, (Py_ssize_t)rw[i + PREFETCH_AHEAD], d, cin);
            const uint8_t *c = cd + r * d;
            double g = w[r * cin];
            for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                double *b = acc + (f * S + (Py_ssize_t)c[f]) * 2;
                b[0] += g; b[1] += 1.0;
            }
        }
    } else {
        /* several gradient channels (classification forests): generic loop */
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t r = all_rows ? i : (Py_ssize_t)rw[i];
            if (!all_rows && i + PREFETCH_AHEAD < m)
                prefetch_row(cd, w, (Py_ssize_t)rw[i + PREFETCH_AHEAD], d, cin);
            const uint8_t *c = cd + r * d;
            const double *wr = w + r * cin;
            for (Py_ssize_t j = 0; j < nf; j++) {
                Py_ssize_t f = dense ? j : fs[j];
                double *b = acc + (f * S + (Py_ssize_t)c[f]) * A;
                for (Py_ssize_t q = 0; q < ng; q++)
                    b[q] += wr[q];
                if (with_count)
                    b[ng] += 1.0;
            }
        }
    }
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
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&codes); PyBuffer_Release(&ch); PyBuffer_Release(&rows);
    PyBuffer_Release(&feats); PyBuffer_Release(&acc_buf); PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------------- partition */

static PyObject *partition(PyObject *self, PyObject *args)
{
    Py_buffer col, rows, tmp;
    Py_ssize_t thr, miss_slot;
    int missing_left;
    if (!PyArg_ParseTuple(args, "y*w*w*nni", &col, &rows, &tmp, &thr, &miss_slot, &missing_left))
        return NULL;
    const uint8_t *c = (const uint8_t *)col.buf;   /* one feature's codes of all local rows */
    int64_t *r = (int64_t *)rows.buf;              /* the node's rows, ascending */
    int64_t *t = (int64_t *)tmp.buf;               /* scratch for the right rows */
    Py_ssize_t m = rows.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t nl = 0, nr = 0;
    Py_BEGIN_ALLOW_THREADS
    /* left rows are written back in place (the write position never passes the read
       position), right rows go to the scratch and are appended after: stable, no sort */
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t row = r[i];
        Py_ssize_t code = c[row];
        int left = (code <= thr) | (missing_left & (code == miss_slot));  /* no branch */
        /* branch-free: store to both sides, advance one (the side is unpredictable) */
        r[nl] = row;
        t[nr] = row;
        nl += left;
        nr += !left;
    }
    memcpy(r + nl, t, (size_t)nr * sizeof(int64_t));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&col); PyBuffer_Release(&rows); PyBuffer_Release(&tmp);
    return PyLong_FromSsize_t(nl);
}

/* Categorical splits: the same stable in-place partition, with "goes left" read from a
 * 256-entry table over the codes (table[code] is 0 or 1: the split's left set of bins).
 * One L1-resident load replaces the comparison; a uint8 code cannot index past the table,
 * so no code can send a row anywhere but left or right. */
static PyObject *partition_table(PyObject *self, PyObject *args)
{
    Py_buffer col, rows, tmp, table;
    if (!PyArg_ParseTuple(args, "y*w*w*y*", &col, &rows, &tmp, &table))
        return NULL;
    const uint8_t *c = (const uint8_t *)col.buf;   /* one feature's codes of all local rows */
    int64_t *r = (int64_t *)rows.buf;              /* the node's rows */
    int64_t *t = (int64_t *)tmp.buf;               /* scratch for the right rows */
    const uint8_t *lut = (const uint8_t *)table.buf;   /* 256 bytes, each 0 or 1 */
    Py_ssize_t m = rows.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t nl = 0, nr = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t row = r[i];
        Py_ssize_t left = lut[c[row]];
        r[nl] = row;                               /* branch-free, as in partition() */
        t[nr] = row;
        nl += left;
        nr += 1 - left;
    }
    memcpy(r + nl, t, (size_t)nr * sizeof(int64_t));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&col); PyBuffer_Release(&rows); PyBuffer_Release(&tmp); PyBuffer_Release(&table);
    return PyLong_FromSsize_t(nl);
}

/* ---------------------------------------------------------------- leaf-value update */

/* scores[rows[i] * K + k] += value: one leaf's rows (NumPy's scores[rows, k] += value
 * gathers, adds and scatters in three passes). */
static PyObject *add_leaf_value(PyObject *self, PyObject *args)
{
    Py_buffer scores, rows;
    Py_ssize_t K, k;
    double value;
    if (!PyArg_ParseTuple(args, "w*nny*d", &scores, &K, &k, &rows, &value))
        return NULL;
    double *s = (double *)scores.buf;
    const int64_t *r = (const int64_t *)rows.buf;
    Py_ssize_t m = rows.len / (Py_ssize_t)sizeof(int64_t);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++)
        s[r[i] * K + k] += value;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&scores); PyBuffer_Release(&rows);
    Py_RETURN_NONE;
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
 * tie_rtol * |best| of the best. Only one node's cumulative sums and gains are held at a
 * time (scratch that stays in cache) instead of (k, C, d, V) arrays.
 *
 * Outputs per node: best[i] (flat index f * V * n_dir + b * n_dir + dir), best_gain[i]
 * (-inf: no valid candidate) and left[i, c] (the candidate's left sums; zeros when none),
 * and decoded: feat[i], bin[i], miss_left[i] (dir == 1; when the node has no missing value
 * in the feature, the side with more rows, split.py's rule, as (left count >= right count)).
 * Features outside the (k, d) mask (if given) have no candidates and are not scanned. */
static PyObject *best_splits(PyObject *self, PyObject *args)
{
    Py_buffer hist, totals, nbins, mask, best_b, gain_b, left_b, feat_b, bin_b, ml_b;
    Py_ssize_t k, C, d, S, n_dir, min_child;
    double lam, min_hess, tie_rtol;
    int nb_per_node;
    if (!PyArg_ParseTuple(args, "y*y*y*iy*nnnnndddnw*w*w*w*w*w*", &hist, &totals, &nbins, &nb_per_node, &mask,
                          &k, &C, &d, &S, &n_dir, &lam, &min_hess, &tie_rtol, &min_child, &best_b, &gain_b,
                          &left_b, &feat_b, &bin_b, &ml_b))
        return NULL;
    const double *H = (const double *)hist.buf;
    const double *T = (const double *)totals.buf;
    const int64_t *NB = (const int64_t *)nbins.buf;
    const uint8_t *MASK = mask.len ? (const uint8_t *)mask.buf : NULL;
    int64_t *BEST = (int64_t *)best_b.buf;
    double *BG = (double *)gain_b.buf, *LEFT = (double *)left_b.buf;
    int64_t *FEAT = (int64_t *)feat_b.buf, *BIN = (int64_t *)bin_b.buf;
    uint8_t *ML = (uint8_t *)ml_b.buf;
    Py_ssize_t V = S - 1, ng = C - 2, n_cand = d * V * n_dir;
    double mcs = (double)min_child;
    double *cum = (double *)malloc((size_t)(C * d * V + n_cand + 1) * sizeof(double));
    if (cum == NULL) {
        PyBuffer_Release(&hist); PyBuffer_Release(&totals); PyBuffer_Release(&nbins); PyBuffer_Release(&mask);
        PyBuffer_Release(&best_b); PyBuffer_Release(&gain_b); PyBuffer_Release(&left_b);
        PyBuffer_Release(&feat_b); PyBuffer_Release(&bin_b); PyBuffer_Release(&ml_b);
        return PyErr_NoMemory();
    }
    double *g = cum + C * d * V;                       /* gains of one node, (d, V, n_dir) */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        const double *t = T + i * C;
        const double *Hi = H + i * C * d * S;
        double top = -INFINITY;
        for (Py_ssize_t f = 0; f < d; f++) {
            double *gf = g + f * V * n_dir;
            Py_ssize_t nb = (Py_ssize_t)NB[nb_per_node ? i * d + f : f];
            /* a feature outside the mask, or with no value bin (a categorical feature in the
               numerical search, an all-missing one), has no valid candidate: skip its scan */
            if ((MASK && !MASK[i * d + f]) || nb <= 0) {
                for (Py_ssize_t q = 0; q < V * n_dir; q++)
                    gf[q] = -INFINITY;
                continue;
            }
            /* cumulative sums over the value bins per channel (np.cumsum order): cum[c, f, b] */
            for (Py_ssize_t c = 0; c < C; c++) {
                const double *h = Hi + (c * d + f) * S;
                double *cc = cum + (c * d + f) * V, run = 0.0;
                for (Py_ssize_t b = 0; b < V; b++) { run += h[b]; cc[b] = run; }
            }
            const double *hm = Hi + ((C - 2) * d + f) * S;    /* hessian row */
            const double *cm = Hi + ((C - 1) * d + f) * S;    /* count row */
            int has_miss = cm[V] > 0;
            const double *ch = cum + ((C - 2) * d + f) * V, *cc = cum + ((C - 1) * d + f) * V;
            if (ng == 1) {
                /* one gradient channel (boosting): branch-free over the bins, so the compiler
                   can vectorise it; adding 0.0 for "missing right" changes no value here */
                const double *cg = cum + f * V;
                double tg = t[0], th = t[C - 2], tc = t[C - 1];
                for (Py_ssize_t dir = 0; dir < n_dir; dir++) {
                    double mg = dir ? Hi[f * S + V] : 0.0, mh = dir ? hm[V] : 0.0, mc = dir ? cm[V] : 0.0;
                    for (Py_ssize_t b = 0; b < V; b++) {
                        double l = cg[b] + mg, hl = ch[b] + mh, cl = cc[b] + mc;
                        double r = tg - l, hr = th - hl, cr = tc - cl;
                        int valid = dir ? (b < nb - 1) & has_miss : (b < nb - 1) | ((b == nb - 1) & has_miss);
                        int ok = valid & (cl >= mcs) & (cr >= mcs) & (hl >= min_hess) & (hr >= min_hess)
                                 & (hl + lam > 0) & (hr + lam > 0);
                        double gain = (l * l) / (hl + lam) + (r * r) / (hr + lam);
                        gf[b * n_dir + dir] = ok ? gain : -INFINITY;
                    }
                }
                continue;
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
                        if (cl >= mcs && cr >= mcs && hl >= min_hess && hr >= min_hess
                            && hl + lam > 0 && hr + lam > 0) {
                            double sl = 0.0, sr = 0.0;
                            for (Py_ssize_t c = 0; c < ng; c++) {
                                double l = cum[(c * d + f) * V + b];
                                if (dir) l = l + Hi[(c * d + f) * S + V];
                                double r = t[c] - l;
                                /* NumPy sums the squares over the channels: first term, then += */
                                if (c == 0) { sl = l * l; sr = r * r; }
                                else { sl += l * l; sr += r * r; }
                            }
                            out = sl / (hl + lam) + sr / (hr + lam);
                        }
                    }
                    gf[b * n_dir + dir] = out;
                }
            }
        }
        for (Py_ssize_t q = 0; q < n_cand; q++)
            if (g[q] > top) top = g[q];
        /* the first candidate within tie_rtol of the best (NumPy: argmax of flat >= ...) */
        Py_ssize_t best = 0;
        if (n_cand) {
            double thr = top - tie_rtol * fabs(top);
            while (best < n_cand - 1 && !(g[best] >= thr)) best++;
        }
        double bg = n_cand ? g[best] : -INFINITY;
        BEST[i] = best;
        BG[i] = bg;
        double *li = LEFT + i * C;
        if (n_cand && bg > -INFINITY) {
            Py_ssize_t f = best / (V * n_dir), rest = best % (V * n_dir);
            Py_ssize_t b = rest / n_dir, dir = rest % n_dir;
            for (Py_ssize_t c = 0; c < C; c++)
                li[c] = cum[(c * d + f) * V + b] + (dir ? Hi[(c * d + f) * S + V] : 0.0);
        } else {
            for (Py_ssize_t c = 0; c < C; c++) li[c] = 0.0;
        }
        Py_ssize_t per = V * n_dir;                    /* >= 1: the wrapper needs S >= 2 */
        Py_ssize_t bf = best / per, brest = best % per;
        FEAT[i] = bf;
        BIN[i] = brest / n_dir;
        int node_has_miss = n_cand && Hi[((C - 1) * d + bf) * S + V] > 0;   /* no feature: no read */
        ML[i] = node_has_miss ? (brest % n_dir == 1) : (li[C - 1] >= t[C - 1] - li[C - 1]);
    }
    Py_END_ALLOW_THREADS
    free(cum);
    PyBuffer_Release(&hist); PyBuffer_Release(&totals); PyBuffer_Release(&nbins); PyBuffer_Release(&mask);
    PyBuffer_Release(&best_b); PyBuffer_Release(&gain_b); PyBuffer_Release(&left_b);
    PyBuffer_Release(&feat_b); PyBuffer_Release(&bin_b); PyBuffer_Release(&ml_b);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------- prediction */

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
    Py_buffer XT, feat, thr, ml, left, right, val, roots, cols, out, idx_b, tmp_b, stack_b, ci_b, cb_b;
    Py_ssize_t n, d, n_out, n_cols, cat_bytes;
    if (!PyArg_ParseTuple(args, "y*nny*y*y*y*y*y*ny*y*w*nw*w*w*y*y*n", &XT, &n, &d, &feat, &thr, &ml, &left,
                          &right, &val, &n_out, &roots, &cols, &out, &n_cols, &idx_b, &tmp_b, &stack_b,
                          &ci_b, &cb_b, &cat_bytes))
        return NULL;
    const int64_t *ci = ci_b.len ? (const int64_t *)ci_b.buf : NULL;
    const uint8_t *cb = (const uint8_t *)cb_b.buf;
    double n_codes = (double)(cat_bytes * 8);    /* codes 0 .. n_codes - 1 have a bit */
    const double *x = (const double *)XT.buf, *th = (const double *)thr.buf, *v = (const double *)val.buf;
    const int64_t *fe = (const int64_t *)feat.buf, *lf = (const int64_t *)left.buf;
    const int64_t *rt = (const int64_t *)right.buf, *ro = (const int64_t *)roots.buf;
    const int64_t *co = (const int64_t *)cols.buf;
    const int8_t *m = (const int8_t *)ml.buf;
    double *o = (double *)out.buf;
    int64_t *idx = (int64_t *)idx_b.buf, *tmp = (int64_t *)tmp_b.buf, *stack = (int64_t *)stack_b.buf;
    Py_ssize_t T = roots.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t cap = stack_b.len / (Py_ssize_t)sizeof(int64_t);
    int malformed = 0;                   /* a child link that loops: the stack would overflow */
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
    PyBuffer_Release(&XT); PyBuffer_Release(&feat); PyBuffer_Release(&thr); PyBuffer_Release(&ml);
    PyBuffer_Release(&left); PyBuffer_Release(&right); PyBuffer_Release(&val); PyBuffer_Release(&roots);
    PyBuffer_Release(&cols); PyBuffer_Release(&out); PyBuffer_Release(&idx_b); PyBuffer_Release(&tmp_b);
    PyBuffer_Release(&stack_b); PyBuffer_Release(&ci_b); PyBuffer_Release(&cb_b);
    if (malformed) {
        PyErr_SetString(PyExc_ValueError, "malformed tree: its child links do not form a tree");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"histogram", histogram, METH_VARARGS,
     "histogram(codes_rm, n, d, channels_rm, cin, rows, all_rows, feats, S, acc, out, hess_is_count)"},
    {"partition", partition, METH_VARARGS,
     "partition(codes_of_feature, rows, scratch, thr_bin, missing_slot, missing_left) -> n_left"},
    {"partition_table", partition_table, METH_VARARGS,
     "partition_table(codes_of_feature, rows, scratch, table256) -> n_left"},
    {"add_leaf_value", add_leaf_value, METH_VARARGS, "add_leaf_value(scores, K, k, rows, value)"},
    {"best_splits", best_splits, METH_VARARGS,
     "best_splits(hist, totals, n_bins, per_node, mask, k, C, d, S, n_dir, lam, min_hess, tie_rtol, min_child, "
     "best, best_gain, left, feat, bin, miss_left)"},
    {"predict_raw", predict_raw, METH_VARARGS,
     "predict_raw(XT, n, d, feature, threshold, missing_left, left, right, value, n_out, roots, cols, out, n_cols, "
     "idx, tmp, stack, cat_index, cat_bits, cat_bytes)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hist_kernels",
                                    "Compiled inner loops of the histogram trees.", -1, methods};

PyMODINIT_FUNC PyInit__hist_kernels(void) { return PyModule_Create(&module); }
