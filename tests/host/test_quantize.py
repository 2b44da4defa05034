"""Our 4/2-bit quantizer (host/quantize.py): error bound, code range, float16 scales, errors, determinism."""

import numpy as np
import pytest

from roma.host.errors import RomaError
from roma.host.quantize import quantize


def _weights(seed=0, rows=24, cols=128):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[1] += 3.0                                                  # offset far from zero
    w[2, :32] = 1.0 + 1e-4 * rng.standard_normal(32)            # range far below float16 precision of the offset
    w[3, :32] = 0.5                                              # constant, float16-representable: d = 0
    w[3, 32:64] = 0.1                                            # constant, not float16-representable
    w[4] *= 1e-6                                                 # tiny weights (float16 subnormal scales)
    w[5] *= 1000.0                                               # large weights
    return w


def _dequant64(q):
    rows, cols = q.codes.shape
    c = q.codes.reshape(rows, cols // 32, 32).astype(np.float64)
    return (c * q.d.astype(np.float64)[:, :, None] + q.m.astype(np.float64)[:, :, None]).reshape(rows, cols)


@pytest.mark.parametrize("bits", [4, 2])
def test_error_at_most_half_a_step(bits):
    w = _weights()
    q = quantize(w, bits)
    err = np.abs(_dequant64(q) - w.astype(np.float64)).reshape(w.shape[0], -1, 32)
    bound = q.d.astype(np.float64)[:, :, None] / 2
    # float64 arithmetic in the check itself: a relative slack of 1e-12 is far below any rounding step
    assert np.all(err <= bound * (1 + 1e-12) + 1e-300), np.max(err - bound)
    assert q.d[3, 0] == 0 and q.m[3, 0] == np.float32(0.5)      # exact constant group
    assert np.all(q.codes[3, :32] == 0)
    assert np.all(err[3, 1] <= q.d[3, 1] / 2)                   # 0.1 is not a float16: still within d/2


@pytest.mark.parametrize("bits", [4, 2])
def test_codes_dtype_range_and_scale_format(bits):
    q = quantize(_weights(1), bits)
    assert q.codes.dtype == np.uint8 and q.codes.shape == (24, 128)
    assert q.d.dtype == np.float32 and q.m.dtype == np.float32 and q.d.shape == (24, 4)
    assert q.bits == bits and not q.signed
    assert q.codes.min() == 0 and q.codes.max() == (1 << bits) - 1
    # scales and offsets are float16 values, so a GGUF Q4_1 block holds them without loss
    assert np.array_equal(q.d.astype(np.float16).astype(np.float32), q.d)
    assert np.array_equal(q.m.astype(np.float16).astype(np.float32), q.m)
    # m never above the group minimum; the top level never below the maximum (directed rounding)
    g = _weights(1).astype(np.float64).reshape(24, 4, 32)
    assert np.all(q.m <= g.min(axis=2))
    assert np.all(q.m + ((1 << bits) - 1) * q.d.astype(np.float64) >= g.max(axis=2))


def test_hand_worked_example():
    # w = 0..31, 2 bits: m = 0, d = 31/3 = 10.33.. rounded up to a float16 = 1323 * 2**-7 = 10.3359375
    w = np.arange(32, dtype=np.float32)[None, :]
    q = quantize(w, 2)
    assert q.m[0, 0] == 0.0 and q.d[0, 0] == np.float32(10.3359375)
    expected = [0] * 6 + [1] * 10 + [2] * 10 + [3] * 6            # rint(i / 10.3359375)
    assert q.codes[0].tolist() == expected
    assert np.allclose(q.dequantize(), _dequant64(q))


def test_deterministic():
    w = _weights(2)
    a, b = quantize(w, 4), quantize(w.copy(), 4)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.d, b.d) and np.array_equal(a.m, b.m)


def test_large_matrix_in_chunks_matches_rows_alone():
    # the row-chunked loop must give every row what quantizing it alone gives
    w = np.random.default_rng(3).standard_normal((300, 32 * 512)).astype(np.float32)
    q = quantize(w, 4)
    for r in (0, 255, 256, 299):
        one = quantize(w[r:r + 1], 4)
        assert np.array_equal(q.codes[r], one.codes[0]) and np.array_equal(q.d[r], one.d[0])


def test_bad_bits_names_the_parameter():
    for bits in (3, 8, 0):
        with pytest.raises(RomaError, match=f"bits must be 4 or 2, got {bits}"):
            quantize(np.zeros((1, 32), np.float32), bits)


def test_columns_must_be_whole_groups():
    with pytest.raises(RomaError, match="layer.w: 48 columns is not a multiple of the group size 32"):
        quantize(np.zeros((2, 48), np.float32), 4, name="layer.w")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(bad):
    w = np.zeros((2, 64), np.float32)
    w[1, 40] = bad
    with pytest.raises(RomaError, match=r"^NaN or infinite weights in blk\.3\.q$"):
        quantize(w, 4, name="blk.3.q")


def test_too_large_for_float16_scales():
    w = np.zeros((1, 32), np.float32)
    w[0, 0] = 1e6
    with pytest.raises(RomaError, match="too large for float16"):
        quantize(w, 4, name="x")
