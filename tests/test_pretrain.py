import torch

from geoae.checkpoint import make_generators
from geoae.pretrain import pretrain
from geoae.sdae import GeoSDAE
from tests.helpers import tiny_config, tiny_set


def test_pretraining_loss_falls_for_every_layer():
    cfg = tiny_config(pretrain={"epochs": 8})
    data = tiny_set()
    model = GeoSDAE(data.X.shape[1], 5, cfg.model)
    hist = pretrain(model, data.X, cfg, device=torch.device("cpu"), gens=make_generators(0, torch.device("cpu")))
    assert len(hist) == 3 * 8
    for layer in (1, 2, 3):
        losses = [h["recon_loss"] for h in hist if h["layer"] == layer]
        assert losses[-1] < 0.8 * losses[0], (layer, losses)


def test_pretraining_changes_only_after_training_and_is_seeded():
    # Every layer's autoencoder weights move (the heads are fine-tuning's, untouched here); the
    # same seed gives the same weights whatever the global RNG held before, another seed others.
    cfg = tiny_config()
    data = tiny_set()
    dev = torch.device("cpu")
    torch.manual_seed(123)
    init = {k: v.clone() for k, v in GeoSDAE(data.X.shape[1], 5, cfg.model).state_dict().items()}

    def run(seed, global_seed):
        m = GeoSDAE(data.X.shape[1], 5, cfg.model)
        m.load_state_dict(init)
        torch.manual_seed(global_seed)
        pretrain(m, data.X, cfg, device=dev, gens=make_generators(seed, dev))
        return m.state_dict()

    a, b, other = run(0, 1), run(0, 2), run(1, 1)
    for k in range(3):
        for name in (f"layers.{k}.encoder.weight", f"layers.{k}.encoder.bias", f"layers.{k}.decoder_bias"):
            assert not torch.equal(a[name], init[name]), name
    for name in ("state_head.weight", "state_head.bias", "coord_head.weight", "coord_head.bias"):
        assert torch.equal(a[name], init[name]), name
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.encoder.weight"], other["layers.0.encoder.weight"])
