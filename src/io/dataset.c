/* Datasets: MNIST-style IDX files (Fashion-MNIST from the Debian package, or any directory or
 * explicit file pair), CIFAR-10 binary batches, and folders of PNG/JPEG images by class.
 * Everything is loaded into memory as (n, c, h, w) uint8 with int32 labels. Every reader
 * validates what it reads against the sizes it announces; a bad file is an error naming the
 * file, never a crash or a silent short read. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "image_read.h"   /* PNG and JPEG decoding (libpng, libjpeg-turbo) */

#define MAX_DIM 65536                         /* per image side */
#define MAX_BYTES ((size_t)2 << 30)           /* 2 GiB of pixels in one dataset */
#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static const char *const fmnist_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
static const char *const cifar_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                            "dog", "frog", "horse", "ship", "truck"};

/* ------------------------------------------------------------------ small helpers */
static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = bf_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void free_names(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static char **copy_names(const char *const *src, int n) {
    char **out = bf_malloc((size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) out[i] = bf_strdup(src[i]);
    return out;
}

static char **number_names(int n) {   /* "0", "1", ... */
    char **out = bf_malloc((size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", i);
        out[i] = bf_strdup(buf);
    }
    return out;
}

static int check_split(const char *split) {
    if (split && (!strcmp(split, "train") || !strcmp(split, "test"))) return 0;
    bf_set_error("split must be 'train' or 'test', not '%s'", split ? split : "(null)");
    return -1;
}

void bf_dataset_free(bf_dataset *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->labels);
    free_names(ds->class_names, ds->num_classes);
    memset(ds, 0, sizeof *ds);
}

/* ------------------------------------------------------------------ gzip-or-plain reading */
static gzFile gz_open(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        bf_set_error("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        bf_set_error("cannot open '%s': not a regular file", path);
        return NULL;
    }
    gzFile f = gzopen(path, "rb");   /* reads plain files transparently */
    if (!f) bf_set_error("cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
    else if (st.st_size > (1 << 20)) gzbuffer(f, 1 << 18);   /* big files: fewer, larger reads */
    return f;
}

/* Reads until EOF or max bytes. The buffer grows with the data actually present, so a header
 * that announces 2 GiB in a 100-byte file costs 100 bytes, not 2 GiB. *got says how many. */
static int gz_read_upto(gzFile f, const char *path, size_t max, uint8_t **buf, size_t *got) {
    size_t cap = max < ((size_t)1 << 16) ? max : ((size_t)1 << 16), n = 0;
    uint8_t *p = bf_malloc(cap);
    while (n < max) {
        if (n == cap) {
            cap = cap > max / 2 ? max : cap * 2;
            p = bf_realloc(p, cap);
        }
        size_t want = cap - n < ((size_t)1 << 30) ? cap - n : ((size_t)1 << 30);
        int k = gzread(f, p + n, (unsigned)want);
        if (k < 0) {
            int code;
            bf_set_error("'%s': read error: %s", path, gzerror(f, &code));
            free(p);
            return -1;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    *buf = p;
    *got = n;
    return 0;
}

/* Reads exactly n bytes and then requires end of file. */
static int gz_read_exact(gzFile f, const char *path, size_t n, uint8_t **out) {
    uint8_t *p, extra;
    size_t got;
    if (gz_read_upto(f, path, n, &p, &got)) return -1;
    if (got < n) {
        bf_set_error("'%s' is truncated: its header announces %zu data bytes, the file holds %zu",
                     path, n, got);
        free(p);
        return -1;
    }
    int k = gzread(f, &extra, 1);   /* also makes zlib verify the gzip CRC at the end */
    if (k != 0) {
        int code;
        if (k < 0) bf_set_error("'%s': read error: %s", path, gzerror(f, &code));
        else bf_set_error("'%s' holds more data than the %zu bytes its header announces", path, n);
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* ------------------------------------------------------------------ IDX */
typedef struct {
    gzFile f;
    uint32_t dims[3];
    size_t bytes;              /* product of dims */
} idx_file;

static uint32_t be32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Opens an IDX file of unsigned bytes with ndim dimensions and validates its header. */
static int idx_open(idx_file *x, const char *path, int ndim, const char *what) {
    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndim;
    if (!(x->f = gz_open(path))) return -1;
    int k = gzread(x->f, hdr, (unsigned)hlen), code;
    uint32_t magic = k >= 4 ? be32(hdr) : 0, want = 0x800u | (uint32_t)ndim;
    const char *err = k < 0 ? gzerror(x->f, &code)
                    : k < 4 ? "too short for an IDX header"
                    : hdr[0] || hdr[1] ? "not an IDX file"
                    : hdr[2] != 0x08 ? "element type is not unsigned byte"
                    : hdr[3] != ndim ? "wrong number of dimensions"
                    : k < (int)hlen ? "too short for an IDX header" : NULL;
    if (err) {
        bf_set_error("'%s': %s (magic 0x%08x; an %s file has 0x%08x)", path, err, magic, what, want);
        goto fail;
    }
    x->bytes = 1;
    for (int i = 0; i < ndim; i++) {
        x->dims[i] = be32(hdr + 4 + 4 * i);
        uint32_t lim = i == 0 ? (uint32_t)INT_MAX : MAX_DIM;
        if (x->dims[i] == 0 || x->dims[i] > lim) {
            bf_set_error("'%s': dimension %d is %u (must be 1..%u)", path, i, x->dims[i], lim);
            goto fail;
        }
        x->bytes *= x->dims[i];   /* no overflow: at most 2^31 * 2^16 * 2^16 */
    }
    if (x->bytes > MAX_BYTES) {
        bf_set_error("'%s': header announces %zu bytes, more than the 2 GiB limit", path, x->bytes);
        goto fail;
    }
    return 0;
fail:
    gzclose(x->f);
    x->f = NULL;
    return -1;
}

static int labels_to_classes(const int32_t *labels, int n) {
    int32_t mx = 0;
    for (int i = 0; i < n; i++) mx = labels[i] > mx ? labels[i] : mx;
    return mx < 10 ? 10 : mx + 1;
}

int bf_dataset_load_idx(bf_dataset *ds, const char *images_path, const char *labels_path) {
    memset(ds, 0, sizeof *ds);
    if (!images_path || !labels_path) { bf_set_error("IDX loader: missing file path"); return -1; }
    idx_file im = {0}, lb = {0};
    uint8_t *pix = NULL, *lab = NULL;
    int rc = -1;
    if (idx_open(&im, images_path, 3, "IDX image") || idx_open(&lb, labels_path, 1, "IDX label"))
        goto done;
    if (im.dims[0] != lb.dims[0]) {
        bf_set_error("image file '%s' holds %u images but label file '%s' holds %u labels",
                     images_path, im.dims[0], labels_path, lb.dims[0]);
        goto done;
    }
    if (gz_read_exact(lb.f, labels_path, lb.bytes, &lab) ||
        gz_read_exact(im.f, images_path, im.bytes, &pix))
        goto done;
    ds->n = (int)im.dims[0];
    ds->c = 1;
    ds->h = (int)im.dims[1];
    ds->w = (int)im.dims[2];
    ds->pixels = pix;
    pix = NULL;
    ds->labels = bf_malloc((size_t)ds->n * sizeof *ds->labels);
    for (int i = 0; i < ds->n; i++) ds->labels[i] = lab[i];   /* bytes: always < 256 */
    ds->num_classes = labels_to_classes(ds->labels, ds->n);
    ds->class_names = number_names(ds->num_classes);
    rc = 0;
done:
    if (im.f) gzclose(im.f);
    if (lb.f) gzclose(lb.f);
    free(pix);
    free(lab);
    return rc;
}

/* Finds DIR/<prefix>-<kind>-idxN-ubyte[.gz] (also the "<prefix>-<kind>.idxN-ubyte" spelling). */
static char *idx_find(const char *dir, const char *prefix, const char *kind, int ndim) {
    static const char *const forms[] = {"%s-%s-idx%d-ubyte", "%s-%s-idx%d-ubyte.gz",
                                        "%s-%s.idx%d-ubyte", "%s-%s.idx%d-ubyte.gz"};
    char name[64];
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        snprintf(name, sizeof name, forms[i], prefix, kind, ndim);
        char *p = join(dir, name);
        if (is_file(p)) return p;
        free(p);
    }
    bf_set_error("no %s-%s-idx%d-ubyte[.gz] in '%s'", prefix, kind, ndim, dir);
    return NULL;
}

static int load_idx_dir(bf_dataset *ds, const char *dir, const char *split) {
    if (!is_dir(dir)) {
        bf_set_error("IDX directory '%s' does not exist", dir);
        return -1;
    }
    const char *prefix = !strcmp(split, "train") ? "train" : "t10k";
    char *im = idx_find(dir, prefix, "images", 3), *lb = im ? idx_find(dir, prefix, "labels", 1) : NULL;
    int rc = lb ? bf_dataset_load_idx(ds, im, lb) : -1;
    free(im);
    free(lb);
    return rc;
}

static int load_fashion_mnist(bf_dataset *ds, const char *split) {
    const char *dir = getenv("BF_FASHION_MNIST_DIR");
    if (!dir || !*dir) dir = FMNIST_DIR;
    if (!is_dir(dir)) {
        bf_set_error("Fashion-MNIST not found in '%s' (install the Debian package "
                     "dataset-fashion-mnist or set BF_FASHION_MNIST_DIR)", dir);
        return -1;
    }
    if (load_idx_dir(ds, dir, split)) return -1;
    if (ds->num_classes != 10) {
        bf_set_error("'%s' does not look like Fashion-MNIST: labels go up to %d", dir,
                     ds->num_classes - 1);
        bf_dataset_free(ds);
        return -1;
    }
    free_names(ds->class_names, ds->num_classes);
    ds->class_names = copy_names(fmnist_names, 10);
    return 0;
}

/* "IMAGES,LABELS": a path may itself hold commas, so split at the first comma whose left side
 * is an existing file (or at the first comma if none is). */
static int load_idx_pair(bf_dataset *ds, const char *arg) {
    const char *cut = strchr(arg, ',');
    for (const char *c = cut; c; c = strchr(c + 1, ',')) {
        char *left = strndup(arg, (size_t)(c - arg));
        int ok = left && is_file(left);
        free(left);
        if (ok) { cut = c; break; }
    }
    char *images = strndup(arg, (size_t)(cut - arg));
    if (!images) { bf_set_error("out of memory"); return -1; }
    int rc = bf_dataset_load_idx(ds, images, cut + 1);
    free(images);
    return rc;
}

/* ------------------------------------------------------------------ CIFAR-10 */
#define CIFAR_REC 3073

/* Reads batches.meta.txt (one class name a line) if present; the standard names otherwise. */
static int cifar_names_load(const char *dir, char ***out) {
    char *path = join(dir, "batches.meta.txt");
    uint8_t *txt = NULL;
    size_t size;
    int rc = 0, n = 0;
    if (!is_file(path)) {
        *out = copy_names(cifar_names, 10);
    } else if (!(rc = bf_read_file(path, &txt, &size, 1 << 16))) {
        char **names = bf_calloc(10, sizeof *names), *save = NULL;
        for (char *line = strtok_r((char *)txt, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
            size_t len = strlen(line);
            while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = 0;
            if (len && n < 10) names[n] = bf_strdup(line);
            n += len > 0;
        }
        if (n == 10) *out = names;
        else {
            bf_set_error("'%s' lists %d class names; CIFAR-10 has 10", path, n);
            free_names(names, 10);
            rc = -1;
        }
    }
    free(txt);
    free(path);
    return rc;
}

/* Appends the records of one batch file to ds (pixels are already CHW in the file). */
static int cifar_append(bf_dataset *ds, const char *path) {
    gzFile f = gz_open(path);
    uint8_t *buf;
    size_t size;
    if (!f) return -1;
    int rc = gz_read_upto(f, path, MAX_BYTES + 1, &buf, &size);
    gzclose(f);
    if (rc) return -1;
    size_t m = size / CIFAR_REC, total = ((size_t)ds->n + m) * (CIFAR_REC - 1);
    const char *err = size == 0 || size % CIFAR_REC ? "size is not a positive multiple of 3073 bytes"
                    : total > MAX_BYTES ? "more than 2 GiB of images in all" : NULL;
    for (size_t i = 0; !err && i < m; i++)
        if (buf[i * CIFAR_REC] >= 10) err = "holds a label >= 10";
    if (err) {
        bf_set_error("'%s' is not a CIFAR-10 binary batch: %s (%zu bytes)", path, err, size);
        free(buf);
        return -1;
    }
    size_t n = (size_t)ds->n;
    ds->pixels = bf_realloc(ds->pixels, total);
    ds->labels = bf_realloc(ds->labels, (n + m) * sizeof *ds->labels);
    for (size_t i = 0; i < m; i++) {
        ds->labels[n + i] = buf[i * CIFAR_REC];
        memcpy(ds->pixels + (n + i) * (CIFAR_REC - 1), buf + i * CIFAR_REC + 1, CIFAR_REC - 1);
    }
    ds->n += (int)m;
    free(buf);
    return 0;
}

/* The start of a loader that reads a folder: ds cleared; 0 when split is test or train and dir
 * is a folder, else -1 with a message naming it as `what`. */
static int start_dir_load(bf_dataset *ds, const char *dir, const char *split, const char *what) {
    memset(ds, 0, sizeof *ds);
    if (check_split(split)) return -1;
    if (!dir || !is_dir(dir)) {
        bf_set_error("%s '%s' does not exist", what, dir ? dir : "(null)");
        return -1;
    }
    return 0;
}

int bf_dataset_load_cifar10(bf_dataset *ds, const char *dir, const char *split) {
    if (start_dir_load(ds, dir, split, "CIFAR-10 directory")) return -1;
    char *sub = join(dir, "cifar-10-batches-bin");   /* the folder inside the official tarball */
    const char *root = is_dir(sub) ? sub : dir;
    bf_dataset d = {.c = 3, .h = 32, .w = 32};
    int train = !strcmp(split, "train"), rc = 0;
    for (int b = 1; !rc && b <= (train ? 5 : 1); b++) {
        char name[32];
        snprintf(name, sizeof name, train ? "data_batch_%d.bin" : "test_batch.bin", b);
        char *path = join(root, name);
        rc = cifar_append(&d, path);
        free(path);
    }
    if (!rc && !(rc = cifar_names_load(root, &d.class_names))) d.num_classes = 10;
    free(sub);
    if (rc) { free(d.pixels); free(d.labels); return -1; }
    *ds = d;
    return 0;
}

/* ------------------------------------------------------------------ folders of images */
typedef struct { char **v; int n, cap; } str_list;

static void list_push(str_list *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = bf_realloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* Sorted names in dir: sub-folders (want_dirs) or image files; hidden entries skipped. */
static int list_dir(const char *dir, int want_dirs, str_list *out) {
    DIR *d = opendir(dir);
    if (!d) { bf_set_error("cannot read folder '%s': %s", dir, strerror(errno)); return -1; }
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = join(dir, e->d_name);
        int keep = want_dirs ? is_dir(p) : is_file(p) && has_image_ext(e->d_name);
        free(p);
        if (keep) list_push(out, bf_strdup(e->d_name));
    }
    closedir(d);
    if (out->n) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return 0;
}

/* Decodes an image file; alpha is dropped (grey+alpha -> 1 channel, RGBA -> 3). The result is
 * HWC, malloc'ed. */
static uint8_t *decode_image(const char *path, int *h, int *w, int *c) {
    return bf_image_read_file(path, BF_IMAGE_NO_ALPHA, w, h, c);
}

/* Decodes one file into dst (CHW) if it is c x h x w; -1 with a message naming it otherwise. */
static int load_into(const char *path, uint8_t *dst, int c, int h, int w) {
    int ih, iw, ic;
    uint8_t *img = decode_image(path, &ih, &iw, &ic);
    if (!img) return -1;
    if (ih != h || iw != w || ic != c) {
        bf_set_error("image '%s' is %dx%d with %d channel(s); the first image is %dx%d with %d",
                     path, iw, ih, ic, w, h, c);
        free(img);
        return -1;
    }
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < (size_t)h * w; i++) dst[(size_t)k * h * w + i] = img[i * c + k];
    free(img);
    return 0;
}

/* Lists all image files of the split, class by class (a class may be absent), with labels. */
static int folder_collect(const char *split_dir, const str_list *classes, str_list *files,
                          int32_t **labels) {
    for (int k = 0; k < classes->n; k++) {
        char *cdir = join(split_dir, classes->v[k]);
        str_list names = {0};
        int rc = is_dir(cdir) ? list_dir(cdir, 0, &names) : 0, first = files->n;
        for (int i = 0; i < names.n; i++) list_push(files, join(cdir, names.v[i]));
        *labels = bf_realloc(*labels, (size_t)files->n * sizeof **labels);
        for (int i = first; i < files->n; i++) (*labels)[i] = k;
        free_names(names.v, names.n);
        free(cdir);
        if (rc) return -1;
    }
    if (files->n == 0) { bf_set_error("no PNG/JPEG images under '%s'", split_dir); return -1; }
    return 0;
}

/* Decodes every file into ds; the first fixes the size. Decoding runs in parallel; on failure
 * the first bad file is decoded again on this thread so that its message reaches the caller. */
static int folder_decode(bf_dataset *ds, const str_list *files) {
    uint8_t *first = decode_image(files->v[0], &ds->h, &ds->w, &ds->c);
    if (!first) return -1;
    free(first);
    size_t per = (size_t)ds->c * ds->h * ds->w;
    if (per * (size_t)files->n > MAX_BYTES) {
        bf_set_error("%d images of %zu bytes are more than the 2 GiB limit", files->n, per);
        return -1;
    }
    ds->pixels = bf_malloc(per * (size_t)files->n);
    int bad = INT_MAX;
    #pragma omp parallel for schedule(dynamic, 8) reduction(min : bad)
    for (int i = 0; i < files->n; i++)
        if (load_into(files->v[i], ds->pixels + per * (size_t)i, ds->c, ds->h, ds->w)) bad = i < bad ? i : bad;
    if (bad == INT_MAX) return 0;
    if (!load_into(files->v[bad], ds->pixels + per * (size_t)bad, ds->c, ds->h, ds->w))
        bf_set_error("image '%s' changed while it was being loaded", files->v[bad]);
    return -1;
}

/* Classes in the split folder must be among those of the class folder (train), so that a label
 * means the same class in both splits. */
static int folder_check_classes(const char *split_dir, const char *class_dir, const str_list *classes) {
    str_list sub = {0};
    int rc = list_dir(split_dir, 1, &sub);
    for (int i = 0; !rc && i < sub.n; i++)
        if (!bsearch(&sub.v[i], classes->v, (size_t)classes->n, sizeof *classes->v, cmp_str)) {
            bf_set_error("class folder '%s/%s' has no counterpart in '%s'", split_dir, sub.v[i], class_dir);
            rc = -1;
        }
    free_names(sub.v, sub.n);
    return rc;
}

/* DIR/train/<class> and DIR/test/<class> when either split folder exists, else DIR/<class>
 * (train only). Classes always come from the train folder, when there is one. */
static int folder_layout(const char *dir, const char *split, char **split_dir, char **class_dir) {
    char *train = join(dir, "train"), *test = join(dir, "test");
    int layered = is_dir(train) || is_dir(test);
    *split_dir = layered ? join(dir, split) : bf_strdup(dir);
    *class_dir = bf_strdup(!layered ? dir : is_dir(train) ? train : test);
    free(train);
    free(test);
    if (!layered && strcmp(split, "train")) {
        /* serving training images as a test set would silently inflate test scores */
        bf_set_error("folder '%s' has no train/ and test/ sub-folders, so it has no test split", dir);
    } else if (!is_dir(*split_dir)) {
        bf_set_error("folder '%s' has no '%s' sub-folder", dir, split);
    } else {
        return 0;
    }
    free(*split_dir);
    free(*class_dir);
    return -1;
}

int bf_dataset_load_folder(bf_dataset *ds, const char *dir, const char *split) {
    if (start_dir_load(ds, dir, split, "image folder")) return -1;
    char *split_dir, *class_dir;
    if (folder_layout(dir, split, &split_dir, &class_dir)) return -1;
    str_list classes = {0}, files = {0};
    bf_dataset d = {0};
    int rc = list_dir(class_dir, 1, &classes);
    if (!rc && !classes.n) {
        bf_set_error("no class sub-folders in '%s'", class_dir);
        rc = -1;
    }
    if (!rc && strcmp(split_dir, class_dir)) rc = folder_check_classes(split_dir, class_dir, &classes);
    if (!rc) rc = folder_collect(split_dir, &classes, &files, &d.labels);
    if (!rc) rc = folder_decode(&d, &files);
    if (!rc) {
        d.n = files.n;
        d.num_classes = classes.n;
        d.class_names = classes.v;
        classes.v = NULL;
        *ds = d;
    } else {
        free(d.pixels);
        free(d.labels);
    }
    free_names(classes.v, classes.n);
    free_names(files.v, files.n);
    free(split_dir);
    free(class_dir);
    return rc;
}

/* ------------------------------------------------------------------ batches and checks */
void bf_make_batch_rows(float *img, int *y, const bf_dataset *ds, const int *idx, int B, int r0,
                        int r1, bf_noise noise, float sigma, float drop, bf_rng *rng) {
    size_t px = (size_t)ds->c * ds->h * ds->w;
    for (int b = 0; b < B; b++) {
        int mine = b >= r0 && b < r1;
        const uint8_t *p = ds->pixels + (size_t)idx[b] * px;
        float *x = img + (size_t)b * px;
        for (size_t k = 0; k < px; k++) {   /* other rows: the same draws, nothing read */
            if (noise == BF_NOISE_UNIFORM) {
                float u = bf_rng_uniform(rng);
                if (mine) x[k] = ((float)p[k] + u) / 128.0f - 1.0f;
            } else {
                float e = bf_rng_normal(rng);
                if (mine) x[k] = bf_pixel_to_unit(p[k]) + sigma * e;
            }
        }
        int keep = ds->num_classes > 0 && bf_rng_uniform(rng) >= drop;
        if (mine) y[b] = keep ? ds->labels[idx[b]] : -1;
    }
}

void bf_make_batch(float *img, int *y, const bf_dataset *ds, const int *idx, int B,
                   bf_noise noise, float sigma, float drop, bf_rng *rng) {
    bf_make_batch_rows(img, y, ds, idx, B, 0, B, noise, sigma, drop, rng);
}

int bf_dataset_check_shape(const bf_dataset *ds, int C, int size, int num_classes) {
    if (ds->c != C || ds->h != size || ds->w != size) {
        bf_set_error("the data are %dx%dx%d images but the model expects %dx%dx%d",
                     ds->c, ds->h, ds->w, C, size, size);
        return -1;
    }
    if (num_classes && ds->num_classes > num_classes) {
        bf_set_error("the data have %d classes but the model has %d", ds->num_classes, num_classes);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ spec dispatch */
int bf_dataset_load(bf_dataset *ds, const char *spec, const char *split) {
    memset(ds, 0, sizeof *ds);
    if (check_split(split)) return -1;
    if (!spec) spec = "(null)";
    const char *arg = strchr(spec, ':') ? strchr(spec, ':') + 1 : NULL;
    if (!strcmp(spec, "fashion-mnist")) return load_fashion_mnist(ds, split);
    if (arg && !*arg) {
        bf_set_error("dataset '%s' names no path after the ':'", spec);
        return -1;
    }
    if (!strncmp(spec, "idx:", 4))
        return is_dir(arg) || !strchr(arg, ',') ? load_idx_dir(ds, arg, split) : load_idx_pair(ds, arg);
    if (!strncmp(spec, "cifar10:", 8)) return bf_dataset_load_cifar10(ds, arg, split);
    if (!strncmp(spec, "folder:", 7)) return bf_dataset_load_folder(ds, arg, split);
    bf_set_error("unknown dataset '%s'; accepted: fashion-mnist, idx:DIR, idx:IMAGES,LABELS, "
                 "cifar10:DIR, folder:DIR", spec);
    return -1;
}
