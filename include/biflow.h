/* biflow: Bidirectional Normalizing Flows in C.
 * The only public header of libbiflow.
 *
 * Conventions of the API (what bindings, such as the Python package in python/, rely on):
 * - Errors: every function that can fail returns 0 (BF_OK) on success and -1 (BF_ERR) on
 *   failure, or NULL where it returns a pointer; bf_last_error() then says why, in words a
 *   user can act on. The message is per thread (a call in one thread does not overwrite
 *   another thread's). The library never calls exit(). It aborts, after printing why, only
 *   when memory for an internal work buffer runs out or an internal invariant breaks (a bug);
 *   the sizes of models, files and options are checked first and refused with a message.
 * - Handles: bf_flow, bf_reverse, bf_features, bf_st_writer are opaque; each is created by
 *   its _load/_new function and released by its _free function (NULL is accepted). A handle
 *   may be used by one thread at a time; different handles in different threads at once.
 * - Arrays are caller-owned, C order, float32 unless said otherwise; the comment beside each
 *   pointer gives its shape. Images are (n, C, H, W) in [-1, 1]; labels are int, -1 meaning
 *   unconditional (the null class).
 * - The structs in this header are part of the ABI: a change to any of them, or to a
 *   function's signature, raises BF_ABI_VERSION, which is also the N of the shared library's
 *   soname, libbiflow.so.N. bf_sizeof() lets a binding check its copies of the structs. */
#ifndef BIFLOW_H
#define BIFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BF_VERSION "0.1.0"
/* The ABI version: the soname is libbiflow.so.BF_ABI_VERSION. */
#define BF_ABI_VERSION 2
#define BF_OK 0
#define BF_ERR (-1)

/* ------------------------------------------------------------------ versions, threads */
int bf_abi_version(void);                  /* BF_ABI_VERSION of the library as built */
const char *bf_version(void);              /* BF_VERSION of the library as built */
/* sizeof of a public struct named without its bf_ prefix ("flow_config", "sample_opts",
 * "reverse_sample_opts", "sample_stats", "editor", "image_set", "dataset", "feature_stats",
 * "reverse_config", "features_config", "rng"); 0 for another name. */
size_t bf_sizeof(const char *type_name);
/* Threads of the calling thread's subsequent library calls (OpenMP; the setting belongs to
 * the calling thread). n <= 0: the default, $OMP_NUM_THREADS or else every core. */
void bf_set_threads(int n);
int bf_get_threads(void);                  /* threads the calling thread's calls use */

/* ------------------------------------------------------------------ errors, rng */
const char *bf_last_error(void);
void bf_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct { uint64_t s[4]; int has_spare; float spare; } bf_rng;   /* xoshiro256** */
void bf_rng_seed(bf_rng *rng, uint64_t seed);
uint64_t bf_rng_u64(bf_rng *rng);
float bf_rng_uniform(bf_rng *rng);                 /* [0, 1) */
float bf_rng_normal(bf_rng *rng);                  /* N(0, 1) */
uint32_t bf_rng_below(bf_rng *rng, uint32_t n);    /* uniform in [0, n) */
/* out (n) = scale * N(0, 1) from a generator seeded with seed: the noise of `biflow sample
 * --seed S --temperature T` (n = images * T * D, in token layout). */
void bf_fill_normal(float *out, size_t n, uint64_t seed, float scale);
/* Labels y (n) for a model of num_classes classes: each in [-1, num_classes), or -1 for an
 * unconditional model (num_classes 0); y NULL is accepted. -1 with a message naming the first
 * bad label; also for n < 0. */
int bf_labels_check(const int *y, int n, int num_classes);

/* ------------------------------------------------------------------ memory, time */
/* malloc, calloc and realloc that print a message and abort when the memory cannot be had:
 * for sizes the program chooses (sizes read from files or users are checked first). */
void *bf_malloc(size_t n);
void *bf_calloc(size_t n, size_t size);
void *bf_realloc(void *p, size_t n);
double bf_time(void);                              /* seconds, monotonic */

/* ------------------------------------------------------------------ precision */
/* The precision of the matrix products of F and G (their linear layers and attention, in
 * training and in sampling), process-wide. BF_PRECISION_BF16 rounds both operands of every
 * such product to bfloat16 (round to nearest even) and accumulates in fp32 with AVX512-BF16
 * dot products; the weights, AdamW, EMA, LayerNorm, softmax, exp and log-determinants stay
 * fp32, and so do the feature and perceptual networks and the Frechet distance (evaluation
 * does not change with the setting). On a CPU without AVX512-BF16 bf16 falls back to fp32
 * with one line on stderr. The default is fp32, or the environment variable
 * BF_PRECISION=fp32|bf16 read on first use; bf_set_precision overrides it. */
typedef enum { BF_PRECISION_FP32 = 0, BF_PRECISION_BF16 = 1 } bf_precision;
int bf_set_precision(bf_precision p);                  /* -1 for an unknown value */
bf_precision bf_get_precision(void);                   /* the setting */
/* What the products really use: bf16 only when set and the CPU can (BF_GEMM=blas: fp32). */
bf_precision bf_precision_effective(void);
int bf_bf16_supported(void);                           /* 1: the CPU has AVX512-BF16 */
int bf_precision_parse(bf_precision *p, const char *s);   /* "fp32" or "bf16"; -1 otherwise */
const char *bf_precision_name(bf_precision p);         /* "fp32" or "bf16" */

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
/* The same PNG and grid in memory: *out (malloc'ed, *size bytes) holds the encoded file. */
int bf_png_encode(uint8_t **out, size_t *size, const uint8_t *pixels, int h, int w, int c);
int bf_image_grid_png(uint8_t **out, size_t *size, const float *images, int n, int c, int h,
                      int w, int ncols, int scale);
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
/* Draws every block's output projection from N(0, std^2). bf_flow_init zeroes them (F starts
 * as the identity map); this makes a random F that is not, for benchmarks and tests. */
void bf_flow_randomize_heads(bf_flow *f, uint64_t seed, float std);
/* The std of the Gaussian noise F was trained with, as its checkpoint records it (noise
 * "gauss", "sigma"); 0 for F trained with uniform dequantisation, a checkpoint that does not
 * record one, and a new F. The samplers' default noise level of score denoising
 * (`--denoise auto` in the CLI: score denoising exactly when this is > 0). */
float bf_flow_trained_sigma(const bf_flow *f);

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
/* nll (n): each image's negative log-likelihood per dimension in nats, -log p(x | y) / (C H W),
 * for x (n, C, H, W) in [-1, 1] as given (a density: add uniform dequantisation noise to
 * 8-bit images first; bits/dim = (nll + ln 128) / ln 2 then). y (n) or NULL. */
int bf_flow_nll(bf_flow *f, float *nll, const float *x, const int *y, int n);
/* How F was trained (its checkpoint's metadata): 1 with Gaussian noise, its level in *sigma
 * (0 when not recorded); 0 with uniform dequantisation (*sigma = 0). sigma may be NULL. */
int bf_flow_trained_noise(const bf_flow *f, float *sigma);
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
    int overwrite;             /* a new run where out_dir holds one: delete it (else refused) */
    int quiet;                 /* no progress line */
    int threads;               /* 0 = all cores */
} bf_train_opts;

void bf_train_opts_default(bf_train_opts *o);
/* The checks bf_train_flow makes of o before it starts (ranges, model shape): 0, or -1 with a
 * message naming the option ("--beta2 2 is out of range ..."). A caller may run them first to
 * tell a bad option from a failed run. */
int bf_train_flow_check_opts(const bf_train_opts *o);
/* Before resuming the run in o->out_dir from a command line: the options that define the run
 * (seed, noise, sigma, label drop, batch, the model's shape) and steps take the values its
 * checkpoint records, except those named in given (n_given option names without "--", as the
 * user gave them: "seed", "width"; "config" stands for every shape option), which must equal
 * them. config: the --config name, for messages. 0 (also when the folder holds no readable
 * checkpoint: bf_train_flow reports that), or -1 with a message naming the option and both
 * values, or steps below the step reached. */
int bf_train_flow_resume_opts(bf_train_opts *o, const char *config, const char *const *given,
                              int n_given);
/* Trains F by maximum likelihood; returns 0 when the requested steps are done, 1 when
 * stopped by SIGINT or SIGTERM (the state is saved; --resume continues), -1 on error.
 * The three trainers (F, G, the feature network) are data-parallel in a job of several MPI
 * processes (biflow built with MPI, started by mpirun): every process calls them with the
 * same options; the batch is split over the processes, rank 0 writes, and the weights are
 * those of one process with as many threads as the job (README, "Beyond one machine"). */
int bf_train_flow(const bf_train_opts *o);

/* Test-split bits/dim with uniform dequantisation (x = (p + u)/128 - 1), as the public code:
 * bpd = (NLL + ln 128) / ln 2, NLL in nats per dimension. limit = 0: whole split.
 * In a job of several MPI processes (biflow built with MPI, started by mpirun) every process
 * must call it: the images are split over them, and the result, the same on all, is what one
 * process with as many threads as the job computes. */
int bf_eval_bpd(bf_flow *f, const bf_dataset *ds, int batch, int limit, uint64_t seed,
                double *bpd, int verbose);

/* FLOPs of one training step (forward + backward) of n images, and of a forward pass. */
double bf_flow_train_flops(const bf_flow_config *c, int n);
double bf_flow_forward_flops(const bf_flow_config *c, int n);

/* ------------------------------------------------------------------ reverse model G (BiFlow) */
/* G maps noise tokens z = F(x) back to images in one pass: a bidirectional Transformer with
 * adaLN conditioning on the class (row num_classes of the class table is the null class) and,
 * when trained with guidance, on the guidance scale w. Its layers form num_stages alignment
 * stages (one per block of F, walked from the noise end), each ending in a projection head to
 * token space, then an optional denoising stage whose head gives the clean image. */
typedef enum { BF_INVERSE_ALIGN, BF_INVERSE_NAIVE, BF_INVERSE_DISTILL } bf_inverse_kind;

typedef struct {
    int img_size, in_channels, patch_size;   /* as F */
    int num_classes;           /* as F; 0 = unconditional */
    int num_stages;            /* alignment stages = F's blocks */
    int channels;              /* width W */
    int head_dim;
    int layers_per_stage;
    int denoise_layers;        /* layers of the denoising stage; 0 = no learned denoising */
    int guidance_embed;        /* 1: w is an input (training-time guidance, 1 NFE) */
    int w_freq;                /* sinusoidal features of w */
    int distill;               /* hidden distillation: each stage re-embedded from token space */
} bf_reverse_config;

/* Which head sampling reads: the learned clean output, or the last alignment stage's
 * estimate of the noisy data x~ (for "no denoising" and for score-based denoising). */
typedef enum { BF_REVERSE_OUT_CLEAN, BF_REVERSE_OUT_NOISY } bf_reverse_output;

typedef struct bf_reverse bf_reverse;
/* A default G for a forward model: width, heads and depth chosen so that G's parameter count
 * is close to F's (see docs). */
void bf_reverse_config_for_flow(bf_reverse_config *rc, const bf_flow_config *fc);
int bf_reverse_config_check(const bf_reverse_config *rc);
bf_reverse *bf_reverse_new(const bf_reverse_config *rc);
void bf_reverse_init(bf_reverse *r, uint64_t seed);
void bf_reverse_free(bf_reverse *r);
const bf_reverse_config *bf_reverse_get_config(const bf_reverse *r);
size_t bf_reverse_num_params(const bf_reverse *r);
float *bf_reverse_params(bf_reverse *r);
/* The forward model the reverse model was trained against: the file and its SHA-256 (hex). */
const char *bf_reverse_flow_path(const bf_reverse *r);
const char *bf_reverse_flow_sha256(const bf_reverse *r);
float bf_reverse_sigma(const bf_reverse *r);           /* F's training noise, 0 if unknown */
/* Records the forward model (its resolved file and SHA-256) and sigma in r. */
int bf_reverse_set_flow(bf_reverse *r, const char *flow_path, float sigma);
/* Refuses (-1, with a message naming both files) a forward model whose file is not the one G
 * was trained against, or whose shapes differ. flow_path: a file or a run folder. */
int bf_reverse_check_flow(const bf_reverse *r, const bf_flow *f, const char *flow_path);
/* out (n bytes): the forward model r records, found: the recorded path or, when that does
 * not exist (recorded relative to where G was trained, or G moved with its F), the file of
 * the same name in reverse_path's folder (G's file or run folder; may be NULL). -1 when r
 * records none or the path does not fit. */
int bf_reverse_find_flow(const bf_reverse *r, const char *reverse_path, char *out, size_t n);
/* The forward model paired with r, loaded (EMA weights of a run folder) and checked with
 * bf_reverse_check_flow: flow_path when not NULL, else the one bf_reverse_find_flow finds. */
bf_flow *bf_reverse_load_flow(const bf_reverse *r, const char *flow_path,
                              const char *reverse_path);
/* SHA-256 of a file as 64 hex digits + NUL. */
int bf_sha256_file(char hex[65], const char *path);
/* The file a model path names: a run folder's EMA (use_ema) or raw checkpoint, else path. */
int bf_resolve_model_path(char *out, size_t n, const char *path, const char *ema_name,
                          const char *raw_name, int use_ema);

/* Checkpoints: safetensors with the configuration and the forward model's path and SHA-256
 * in the metadata. path: a file, or a run folder (reverse_ema / reverse.safetensors). */
bf_reverse *bf_reverse_load(const char *path, int use_ema);
int bf_reverse_save(const bf_reverse *r, const float *params, const char *path,
                    const char *extra_meta_json);
/* Writes G (reverse: a file or run folder; its EMA weights when use_ema) as the one file out,
 * pointing at its forward model's new location flow, which must be the very file G was
 * trained against (same SHA-256) and shapes. The folder of out is locked while it is written
 * (a trainer's lock: refused while another process holds it). */
int bf_reverse_export(const char *reverse, int use_ema, const char *flow, const char *out);

/* One-pass sampling: z (n, T, D) noise tokens, y (n) labels (-1 or NULL: unconditional),
 * x (n, C, H, W). cfg: guidance w. A model with a guidance input takes w as an input
 * (1 NFE) unless cfg_two_pass; otherwise guidance is (1 + w) G(z | y) - w G(z | null)
 * (2 NFE). */
typedef struct {
    float cfg;
    int cfg_two_pass;          /* inference-time guidance even when w is an input */
    bf_reverse_output output;
    int batch;                 /* images per pass per thread (0 = 32) */
    bf_flow *score_flow;       /* non-NULL: score-based denoising of the output with this F */
    float sigma;               /* its noise level */
} bf_reverse_sample_opts;
void bf_reverse_sample_opts_default(bf_reverse_sample_opts *o);
int bf_reverse_sample(bf_reverse *r, float *x, const float *z, const int *y, int n,
                      const bf_reverse_sample_opts *o, bf_sample_stats *stats);
/* Patch tokens out (n, T, D) instead of images. */
int bf_reverse_decode_tokens(bf_reverse *r, float *out, const float *z, const int *y, int n,
                             const bf_reverse_sample_opts *o);
/* FLOPs of one forward pass of G on n images. */
double bf_reverse_forward_flops(const bf_reverse_config *c, int n);

/* Norm control of hidden alignment (METHOD Section 5): BF_NORM_TOKEN divides the target state
 * and the head's output, token by token, by the target token's RMS (stop-gradient), so every
 * token of every depth weighs the same; BF_NORM_SAMPLE divides each image's distance by the
 * target's mean square (a scalar per image, which adaptive weighting cancels: kept for
 * comparison); BF_NORM_OFF: plain distances. */
enum { BF_NORM_OFF = 0, BF_NORM_SAMPLE = 1, BF_NORM_TOKEN = 2 };

/* Training G against a frozen F (METHOD Sections 5 to 7). */
typedef struct {
    const char *flow;          /* forward model: file or run folder (EMA weights) */
    const char *data, *out_dir;
    bf_reverse_config model;   /* shape of a new G (img/patch/classes/stages come from F) */
    int batch, steps, warmup;
    float lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip, ema_decay;
    float sigma;               /* noise on x before F; < 0: F's training sigma */
    float label_drop;
    bf_inverse_kind inverse;
    int norm_control;          /* BF_NORM_*: how alignment states are normalised */
    float adapt_p, adapt_eps;  /* adaptive weighting D / sg((D + eps)^p); p = 0: off */
    float align_weight;        /* lambda of every alignment stage */
    int cfg_train;             /* training-time guidance: w per example, implied conditional */
    float w_max;
    float perceptual;          /* weight of the perceptual distance on G's output (0 = off) */
    const char *features;      /* the feature network it uses */
    float class_weight;        /* cross-entropy of that network's classifier on G's output vs the
                                  label (0 = off; needs perceptual > 0) */
    const char *init;          /* a new run starts from this G's weights (file or run folder,
                                  EMA), its shape; NULL: fresh weights */
    uint64_t seed;
    int ckpt_every, log_every, eval_every;
    int resume, quiet, threads;
    int overwrite;             /* a new run where out_dir holds one: delete it (else refused) */
} bf_reverse_train_opts;

void bf_reverse_train_opts_default(bf_reverse_train_opts *o);
/* The checks bf_train_reverse makes of o before it starts: 0, or -1 naming the option. */
int bf_train_reverse_check_opts(const bf_reverse_train_opts *o);
/* As bf_train_flow_resume_opts, for G: the loss, guidance, noise, seed and batch options, G's
 * shape, F (o->flow, when NULL) and steps take the recorded values unless given. A "denoise"
 * in given means o->model.denoise_layers was set by it (0: none, else learned). Strings taken
 * from the record (flow, features) are malloc'ed: the caller frees those that differ from
 * its own. 0; -1 with a message (an option that conflicts with the record); -2 with a message
 * when the record cannot be read and o->flow was not given (F has to come from it). */
int bf_train_reverse_resume_opts(bf_reverse_train_opts *o, const char *const *given, int n_given);
/* Returns 0 when the steps are done, 1 when stopped by a signal (state saved), -1 on error. */
int bf_train_reverse(const bf_reverse_train_opts *o);

/* Inverse fidelity: G(F(x~)) vs clean x over the first n test images (x~ = x + sigma eps;
 * sigma = 0: F of the clean image), with labels; mse over pixels in [-1, 1] and
 * psnr = 10 log10(4 / mse) (peak-to-peak 2). */
int bf_reverse_eval_recon(bf_reverse *r, bf_flow *f, const bf_dataset *ds, int n, float sigma,
                          uint64_t seed, double *mse, double *psnr);

/* ------------------------------------------------------------------ training curves */
typedef struct {
    const char *keys;          /* comma-separated series names; NULL or "": the default set
                                * (loss, bpd or nll, eval_bpd_ema, every other eval_* key) */
    int log_y;                 /* logarithmic y axis; values <= 0 are skipped */
    int panel_w, panel_h;      /* pixels per panel (default 640 x 240) */
    int cols;                  /* panels per row (default 1: stacked vertically) */
} bf_plot_opts;

typedef struct {
    int panels;
    long records;              /* log lines drawn from: a "step" and at least one number */
    long malformed;            /* lines that are not JSON objects (skipped) */
    long skipped;              /* values not drawn: NaN, Inf, null; <= 0 with log_y */
} bf_plot_stats;

void bf_plot_opts_default(bf_plot_opts *o);
/* Renders the numeric series of JSON-lines training logs (records {"step": N, "key": value,
 * ...}) against step to one PNG: a panel per series, all on the same steps, the logs overlaid
 * in distinct colours with a legend of file names and each one's last, smallest and largest
 * value (as room allows). A log may be given as its run folder. Malformed lines are skipped
 * with one warning per file; a log without any usable record is refused, and so is a key that
 * no log holds (the message lists those they do). stats may be NULL. */
int bf_plot_logs(const char *out_png, const char *const *logs, int n_logs, const bf_plot_opts *o,
                 bf_plot_stats *stats);

/* ------------------------------------------------------------------ editing with G */
/* Applications of METHOD Section 9: encode images with F, change the noise, decode with G in
 * one pass. Tokens are the P x P patches of an H x H image in raster order, T = (H / P)^2; a
 * token mask holds T bytes, 1 = known (kept from the encoding), 0 = unknown (regenerated). */

/* Decodes a PNG or JPEG file to (c, h, w) uint8, c = 1 or 3 (alpha dropped); *pixels is
 * malloc'ed. */
int bf_read_image(uint8_t **pixels, int *c, int *h, int *w, const char *path);
/* The same from memory (len bytes of a PNG or JPEG file), converted to `channels` (1 or 3:
 * grey <-> RGB by luminance, alpha dropped): *pixels (channels, h, w) uint8, malloc'ed. Damaged,
 * truncated or oversized data (more than 16384 pixels a side) are refused with a message. */
int bf_decode_image(uint8_t **pixels, int channels, int *h, int *w, const uint8_t *buf,
                    size_t len);

/* Token mask (T) from spec, which names the KNOWN region: left-half, right-half, top-half,
 * bottom-half (floor(g/2) of the g token columns or rows, so an odd grid's middle column or
 * row is unknown in both halves), center (a central square of about half the side, centred
 * exactly), border (the inverse of center), random-patches[:FRACTION[:SEED]] (round(FRACTION
 * T) tokens, default 0.5, seed 0), or a .png/.jpg file of the image size, white = known (a
 * token is known when most of its pixels have a channel mean >= 128). */
int bf_mask_parse(uint8_t *mask, const char *spec, int img_size, int patch_size);
/* pix (H, W): each pixel takes its token's value in mask (T). */
void bf_mask_pixels(uint8_t *pix, const uint8_t *mask, int img_size, int patch_size);
/* Sets the unknown pixels of x (n, C, H, W) to fill (0: grey), for display or encoding. */
void bf_mask_fill(float *x, const uint8_t *mask, float fill, int n, int c, int img_size,
                  int patch_size);
/* z (n, T, D) = M * zx + (1 - M) * eps per token: known tokens are the encoding zx (n, T, D)
 * bit for bit, unknown ones the fresh noise eps (n, T, D). */
void bf_inpaint_mix(float *z, const float *zx, const float *eps, const uint8_t *mask, int n,
                    int T, int D);
/* Mean squared error of a against b, both (n, C, H, W), over the pixels of known tokens and
 * over those of unknown ones (NAN for an empty region). */
void bf_mask_mse(double *known, double *unknown, const float *a, const float *b,
                 const uint8_t *mask, int n, int c, int img_size, int patch_size);
/* Pixel masks (H, W), 1 = known: the same names as bf_mask_parse on the pixel grid
 * (left-half: the floor(H/2) left pixel columns; center: a central square of about half the
 * side; random-patches: whole tokens), or a .png/.jpg file of the image size, white (channel
 * mean >= 128) = known, pixel for pixel. A token is known in bf_mask_parse when most of its
 * pixels are. */
int bf_mask_parse_pixels(uint8_t *pix, const char *spec, int img_size, int patch_size);
/* Token weights m (T) in [0, 1] of a pixel mask pix (H, W): the fraction of each token's
 * pixels that are known; soft in [0, 1] blends each weight with the mean over its 3 x 3
 * token neighbourhood by that much (a soft boundary; 0: none). */
void bf_mask_token_weights(float *m, const uint8_t *pix, int img_size, int patch_size,
                           float soft);
/* x (n, C, H, W): unknown pixels of pix (H, W) set to fill. */
void bf_pixmask_fill(float *x, const uint8_t *pix, float fill, int n, int c, int img_size);
/* x (n, C, H, W): known pixels of pix (H, W) copied from src (n, C, H, W), bit for bit. */
void bf_pixmask_paste(float *x, const float *src, const uint8_t *pix, int n, int c,
                      int img_size);
/* Mean squared error of a against b, both (n, C, H, W), over the known and over the unknown
 * pixels of pix (H, W) (NAN for an empty region). */
void bf_pixmask_mse(double *known, double *unknown, const float *a, const float *b,
                    const uint8_t *pix, int n, int c, int img_size);
/* z (n, T, D) = sqrt(1 - q^2) zx + q eps per token, q = (1 - m_t) r, with token weights m (T):
 * known tokens (m = 1) are zx bit for bit, unknown ones (m = 0) the fresh noise eps at r = 1,
 * a partial renoising of zx at r < 1; the variance of unit-variance inputs is kept. */
void bf_inpaint_mix_soft(float *z, const float *zx, const float *eps, const float *m, float r,
                         int n, int T, int D);
/* Spherical interpolation (slerp) on the great circle through a and b (m values each):
 * out = a at t = 0, b at t = 1; a straight line when they are (anti)parallel or zero. */
void bf_slerp(float *out, const float *a, const float *b, size_t m, double t);

/* Images in (to edit, to score): x (n, c, h, w) in [-1, 1], y (n) labels, -1 where none is
 * known. */
typedef struct { int n, c, h, w; float *x; int *y; } bf_image_set;
/* spec: a .npy (bf_image_set_load_npy), a .png/.jpg file (one image), or a dataset spec
 * (bf_dataset_load; its test split, with labels). limit > 0 keeps the first limit images. */
int bf_image_set_load(bf_image_set *s, const char *spec, int limit);
/* The one .npy image reader: uint8 pixels, or float32/float64 in [-1, 1] (a little slack for
 * rounding, clamped; other values are refused), of shape (n, H, W) (one channel) or
 * (n, C, H, W); channels-last (n, H, W, C) is not read. Labels -1. */
int bf_image_set_load_npy(bf_image_set *s, const char *path, int limit);
/* s->y from a .npy of int64 or int32 labels (m) with m >= s->n: the first s->n of them. */
int bf_image_set_load_labels(bf_image_set *s, const char *path);
void bf_image_set_free(bf_image_set *s);
/* y (n): the label under which F gives each image x (n, C, H, W) the highest likelihood
 * (num_classes encodings per image); -1 for an unconditional F. */
int bf_flow_classify(bf_flow *f, int *y, const float *x, int n);

typedef struct bf_features bf_features;   /* the feature network (below) */

/* A model pair and how to decode. */
typedef struct {
    bf_reverse *reverse;       /* G */
    bf_flow *flow;             /* F */
    const char *flow_path;     /* where F was loaded from, checked against the F G records */
    float cfg;                 /* guidance w of G (of F with exact) */
    int denoise;               /* 1: G's learned denoising stage (exact: score-based
                                  denoising); 0: its noisy-data estimate (exact: none) */
    int exact;                 /* 1: decode with the exact inverse of F instead of G (the
                                  baseline, 4 x (T - 1) sequential steps) */
} bf_editor;
/* cfg 0, G, learned denoising when G has the stage. */
void bf_editor_init(bf_editor *e, bf_reverse *r, bf_flow *f, const char *flow_path);
/* Refuses a mismatched model pair (bf_reverse_check_flow's message) and images (c, h, w)
 * of another size than the models' (the message names both sizes). */
int bf_editor_check(const bf_editor *e, int c, int h, int w);

/* Inpainting (METHOD Section 9, made iterative). Round 0: x0 = the input with its unknown
 * pixels grey (the whole input with encode_full), z = M F(x0 | y) + (1 - M) eps with soft token
 * weights M of the pixel mask (bf_inpaint_mix_soft, r = 1), x' = decode(z | y). Rounds 1..iters:
 * x_k = x' with the known pixels pasted back from the input, z = F(x_k | y) with the unknown
 * tokens renoised by r = renoise, x' = decode(z | y). The result is the last x' with the known
 * pixels pasted back: they are the input's, bit for bit. */
typedef struct {
    int iters;                 /* K: rounds of paste, re-encode and decode after the first */
    float renoise;             /* r of rounds 1..K in [0, 1]: fresh noise in the unknown tokens */
    float soft;                /* soft boundary of the token weights (bf_mask_token_weights) */
    int candidates;            /* noise draws decoded per round; each image keeps the one whose
                                  decode agrees best with its known pixels (<= 1: one draw) */
    int encode_full;           /* round 0 encodes the whole input (leaks the unknown region) */
    uint64_t seed;             /* of the noise */
} bf_inpaint_opts;
/* iters 3, candidates 4, renoise 1, soft 0, masked encoding, seed 0 (the measured choice,
 * docs/RESULTS-edit.md); iters 0 and candidates 1 is the one-pass scheme plus the paste */
void bf_inpaint_opts_default(bf_inpaint_opts *o);
/* out (n, C, H, W); raw (n, C, H, W) or NULL: the last decode before the paste; pix (H, W)
 * the pixel mask, 1 = known; o NULL: the defaults. */
int bf_inpaint(const bf_editor *e, float *out, float *raw, const bf_image_set *in,
               const uint8_t *pix, const bf_inpaint_opts *o);
/* Class editing: out (n, k, C, H, W), image i's edit to targets[j] at (i, j). A pass decodes
 * z = F(x | t) + s (F(x | y) - F(x | t)) as class t: s = 1 is METHOD Section 9's edit
 * (F(x | y) decoded as t); s = 0 decodes x's own encoding under t (nothing changes with the
 * exact inverse). A strength above 1 makes more passes, each editing the previous pass's
 * result again (re-encoded under the source label y), the last with the fractional part as its
 * s: strength 2.5 is two full passes and a half one. With a verifier, each edit takes the first
 * strength of the ladder min_strength, min_strength + 0.25, ..., strength whose image the
 * verifier classifies as the target (the gentlest edit that reads as the target class), the
 * last one otherwise. The verifier must not be the evaluation network (refused by its
 * architecture), so that the evaluation stays an independent yardstick. */
typedef struct {
    float strength;            /* in [0, 16]; 1 by default */
    float min_strength;        /* the ladder's first rung, in [0, strength] (verifier only) */
    bf_features *verify;       /* NULL: the strength itself */
} bf_edit_opts;
void bf_edit_opts_default(bf_edit_opts *o);
/* o NULL: the defaults (strength 1, no verifier). */
int bf_edit_class(const bf_editor *e, float *out, const bf_image_set *in, const int *targets,
                  int k, const bf_edit_opts *o);
/* Reconstruction: out (n, C, H, W) = G(F(x | y) | y). */
int bf_reconstruct(const bf_editor *e, float *out, const bf_image_set *in);
/* Interpolation: out (steps, C, H, W) = G(slerp(F(x_a | y), F(x_b | y), t) | y) for
 * t = 0, 1/(steps-1), ..., 1, with x_a, x_b the images ia, ib of in; angle (may be NULL): the
 * angle between the two encodings in radians. */
int bf_interpolate(const bf_editor *e, float *out, const bf_image_set *in, int ia, int ib,
                   int y, int steps, double *angle);
/* ---- feature network and Frechet distance */
/* A small convolutional classifier whose penultimate activations serve as image features.
 * BF_FEAT_ARCH_FD (the evaluation network of the Frechet distance):
 *   conv3x3(C -> width1) ReLU, maxpool 2, conv3x3(width1 -> width1) ReLU,
 *   conv3x3(width1 -> width2) ReLU, maxpool 2, conv3x3(width2 -> width2) ReLU,
 *   linear(width2 (H/4) (W/4) -> feat_dim) ReLU = the features, linear(feat_dim -> classes).
 * BF_FEAT_ARCH_PERCEPTUAL (the perceptual network of G's training, never used to evaluate):
 *   VGG-like, two full-resolution convolutions before the first pooling:
 *   conv3x3(C -> width1) ReLU, conv3x3(width1 -> width1) ReLU, maxpool 2,
 *   conv3x3(width1 -> width2) ReLU, conv3x3(width2 -> width2) ReLU, maxpool 2,
 *   conv3x3(width2 -> width2) ReLU, linear(-> feat_dim) ReLU, linear(feat_dim -> classes). */
enum { BF_FEAT_ARCH_FD = 0, BF_FEAT_ARCH_PERCEPTUAL = 1 };
typedef struct {
    int in_channels, height, width;   /* input images (C, H, W), H and W >= 4 */
    int width1, width2;               /* channels of the two convolution stages */
    int feat_dim;                     /* F, the feature dimension */
    int num_classes;
    int arch;                         /* BF_FEAT_ARCH_*; 0 in files that do not name one */
} bf_features_config;


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
 * NULL). The images are scored as a user gets them: clamped to [-1, 1] and quantised to 8
 * bits as bf_images_to_u8 saves them. Any n; the images are spread over the threads. */
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
    int overwrite;             /* out_dir holds a run: delete it (else refused) */
} bf_features_train_opts;

void bf_features_train_opts_default(bf_features_train_opts *o);
/* Trains the feature network by softmax cross-entropy (AdamW, warmup + cosine, clipping,
 * augmentation); writes out_dir/features.safetensors (at every epoch's end and at the end,
 * with the test accuracy in the metadata) and out_dir/log.jsonl. test_accuracy (may be NULL)
 * receives the final test accuracy (-1 when skipped). */
int bf_train_features(const bf_features_train_opts *o, double *test_accuracy);
/* The checks bf_train_features makes of o before it starts: 0, or -1 naming the option. */
int bf_train_features_check_opts(const bf_features_train_opts *o);

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

/* ------------------------------------------------------------------ processes (MPI) */
/* Data-parallel processes (src/core/dist.c): with biflow built with MPI and started by mpirun
 * (or srun) the job is several processes; otherwise, and before bf_dist_init, it is this one
 * process (rank 0 of 1). Functions marked collective must be called by every process of the
 * job, in the same order, from the main thread. */
/* 1 when the library was built with MPI (-DBF_MPI). */
int bf_dist_built_with_mpi(void);
/* Starts MPI when this process was started by a launcher and the build has MPI; otherwise
 * nothing. 0, or -1 with a message. */
int bf_dist_init(int *argc, char ***argv);
void bf_dist_finalize(void);
int bf_dist_rank(void);
int bf_dist_size(void);
static inline int bf_dist_is_root(void) { return bf_dist_rank() == 0; }
/* Collective: rc of every process (0: fine). 0 when all are 0; else -1 everywhere, with the
 * message of the lowest failing rank R: its own on R, "rank R of N: MESSAGE" elsewhere, where
 * bf_dist_error_elsewhere() then says 1 (R reports it; the others stay quiet). */
int bf_dist_check(int rc);
int bf_dist_error_elsewhere(void);
/* Collective: v (count, k) doubles, rows [begin(r), begin(r + 1)) filled by rank r, where
 * begin(r) = count * r / size: afterwards every row, everywhere. */
void bf_dist_gather_rows(double *v, int count, int k);
/* Rows [*r0, *r1) of rank r when count rows are split over the job's processes in whole
 * units of `unit` rows (the last may be short). */
void bf_dist_span(int count, int unit, int r, int *r0, int *r1);
/* Collective: buf (count, row_bytes), each rank's rows (bf_dist_span) gathered on rank 0 (the
 * other ranks' buffers are left alone). */
void bf_dist_gather_root(void *buf, int count, int unit, size_t row_bytes);

/* ------------------------------------------------------------------ benchmarks */
/* The matrix-product kernels a benchmark can time: OpenBLAS's sgemm, biflow's own fp32 kernel
 * (OpenBLAS where bf_gemm_native is 0), its bf16 product as bf_gemm routes it (fp32 where the
 * CPU lacks AVX512-BF16; AMX tiles where the CPU has them and the shape is large enough), and
 * each of its two bf16 kernels alone: AVX512-BF16 dot products, and AMX-BF16 tiles (the
 * AVX512-BF16 kernel where bf_gemm_amx is 0). */
typedef enum {
    BF_BENCH_GEMM_BLAS, BF_BENCH_GEMM_F32, BF_BENCH_GEMM_BF16, BF_BENCH_GEMM_BF16_AVX512,
    BF_BENCH_GEMM_BF16_AMX
} bf_bench_gemm_kernel;
/* 1 when bf16 products can use AMX-BF16 tiles on this CPU (and BF_AMX=off does not forbid it). */
int bf_gemm_amx(void);
/* 1 when biflow's fp32 kernel is its own (AVX-512), 0 when it calls OpenBLAS. */
int bf_gemm_native(void);
/* GFLOP/s of C += A B^T with A (M, K), B (N, K), timed over whole calls for at least
 * seconds (after one untimed call). */
double bf_bench_gemm(bf_bench_gemm_kernel kernel, int M, int N, int K, double seconds);
/* The same for C += op(A) op(B) with op chosen by ta, tb as in the linear layers: (0, 1) the
 * forward product, (0, 0) the input's gradient, (1, 0) the weights' gradient. */
double bf_bench_gemm_t(bf_bench_gemm_kernel kernel, int ta, int tb, int M, int N, int K, double seconds);

typedef struct {
    int shards;                /* batch shards of the training step (threads, at most batch; under
                                * mpirun all the processes' shards) */
    double seconds;            /* the timed steps as bf_train_flow takes them */
    double unsharded_seconds;  /* the same steps with every kernel parallel over the batch (in a
                                * job of several processes not measured: 0) */
} bf_bench_train_result;
/* Times training steps of F on random data (fixed seed) as bf_train_flow takes them: forward
 * and backward with the batch split over the threads (and over the job's processes under
 * mpirun: collective, every process calls it with the same arguments), gradient norm and clipping, AdamW (the
 * library's, with bf_train_opts_default's settings) and EMA; then the same steps with one
 * forward and backward over the whole batch, for comparison. warmup untimed steps first,
 * each time. Changes f's weights. */
int bf_bench_train_steps(bf_flow *f, int batch, int steps, int warmup, bf_bench_train_result *r);
/* The same, with the time in the gradient reduction of the timed (sharded) steps: red[0] their
 * seconds summing and passing on the shards' gradients, red[1] the shortest of one step,
 * red[2] the seconds waiting for the slowest process to reach the reduction (0 in one process). */
int bf_bench_train_steps_reduce(bf_flow *f, int batch, int steps, int warmup, bf_bench_train_result *r,
                                double red[3]);

typedef struct {
    double seconds;            /* the timed steps */
    int shards;                /* batch shards of a step (threads, at most batch) */
    size_t params, flow_params;   /* G's and F's parameter counts */
    double flops_per_step;     /* matrix-product FLOPs of a step: F's forward, G's forward (twice
                                * with training-time guidance) and backward; the perceptual
                                * network's not counted */
    double loss;               /* the last step's */
} bf_bench_train_reverse_result;
/* Times G's training step as bf_train_reverse takes it (o as for it: F, data, perceptual
 * network, batch, threads as set by the caller), without a run folder, log or evaluation:
 * warmup untimed steps, then steps timed. G starts from fresh weights (or o->init). */
int bf_bench_train_reverse(const bf_reverse_train_opts *o, int steps, int warmup,
                           bf_bench_train_reverse_result *res);

#ifdef __cplusplus
}
#endif
#endif
