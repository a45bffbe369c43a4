import numpy as np
import torch

from geoae.checkpoint import make_generators
from geoae.finetune import finetune, joint_loss, predict_arrays
from geoae.geo import haversine_km
from geoae.pretrain import pretrain
from geoae.sdae import GeoSDAE
from tests.helpers import tiny_config, tiny_set


def _train(cfg, train, dev, hook=None):
    """``hook(model)``, if given, makes the ``on_epoch_end`` callback of fine-tuning."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    m = GeoSDAE(train.X.shape[1], 5, cfg.model)
    ok = train.coords
    m.set_coord_scaler(torch.tensor(ok.mean(0)), torch.tensor(ok.std(0)))
    gens = make_generators(0, device)
    pretrain(m, train.X, cfg, device=device, gens=gens)
    res = finetune(m, train, dev, cfg, device=device, gens=gens, ref_median_km=1000.0,
                   on_epoch_end=None if hook is None else hook(m))
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
    snapshots = {}  # the weights at the end of each epoch (1-based)

    def hook(model):
        return lambda stage, k, epoch: snapshots.update({epoch + 1: {n: v.clone() for n, v in model.state_dict().items()}})

    m, res = _train(cfg, train, dev, hook)
    assert res["stopped_early"] and len(res["history"]) < 200
    assert len(res["history"]) - res["best_epoch"] == 3
    # the model left behind is the best epoch's, not the last one run
    last = snapshots[len(res["history"])]
    best = snapshots[res["best_epoch"]]
    assert not all(torch.equal(v, last[n]) for n, v in best.items())
    assert all(torch.equal(v, best[n]) for n, v in m.state_dict().items())


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


def test_geo_soft_targets_spread_by_distance_from_the_user():
    from geoae.finetune import geo_soft_targets

    # class points: New York City, Philadelphia (~130 km away), Los Angeles
    pts = np.array([[40.71, -74.01], [39.95, -75.17], [34.05, -118.24]])
    state = np.array([0, 2, 1, -1])
    coords = np.array([[40.5, -74.4], [34.0, -118.3], [np.nan, np.nan], [40.7, -74.0]])
    assert geo_soft_targets(state, coords, pts, 0.0, 300.0) is None
    t = geo_soft_targets(state, coords, pts, 0.3, 300.0)
    np.testing.assert_allclose(t[:3].sum(1), 1.0, rtol=1e-6)
    assert t[0, 0] >= 0.7 and t[0, 1] > 0.05 and t[0, 1] > 100 * t[0, 2]  # the near class gets the spread mass
    assert t[1, 2] > 0.99                                                    # nothing near LA but LA
    np.testing.assert_array_equal(t[2], [0.0, 1.0, 0.0])                     # no coordinates: one-hot
    np.testing.assert_array_equal(t[3], 0.0)                                 # no state: masked out of the loss
    # far from every class point (exp would underflow unshifted): still a distribution
    far = geo_soft_targets(np.array([0]), np.array([[-40.0, 100.0]]), pts, 0.5, 50.0)
    assert np.isfinite(far).all() and abs(far.sum() - 1) < 1e-6


def test_one_hot_state_target_gives_the_plain_cross_entropy():
    cfg = tiny_config()
    data = tiny_set(20)
    m = GeoSDAE(data.X.shape[1], 5, cfg.model)
    out = m(torch.from_numpy(data.X))
    state = torch.from_numpy(data.state.astype(np.int64))
    state[:3] = -1
    coords = torch.from_numpy(data.coords.astype(np.float32))
    onehot = torch.nn.functional.one_hot(state.clamp(min=0), 5).float()
    _, hard = joint_loss(out, state, coords, cfg, m.coord_std)
    _, soft = joint_loss(out, state, coords, cfg, m.coord_std, onehot)
    assert abs(hard["state"] - soft["state"]) < 1e-6
    smoothed = 0.7 * onehot + 0.3 / 5
    _, other = joint_loss(out, state, coords, cfg, m.coord_std, smoothed)
    assert abs(other["state"] - hard["state"]) > 1e-4


def test_geo_label_smoothing_trains_and_changes_the_model():
    cfg = tiny_config(finetune={"epochs": 2})
    cfg_geo = tiny_config(finetune={"epochs": 2, "geo_label_smoothing": 0.3, "geo_label_km": 300.0})
    train, dev = tiny_set(100, seed=0), tiny_set(60, seed=1)
    pts = np.stack([np.median(train.coords[train.state == c], axis=0) for c in range(5)]).astype(np.float64)
    weights = []
    for c in (cfg, cfg_geo):
        device = torch.device("cpu")
        torch.manual_seed(0)
        m = GeoSDAE(train.X.shape[1], 5, c.model)
        m.set_coord_scaler(torch.tensor(train.coords.mean(0)), torch.tensor(train.coords.std(0)))
        gens = make_generators(0, device)
        finetune(m, train, dev, c, device=device, gens=gens, ref_median_km=1000.0, class_points=pts)
        weights.append(m.state_dict()["state_head.weight"].clone())
    assert torch.isfinite(weights[1]).all() and not torch.equal(weights[0], weights[1])


def test_input_noise_off_fine_tunes_on_clean_inputs(monkeypatch):
    import geoae.finetune as ft_mod

    calls = []
    real = ft_mod.corrupt
    monkeypatch.setattr(ft_mod, "corrupt", lambda *a, **k: calls.append(1) or real(*a, **k))
    train, dev = tiny_set(60, seed=0), tiny_set(30, seed=1)
    for noisy in (True, False):
        calls.clear()
        cfg = tiny_config(finetune={"epochs": 1, "input_noise": noisy})
        m = GeoSDAE(train.X.shape[1], 5, cfg.model)
        m.set_coord_scaler(torch.tensor(train.coords.mean(0)), torch.tensor(train.coords.std(0)))
        finetune(m, train, dev, cfg, device=torch.device("cpu"), gens=make_generators(0, torch.device("cpu")),
                 ref_median_km=1000.0)
        assert bool(calls) == noisy


def test_without_dev_users_the_last_epoch_is_shipped_not_the_lowest_training_loss():
    """The refit (and a run without a dev split) restored the epoch of least *training* loss, noisy
    with input noise and dropout: a 30-epoch refit shipped epoch 20 while recording 30."""
    train = tiny_set(120, seed=0)
    cfg = tiny_config(finetune={"epochs": 30, "lr": 0.05})
    dev = torch.device("cpu")
    torch.manual_seed(0)
    m = GeoSDAE(60, 5, cfg.model)
    m.set_coord_scaler(torch.tensor(train.coords.mean(0)), torch.tensor(train.coords.std(0)))
    last = {}
    r = finetune(m, train, None, cfg, device=dev, gens=make_generators(1, dev), fixed_epochs=True,
                 on_epoch_end=lambda stage, k, epoch: last.update({k: v.clone() for k, v in m.state_dict().items()}))
    losses = [h["train_loss"] for h in r["history"]]
    assert len(losses) == 30 and int(np.argmin(losses)) != 29  # the lowest training loss is not the last epoch
    assert r["best_epoch"] == 30
    assert all(torch.equal(v, last[k]) for k, v in m.state_dict().items())


def test_non_finite_pretrained_weights_are_blamed_on_pretraining_not_fine_tuning():
    """A NaN in the pretrained stack (pretraining's last step diverged after its last loss check, or its
    checkpoint was edited) was reported as "fine-tuning diverged at epoch 1 ...; lower finetune.lr"."""
    import pytest

    from geoae.errors import GeoaeError

    cfg = tiny_config()
    data = tiny_set(40)

    def run(c, poison: bool):
        torch.manual_seed(0)
        m = GeoSDAE(data.X.shape[1], 5, c.model)
        m.set_coord_scaler(torch.tensor(data.coords.mean(0)), torch.tensor(data.coords.std(0)))
        if poison:
            with torch.no_grad():
                m.layers[2].encoder.weight[0, 0] = float("nan")
        finetune(m, data, None, c, device=torch.device("cpu"), gens=make_generators(0, torch.device("cpu")))

    with pytest.raises(GeoaeError, match=r"pretrained weights .* give a loss of nan before its first step: pretraining "
                                         r"diverged .* lower pretrain\.lr \(now 0\.01\)$"):
        run(cfg, poison=True)
    # a divergence of fine-tuning itself still names fine-tuning's setting
    with pytest.raises(GeoaeError, match=r"^fine-tuning diverged at epoch 1: .* lower finetune\.lr \(now 1e\+30\)$"):
        run(tiny_config(finetune={"lr": 1e30}), poison=False)
