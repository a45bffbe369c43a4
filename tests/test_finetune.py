import numpy as np
import torch

from geoae.checkpoint import make_generators
from geoae.finetune import finetune, joint_loss, predict_arrays
from geoae.geo import haversine_km
from geoae.pretrain import pretrain
from geoae.sdae import GeoSDAE
from tests.helpers import tiny_config, tiny_set


def _train(cfg, train, dev):
    device = torch.device("cpu")
    torch.manual_seed(0)
    m = GeoSDAE(train.X.shape[1], 5, cfg.model)
    ok = train.coords
    m.set_coord_scaler(torch.tensor(ok.mean(0)), torch.tensor(ok.std(0)))
    gens = make_generators(0, device)
    pretrain(m, train.X, cfg, device=device, gens=gens)
    res = finetune(m, train, dev, cfg, device=device, gens=gens, ref_median_km=1000.0)
    return m, res


def test_joint_finetuning_beats_majority_state_and_median_point():
    cfg = tiny_config()
    train, dev, test = tiny_set(300, seed=0), tiny_set(100, seed=1), tiny_set(200, seed=2)
    m, res = _train(cfg, train, dev)
    probs, coords = predict_arrays(m, test.X, torch.device("cpu"))
    acc = (probs.argmax(1) == test.state).mean()
    majority = (test.state == np.bincount(train.state).argmax()).mean()
    assert acc > majority + 0.2, (acc, majority)
    err = haversine_km(coords[:, 0], coords[:, 1], test.coords[:, 0], test.coords[:, 1])
    med = np.median(train.coords, axis=0)
    base = haversine_km(med[0], med[1], test.coords[:, 0], test.coords[:, 1])
    assert np.median(err) < 0.5 * np.median(base)
    assert res["best_epoch"] >= 1 and len(res["history"]) >= 1


def test_unknown_targets_are_ignored_by_the_loss():
    cfg = tiny_config()
    data = tiny_set(20)
    m = GeoSDAE(data.X.shape[1], 5, cfg.model)
    x = torch.from_numpy(data.X)
    out = m(x)
    state = torch.full((20,), -1, dtype=torch.long)
    coords = torch.full((20, 2), float("nan"))
    loss, parts = joint_loss(out, state, coords, cfg, m.coord_std)
    assert set(parts) == {"recon"} and torch.isfinite(loss)
    loss.backward()


def test_early_stopping_stops_and_keeps_best_epoch():
    cfg = tiny_config(finetune={"epochs": 200, "patience": 3, "lr": 0.05})
    train, dev = tiny_set(100, seed=0), tiny_set(60, seed=1)
    m, res = _train(cfg, train, dev)
    assert res["stopped_early"] and len(res["history"]) < 200
    assert len(res["history"]) - res["best_epoch"] == 3


def test_location_points_keep_sure_users_on_their_state_point():
    from geoae.finetune import location_points
    from geoae.geo import LocationRisk

    lat = np.array([34.05, 34.05, 37.77, 40.71, 40.71])
    lon = np.array([-118.24, -118.24, -122.42, -74.01, -74.01])
    loc = LocationRisk(cap_km=500).fit(lat, lon, ["CA", "CA", "CA", "NY", "NY"], ["CA", "NY"])
    class_points = np.array([[36.0, -120.0], [40.71, -74.01]])
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.1, 0.9]])
    got = location_points(probs, None, class_points, loc, gate=0.6, tau_km=None)
    np.testing.assert_array_equal(got[[0, 2]], class_points[[0, 1]])  # sure: the state's own point
    assert not np.allclose(got[1], class_points[0])                      # unsure: a training cell
    assert any(np.allclose(got[1], c) for c in loc.candidates_)
    # gate 0: nobody is unsure, the rule is the state-median point
    np.testing.assert_array_equal(location_points(probs, None, class_points, loc, 0.0, None), class_points[probs.argmax(1)])


def test_freeze_first_layer_keeps_the_pretrained_first_weight_and_trains_the_rest():
    cfg = tiny_config(finetune={"epochs": 3, "freeze_first_layer": True})
    train, dev = tiny_set(100, seed=0), tiny_set(60, seed=1)
    device = torch.device("cpu")
    torch.manual_seed(0)
    m = GeoSDAE(train.X.shape[1], 5, cfg.model)
    m.set_coord_scaler(torch.tensor(train.coords.mean(0)), torch.tensor(train.coords.std(0)))
    gens = make_generators(0, device)
    pretrain(m, train.X, cfg, device=device, gens=gens)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    finetune(m, train, dev, cfg, device=device, gens=gens, ref_median_km=1000.0)
    after = m.state_dict()
    assert torch.equal(after["layers.0.encoder.weight"], before["layers.0.encoder.weight"])
    for k in ("layers.0.encoder.bias", "layers.1.encoder.weight", "state_head.weight"):
        assert not torch.equal(after[k], before[k]), k
