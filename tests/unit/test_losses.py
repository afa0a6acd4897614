import math

import torch

from dynaseg.losses import continuity_loss, similarity_loss


def test_similarity_loss_matches_hand_computed_cross_entropy():
    # 2 clusters, 1×2 image; pixel 0 logits (2, 0) target 0, pixel 1 logits (1, 3) target 1.
    response = torch.tensor([[[[2.0, 1.0]], [[0.0, 3.0]]]])
    target = torch.tensor([[[0, 1]]])
    pixel0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    pixel1 = -math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    assert math.isclose(
        float(similarity_loss(response, target)), (pixel0 + pixel1) / 2, rel_tol=1e-6
    )


def test_continuity_loss_is_mean_vertical_plus_mean_horizontal_over_channels():
    # 2 channels, 2×3 map.
    c0 = [[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]
    c1 = [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0]]
    response = torch.tensor([[c0, c1]])
    vertical = (abs(2 - 0) + abs(2 - 1) + abs(2 - 3) + 0 + abs(5 - 1) + 0) / 6  # 2 ch × 1 × 3
    horizontal = (1 + 2 + 0 + 0 + 0 + 0 + 4 + 4) / 8  # 2 ch × 2 × 2
    assert math.isclose(float(continuity_loss(response)), vertical + horizontal, rel_tol=1e-6)


def test_constant_map_has_zero_continuity_loss():
    assert float(continuity_loss(torch.full((1, 4, 5, 6), 3.0))) == 0.0


def test_gradients_flow_through_both_terms():
    torch.manual_seed(0)
    response = torch.randn(1, 5, 6, 7, requires_grad=True)
    target = response.detach().argmax(1)
    for term in (similarity_loss(response, target), continuity_loss(response)):
        (grad,) = torch.autograd.grad(term, response)
        assert grad.abs().sum() > 0
    mu = 2.0
    total = similarity_loss(response, target) + mu * continuity_loss(response)
    (grad_total,) = torch.autograd.grad(total, response)
    (grad_sim,) = torch.autograd.grad(similarity_loss(response, target), response)
    (grad_con,) = torch.autograd.grad(continuity_loss(response), response)
    torch.testing.assert_close(grad_total, grad_sim + mu * grad_con)
