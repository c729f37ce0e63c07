/* Helpers shared by the checkpoint readers and writers of every model: configuration values
 * in the safetensors metadata, extra JSON metadata, run-folder paths, strict tensor lists. */
#ifndef BF_CKPT_H
#define BF_CKPT_H

#include "biflow.h"
#include "core.h"

#include <stddef.h>

void bf_meta_int(bf_st_writer *w, const char *key, int v);
void bf_meta_float(bf_st_writer *w, const char *key, float v);
/* Adds every member of a JSON object (strings as they are, others printed); NULL: nothing. */
void bf_meta_add_json(bf_st_writer *w, const char *json);
/* An integer from the metadata; absent: dflt unless required (then an error naming path). */
int bf_meta_get_int(const bf_safetensors *st, const char *path, const char *key, int *out,
                    int required, int dflt);
int bf_meta_get_float(const bf_safetensors *st, const char *path, const char *key, float *out,
                      int required, float dflt);
/* A model's configuration as metadata: one table per model, read and written by the same two
 * functions (values are strings in __metadata__, as the PyTorch fixtures have them). */
typedef enum { BF_META_INT, BF_META_FLOAT } bf_meta_kind;
typedef struct {
    const char *key;
    size_t offset;            /* of the int or float field in the configuration struct */
    bf_meta_kind kind;
    int required;             /* else absent (older files) means dflt */
    double dflt;
} bf_meta_field;
void bf_meta_write_fields(bf_st_writer *w, const bf_meta_field *f, int n, const void *cfg);
int bf_meta_read_fields(const bf_safetensors *st, const char *path, const bf_meta_field *f, int n,
                        void *cfg);

/* Refuses (before the model is allocated) a configuration that needs more parameters than the
 * file's tensors hold (those named in also_ok, NULL-terminated, not counted): the metadata
 * cannot make a loader allocate more than the file could fill. */
int bf_check_param_total(const bf_safetensors *st, const char *path, double expected,
                         const char *const *also_ok);
/* What a model's checkpoint is: its metadata format and configuration table, the checks of a
 * configuration read from it, and the files a run folder holds. */
typedef struct {
    const char *format;            /* the metadata's "format" */
    const char *what;              /* for messages: "a reverse-model file" */
    int format_optional;           /* a file without "format" is read (the reference fixtures) */
    const bf_meta_field *fields;
    int n_fields;
    /* the configuration's own checks (and any against the file): the number of parameters it
     * makes, or -1 with a message */
    double (*check)(const void *cfg, const bf_safetensors *st, const char *path);
    const char *const *extra_tensors;  /* held besides the parameters (NULL-terminated) or NULL */
    const char *ema_name, *raw_name;   /* a run folder's files (bf_resolve_model_path) */
} bf_ckpt_kind;
/* An open checkpoint: its tensors and metadata, and the path they were read from. */
typedef struct { bf_safetensors st; char path[4096]; } bf_ckpt_file;
/* Opens the checkpoint path_in names (a file, or a run folder's file by use_ema) and reads its
 * configuration into cfg: the format, the fields, k's check and the tensors' total against
 * the parameters (bf_check_param_total). 0 with f open (for
 * bf_st_free(&f->st)), or -1 with a message and nothing to free. */
int bf_ckpt_open(bf_ckpt_file *f, const char *path_in, int use_ema, const bf_ckpt_kind *k,
                 void *cfg);
/* A checkpoint of kind k being written: its format, the configuration cfg, then each member
 * of extra_json (may be NULL) in the metadata. */
bf_st_writer *bf_ckpt_writer(const bf_ckpt_kind *k, const void *cfg, const char *extra_json);
/* Adds the tensors of info (n) from params to w. */
void bf_ckpt_add_params(bf_st_writer *w, const float *params, const bf_param_info *info, int n);
/* Saves w to path (atomically) and frees it. */
int bf_ckpt_write(bf_st_writer *w, const char *path);
/* Prefixes the current error message with "path: "; returns -1 (for `return` on failure). */
int bf_error_in_file(const char *path);
/* Copies every tensor of info (n) from st into params, checking name, dtype and shape; refuses
 * tensors st holds beyond those and the names in also_ok (NULL-terminated, may be NULL), and
 * non-finite values. */
int bf_copy_tensors(float *params, const bf_param_info *info, int n, const bf_safetensors *st,
                    const char *path, const char *const *also_ok);

#endif
