"""engine.fft, engine.ssm, engine.fourier_mlp and engine.layers against the slow references in
engine.reference (tiny widths, fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fft import (FLUSH_BELOW, channels_first, kernel_grid, next_fast_len, power_table, real_dft_matrices,
                        rfft_last, ssm_fft_len, two_sided_conv)
from engine.fourier_mlp import ComplexFourierMLP, _FourierMix
from engine.layers import ChannelMLP, modulated_norm
from engine.reference import fourier_reference, ssm_conv_reference, ssm_reference
from engine.ssm import BidirectionalSSM

D, N_STATE = 16, 16


def make_ssm(seed: int = 0, **kw) -> BidirectionalSSM:
    torch.manual_seed(seed)
    layer = BidirectionalSSM(D, N_STATE, **kw)
    with torch.no_grad():  # faster-decaying and slower modes both present; log_dt spans its range
        layer.log_dt.copy_(torch.linspace(math.log(1e-3), math.log(1e-1), D))
    return layer


def make_fourier(seed: int = 0) -> ComplexFourierMLP:
    torch.manual_seed(seed)
    layer = ComplexFourierMLP(D, 4, 2)
    with torch.no_grad():
        layer.filt.normal_()  # a filter far from zero, so its terms are tested
        layer.b1.normal_()
    return layer


def close(fast: torch.Tensor, ref: torch.Tensor, rtol: float = 2e-5) -> None:
    """float32-level agreement, relative to the output's scale."""
    err = (fast.double() - ref).abs().max().item()
    scale = ref.abs().max().item() + 1e-12
    assert err <= rtol * scale, f"max err {err:.3e} vs scale {scale:.3e}"


LENGTHS = [1, 7, 64, 1000, 4097]
# (path, length) pairs: the DFT-matrix path at 4097 is an (L x L) GEMM, checked once in the
# slow test below rather than for every batch size here
CASES = [(p, n) for p in ("fft", "dft") for n in LENGTHS if not (p == "dft" and n > 1000)]


@pytest.mark.parametrize(("path", "length"), CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_ssm_conv_matches_recurrent_scan(length: int, batch: int, path: str) -> None:
    layer = make_ssm()
    u = torch.randn(batch, length, D, generator=torch.Generator().manual_seed(1))
    ref = ssm_conv_reference(layer, u)
    with torch.no_grad():
        close(layer.conv(u, path), ref)


@pytest.mark.slow
def test_ssm_and_fourier_dft_path_long() -> None:
    u = torch.randn(1, 4097, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        close(make_ssm().conv(u, "dft"), ssm_conv_reference(make_ssm(), u))
        close(make_fourier()(u, "dft"), fourier_reference(make_fourier(), u), rtol=5e-5)


@pytest.mark.parametrize("length", [1, 7, 300])
@pytest.mark.parametrize("gate", ["input", "linear"])
def test_ssm_sublayer_matches_reference(length: int, gate: str) -> None:
    layer = make_ssm(gate=gate)
    u = torch.randn(2, length, D, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        close(layer(u), ssm_reference(layer, u), rtol=5e-5)


def test_kernel_matches_direct_vandermonde() -> None:
    """The chunked real-factored kernel equals Re(sum_n W lam^l) computed in complex128."""
    layer = make_ssm(init="inv")
    length = 4097
    with torch.no_grad():
        K = layer.kernel(length).double()  # (2, D, L)
        loga, theta, W = layer.discrete()
        lam = torch.exp(torch.complex(loga, theta))  # (D, n)
        ell = torch.arange(length, dtype=torch.float64)
        V = torch.exp(torch.log(lam)[..., None] * ell)  # (D, n, L)
        ref = torch.einsum("kdn,dnl->kdl", W, V).real
    close(K, ref, rtol=1e-5)


def test_two_sided_kernel_has_both_directions() -> None:
    layer = make_ssm()
    with torch.no_grad():
        K = layer.kernel(5)
        k2 = layer.two_sided(5)
    assert torch.allclose(k2[:, 1:5], K[0, :, 1:])
    assert torch.allclose(k2[:, -4:], K[1, :, 1:].flip(-1))
    assert torch.allclose(k2[:, 0], K[0, :, 0] + K[1, :, 0] + layer.d_skip)  # D skip at lag 0


@pytest.mark.parametrize(("path", "length"), CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_fourier_matches_explicit_dft(length: int, batch: int, path: str) -> None:
    layer = make_fourier()
    x = torch.randn(batch, length, D, generator=torch.Generator().manual_seed(4))
    ref = fourier_reference(layer, x)
    with torch.no_grad():
        close(layer(x, path), ref, rtol=5e-5)


def test_paths_agree_in_training_mode_with_gradients() -> None:
    """Training recomputes the kernel with autograd; both paths give the same gradients."""
    grads = []
    for path in ("fft", "dft"):
        layer = make_ssm()
        u = torch.randn(2, 50, D, generator=torch.Generator().manual_seed(5))
        layer(u, path).square().sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for g1, g2 in zip(*grads):
        assert torch.allclose(g1, g2, rtol=1e-3, atol=1e-4)
    assert not make_ssm()._cache  # nothing cached while training


@pytest.mark.parametrize(("length", "n", "norm"), [(7, 16, "backward"), (7, 7, "ortho"), (8, 8, "backward"),
                                               (5, 9, "ortho"), (1, 4, "backward")])
def test_rfft_last_gradient_is_torch_rffts(length: int, n: int, norm: str) -> None:
    """rfft_last's hand-written (c2r) backward: finite differences in float64, and the same
    gradient as autograd through torch.fft.rfft, for odd / even / padded lengths and both norms."""
    x = torch.randn(2, 3, length, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: torch.view_as_real(rfft_last(v, n, norm)), (x,))
    w = torch.randn(2, 3, n // 2 + 1, 2, dtype=torch.float64)
    ours = torch.autograd.grad((torch.view_as_real(rfft_last(x, n, norm)) * w).sum(), x)[0]
    theirs = torch.autograd.grad((torch.view_as_real(torch.fft.rfft(x, n=n, norm=norm)) * w).sum(), x)[0]
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_two_sided_conv_gradients() -> None:
    """The SSM's training convolution (two_sided_conv): its value is the circular convolution
    written out, and its gradients for the input and the kernel pass finite differences and
    equal autograd through rfft / multiply / irfft, when either or both need them."""
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    k2 = torch.randn(3, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    want = torch.stack([torch.stack([
        sum(k2[d, (i - j) % 12] * u[b, j, d] for j in range(6)) for d in range(3)], -1)
        for b in range(2) for i in range(6)]).view(2, 6, 3)
    assert torch.allclose(two_sided_conv(u, k2), want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(two_sided_conv, (u, k2))
    g = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen)
    ours = torch.autograd.grad((two_sided_conv(u, k2) * g).sum(), (u, k2))
    plain = torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=12) * torch.fft.rfft(k2), n=12)
    theirs = torch.autograd.grad((plain[..., :6].transpose(1, 2) * g).sum(), (u, k2))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    for needs in ((True, False), (False, True)):  # only what is asked for is computed
        uu, kk = u.detach().requires_grad_(needs[0]), k2.detach().requires_grad_(needs[1])
        (two_sided_conv(uu, kk) * g).sum().backward()
        assert (uu.grad is not None) == needs[0] and (kk.grad is not None) == needs[1]


def test_fourier_mix_gradients() -> None:
    """The Fourier MLP's training mix (_FourierMix): its value is the block MLP plus filter
    written with plain ops, and its gradients for the spectrum and every weight pass finite
    differences and equal autograd through those plain ops; only what is asked for is computed."""
    gen = torch.Generator().manual_seed(5)
    b, nb, bs, h, fq = 3, 2, 3, 4, 5
    c = torch.complex128

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=c, generator=gen).requires_grad_(True)

    args = (rand(b, nb * bs, fq), rand(nb, h, bs), rand(nb, h, 1), rand(nb, bs, h), rand(nb * bs, fq))

    def plain(X, w1, b1, w2, G):
        H = torch.matmul(w1, X.view(b, nb, bs, fq)) + b1
        A = torch.view_as_complex(torch.nn.functional.gelu(torch.view_as_real(H)))
        return torch.matmul(w2, A).view(b, nb * bs, fq) + G * X

    assert torch.allclose(_FourierMix.apply(*args), plain(*args), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_FourierMix.apply, args)
    g = torch.view_as_real(torch.randn(b, nb * bs, fq, dtype=c, generator=gen))
    ours = torch.autograd.grad((torch.view_as_real(_FourierMix.apply(*args)) * g).sum(), args)
    theirs = torch.autograd.grad((torch.view_as_real(plain(*args)) * g).sum(), args)
    for a, t in zip(ours, theirs):
        assert torch.allclose(a, t, rtol=1e-10, atol=1e-12)
    for k in range(len(args)):  # one input needing a gradient at a time
        one = [a.detach().requires_grad_(i == k) for i, a in enumerate(args)]
        (torch.view_as_real(_FourierMix.apply(*one)) * g).sum().backward()
        assert [a.grad is not None for a in one] == [i == k for i in range(len(args))]


def test_training_gradients_fft_path_equal_dft_path() -> None:
    """Through whole layers in training: on the FFT path (where the hand-written backwards
    run) every parameter's and the input's gradient equals the DFT-matrix path's (autograd
    through dense real DFT matrices, no FFT backward of ours), for both SSM gates, the Fourier
    MLP, and an SSM whose kernel is frozen (cached spectrum, rfft_last's backward)."""
    gen = torch.Generator().manual_seed(11)
    u0 = torch.randn(2, 90, D, generator=gen)
    g = torch.randn(2, 90, D, generator=gen)
    frozen = make_ssm(seed=2)
    for p in frozen.ssm_params():
        p.requires_grad_(False)
    cases = {"ssm": make_ssm(), "ssm-linear": make_ssm(gate="linear"), "fourier": make_fourier(),
             "ssm-frozen": frozen}
    for name, layer in cases.items():
        grads = []
        for path in ("fft", "dft"):
            layer.zero_grad(set_to_none=True)
            u = u0.clone().requires_grad_(True)
            (layer(u, path) * g).sum().backward()
            grads.append([u.grad] + [p.grad for p in layer.parameters() if p.requires_grad])
        assert len(grads[0]) == 1 + sum(p.requires_grad for p in layer.parameters())
        for a, b in zip(*grads):
            assert a is not None and b is not None, name
            err = (a - b).abs().max().item()
            assert err <= 1e-4 * b.abs().max().item() + 1e-6, (name, tuple(a.shape), err)


def test_kernel_cache_identical_and_invalidated() -> None:
    layer = make_ssm()
    u = torch.randn(1, 200, D, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        y1 = layer(u)
        k_first = layer.freq_response(200, "fft")
        y2 = layer(u)
        assert layer.freq_response(200, "fft") is k_first  # served from the cache
    assert torch.equal(y1, y2)
    # a parameter update (as an optimiser step would do) invalidates the cached kernel
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(u).sum().backward()
    opt.step()
    with torch.inference_mode():
        y3 = layer(u)
    assert not torch.allclose(y1, y3)
    close(y3, ssm_reference(layer, u), rtol=5e-5)
    with torch.no_grad():  # in-place edits (load_state_dict copies) invalidate too
        layer.a_im.mul_(1.5)
        y4 = layer.conv(u)
    close(y4, ssm_conv_reference(layer, u))


def test_kernel_cache_respects_size_cap() -> None:
    layer = make_ssm(cache_mb=0.0)
    u = torch.randn(1, 100, D)
    with torch.inference_mode():
        y = layer.conv(u)
    assert not layer._cache
    close(y, ssm_conv_reference(layer, u))


@pytest.mark.parametrize("length", [1, 2, 3, 17, 256, 1001])
def test_fourier_filter_any_length(length: int) -> None:
    layer = make_fourier()
    fq = length // 2 + 1
    with torch.no_grad():
        G = layer.filter(fq, torch.device("cpu"), torch.float32)  # (D, Fq) complex
        G_long = layer.filter(4097, torch.device("cpu"), torch.float32)
        y = layer(torch.randn(2, length, D))
    assert G.shape == (D, fq) and G.is_complex() and y.shape == (2, length, D)
    assert torch.allclose(G[:, 0], G_long[:, 0])  # same gain at f = 0 for every length
    if fq > 1:
        assert torch.allclose(G[:, -1], G_long[:, -1], atol=1e-6)  # and at the Nyquist end


@given(st.integers(1, 3000))
@settings(max_examples=50, deadline=None)
def test_next_fast_len_is_smallest_5_smooth(n: int) -> None:
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    m = next_fast_len(n)
    assert m >= n and smooth(m)
    assert not any(smooth(k) for k in range(n, m))


def test_real_dft_matrices_equal_torch_fft() -> None:
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    for n, scale, norm in [(30, 1 / math.sqrt(30), "ortho"), (64, 1.0, "backward")]:
        fwd, inv = real_dft_matrices(n, 30, torch.device("cpu"), torch.float64, scale)
        X = torch.fft.rfft(x, n=n, dim=1, norm=norm)
        got = (fwd @ x).unflatten(1, (-1, 2))
        assert torch.allclose(got[:, :, 0], X.real) and torch.allclose(got[:, :, 1], X.imag)
        back = torch.fft.irfft(X, n=n, dim=1, norm=norm)[:, :30]
        assert torch.allclose(inv @ (fwd @ x), back)


def test_modulated_norm_batch1_fast_path() -> None:
    x = torch.randn(3, 9, 8)
    shift, scale = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    full = modulated_norm(x, shift, scale)
    for b in range(3):
        one = modulated_norm(x[b:b + 1], shift[b:b + 1], scale[b:b + 1])
        assert torch.allclose(one, full[b:b + 1], atol=1e-6)


def test_channel_mlp_chunked_inference_equals_plain() -> None:
    torch.manual_seed(0)
    mlp = ChannelMLP(8, 4)
    x = torch.randn(2, 1500, 8)
    plain = mlp(x)
    with torch.inference_mode():
        chunked = mlp(x)
    assert torch.allclose(plain, chunked, atol=1e-6)


def test_chunked_inference_paths_match_reference() -> None:
    """Long inputs run in channel groups at inference; force tiny groups to test them."""
    ssm, four = make_ssm(cache_mb=0.0), make_fourier()
    ssm.chunk_elems = 1  # groups of 8 channels, kernel built per group (not cached)
    four.chunk_elems = 1  # one block at a time
    u = torch.randn(2, 300, D, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        close(ssm.conv(u), ssm_conv_reference(ssm, u))
        close(ssm(u), ssm_reference(ssm, u), rtol=5e-5)  # gate + output on channel-major rows
        close(four(u), fourier_reference(four, u), rtol=5e-5)
    close(four(u).detach(), fourier_reference(four, u), rtol=5e-5)  # autograd path


def test_fourier_filter_cache_invalidated() -> None:
    layer = make_fourier()
    x = torch.randn(1, 40, D)
    with torch.inference_mode():
        layer(x, "fft")
    with torch.no_grad():
        layer.filt.mul_(-2.0)
    with torch.inference_mode():
        close(layer(x, "fft"), fourier_reference(layer, x), rtol=5e-5)


@pytest.mark.parametrize(("length", "rows"), [(5, 2), (37, 4), (1000, 1024), (4097, 1024)])
def test_channels_first_is_an_exact_transpose(length: int, rows: int) -> None:
    x = torch.randn(2, length, 6)
    y = channels_first(x, rows=rows)
    assert y.shape == (2, 6, length) and y.is_contiguous()
    assert torch.equal(y, x.transpose(1, 2))


@pytest.mark.parametrize(("length", "width"), [(5, 10), (37, 80), (3000, 6000)])
def test_channels_first_pads_with_zeros(length: int, width: int) -> None:
    x = torch.randn(2, length, 6)
    y = channels_first(x, rows=16, width=width)
    assert y.shape == (2, 6, width) and y.is_contiguous()
    assert torch.equal(y[..., :length], x.transpose(1, 2))
    assert not y[..., length:].any()


@pytest.mark.parametrize("length", [1, 2, 7, 64, 1000, 1094, 4097, 16384])
def test_ssm_fft_len_and_kernel_grid(length: int) -> None:
    n_fft = ssm_fft_len(length)
    m = n_fft // 2
    assert n_fft == 2 * m and m >= length and n_fft >= 2 * length - 1  # a linear convolution
    assert next_fast_len(m) == m  # FFT-friendly
    q, c = kernel_grid(m)
    assert q * c == m
    # C is the divisor of m nearest sqrt(m)
    best = min((abs(k - math.sqrt(m)), k) for k in range(1, m + 1) if m % k == 0)[1]
    assert c == best


@pytest.mark.parametrize("count", [1, 2, 7, 128, 129])
def test_power_table_in_place_equals_autograd_path_and_has_no_subnormals(count: int) -> None:
    mag = torch.tensor([0.999, 0.9, 0.5, 1e-3, 1e-12])
    base = torch.polar(mag, torch.tensor([0.1, 1.0, 2.0, -0.5, 3.0])).to(torch.complex64)
    with torch.no_grad():
        fast = power_table(base, count)
    leaf = base.clone().requires_grad_(True)
    slow = power_table(leaf, count)
    assert fast.shape == slow.shape == (count, 5)
    assert torch.equal(fast, slow.detach())
    exact = base.to(torch.complex128)[None] ** torch.arange(count, dtype=torch.float64)[:, None]
    parts = torch.view_as_real(fast)
    assert not ((parts != 0) & (parts.abs() < torch.finfo(torch.float32).tiny)).any()
    # kept entries are accurate; flushed ones were below the threshold
    err = (fast.to(torch.complex128) - exact).abs()
    assert (err <= 1e-5 * exact.abs() + 2 * FLUSH_BELOW).all()
    if count > 1:  # the autograd path stays differentiable
        slow.real.sum().backward()
        assert leaf.grad is not None and torch.isfinite(torch.view_as_real(leaf.grad)).all()
    # a table along another axis (channel-major, as the SSM kernel builds them) is the same
    base2 = torch.stack([base, base.conj()])  # (2, 5)
    with torch.no_grad():
        inner = power_table(base2, count, dim=1)  # (2, count, 5)
        # (equal up to rounding: strided and contiguous complex products round differently)
        assert torch.allclose(inner, power_table(base2, count).movedim(0, 1), rtol=1e-6, atol=0)
    inner_grad = power_table(base2.clone().requires_grad_(True), count, dim=1)
    assert torch.allclose(inner_grad.detach(), inner, rtol=1e-6, atol=0)


def test_remembered_time_conditioning_is_what_a_fresh_product_gives() -> None:
    """AdaLN and TimeEmbedding remember their rows at inference (layers.RowMemo): a hit is the
    computed value, a batch is its rows alone, and a change of the weights is never served stale."""
    from engine.layers import AdaLN, TimeEmbedding
    torch.manual_seed(0)
    ada, emb = AdaLN(16, 3), TimeEmbedding(8, 16)
    torch.nn.init.normal_(ada.mod.weight)
    t = torch.tensor([0.3, 0.7, 0.3])
    with torch.no_grad():
        c = emb(t)
        assert torch.equal(c[0], c[2])
        assert torch.equal(emb(t[1:2])[0], c[1])  # remembered, and equal to the row of the batch
        m1 = ada(c[:1])
        assert ada(c[:1]).data_ptr() == m1.data_ptr(), "the second call is served from memory"
        fresh = ada.mod(torch.nn.functional.silu(c[:1])).view(1, 3, 3, 1, 16)
        assert torch.equal(m1, fresh)
        ada.mod.weight.add_(1.0)
        m2 = ada(c[:1])
        assert torch.equal(m2, ada.mod(torch.nn.functional.silu(c[:1])).view(1, 3, 3, 1, 16))
        assert not torch.equal(m1, m2)
    out = emb(t)  # training: computed, with gradients
    assert out.requires_grad
