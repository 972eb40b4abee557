"""NoProp-DT is the paper's algorithm: isolated block gradients, q-sampled training inputs, matching inference."""
import pytest
import torch

from bench.config import METHODS
from bench.engines import BackpropEngine, NoPropEngine
from bench.training import build_engine, build_model, schedule_from
from models.noprop import NoPropDT, class_prototypes
from tests.helpers import synthetic_splits, tiny_config


def noprop(embedding="onehot", T=3, decoder=None, dataset="mnist"):
    cfg = tiny_config(**{"noprop.T": T, "noprop.embedding": embedding})
    data = synthetic_splits(dataset)
    prototypes = class_prototypes(data.train_x, data.train_y, 10) if embedding == "prototype" else None
    return NoPropDT(data.in_channels, data.image_size, 10, schedule_from(cfg), embedding=embedding,
                    prototypes=prototypes, decoder_hidden=decoder), data


@pytest.mark.parametrize("embedding", ["onehot", "learned", "prototype"])
@pytest.mark.parametrize("decoder", [None, 16])
def test_block_loss_touches_only_its_own_block(embedding, decoder):
    model, data = noprop(embedding, decoder=decoder)
    for t in range(1, model.T + 1):
        model.zero_grad(set_to_none=True)
        weighted, _ = model.block_loss(t, data.train_x[:8], data.train_y[:8])
        weighted.backward()
        for s, block in enumerate(model.blocks, start=1):
            grads = [p.grad for p in block.parameters()]
            if s == t:
                assert all(g is not None for g in grads), "block t must be trained by its own loss"
                assert sum(g.abs().sum() for g in grads) > 0
            else:
                assert all(g is None for g in grads), f"block {t}'s loss leaked into block {s}"
        assert all(p.grad is None for p in model.head.parameters()), "the head is trained by its own loss"
        if embedding == "learned":  # documented: the shared target embedding is learned from every block
            assert model.learned_embed.grad is not None


def test_shared_loss_trains_only_head_and_embedding():
    model, data = noprop("learned")
    loss, ce, kl = model.shared_loss(data.train_y[:8])
    loss.backward()
    assert all(p.grad is None for b in model.blocks for p in b.parameters())
    assert model.head.weight.grad is not None and model.learned_embed.grad is not None
    assert kl.item() >= 0


class OracleBlock(torch.nn.Module):
    """A perfect denoiser: returns the true class embedding, read from pixel (0, 0)."""

    def forward(self, x, z, embed):
        y = x[:, 0, 0, 0].long()
        logits = torch.nn.functional.one_hot(y, 10).float() * 10
        return embed[y].float(), logits


def test_training_input_is_sampled_from_q_not_from_another_block(monkeypatch):
    """Block t is trained on z_{t−1} ~ N(√ᾱ_{t−1}·u_y, (1−ᾱ_{t−1})I), whatever the other blocks do."""
    model, _ = noprop(T=4)
    model.blocks = torch.nn.ModuleList(OracleBlock() for _ in range(4))
    y = torch.arange(10).repeat(2000)
    x = torch.zeros(len(y), 1, 28, 28)
    seen = {}
    for t in range(1, 5):
        model.blocks[t - 1].register_forward_pre_hook(lambda m, args, t=t: seen.__setitem__(t, args[1]))
        model.block_loss(t, x, y)
        ab = model.alpha_bar[t - 1]
        u = model.embed[y]
        resid = (seen[t] - ab.sqrt() * u) / (1 - ab).sqrt()
        assert resid.mean().abs() < 0.02 and (resid.std() - 1).abs() < 0.02


def test_inference_step_t_sees_the_signal_level_block_t_was_trained_with():
    """With perfect blocks, the chain's input to block t has exactly the training distribution q(z_{t−1}|y)."""
    model, _ = noprop(T=5)
    model.blocks = torch.nn.ModuleList(OracleBlock() for _ in range(5))
    y = torch.arange(10).repeat(3000)
    x = torch.zeros(len(y), 1, 28, 28)
    x[:, 0, 0, 0] = y.float()
    inputs = {}
    for t, block in enumerate(model.blocks, start=1):
        block.register_forward_pre_hook(lambda m, args, t=t: inputs.__setitem__(t, args[1]))
    with torch.no_grad():  # identity head: the logits are z_T itself
        model.head.weight.copy_(torch.eye(10))
        model.head.bias.zero_()
    torch.manual_seed(0)
    logits = model(x, noise=True)
    for t in range(1, 6):
        ab = model.alpha_bar[t - 1]
        resid = (inputs[t] - ab.sqrt() * model.embed[y]) / (1 - ab).sqrt()
        assert resid.mean().abs() < 0.02, f"step {t}: mean off"
        assert (resid.std() - 1).abs() < 0.02, f"step {t}: variance off"
    assert (logits.argmax(1) == y).float().mean() > 0.99


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_evaluates(dataset, method):
    cfg = tiny_config()
    data = synthetic_splits(dataset)
    model = build_model(method, cfg, data)
    engine = build_engine(method, model, cfg, torch.device("cpu"), "fp32", seed=0)
    assert isinstance(engine, NoPropEngine if method.startswith("noprop") else BackpropEngine)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = engine.train_epoch(data.train_x, data.train_y, epoch=1, epochs=1)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    assert changed >= len(before) - 1  # onehot: every trainable tensor moves
    out = engine.evaluate(data.val_x, data.val_y, diagnostics=True)
    assert 0.0 <= out["acc"] <= 1.0
    if method != "backprop_cnn":
        with torch.no_grad():
            logits = model(data.val_x.contiguous(memory_format=torch.channels_last))
        assert logits.shape == (len(data.val_y), 10)
        assert len([k for k in out if k.startswith("acc_after_k/")]) == cfg["noprop"]["T"]


def test_prototypes_are_the_most_central_class_members():
    x = torch.tensor([0.0, 1.0, 10.0, 2.0, 5.0, 6.0, 7.0, 20.0]).view(8, 1, 1, 1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # class 0: median distance to the others is 2 (0), 1 (1), 9 (10), 2 (2); class 1: 2, 1, 2, 14
    assert class_prototypes(x, y, 2).flatten().tolist() == [1.0, 6.0]


def test_diagnostics_give_known_values_for_a_perfect_chain():
    """Oracle blocks + identity head: every accuracy is 1, embeddings are one-hot (norm 1, distance √2)."""
    from bench.engines import chain_metrics

    model, _ = noprop(T=3)
    model.blocks = torch.nn.ModuleList(OracleBlock() for _ in range(3))
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(10))
        model.head.bias.zero_()
    y = torch.arange(10).repeat(20)
    x = torch.zeros(len(y), 1, 28, 28)
    x[:, 0, 0, 0] = y.float()
    out = chain_metrics(model, iter([(x, y)]), torch.device("cpu"), "fp32", samples=2, diagnostics=True,
                        block_mse=False)
    assert out["acc"] == 1.0 and out["acc_deterministic"] == 1.0
    assert out["acc_after_k/03"] == 1.0
    assert out["last_block_from_noise_acc"] == 1.0  # the oracle reads the class from x, not from z
    assert out["head_on_clean_acc"] == 1.0
    assert out["embed_norm_mean"] == pytest.approx(1.0)
    assert out["embed_min_pairwise_dist"] == pytest.approx(2 ** 0.5)
    # after one step from pure noise (ᾱ_1 small) the head on z_1 is far from perfect: the curve rises
    assert out["acc_after_k/01"] < out["acc_after_k/03"]


def test_a_useless_head_is_seen_by_the_diagnostics():
    from bench.engines import embedding_health

    model, _ = noprop(T=2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(10.0))  # always predicts class 9
    assert embedding_health(model)["head_on_clean_acc"] == pytest.approx(0.1)


def test_backprop_blocks_reads_out_the_last_blocks_logits_through_the_whole_chain():
    cfg = tiny_config()
    data = synthetic_splits()
    model = build_model("backprop_blocks", cfg, data).eval()
    assert model.readout == "last_block" and model.head is None
    x = data.train_x[:8]
    z = model.initial_latent(8, False, x)
    for t in range(1, model.T):
        z, _ = model.step(t, x, z, noise=False)
    _, expected = model.blocks[-1](x, z, model.embed)
    assert torch.allclose(model(x, noise=False), expected.float())
    # end to end: the loss on the readout reaches every block
    model.train()
    torch.nn.functional.cross_entropy(model(x), data.train_y[:8]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks[0].image.parameters())


def test_noprop_variants_keep_the_head_readout_and_unknown_readouts_are_errors():
    cfg = tiny_config()
    data = synthetic_splits()
    assert build_model("noprop_dt", cfg, data).readout == "head"
    with pytest.raises(ValueError, match="unknown readout"):
        NoPropDT(1, 28, 10, schedule_from(cfg), readout="softmax")
