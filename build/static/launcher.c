/* The glibc executables' launcher (the sidecar: its dependency arkitekt-mesh is a glibc shared library).
 *
 * A static musl program with, appended, glibc's loader and libraries and the glibc program itself (build/static/
 * build.py launched()).  It copies each into a memfd and replaces itself (execve) with glibc's loader run
 * as a program:
 *
 *     ld-linux-x86-64.so.2 --argv0 ARGV0 --preload "/proc/self/fd/L1 /proc/self/fd/L2 ..." /proc/self/fd/P ARGS
 *
 * The preloaded libraries carry their SONAMEs, so the program's DT_NEEDED entries and its extension modules'
 * dlopen() find them among the loaded objects: nothing is searched for on the file system and nothing is
 * written to one (staticx unpacked the same files into /tmp at every start, and needed it writable and exec).
 * One process: no unpacker stays as the parent, signals go straight to the program.
 *
 * The program's code zip stays in this file (only the ELF parts go to memfds: what is mapped must be a file of
 * its own).  The program reads it through HATCHWAY_LAUNCHED_EXE, this file as /proc/self/fd/K (/proc/self/exe is
 * the loader's memfd), and closes the descriptors listed in HATCHWAY_LAUNCHED_FDS once the loader has mapped
 * them and its importer has its own (main.c).
 *
 * Trailer, at the very end of this file: N entries of {char name[48]; uint64 offset; uint64 size} (offsets from
 * the start of this file), then uint32 N, uint32 0, and the magic "HWLAUNCH".  Entry 0 is the loader, the last
 * is the program, the ones between are preloaded in order.  Needs /proc (every container runtime mounts it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "HWLAUNCH"
#define MAX_ENTRIES 32

struct entry {
    char name[48];
    uint64_t offset;
    uint64_t size;
};

static const char *me = "hatchway";

static void die(const char *what) {
    fprintf(stderr, "%s: launcher: %s: %s\n", me, what, strerror(errno));
    exit(127);
}

static void fail(const char *what) {
    fprintf(stderr, "%s: launcher: %s\n", me, what);
    exit(127);
}

static int to_memfd(int self, const struct entry *e) {
    char name[sizeof(e->name) + 1];
    memcpy(name, e->name, sizeof(e->name));
    name[sizeof(e->name)] = '\0';
    int fd = memfd_create(name, MFD_ALLOW_SEALING); /* no MFD_CLOEXEC: the loader opens it after execve */
    if (fd < 0) {
        die("memfd_create");
    }
    off_t at = (off_t)e->offset;
    uint64_t left = e->size;
    while (left > 0) {
        ssize_t n = sendfile(fd, self, &at, left > (1u << 30) ? (1u << 30) : (size_t)left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            die("sendfile");
        }
        if (n == 0) {
            fail("the payload ends early (a truncated file?)");
        }
        left -= (uint64_t)n;
    }
    /* read-only from here: what was copied is what runs */
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    return fd;
}

int main(int argc, char **argv) {
    if (argc > 0 && argv[0] != NULL) {
        const char *slash = strrchr(argv[0], '/');
        me = slash ? slash + 1 : argv[0];
    }
    int self = open("/proc/self/exe", O_RDONLY); /* kept open across execve: the program's code zip is here */
    if (self < 0) {
        die("open /proc/self/exe (is /proc mounted?)");
    }
    struct stat st;
    if (fstat(self, &st) != 0) {
        die("fstat");
    }
    char tail[16];
    if (st.st_size < (off_t)sizeof(tail) || pread(self, tail, sizeof(tail), st.st_size - sizeof(tail)) != sizeof(tail) ||
        memcmp(tail + 8, MAGIC, 8) != 0) {
        fail("no payload in this file");
    }
    uint32_t n;
    memcpy(&n, tail, sizeof(n));
    if (n < 2 || n > MAX_ENTRIES) {
        fail("bad payload table");
    }
    struct entry entries[MAX_ENTRIES];
    off_t table = st.st_size - (off_t)sizeof(tail) - (off_t)(n * sizeof(struct entry));
    if (table < 0 || pread(self, entries, n * sizeof(struct entry), table) != (ssize_t)(n * sizeof(struct entry))) {
        fail("cannot read the payload table");
    }
    int fds[MAX_ENTRIES];
    for (uint32_t i = 0; i < n; i++) {
        if (entries[i].offset + entries[i].size > (uint64_t)table) {
            fail("payload entry out of range");
        }
        fds[i] = to_memfd(self, &entries[i]);
    }

    /* --preload list, the program's path, the descriptors to close */
    static char preload[MAX_ENTRIES * 24], program[32], exe_env[64], fds_env[MAX_ENTRIES * 12 + 32];
    size_t used = 0;
    for (uint32_t i = 1; i + 1 < n; i++) {
        used += (size_t)snprintf(preload + used, sizeof(preload) - used, "%s/proc/self/fd/%d", i > 1 ? " " : "", fds[i]);
    }
    snprintf(program, sizeof(program), "/proc/self/fd/%d", fds[n - 1]);
    snprintf(exe_env, sizeof(exe_env), "HATCHWAY_LAUNCHED_EXE=/proc/self/fd/%d", self);
    used = (size_t)snprintf(fds_env, sizeof(fds_env), "HATCHWAY_LAUNCHED_FDS=%d,", self);
    for (uint32_t i = 0; i < n; i++) {
        used += (size_t)snprintf(fds_env + used, sizeof(fds_env) - used, "%s%d", i ? "," : "", fds[i]);
    }
    if (putenv(exe_env) != 0 || putenv(fds_env) != 0) {
        die("putenv");
    }

    char **args = calloc((size_t)argc + 8, sizeof(char *));
    if (args == NULL) {
        die("calloc");
    }
    int k = 0;
    args[k++] = argc > 0 ? argv[0] : "hatchway";
    args[k++] = "--argv0";
    args[k++] = argc > 0 ? argv[0] : "hatchway";
    args[k++] = "--preload";
    args[k++] = preload;
    args[k++] = program;
    for (int i = 1; i < argc; i++) {
        args[k++] = argv[i];
    }
    args[k] = NULL;
    char loader[32];
    snprintf(loader, sizeof(loader), "/proc/self/fd/%d", fds[0]);
    extern char **environ;
    execve(loader, args, environ);
    die("execve of glibc's loader");
    return 127;
}
