/* Argument checks shared by the compiled kernels (every _*_kernels.c under src/shardlearn).
 *
 * Every entry point of the kernels checks what it is given before it touches memory, and
 * raises a Python exception that names the function, the argument and what was expected
 * against what it got, instead of reading or writing out of bounds:
 *
 *   - each buffer argument: the buffer protocol (PyObject_GetBuffer with PyBUF_STRIDES |
 *     PyBUF_FORMAT, plus PyBUF_WRITABLE for outputs), C-contiguous, native byte order,
 *     the struct format letter and item size of its dtype (float64 'd', float32 'f', int64
 *     'l' or 'q' with 8-byte items, int32 'i', uint8 'B', ...) -> TypeError otherwise;
 *   - its length in bytes against what the loop will touch, computed from the integer
 *     arguments with overflow-checked products (ka_mul: a product past PY_SSIZE_T_MAX is
 *     an error, never a wrapped small size); negative sizes are rejected -> ValueError;
 *   - outputs are disjoint from every other buffer of the call (an output that aliases an
 *     index array could rewrite the indices the loop trusts) -> ValueError;
 *   - index values read from one buffer to address another (rows, features, bin codes,
 *     child links, roots, category-set rows): range-checked, in a pre-pass where the
 *     index array is small next to the work (feature lists, tree nodes: O(nodes) against
 *     O(rows x depth)), else inside the loop before the access (row indices, bin codes:
 *     one compare and a never-taken branch per index, measured in each kernel's source)
 *     -> ValueError, raised after the loop stops at the first bad index.
 *
 * Why checked buffer protocol and not Cython typed memoryviews: the checks are the same
 * either way (a typed memoryview checks the dtype, dimensions and contiguity, but not the
 * lengths that the loops derive from the integer arguments, nor the index values, which
 * still need this code), and Cython would add a build dependency for the C loops we
 * already have. With plain C99 against the CPython API, `pip install` needs only a C
 * compiler, and an install without one still works: the extensions are optional and the
 * models then run their NumPy code paths (shardlearn.backend.compiled_kernels), which
 * give the same results. The checks cost O(1) per call, except the index checks above: a
 * buffer request with its format costs ~30-50 ns (NumPy formats the dtype string per
 * request; "y*" skipped that but could not tell int64 from float64), the rest is a few
 * compares; 0.07-0.9 us per call in all (each kernel's source has its figures).
 *
 * Use: one ka_call per entry point holds the buffers it acquired (ka_release releases them
 * all, also after an error). Every ka_* check returns 0 when it passes and -1 with the
 * exception set (ka_buffer and ka_malloc: NULL), so the checks chain with || and one
 * `goto fail`.
 */
#ifndef SHARDLEARN_KERNEL_ARGS_H
#define SHARDLEARN_KERNEL_ARGS_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KA_MAX_BUFFERS 16

/* An index check in a loop: the branch is never taken with valid arguments. */
#if defined(__GNUC__) || defined(__clang__)
#define KA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KA_UNLIKELY(x) (x)
#endif

/* A dtype: the struct format letters that denote it and its item size. int64 is 'l' on
 * LP64 and 'q' everywhere (NumPy exports 'l' for int64 on Linux); a letter whose native
 * size differs from itemsize is rejected by the item size check. */
typedef struct {
    const char *letters;   /* accepted struct format letters */
    Py_ssize_t itemsize;
    const char *name;      /* for messages */
    const char *formats;   /* for messages */
} ka_kind;

/* (macros, not const objects: a kernel that uses a few of them compiles without warnings) */
#define KA_F64 ((ka_kind){"d", 8, "float64", "'d'"})
#define KA_F32 ((ka_kind){"f", 4, "float32", "'f'"})
#define KA_I64 ((ka_kind){"lq", 8, "int64", "'l' or 'q'"})
#define KA_I32 ((ka_kind){"il", 4, "int32", "'i'"})
#define KA_U8 ((ka_kind){"B", 1, "uint8", "'B'"})
#define KA_I8 ((ka_kind){"b", 1, "int8", "'b'"})
#define KA_FLAG ((ka_kind){"B?b", 1, "uint8/bool/int8", "'B', '?' or 'b'"})   /* 0 / nonzero flags */

enum { KA_IN = 0, KA_OUT = 1 };

typedef struct {
    const char *fn;                       /* the entry point, for messages */
    int n;                                /* buffers acquired so far */
    Py_buffer views[KA_MAX_BUFFERS];
    const char *names[KA_MAX_BUFFERS];
    const char *kinds[KA_MAX_BUFFERS];    /* dtype names, for messages */
    unsigned char out[KA_MAX_BUFFERS];    /* written by the kernel */
} ka_call;

#define KA_CALL(K, NAME) \
    ka_call K;           \
    K.fn = (NAME);       \
    K.n = 0

static inline void ka_release(ka_call *K)
{
    for (int i = 0; i < K->n; i++)
        PyBuffer_Release(&K->views[i]);
    K->n = 0;
}

/* a * b for sizes; -1 when either is negative or the product exceeds PY_SSIZE_T_MAX
 * (and -1 stays -1 through a chain of ka_mul). */
static inline Py_ssize_t ka_mul(Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0 || b < 0)
        return -1;
    if (a != 0 && b > PY_SSIZE_T_MAX / a)
        return -1;
    return a * b;
}

/* a + b for sizes; -1 as ka_mul. */
static inline Py_ssize_t ka_add(Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0 || b < 0 || b > PY_SSIZE_T_MAX - a)
        return -1;
    return a + b;
}

static inline int ka_format_ok(const char *fmt, const char *letters)
{
    if (fmt == NULL) /* the protocol's default: unsigned bytes */
        fmt = "B";
#if PY_LITTLE_ENDIAN
    const char native = '<';
#else
    const char native = '>';
#endif
    if (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == native)
        fmt++;
    return fmt[0] != '\0' && fmt[1] == '\0' && strchr(letters, fmt[0]) != NULL;
}

/* Acquire argument `name` (the Python object obj) as a C-contiguous buffer of `kind`
 * items, writable when mode is KA_OUT. Returns the view (owned by K), or NULL with
 * TypeError / ValueError set. */
static inline Py_buffer *ka_buffer(ka_call *K, const char *name, PyObject *obj, ka_kind kind, int mode)
{
    if (K->n >= KA_MAX_BUFFERS) {
        PyErr_Format(PyExc_SystemError, "%s: more than %d buffer arguments", K->fn, KA_MAX_BUFFERS);
        return NULL;
    }
    Py_buffer *v = &K->views[K->n];
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (mode == KA_OUT ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        if (mode == KA_OUT && PyObject_CheckBuffer(obj)) {
            PyErr_Clear();
            if (PyObject_GetBuffer(obj, v, PyBUF_STRIDES | PyBUF_FORMAT) == 0) {
                int ro = v->readonly;
                PyBuffer_Release(v);
                if (ro) {
                    PyErr_Format(PyExc_TypeError,
                                 "%s: %s: a writable buffer of %s is expected (the kernel writes it), "
                                 "got a read-only %.100s", K->fn, name, kind.name, Py_TYPE(obj)->tp_name);
                    return NULL;
                }
            }
        }
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s: a C-contiguous buffer of %s expected, got %.100s", K->fn, name,
                     kind.name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    K->names[K->n] = name;
    K->kinds[K->n] = kind.name;
    K->out[K->n] = mode == KA_OUT;
    K->n++;          /* owned from here: released by ka_release, also on the errors below */
    if (v->itemsize != kind.itemsize || !ka_format_ok(v->format, kind.letters)) {
        PyErr_Format(PyExc_TypeError, "%s: %s: %s items expected (%zd bytes, format %s), got format '%s' "
                     "(%zd-byte items)", K->fn, name, kind.name, kind.itemsize, kind.formats,
                     v->format ? v->format : "B", v->itemsize);
        return NULL;
    }
    if (!PyBuffer_IsContiguous(v, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s: %s: a C-contiguous buffer expected, got a strided one", K->fn, name);
        return NULL;
    }
    return v;
}

/* The number of items of an acquired buffer. */
static inline Py_ssize_t ka_items(const Py_buffer *v)
{
    return v->len / v->itemsize;
}

/* Size argument `name` must be >= lo. */
static inline int ka_at_least(ka_call *K, const char *name, Py_ssize_t value, Py_ssize_t lo)
{
    if (value >= lo)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s: %s: must be >= %zd, got %zd", K->fn, name, lo, value);
    return -1;
}

/* Integer argument `name` must be in [lo, hi]. */
static inline int ka_between(ka_call *K, const char *name, Py_ssize_t value, Py_ssize_t lo, Py_ssize_t hi)
{
    if (value >= lo && value <= hi)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s: %s: must be in [%zd, %zd], got %zd", K->fn, name, lo, hi, value);
    return -1;
}

/* Buffer v must hold at least `count` items; `what` spells count ("k*C*d*S"). count is -1
 * when ka_mul overflowed. */
static inline int ka_need(ka_call *K, const Py_buffer *v, Py_ssize_t count, const char *what)
{
    int i = 0;
    while (i < K->n - 1 && &K->views[i] != v)
        i++;
    Py_ssize_t bytes = ka_mul(count, v->itemsize);
    if (bytes < 0) {
        PyErr_Format(PyExc_ValueError, "%s: %s: the size %s overflows Py_ssize_t", K->fn, K->names[i], what);
        return -1;
    }
    if (v->len >= bytes)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s: %s: buffer sizes do not match the shapes: needs at least %zd bytes "
                 "(%s = %zd %s items), got %zd", K->fn, K->names[i], bytes, what, count, K->kinds[i], v->len);
    return -1;
}

/* malloc(count * itemsize) for the kernel's own scratch, with the product checked;
 * NULL with ValueError (overflow) or MemoryError set. `what` spells count. */
static inline void *ka_malloc(ka_call *K, Py_ssize_t count, size_t itemsize, const char *what)
{
    Py_ssize_t bytes = ka_mul(count, (Py_ssize_t)itemsize);
    if (bytes < 0) {
        PyErr_Format(PyExc_ValueError, "%s: the scratch of %s items overflows Py_ssize_t", K->fn, what);
        return NULL;
    }
    void *p = malloc(bytes ? (size_t)bytes : 1);
    if (p == NULL)
        PyErr_NoMemory();
    return p;
}

/* Every output must be disjoint from every other buffer of the call (read or written). */
static inline int ka_disjoint(ka_call *K)
{
    for (int i = 0; i < K->n; i++) {
        if (!K->out[i] || K->views[i].len == 0)
            continue;
        const char *a0 = (const char *)K->views[i].buf, *a1 = a0 + K->views[i].len;
        for (int j = 0; j < K->n; j++) {
            if (j == i || K->views[j].len == 0)
                continue;
            const char *b0 = (const char *)K->views[j].buf, *b1 = b0 + K->views[j].len;
            if (a0 < b1 && b0 < a1) {
                PyErr_Format(PyExc_ValueError, "%s: %s: the output overlaps %s (outputs must not share memory "
                             "with any other argument)", K->fn, K->names[i], K->names[j]);
                return -1;
            }
        }
    }
    return 0;
}

/* An index read from argument `name` at position pos is out of [lo, hi). */
static inline int ka_index_error(ka_call *K, const char *name, Py_ssize_t pos, int64_t value, int64_t lo, int64_t hi)
{
    PyErr_Format(PyExc_ValueError, "%s: %s: index %lld at position %zd is out of range [%lld, %lld)", K->fn, name,
                 (long long)value, pos, (long long)lo, (long long)hi);
    return -1;
}

/* Pre-pass: every a[i] (m int64 values) in [lo, hi). */
static inline int ka_check_range(ka_call *K, const char *name, const int64_t *a, Py_ssize_t m, int64_t lo, int64_t hi)
{
    for (Py_ssize_t i = 0; i < m; i++)
        if (a[i] < lo || a[i] >= hi)
            return ka_index_error(K, name, i, a[i], lo, hi);
    return 0;
}

/* Pre-pass: every a[i] (m int32 values: row indices) in [lo, hi). */
static inline int ka_check_range_i32(ka_call *K, const char *name, const int32_t *a, Py_ssize_t m, int64_t lo,
                                     int64_t hi)
{
    for (Py_ssize_t i = 0; i < m; i++)
        if (a[i] < lo || a[i] >= hi)
            return ka_index_error(K, name, i, a[i], lo, hi);
    return 0;
}

#endif
