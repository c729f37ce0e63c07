/* biflow serve: the API handlers. Each checks its parameters (serve_args.c), takes the model
 * lock around the computation only, and answers a PNG (the time the models took in the
 * X-Biflow-Seconds and X-Biflow-Ms-Per-Image headers) or JSON. The images a request edits are
 * test images named by index or a PNG in the request body: never a path. */
#include "serve.h"
#include "serve_page.h"   /* SERVE_PAGE: generated from tools/serve_page.html by the Makefile */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ shared pieces */
/* n images (n, C, H, W) as one PNG grid of ncols columns, with the compute time. */
static void images_reply(const serve_ctx *s, serve_reply *out, const float *x, int n, int ncols,
                         double seconds) {
    uint8_t *png;
    size_t size;
    if (bf_image_grid_png(&png, &size, x, n, s->C, s->img, s->img, ncols, 1)) {
        reply_error(out, 500, "cannot encode the images: %s", bf_last_error());
        return;
    }
    reply_take(out, 200, "image/png", png, size);
    reply_header(out, "X-Biflow-Seconds", "%.6f", seconds);
    reply_header(out, "X-Biflow-Ms-Per-Image", "%.4f", 1e3 * seconds / n);
}

/* n noise tensors (n, T, D) of the prior from seed, scaled by the temperature. */
static float *noise(const serve_ctx *s, uint64_t seed, int n, float temperature) {
    float *z = bf_malloc(sizeof(float) * n * s->N);
    bf_fill_normal(z, n * s->N, seed, temperature);   /* the noise of `biflow sample --seed` */
    return z;
}

/* Decodes the noise z with G in one pass (its learned denoising when it has the stage) or,
 * exact, with the exact inverse of F by cached causal decoding, score-denoised when F was
 * trained with Gaussian noise (as `biflow sample` does by default). The models' lock is held
 * for the call: one computation at a time. */
static int decode(serve_ctx *s, int exact, float *x, const float *z, const int *y, int n, float w,
                  double *seconds) {
    bf_reverse_sample_opts ro;
    bf_reverse_sample_opts_default(&ro);
    ro.cfg = w;
    ro.output = bf_reverse_get_config(s->r)->denoise_layers ? BF_REVERSE_OUT_CLEAN : BF_REVERSE_OUT_NOISY;
    bf_sample_opts fo;
    bf_sample_opts_default(&fo);
    fo.cfg = w;
    fo.sigma = bf_flow_trained_sigma(s->f);
    fo.denoise = fo.sigma > 0.0f;
    bf_sample_stats st = {0};
    pthread_mutex_lock(&s->lock);
    int rc = exact ? bf_flow_sample(s->f, x, z, y, n, &fo, &st) : bf_reverse_sample(s->r, x, z, y, n, &ro, &st);
    pthread_mutex_unlock(&s->lock);
    *seconds = st.seconds;
    return rc;
}

static int test_index(serve_ctx *s, const serve_req *q, serve_reply *out, const char *name,
                      int def, int *i) {
    if (s->test.n == 0) {
        reply_error(out, 503, "no test images are loaded (%s)", s->test_error);
        return -1;
    }
    return arg_int(q, out, name, def, 0, s->test.n - 1, i);
}

/* Test image i as floats (C, H, W) in [-1, 1]. */
static void test_floats(const serve_ctx *s, int i, float *x) {
    const uint8_t *p = s->test.pixels + (size_t)i * s->px;
    for (size_t k = 0; k < s->px; k++) x[k] = p[k] / 127.5f - 1.0f;
}

/* An uploaded PNG of the models' size to floats (C, H, W); the size is read from the header
 * and checked before anything is decoded. */
static int upload_floats(const serve_ctx *s, const serve_req *q, serve_reply *out, float *x) {
    uint32_t w, h;
    if (png_header_size(q->body, q->body_size, &w, &h)) {
        reply_error(out, 415, "the request body is not a PNG image (%zu bytes)", q->body_size);
        return -1;
    }
    if (w != (uint32_t)s->img || h != (uint32_t)s->img) {
        reply_error(out, 400, "the uploaded PNG is %ux%u pixels; the models take %dx%d", w, h,
                    s->img, s->img);
        return -1;
    }
    int ih, iw;
    uint8_t *px;
    if (bf_decode_image(&px, s->C, &ih, &iw, q->body, q->body_size)) {
        reply_error(out, 400, "the uploaded PNG cannot be decoded: %s", bf_last_error());
        return -1;
    }
    for (size_t k = 0; k < s->px; k++) x[k] = px[k] / 127.5f - 1.0f;   /* planes (C, H, W) */
    free(px);
    return 0;
}

/* The one image an editing request works on: the uploaded PNG (the body) or test image
 * `index`. Its label: `class` if given, else the test label, else the class under which F
 * finds the image likeliest. */
static int input_image(serve_ctx *s, const serve_req *q, serve_reply *out, bf_image_set *in) {
    int cls, idx;
    if (arg_class(q, out, "class", s->K, 0, -1, &cls)) return -1;
    if (q->body_size && arg_get(q, "index")) {
        reply_error(out, 400, "give an uploaded PNG or a test image index, not both");
        return -1;
    }
    *in = (bf_image_set){1, s->C, s->img, s->img, bf_malloc(sizeof(float) * s->px), bf_malloc(sizeof(int))};
    in->y[0] = -1;
    if (q->body_size ? upload_floats(s, q, out, in->x) : test_index(s, q, out, "index", 0, &idx)) {
        bf_image_set_free(in);
        return -1;
    }
    if (!q->body_size) {
        test_floats(s, idx, in->x);
        in->y[0] = s->test.labels[idx];
    }
    if (cls >= 0) in->y[0] = cls;
    if (in->y[0] < 0 && s->K) {
        pthread_mutex_lock(&s->lock);
        bf_flow_classify(s->f, in->y, in->x, 1);
        pthread_mutex_unlock(&s->lock);
    }
    return 0;
}

static void editor(serve_ctx *s, bf_editor *e, float w) {
    bf_editor_init(e, s->r, s->f, s->flow_path);   /* each call checks F's SHA-256 again */
    e->cfg = w;
}

/* ------------------------------------------------------------------ the page and /api/info */
void serve_page(serve_ctx *s, const serve_req *q, serve_reply *out) {
    size_t n = sizeof SERVE_PAGE - 1;
    uint8_t *b = bf_malloc(n);
    memcpy(b, SERVE_PAGE, n);
    reply_take(out, 200, "text/html; charset=utf-8", b, n);
}

/* A number of a model's object in /api/info. */
typedef struct { const char *key; double value; } json_number;

/* A model's object: what F and G both have (file, parameter count, width and head size of
 * their Transformers), then the numbers of its own configuration. */
static cJSON *model_json(const char *file, size_t params, int width, int head_dim,
                         const json_number *nums, size_t n) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", file);
    cJSON_AddNumberToObject(j, "parameters", (double)params);
    cJSON_AddNumberToObject(j, "width", width);
    cJSON_AddNumberToObject(j, "head_dim", head_dim);
    for (size_t i = 0; i < n; i++) cJSON_AddNumberToObject(j, nums[i].key, nums[i].value);
    return j;
}

/* The models' objects of /api/info, "flow" and "reverse": file, parameter count, configuration. */
static void add_models(cJSON *info, const serve_ctx *s) {
    const bf_flow_config *fc = bf_flow_get_config(s->f);
    const bf_reverse_config *rc = bf_reverse_get_config(s->r);
    const json_number flow[] = {
        {"img_size", fc->img_size},
        {"channels", fc->in_channels},
        {"patch_size", fc->patch_size},
        {"tokens", s->T},
        {"token_dim", s->D},
        {"blocks", fc->num_blocks},
        {"layers_per_block", fc->layers_per_block},
        {"classes", fc->num_classes},
        {"bound", fc->bound},
        {"sigma", bf_flow_trained_sigma(s->f)},
    };
    const json_number reverse[] = {
        {"stages", rc->num_stages},
        {"layers_per_stage", rc->layers_per_stage},
        {"denoise_layers", rc->denoise_layers},
    };
    cJSON *r = model_json(s->reverse_name, bf_reverse_num_params(s->r), rc->channels, rc->head_dim, reverse,
                          sizeof reverse / sizeof reverse[0]);
    cJSON_AddBoolToObject(r, "guidance_input", rc->guidance_embed);
    cJSON_AddBoolToObject(r, "distill", rc->distill);
    cJSON_AddStringToObject(r, "flow_sha256", bf_reverse_flow_sha256(s->r));
    cJSON_AddItemToObject(info, "flow", model_json(s->flow_name, bf_flow_num_params(s->f), fc->channels,
                                                   fc->head_dim, flow, sizeof flow / sizeof flow[0]));
    cJSON_AddItemToObject(info, "reverse", r);
}

static cJSON *limits_json(const serve_ctx *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "max_batch", s->lim.max_batch);
    cJSON_AddNumberToObject(j, "max_steps", s->lim.max_steps);
    cJSON_AddNumberToObject(j, "max_body", (double)s->lim.max_body);
    return j;
}

void api_info(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const none[] = {NULL};
    if (args_only(q, out, none)) return;
    cJSON *j = cJSON_CreateObject(), *names = cJSON_AddArrayToObject(j, "class_names");
    add_models(j, s);
    cJSON_AddItemToObject(j, "limits", limits_json(s));
    for (int k = 0; k < s->K; k++) {
        char num[32];
        snprintf(num, sizeof num, "class %d", k);
        const char *name = s->test.n && s->test.class_names ? s->test.class_names[k] : num;
        cJSON_AddItemToArray(names, cJSON_CreateString(name));
    }
    cJSON_AddNumberToObject(j, "test_images", s->test.n);
    if (!s->test.n) cJSON_AddStringToObject(j, "test_images_error", s->test_error);
    cJSON_AddStringToObject(j, "precision", bf_precision_name(bf_precision_effective()));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    size_t n = strlen(text);
    uint8_t *b = bf_malloc(n);
    memcpy(b, text, n);
    cJSON_free(text);
    reply_take(out, 200, "application/json", b, n);
}

/* ------------------------------------------------------------------ images */
void api_sample(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const allowed[] = {"sampler", "class", "w", "seed", "temperature", "n", NULL};
    static const char *const samplers[] = {"biflow", "exact", NULL};
    int sampler, cls, n;
    float w, temp;
    uint64_t seed;
    if (args_only(q, out, allowed) || arg_choice(q, out, "sampler", samplers, &sampler) ||
        arg_class(q, out, "class", s->K, 1, -2, &cls) || arg_float(q, out, "w", 2.0f, 0.0f, 10.0f, &w) ||
        arg_u64(q, out, "seed", 0, &seed) ||
        arg_float(q, out, "temperature", 1.0f, 0.0f, 2.0f, &temp) ||
        arg_int(q, out, "n", 10, 1, s->lim.max_batch, &n))
        return;
    int *y = bf_malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) y[i] = !s->K ? -1 : cls == -2 ? i % s->K : cls;
    float *z = noise(s, seed, n, temp), *x = bf_malloc(sizeof(float) * n * s->px);
    double sec;
    int rc = decode(s, sampler == 1, x, z, y, n, w, &sec);
    if (rc) reply_error(out, 500, "sampling failed: %s", bf_last_error());
    else images_reply(s, out, x, n, n < 10 ? n : 10, sec);
    free(y); free(z); free(x);
}

/* Between the noise of two seeds, decoded by G under one class. */
static void interpolate_seeds(serve_ctx *s, const serve_req *q, serve_reply *out, int steps) {
    uint64_t a, b;
    int cls;
    float w, temp;
    if (arg_u64(q, out, "a", 0, &a) || arg_u64(q, out, "b", 1, &b) ||
        arg_class(q, out, "class", s->K, 0, s->K ? 0 : -1, &cls) ||
        arg_float(q, out, "w", 2.0f, 0.0f, 10.0f, &w) ||
        arg_float(q, out, "temperature", 1.0f, 0.0f, 2.0f, &temp))
        return;
    float *za = noise(s, a, 1, temp), *zb = noise(s, b, 1, temp);
    float *z = bf_malloc(sizeof(float) * steps * s->N), *x = bf_malloc(sizeof(float) * steps * s->px);
    int *y = bf_malloc(sizeof(int) * steps);
    for (int i = 0; i < steps; i++) {
        bf_slerp(z + i * s->N, za, zb, s->N, (double)i / (steps - 1));
        y[i] = cls;
    }
    double sec;
    if (decode(s, 0, x, z, y, steps, w, &sec)) reply_error(out, 500, "decoding failed: %s", bf_last_error());
    else images_reply(s, out, x, steps, steps, sec);
    free(za); free(zb); free(z); free(x); free(y);
}

/* Between the encodings of two test images (bf_interpolate), under a's label or `class`. */
static void interpolate_images(serve_ctx *s, const serve_req *q, serve_reply *out, int steps) {
    int a, b, cls;
    float w;
    if (test_index(s, q, out, "a", 0, &a) || test_index(s, q, out, "b", 1, &b) ||
        arg_class(q, out, "class", s->K, 0, s->K ? s->test.labels[a] : -1, &cls) ||
        arg_float(q, out, "w", 0.0f, 0.0f, 10.0f, &w))
        return;
    bf_image_set in = {2, s->C, s->img, s->img, bf_malloc(sizeof(float) * 2 * s->px), bf_malloc(sizeof(int) * 2)};
    test_floats(s, a, in.x);
    test_floats(s, b, in.x + s->px);
    in.y[0] = in.y[1] = cls;
    float *x = bf_malloc(sizeof(float) * steps * s->px);
    bf_editor e;
    editor(s, &e, w);
    pthread_mutex_lock(&s->lock);
    double t0 = bf_time();
    int rc = bf_interpolate(&e, x, &in, 0, 1, cls, steps, NULL);
    double sec = bf_time() - t0;
    pthread_mutex_unlock(&s->lock);
    if (rc) reply_error(out, 500, "interpolation failed: %s", bf_last_error());
    else images_reply(s, out, x, steps, steps, sec);
    free(x);
    bf_image_set_free(&in);
}

void api_interpolate(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const allowed[] = {"from", "a", "b", "class", "w", "steps", "temperature", NULL};
    static const char *const kinds[] = {"seeds", "images", NULL};
    int kind, steps;
    if (args_only(q, out, allowed) || arg_choice(q, out, "from", kinds, &kind) ||
        arg_int(q, out, "steps", 8, 2, s->lim.max_steps, &steps))
        return;
    if (kind == 1 && arg_get(q, "temperature")) {
        reply_error(out, 400, "parameter 'temperature' is for from=seeds only");
        return;
    }
    if (kind == 0) interpolate_seeds(s, q, out, steps);
    else interpolate_images(s, q, out, steps);
}

void api_testimage(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const allowed[] = {"index", NULL};
    int i;
    if (args_only(q, out, allowed) || test_index(s, q, out, "index", 0, &i)) return;
    const uint8_t *p = s->test.pixels + (size_t)i * s->px;
    uint8_t *hwc = bf_malloc(s->px), *png;
    size_t size, plane = (size_t)s->img * s->img;
    for (int c = 0; c < s->C; c++)
        for (size_t k = 0; k < plane; k++) hwc[k * s->C + c] = p[c * plane + k];
    int rc = bf_png_encode(&png, &size, hwc, s->img, s->img, s->C);
    free(hwc);
    if (rc) { reply_error(out, 500, "cannot encode the image: %s", bf_last_error()); return; }
    reply_take(out, 200, "image/png", png, size);
    reply_header(out, "X-Biflow-Label", "%d", s->test.labels[i]);
}

/* mask: T characters 0/1 (1 = known) in raster order of the token grid, or a named region.
 * Never a file: bf_mask_parse would read a PNG path, so only the names reach it. */
static int parse_mask(const serve_ctx *s, const serve_req *q, serve_reply *out, uint8_t *mask) {
    static const char *const names[] = {"left-half", "right-half", "top-half", "bottom-half",
                                        "center", "border", NULL};
    const char *m = arg_get(q, "mask");
    if (!m) m = "left-half";
    size_t len = strlen(m);
    if (len == (size_t)s->T && strspn(m, "01") == len) {
        for (int t = 0; t < s->T; t++) mask[t] = m[t] == '1';
        return 0;
    }
    for (int i = 0; names[i]; i++)
        if (!strcmp(m, names[i])) {
            if (bf_mask_parse(mask, m, s->img, s->patch) == 0) return 0;
            reply_error(out, 500, "mask '%s': %s", m, bf_last_error());
            return -1;
        }
    reply_error(out, 400, "parameter 'mask' must be %d characters 0/1 (1 = known, tokens in "
                "raster order of the %dx%d grid) or one of left-half, right-half, top-half, "
                "bottom-half, center, border; got %zu characters", s->T, s->img / s->patch,
                s->img / s->patch, len);
    return -1;
}

/* The library's inpainting (its default rounds and candidates, docs/RESULTS-edit.md) on the
 * pixels of the token mask the page paints. */
void api_inpaint(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const allowed[] = {"index", "class", "mask", "seed", "w", "encode", "iters", NULL};
    static const char *const encodings[] = {"masked", "full", NULL};
    bf_inpaint_opts o;
    bf_inpaint_opts_default(&o);
    int enc;
    float w;
    bf_image_set in;
    uint8_t *mask = bf_malloc((size_t)s->T), *pix = bf_malloc((size_t)s->img * s->img);
    if (args_only(q, out, allowed) || arg_choice(q, out, "encode", encodings, &enc) ||
        arg_float(q, out, "w", 0.0f, 0.0f, 10.0f, &w) || arg_u64(q, out, "seed", 0, &o.seed) ||
        arg_int(q, out, "iters", o.iters, 0, 20, &o.iters) ||
        parse_mask(s, q, out, mask) || input_image(s, q, out, &in)) {
        free(mask); free(pix);
        return;
    }
    o.encode_full = enc;
    bf_mask_pixels(pix, mask, s->img, s->patch);
    float *x = bf_malloc(sizeof(float) * s->px);
    bf_editor e;
    editor(s, &e, w);
    pthread_mutex_lock(&s->lock);
    double t0 = bf_time();
    int rc = bf_inpaint(&e, x, NULL, &in, pix, &o);
    double sec = bf_time() - t0;
    pthread_mutex_unlock(&s->lock);
    if (rc) reply_error(out, 500, "inpainting failed: %s", bf_last_error());
    else images_reply(s, out, x, 1, 1, sec);
    if (!rc) reply_header(out, "X-Biflow-Label", "%d", in.y[0]);
    free(x); free(mask); free(pix);
    bf_image_set_free(&in);
}

void api_edit(serve_ctx *s, const serve_req *q, serve_reply *out) {
    static const char *const allowed[] = {"index", "class", "to", "w", "strength", NULL};
    int to;
    float w;
    bf_edit_opts o;
    bf_edit_opts_default(&o);
    bf_image_set in;
    if (!s->K) { reply_error(out, 400, "class editing needs a class-conditional model pair"); return; }
    if (args_only(q, out, allowed) || arg_class(q, out, "to", s->K, 1, -2, &to) ||
        arg_float(q, out, "w", 0.0f, 0.0f, 10.0f, &w) ||
        arg_float(q, out, "strength", 2.0f, 0.0f, 16.0f, &o.strength) || input_image(s, q, out, &in))
        return;
    int k = to == -2 ? s->K : 1, *targets = bf_malloc(sizeof(int) * k);
    for (int j = 0; j < k; j++) targets[j] = to == -2 ? j : to;
    float *x = bf_malloc(sizeof(float) * k * s->px);
    bf_editor e;
    editor(s, &e, w);
    pthread_mutex_lock(&s->lock);
    double t0 = bf_time();
    int rc = bf_edit_class(&e, x, &in, targets, k, &o);
    double sec = bf_time() - t0;
    pthread_mutex_unlock(&s->lock);
    if (rc) reply_error(out, 500, "class editing failed: %s", bf_last_error());
    else images_reply(s, out, x, k, k, sec);
    if (!rc) reply_header(out, "X-Biflow-Label", "%d", in.y[0]);
    free(x); free(targets);
    bf_image_set_free(&in);
}
