/*
 * cfs.fuse._lowlevel: the two FUSE requests pyfuse3 does not serve, fallocate and
 * O_TMPFILE, served by wrapping two libfuse entry points that pyfuse3 calls.
 *
 * pyfuse3 (3.5) fills its table of low-level handlers (struct fuse_lowlevel_ops) and
 * hands it to fuse_session_new(), which copies it; FUSE_FALLOCATE then finds no handler
 * and the kernel is told ENOSYS (it answers EOPNOTSUPP from then on). libfuse 3.14 has
 * no tmpfile handler at all (3.17 added one), so FUSE_TMPFILE is answered ENOSYS by
 * libfuse itself, whatever the table holds.
 *
 * This object defines fuse_session_new (fuse_session_new_versioned when built against
 * libfuse 3.17's header, where that is what the name stands for) and
 * fuse_session_process_buf itself. Loaded into
 * the process's global symbol scope (cfs.fuse.lowlevel does that before pyfuse3 calls
 * libfuse), its definitions are the ones pyfuse3's references bind to, as an
 * LD_PRELOAD library's would be; each calls libfuse's own function (found in libfuse
 * itself when the module is loaded, or the import fails and nothing is wrapped):
 *
 *  - fuse_session_new: the caller's table, with a fallocate handler added when it has
 *    none, is what libfuse copies. The handler runs on the thread that called
 *    fuse_session_process_buf (pyfuse3's trio thread), takes the GIL (held there
 *    already: pyfuse3 does not release it around processing) and calls the Python
 *    callable given to arm(); that callable answers later, exactly once, through
 *    reply_err(). If it raises, the request is answered EIO here.
 *  - fuse_session_process_buf: a FUSE_TMPFILE request is turned into the FUSE_CREATE
 *    request it is laid out as (the kernel sends the same fuse_create_in and name, and
 *    expects the same reply: entry and open). Its name is the kernel's "/" (vfs_tmpfile
 *    names the new dentry so), which no create can carry: pyfuse3's create handler then
 *    reaches cfs's adapter with the name "/", which makes an unnamed file.
 *
 * Until arm() is called both wrappers only pass through. What the Python side needs to
 * tell whether they are in place is in status().
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUSE_USE_VERSION 32 /* pyfuse3's */
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#ifndef FUSE_TMPFILE
#define FUSE_TMPFILE 51 /* kernel protocol 7.37 */
#endif

#define LIBFUSE "libfuse3.so.3"

/* The function pyfuse3's call to fuse_session_new() reaches: from libfuse 3.17 on, the
   header makes that name a macro over fuse_session_new_versioned(). */
#ifdef fuse_session_new
#define SESSION_NEW fuse_session_new_versioned
#define SESSION_NEW_VERSION "FUSE_3.17"
#define SESSION_NEW_PARAMS struct fuse_args *args, const struct fuse_lowlevel_ops *op, size_t op_size, \
                           struct libfuse_version *version, void *userdata
#define SESSION_NEW_ARGS(table, size) args, table, size, version, userdata
#else
#define SESSION_NEW fuse_session_new
#define SESSION_NEW_VERSION "FUSE_3.0"
#define SESSION_NEW_PARAMS struct fuse_args *args, const struct fuse_lowlevel_ops *op, size_t op_size, \
                           void *userdata
#define SESSION_NEW_ARGS(table, size) args, table, size, userdata
#endif
#define NAME_OF(symbol) #symbol
#define NAME(symbol) NAME_OF(symbol)

typedef struct fuse_session *(*session_new_fn)(SESSION_NEW_PARAMS);
typedef void (*process_buf_fn)(struct fuse_session *, const struct fuse_buf *);

static session_new_fn real_session_new; /* libfuse's own, found when the module is loaded */
static process_buf_fn real_process_buf;
static PyObject *fallocate_handler; /* armed when not NULL */
static struct fuse_lowlevel_ops ops; /* the table the hooked session was made from */
static unsigned long long sessions, requests, tmpfiles;

/* libfuse's own definition of ``name``, never ours. */
static void *libfuse_symbol(const char *name, const char *version)
{
    void *handle = dlopen(LIBFUSE, RTLD_LAZY | RTLD_NOLOAD);
    void *found;

    if (handle == NULL)
        return NULL;
    found = dlvsym(handle, name, version);
    if (found == NULL)
        found = dlsym(handle, name);
    dlclose(handle);
    return found;
}

static void fallocate_request(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                              struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *handler = fallocate_handler;
    PyObject *result;

    if (handler == NULL) {
        fuse_reply_err(req, EOPNOTSUPP); /* disarmed since the session began */
    } else {
        Py_INCREF(handler);
        result = PyObject_CallFunction(handler, "KKiLLK", (unsigned long long)(uintptr_t)req,
                                       (unsigned long long)ino, mode, (long long)offset,
                                       (long long)length, (unsigned long long)fi->fh);
        if (result == NULL) {
            PyErr_WriteUnraisable(handler);
            fuse_reply_err(req, EIO);
        }
        Py_XDECREF(result);
        Py_DECREF(handler);
    }
    PyGILState_Release(gil);
}

struct fuse_session *SESSION_NEW(SESSION_NEW_PARAMS)
{
    struct fuse_session *session;

    if (fallocate_handler == NULL || op_size > sizeof(ops))
        return real_session_new(SESSION_NEW_ARGS(op, op_size));
    memset(&ops, 0, sizeof(ops));
    memcpy(&ops, op, op_size);
    if (ops.fallocate != NULL) /* a pyfuse3 that serves it: leave it be */
        return real_session_new(SESSION_NEW_ARGS(op, op_size));
    ops.fallocate = fallocate_request;
    session = real_session_new(SESSION_NEW_ARGS(&ops, sizeof(ops)));
    if (session != NULL)
        sessions++;
    return session;
}

void fuse_session_process_buf(struct fuse_session *se, const struct fuse_buf *buf)
{
    struct fuse_in_header *in = buf->mem;
    const size_t name_at = sizeof(struct fuse_in_header) + sizeof(struct fuse_create_in);

    requests++;
    if (fallocate_handler != NULL && !(buf->flags & FUSE_BUF_IS_FD) && buf->size >= name_at + 2
        && in->opcode == FUSE_TMPFILE && memcmp((char *)buf->mem + name_at, "/", 2) == 0) {
        in->opcode = FUSE_CREATE;
        tmpfiles++;
    }
    real_process_buf(se, buf);
}

/* Our own definitions, bound inside this object: what the global scope should resolve to. */
extern __typeof__(SESSION_NEW) own_session_new __attribute__((alias(NAME(SESSION_NEW)), visibility("hidden")));
extern __typeof__(fuse_session_process_buf) own_process_buf
    __attribute__((alias("fuse_session_process_buf"), visibility("hidden")));

static PyObject *arm(PyObject *self, PyObject *handler)
{
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "arm() needs a callable");
        return NULL;
    }
    Py_INCREF(handler);
    Py_XSETREF(fallocate_handler, handler);
    Py_RETURN_NONE;
}

static PyObject *disarm(PyObject *self, PyObject *unused)
{
    Py_CLEAR(fallocate_handler);
    Py_RETURN_NONE;
}

static PyObject *reply_err(PyObject *self, PyObject *args)
{
    unsigned long long req;
    int err;

    if (!PyArg_ParseTuple(args, "Ki", &req, &err))
        return NULL;
    return PyLong_FromLong(fuse_reply_err((fuse_req_t)(uintptr_t)req, err));
}

static PyObject *status(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:O,s:O,s:K,s:K,s:K}",
                         "session_new_bound", dlsym(RTLD_DEFAULT, NAME(SESSION_NEW)) == (void *)own_session_new
                             ? Py_True : Py_False,
                         "process_buf_bound",
                         dlsym(RTLD_DEFAULT, "fuse_session_process_buf") == (void *)own_process_buf
                             ? Py_True : Py_False,
                         "sessions", sessions, "requests", requests, "tmpfiles", tmpfiles);
}

static PyMethodDef methods[] = {
    {"arm", arm, METH_O,
     "arm(fallocate): serve FUSE_FALLOCATE in sessions made from now on, calling\n"
     "fallocate(req, ino, mode, offset, length, fh), which answers through reply_err(req,\n"
     "errno) exactly once, and turn FUSE_TMPFILE into FUSE_CREATE of the name '/'."},
    {"disarm", disarm, METH_NOARGS, "disarm(): pass everything through again."},
    {"reply_err", reply_err, METH_VARARGS, "reply_err(req, errno): libfuse's fuse_reply_err (0: success)."},
    {"status", status, METH_NOARGS,
     "status(): whether the global scope resolves the two libfuse functions to this object's\n"
     "wrappers, sessions made with the fallocate handler, requests seen, TMPFILE requests turned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cfs.fuse._lowlevel",
    .m_doc = "fallocate and O_TMPFILE for pyfuse3 sessions (see cfs.fuse.lowlevel)",
    .m_size = -1,
    .m_methods = methods,
};

/* Without libfuse's own functions to call, the wrappers must never be reached: the import
   fails, so the object is never made global and pyfuse3 binds to libfuse directly. */
PyMODINIT_FUNC PyInit__lowlevel(void)
{
    real_session_new = (session_new_fn)libfuse_symbol(NAME(SESSION_NEW), SESSION_NEW_VERSION);
    real_process_buf = (process_buf_fn)libfuse_symbol("fuse_session_process_buf", "FUSE_3.0");
    if (real_session_new == NULL || real_process_buf == NULL) {
        PyErr_Format(PyExc_ImportError, "libfuse's " NAME(SESSION_NEW) " or fuse_session_process_buf "
                     "not found in " LIBFUSE);
        return NULL;
    }
    return PyModule_Create(&module);
}
