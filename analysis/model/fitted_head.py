"""A class head fitted on top of VGG16's convolutional features: a logistic regression on the channel means of the
last pooled map (pool5, 512 channels), written into the classifier's three layers so that the result is a plain
torchvision VGG16 state dict with an N-way head, loaded like any checkpoint.

    fc6 (25088 -> 4096): unit c < 512 averages channel c over pool5's 7 x 7 cells, the others are zero
    fc7 (4096 -> 4096):  the identity on the first 512 units
    fc8 (4096 -> N):     the fitted logistic regression, standardisation folded in

Every value entering fc6 is a ReLU output, so the two ReLUs between them change nothing and a class logit is exactly
b_k + sum_c W_kc * mean(pool5_c): a channel's gradient x activation contribution at conv5_3 is its term of that sum,
so the channels a report ranks as drivers are the ones the regression leans on. Cost: one forward to pool5 per
training image, then a few hundred L-BFGS steps on (N images x 512) numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FittedHead:
    weight: torch.Tensor  # (K, C) on the raw channel means
    bias: torch.Tensor  # (K,)
    train_accuracy: float
    n_images: int


@torch.no_grad()
def compute_channel_means(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalized images -> (B, C) the mean of each channel of the 7 x 7 map fc6 reads (pool5 after
    the adaptive average pool), as the pooling head computes it."""
    y = model.avgpool(model.features(x))  # (B, C, 7, 7)
    return y.flatten(2).mean(2)


def fit_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float = 1e-2) -> FittedHead:
    """Multinomial logistic regression on (B, C) features, standardised, with an L2 penalty; labels (B,) int64."""
    mu, sd = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mu) / sd  # (B, C)
    w = torch.zeros(n_classes, z.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = nn.functional.cross_entropy(z @ w.T + b, labels) + l2 * (w * w).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    w, b = w.detach(), b.detach()
    accuracy = float(((z @ w.T + b).argmax(1) == labels).float().mean())
    weight = w / sd  # fold the standardisation into the weights: w (f - mu) / sd = (w / sd) f - (w / sd) . mu
    return FittedHead(weight, b - weight @ mu, accuracy, len(labels))


def make_pooling_state(model: nn.Module, head: FittedHead) -> dict[str, torch.Tensor]:
    """The model's state dict with the classifier replaced by the channel-mean pooling and the fitted head."""
    fc6, fc7 = model.classifier[0], model.classifier[3]
    c = head.weight.shape[1]
    cells = fc6.in_features // c  # 49: pool5 is flattened channel by channel
    w6 = torch.zeros(fc6.out_features, fc6.in_features)
    w6[:c] = torch.kron(torch.eye(c), torch.full((1, cells), 1.0 / cells))
    w7 = torch.zeros(fc7.out_features, fc7.in_features)
    w7[:c, :c] = torch.eye(c)
    w8 = torch.zeros(head.weight.shape[0], fc7.out_features)
    w8[:, :c] = head.weight
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    state.update(
        {
            "classifier.0.weight": w6,
            "classifier.0.bias": torch.zeros(fc6.out_features),
            "classifier.3.weight": w7,
            "classifier.3.bias": torch.zeros(fc7.out_features),
            "classifier.6.weight": w8,
            "classifier.6.bias": head.bias.clone(),
        }
    )
    return state
