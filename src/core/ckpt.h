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
/* Prefixes the current error message with "path: "; returns -1 (for `return` on failure). */
int bf_error_in_file(const char *path);
/* Copies every tensor of info (n) from st into params, checking name, dtype and shape; refuses
 * tensors st holds beyond those and the names in also_ok (NULL-terminated, may be NULL), and
 * non-finite values. */
int bf_copy_tensors(float *params, const bf_param_info *info, int n, const bf_safetensors *st,
                    const char *path, const char *const *also_ok);

#endif
