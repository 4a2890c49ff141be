/* The power-loss layer's recorder: an LD_PRELOAD library for a service whose data directory may
 * lose power (harness/testbed/powerloss.py builds it, starts services under it, and undoes).
 *
 * Before every write or truncate of a regular file under $PAYSWITCH_POWERLOSS_DIR it appends to
 * $PAYSWITCH_POWERLOSS_LOG an undo record: the file's identity (device, inode), where the change
 * lands, the file's size and the bytes the change is about to overwrite. After an fsync or
 * fdatasync of such a file succeeds it appends a sync record. The log is written with plain
 * write(2), so it survives a kill -9 of the service like any page-cache data; the harness then
 * undoes, newest first, every change made to each file since its last sync: the files are as a
 * machine that lost power would find them, with what was written but never synced gone.
 *
 * The record comes before the change, the sync record after the sync returns: a kill between the
 * two halves makes the undo restore bytes that are already there (harmless), and anything the
 * service acknowledged after an fsync has its sync record. Intercepted: write, pwrite, pwrite64,
 * ftruncate, ftruncate64, fsync, fdatasync (what SQLite's unix VFS calls). Not modelled: writes
 * through mmap, files named with the suffix $PAYSWITCH_POWERLOSS_VOLATILE (SQLite's -shm wal-index:
 * memory shared through a file, rebuilt after a crash), writev, fallocate,
 * directory entries (a file created and never dir-synced keeps existing, emptied back).
 *
 * Record layout (native endianness, x86-64 little-endian): char type ('W' write, 'T' truncate,
 * 'S' sync), 7 bytes of padding, then six int64: dev, ino, pos (a write's offset, a truncate's new
 * length), count (bytes written; 0 for a truncate), old_size (the file's size before), n (bytes of
 * old data that follow, those of [pos, pos + count) or of [pos, old_size) that existed).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

struct record {
    char type;
    char pad[7];
    int64_t dev, ino, pos, count, old_size, n;
};

static int log_fd = -1;
static char dir[PATH_MAX];
static size_t dir_len;
static char volatile_suffix[64]; /* files named so are memory, not storage: not recorded */
static size_t volatile_len;

/* Changes recorded since its last sync, per file. When no file has any, the log is emptied (it
 * holds nothing to undo), so it stays as small as the unsynced data. Past MAX_FILES files it is
 * never emptied, which is only bigger, never wrong. */
#define MAX_FILES 64
static struct { int64_t dev, ino, pending; } files[MAX_FILES];
static int n_files;
static int files_overflowed;
/* One record at a time, and the table with it (SQLite serializes a connection's writes already). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void count_inherited(void);

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    const char *d = getenv("PAYSWITCH_POWERLOSS_DIR");
    const char *l = getenv("PAYSWITCH_POWERLOSS_LOG");
    if (!d || !l || !realpath(d, dir)) return; /* inert: nothing is recorded */
    dir_len = strlen(dir);
    const char *v = getenv("PAYSWITCH_POWERLOSS_VOLATILE");
    if (v && strlen(v) < sizeof volatile_suffix) {
        strcpy(volatile_suffix, v);
        volatile_len = strlen(v);
    }
    log_fd = (int)syscall(SYS_openat, AT_FDCWD, l, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd >= 0) count_inherited();
}

/* Whether fd is a regular file under the directory; its identity in *st. */
static int watched(int fd, struct stat *st) {
    if (log_fd < 0 || fd == log_fd || fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, sizeof path - 1);
    if (len <= (ssize_t)dir_len) return 0;
    path[len] = 0;
    if (volatile_len && (size_t)len >= volatile_len && strcmp(path + len - volatile_len, volatile_suffix) == 0)
        return 0;
    return strncmp(path, dir, dir_len) == 0 && path[dir_len] == '/';
}

static void count_pending(const struct stat *st, int change) {
    for (int i = 0; i < n_files; i++) {
        if (files[i].dev == (int64_t)st->st_dev && files[i].ino == (int64_t)st->st_ino) {
            files[i].pending = change ? files[i].pending + 1 : 0;
            return;
        }
    }
    if (!change) return;
    if (n_files == MAX_FILES) {
        files_overflowed = 1;
        return;
    }
    files[n_files].dev = (int64_t)st->st_dev;
    files[n_files].ino = (int64_t)st->st_ino;
    files[n_files].pending = 1;
    n_files++;
}

/* A service restarted after a plain kill -9 inherits the log of its previous life: what that one
 * left unsynced is still pending, so count it before the log may be emptied. */
static void count_inherited(void) {
    struct record r;
    off_t at = 0;
    for (;;) {
        ssize_t k = pread(log_fd, &r, sizeof r, at);
        if (k != (ssize_t)sizeof r) return; /* the end, or a record cut short by the kill */
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_dev = (dev_t)r.dev;
        st.st_ino = (ino_t)r.ino;
        count_pending(&st, r.type != 'S');
        at += (off_t)sizeof r + (off_t)r.n;
    }
}

static void empty_log_if_all_synced(void) {
    if (files_overflowed) return;
    for (int i = 0; i < n_files; i++)
        if (files[i].pending) return;
    syscall(SYS_ftruncate, log_fd, 0);
}

static void append(const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = syscall(SYS_write, log_fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) abort(); /* an undo record that cannot be kept: stop rather than write unrecorded */
        p += w;
        len -= (size_t)w;
    }
}

/* An undo record for a change of [pos, end) (end < 0: to the end of the file) of fd. */
static void record_change(char type, int fd, const struct stat *st, off_t pos, off_t end) {
    int saved = errno;
    off_t size = st->st_size;
    off_t from = pos, to = end < 0 || end > size ? size : end;
    size_t n = to > from ? (size_t)(to - from) : 0;
    size_t total = sizeof(struct record) + n;
    char *buf = malloc(total);
    if (!buf) abort();
    struct record *r = (struct record *)buf;
    memset(r, 0, sizeof *r);
    r->type = type;
    r->dev = (int64_t)st->st_dev;
    r->ino = (int64_t)st->st_ino;
    r->pos = pos;
    r->count = type == 'W' ? (int64_t)(end - pos) : 0;
    r->old_size = size;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + sizeof *r + got, n - got, from + (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    r->n = (int64_t)got;
    pthread_mutex_lock(&lock);
    append(buf, sizeof *r + got);
    count_pending(st, 1);
    pthread_mutex_unlock(&lock);
    free(buf);
    errno = saved;
}

static void record_sync(const struct stat *st) {
    int saved = errno;
    struct record r;
    memset(&r, 0, sizeof r);
    r.type = 'S';
    r.dev = (int64_t)st->st_dev;
    r.ino = (int64_t)st->st_ino;
    pthread_mutex_lock(&lock);
    append(&r, sizeof r);
    count_pending(st, 0);
    empty_log_if_all_synced();
    pthread_mutex_unlock(&lock);
    errno = saved;
}

static void before_write(int fd, size_t count, off_t offset) {
    struct stat st;
    if (count > 0 && watched(fd, &st)) record_change('W', fd, &st, offset, offset + (off_t)count);
}

ssize_t write(int fd, const void *buf, size_t count) {
    struct stat st;
    if (count > 0 && watched(fd, &st)) {
        int flags = fcntl(fd, F_GETFL);
        off_t at = (flags >= 0 && (flags & O_APPEND)) ? st.st_size : lseek(fd, 0, SEEK_CUR);
        if (at >= 0) record_change('W', fd, &st, at, at + (off_t)count);
    }
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    before_write(fd, count, offset);
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    before_write(fd, count, offset);
    return real_pwrite64(fd, buf, count, offset);
}

static void before_truncate(int fd, off_t length) {
    struct stat st;
    if (watched(fd, &st) && length != st.st_size) record_change('T', fd, &st, length, -1);
}

int ftruncate(int fd, off_t length) {
    before_truncate(fd, length);
    return real_ftruncate(fd, length);
}

int ftruncate64(int fd, off_t length) {
    before_truncate(fd, length);
    return real_ftruncate64(fd, length);
}

static int after_sync(int fd, int rc) {
    struct stat st;
    if (rc == 0 && watched(fd, &st)) record_sync(&st);
    return rc;
}

int fsync(int fd) { return after_sync(fd, real_fsync(fd)); }

int fdatasync(int fd) { return after_sync(fd, real_fdatasync(fd)); }
