"""ResGen-style masked prior and the AR baseline: likelihood, masking order, call counts,
KV cache, greedy residual quantiser, and short real training runs."""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from embedlab.methods.vq.ar import ARPrior
from embedlab.methods.vq.prior import (
    LOG_SCALE_MIN,
    KVCache,
    ResGenPrior,
    greedy_residual_quantize,
    mask_counts,
    masked_depths,
    mog_nll,
    unmask,
    unmasked_schedule,
)

TINY = dict(width=32, layers=2, heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    # These models are tiny: a second intra-op thread buys nothing, and when the cores are
    # shared with other work, spinning OpenMP threads made the training test ~8x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def structured_tokens(n, positions, depth, codebook_size, classes=4, seed=0):
    """Tokens that are a fixed function of (label, position, depth): easy to learn if the
    network uses the label and the position/depth information it is given."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randint(0, codebook_size, (classes, positions, depth), generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return table[labels], labels


def test_mog_nll_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    logits, means = torch.randn(5, 3, generator=gen), torch.randn(5, 3, 4, generator=gen)
    log_scales, target = torch.randn(5, 3, 4, generator=gen) * 0.5, torch.randn(5, 4, generator=gen)
    reference = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(means, log_scales.exp()), 1))
    assert torch.allclose(mog_nll(logits, means, log_scales, target), -reference.log_prob(target), atol=1e-5)


def test_masking_takes_fine_depths_first_and_nests_across_ratios():
    positions, depth = 16, 8
    ratios = torch.linspace(0, 1, 33)
    priority = torch.rand(1, positions).expand(len(ratios), -1)
    counts = mask_counts(ratios, positions, depth, priority)
    assert counts.sum(1).tolist() == (ratios * positions * depth).round().long().tolist()
    assert (counts.max(1).values - counts.min(1).values <= 1).all()  # one depth at a time
    masked = masked_depths(counts, depth)
    # a suffix per position: once a depth is masked, every finer one is too
    assert (masked[..., 1:] >= masked[..., :-1]).all()
    # higher ratio -> superset of masked tokens (same priorities)
    assert (masked[1:] >= masked[:-1]).all()
    # random priorities: still suffixes, still exact totals
    counts = mask_counts(torch.rand(64), positions, depth)
    assert counts.min() >= 0 and counts.max() <= depth


def test_unmask_keeps_coarse_and_confident_first():
    counts = torch.tensor([[2, 2, 1, 1]])  # depth 3: 6 masked, 6 unmasked
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
    new = unmask(counts, scores, 7, depth=3)  # one more: depth 1 at the more confident of 0, 1
    assert new.tolist() == [[2, 1, 1, 1]]
    assert unmask(counts, scores, 12, depth=3).tolist() == [[0, 0, 0, 0]]
    assert unmask(counts, scores, 6, depth=3).tolist() == counts.tolist()
    assert unmasked_schedule(128, 8)[-1] == 128
    assert unmasked_schedule(128, 8) == sorted(set(unmasked_schedule(128, 8)))
    assert unmasked_schedule(4, 10)[:4] == [1, 2, 3, 4]


def test_greedy_quantiser_recovers_codes_from_well_separated_codebooks():
    gen = torch.Generator().manual_seed(0)
    depth, size, dim = 3, 16, 8
    codebooks = torch.randn(depth, size, dim, generator=gen) * torch.tensor([1.0, 0.05, 0.0025])[:, None, None]
    codes = torch.randint(0, size, (10, 6, depth), generator=gen)
    vectors = codebooks[torch.arange(depth), codes]  # (10, 6, D, C)
    everything = torch.ones(10, 6, depth, dtype=torch.bool)
    assert torch.equal(greedy_residual_quantize(vectors.sum(2), everything, codebooks), codes)
    # only the masked suffix: target is the sum of the masked depths' codes
    counts = torch.randint(0, depth + 1, (10, 6), generator=gen)
    masked = masked_depths(counts, depth)
    found = greedy_residual_quantize((vectors * masked[..., None]).sum(2), masked, codebooks)
    assert torch.equal(found[masked], codes[masked])
    assert (found[~masked] == 0).all()


@pytest.mark.parametrize("depth", [2, 8])
def test_resgen_sampling_calls_the_network_steps_times_whatever_the_depth(depth):
    prior = ResGenPrior(torch.randn(depth, 16, 8), num_positions=6, num_classes=3, **TINY)
    prior.calls = 0
    indices = prior.sample(torch.tensor([0, 1, 2, 0, 1]), steps=5)
    assert prior.calls == 5
    assert prior.training  # sampling ran in eval mode and handed the mode back
    assert indices.shape == (5, 6, depth) and indices.dtype == torch.long
    assert indices.min() >= 0 and indices.max() < 16


class OracleResGen(ResGenPrior):
    """A 'network' that knows each class's tokens: it checks the known sum it is given and
    returns the exact masked sum with a tiny scale, so sampling must reproduce the table."""

    def __init__(self, table, codebooks, **kwargs):
        super().__init__(codebooks, num_positions=table.shape[1], num_classes=table.shape[0], **kwargs)
        self.table, self.checked = table, 0

    def forward(self, known, counts, labels):
        self.calls += 1
        half = labels.shape[0] // 2  # conditional rows first, then the same rows with the null class
        truth = self.code_vectors(self.table[labels[:half]]).repeat(2, 1, 1, 1)
        masked = masked_depths(counts, self.depth).unsqueeze(-1)
        assert torch.allclose(known, (truth * ~masked).sum(2) / self.scale, atol=1e-5)
        self.checked += 1
        mean = (truth * masked).sum(2) / self.target_scale(counts)  # the units the prior predicts in
        shape = (*mean.shape[:2], self.mixtures)
        log_scales = torch.full((*shape, self.code_dim), LOG_SCALE_MIN)
        return torch.zeros(shape), mean.unsqueeze(2).expand(*shape, -1), log_scales


def test_resgen_sampling_with_an_oracle_network_reproduces_the_tokens():
    gen = torch.Generator().manual_seed(0)
    depth, size = 3, 16
    codebooks = torch.randn(depth, size, 8, generator=gen) * torch.tensor([1.0, 0.1, 0.01])[:, None, None]
    table = torch.randint(0, size, (4, 5, depth), generator=gen)
    oracle = OracleResGen(table, codebooks, **TINY)
    labels = torch.tensor([3, 0, 1, 2, 2, 1])
    assert torch.equal(oracle.sample(labels, steps=4, guidance=3.0), table[labels])
    assert oracle.checked == 4


def test_target_scale_is_the_rms_of_the_masked_sum_at_every_count():
    gen = torch.Generator().manual_seed(0)
    depth, size, dim = 4, 64, 8
    codebooks = torch.randn(depth, size, dim, generator=gen) * torch.tensor([1.0, 0.3, 0.1, 0.03])[:, None, None]
    prior = ResGenPrior(codebooks, num_positions=2, **TINY)
    codes = torch.randint(0, size, (20000, 2, depth), generator=gen)
    vectors = prior.code_vectors(codes)
    for count in range(1, depth + 1):
        counts = torch.full((20000, 2), count)
        target = (vectors * masked_depths(counts, depth).unsqueeze(-1)).sum(2)
        rms = target.pow(2).mean().sqrt()
        assert prior.target_scale(counts)[0, 0, 0] == pytest.approx(rms.item(), rel=0.03), count
    # a finest-depth-only target is far smaller than a fully masked one: one unit would not fit both
    assert prior.target_scale(torch.tensor([[1, 4]])).squeeze().tolist()[0] < 0.05 * prior.target_scale(torch.tensor([[4]])).item()


def test_resgen_state_dict_is_plain_tensors_for_safetensors():
    from safetensors.torch import load, save

    prior = ResGenPrior(torch.randn(2, 8, 4), num_positions=4, **TINY)
    state = load(save({k: v.contiguous() for k, v in prior.state_dict().items()}))
    fresh = ResGenPrior(torch.zeros(2, 8, 4), num_positions=4, **TINY)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.codebooks, prior.codebooks)
    ar = ARPrior(num_positions=4, depth=2, codebook_size=8, **TINY)
    ARPrior(num_positions=4, depth=2, codebook_size=8, **TINY).load_state_dict(load(save(ar.state_dict())))


@pytest.mark.parametrize("depth", [2, 8])
def test_ar_sampling_takes_one_call_per_token(depth):
    prior = ARPrior(num_positions=3, depth=depth, codebook_size=16, num_classes=3, **TINY)
    prior.calls = 0
    indices = prior.sample(torch.tensor([0, 1, 2, 2]))
    assert prior.calls == 3 * depth
    assert indices.shape == (4, 3, depth) and indices.min() >= 0 and indices.max() < 16


def test_ar_kv_cache_logits_equal_a_full_forward():
    torch.manual_seed(0)
    prior = ARPrior(num_positions=4, depth=3, codebook_size=16, num_classes=3, **TINY).eval()
    labels = torch.tensor([0, 2, 1])
    tokens = torch.randint(0, 16, (3, prior.seq_len))
    with torch.no_grad():
        full = prior(labels, tokens[:, :-1])  # (B, L*D, K)
        cache = KVCache(prior.num_layers)
        stepwise = torch.cat([prior(labels, tokens[:, :i], cache) for i in range(prior.seq_len)], dim=1)
    assert full.shape == stepwise.shape == (3, prior.seq_len, 16)
    assert torch.allclose(full, stepwise, atol=1e-5)


def _train(prior, tokens, labels, steps=150, lr=3e-3, batch=32):
    torch.manual_seed(1)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr)
    held = tokens[:256], labels[:256]

    def held_loss():
        prior.eval()
        with torch.no_grad():  # average over mask draws: the ResGen loss is stochastic
            value = torch.stack([prior.loss(*held) for _ in range(4)]).mean().item()
        prior.train()
        return value

    before = held_loss()
    for _ in range(steps):
        i = torch.randint(0, len(tokens), (batch,))
        loss = prior.loss(tokens[i], labels[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, held_loss()


def test_training_lowers_both_losses():
    positions, depth, size = 8, 4, 16
    tokens, labels = structured_tokens(1024, positions, depth, size)
    torch.manual_seed(0)
    codebooks = torch.randn(depth, size, 8) * torch.tensor([1.0, 0.5, 0.25, 0.125])[:, None, None]
    resgen = ResGenPrior(codebooks, num_positions=positions, num_classes=4, mixtures=4, dropout=0.0, **TINY)
    before, after = _train(resgen, tokens, labels)
    assert after < before - 0.5, (before, after)  # nats per dimension

    ar = ARPrior(num_positions=positions, depth=depth, codebook_size=size, num_classes=4, dropout=0.0, **TINY)
    before, after = _train(ar, tokens, labels)
    assert after < 0.5 * before, (before, after)  # from ~log(16) = 2.8 nats per token
