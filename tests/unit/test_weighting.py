import pytest
import torch

from dynaseg.weighting import FixedWeighting, FSFWeighting, SCFWeighting


@pytest.mark.parametrize("q", [1, 3, 17, 100])
def test_mu_of_each_strategy(q):
    n_labels = torch.tensor(q)
    assert float(FixedWeighting(5.0)(n_labels)) == 5.0
    assert float(FSFWeighting(15.0)(n_labels)) == pytest.approx(q / 15.0)
    assert float(SCFWeighting(50.0)(n_labels)) == pytest.approx(50.0 / q)


def test_fsf_and_scf_move_in_opposite_directions_as_clusters_merge():
    many, few = torch.tensor(40), torch.tensor(4)
    assert FSFWeighting()(few) < FSFWeighting()(many)
    assert SCFWeighting()(few) > SCFWeighting()(many)


@pytest.mark.parametrize("make", [lambda: FSFWeighting(0), lambda: SCFWeighting(-1.0)])
def test_alpha_must_be_positive(make):
    with pytest.raises(ValueError, match="alpha must be > 0"):
        make()


def test_mu_must_not_be_negative():
    with pytest.raises(ValueError, match="mu must be >= 0"):
        FixedWeighting(-1.0)
