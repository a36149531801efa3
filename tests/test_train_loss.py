"""The trainer's loss against plain reference computations (torch on CPU, no engine)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from exprl_rewards.rewards.kl import kl_penalty  # noqa: E402
from exprl_rewards.train.loss import kl_k3, policy_loss, token_logprobs  # noqa: E402
from exprl_rewards.train.policy import Batch  # noqa: E402


def reference_loss(logp, old, sampler, ref, adv, mask, *, clip_low, clip_high, cap, kl_coef):
    """The released PPO-clip + TIS + k3 loss, token mean, written out in numpy."""
    ratio = np.exp(logp - old)
    pg = -np.minimum(ratio * adv, np.clip(ratio, 1 - clip_low, 1 + clip_high) * adv)
    pg = pg * np.minimum(np.exp(old - sampler), cap)
    kl = np.clip(np.exp(ref - logp) - (ref - logp) - 1, -10, 10)
    return float(((pg + kl_coef * kl) * mask).sum() / mask.sum())


def random_batch(seed, shape=(3, 7)):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3, shape)
    old = logp + rng.normal(0, 0.3, shape)
    sampler = old + rng.normal(0, 0.2, shape)
    ref = logp + rng.normal(0, 0.5, shape)
    adv = rng.normal(0, 1, shape)
    mask = rng.uniform(size=shape) < 0.8
    mask[0, 0] = True
    return logp, old, sampler, ref, adv, mask


@pytest.mark.parametrize("seed", range(5))
def test_loss_matches_the_written_out_formula(seed):
    logp, old, sampler, ref, adv, mask = random_batch(seed)
    t = {
        k: torch.tensor(v)
        for k, v in {"logp": logp, "old": old, "sampler": sampler, "ref": ref}.items()
    }
    terms = policy_loss(
        t["logp"], t["old"], t["sampler"], t["ref"], torch.tensor(adv), torch.tensor(mask),
        batch_tokens=int(mask.sum()), clip_low=0.2, clip_high=0.28, tis_cap=2.0, kl_coef=0.05,
    )  # fmt: skip
    want = reference_loss(logp, old, sampler, ref, adv, mask, clip_low=0.2, clip_high=0.28,
                          cap=2.0, kl_coef=0.05)  # fmt: skip
    assert float(terms.loss) == pytest.approx(want, rel=1e-9)
    assert terms.tokens == int(mask.sum())


def test_on_policy_gradient_is_reinforce():
    """With old = logp, sampler = old and no KL the gradient is -A / tokens on each token."""
    logp0, _, _, _, adv, mask = random_batch(1)
    logp = torch.tensor(logp0, requires_grad=True)
    terms = policy_loss(
        logp, logp.detach(), logp.detach(), None, torch.tensor(adv), torch.tensor(mask),
        batch_tokens=int(mask.sum()), kl_coef=0.0,
    )  # fmt: skip
    terms.loss.backward()
    want = np.where(mask, -adv / mask.sum(), 0.0)
    np.testing.assert_allclose(logp.grad.numpy(), want, rtol=1e-12, atol=1e-15)
    assert terms.clipped == 0
    assert terms.ratio_sum == pytest.approx(mask.sum())


@pytest.mark.parametrize(("log_ratio", "adv", "clipped"), [
    (0.5, 1.0, True),    # ratio 1.65 > 1.28 with A > 0: clipped, no gradient
    (0.5, -1.0, False),  # same ratio, A < 0: the unclipped term is the minimum
    (-0.5, -1.0, True),  # ratio 0.61 < 0.8 with A < 0: clipped
    (-0.5, 1.0, False),
    (0.1, 1.0, False),   # inside [0.8, 1.28]
])  # fmt: skip
def test_clipping_stops_the_gradient_only_where_released_ppo_does(log_ratio, adv, clipped):
    old = torch.tensor([[-1.0]])
    logp = (old + log_ratio).clone().requires_grad_(True)
    terms = policy_loss(
        logp, old, old, None, torch.tensor([[adv]]), torch.tensor([[True]]), batch_tokens=1,
        clip_low=0.2, clip_high=0.28, kl_coef=0.0,
    )  # fmt: skip
    terms.loss.backward()
    assert terms.clipped == int(clipped)
    if clipped:
        assert float(logp.grad) == 0.0
    else:
        assert float(logp.grad) == pytest.approx(-adv * np.exp(log_ratio))


def test_truncated_importance_weight_is_capped_and_detached():
    old = torch.tensor([[-1.0, -1.0]])
    sampler = torch.tensor([[-4.0, -1.1]])  # weights exp(3) -> capped at 2, and exp(0.1)
    logp = old.clone().requires_grad_(True)
    terms = policy_loss(
        logp, old, sampler, None, torch.tensor([[1.0, 1.0]]), torch.tensor([[True, True]]),
        batch_tokens=2, tis_cap=2.0, kl_coef=0.0,
    )  # fmt: skip
    terms.loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[-2.0 / 2, -np.exp(0.1) / 2]], rtol=1e-6)
    assert terms.tis_sum == pytest.approx(2.0 + np.exp(0.1), rel=1e-6)


def test_k3_matches_the_library_numpy_estimator_and_is_zero_on_policy():
    rng = np.random.default_rng(0)
    logp, ref = -rng.uniform(0, 30, 200), -rng.uniform(0, 30, 200)
    got = kl_k3(torch.tensor(logp), torch.tensor(ref)).numpy()
    np.testing.assert_allclose(got, kl_penalty(logp, ref, "k3"), rtol=1e-12)
    assert float(kl_k3(torch.tensor(logp), torch.tensor(logp)).abs().max()) == 0.0


def test_micro_batches_accumulate_to_the_full_batch_gradient():
    logp0, old, sampler, ref, adv, mask = random_batch(3, shape=(4, 6))
    tokens = int(mask.sum())

    def grad(rows_list):
        logp = torch.tensor(logp0, requires_grad=True)
        for rows in rows_list:
            policy_loss(
                logp[rows], torch.tensor(old[rows]), torch.tensor(sampler[rows]),
                torch.tensor(ref[rows]), torch.tensor(adv[rows]), torch.tensor(mask[rows]),
                batch_tokens=tokens, kl_coef=0.01,
            ).loss.backward()  # fmt: skip
        return logp.grad.numpy()

    np.testing.assert_allclose(grad([[0, 1], [2, 3]]), grad([[0, 1, 2, 3]]), rtol=1e-12)


def test_token_logprobs_and_response_positions():
    logits = torch.randn(1, 5, 11, dtype=torch.float64)
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    want = torch.log_softmax(logits, -1)[0, torch.arange(5), tokens[0]]
    torch.testing.assert_close(token_logprobs(logits, tokens)[0], want.float())
    batch = Batch([[7, 8, 9], [7]], [[4, 5], [6, 2, 3]])
    assert batch.positions.tolist() == [[2, 3, 0], [0, 1, 2]]
    assert batch.tokens.tolist() == [[4, 5, 0], [6, 2, 3]]
    assert batch.mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.input_ids.tolist() == [[7, 8, 9, 4, 5], [7, 6, 2, 3, 0]]


def test_response_only_projection_equals_the_full_forward_on_the_real_model():
    """The policy projects only the response positions onto the vocabulary; its
    log-probs, entropies and gradients equal those of the full model's logits."""
    from exprl_rewards.judges.local_model import default_model_dir
    from exprl_rewards.train.policy import Policy

    policy = Policy(default_model_dir(), reference=False)
    batch = Batch([[1, 504, 3458, 30], [1, 2018]], [[253, 1042, 28, 2], [4875, 30]])

    def full(temperature: float):
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention).logits
        rows = torch.arange(2).unsqueeze(-1)
        logp = torch.log_softmax(logits[rows, batch.positions].float() / temperature, -1)
        return logp.gather(-1, batch.tokens.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)

    def grad_of(logp):
        policy.model.zero_grad()
        (logp * batch.mask).sum().backward()
        return policy.model.get_output_embeddings().weight.grad.clone()

    got_logp, got_entropy = policy.logprobs(batch, temperature=0.7)
    want_logp, want_entropy = full(0.7)
    torch.testing.assert_close(got_logp[batch.mask], want_logp[batch.mask], rtol=1e-5, atol=2e-5)
    # float32 summation order: ~4e-6 relative on entropies of ~6 nats on some CPUs
    torch.testing.assert_close(
        got_entropy[batch.mask], want_entropy[batch.mask].detach(), rtol=1e-5, atol=2e-5
    )
    got, want = grad_of(got_logp), grad_of(full(0.7)[0])  # the tied embedding/head weight
    assert float((got - want).norm() / want.norm()) < 1e-4  # float32 summation order only

    checkpointed = Policy(default_model_dir(), reference=False, gradient_checkpointing=True)
    logp_ckpt, _ = checkpointed.logprobs(batch, temperature=0.7)
    torch.testing.assert_close(logp_ckpt, got_logp, rtol=0, atol=1e-6)
    (logp_ckpt * batch.mask).sum().backward()
    ckpt_grad = checkpointed.model.get_output_embeddings().weight.grad
    assert float((ckpt_grad - want).norm() / want.norm()) < 1e-4
