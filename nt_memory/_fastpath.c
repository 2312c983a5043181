/* nt_memory._fastpath: the Python boundary of the hot paths, and nothing else.
 *
 * Each object here converts its Python arguments and calls one numba-compiled entry point
 * (nt_memory/kernels/cabi.py) through the C address numba gives it, with the GIL held: a hash,
 * a probe and a copy cost one C call instead of numba's dispatch of `bytes` arguments. No
 * algorithm lives here; what the fast path does not cover (other value types, a miss, a busy
 * stripe, a contended lock, bad input) goes back to the Python slow path, which is the reference
 * (NT_MEMORY_PURE=1 runs it alone).
 *
 * Thread safety: every call holds the GIL from start to end except inside futex waits and spins,
 * which only read shared words; so an object's private buffers are never used by two threads at
 * once, and a value is copied out of them before any Python code (a decoder) runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int64_t (*get_fn)(int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*put_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*get_many_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*put_many_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t);
typedef int64_t (*try_fn)(int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*release_fn)(int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*receive_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*publish_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
typedef int64_t (*log_keys_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, int64_t, int64_t);

#define KEY_STACK 512     /* stored keys up to this many bytes are built on the stack */
#define VALUE_STACK 4096  /* and encoded values up to this many */
#define TAG_BYTES 0x01    /* tiers/codec.py: raw bytes */
#define TAG_ARRAY 0x02    /* tiers/codec.py: u16 data offset | u8 ndim | ... header ... | data */
#define TAG_JSON 0x03     /* tiers/codec.py: UTF-8 JSON */

static PyObject *json_loads; /* json.loads, set by the codec at import (set_json_loads) */
#define ARRAY_HEADER_MAX 64
#define ARRAY_SHAPES 4
#define STATUS_OK 0
#define STATUS_NOT_FOUND (-1)
#define LOCK_SLOT_BYTES 128  /* kernels/locktable.py: LOCK_SLOT_WORDS * 8 */
#define LK_NOTIFY_OFFSET 32  /* LK_NOTIFY_IDX * 8 */
#define WAKE_ONE 1           /* kernels/locktable.py: lock_release's results */
#define WAKE_ALL 2
#define RING_TAIL_OFFSET 128    /* kernels/ring.py: RING_TAIL_IDX * 8 */
#define RING_NOTIFY_OFFSET 448  /* RING_NOTIFY_IDX * 8 */
#define RING_WAITERS_OFFSET 456 /* RING_WAITERS_IDX * 8 */
#define RING_SPINNERS_OFFSET 464 /* RING_SPINNERS_IDX * 8 */
#define SPIN_MIN_NS 5000        /* coordination/pubsub.py: SPIN_MIN_S */
#define SPIN_GROW_FACTOR 2      /* coordination/pubsub.py: SPIN_GROW_FACTOR */
#define STATUS_FULL (-2)        /* kernels/status.py: FULL */
#define HITS_STACK 64           /* a search's hits up to this many keep their key ends on the stack */
#define HIT_KEYS_STACK 4096     /* and their keys, up to this many bytes */
#define MANY_OUT_MIN 65536      /* a batch get copies values into at least this many bytes per round */

/* ------------------------------------------------------------------------------- helpers */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void wake(int64_t addr, int count) {
    syscall(SYS_futex, (void *)addr, FUTEX_WAKE, count, NULL, NULL, 0);
}

static void wake_all(int64_t addr) { wake(addr, INT32_MAX); }

/* Sleep while the 32-bit word at addr equals expected, up to timeout_ns (< 0: no limit). The GIL
   is released meanwhile. Returns -1 with an exception set if a signal handler raised. */
static int wait_word(int64_t addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    int rc, err;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = (int)syscall(SYS_futex, (void *)addr, FUTEX_WAIT, (int32_t)expected, tsp, NULL, 0);
    err = errno;
    Py_END_ALLOW_THREADS
    if (rc != 0 && err == EINTR && PyErr_CheckSignals() < 0)
        return -1;
    return 0;
}

/* UTF-8 (str) or raw (bytes) contents of a key part; 0 when the part needs the slow path. An
   ASCII str is its own UTF-8: read in place, without the conversion call. */
static int key_part(PyObject *o, const char **p, Py_ssize_t *n) {
    if (PyUnicode_CheckExact(o)) {
        if (PyUnicode_IS_COMPACT_ASCII(o)) {
            *p = (const char *)PyUnicode_DATA(o);
            *n = PyUnicode_GET_LENGTH(o);
            return 1;
        }
        *p = PyUnicode_AsUTF8AndSize(o, n);
        if (*p == NULL) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    if (PyBytes_CheckExact(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 1;
    }
    return 0;
}

/* The namespace an object last used checked out as valid (a strong reference keeps its address
   from being reused by another object, and a str's contents never change). */
typedef struct {
    PyObject *obj;
    const char *p;
    Py_ssize_t n;
} NsCache;

static int namespace_of(NsCache *c, PyObject *ns, const char **p, Py_ssize_t *n) {
    if (ns == c->obj && ns != NULL) {
        *p = c->p;
        *n = c->n;
        return 1;
    }
    if (!key_part(ns, p, n) || *n == 0 || memchr(*p, 0, (size_t)*n) != NULL)
        return 0;
    Py_XSETREF(c->obj, Py_NewRef(ns));
    c->p = *p;
    c->n = *n;
    return 1;
}

/* Write the stored key "namespace NUL key" at buf (nn + 1 + kn bytes). */
static void compose_key(char *buf, const char *np, Py_ssize_t nn, const char *kp, Py_ssize_t kn) {
    memcpy(buf, np, (size_t)nn);
    buf[nn] = 0;
    memcpy(buf + nn + 1, kp, (size_t)kn);
}

/* Build the stored key "namespace NUL key" into stack (or a heap buffer, returned in *heap).
   Returns its length, or -1 when the slow path must handle (and report) the call. */
static Py_ssize_t stored_key(NsCache *c, PyObject *ns, PyObject *key, Py_ssize_t max_key, char *stack, char **heap,
                             const char **out) {
    const char *np, *kp;
    Py_ssize_t nn, kn, total;
    char *buf;
    *heap = NULL;
    if (!namespace_of(c, ns, &np, &nn) || !key_part(key, &kp, &kn) || kn == 0)
        return -1;
    total = nn + 1 + kn;
    if (total > max_key)
        return -1;
    if (total <= KEY_STACK) {
        buf = stack;
    } else {
        buf = PyMem_Malloc((size_t)total);
        if (buf == NULL)
            return -1;
        *heap = buf;
    }
    compose_key(buf, np, nn, kp, kn);
    *out = buf;
    return total;
}

/* Array headers seen before (tiers/codec.py's encoding, up to the data offset) and the dtype and
   shape the Python decoder made of them: a later array with the same header is made here with
   one allocation and one copy. Filled only from arrays the decoder accepted (it refuses object
   dtypes), so no header can make this side build an array the decoder would not. */
typedef struct {
    char header[ARRAY_HEADER_MAX];
    Py_ssize_t header_len, nbytes;
    PyArray_Descr *descr;
    int ndim;
    npy_intp dims[NPY_MAXDIMS];
} ArrayShape;

typedef struct {
    ArrayShape shapes[ARRAY_SHAPES];
    int next;
} ArrayShapes;

static void shapes_clear(ArrayShapes *c) {
    for (int i = 0; i < ARRAY_SHAPES; i++) {
        Py_CLEAR(c->shapes[i].descr);
        c->shapes[i].header_len = 0;
    }
}

static Py_ssize_t array_header_len(const char *buf, Py_ssize_t n) {
    Py_ssize_t off;
    if (n < 4)
        return -1;
    off = (unsigned char)buf[1] | ((Py_ssize_t)(unsigned char)buf[2] << 8);
    return off <= n && off <= ARRAY_HEADER_MAX ? off : -1;
}

static PyObject *known_array(ArrayShapes *c, const char *buf, Py_ssize_t n) {
    Py_ssize_t off = array_header_len(buf, n);
    if (c == NULL || off < 0)
        return NULL;
    for (int i = 0; i < ARRAY_SHAPES; i++) {
        ArrayShape *s = &c->shapes[i];
        if (s->descr != NULL && s->header_len == off && s->nbytes == n - off && memcmp(s->header, buf, off) == 0) {
            PyObject *arr;
            Py_INCREF(s->descr); /* stolen by the constructor */
            arr = PyArray_NewFromDescr(&PyArray_Type, s->descr, s->ndim, s->dims, NULL, NULL, 0, NULL);
            if (arr != NULL)
                memcpy(PyArray_DATA((PyArrayObject *)arr), buf + off, (size_t)s->nbytes);
            return arr;
        }
    }
    return NULL;
}

static void remember_array(ArrayShapes *c, const char *buf, Py_ssize_t n, PyObject *result) {
    Py_ssize_t off = array_header_len(buf, n);
    PyArrayObject *a = (PyArrayObject *)result;
    ArrayShape *s;
    if (c == NULL || off < 0 || !PyArray_CheckExact(result) || !PyArray_IS_C_CONTIGUOUS(a) ||
        PyArray_NBYTES(a) != n - off || PyArray_NDIM(a) > NPY_MAXDIMS)
        return;
    s = &c->shapes[c->next];
    c->next = (c->next + 1) % ARRAY_SHAPES;
    Py_XSETREF(s->descr, (PyArray_Descr *)Py_NewRef((PyObject *)PyArray_DESCR(a)));
    memcpy(s->header, buf, (size_t)off);
    s->header_len = off;
    s->nbytes = n - off;
    s->ndim = PyArray_NDIM(a);
    memcpy(s->dims, PyArray_DIMS(a), sizeof(npy_intp) * (size_t)s->ndim);
}

/* A value read into buf (tag first, n bytes): bytes and known array shapes directly, anything
   else through decode. */
static PyObject *value_of(const char *buf, Py_ssize_t n, PyObject *decode, ArrayShapes *shapes) {
    PyObject *raw, *result;
    if (n >= 1 && (unsigned char)buf[0] == TAG_BYTES)
        return PyBytes_FromStringAndSize(buf + 1, n - 1);
    if (n >= 1 && (unsigned char)buf[0] == TAG_ARRAY) {
        result = known_array(shapes, buf, n);
        if (result != NULL || PyErr_Occurred())
            return result;
    }
    if (n >= 1 && (unsigned char)buf[0] == TAG_JSON && json_loads != NULL) {
        /* The codec writes UTF-8: decode it here, so json.loads skips its encoding detection. */
        PyObject *text = PyUnicode_DecodeUTF8(buf + 1, n - 1, "surrogatepass");
        if (text != NULL) {
            result = PyObject_CallOneArg(json_loads, text);
            Py_DECREF(text);
            if (result != NULL || !PyErr_ExceptionMatches(PyExc_ValueError))
                return result;
        }
        PyErr_Clear(); /* damaged: the decoder below reports it as a CodecError */
    }
    raw = PyBytes_FromStringAndSize(buf, n); /* copied before Python code can run */
    if (raw == NULL)
        return NULL;
    result = PyObject_CallOneArg(decode, raw);
    /* The header is read from the copy: the decoder may have let another thread refill buf. */
    if (result != NULL && (unsigned char)PyBytes_AS_STRING(raw)[0] == TAG_ARRAY)
        remember_array(shapes, PyBytes_AS_STRING(raw), n, result);
    Py_DECREF(raw);
    return result;
}

static PyObject *call_slow(PyObject *slow, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return PyObject_Vectorcall(slow, args, nargsf, kwnames);
}

static int64_t as_i64(PyObject *o, int *ok) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) {
        *ok = 0;
        return 0;
    }
    return (int64_t)v;
}

/* The address of a C entry compiled on first use: ``entry.address`` (kernels/_jit.py: CEntry), read
   once, on the first batch, so that a process that never batches never compiles the batch kernels
   (seconds of the first run on a fresh machine). 0 with an exception set on failure. */
static int64_t entry_address(PyObject *entry) {
    PyObject *a = PyObject_GetAttrString(entry, "address");
    int ok = 1;
    int64_t v;
    if (a == NULL)
        return 0;
    v = as_i64(a, &ok);
    Py_DECREF(a);
    if (ok && v == 0)
        PyErr_SetString(PyExc_RuntimeError, "a compiled entry has address 0");
    return ok ? v : 0;
}

/* --------------------------------------------------------------------------------- Getter */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int64_t ctx;
    get_fn get;
    get_many_fn get_many; /* NULL until the first batch resolves many_entry */
    PyObject *many_entry;
    Py_ssize_t max_key;
    Py_ssize_t out_bytes;
    char *out;
    PyObject *keep;    /* what keeps ctx's memory alive (the context array) */
    PyObject *on_miss; /* on_miss(status, hash, stored key, default) */
    PyObject *decode;  /* decode(encoded bytes) for every tag but raw bytes */
    PyObject *slow;    /* the Python get, for every call outside the fast path */
    NsCache ns;
    ArrayShapes shapes;
} Getter;

static PyObject *Getter_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Getter *g = (Getter *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    char stack[KEY_STACK], *heap;
    const char *kb;
    Py_ssize_t klen;
    int64_t h = 0, r;
    PyObject *result;
    if (kwnames != NULL || nargs < 2 || nargs > 3)
        return call_slow(g->slow, args, nargsf, kwnames);
    klen = stored_key(&g->ns, args[0], args[1], g->max_key, stack, &heap, &kb);
    if (klen < 0) {
        if (PyErr_Occurred())
            return NULL;
        return call_slow(g->slow, args, nargsf, kwnames);
    }
    r = g->get(g->ctx, (int64_t)(intptr_t)kb, (int64_t)klen, (int64_t)(intptr_t)g->out, (int64_t)(intptr_t)&h);
    if (r >= 0) {
        result = value_of(g->out, (Py_ssize_t)(r >> 8), g->decode, &g->shapes);
    } else {
        PyObject *st = PyLong_FromLongLong(r), *hh = PyLong_FromLongLong(h);
        PyObject *key = PyBytes_FromStringAndSize(kb, klen);
        result = NULL;
        if (st && hh && key)
            result = PyObject_CallFunctionObjArgs(g->on_miss, st, hh, key, nargs == 3 ? args[2] : Py_None, NULL);
        Py_XDECREF(st);
        Py_XDECREF(hh);
        Py_XDECREF(key);
    }
    if (heap != NULL)
        PyMem_Free(heap);
    return result;
}

/* The stored keys of a batch, back to back, and where each ends. 0 (nothing allocated) when the
   namespace or a key needs the slow path, which reports it; -1 with an exception set. The first
   pass checks each key and keeps where its contents are (and, in *ends, its length) for the
   second, which composes them: each key is looked up once. */
static int batch_keys(NsCache *c, PyObject *ns, PyObject *const *items, Py_ssize_t n, Py_ssize_t max_key,
                      int pairs, char **keys, int64_t **ends) {
    const char *np, **parts;
    Py_ssize_t nn, kn, total = 0, i;
    *keys = NULL;
    *ends = NULL;
    if (!namespace_of(c, ns, &np, &nn))
        return 0;
    parts = PyMem_Malloc(sizeof(char *) * ((size_t)n + 1)); /* + 1: never a zero-byte request */
    *ends = PyMem_Malloc(sizeof(int64_t) * ((size_t)n + 1));
    if (parts == NULL || *ends == NULL) {
        PyMem_Free(parts);
        PyMem_Free(*ends);
        *ends = NULL;
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *k = items[i];
        if (pairs) {
            if (!PyTuple_CheckExact(k) || PyTuple_GET_SIZE(k) != 2)
                break;
            k = PyTuple_GET_ITEM(k, 0);
        }
        if (!key_part(k, &parts[i], &kn) || kn == 0 || nn + 1 + kn > max_key)
            break;
        (*ends)[i] = kn;
        total += nn + 1 + kn;
    }
    if (i < n || (*keys = PyMem_Malloc((size_t)total + 1)) == NULL) {
        PyMem_Free(parts);
        PyMem_Free(*ends);
        *ends = NULL;
        if (i < n)
            return 0;
        PyErr_NoMemory();
        return -1;
    }
    total = 0;
    for (i = 0; i < n; i++) {
        kn = (Py_ssize_t)(*ends)[i];
        compose_key(*keys + total, np, nn, parts[i], kn);
        total += nn + 1 + kn;
        (*ends)[i] = total;
    }
    PyMem_Free(parts);
    return 1;
}

/* many(namespace, keys, default=None): the values of a list or tuple of keys, in one kernel call
   per round of values that fit the copy buffer. None when the batch needs the slow path (a key
   or the namespace the fast path does not take), which then answers the whole batch. */
static PyObject *Getter_many(Getter *g, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *seq, *result = NULL, *dflt;
    char *keys = NULL, *out = NULL;
    int64_t *ends = NULL, *res = NULL, first = 0;
    Py_ssize_t n, out_cap;
    int ok;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "many(namespace, keys, default=None)");
        return NULL;
    }
    dflt = nargs == 3 ? args[2] : Py_None;
    if (!PyList_CheckExact(args[1]) && !PyTuple_CheckExact(args[1]))
        Py_RETURN_NONE;
    if (g->get_many == NULL) {
        int64_t a = entry_address(g->many_entry);
        if (a == 0)
            return NULL;
        g->get_many = (get_many_fn)(intptr_t)a;
    }
    seq = Py_NewRef(args[1]);
    n = PySequence_Fast_GET_SIZE(seq);
    ok = batch_keys(&g->ns, args[0], PySequence_Fast_ITEMS(seq), n, g->max_key, 0, &keys, &ends);
    Py_DECREF(seq); /* the keys are copied: nothing below reads the sequence */
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);
    out_cap = g->out_bytes > MANY_OUT_MIN ? g->out_bytes : MANY_OUT_MIN;
    /* Per call, never per object: a decoder or on_miss runs Python code, and another thread may
       then batch through the same getter. */
    out = PyMem_Malloc((size_t)out_cap);
    res = PyMem_Malloc(sizeof(int64_t) * 2 * ((size_t)n + 1));
    result = PyList_New(n);
    if (out == NULL || res == NULL || result == NULL) {
        if (result == NULL || !PyErr_Occurred())
            PyErr_NoMemory();
        goto fail;
    }
    while (first < n) {
        int64_t next = g->get_many(g->ctx, (int64_t)(intptr_t)keys, (int64_t)(intptr_t)ends, first, (int64_t)n,
                                   (int64_t)(intptr_t)out, (int64_t)out_cap, (int64_t)(intptr_t)res);
        Py_ssize_t pos = 0;
        for (int64_t i = first; i < next; i++) {
            int64_t r = res[2 * i];
            PyObject *v;
            if (r >= 0) {
                v = value_of(out + pos, (Py_ssize_t)(r >> 8), g->decode, &g->shapes);
                pos += (Py_ssize_t)((((r >> 8) + 7) & ~7));
            } else {
                int64_t start = i == 0 ? 0 : ends[i - 1];
                PyObject *st = PyLong_FromLongLong(r), *hh = PyLong_FromLongLong(res[2 * i + 1]);
                PyObject *key = PyBytes_FromStringAndSize(keys + start, (Py_ssize_t)(ends[i] - start));
                v = NULL;
                if (st && hh && key)
                    v = PyObject_CallFunctionObjArgs(g->on_miss, st, hh, key, dflt, NULL);
                Py_XDECREF(st);
                Py_XDECREF(hh);
                Py_XDECREF(key);
            }
            if (v == NULL)
                goto fail;
            PyList_SET_ITEM(result, i, v);
        }
        first = next;
    }
    PyMem_Free(keys);
    PyMem_Free(ends);
    PyMem_Free(out);
    PyMem_Free(res);
    return result;
fail:
    Py_XDECREF(result);
    PyMem_Free(keys);
    PyMem_Free(ends);
    PyMem_Free(out);
    PyMem_Free(res);
    return NULL;
}

static PyMethodDef Getter_methods[] = {
    {"many", (PyCFunction)(void (*)(void))Getter_many, METH_FASTCALL,
     "many(namespace, keys, default=None): a batch get (None: the batch needs the slow path)"},
    {NULL, NULL, 0, NULL},
};

static int Getter_traverse(Getter *g, visitproc visit, void *arg) {
    Py_VISIT(g->many_entry);
    Py_VISIT(g->keep);
    Py_VISIT(g->on_miss);
    Py_VISIT(g->decode);
    Py_VISIT(g->slow);
    return 0;
}

static int Getter_clear(Getter *g) {
    shapes_clear(&g->shapes);
    Py_CLEAR(g->ns.obj);
    Py_CLEAR(g->many_entry);
    Py_CLEAR(g->keep);
    Py_CLEAR(g->on_miss);
    Py_CLEAR(g->decode);
    Py_CLEAR(g->slow);
    return 0;
}

static void Getter_dealloc(Getter *g) {
    PyObject_GC_UnTrack(g);
    Getter_clear(g);
    PyMem_Free(g->out);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyTypeObject GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nt_memory._fastpath.Getter",
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Getter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)Getter_traverse,
    .tp_clear = (inquiry)Getter_clear,
    .tp_dealloc = (destructor)Getter_dealloc,
    .tp_methods = Getter_methods,
    .tp_doc = "get(namespace, key, default=None): an L1 read in one C call (see tiers/l1.py).",
};

/* getter(ctx_addr, get_addr, max_key, out_bytes, keep, on_miss, decode, slow, get_many_entry) */
static PyObject *make_getter(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Getter *g;
    int ok = 1;
    int64_t ctx, fn, max_key, out_bytes;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "getter() takes 9 arguments");
        return NULL;
    }
    ctx = as_i64(args[0], &ok);
    fn = as_i64(args[1], &ok);
    max_key = as_i64(args[2], &ok);
    out_bytes = as_i64(args[3], &ok);
    if (!ok)
        return NULL;
    g = PyObject_GC_New(Getter, &GetterType);
    if (g == NULL)
        return NULL;
    g->vectorcall = Getter_call;
    g->ctx = ctx;
    g->get = (get_fn)(intptr_t)fn;
    g->get_many = NULL;
    g->many_entry = Py_NewRef(args[8]);
    g->max_key = (Py_ssize_t)max_key;
    g->out_bytes = (Py_ssize_t)out_bytes;
    g->out = PyMem_Malloc((size_t)out_bytes);
    g->keep = Py_NewRef(args[4]);
    g->on_miss = Py_NewRef(args[5]);
    g->decode = Py_NewRef(args[6]);
    g->slow = Py_NewRef(args[7]);
    g->ns.obj = NULL;
    memset(&g->shapes, 0, sizeof(g->shapes));
    if (g->out == NULL) {
        Py_DECREF(g);
        return PyErr_NoMemory();
    }
    PyObject_GC_Track(g);
    return (PyObject *)g;
}

/* --------------------------------------------------------------------------------- Putter */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int64_t ctx;
    put_fn put;
    put_many_fn put_many; /* NULL until the first batch resolves many_entry */
    PyObject *many_entry;
    Py_ssize_t max_key;
    Py_ssize_t max_value; /* encoded, tag included */
    int64_t l1_ttl_ns;
    int64_t flags;
    PyObject *keep;
    PyObject *slow; /* the Python put: every call outside the fast path, and every status but OK */
    NsCache ns;
} Putter;

static PyObject *Putter_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Putter *p = (Putter *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), klen, vlen;
    char kstack[KEY_STACK], vstack[VALUE_STACK], *kheap, *val;
    const char *kb;
    int64_t r;
    if (kwnames != NULL || nargs < 3 || nargs > 4 || (nargs == 4 && args[3] != Py_None) ||
        !PyBytes_CheckExact(args[2]))
        return call_slow(p->slow, args, nargsf, kwnames);
    vlen = PyBytes_GET_SIZE(args[2]) + 1;
    if (vlen > p->max_value)
        return call_slow(p->slow, args, nargsf, kwnames);
    klen = stored_key(&p->ns, args[0], args[1], p->max_key, kstack, &kheap, &kb);
    if (klen < 0) {
        if (PyErr_Occurred())
            return NULL;
        return call_slow(p->slow, args, nargsf, kwnames);
    }
    val = vlen <= VALUE_STACK ? vstack : PyMem_Malloc((size_t)vlen);
    if (val == NULL) {
        if (kheap != NULL)
            PyMem_Free(kheap);
        return PyErr_NoMemory();
    }
    val[0] = TAG_BYTES;
    memcpy(val + 1, PyBytes_AS_STRING(args[2]), (size_t)(vlen - 1));
    r = p->put(p->ctx, (int64_t)(intptr_t)kb, (int64_t)klen, (int64_t)(intptr_t)val, (int64_t)vlen, p->l1_ttl_ns, 0,
               p->flags);
    if (val != vstack)
        PyMem_Free(val);
    if (kheap != NULL)
        PyMem_Free(kheap);
    if (r == STATUS_OK)
        Py_RETURN_NONE;
    /* Nothing was stored (a busy stripe, a full journal, a rehash due...): the slow path waits,
       repairs or raises, and stores. */
    return call_slow(p->slow, args, nargsf, kwnames);
}

/* many(namespace, pairs, data_ttl_ns): store a list or tuple of (key, bytes) pairs in order, in
   one kernel call. Every key and value is checked first: -1 (nothing stored) when any needs the
   slow path; else how many were stored (fewer than all: the next one met a busy stripe, a full
   journal..., and the caller's slow path goes on from it). */
static PyObject *Putter_many(Putter *p, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *const *items;
    char *keys = NULL, *vals = NULL;
    int64_t *key_ends = NULL, *val_ends = NULL, data_ttl_ns, done;
    Py_ssize_t n, vtotal = 0, i;
    int ok = 1;
    if (nargs != 3 || (!PyList_CheckExact(args[1]) && !PyTuple_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "many(namespace, list of (key, value) pairs, data_ttl_ns)");
        return NULL;
    }
    data_ttl_ns = as_i64(args[2], &ok);
    if (!ok)
        return NULL;
    if (p->put_many == NULL) {
        int64_t a = entry_address(p->many_entry);
        if (a == 0)
            return NULL;
        p->put_many = (put_many_fn)(intptr_t)a;
    }
    n = PySequence_Fast_GET_SIZE(args[1]);
    items = PySequence_Fast_ITEMS(args[1]);
    for (i = 0; i < n; i++) {
        PyObject *v = PyTuple_CheckExact(items[i]) && PyTuple_GET_SIZE(items[i]) == 2 ? PyTuple_GET_ITEM(items[i], 1)
                                                                                      : NULL;
        if (v == NULL || !PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) + 1 > p->max_value)
            return PyLong_FromLong(-1);
        vtotal += PyBytes_GET_SIZE(v) + 1;
    }
    ok = batch_keys(&p->ns, args[0], items, n, p->max_key, 1, &keys, &key_ends);
    if (ok <= 0)
        return ok < 0 ? NULL : PyLong_FromLong(-1);
    vals = PyMem_Malloc((size_t)vtotal + 1);
    /* value ends, then room for the keys' hashes (kernels/cabi.py: _l1_put_many); + 1: never zero */
    val_ends = PyMem_Malloc(sizeof(int64_t) * (2 * (size_t)n + 1));
    if (vals == NULL || val_ends == NULL) {
        PyMem_Free(keys);
        PyMem_Free(key_ends);
        PyMem_Free(vals);
        PyMem_Free(val_ends);
        return PyErr_NoMemory();
    }
    vtotal = 0;
    for (i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(items[i], 1);
        vals[vtotal] = TAG_BYTES;
        memcpy(vals + vtotal + 1, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
        vtotal += PyBytes_GET_SIZE(v) + 1;
        val_ends[i] = vtotal;
    }
    done = p->put_many(p->ctx, (int64_t)(intptr_t)keys, (int64_t)(intptr_t)key_ends, (int64_t)(intptr_t)vals,
                       (int64_t)(intptr_t)val_ends, (int64_t)n, p->l1_ttl_ns, data_ttl_ns, p->flags,
                       (int64_t)(intptr_t)(val_ends + n));
    PyMem_Free(keys);
    PyMem_Free(key_ends);
    PyMem_Free(vals);
    PyMem_Free(val_ends);
    return PyLong_FromLongLong(done);
}

static PyMethodDef Putter_methods[] = {
    {"many", (PyCFunction)(void (*)(void))Putter_many, METH_FASTCALL,
     "many(namespace, pairs, data_ttl_ns): a batch of bytes puts (-1: the batch needs the slow path)"},
    {NULL, NULL, 0, NULL},
};

static int Putter_traverse(Putter *p, visitproc visit, void *arg) {
    Py_VISIT(p->many_entry);
    Py_VISIT(p->keep);
    Py_VISIT(p->slow);
    return 0;
}

static int Putter_clear(Putter *p) {
    Py_CLEAR(p->ns.obj);
    Py_CLEAR(p->many_entry);
    Py_CLEAR(p->keep);
    Py_CLEAR(p->slow);
    return 0;
}

static void Putter_dealloc(Putter *p) {
    PyObject_GC_UnTrack(p);
    Putter_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyTypeObject PutterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nt_memory._fastpath.Putter",
    .tp_basicsize = sizeof(Putter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Putter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)Putter_traverse,
    .tp_clear = (inquiry)Putter_clear,
    .tp_dealloc = (destructor)Putter_dealloc,
    .tp_methods = Putter_methods,
    .tp_doc = "put(namespace, key, value, ttl=None): a bytes put in one C call (see tiers/l1.py).",
};

/* putter(ctx_addr, put_addr, max_key, max_value, l1_ttl_ns, flags, keep, slow, put_many_entry) */
static PyObject *make_putter(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Putter *p;
    int ok = 1;
    int64_t v[6];
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "putter() takes 9 arguments");
        return NULL;
    }
    for (int i = 0; i < 6; i++)
        v[i] = as_i64(args[i], &ok);
    if (!ok)
        return NULL;
    p = PyObject_GC_New(Putter, &PutterType);
    if (p == NULL)
        return NULL;
    p->vectorcall = Putter_call;
    p->ctx = v[0];
    p->put = (put_fn)(intptr_t)v[1];
    p->put_many = NULL;
    p->many_entry = Py_NewRef(args[8]);
    p->max_key = (Py_ssize_t)v[2];
    p->max_value = (Py_ssize_t)v[3];
    p->l1_ttl_ns = v[4];
    p->flags = v[5];
    p->keep = Py_NewRef(args[6]);
    p->slow = Py_NewRef(args[7]);
    p->ns.obj = NULL;
    PyObject_GC_Track(p);
    return (PyObject *)p;
}

/* -------------------------------------------------------------------------------- LockOps */

typedef struct {
    PyObject_HEAD
    int64_t slots, ctl, owner, nslots;
    try_fn try_;
    release_fn release;
    PyObject *names; /* dict: name -> (slot, hash), filled by the Python side */
    PyObject *token_type;
    PyObject *slow_acquire, *slow_release;
} LockOps;

/* True when a timeout argument is one the fast path may ignore (the lock is free): None or a
   non-negative finite number. Anything else goes to the slow path, which validates it. */
static int plain_timeout(PyObject *t) {
    if (t == Py_None)
        return 1;
    if (PyFloat_CheckExact(t)) {
        double d = PyFloat_AS_DOUBLE(t);
        return isfinite(d) && d >= 0 && d <= 9.0e9;
    }
    if (PyLong_CheckExact(t)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(t, &overflow);
        return !overflow && v >= 0 && v <= 9000000000LL;
    }
    return 0;
}

static PyObject *LockOps_acquire(LockOps *l, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *name, *hit, *token, *timeout = Py_None, *lease = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    int64_t slot, h, fence;
    int ok = 1;
    if (nargs < 1 || nargs > 3)
        goto slow;
    if (nargs >= 2)
        timeout = args[1];
    if (nargs == 3)
        lease = args[2];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(kw, "timeout") == 0)
            timeout = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(kw, "lease") == 0)
            lease = args[nargs + i];
        else
            goto slow;
    }
    name = args[0];
    if (lease != Py_None || !plain_timeout(timeout) || !PyUnicode_CheckExact(name))
        goto slow;
    hit = PyDict_GetItemWithError(l->names, name); /* borrowed */
    if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 2) {
        if (PyErr_Occurred())
            return NULL;
        goto slow;
    }
    slot = as_i64(PyTuple_GET_ITEM(hit, 0), &ok);
    h = as_i64(PyTuple_GET_ITEM(hit, 1), &ok);
    if (!ok)
        return NULL;
    if (slot < 0 || slot >= l->nslots)
        goto slow;
    fence = l->try_(l->slots + slot * LOCK_SLOT_BYTES, l->ctl, h, l->owner, 0);
    if (fence <= 0)
        goto slow; /* held, moved or a fence block to reserve: the slow path waits or repairs */
    token = ((PyTypeObject *)l->token_type)->tp_alloc((PyTypeObject *)l->token_type, 5);
    if (token == NULL)
        return NULL;
    PyTuple_SET_ITEM(token, 0, Py_NewRef(name));
    PyTuple_SET_ITEM(token, 1, PyLong_FromLongLong(fence));
    PyTuple_SET_ITEM(token, 2, PyLong_FromLongLong(l->owner));
    PyTuple_SET_ITEM(token, 3, PyLong_FromLongLong(slot));
    PyTuple_SET_ITEM(token, 4, PyLong_FromLongLong(h));
    if (PyErr_Occurred()) {
        Py_DECREF(token);
        return NULL;
    }
    return token;
slow:
    return PyObject_Vectorcall(l->slow_acquire, args, (size_t)nargs, kwnames);
}

static PyObject *LockOps_release(LockOps *l, PyObject *token) {
    int64_t fence, owner, slot, h, r;
    int ok = 1;
    if ((PyObject *)Py_TYPE(token) != l->token_type || PyTuple_GET_SIZE(token) != 5)
        goto slow;
    fence = as_i64(PyTuple_GET_ITEM(token, 1), &ok);
    owner = as_i64(PyTuple_GET_ITEM(token, 2), &ok);
    slot = as_i64(PyTuple_GET_ITEM(token, 3), &ok);
    h = as_i64(PyTuple_GET_ITEM(token, 4), &ok);
    if (!ok) {
        PyErr_Clear();
        goto slow;
    }
    if (slot < 0 || slot >= l->nslots || h == 0)
        goto slow;
    r = l->release(l->slots + slot * LOCK_SLOT_BYTES, h, owner, fence);
    if (r < 0)
        goto slow; /* stale: the slow path raises StaleToken */
    if (r == WAKE_ONE || r == WAKE_ALL) /* kernels/locktable.py: lock_release */
        wake(l->slots + slot * LOCK_SLOT_BYTES + LK_NOTIFY_OFFSET, r == WAKE_ONE ? 1 : INT32_MAX);
    Py_RETURN_NONE;
slow:
    return PyObject_CallOneArg(l->slow_release, token);
}

static int LockOps_traverse(LockOps *l, visitproc visit, void *arg) {
    Py_VISIT(l->names);
    Py_VISIT(l->token_type);
    Py_VISIT(l->slow_acquire);
    Py_VISIT(l->slow_release);
    return 0;
}

static int LockOps_clear(LockOps *l) {
    Py_CLEAR(l->names);
    Py_CLEAR(l->token_type);
    Py_CLEAR(l->slow_acquire);
    Py_CLEAR(l->slow_release);
    return 0;
}

static void LockOps_dealloc(LockOps *l) {
    PyObject_GC_UnTrack(l);
    LockOps_clear(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyMethodDef LockOps_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))LockOps_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(name, timeout=None, lease=None) -> LockToken"},
    {"release", (PyCFunction)LockOps_release, METH_O, "release(token)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockOpsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nt_memory._fastpath.LockOps",
    .tp_basicsize = sizeof(LockOps),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)LockOps_traverse,
    .tp_clear = (inquiry)LockOps_clear,
    .tp_dealloc = (destructor)LockOps_dealloc,
    .tp_methods = LockOps_methods,
    .tp_doc = "Uncontended lock acquire/release in one C call each (see coordination/locks.py).",
};

/* lockops(slots_addr, ctl_addr, owner, nslots, try_addr, release_addr, names, token_type,
           slow_acquire, slow_release) */
static PyObject *make_lockops(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    LockOps *l;
    int ok = 1;
    int64_t v[6];
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "lockops() takes 10 arguments");
        return NULL;
    }
    for (int i = 0; i < 6; i++)
        v[i] = as_i64(args[i], &ok);
    if (!ok)
        return NULL;
    if (!PyDict_CheckExact(args[6]) || !PyType_Check(args[7]) ||
        !PyType_IsSubtype((PyTypeObject *)args[7], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "lockops() needs a dict of names and a tuple subclass for tokens");
        return NULL;
    }
    l = PyObject_GC_New(LockOps, &LockOpsType);
    if (l == NULL)
        return NULL;
    l->slots = v[0];
    l->ctl = v[1];
    l->owner = v[2];
    l->nslots = v[3];
    l->try_ = (try_fn)(intptr_t)v[4];
    l->release = (release_fn)(intptr_t)v[5];
    l->names = Py_NewRef(args[6]);
    l->token_type = Py_NewRef(args[7]);
    l->slow_acquire = Py_NewRef(args[8]);
    l->slow_release = Py_NewRef(args[9]);
    PyObject_GC_Track(l);
    return (PyObject *)l;
}

/* ------------------------------------------------------------------------------- Receiver */

typedef struct {
    PyObject_HEAD
    int64_t hdr, data, cap;
    int64_t state[2]; /* cursor, number of the message just received: kernels/cabi.py */
    long long expected, received, dropped;
    char *out;
    Py_ssize_t out_bytes;
    receive_fn receive;
    int64_t spin_ns;     /* the longest spin before sleeping */
    int64_t spin_cur_ns; /* this receiver's window now: coordination/pubsub.py, next_spin */
    PyObject *decode;
    PyObject *keep;  /* what keeps the ring mapped (the topic object) */
    int64_t *board;  /* this subscription's NEXT, RECEIVED, DROPPED on the subscriber board, or NULL */
    PyObject *board_keep; /* what keeps the board mapped */
} Receiver;

/* One receive: the message, None if there is none, NULL on error. Counts exactly as the Python
   subscription does: received + dropped = published since the subscription started. */
static PyObject *receive_once(Receiver *rx) {
    int64_t n = rx->receive(rx->hdr, rx->data, rx->cap, (int64_t)(intptr_t)rx->state, (int64_t)(intptr_t)rx->out,
                            (int64_t)rx->out_bytes);
    if (n == STATUS_NOT_FOUND)
        Py_RETURN_NONE;
    if (n < 0) {
        PyErr_Format(PyExc_RuntimeError, "ring receive failed with status %lld", (long long)n);
        return NULL;
    }
    if (rx->state[1] > rx->expected)
        rx->dropped += rx->state[1] - rx->expected;
    rx->expected = rx->state[1] + 1;
    rx->received += 1;
    if (rx->board != NULL) { /* for observers (nt-memory top): plain stores to our own entry */
        __atomic_store_n(&rx->board[0], (int64_t)rx->expected, __ATOMIC_RELAXED);
        __atomic_store_n(&rx->board[1], (int64_t)rx->received, __ATOMIC_RELAXED);
        __atomic_store_n(&rx->board[2], (int64_t)rx->dropped, __ATOMIC_RELAXED);
    }
    return value_of(rx->out, (Py_ssize_t)n, rx->decode, NULL);
}

static PyObject *Receiver_try_recv(Receiver *rx, PyObject *unused) {
    return receive_once(rx);
}

static int64_t tail_of(Receiver *rx) {
    return __atomic_load_n((int64_t *)(intptr_t)(rx->hdr + RING_TAIL_OFFSET), __ATOMIC_ACQUIRE);
}

/* The spin window after a recv that slept and got its message ``waited_ns`` after it began
   (coordination/pubsub.py, next_spin, is the same rule): a message that came soon after the
   spin gave up doubles the window, up to spin_ns; one that came later halves it, to 0. */
static int64_t next_spin(int64_t cur, int64_t max, int64_t waited_ns) {
    if (waited_ns <= SPIN_GROW_FACTOR * max) {
        cur = 2 * cur < SPIN_MIN_NS ? SPIN_MIN_NS : 2 * cur;
        return cur > max ? max : cur;
    }
    cur /= 2;
    return cur < SPIN_MIN_NS ? 0 : cur;
}

/* recv(timeout_ns): the next message, spinning up to the receiver's window (GIL released,
   watching TAIL only), then sleeping on the ring's futex word until a publish or the timeout
   (< 0: none). None on timeout. */
static PyObject *Receiver_recv(Receiver *rx, PyObject *arg) {
    long long timeout_ns = PyLong_AsLongLong(arg);
    int64_t start, deadline, spin_end;
    int64_t *waiters = (int64_t *)(intptr_t)(rx->hdr + RING_WAITERS_OFFSET);
    int64_t *spinners = (int64_t *)(intptr_t)(rx->hdr + RING_SPINNERS_OFFSET);
    uint32_t *notify = (uint32_t *)(intptr_t)(rx->hdr + RING_NOTIFY_OFFSET);
    PyObject *msg;
    if (timeout_ns == -1 && PyErr_Occurred())
        return NULL;
    msg = receive_once(rx);
    if (msg != Py_None)
        return msg;
    Py_DECREF(msg);
    start = now_ns();
    deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
    spin_end = start + rx->spin_cur_ns < deadline ? start + rx->spin_cur_ns : deadline;
    /* One receiver polls at a time, and none while others sleep (kernels/ring.py: SPINNERS). */
    if (rx->spin_cur_ns > 0 && tail_of(rx) <= rx->state[0] && __atomic_load_n(waiters, __ATOMIC_RELAXED) == 0) {
        int64_t idle = 0;
        if (__atomic_compare_exchange_n(spinners, &idle, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            Py_BEGIN_ALLOW_THREADS
            while (tail_of(rx) <= rx->state[0] && now_ns() < spin_end)
                CPU_RELAX();
            Py_END_ALLOW_THREADS
            __atomic_store_n(spinners, 0, __ATOMIC_RELEASE);
        }
    }
    if (tail_of(rx) > rx->state[0]) {
        msg = receive_once(rx);
        if (msg != Py_None)
            return msg; /* the spin paid: the window stays */
        Py_DECREF(msg);
    }
    __atomic_fetch_add(waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint32_t seen = __atomic_load_n(notify, __ATOMIC_ACQUIRE);
        int64_t left;
        msg = receive_once(rx);
        if (msg != Py_None) {
            rx->spin_cur_ns = next_spin(rx->spin_cur_ns, rx->spin_ns, now_ns() - start);
            break;
        }
        Py_DECREF(msg);
        left = deadline == INT64_MAX ? -1 : deadline - now_ns();
        if (deadline != INT64_MAX && left <= 0) {
            msg = Py_NewRef(Py_None);
            break;
        }
        /* No timeout: no timer armed and cancelled around every sleep. A signal (Ctrl-C) ends the
           wait with EINTR (Python installs its handlers without SA_RESTART), and wait_word runs
           the handler. */
        if (wait_word((int64_t)(intptr_t)notify, seen, left) < 0) {
            msg = NULL;
            break;
        }
    }
    __atomic_fetch_sub(waiters, 1, __ATOMIC_SEQ_CST);
    return msg;
}

static PyObject *Receiver_get_received(Receiver *rx, void *c) { return PyLong_FromLongLong(rx->received); }
static PyObject *Receiver_get_dropped(Receiver *rx, void *c) { return PyLong_FromLongLong(rx->dropped); }
static PyObject *Receiver_get_cursor(Receiver *rx, void *c) { return PyLong_FromLongLong(rx->state[0]); }
static PyObject *Receiver_get_spin(Receiver *rx, void *c) { return PyLong_FromLongLong(rx->spin_cur_ns); }

static PyGetSetDef Receiver_getset[] = {
    {"received", (getter)Receiver_get_received, NULL, "messages received", NULL},
    {"dropped", (getter)Receiver_get_dropped, NULL, "messages lost to lapping", NULL},
    {"cursor", (getter)Receiver_get_cursor, NULL, "the ring position of the next message", NULL},
    {"spin_ns", (getter)Receiver_get_spin, NULL, "how long the next recv spins before it sleeps", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Receiver_methods[] = {
    {"try_recv", (PyCFunction)Receiver_try_recv, METH_NOARGS, "the next message, or None"},
    {"recv", (PyCFunction)Receiver_recv, METH_O, "recv(timeout_ns): the next message, or None on timeout"},
    {NULL, NULL, 0, NULL},
};

static int Receiver_traverse(Receiver *rx, visitproc visit, void *arg) {
    Py_VISIT(rx->decode);
    Py_VISIT(rx->keep);
    Py_VISIT(rx->board_keep);
    return 0;
}

static int Receiver_clear(Receiver *rx) {
    rx->board = NULL; /* its mapping may go with board_keep */
    Py_CLEAR(rx->decode);
    Py_CLEAR(rx->keep);
    Py_CLEAR(rx->board_keep);
    return 0;
}

static void Receiver_dealloc(Receiver *rx) {
    PyObject_GC_UnTrack(rx);
    Receiver_clear(rx);
    PyMem_Free(rx->out);
    Py_TYPE(rx)->tp_free((PyObject *)rx);
}

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nt_memory._fastpath.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Receiver_traverse,
    .tp_clear = (inquiry)Receiver_clear,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
    .tp_getset = Receiver_getset,
    .tp_doc = "A subscriber's cursor on one topic ring (see coordination/pubsub.py).",
};

/* receiver(hdr, data, cap, cursor, first_msg, out_bytes, receive_addr, spin_ns, decode, keep,
            board_addr, board_keep): board_addr 0 when the subscription has no board entry */
static PyObject *make_receiver(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    Receiver *rx;
    int ok = 1;
    int64_t v[8], board;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "receiver() takes 12 arguments");
        return NULL;
    }
    for (int i = 0; i < 8; i++)
        v[i] = as_i64(args[i], &ok);
    board = as_i64(args[10], &ok);
    if (!ok)
        return NULL;
    rx = PyObject_GC_New(Receiver, &ReceiverType);
    if (rx == NULL)
        return NULL;
    rx->hdr = v[0];
    rx->data = v[1];
    rx->cap = v[2];
    rx->state[0] = v[3];
    rx->state[1] = -1;
    rx->expected = v[4];
    rx->received = rx->dropped = 0;
    rx->out_bytes = (Py_ssize_t)v[5];
    rx->receive = (receive_fn)(intptr_t)v[6];
    rx->spin_ns = rx->spin_cur_ns = v[7];
    rx->decode = Py_NewRef(args[8]);
    rx->keep = Py_NewRef(args[9]);
    rx->board = (int64_t *)(intptr_t)board;
    rx->board_keep = Py_NewRef(args[11]);
    rx->out = PyMem_Malloc((size_t)rx->out_bytes);
    if (rx->out == NULL) {
        Py_DECREF(rx);
        return PyErr_NoMemory();
    }
    PyObject_GC_Track(rx);
    return (PyObject *)rx;
}

/* ---------------------------------------------------------------------- module functions */

/* publish(publish_addr, hdr, data, cap, owner, payload) -> kernel result; wakes sleepers. */
static PyObject *publish(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    int ok = 1;
    int64_t v[5], r;
    if (nargs != 6 || !PyBytes_CheckExact(args[5])) {
        PyErr_SetString(PyExc_TypeError, "publish() takes 5 integers and a bytes payload");
        return NULL;
    }
    for (int i = 0; i < 5; i++)
        v[i] = as_i64(args[i], &ok);
    if (!ok)
        return NULL;
    r = ((publish_fn)(intptr_t)v[0])(v[1], v[2], v[3], v[4], (int64_t)(intptr_t)PyBytes_AS_STRING(args[5]),
                                     (int64_t)PyBytes_GET_SIZE(args[5]));
    if (r >= 0 && (r & 1))
        wake_all(v[1] + RING_NOTIFY_OFFSET);
    return PyLong_FromLongLong(r);
}

/* hits(log_keys_addr, hit_type, labels, dists, bases, sizes, firsts, per_chunk, records_off,
   rec_bytes) -> [hit_type(namespace, key, distance, None)], or the kernel's status (an int) when it
   is not OK. ``labels`` (uint64) and ``dists`` (float32) are hnswlib's answer to one query; the
   int64 arrays ``bases``/``sizes``/``firsts`` are the chunks of tiers/l2.py. The keys are copied
   out of the log by the kernel ``log_keys`` (every shared word checked there); here they are only
   split at their first NUL and decoded as UTF-8 (errors replaced), the namespace once per run of
   equal ones. ``hit_type`` is a tuple subclass with four fields (tiers/l2.py: Hit). */
static PyObject *hits(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    int ok = 1;
    PyArrayObject *arr[5];
    int64_t ends_stack[HITS_STACK], *ends = ends_stack, addr, per_chunk, records_off, rec_bytes, st;
    char keys_stack[HIT_KEYS_STACK], *keys = keys_stack;
    int64_t keys_len = HIT_KEYS_STACK;
    PyObject *out = NULL, *ns = NULL;
    const char *ns_bytes = NULL;
    Py_ssize_t ns_len = -1, n;
    PyTypeObject *hit_type;
    if (nargs != 10 || !PyType_Check(args[1]) || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "hits() takes an address, a tuple type, five arrays and three integers");
        return NULL;
    }
    hit_type = (PyTypeObject *)args[1];
    for (int i = 0; i < 5; i++) {
        static const int types[5] = {NPY_UINT64, NPY_FLOAT32, NPY_INT64, NPY_INT64, NPY_INT64};
        if (!PyArray_Check(args[2 + i]) || PyArray_TYPE((PyArrayObject *)args[2 + i]) != types[i] ||
            !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)args[2 + i])) {
            PyErr_Format(PyExc_TypeError, "hits(): argument %d must be a C-contiguous array of the right dtype", 3 + i);
            return NULL;
        }
        arr[i] = (PyArrayObject *)args[2 + i];
    }
    n = PyArray_SIZE(arr[0]);
    if (PyArray_SIZE(arr[1]) != n || PyArray_SIZE(arr[3]) != PyArray_SIZE(arr[2]) ||
        PyArray_SIZE(arr[4]) != PyArray_SIZE(arr[2])) {
        PyErr_SetString(PyExc_ValueError, "hits(): labels and distances, or the chunk arrays, differ in length");
        return NULL;
    }
    addr = as_i64(args[0], &ok);
    per_chunk = as_i64(args[7], &ok);
    records_off = as_i64(args[8], &ok);
    rec_bytes = as_i64(args[9], &ok);
    if (!ok)
        return NULL;
    if (n > HITS_STACK && !(ends = PyMem_Malloc(n * sizeof(int64_t))))
        return PyErr_NoMemory();
    for (int attempt = 0; attempt < 2; attempt++) {
        st = ((log_keys_fn)(intptr_t)addr)((int64_t)(intptr_t)PyArray_DATA(arr[2]), (int64_t)(intptr_t)PyArray_DATA(arr[3]),
                                           (int64_t)(intptr_t)PyArray_DATA(arr[4]), (int64_t)PyArray_SIZE(arr[2]),
                                           per_chunk, records_off, rec_bytes, (int64_t)(intptr_t)PyArray_DATA(arr[0]),
                                           (int64_t)n, (int64_t)(intptr_t)keys, keys_len, (int64_t)(intptr_t)ends);
        if (st != STATUS_FULL || attempt == 1)
            break;
        keys_len = ends[n - 1];
        if (!(keys = PyMem_Malloc(keys_len))) {
            PyErr_NoMemory();
            goto done;
        }
    }
    if (st != STATUS_OK) {
        out = PyLong_FromLongLong(st);
        goto done;
    }
    if (!(out = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = i ? ends[i - 1] : 0, b = ends[i];
        const char *kb = keys + a, *nul = memchr(kb, 0, (size_t)(b - a));
        Py_ssize_t nl = nul ? nul - kb : b - a;
        PyObject *key, *dist, *hit;
        if (ns == NULL || nl != ns_len || memcmp(kb, ns_bytes, (size_t)nl) != 0) {
            Py_XDECREF(ns);
            if (!(ns = PyUnicode_DecodeUTF8(kb, nl, "replace")))
                goto fail;
            ns_bytes = kb;
            ns_len = nl;
        }
        key = nul ? PyUnicode_DecodeUTF8(nul + 1, b - a - nl - 1, "replace") : PyUnicode_New(0, 0);
        dist = key ? PyFloat_FromDouble(((float *)PyArray_DATA(arr[1]))[i]) : NULL;
        hit = dist ? hit_type->tp_alloc(hit_type, 4) : NULL;
        if (!hit) {
            Py_XDECREF(key);
            Py_XDECREF(dist);
            goto fail;
        }
        Py_INCREF(ns);
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(hit, 0, ns);
        PyTuple_SET_ITEM(hit, 1, key);
        PyTuple_SET_ITEM(hit, 2, dist);
        PyTuple_SET_ITEM(hit, 3, Py_None);
        PyList_SET_ITEM(out, i, hit);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(ns);
    if (ends != ends_stack)
        PyMem_Free(ends);
    if (keys != keys_stack)
        PyMem_Free(keys);
    return out;
}

/* next_spin(cur_ns, max_ns, waited_ns): the receivers' window rule, so tests can hold it to the
   pure path's. */
static PyObject *py_next_spin(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    int ok = 1;
    int64_t v[3];
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "next_spin() takes 3 arguments");
        return NULL;
    }
    for (int i = 0; i < 3; i++)
        v[i] = as_i64(args[i], &ok);
    if (!ok)
        return NULL;
    return PyLong_FromLongLong(next_spin(v[0], v[1], v[2]));
}

/* futex_wait(addr, expected, timeout_ns): sleep while the word holds expected (GIL released). */
static PyObject *futex_wait(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    int ok = 1;
    int64_t addr, expected, timeout;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "futex_wait() takes 3 arguments");
        return NULL;
    }
    addr = as_i64(args[0], &ok);
    expected = as_i64(args[1], &ok);
    timeout = as_i64(args[2], &ok);
    if (!ok)
        return NULL;
    if (wait_word(addr, (uint32_t)expected, timeout) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* futex_wake(addr[, count]): wake up to count sleepers on a futex word (default: every one). */
static PyObject *futex_wake(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    int ok = 1;
    int64_t addr, count = INT32_MAX;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "futex_wake() takes 1 or 2 arguments");
        return NULL;
    }
    addr = as_i64(args[0], &ok);
    if (nargs == 2)
        count = as_i64(args[1], &ok);
    if (!ok)
        return NULL;
    if (count < 1 || count > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "futex_wake(): count must be between 1 and 2**31 - 1");
        return NULL;
    }
    wake(addr, (int)count);
    Py_RETURN_NONE;
}

static PyObject *set_json_loads(PyObject *m, PyObject *fn) {
    Py_XSETREF(json_loads, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_json_loads", (PyCFunction)set_json_loads, METH_O, "the JSON parser values of the JSON tag go to"},
    {"getter", (PyCFunction)(void (*)(void))make_getter, METH_FASTCALL, "a Getter over an L1 context"},
    {"putter", (PyCFunction)(void (*)(void))make_putter, METH_FASTCALL, "a Putter over an L1 context"},
    {"lockops", (PyCFunction)(void (*)(void))make_lockops, METH_FASTCALL, "LockOps over a lock table"},
    {"receiver", (PyCFunction)(void (*)(void))make_receiver, METH_FASTCALL, "a Receiver on a topic ring"},
    {"publish", (PyCFunction)(void (*)(void))publish, METH_FASTCALL, "publish to a topic ring"},
    {"hits", (PyCFunction)(void (*)(void))hits, METH_FASTCALL, "a search's hits, their keys copied out of the log"},
    {"futex_wait", (PyCFunction)(void (*)(void))futex_wait, METH_FASTCALL, "futex wait, GIL released"},
    {"futex_wake", (PyCFunction)(void (*)(void))futex_wake, METH_FASTCALL, "wake sleepers on a futex word"},
    {"next_spin", (PyCFunction)(void (*)(void))py_next_spin, METH_FASTCALL,
     "next_spin(cur_ns, max_ns, waited_ns): the receivers' spin-window rule (for tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "nt_memory._fastpath",
    "The hot paths' Python boundary: argument conversion around numba entry points.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyObject *m;
    PyTypeObject *types[] = {&GetterType, &PutterType, &LockOpsType, &ReceiverType};
    if (_import_array() < 0)
        return NULL; /* numpy's C API: the import fails and nt-memory runs its pure path */
    for (int i = 0; i < 4; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    m = PyModule_Create(&fastpath_module);
    return m;
}
