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
    cfg = tiny_config()
    data = tiny_set()
    dev = torch.device("cpu")
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        m = GeoSDAE(data.X.shape[1], 5, cfg.model)
        pretrain(m, data.X, cfg, device=dev, gens=make_generators(0, dev))
        weights.append(m.layers[0].encoder.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
