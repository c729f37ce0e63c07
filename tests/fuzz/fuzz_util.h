/* Shared by the libFuzzer harnesses that hand their input to a reader taking a path: a scratch
 * folder per process (under /dev/shm when there is one, so files cost no disk I/O), removed at
 * exit, and a write that replaces a file. Include from exactly one file per harness. */
#ifndef BF_FUZZ_UTIL_H
#define BF_FUZZ_UTIL_H

#include "core.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir_path[128];

static void fuzz_dir_remove(void) {
    DIR *d = opendir(fuzz_dir_path);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(fuzz_dir_path);
}

/* The scratch folder of this process. */
static const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        struct stat st;
        const char *root = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
                           access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/biflow-fuzz.%d", root, (int)getpid());
        if (mkdir(fuzz_dir_path, 0700) != 0) abort();
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* dir/name, in a buffer that stays valid until the next call with the same slot (0..3). */
static const char *fuzz_path(int slot, const char *name) {
    static char buf[4][256];
    snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", fuzz_dir(), name);
    return buf[slot & 3];
}

/* Replaces path with n bytes of data (unlinked first: truncating a file that holds data can
 * make the file system flush it on close). */
static void fuzz_write(const char *path, const uint8_t *data, size_t n) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    for (size_t done = 0; done < n;) {
        ssize_t k = write(fd, data + done, n - done);
        if (k <= 0) abort();
        done += (size_t)k;
    }
    if (close(fd) != 0) abort();
}

/* A failure must come with a message (the harness clears it before each call). */
static void fuzz_expect_message(void) {
    if (!strcmp(bf_last_error(), "no error")) {
        fprintf(stderr, "a reader failed without a message\n");
        abort();
    }
}

#endif
