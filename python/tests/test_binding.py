"""Tests of the Python binding (python/biflow) against the CLI and the library.

Run `python3 -m unittest discover -s python/tests -t python` from the repository's root, or
`make test-python` (make test runs them through the C suite's python_binding_unittests). They use the shipped models, the CLI of the source tree
(../biflow, or $BF_CLI) and, for the tests that need images, the Debian package
dataset-fashion-mnist. Without numpy the whole module is skipped, with the reason.
"""
import ctypes
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import unittest

try:
    import numpy as np
except ImportError:
    raise unittest.SkipTest("numpy is not installed for this python3 (Debian: python3-numpy)")

import biflow
from biflow import BiflowError
from biflow import evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("BF_CLI") or os.path.join(ROOT, "biflow")
if not os.path.isabs(CLI):
    CLI = os.path.join(ROOT, CLI)
MODELS = os.path.join(ROOT, "models")
G_PATH = os.path.join(MODELS, "reverse-fmnist.safetensors")
F_PATH = os.path.join(MODELS, "flow-fmnist.safetensors")


def run_cli(*args):
    """Runs the CLI; returns its stdout, failing the test with its stderr when it fails."""
    p = subprocess.run([CLI] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        raise AssertionError("%s %s exited with %d: %s" % (CLI, " ".join(map(str, args)),
                                                           p.returncode, p.stderr))
    return p.stdout


_test_split = None


def test_images(n):
    """The first n test images of Fashion-MNIST (float32) and labels; skips without them."""
    global _test_split
    if _test_split is None:
        try:
            _test_split = evaluation._split_images("fashion-mnist", "test")
        except BiflowError as e:
            raise unittest.SkipTest("the Fashion-MNIST test split is not available (%s)" % e)
    return _test_split[0][:n], _test_split[1][:n]


class Shared(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.g = biflow.Reverse(G_PATH)
        cls.f = cls.g.flow
        cls.tmp = tempfile.mkdtemp(prefix="biflow-py-")

    @classmethod
    def tearDownClass(cls):
        cls.g.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)


class TestSameAsCLI(Shared):
    """The binding gives the CLI's arrays for the same options and seed."""

    def test_biflow_sampler_matches_cli(self):
        run_cli("sample", "--sampler", "biflow", "--reverse", G_PATH, "--n", 24, "--cfg", 2,
                "--seed", 7, "--out", self.path("g"))
        s = self.g.sample(24, cfg=2, seed=7, dtype="uint8")
        self.assertEqual(s.images.dtype, np.uint8)
        self.assertEqual(s.images.shape, (24, 1, 28, 28))
        np.testing.assert_array_equal(s.images, np.load(self.path("g.npy")))
        np.testing.assert_array_equal(s.labels, np.load(self.path("g_labels.npy")))

    def test_exact_sampler_matches_cli(self):
        run_cli("sample", "--flow", F_PATH, "--n", 6, "--cfg", 1.5, "--class", "3,7", "--seed",
                5, "--out", self.path("e"))
        s = self.g.sample(6, classes="3,7", cfg=1.5, sampler="exact", seed=5, dtype="uint8")
        np.testing.assert_array_equal(s.labels, [3, 7, 3, 7, 3, 7])
        np.testing.assert_array_equal(s.images, np.load(self.path("e.npy")))
        np.testing.assert_array_equal(s.labels, np.load(self.path("e_labels.npy")))

    def test_inpaint_and_edit_match_cli(self):
        x, _ = test_images(3)
        np.save(self.path("in.npy"), biflow.to_uint8(x))
        run_cli("inpaint", "--reverse", G_PATH, "--images", self.path("in.npy"), "--mask",
                "left-half", "--seed", 4, "--cfg", 1, "--out", self.path("inp"))
        run_cli("edit", "--reverse", G_PATH, "--images", self.path("in.npy"), "--to", "0,5",
                "--verify", "none", "--strength", 1.5, "--out", self.path("ed"))
        u8 = np.load(self.path("in.npy"))   # the binding reads the same pixels
        inp = self.g.inpaint(u8, "left-half", seed=4, cfg=1)
        np.testing.assert_array_equal(biflow.to_uint8(inp), np.load(self.path("inp.npy")))
        ed = self.g.edit(u8, to=[0, 5], strength=1.5)
        self.assertEqual(ed.shape, (3, 2, 1, 28, 28))
        np.testing.assert_array_equal(biflow.to_uint8(ed).reshape(6, 1, 28, 28),
                                      np.load(self.path("ed.npy")))

    def test_frechet_distance_and_accuracy_match_cli(self):
        x, y = test_images(200)
        ref = self.write_idx(biflow.to_uint8(x), y)
        s = self.g.sample(40, cfg=2, seed=11, dtype="uint8")
        np.save(self.path("fd.npy"), s.images)
        np.save(self.path("fd_labels.npy"), s.labels)
        out = run_cli("eval-features", "--images", self.path("fd.npy"), "--labels",
                      self.path("fd_labels.npy"), "--data", ref, "--features",
                      os.path.join(MODELS, "features-fmnist.safetensors"))
        cli_fd = float(out.split("FD: ")[1].split()[0])
        cli_acc = float(out.split("(labels %s): " % self.path("fd_labels.npy"))[1].split()[0])
        with biflow.Features() as fn:
            self.assertAlmostEqual(fn.frechet_distance(s.images, data=ref), cli_fd, places=3)
            self.assertAlmostEqual(fn.accuracy(s.images, s.labels), cli_acc, places=4)

    def write_idx(self, u8, y):
        """An IDX pair (images, labels) of u8 (n, 1, H, W) and y: the spec idx:IMAGES,LABELS."""
        n, _, h, w = u8.shape
        img, lab = self.path("ref-images.idx"), self.path("ref-labels.idx")
        with open(img, "wb") as fp:
            fp.write(struct.pack(">IIII", 0x803, n, h, w) + u8.tobytes())
        with open(lab, "wb") as fp:
            fp.write(struct.pack(">II", 0x801, n) + y.astype(np.uint8).tobytes())
        return "idx:%s,%s" % (img, lab)


class TestFlow(Shared):
    def test_encode_decode_round_trip(self):
        x, y = test_images(8)
        z, logdet = self.f.encode(x, y)
        self.assertEqual(z.shape, (8,) + self.f.token_shape)
        self.assertEqual(logdet.shape, (8,))
        xr = self.f.decode(z, y)
        self.assertLess(float(np.abs(xr - x).max()), 1e-4)

    def test_log_prob_is_the_prior_plus_logdet(self):
        x, y = test_images(4)
        z, logdet = self.f.encode(x, y)
        dims = z.shape[1] * z.shape[2]
        gauss = 0.5 * np.mean(z.astype(np.float64) ** 2, axis=(1, 2)) + 0.5 * np.log(2 * np.pi)
        np.testing.assert_allclose(self.f.nll(x, y), gauss - logdet, rtol=0, atol=1e-5)
        np.testing.assert_allclose(self.f.log_prob(x, y), -(gauss - logdet) * dims, rtol=1e-5)
        bpd = self.f.bits_per_dim(x, y)
        np.testing.assert_allclose(bpd, (gauss - logdet + np.log(128)) / np.log(2), rtol=1e-5)

    def test_uint8_input_is_read_as_the_cli_reads_it(self):
        x, y = test_images(2)
        u8 = biflow.to_uint8(x)
        np.testing.assert_array_equal(self.f.encode(u8, y)[0], self.f.encode(x, y)[0])
        np.testing.assert_array_equal(self.f.encode(u8[:, 0], y)[0], self.f.encode(x, y)[0])


class TestReverse(Shared):
    def test_reverse_of_the_noise_is_the_sample(self):
        s = self.g.sample(10, classes=[1, 2], cfg=2, seed=3)
        z = self.g.noise(10, seed=3)
        np.testing.assert_array_equal(self.g.reverse(z, s.labels, cfg=2), s.images)
        np.testing.assert_array_equal(s.labels, [1, 2] * 5)

    def test_edit_to_the_own_class_is_the_reconstruction(self):
        x, y = test_images(2)
        np.testing.assert_array_equal(self.g.edit(x, to=[int(y[0])], y=[y[0]] * 2)[:, 0],
                                      self.g.reconstruct(x, y=[y[0]] * 2))

    def test_inpainting_keeps_the_known_pixels(self):
        x, y = test_images(4)
        out = self.g.inpaint(x, "left-half", y=y, seed=1, iters=1, candidates=2)
        np.testing.assert_array_equal(out[..., :14], x[..., :14])
        self.assertGreater(np.mean((out - x)[..., 14:] ** 2), 0)
        pixels = np.zeros((28, 28), dtype=bool)
        pixels[:, :14] = True   # the same mask, per pixel
        np.testing.assert_array_equal(
            self.g.inpaint(x, pixels, y=y, seed=1, iters=1, candidates=2), out)
        tokens = np.zeros(self.g.token_shape[0], dtype=bool)
        tokens.reshape(7, 7)[:, :3] = True   # per token: the first 12 pixel columns
        out12 = self.g.inpaint(x, tokens, y=y, seed=1, iters=0, candidates=1)
        np.testing.assert_array_equal(out12[..., :12], x[..., :12])

    def test_no_images_gives_empty_arrays(self):
        s = self.g.sample(0, cfg=2)
        self.assertEqual(s.images.shape, (0, 1, 28, 28))
        self.assertEqual(self.f.encode(np.zeros((0, 1, 28, 28), np.float32))[0].shape,
                         (0,) + self.f.token_shape)

    def test_precision_setting_reaches_the_products(self):
        before = biflow._lib._PRECISIONS[biflow._lib.lib.bf_get_precision()]
        try:
            biflow.set_precision("fp32")
            self.assertEqual(biflow.get_precision(), "fp32")
            want = self.g.sample(8, cfg=2, seed=9).images
            biflow.set_precision("bf16")
            got = self.g.sample(8, cfg=2, seed=9).images
            if biflow.get_precision() == "bf16":   # the CPU has AVX512-BF16
                self.assertFalse(np.array_equal(got, want))
                self.assertLess(float(np.sqrt(np.mean((got - want) ** 2))), 0.05)
            else:
                np.testing.assert_array_equal(got, want)
            with self.assertRaises(ValueError):
                biflow.set_precision("fp16")
        finally:
            biflow.set_precision(before)

    def test_threads_and_concurrent_calls_give_the_same_images(self):
        want = self.g.sample(8, cfg=2, seed=9).images
        biflow.set_threads(1)
        try:
            self.assertEqual(biflow.get_threads(), 1)
            one = self.g.sample(8, cfg=2, seed=9).images
        finally:
            biflow.set_threads(None)
        np.testing.assert_array_equal(one, want)
        other = biflow.Reverse(G_PATH)
        got = {}

        def work(model, key):
            got[key] = model.sample(8, cfg=2, seed=9).images
        threads = [threading.Thread(target=work, args=(m, k))
                   for k, m in enumerate((self.g, other, self.g))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        other.close()
        for k in range(3):
            np.testing.assert_array_equal(got[k], want)

    def test_the_library_is_called_without_the_gil(self):
        # ctypes.CDLL (not PyDLL) releases the GIL around every foreign call
        self.assertIsInstance(biflow._lib.lib, ctypes.CDLL)
        self.assertNotIsInstance(biflow._lib.lib, ctypes.PyDLL)


class TestErrors(Shared):
    def test_wrong_dtype_shape_and_labels_raise(self):
        x = np.zeros((2, 1, 28, 28), np.float32)
        with self.assertRaisesRegex(TypeError, "uint8 pixels or float32"):
            self.f.encode(x.astype(np.int32))
        with self.assertRaisesRegex(ValueError, r"\(n, 1, 28, 28\)"):
            self.f.encode(np.zeros((2, 1, 32, 32), np.float32))
        with self.assertRaisesRegex(ValueError, r"\(n, 49, 16\)"):
            self.f.decode(np.zeros((2, 16, 49), np.float32))
        with self.assertRaisesRegex(BiflowError, "label 10 of image 1 is out of range"):
            self.f.encode(x, [0, 10])
        with self.assertRaisesRegex(ValueError, "guidance weight"):
            self.g.sample(2, cfg=float("nan"))
        with self.assertRaisesRegex(ValueError, "sampler must be"):
            self.g.sample(2, sampler="fast")
        with self.assertRaisesRegex(ValueError, "classes"):
            self.g.sample(2, classes="cats")
        with self.assertRaisesRegex(BiflowError, "unknown shape|mask|known"):
            self.g.inpaint(x, "upper-third")

    def test_missing_and_mismatched_models_raise_the_library_message(self):
        with self.assertRaisesRegex(BiflowError, "cannot open '/nonexistent/f.safetensors'"):
            biflow.Flow("/nonexistent/f.safetensors")
        with self.assertRaisesRegex(BiflowError, "expected 'tarflow'"):
            biflow.Reverse(G_PATH, flow=os.path.join(MODELS, "features-fmnist.safetensors"))
        other = self.path("other-flow.safetensors")
        with open(F_PATH, "rb") as fp:
            data = bytearray(fp.read())
        data[-4] ^= 1   # the lowest mantissa bit of the last weight: another, valid F
        with open(other, "wb") as fp:
            fp.write(bytes(data))
        with self.assertRaisesRegex(BiflowError, "not the same forward model"):
            biflow.Reverse(G_PATH, flow=other)
        with self.assertRaisesRegex(BiflowError, "not the same forward model"):
            biflow.Reverse(G_PATH, flow=biflow.Flow(other))

    def test_closed_models_refuse_calls(self):
        with biflow.Flow(F_PATH) as f:
            self.assertEqual(f.num_params, 1641600)
            self.assertEqual(f.config["num_classes"], 10)
        self.assertTrue(f.closed)
        with self.assertRaisesRegex(ValueError, "closed"):
            f.encode(np.zeros((1, 1, 28, 28), np.float32))

    def test_abi_version_and_library(self):
        self.assertEqual(biflow.abi_version(), biflow.ABI_VERSION)
        self.assertTrue(biflow.library_path().endswith("libbiflow.so.%d" % biflow.ABI_VERSION))


if __name__ == "__main__":
    unittest.main()
