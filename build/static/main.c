/* hatchway's static executable: CPython with every C extension built in, and the
 * Python code as a .pyc zip appended to this file (imported by zipimport from
 * /proc/self/exe).
 *
 * Run under a name starting with "python" it is the plain python CLI (the build
 * and the tests use that).  Under any other name it runs the module
 * _hatchway_exe (build/static/dispatch.py), which picks the program by the name
 * it was called under, the default program patched into DEFAULT_PROGRAM below,
 * or its first argument (the multi-call `hatchway`).
 *
 * The config is PyConfig_InitPythonConfig made isolated by hand: not
 * PyConfig_InitIsolatedConfig, which turns off install_signal_handlers and so
 * leaves SIGPIPE at its default action (a write to a closed socket would kill
 * the process).  Nothing is read from the environment (PYTHON*), no site, no
 * user site, no bytecode written: the process writes nothing at start. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <libgen.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zstd.h>

#include "extmods.h" /* generated: EXTMOD(name, initfunc) lines */

/* build/static/build.py overwrites the bytes after the '=' (NUL padded) in the
 * per-program copies; the multi-call `hatchway` keeps it empty. */
static volatile const char DEFAULT_PROGRAM[64] = "@@HATCHWAY_DEFAULT_PROGRAM@@=";

/* The importer of the packed code, installed right after initialisation (before anything but
 * the frozen modules is imported):
 *  - DottedBuiltinFinder: BuiltinImporter.find_spec returns None whenever `path` is given, so
 *    dotted built-ins (msgspec._core, uvloop.loop, ...) would never be found; it goes first.
 *  - PackedImporter: the appended zip's comment carries an index written by
 *    build/static/build.py ("HWIX1" + marshal of {module: (path, data offset from the zip's
 *    start, size, method, is_package, size of the .pyc)}; method 0: stored, 8: deflated, 93:
 *    a zstd frame in a stored entry).  A module is one pread of its bytes and one
 *    marshal.loads: no zip directory to parse at start (zipimport reads all ~700 entries
 *    in Python, ~4 ms) and no file open per module.  It sits where PathFinder was; the
 *    executable leaves sys.path, so a failed optional import (brotli, ...) is a dict miss.
 *    Without an index (the build's first pass) zipimport does the work, as before. */
static const char FINDER[] =
    "def _install():\n"
    "    import sys, _imp, marshal, posix\n"
    "    from _frozen_importlib import BuiltinImporter, ModuleSpec\n"
    "    from _frozen_importlib_external import PathFinder\n"
    "    is_builtin = _imp.is_builtin\n"
    "    class DottedBuiltinFinder:\n"
    "        @staticmethod\n"
    "        def find_spec(name, path=None, target=None):\n"
    "            if '.' in name and is_builtin(name):\n"
    "                return ModuleSpec(name, BuiltinImporter, origin='built-in')\n"
    "            return None\n"
    "        @staticmethod\n"
    "        def invalidate_caches():\n"
    "            pass\n"
    "    sys.meta_path.insert(0, DottedBuiltinFinder)\n"
    "    exe = sys.executable\n"
    "    sys.modules['encodings'].__path__ = [exe + '/encodings']  # frozen; its other modules are packed\n"
    "    try:\n"
    "        fd = posix.open(exe, posix.O_RDONLY | posix.O_CLOEXEC)\n"
    "    except OSError:\n"
    "        return\n"
    "    size = posix.fstat(fd).st_size\n"
    "    def find(n):\n"
    "        # the zip's end record whose comment is the index: at the end of the file, or (when a tool\n"
    "        # such as patchelf appended segments after it) within the last n bytes\n"
    "        n = min(size, n)\n"
    "        tail = posix.pread(fd, n, size - n)\n"
    "        at = tail.rfind(b'PK\\x05\\x06')\n"
    "        while at >= 0:\n"
    "            clen = int.from_bytes(tail[at + 20:at + 22], 'little')\n"
    "            if at + 22 + clen <= n and tail[at + 22:at + 27] == b'HWIX1':\n"
    "                return n, tail, at, clen\n"
    "            at = tail.rfind(b'PK\\x05\\x06', 0, at)\n"
    "        return None\n"
    "    found = find(65557) or find(4 << 20)\n"
    "    if found is None:\n"
    "        posix.close(fd)\n"
    "        return\n"
    "    n, tail, at, clen = found\n"
    "    cd_size = int.from_bytes(tail[at + 12:at + 16], 'little')\n"
    "    cd_off = int.from_bytes(tail[at + 16:at + 20], 'little')\n"
    "    base = size - n + at - cd_size - cd_off\n"
    "    index = marshal.loads(tail[at + 27:at + 22 + clen])\n"
    "    prefix = exe + '/'\n"
    "    from _hatchway_sys import zstd_decompress\n"
    "    pread = posix.pread\n"
    "    loads = marshal.loads\n"
    "    class PackedImporter:\n"
    "        @classmethod\n"
    "        def find_spec(cls, name, path=None, target=None):\n"
    "            entry = index.get(name)\n"
    "            if entry is None:\n"
    "                return None\n"
    "            if entry[4] == 2:\n"
    "                return extension_spec(name, entry)\n"
    "            spec = ModuleSpec(name, cls, origin=prefix + entry[0], is_package=entry[4])\n"
    "            spec.has_location = True\n"
    "            if entry[4]:\n"
    "                where = prefix + entry[0].rpartition('/')[0]\n"
    "                spec.submodule_search_locations = [where]\n"
    "                path_cache.setdefault(where, PackedPath(name))\n"
    "            return spec\n"
    "        @staticmethod\n"
    "        def create_module(spec):\n"
    "            return None\n"
    "        @classmethod\n"
    "        def exec_module(cls, module):\n"
    "            exec(cls.get_code(module.__spec__.name), module.__dict__)\n"
    "        @staticmethod\n"
    "        def get_code(name):\n"
    "            return loads(memoryview(read(index[name]))[16:])\n"
    "        @staticmethod\n"
    "        def is_package(name):\n"
    "            return index[name][4]\n"
    "        @staticmethod\n"
    "        def get_source(name):\n"
    "            return None\n"
    "        @staticmethod\n"
    "        def invalidate_caches():\n"
    "            pass\n"
    "    def read(entry):\n"
    "        data = pread(fd, entry[2], base + entry[1])\n"
    "        if entry[3] == 93:\n"
    "            return zstd_decompress(data, entry[5])\n"
    "        if entry[3]:\n"
    "            import zlib\n"
    "            return zlib.decompress(data, -15)\n"
    "        return data\n"
    "    def extension_spec(name, entry):\n"
    "        # a shared-library extension module (glibc executables: arkitekt-mesh): its bytes go to a\n"
    "        # memfd and dlopen() takes /proc/self/fd/N; nothing is written to any file system\n"
    "        from _frozen_importlib_external import ExtensionFileLoader\n"
    "        mfd = posix.memfd_create(name, posix.MFD_CLOEXEC)\n"
    "        view = memoryview(read(entry))\n"
    "        while view:\n"
    "            view = view[posix.write(mfd, view):]\n"
    "        path = '/proc/self/fd/%d' % mfd\n"
    "        class MemfdLoader(ExtensionFileLoader):\n"
    "            def create_module(self, spec):\n"
    "                try:\n"
    "                    return super().create_module(spec)\n"
    "                finally:\n"
    "                    posix.close(mfd)  # mapped by dlopen(): the descriptor is not needed any more\n"
    "        return ModuleSpec(name, MemfdLoader(name, path), origin=path)\n"
    "    class PackedPath:\n"
    "        # a package's __path__ entry: a submodule missing from the index is a dict miss here, not a\n"
    "        # zipimporter reading the whole zip directory; pkgutil.iter_modules lists the index\n"
    "        def __init__(self, package):\n"
    "            self.package = package\n"
    "        def find_spec(self, fullname, target=None):\n"
    "            return PackedImporter.find_spec(fullname)\n"
    "        def invalidate_caches(self):\n"
    "            pass\n"
    "        def iter_modules(self, prefix=''):\n"
    "            head = self.package + '.'\n"
    "            for name in sorted(index):\n"
    "                if name.startswith(head) and '.' not in name[len(head):]:\n"
    "                    yield prefix + name[len(head):], index[name][4]\n"
    "    path_cache = sys.path_importer_cache\n"
    "    path_cache[exe + '/encodings'] = PackedPath('encodings')  # the frozen package's codecs\n"
    "    sys.meta_path.insert(sys.meta_path.index(PathFinder), PackedImporter)\n"
    "    sys.path[:] = [p for p in sys.path if p != exe]\n"
    "_install()\n"
    "del _install\n";

/* encodings (and the two modules it loads at initialisation) frozen into the executable: the
 * interpreter imports them before FINDER runs, and from the zip they would make zipimport
 * read its whole directory.  frozen_modules.h is generated by build/static/build.py. */
#include "frozen_modules.h"

/* Built-in module _hatchway_sys: the few Linux calls the programs need that the static build
 * cannot reach through ctypes (no libffi here).  hatchway.common.subreaper uses it, and falls
 * back to ctypes outside this executable. */
static PyObject *set_child_subreaper(PyObject *self, PyObject *args) {
    int on = 1;
    if (!PyArg_ParseTuple(args, "|p:set_child_subreaper", &on)) {
        return NULL;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)on, 0UL, 0UL, 0UL) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *is_child_subreaper(PyObject *self, PyObject *unused) {
    int value = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&value, 0UL, 0UL, 0UL) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(value);
}

/* zstd_decompress(data, size) -> bytes: one zstd frame whose content is exactly `size` bytes (the
 * packed modules, build/static/build.py write_zip).  ValueError on a corrupt frame or a size mismatch. */
static PyObject *zstd_decompress(PyObject *self, PyObject *args) {
    Py_buffer src;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n:zstd_decompress", &src, &size)) {
        return NULL;
    }
    PyObject *out = size >= 0 ? PyBytes_FromStringAndSize(NULL, size) : NULL;
    if (out == NULL) {
        PyBuffer_Release(&src);
        return size >= 0 ? NULL : PyErr_Format(PyExc_ValueError, "negative size");
    }
    /* one context for the process (creating one per call costs more than a small module's frame);
     * used with the GIL held, so never by two threads at once */
    static ZSTD_DCtx *dctx = NULL;
    if (dctx == NULL && (dctx = ZSTD_createDCtx()) == NULL) {
        PyBuffer_Release(&src);
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    size_t got = ZSTD_decompressDCtx(dctx, PyBytes_AS_STRING(out), (size_t)size, src.buf, (size_t)src.len);
    PyBuffer_Release(&src);
    if (ZSTD_isError(got) || got != (size_t)size) {
        Py_DECREF(out);
        return PyErr_Format(PyExc_ValueError, "zstd_decompress: %s",
                            ZSTD_isError(got) ? ZSTD_getErrorName(got) : "size mismatch");
    }
    return out;
}

static PyMethodDef hatchway_sys_methods[] = {
    {"set_child_subreaper", set_child_subreaper, METH_VARARGS,
     "set_child_subreaper(on=True): prctl(PR_SET_CHILD_SUBREAPER); orphaned descendants are\n"
     "reparented to this process instead of to PID 1.  OSError on failure."},
    {"zstd_decompress", zstd_decompress, METH_VARARGS,
     "zstd_decompress(data, size) -> bytes: the content of one zstd frame of exactly size bytes."},
    {"is_child_subreaper", is_child_subreaper, METH_NOARGS,
     "is_child_subreaper() -> bool: prctl(PR_GET_CHILD_SUBREAPER)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hatchway_sys_module = {
    PyModuleDef_HEAD_INIT, "_hatchway_sys", "Linux calls for hatchway's static executable.", -1,
    hatchway_sys_methods,
};

static PyObject *PyInit__hatchway_sys(void) { return PyModule_Create(&hatchway_sys_module); }

static void fail(PyStatus status) {
    if (PyStatus_IsExit(status)) {
        exit(status.exitcode);
    }
    Py_ExitStatusException(status);
}

static void check(PyStatus status, PyConfig *config) {
    if (PyStatus_Exception(status)) {
        PyConfig_Clear(config);
        fail(status);
    }
}

int main(int argc, char **argv) {
#ifdef __GLIBC__
    /* The glibc build (a program with a glibc extension module: the sidecar) keeps glibc's malloc.  A fixed
     * mmap threshold stops its dynamic growth: once a large block (the extension module's 9.6 MB on its way
     * to the memfd) was freed, every later block up to that size would come from the heap and stay there
     * (2.7 MB of an idle sidecar's RSS).  1 MiB, not glibc's initial 128 KiB: a relay's reads of up to
     * 256 KiB then come from the heap instead of an mmap/munmap each (0.75 instead of 1.04 ms of the event
     * loop's CPU per MB relayed). */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
#endif
#define EXTMOD(name, init) PyImport_AppendInittab(name, init);
    EXTMODS
#undef EXTMOD
    PyImport_AppendInittab("_hatchway_sys", PyInit__hatchway_sys);
    PyImport_FrozenModules = hatchway_frozen;

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
#ifdef __GLIBC__
    /* Started by the launcher (build/static/launcher.c): /proc/self/exe is glibc's loader, this program is the
     * memfd it names; the descriptors it lists are closed once the packed-code importer has its own. */
    const char *launched_exe = getenv("HATCHWAY_LAUNCHED_EXE");
    char launched_fds[512] = "";
    if (launched_exe != NULL && strlen(launched_exe) < sizeof(self)) {
        strcpy(self, launched_exe);
        n = (ssize_t)strlen(self);
        const char *fds = getenv("HATCHWAY_LAUNCHED_FDS");
        if (fds != NULL && strlen(fds) < sizeof(launched_fds)) {
            strcpy(launched_fds, fds);
        }
    }
    unsetenv("HATCHWAY_LAUNCHED_EXE");
    unsetenv("HATCHWAY_LAUNCHED_FDS");
#endif
    if (n > 0) {
        self[n] = '\0';
    } else if (realpath(argv[0], self) == NULL) {
        strncpy(self, argv[0], sizeof(self) - 1);
        self[sizeof(self) - 1] = '\0';
    }
    char name_buf[PATH_MAX];
    strncpy(name_buf, argc > 0 ? argv[0] : "hatchway", sizeof(name_buf) - 1);
    name_buf[sizeof(name_buf) - 1] = '\0';
    const char *name = basename(name_buf);
    int python_mode = strncmp(name, "python", 6) == 0;
#ifdef __GLIBC__
    if (launched_exe != NULL) {
        prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL); /* not the "4" of /proc/self/fd/4 in ps and top */
    }
#endif

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.isolated = 1;
    config.use_environment = 0;
    config.site_import = 0;
    config.user_site_directory = 0;
    config.write_bytecode = 0;
    config.safe_path = 1;
    config.pathconfig_warnings = 0;
    config.parse_argv = python_mode;
    check(PyConfig_SetBytesArgv(&config, argc, argv), &config);
    check(PyConfig_SetBytesString(&config, &config.program_name, python_mode ? argv[0] : self), &config);
    check(PyConfig_SetBytesString(&config, &config.executable, self), &config);
    check(PyConfig_SetBytesString(&config, &config.prefix, "/"), &config);
    check(PyConfig_SetBytesString(&config, &config.exec_prefix, "/"), &config);
    check(PyConfig_SetBytesString(&config, &config.base_prefix, "/"), &config);
    check(PyConfig_SetBytesString(&config, &config.base_exec_prefix, "/"), &config);
    config.module_search_paths_set = 1;
    wchar_t *wself = Py_DecodeLocale(self, NULL);
    if (wself == NULL) {
        fprintf(stderr, "%s: cannot decode the executable path\n", name);
        return 1;
    }
    check(PyWideStringList_Append(&config.module_search_paths, wself), &config);
    PyMem_RawFree(wself);
    if (!python_mode) {
        const char *prog = strchr((const char *)DEFAULT_PROGRAM, '=') + 1;
        char xopt[96];
        snprintf(xopt, sizeof(xopt), "hatchway.program=%s", prog);
        wchar_t *wxopt = Py_DecodeLocale(xopt, NULL);
        check(PyWideStringList_Append(&config.xoptions, wxopt), &config);
        PyMem_RawFree(wxopt);
        check(PyConfig_SetString(&config, &config.run_module, L"_hatchway_exe"), &config);
    }
    PyStatus status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        fail(status);
    }
    if (PyRun_SimpleString(FINDER) != 0) {
        fprintf(stderr, "%s: cannot install the built-in module finder\n", name);
        return 1;
    }
#ifdef __GLIBC__
    for (char *next = launched_fds; *next != '\0';) {
        char *end;
        long fd = strtol(next, &end, 10);
        if (end == next) {
            break;
        }
        if (fd > 2) {
            close((int)fd);
        }
        next = *end == ',' ? end + 1 : end;
    }
#endif
    return Py_RunMain();
}
