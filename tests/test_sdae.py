import pytest
import torch

from geoae.finetune import _as_model_input
from geoae.config import ModelConfig, NoiseConfig
from geoae.sdae import GeoSDAE, GeoSDAEEnsemble, corrupt


@pytest.mark.parametrize("kind", ["masking", "dropout", "salt_pepper"])
@pytest.mark.parametrize("level", [0.1, 0.5])
def test_corruption_rate_matches_level(kind, level):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 500) * 0.8 + 0.1  # strictly inside (0, 1): every changed entry is visible
    y = corrupt(x, kind, level, g)
    if kind == "dropout":
        changed = (y == 0).float().mean().item()
        kept = y[y != 0] / x[y != 0]
        assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - level)))
    else:
        changed = (y != x).float().mean().item()
    assert abs(changed - level) < 0.01
    assert not torch.equal(x, y)


def test_salt_pepper_uses_extremes_and_gaussian_std():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 300) * 0.5 + 0.25
    y = corrupt(x, "salt_pepper", 0.3, g)
    hit = y != x
    vals = y[hit]
    assert torch.all((vals == x.min()) | (vals == x.max()))
    assert 0.4 < (vals == x.max()).float().mean().item() < 0.6
    z = corrupt(x, "gaussian", 0.2, g) - x
    assert abs(z.std().item() - 0.2) < 0.01 and abs(z.mean().item()) < 0.01


def test_corrupt_does_not_modify_input_and_none_is_identity():
    x = torch.rand(10, 10)
    x0 = x.clone()
    corrupt(x, "masking", 0.5)
    assert torch.equal(x, x0)
    assert corrupt(x, "none", 0.5) is x
    assert corrupt(x, "masking", 0.0) is x


def test_model_shapes_tied_weights_and_coordinate_scaler():
    cfg = ModelConfig(hidden=[32, 16, 8], noise=[NoiseConfig()] * 3)
    m = GeoSDAE(50, 5, cfg)
    m.set_coord_scaler(torch.tensor([38.0, -95.0]), torch.tensor([5.0, 15.0]))
    out = m(torch.rand(4, 50))
    assert out["h"].shape == (4, 8)
    assert out["state_logits"].shape == (4, 5)
    assert out["recon"].shape == (4, 50)
    # A fresh regressor starts at the training mean.
    assert torch.allclose(out["coords"], torch.tensor([[38.0, -95.0]] * 4))
    n_tied = sum(p.numel() for p in m.parameters())
    untied = GeoSDAE(50, 5, ModelConfig(hidden=[32, 16, 8], noise=[NoiseConfig()] * 3, tied_weights=False))
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 50 * 32 + 32 * 16 + 16 * 8


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_inference_matches_dense_and_is_inference_only():
    import scipy.sparse as sp

    cfg = ModelConfig(hidden=[32, 16, 8], noise=[NoiseConfig()] * 3)
    torch.manual_seed(0)
    m = GeoSDAE(200, 5, cfg).eval()
    X = sp.random(30, 200, density=0.03, format="csr", dtype="float32", random_state=0)
    dense = m(torch.from_numpy(X.toarray()), reconstruct=False)
    xs = torch.sparse_csr_tensor(torch.from_numpy(X.indptr).long(), torch.from_numpy(X.indices).long(),
                                 torch.from_numpy(X.data), size=X.shape, check_invariants=True)
    sparse = m(xs, reconstruct=False)
    for k in ("h", "state_logits", "coords"):
        assert torch.allclose(dense[k], sparse[k], atol=1e-5), k
    with pytest.raises(ValueError, match="inference only"):
        m(xs)

    # The ensemble's one-pass first layer over all members equals averaging the members' dense outputs.
    torch.manual_seed(1)
    members = [GeoSDAE(200, 5, cfg).eval() for _ in range(3)]
    for mm in members:  # heads start at zero for coordinates; give them something to average
        torch.nn.init.normal_(mm.coord_head.weight)
    ens = GeoSDAEEnsemble(members).eval()
    got = ens(xs)
    probs = torch.stack([torch.softmax(mm(torch.from_numpy(X.toarray()), reconstruct=False)["state_logits"], 1)
                         for mm in members]).mean(0)
    coords = torch.stack([mm(torch.from_numpy(X.toarray()), reconstruct=False)["coords"] for mm in members]).mean(0)
    assert torch.allclose(torch.softmax(got["state_logits"], 1), probs, atol=1e-5)
    assert torch.allclose(got["coords"], coords, atol=1e-4)
    assert torch.allclose(got["coords"], ens(torch.from_numpy(X.toarray()))["coords"], atol=1e-4)
    # The cached side-by-side first layer follows in-place weight updates (optimizer steps, loads).
    with torch.no_grad():
        members[0].layers[0].encoder.weight.mul_(3.0)
    members[1].load_state_dict(members[2].state_dict())
    assert torch.allclose(ens(xs)["coords"], ens(torch.from_numpy(X.toarray()))["coords"], atol=1e-4)
    assert not torch.allclose(ens(xs)["coords"], got["coords"], atol=1e-4)
    with torch.no_grad():
        m.layers[0].encoder.weight.mul_(2.0)
    assert torch.allclose(m(xs, reconstruct=False)["state_logits"],
                          m(torch.from_numpy(X.toarray()), reconstruct=False)["state_logits"], atol=1e-5)
    assert not torch.allclose(m(xs, reconstruct=False)["state_logits"], sparse["state_logits"], atol=1e-5)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_ensemble_with_a_shared_first_layer_computes_it_once():
    import scipy.sparse as sp

    from geoae.sdae import first_layer_rows

    cfg = ModelConfig(hidden=[32, 16, 8], noise=[NoiseConfig()] * 3)
    torch.manual_seed(0)
    members = [GeoSDAE(200, 5, cfg).eval() for _ in range(3)]
    for mm in members[1:]:  # same first weight, everything else (first bias included) differs
        mm.layers[0].encoder.weight.data.copy_(members[0].layers[0].encoder.weight.data)
    for mm in members:
        torch.nn.init.normal_(mm.coord_head.weight)
        torch.nn.init.normal_(mm.layers[0].encoder.bias)
    ens = GeoSDAEEnsemble(members).eval()
    X = sp.random(30, 200, density=0.03, format="csr", dtype="float32", random_state=0)
    xs = torch.sparse_csr_tensor(torch.from_numpy(X.indptr).long(), torch.from_numpy(X.indices).long(),
                                 torch.from_numpy(X.data), size=X.shape, check_invariants=True)
    assert first_layer_rows(ens, list(ens.members)).shape == (200, 32)  # one copy, not three side by side
    dense = ens(torch.from_numpy(X.toarray()))
    got = ens(xs)
    assert torch.allclose(got["coords"], dense["coords"], atol=1e-4)
    assert torch.allclose(got["state_logits"], dense["state_logits"], atol=1e-4)
    # Once one member's first weight moves, the members are computed side by side again.
    with torch.no_grad():
        members[2].layers[0].encoder.weight.add_(0.5)
    assert first_layer_rows(ens, list(ens.members)).shape == (200, 96)
    assert torch.allclose(ens(xs)["coords"], ens(torch.from_numpy(X.toarray()))["coords"], atol=1e-4)


def test_sparse_rows_product_is_the_matrix_product_and_half_rows_stay_close():
    import scipy.sparse as sp

    from geoae.sdae import sparse_rows_product

    torch.manual_seed(0)
    rows = torch.randn(300, 24)
    X = sp.random(40, 300, density=0.05, format="lil", dtype="float32", random_state=1)
    X[[3, 17]] = 0  # users without a known word: empty bags must give zero rows
    X = X.tocsr()
    X.eliminate_zeros()
    dense = torch.from_numpy(X.toarray()) @ rows
    csr = torch.sparse_csr_tensor(torch.from_numpy(X.indptr).long(), torch.from_numpy(X.indices).long(),
                                  torch.from_numpy(X.data), size=X.shape, check_invariants=True)
    for x in (csr, torch.from_numpy(X.toarray()).to_sparse()):  # CSR as predict builds it, and COO
        got = sparse_rows_product(x, rows)
        assert got.dtype == torch.float32 and got.shape == (40, 24)
        assert torch.allclose(got, dense, atol=1e-5)
        assert not got[3].any() and not got[17].any()
    half = sparse_rows_product(csr, rows.half())
    assert half.dtype == torch.float32
    assert torch.allclose(half, dense, atol=5e-3, rtol=5e-3) and not torch.equal(half, dense)
    # No known word in the whole batch: numpy's empty index arrays have stride 0, which torch
    # before 2.13 refused as CSR indices; the model input gets fresh empty tensors instead.
    e = _as_model_input(sp.csr_matrix((2, 300), dtype="float32"), torch.device("cpu"))
    assert e.col_indices().stride() == (1,) and e.values().stride() == (1,)
    assert torch.equal(sparse_rows_product(e, rows), torch.zeros(2, 24))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_ensemble_half_first_layer_is_a_runtime_copy():
    import scipy.sparse as sp

    from geoae.sdae import first_layer_rows

    cfg = ModelConfig(hidden=[32, 16, 8], noise=[NoiseConfig()] * 3)
    torch.manual_seed(0)
    ens = GeoSDAEEnsemble([GeoSDAE(200, 5, cfg).eval() for _ in range(2)]).eval()
    X = sp.random(30, 200, density=0.05, format="csr", dtype="float32", random_state=0)
    xs = torch.sparse_csr_tensor(torch.from_numpy(X.indptr).long(), torch.from_numpy(X.indices).long(),
                                 torch.from_numpy(X.data), size=X.shape, check_invariants=True)
    full = ens(xs)
    ens.first_layer_dtype = torch.float16
    half = ens(xs)
    assert first_layer_rows(ens, list(ens.members), torch.float16).dtype == torch.float16
    assert all(m.layers[0].encoder.weight.dtype == torch.float32 for m in ens.members)  # the weights stay float32
    assert "first_layer_dtype" not in ens.state_dict()
    assert torch.allclose(torch.softmax(half["state_logits"], 1), torch.softmax(full["state_logits"], 1), atol=1e-3)
    assert torch.allclose(half["coords"], full["coords"], atol=1e-2)
    # close, not equal: the forward pass really ran on the float16 copy (float32 weights would give the same bits)
    assert not torch.equal(half["state_logits"], full["state_logits"])


def test_hidden_dropout_acts_between_encoder_layers_only_while_training():
    from geoae.config import ConfigError, load_config

    torch.manual_seed(0)
    plain = GeoSDAE(40, 3, ModelConfig(hidden=[16, 8, 4], noise=[NoiseConfig()] * 3))
    assert plain.hidden_dropout is None  # the default model has no extra module and draws no extra numbers
    m = GeoSDAE(40, 3, ModelConfig(hidden=[16, 8, 4], noise=[NoiseConfig()] * 3, hidden_dropout=0.5))
    x = torch.rand(6, 40)
    m.train()
    a, b = m(x)["state_logits"], m(x)["state_logits"]
    assert not torch.equal(a, b)
    m.eval()
    assert torch.equal(m(x)["state_logits"], m(x)["state_logits"])
    # Only between encoder layers: with a single layer there is nothing to drop (head dropout off).
    one = GeoSDAE(40, 3, ModelConfig(hidden=[4], noise=[NoiseConfig()], hidden_dropout=0.5, head_dropout=0.0)).train()
    assert torch.equal(one(x)["state_logits"], one(x)["state_logits"])
    with pytest.raises(ConfigError, match="model.hidden_dropout"):
        load_config(None, ["model.hidden_dropout=1.0"])
