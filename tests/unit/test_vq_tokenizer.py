"""RVQTokenizer: the residual algebra, agreement with ResidualVQ, EMA and dead codes, depth-limited
decoding, and a tiny real fit on digits. Quantiser tests feed latents (B, L, C) straight into
`quantize`, so they need no encoder training and run in milliseconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedlab.evaluation.scores import psnr
from embedlab.methods.vq.tokenizer import RVQTokenizer

LATENT = 8


@pytest.fixture(autouse=True)
def one_thread():
    """These models are too small to gain from intra-op threads, and on a busy 2-core box a
    second thread stalls them (tiny fit measured 3.5 s on one thread, 21 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer(**kwargs) -> RVQTokenizer:
    torch.manual_seed(0)
    defaults = dict(hidden=16, latent_dim=LATENT, num_quantizers=4, codebook_size=16)
    return RVQTokenizer(**{**defaults, **kwargs})


def _initialised(tok: RVQTokenizer, n: int = 32) -> torch.Tensor:
    """k-means-initialise every depth from an eval forward (eval: no EMA, no dropout)."""
    z = torch.randn(n, tok.num_positions, LATENT)
    tok.eval()
    tok.quantize(z)
    return z


def test_shapes_and_attributes():
    tok = _tokenizer()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    recon, commit_loss, indices = tok(x)
    assert recon.shape == x.shape and commit_loss.ndim == 0
    assert indices.shape == (3, 16, 4) and tok.num_positions == 16
    assert tok.codebooks.shape == (4, 16, LATENT)
    assert tok.embed_per_depth(indices).shape == (3, 16, 4, LATENT)
    assert (tok.decode_indices(tok.tokenize(x), depth=2).abs() <= 1).all()


def test_codes_plus_final_residual_rebuild_the_input():
    tok = _tokenizer()
    z = _initialised(tok)
    last = {}
    tok.rvq.layers[-1].register_forward_hook(lambda mod, args, out: last.update(residual=args[0] - out[0]))
    z_q, indices, _ = tok.quantize(z)
    assert torch.allclose(tok.embed(indices), z_q, atol=1e-5)
    # the final residual is what ResidualVQ itself left after its last quantizer
    assert torch.allclose(z - tok.embed(indices), last["residual"], atol=1e-5)
    assert torch.allclose(tok.embed_per_depth(indices).sum(-2) + last["residual"], z, atol=1e-5)


def test_residual_quantize_agrees_with_the_quantiser():
    tok = _tokenizer()
    _initialised(tok)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    indices = tok.tokenize(x)
    z = tok.encode(x)
    assert torch.equal(tok.residual_quantize(z, 0), indices)
    for start in (1, 3):
        assert torch.equal(tok.residual_quantize(z - tok.embed(indices, start), start), indices[..., start:])
    assert tok.residual_quantize(z, tok.depth).shape == (8, 16, 0)


def test_depth_limited_quantize_masks_later_depths():
    tok = _tokenizer()
    z = _initialised(tok)
    z_q, indices, _ = tok.quantize(z, depth=2)
    assert (indices[..., 2:] == -1).all() and (indices[..., :2] >= 0).all()
    assert torch.allclose(z_q, tok.embed(indices, 2))
    tok.train()
    with pytest.raises(ValueError, match="depth"):
        tok.quantize(z, depth=2)


def test_ema_moves_a_code_toward_the_mean_of_its_vectors():
    tok = _tokenizer(threshold_ema_dead_code=0)
    _initialised(tok)
    point = tok.codebooks[0, 5] + 0.3
    z = point + 0.01 * torch.randn(16, tok.num_positions, LATENT)
    tok.eval()
    code = tok.quantize(z)[1][..., 0].flatten().mode().values
    before = tok.codebooks[0, code].clone()
    tok.train()
    tok.quantize(z)
    after = tok.codebooks[0, code]
    target = z.reshape(-1, LATENT).mean(0)
    assert (after - target).norm() < 0.5 * (before - target).norm()


def test_dead_code_is_replaced_by_a_batch_vector():
    tok = _tokenizer(threshold_ema_dead_code=2)
    _initialised(tok)
    book = tok.rvq.layers[0]._codebook
    # a code that is far from every latent and whose usage is already under the threshold
    book.embed[0, 3] = 1e3
    book.embed_avg[0, 3] = 1e3
    book.cluster_size[0, 3] = 1.0
    z = torch.randn(16, tok.num_positions, LATENT)
    tok.train()
    _, indices, _ = tok.quantize(z)
    assert not (indices[..., 0] == 3).any()
    replaced = tok.codebooks[0, 3]
    assert torch.cdist(replaced[None], z.reshape(-1, LATENT)).min() < 1e-4
    assert book.cluster_size[0, 3] == pytest.approx(2.0)


def test_decode_at_depth_d_reads_only_the_first_d_depths():
    tok = _tokenizer()
    _initialised(tok)
    tok.eval()
    indices = tok.tokenize(torch.rand(4, 1, 16, 16) * 2 - 1)
    scrambled = indices.clone()
    scrambled[..., 2:] = torch.randint(0, tok.codebook_size, scrambled[..., 2:].shape)
    with torch.no_grad():
        assert torch.equal(tok.decode_indices(indices, 2), tok.decode_indices(scrambled, 2))
        assert not torch.equal(tok.decode_indices(indices, 4), tok.decode_indices(scrambled, 4))


def test_psnr_and_codebook_usage():
    x = torch.full((2, 1, 4, 4), -1.0)
    assert torch.allclose(psnr(x, x + 0.2), torch.full((2,), 10 * torch.log10(torch.tensor(4 / 0.04))))
    tok = _tokenizer()
    indices = torch.tensor([[[0, -1, 1, 2]], [[1, -1, 1, 2]]])
    assert torch.allclose(tok.codebook_usage(indices), torch.tensor([2, 0, 1, 1]) / 16)


def test_tiny_fit_on_digits_improves_and_depth_helps(digits_raw):
    from embedlab.data.prepare import resize, scale

    x = torch.from_numpy(scale(resize(digits_raw.images[:200], 16), digits_raw.pixel_range))
    tok = _tokenizer(hidden=16, latent_dim=16, num_quantizers=8, codebook_size=32)
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def full_depth_mse():
        tok.eval()
        with torch.no_grad():
            return F.mse_loss(tok.decode_indices(tok.tokenize(x)), x).item()

    start = full_depth_mse()
    tok.train()
    for _ in range(150):
        batch = x[torch.randint(0, len(x), (32,), generator=gen)]
        recon, commit_loss, _ = tok(batch)
        loss = F.mse_loss(recon, batch) + commit_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert full_depth_mse() < 0.1 * start
    with torch.no_grad():
        indices = tok.tokenize(x)
        coarse, fine = (psnr(tok.decode_indices(indices, d), x).mean() for d in (1, 8))
    assert fine > coarse + 1.0
