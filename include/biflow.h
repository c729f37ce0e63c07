/* biflow: Bidirectional Normalizing Flows in C.
 * The only public header of libbiflow. Every function that can fail returns 0 on success
 * and -1 on failure; bf_last_error() then says why, in words a user can act on. */
#ifndef BIFLOW_H
#define BIFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BF_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors, rng */
const char *bf_last_error(void);
void bf_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct { uint64_t s[4]; int has_spare; float spare; } bf_rng;   /* xoshiro256** */
void bf_rng_seed(bf_rng *rng, uint64_t seed);
uint64_t bf_rng_u64(bf_rng *rng);
float bf_rng_uniform(bf_rng *rng);                 /* [0, 1) */
float bf_rng_normal(bf_rng *rng);                  /* N(0, 1) */
uint32_t bf_rng_below(bf_rng *rng, uint32_t n);    /* uniform in [0, n) */

/* ------------------------------------------------------------------ safetensors */
typedef enum { BF_DT_F32, BF_DT_F64, BF_DT_I64, BF_DT_I32, BF_DT_U8 } bf_dtype;

typedef struct {
    char name[256];
    bf_dtype dtype;
    int ndim;
    int64_t shape[8];
    int64_t numel;
    const void *data;          /* points into the file's data section (little-endian) */
} bf_tensor_view;

typedef struct {
    int n;                     /* number of tensors */
    bf_tensor_view *tensors;
    int n_meta;
    char **meta_keys, **meta_values;   /* "__metadata__" string pairs */
    uint8_t *file;             /* whole file */
    size_t file_size;
    char *path;                /* for messages */
} bf_safetensors;

int bf_st_load(bf_safetensors *st, const char *path);
void bf_st_free(bf_safetensors *st);
const bf_tensor_view *bf_st_get(const bf_safetensors *st, const char *name);
/* Finds a tensor and checks dtype and shape; error names the tensor and both shapes. */
const bf_tensor_view *bf_st_expect(const bf_safetensors *st, const char *name, bf_dtype dt,
                                   int ndim, const int64_t *shape);
const char *bf_st_meta(const bf_safetensors *st, const char *key);   /* NULL if absent */

typedef struct bf_st_writer bf_st_writer;
bf_st_writer *bf_st_writer_new(void);
void bf_st_writer_meta(bf_st_writer *w, const char *key, const char *value);
/* data is copied; shape has ndim entries */
void bf_st_writer_add(bf_st_writer *w, const char *name, bf_dtype dt, int ndim,
                      const int64_t *shape, const void *data);
int bf_st_writer_save(bf_st_writer *w, const char *path);   /* atomic: temp + fsync + rename */
void bf_st_writer_free(bf_st_writer *w);

/* ------------------------------------------------------------------ datasets */
typedef struct {
    int n, c, h, w;            /* images are stored (n, c, h, w) uint8, channel-major */
    uint8_t *pixels;
    int32_t *labels;           /* n labels in [0, num_classes) */
    int num_classes;
    char **class_names;        /* num_classes names, may be NULL */
} bf_dataset;

/* spec: "fashion-mnist" (the Debian package), "idx:DIR" (MNIST-style IDX files, .gz or not),
 * "idx:IMAGES,LABELS", "cifar10:DIR" (CIFAR-10 binary), "folder:DIR" (DIR/<class>/ holding PNG or
 * JPEG files, or DIR/train/<class> and DIR/test/<class>). split: "train" or "test". */
int bf_dataset_load(bf_dataset *ds, const char *spec, const char *split);
int bf_dataset_load_idx(bf_dataset *ds, const char *images_path, const char *labels_path);
int bf_dataset_load_cifar10(bf_dataset *ds, const char *dir, const char *split);
int bf_dataset_load_folder(bf_dataset *ds, const char *dir, const char *split);
void bf_dataset_free(bf_dataset *ds);


/* ------------------------------------------------------------------ images and arrays out */
/* pixels (h, w, c) uint8, c = 1 or 3 */
int bf_write_png(const char *path, const uint8_t *pixels, int h, int w, int c);
/* images (n, c, h, w) floats in [-1, 1] (clipped) -> one PNG grid, ncols per row, each image
 * scaled up by an integer factor (nearest neighbour), 2-pixel gaps */
int bf_write_image_grid(const char *path, const float *images, int n, int c, int h, int w,
                        int ncols, int scale);
/* NumPy .npy (version 1.0, C order); written atomically */
int bf_write_npy(const char *path, bf_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Reads a .npy of dtype u1, i4, i8, f4 or f8 (little-endian, C order). *data is malloc'ed in
 * the file's own dtype, reported in *dt. */
int bf_read_npy(const char *path, bf_dtype *dt, int *ndim, int64_t shape[8], void **data);
/* float images in [-1, 1] -> uint8 by x -> round((clip(x) + 1) * 127.5) */
void bf_images_to_u8(uint8_t *out, const float *x, size_t n);

/* ------------------------------------------------------------------ forward flow (TARFlow) */
typedef struct {
    int img_size;              /* H = W */
    int in_channels;           /* C */
    int patch_size;            /* P */
    int channels;              /* Transformer width W */
    int num_blocks;            /* B */
    int layers_per_block;      /* L */
    int head_dim;              /* 64 */
    int num_classes;           /* 0 = unconditional */
    float bound;               /* c of c*tanh(v/c) on alpha and mu; 0 = off */
} bf_flow_config;

/* Named configurations: "fmnist-tiny", "fmnist-small", "fmnist-base", "cifar-small";
 * -1 if unknown. */
int bf_flow_config_named(bf_flow_config *cfg, const char *name);
int bf_flow_config_check(const bf_flow_config *cfg);
int bf_flow_tokens(const bf_flow_config *cfg);      /* T */
int bf_flow_token_dim(const bf_flow_config *cfg);   /* D */

typedef struct bf_flow bf_flow;
bf_flow *bf_flow_new(const bf_flow_config *cfg);
void bf_flow_free(bf_flow *f);
const bf_flow_config *bf_flow_get_config(const bf_flow *f);
size_t bf_flow_num_params(const bf_flow *f);
float *bf_flow_params(bf_flow *f);                  /* flat parameter block */
void bf_flow_init(bf_flow *f, uint64_t seed);       /* public TARFlow initialisation */

/* Checkpoints (safetensors; tensor names of transformer_flow.Model, configuration in the
 * metadata). path: a file, or a training run's folder, whose flow_ema.safetensors
 * (use_ema = 1) or flow.safetensors (use_ema = 0) is loaded. Every name, shape and dtype is
 * checked; unknown tensors and non-finite weights are refused. */
bf_flow *bf_flow_load(const char *path, int use_ema);
/* Writes params (laid out as bf_flow_params) with f's configuration; extra_meta_json: a JSON
 * object whose members are added to the metadata (may be NULL). Atomic. */
int bf_flow_save(const bf_flow *f, const float *params, const char *path,
                 const char *extra_meta_json);

/* x: (n, C, H, W) in [-1, 1]; y: (n) labels, -1 = unconditional (may be NULL: all -1).
 * z: (n, T, D) output tokens; logdet: (n) sum over blocks of -mean(alpha) (per-dimension,
 * as the public code). Batches of any size; work memory is managed inside. */
int bf_flow_encode(bf_flow *f, float *z, float *logdet, const float *x, const int *y, int n);
/* Exact inverse, sequential over tokens. cfg: guidance weight (0 = off). x: (n, C, H, W). */
int bf_flow_decode(bf_flow *f, float *x, const float *z, const int *y, int n, float cfg,
                   int cfg_anneal);

/* patch tokens <-> images, PyTorch unfold order inside a token */
void bf_patchify(float *tok, const float *img, int n, int c, int h, int w, int p);
void bf_unpatchify(float *img, const float *tok, int n, int c, int h, int w, int p);

/* ------------------------------------------------------------------ sampling from F */
typedef enum { BF_SAMPLER_EXACT, BF_SAMPLER_JACOBI } bf_sampler;

typedef struct {
    bf_sampler sampler;
    float cfg;                 /* guidance weight w (0 = none) */
    int cfg_anneal;            /* w rises linearly over the tokens */
    int denoise;               /* 1: score-based denoising x + sigma^2 grad log p(x) */
    float sigma;               /* noise level for denoising */
    float jacobi_tol;          /* Jacobi: stop when max |change| < tol */
    int jacobi_max_iter;       /* Jacobi: iteration cap per block (0 = T) */
    int batch;                 /* images per pass (0 = all at once) */
} bf_sample_opts;

typedef struct {
    long jacobi_iters;         /* Jacobi iterations summed over blocks and batches */
    long nonfinite;            /* output pixels that are NaN or Inf */
    double seconds;
} bf_sample_stats;

void bf_sample_opts_default(bf_sample_opts *o);
/* z: (n, T, D) prior noise (already scaled by any temperature); y: (n) labels or NULL;
 * x: (n, C, H, W) images (not clipped). */
int bf_flow_sample(bf_flow *f, float *x, const float *z, const int *y, int n,
                   const bf_sample_opts *o, bf_sample_stats *stats);
/* Score-based denoising of patch tokens in place: x += sigma^2 grad_x log p(x | y). */
int bf_flow_score_denoise(bf_flow *f, float *x_tokens, const int *y, int n, float sigma);
/* The gradient of log p(x | y) (nats) with respect to the patch tokens, (n, T, D). */
int bf_flow_score(bf_flow *f, float *score, const float *x_tokens, const int *y, int n);

/* ------------------------------------------------------------------ training and evaluation */
typedef enum { BF_NOISE_GAUSS, BF_NOISE_UNIFORM } bf_noise;

typedef struct {
    bf_flow_config model;      /* used for a new run; a resumed run keeps its own */
    const char *data;          /* dataset spec (see bf_dataset_load), default "fashion-mnist" */
    const char *out_dir;       /* run folder: checkpoints, log.jsonl */
    int batch, steps, warmup;
    float lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip, ema_decay;
    bf_noise noise;
    float sigma;               /* Gaussian noise std (gauss) */
    float label_drop;          /* probability of training a label as unconditional */
    uint64_t seed;
    int ckpt_every, log_every, eval_every;   /* steps; 0 = only at the end / never */
    int resume;                /* continue from out_dir/train_state.safetensors */
    int quiet;                 /* no progress line */
    int threads;               /* 0 = all cores */
} bf_train_opts;

void bf_train_opts_default(bf_train_opts *o);
/* Trains F by maximum likelihood; returns 0 when the requested steps are done. */
int bf_train_flow(const bf_train_opts *o);

/* Test-split bits/dim with uniform dequantisation (x = (p + u)/128 - 1), as the public code:
 * bpd = (NLL + ln 128) / ln 2, NLL in nats per dimension. limit = 0: whole split. */
int bf_eval_bpd(bf_flow *f, const bf_dataset *ds, int batch, int limit, uint64_t seed,
                double *bpd, int verbose);

/* FLOPs of one training step (forward + backward) of n images, and of a forward pass. */
double bf_flow_train_flops(const bf_flow_config *c, int n);
double bf_flow_forward_flops(const bf_flow_config *c, int n);

/* ---- feature network and Frechet distance */
/* A small convolutional classifier whose penultimate activations serve as image features:
 * conv3x3(C -> width1) ReLU, maxpool 2, conv3x3(width1 -> width1) ReLU,
 * conv3x3(width1 -> width2) ReLU, maxpool 2, conv3x3(width2 -> width2) ReLU,
 * linear(width2 (H/4) (W/4) -> feat_dim) ReLU = the features, linear(feat_dim -> classes). */
typedef struct {
    int in_channels, height, width;   /* input images (C, H, W), H and W >= 4 */
    int width1, width2;               /* channels of the two convolution stages */
    int feat_dim;                     /* F, the feature dimension */
    int num_classes;
} bf_features_config;

typedef struct bf_features bf_features;

/* 1x28x28 images, widths 32 and 64, 128 features, 10 classes */
void bf_features_config_default(bf_features_config *c);
/* path: a .safetensors file, or a train-features run folder (its features.safetensors).
 * Every name, shape and dtype is checked; unknown tensors and non-finite weights are refused. */
bf_features *bf_features_load(const char *path);
/* Writes the weights with the configuration in the metadata; extra_meta_json: a JSON object
 * whose members are added to the metadata (may be NULL). Atomic. */
int bf_features_save(const bf_features *fn, const char *path, const char *extra_meta_json);
void bf_features_free(bf_features *fn);
const bf_features_config *bf_features_get_config(const bf_features *fn);
int bf_features_dim(const bf_features *fn);              /* F */
size_t bf_features_num_params(const bf_features *fn);
/* x (n, C, H, W) in [-1, 1] -> feats (n, F) (may be NULL), pred (n) argmax classes (may be
 * NULL). Any n; the images are spread over the threads. */
int bf_features_extract(bf_features *fn, float *feats, int *pred, const float *x, int n);
/* Class accuracy on the first limit images of ds (limit <= 0: all); *acc in [0, 1]. */
int bf_features_accuracy(bf_features *fn, const bf_dataset *ds, int limit, double *acc);

typedef struct {
    bf_features_config model;  /* in_channels, height, width, num_classes come from the data */
    const char *data;          /* dataset spec (see bf_dataset_load), default "fashion-mnist" */
    const char *out_dir;       /* run folder: features.safetensors, log.jsonl */
    int epochs;                /* passes over the training split */
    int steps;                 /* 0: epochs * ceil(n / batch); else this many steps */
    int batch, warmup;
    float lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip;
    int shift;                 /* random shifts by up to this many pixels (0 = off) */
    int flip;                  /* random horizontal flips */
    uint64_t seed;
    int log_every;             /* steps between progress lines and log records */
    int eval_limit;            /* test images for the final accuracy (0 = all, < 0 = skip) */
    int threads;               /* 0 = all cores */
    int quiet;                 /* no progress lines */
} bf_features_train_opts;

void bf_features_train_opts_default(bf_features_train_opts *o);
/* Trains the feature network by softmax cross-entropy (AdamW, warmup + cosine, clipping,
 * augmentation); writes out_dir/features.safetensors (at every epoch's end and at the end,
 * with the test accuracy in the metadata) and out_dir/log.jsonl. test_accuracy (may be NULL)
 * receives the final test accuracy (-1 when skipped). */
int bf_train_features(const bf_features_train_opts *o, double *test_accuracy);

/* Gaussian statistics of a feature set: mean (F) and covariance (F, F) with the n - 1
 * divisor, in double. */
typedef struct {
    int dim;
    long n;
    double *mean, *cov;
} bf_feature_stats;

/* feats (n, F), n >= 2 */
int bf_feature_stats_compute(bf_feature_stats *s, const float *feats, int n, int F);
void bf_feature_stats_free(bf_feature_stats *s);
/* FD = |mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), in double, matrix square
 * roots from LAPACK's symmetric eigensolver (tiny negative eigenvalues count as 0). */
int bf_frechet_distance_stats(double *fd, const bf_feature_stats *a, const bf_feature_stats *b);
/* feats_a (na, F), feats_b (nb, F) */
int bf_frechet_distance(double *fd, const float *feats_a, int na, const float *feats_b, int nb,
                        int F);

#ifdef __cplusplus
}
#endif
#endif
