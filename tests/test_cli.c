/* The command-line tool end to end: the built binary (./biflow, or BF_CLI) run on tiny models
 * and data the tests write (no dataset needed): training and resuming, each sampler, eval, the
 * editing commands, and the one convention for errors (usage errors exit 2 with "biflow
 * COMMAND: ... (see --help)" naming the option, runtime errors exit 1 with "biflow: ...").
 * Also: README.md and every --help agree, and tools/ reads models through the public header. */
#include "test.h"
#include "tiny_models.h"
#include "flow.h"
#include "reverse.h"

#include <dirent.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_MAX 65536

/* snprintf that stops the run on truncation (paths under the scratch folder are short). */
__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t n, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int len = vsnprintf(buf, n, f, ap);
    va_end(ap);
    BF_ASSERT(len >= 0 && (size_t)len < n);
}

/* ------------------------------------------------------------------ fixtures */
typedef struct {
    char dir[512];
    char data[1200];           /* "idx:IMAGES,LABELS": 24 images 28x28, labels 0..9 */
    char flow[600];            /* F trained (nominally) with Gaussian noise, sigma 0.05 */
    char flow_uniform[600];    /* the same weights, no training noise recorded */
    char reverse[600];         /* G against flow */
    char images[600];          /* 3 uint8 images (3, 28, 28) */
} cli_fixture;

static void write_be32(FILE *fp, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    fwrite(b, 1, 4, fp);
}

/* MNIST-style IDX files of n random images (28 x 28) and labels i % 10. */
static void write_idx(const char *images, const char *labels, int n) {
    FILE *fi = fopen(images, "wb"), *fl = fopen(labels, "wb");
    BF_ASSERT(fi && fl);
    write_be32(fi, 0x00000803);
    write_be32(fi, (uint32_t)n);
    write_be32(fi, 28);
    write_be32(fi, 28);
    write_be32(fl, 0x00000801);
    write_be32(fl, (uint32_t)n);
    bf_rng rng;
    bf_rng_seed(&rng, 5);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 28 * 28; k++) fputc((int)bf_rng_below(&rng, 256), fi);
        fputc(i % 10, fl);
    }
    fclose(fi);
    fclose(fl);
}

/* Written once per run of the suite; every test of this file reads them. */
static const cli_fixture *fixture(void) {
    static cli_fixture fx;
    static int made;
    if (made) return &fx;
    made = 1;
    fmt(fx.dir, sizeof fx.dir, "%s/cli", bf_test_tmpdir());
    BF_ASSERT(mkdir(fx.dir, 0755) == 0);
    char im[560], lb[560];
    fmt(im, sizeof im, "%s/images.idx", fx.dir);
    fmt(lb, sizeof lb, "%s/labels.idx", fx.dir);
    write_idx(im, lb, 24);
    fmt(fx.data, sizeof fx.data, "idx:%s,%s", im, lb);
    fmt(fx.flow, sizeof fx.flow, "%s/flow.safetensors", fx.dir);
    fmt(fx.flow_uniform, sizeof fx.flow_uniform, "%s/flow_uniform.safetensors", fx.dir);
    fmt(fx.reverse, sizeof fx.reverse, "%s/reverse.safetensors", fx.dir);
    fmt(fx.images, sizeof fx.images, "%s/x.npy", fx.dir);
    bf_flow *f = bf_test_tiny_flow(41, 28, 4);   /* 49 tokens, 2 blocks, 10 classes */
    BF_ASSERT(bf_flow_save(f, f->params, fx.flow, "{\"noise\":\"gauss\",\"sigma\":\"0.05\"}") == 0);
    BF_ASSERT(bf_flow_save(f, f->params, fx.flow_uniform, "{\"noise\":\"uniform\"}") == 0);
    bf_flow_free(f);
    bf_reverse_config rc = bf_test_tiny_reverse_config(0, 1, 1);
    rc.img_size = 28;
    rc.patch_size = 4;
    rc.num_classes = 10;
    bf_reverse *r = bf_test_random_reverse(rc, 42);
    BF_ASSERT(bf_reverse_set_flow(r, fx.flow, 0.05f) == 0);
    BF_ASSERT(bf_reverse_save(r, r->params, fx.reverse, NULL) == 0);
    bf_reverse_free(r);
    uint8_t px[3 * 28 * 28];
    for (int i = 0; i < NUM(px); i++) px[i] = (uint8_t)((i * 37) % 256);
    int64_t shape[3] = {3, 28, 28};
    BF_ASSERT(bf_write_npy(fx.images, BF_DT_U8, 3, shape, px) == 0);
    return &fx;
}

static int exists(const char *prefix, const char *suffix) {
    char path[700];
    fmt(path, sizeof path, "%s%s", prefix, suffix);
    return access(path, F_OK) == 0;
}

/* The three files a sampling or editing command writes under its --out prefix. */
static int outputs_exist(const char *prefix) {
    return exists(prefix, ".png") && exists(prefix, ".npy") && exists(prefix, "_labels.npy");
}

/* Runs a command line; reports it with its output when rc is not the one expected. */
static int run_expect(char *out, int expect, const char *cmd) {
    int rc = bf_test_sh(out, OUT_MAX, "%s", cmd);
    if (rc != expect) fprintf(stderr, "    %s\n    -> rc %d (expected %d): %.2000s\n", cmd, rc, expect, out);
    return rc;
}

/* ------------------------------------------------------------------ training */
TEST(cli_train_flow_then_resume_extends_the_run) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char dir[600], cmd[4096];
    fmt(dir, sizeof dir, "%s/run", fx->dir);
    const char *tiny = "--config fmnist-tiny --blocks 1 --width 32 --batch 4 --threads 1 --quiet";
    fmt(cmd, sizeof cmd, "./biflow train-flow %s --data '%s' --steps 2 --final-eval 0 --out '%s'",
             tiny, fx->data, dir);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(bf_test_saved_step(dir) == 2);
    CHECK(strstr(out, "--final-eval is deprecated, use --eval-n") != NULL);   /* the old spelling works */
    fmt(cmd, sizeof cmd, "./biflow train-flow --resume --seed 5 --data '%s' --steps 3 --out '%s'",
             fx->data, dir);
    CHECK(run_expect(out, 2, cmd) == 2 && strstr(out, "biflow train-flow: --seed 5") && strstr(out, "(see --help)"));
    fmt(cmd, sizeof cmd, "./biflow train-flow --resume --data '%s' --steps 3 --eval-n 4 --threads 1 "
             "--quiet --out '%s'", fx->data, dir);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(bf_test_saved_step(dir) == 3);
    CHECK(strstr(out, "test bits/dim (EMA weights, 4 images") != NULL);
    bf_flow *f = bf_flow_load(dir, 1);   /* the resumed run keeps its shape: width 32, 1 block */
    CHECK(f && bf_flow_get_config(f)->channels == 32 && bf_flow_get_config(f)->num_blocks == 1);
    bf_flow_free(f);
}

/* ------------------------------------------------------------------ sampling */
TEST(cli_sample_with_each_sampler) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char cmd[4096], prefix[600];
    static const char *const samplers[] = {"exact", "jacobi"};
    for (int i = 0; i < 2; i++) {
        fmt(prefix, sizeof prefix, "%s/s_%s", fx->dir, samplers[i]);
        fmt(cmd, sizeof cmd, "./biflow sample --flow '%s' --sampler %s --n 4 --threads 1 --out '%s'",
                 fx->flow, samplers[i], prefix);
        CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
        CHECK(strstr(out, "score-denoised") != NULL);   /* auto: F records sigma 0.05 */
        if (i == 1) CHECK(strstr(out, "Jacobi iterations") != NULL);
    }
    fmt(prefix, sizeof prefix, "%s/s_biflow", fx->dir);
    fmt(cmd, sizeof cmd, "./biflow sample --reverse '%s' --cfg 1 --n 4 --threads 1 --out '%s'",
             fx->reverse, prefix);
    CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
    CHECK(strstr(out, "with the biflow sampler, guided (1 NFE), learned denoising") != NULL);
    fmt(prefix, sizeof prefix, "%s/s_uniform", fx->dir);
    fmt(cmd, sizeof cmd, "./biflow sample --flow '%s' --n 2 --threads 1 --out '%s'", fx->flow_uniform, prefix);
    CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
    CHECK(strstr(out, "score-denoised") == NULL);   /* auto: no training noise recorded, none */
    fmt(cmd, sizeof cmd, "./biflow sample --flow '%s' --denoise score --n 2 --out '%s'", fx->flow_uniform, prefix);
    CHECK(run_expect(out, 2, cmd) == 2 && strstr(out, "--sigma"));
}

/* ------------------------------------------------------------------ eval */
/* NFE of F's exact sampler: tokens x blocks, + 2 with score denoising. eval's --denoise auto
 * is sample's: the model's recorded sigma (eval used to assume 0.05 for every F). */
TEST(cli_eval_small_n_denoises_as_sample_does) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char cmd[4096];
    const char *common = "--n 6 --fidelity-n 0 --threads 1 --features models/features-fmnist.safetensors";
    fmt(cmd, sizeof cmd, "./biflow eval --flow '%s' --data '%s' %s", fx->flow, fx->data, common);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(strstr(out, "samples:           6") && strstr(out, "FD (test split):") && strstr(out, "100 NFE"));
    fmt(cmd, sizeof cmd, "./biflow eval --flow '%s' --data '%s' %s", fx->flow_uniform, fx->data, common);
    CHECK(run_expect(out, 0, cmd) == 0 && strstr(out, " 98 NFE"));
    fmt(cmd, sizeof cmd, "./biflow eval --reverse '%s' --data '%s' --n 6 --fidelity 4 --threads 1 "
             "--features models/features-fmnist.safetensors", fx->reverse, fx->data);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(strstr(out, "biflow sampler") && strstr(out, "G(F(x)) vs x:") && strstr(out, "(4 test images)"));
    CHECK(strstr(out, "--fidelity is deprecated, use --fidelity-n") != NULL);
}

/* ------------------------------------------------------------------ editing */
TEST(cli_inpaint_and_edit_a_small_npy) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char cmd[4096], prefix[600];
    fmt(prefix, sizeof prefix, "%s/inpainted", fx->dir);
    fmt(cmd, sizeof cmd, "./biflow inpaint --reverse '%s' --images '%s' --mask left-half --threads 1 "
             "--out '%s'", fx->reverse, fx->images, prefix);
    CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
    CHECK(strstr(out, "inpainted 3 images: mask left-half") != NULL);
    fmt(prefix, sizeof prefix, "%s/edited", fx->dir);
    fmt(cmd, sizeof cmd, "./biflow edit --reverse '%s' --images '%s' --to 1,2 --class 0 --threads 1 "
             "--out '%s'", fx->reverse, fx->images, prefix);
    CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
    CHECK(strstr(out, "edited 3 images to 2 classes") != NULL);
    char npy[700];
    fmt(npy, sizeof npy, "%s.npy", prefix);
    bf_dtype dt;
    int nd;
    int64_t sh[8];
    void *data = NULL;
    CHECK(bf_read_npy(npy, &dt, &nd, sh, &data) == 0 && dt == BF_DT_U8 && nd == 4 && sh[0] == 6);
    free(data);
    fmt(prefix, sizeof prefix, "%s/reconstructed", fx->dir);
    fmt(cmd, sizeof cmd, "./biflow reconstruct --reverse '%s' --images '%s' --threads 1 --out '%s'",
             fx->reverse, fx->images, prefix);
    CHECK(run_expect(out, 0, cmd) == 0 && outputs_exist(prefix));
}

/* ------------------------------------------------------------------ bench */
/* bench sample with G: every case once (--seconds 0), and the speed-up lines that compare
 * them by name. */
TEST(cli_bench_sample_runs_each_case_once) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char cmd[4096];
    fmt(cmd, sizeof cmd, "./biflow bench sample --reverse '%s' --seconds 0 --jacobi off --threads 1", fx->reverse);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(strstr(out, "exact+cfg+score-denoise    batch  64") && !strstr(out, "jacobi"));
    CHECK(strstr(out, "biflow+cfg two-pass") && strstr(out, "speed-up of one-pass G (guided)"));
    CHECK(!strstr(out, "nan") && !strstr(out, "inf"));
}

/* bench gemm: every row once (--seconds 0), with its ratios; without AVX512-BF16 a usage
 * error that says why. */
TEST(cli_bench_gemm_times_every_kernel) {
    static char out[OUT_MAX];
    if (!bf_bf16_supported()) {
        CHECK(run_expect(out, 2, "./biflow bench gemm --seconds 0") == 2 && strstr(out, "lacks AVX512-BF16"));
        return;
    }
    CHECK(run_expect(out, 0, "./biflow bench gemm --seconds 0 --threads 1 --batch 2") == 0);
    CHECK(strstr(out, "fc1  dY^T x") && strstr(out, "attn p v") && strstr(out, "square"));
    CHECK(strstr(out, "\"amx_gflops\"") && !strstr(out, "nan") && !strstr(out, "inf"));
}

/* bench train --model reverse: G's step as train-reverse takes it, once. */
TEST(cli_bench_train_reverse_takes_a_step) {
    REQUIRE_FASHION_MNIST();
    static char out[OUT_MAX];
    CHECK(run_expect(out, 0, "./biflow bench train --model reverse --steps 1 --warmup 0 --batch 4 --threads 1") == 0);
    CHECK(strstr(out, "model reverse (G, ") && strstr(out, "\"model\":\"reverse\""));
    CHECK(!strstr(out, "nan") && !strstr(out, "inf"));
}

/* ------------------------------------------------------------------ errors */
/* args with the words F, G, X and O replaced by the fixture's forward model, reverse model,
 * images and an output prefix never written (quoted). */
static void expand(char *out, size_t n, const char *args, const cli_fixture *fx, const char *prefix) {
    size_t k = 0;
    out[0] = 0;
    for (const char *r = args; *r && k + 1 < n; r++) {
        int alone = (r == args || r[-1] == ' ') && (r[1] == ' ' || !r[1]);
        const char *sub = !alone ? NULL : *r == 'F' ? fx->flow : *r == 'G' ? fx->reverse : *r == 'X' ? fx->images : *r == 'O' ? prefix : NULL;
        int w = sub ? snprintf(out + k, n - k, "'%s'", sub) : snprintf(out + k, n - k, "%c", *r);
        k = w > 0 && k + (size_t)w < n ? k + (size_t)w : n - 1;
    }
}

/* Usage errors exit 2 with "biflow COMMAND: ... (see --help)" naming the option; nothing is
 * written. Runtime errors exit 1 with "biflow: ...". */
TEST(cli_bad_options_are_usage_errors_that_name_the_option) {
    const cli_fixture *fx = fixture();
    static char out[OUT_MAX];
    char cmd[4096], prefix[600];
    fmt(prefix, sizeof prefix, "%s/never", fx->dir);
    static const struct { const char *cmd, *args, *needle; } cases[] = {
        {"sample", "--flow F --bogus 3 --out O", "unknown option '--bogus'"},   /* unknown option */
        {"eval", "--flow F --out O", "unknown option '--out'"},
        {"sample", "--flow F --sampler fast --out O", "--sampler must be exact, jacobi or biflow, not 'fast'"},
        {"sample", "--flow F --denoise maybe --out O", "--denoise"},             /* bad choice */
        {"train-reverse", "--flow F --cfg-train yes --out O", "--cfg-train expects on or off"},
        {"sample", "--n 4 --out O", "--flow is required"},                       /* missing required */
        {"inpaint", "--reverse G --images X --out O", "--mask is required"},
        {"edit", "--reverse G --images X --out O", "--to is required"},
        {"eval", "--n 4", "give --reverse, --flow or --images"},
        {"sample", "--flow F --n 0 --out O", "--n 0 is out of range"},           /* out of range */
        {"sample", "--flow F --n 10 --scale 99 --out O", "--scale 99 is out of range"},
        {"eval", "--flow F --n 1", "--n 1 is out of range"},
        {"inpaint", "--reverse G --images X --mask left-half --cfg -1 --out O", "--cfg -1 is out of range"},
        {"train-flow", "--beta2 2 --out O", "--beta2"},
        {"sample", "--flow F --n many --out O", "--n expects an integer, got 'many'"},
        {"sample", "--flow F --reverse G --sampler jacobi --out O", "--reverse"}, /* conflicting */
        {"sample", "--flow F --denoise learned --out O", "--denoise learned"},
        {"bench", "nothing", "give train, sample or gemm"},
    };
    for (int i = 0; i < NUM(cases); i++) {
        char args[2048];
        expand(args, sizeof args, cases[i].args, fx, prefix);
        fmt(cmd, sizeof cmd, "./biflow %s %s", cases[i].cmd, args);
        char head[96];
        fmt(head, sizeof head, "biflow %s: ", cases[i].cmd);
        int rc = run_expect(out, 2, cmd);
        int ok = rc == 2 && strstr(out, cases[i].needle) && strstr(out, head) && strstr(out, "(see --help)");
        if (!ok) fprintf(stderr, "    expected '%s%s ... (see --help)'\n", head, cases[i].needle);
        CHECK(ok);
    }
    CHECK(!outputs_exist(prefix));
    fmt(cmd, sizeof cmd, "./biflow sample --flow '%s/missing.safetensors' --out '%s'", fx->dir, prefix);
    CHECK(run_expect(out, 1, cmd) == 1 && !strncmp(out, "biflow: ", 8) && strstr(out, "missing.safetensors"));
    fmt(cmd, sizeof cmd, "./biflow edit --reverse '%s' --flow '%s' --images '%s' --to 1", fx->reverse,
             fx->flow_uniform, fx->images);   /* not the F that G records: a runtime error */
    CHECK(run_expect(out, 1, cmd) == 1 && !strncmp(out, "biflow: ", 8));
    CHECK(run_expect(out, 2, "./biflow no-such-command") == 2 && strstr(out, "unknown command 'no-such-command'"));
}

/* ------------------------------------------------------------------ README and --help */
/* Appends to names (n, at most max) the --options of line (without the leading "--"). */
static int options_of(const char *line, char names[][48], int n, int max) {
    for (const char *p = line; (p = strstr(p, "--")) && n < max; p += 2) {
        int k = 0;
        while (k < 47 && (p[2 + k] == '-' || (p[2 + k] >= 'a' && p[2 + k] <= 'z') || (p[2 + k] >= '0' && p[2 + k] <= '9')))
            k++;
        if (k == 0 || p[2 + k - 1] == '-') continue;
        memcpy(names[n], p + 2, (size_t)k);
        names[n++][k] = 0;
    }
    return n;
}

/* 1 when a --help text lists --name as an option (at the start of one of its lines). */
static int help_lists(const char *help, const char *name) {
    char a[64], b[64];
    fmt(a, sizeof a, "\n  --%s ", name);
    fmt(b, sizeof b, "\n  --%s\n", name);
    return strstr(help, a) || strstr(help, b);
}

/* Every command of `biflow --help` has a row in README.md's table and every row a command;
 * every option a row names is in that command's --help. */
TEST(cli_readme_and_help_agree) {
    static char help[OUT_MAX], chelp[OUT_MAX], line[4096];
    FILE *fp = fopen("README.md", "r");
    if (!fp) SKIP("README.md not found in the working directory");
    CHECK(bf_test_sh(help, sizeof help, "./biflow --help") == 0);
    int rows = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "| `biflow ", 10)) continue;
        char cmd[64];
        if (sscanf(line + 10, "%63[a-z-]", cmd) != 1) continue;
        rows++;
        char listed[80];
        fmt(listed, sizeof listed, "\n  %s ", cmd);
        if (!strstr(help, listed)) fprintf(stderr, "    README row for '%s': no such command in biflow --help\n", cmd);
        CHECK(strstr(help, listed) != NULL);
        char sub[80] = "";
        if (!strcmp(cmd, "bench")) sscanf(line + 10 + strlen(cmd), " %31[a-z]", sub);
        CHECK(bf_test_sh(chelp, sizeof chelp, "./biflow %s %s --help", cmd, sub) == 0);
        char names[64][48];
        int n = options_of(line, names, 0, 64);
        for (int i = 0; i < n; i++) {
            if (!help_lists(chelp, names[i])) fprintf(stderr, "    README: biflow %s %s has no --%s\n", cmd, sub, names[i]);
            CHECK(help_lists(chelp, names[i]));
        }
    }
    fclose(fp);
    CHECK(rows >= 18);
    /* and the other way: every command the tool lists has a row */
    static char readme[1 << 17];
    FILE *r = fopen("README.md", "r");
    size_t k = r ? fread(readme, 1, sizeof readme - 1, r) : 0;
    readme[k] = 0;
    if (r) fclose(r);
    const char *p = strstr(help, "commands:\n");
    CHECK(p != NULL);
    int listed = 0;
    for (char name[64]; p && (p = strchr(p, '\n')) && sscanf(p, "\n  %63[a-z-] ", name) == 1; p++) {
        char row[96];
        fmt(row, sizeof row, "| `biflow %s", name);
        listed++;
        if (!strstr(readme, row)) fprintf(stderr, "    biflow %s has no row in README.md\n", name);
        CHECK(strstr(readme, row) != NULL);
    }
    CHECK(listed >= 18);
}

/* tools/ablation.sh --dry-run: every variant of the table is listed with what it changes, and
 * every option of every command it would run is one that command's --help lists (the script
 * cannot drift from the CLI unnoticed); nothing is written; bad options are usage errors. */
TEST(cli_ablation_script_dry_run_matches_the_cli) {
    static char out[OUT_MAX], helps[4][OUT_MAX], subs[4][32];
    if (access("tools/ablation.sh", X_OK) != 0) SKIP("tools/ablation.sh not found in the working directory");
    char dir[600], cmd[2048];
    fmt(dir, sizeof dir, "%s/ablation_dry", bf_test_tmpdir());
    fmt(cmd, sizeof cmd, "tools/ablation.sh --dry-run --steps 7 --second-seed 1 --second-precision bf16 --out '%s' --docs '%s/docs' 2>&1", dir, dir);
    CHECK(run_expect(out, 0, cmd) == 0);
    CHECK(access(dir, F_OK) != 0);   /* a dry run writes nothing */
    static const char *const want[] = {
        "--inverse naive", "--inverse distill", "--denoise none", "--perceptual 0", "--cfg-train off",
        "--norm-control off", "train-flow", "--bound 0 ", "--bound 4 ", "--cfg-two-pass", "--denoise score",
        "--sampler exact", "/distill-s1 --steps 7", "/normoff-s1 --steps 7", "/mse --steps 7",
    };
    for (int i = 0; i < NUM(want); i++) {
        if (!strstr(out, want[i])) fprintf(stderr, "    dry run lacks '%s'\n", want[i]);
        CHECK(strstr(out, want[i]) != NULL);
    }
    CHECK(strstr(out, "/mse-s1") == NULL);   /* the second seed is for the contested rows only */
    static const struct { const char *run, *prec; } precs[] = {   /* each seed in its precision */
        {"/distill-s1 --steps 7", "--precision bf16 "}, {"/normoff-s1 --steps 7", "--precision bf16 "},
        {"/mse --steps 7", "--precision fp32 "}, {"/flowclip --steps 7", "--precision fp32 "},
    };
    for (int i = 0; i < NUM(precs); i++) {
        const char *end = strstr(out, precs[i].run), *start = end;
        CHECK(end != NULL);
        if (!end) continue;
        while (start > out && start[-1] != '\n') start--;
        const char *p = strstr(start, precs[i].prec);
        if (!p || p > end) fprintf(stderr, "    the run '%s' lacks '%s'\n", precs[i].run, precs[i].prec);
        CHECK(p != NULL && p < end);
    }
    int checked = 0;
    for (const char *p = out; (p = strstr(p, "\n+ ./biflow ")); p++) {
        char sub[32], line[2048];
        if (sscanf(p, "\n+ ./biflow %31[a-z-]", sub) != 1 || sscanf(p + 1, "%2047[^\n]", line) != 1) continue;
        int h = 0;   /* each command's --help once */
        while (h < 4 && subs[h][0] && strcmp(subs[h], sub)) h++;
        BF_ASSERT(h < 4);
        if (!subs[h][0]) {
            CHECK(bf_test_sh(helps[h], OUT_MAX, "./biflow %s --help", sub) == 0);
            snprintf(subs[h], sizeof subs[h], "%s", sub);
        }
        const char *chelp = helps[h];
        for (char *q = line; (q = strstr(q, " --")); q += 3) {
            char name[48];
            if (sscanf(q + 3, "%47[a-z0-9-]", name) != 1) continue;
            if (!help_lists(chelp, name)) fprintf(stderr, "    biflow %s has no --%s: %s\n", sub, name, line);
            CHECK(help_lists(chelp, name));
            checked++;
        }
    }
    CHECK(checked > 100);
    fmt(cmd, sizeof cmd, "tools/ablation.sh --dry-run --only align,bogus 2>&1");
    CHECK(run_expect(out, 2, cmd) == 2 && strstr(out, "unknown variant 'bogus'"));
    fmt(cmd, sizeof cmd, "tools/ablation.sh --dry-run --steps many 2>&1");
    CHECK(run_expect(out, 2, cmd) == 2 && strstr(out, "'many' is not a count"));
    fmt(cmd, sizeof cmd, "tools/ablation.sh --dry-run --second-precision fp16 2>&1");
    CHECK(run_expect(out, 2, cmd) == 2 && strstr(out, "must be fp32 or bf16, not 'fp16'"));
}

/* tools/ reads the models through include/biflow.h only: no internal header of src/. */
TEST(cli_tools_include_only_the_public_header) {
    DIR *d = opendir("tools");
    if (!d) SKIP("tools/ not found in the working directory");
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 3 || (strcmp(e->d_name + len - 2, ".c") && strcmp(e->d_name + len - 2, ".h"))) continue;
        char path[600], line[1024];
        fmt(path, sizeof path, "tools/%s", e->d_name);
        FILE *fp = fopen(path, "r");
        if (!fp) continue;
        files++;
        while (fgets(line, sizeof line, fp)) {
            char inc[256], local[600];
            if (sscanf(line, " #include \"%255[^\"]\"", inc) != 1) continue;
            fmt(local, sizeof local, "tools/%s", inc);
            /* or a header the Makefile generates from a tools/ file (serve_page.h from
             * tools/serve_page.html) */
            char html[600];
            fmt(html, sizeof html, "tools/%.*s.html", (int)(strlen(inc) > 2 ? strlen(inc) - 2 : 0), inc);
            int ok = !strcmp(inc, "biflow.h") ||
                     (!strchr(inc, '/') && (access(local, F_OK) == 0 || access(html, F_OK) == 0));
            if (!ok) fprintf(stderr, "    %s includes \"%s\"\n", path, inc);
            CHECK(ok);
        }
        fclose(fp);
    }
    closedir(d);
    CHECK(files > 10);
}
