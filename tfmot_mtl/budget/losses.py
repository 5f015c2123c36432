"""Budget and parameter-sharing penalties on the domain switches, with their STE gradients.

Notation: for switch layer l (one per channel group) and domain d, s[d, l, c] ∈ {0, 1} is
the binary switch of channel c and w[l, c] > 0 the channel's cost: 1 for the "channels"
measure, its (first-order) MAC cost for the "macs" measure. Sums run over the switches
that serve the domain(s) involved.

- usage_d = Σ w·s_d / Σ w                                  (fraction of channels or MACs on)
- budget  P = Σ_d λ_d · max(0, usage_d − β)                (λ_d: multiplier, grows while violated)
- sharing over the switches that serve ≥ 2 domains, with I = Σ w·Π_d s_d (channels every
  domain uses), U = Σ w·(1 − Π_d (1 − s_d)) (channels some domain uses),
  M = mean_d Σ w·s_d and W = Σ w:
    "intersection": (M − I) / W        a domain's mean share of channels not used by all
    "union":        U / W              the fraction of channels that survive the union mask
    "jaccard":      1 − I / U          (0 when U = 0)

Gradients are the straight-through ones (∂s/∂ŝ = 1), computed in closed form with numpy:
the penalties depend on the switches only, so `BudgetCallback` applies them as a separate
step after each optimizer step (operator splitting) and works with any compiled model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHARING = ("intersection", "union", "jaccard")
MEASURES = ("channels", "macs")


@dataclass
class SwitchInfo:
    """One DomainSwitch: its layer, channel group, served domains and channel costs."""

    layer: object
    group: str
    channels: np.ndarray  # group channel of each latent column
    domains: list[int]
    cost: np.ndarray  # (C,) per-channel cost w


def check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a number in (0, 1] (the fraction of channels or MACs a domain "
                         f"may use), got {budget!r}")
    return float(budget)


def check_sharing(sharing: str | None) -> str | None:
    if sharing not in (None, "none") + SHARING:
        raise ValueError(f"sharing must be None or one of {SHARING}, got {sharing!r}")
    return None if sharing == "none" else sharing


def usage(switches: list[np.ndarray], costs: list[np.ndarray], served: list[list[int]],
          num_domains: int) -> np.ndarray:
    """(D,) cost-weighted fraction of switches on per domain. switches[l]: (D, C) in {0, 1}."""
    on, total = np.zeros(num_domains), np.zeros(num_domains)
    for s, w, doms in zip(switches, costs, served):
        for d in doms:
            on[d] += float(np.dot(w, s[d]))
            total[d] += float(w.sum())
    return np.divide(on, total, out=np.zeros(num_domains), where=total > 0)


def budget_penalty(usage_d: np.ndarray, budget: float, lambdas: np.ndarray) -> float:
    """Σ_d λ_d · max(0, usage_d − β)."""
    return float(np.sum(np.asarray(lambdas) * np.maximum(0.0, np.asarray(usage_d) - budget)))


def budget_grads(usage_d, budget, lambdas, switches, costs, served) -> list[np.ndarray]:
    """∂P/∂ŝ per switch (D, C): λ_d · w_c / Σw_d where domain d is over budget, else 0."""
    num_domains = len(usage_d)
    total = np.zeros(num_domains)
    for w, doms in zip(costs, served):
        total[doms] += w.sum()
    grads = []
    for s, w, doms in zip(switches, costs, served):
        g = np.zeros(s.shape, np.float64)
        for d in doms:
            if usage_d[d] > budget and total[d] > 0:
                g[d] = lambdas[d] * w / total[d]
        grads.append(g)
    return grads


def _sharing_terms(switches, costs, served):
    terms = []
    for s, w, doms in zip(switches, costs, served):
        if len(doms) < 2:
            continue
        terms.append((np.asarray(s, np.float64)[doms], w.astype(np.float64), doms))
    return terms


def sharing_loss(switches: list[np.ndarray], kind: str, costs: list[np.ndarray] | None = None,
                 served: list[list[int]] | None = None) -> float:
    """The sharing loss `kind` ("intersection", "union", "jaccard") of the module docstring."""
    return _sharing(switches, kind, costs, served, with_grad=False)[0]


def sharing_grads(switches, kind, costs=None, served=None) -> list[np.ndarray]:
    """STE gradient of `sharing_loss` w.r.t. each switch latent, (D, C) per switch."""
    return _sharing(switches, kind, costs, served, with_grad=True)[1]


def _sharing(switches, kind, costs, served, with_grad):
    check_sharing(kind)
    switches = [np.asarray(s, np.float64) for s in switches]
    costs = costs if costs is not None else [np.ones(s.shape[1]) for s in switches]
    served = served if served is not None else [list(range(s.shape[0])) for s in switches]
    terms = _sharing_terms(switches, costs, served)
    inter = union = mean = weight = 0.0
    for s, w, _ in terms:
        inter += float(w @ np.prod(s, 0))
        union += float(w @ (1 - np.prod(1 - s, 0)))
        mean += float(np.mean(s @ w))
        weight += float(w.sum())
    if kind == "intersection":
        value = (mean - inter) / weight if weight else 0.0
    elif kind == "union":
        value = union / weight if weight else 0.0
    else:
        value = 1.0 - inter / union if union else 0.0
    grads = [np.zeros(s.shape) for s in switches] if with_grad else None
    if with_grad and weight:
        pos = [i for i, (s, w, doms) in enumerate(zip(switches, costs, served)) if len(doms) >= 2]
        for (s, w, doms), li in zip(terms, pos):
            for j, d in enumerate(doms):
                others = np.delete(s, j, axis=0)
                d_inter = w * np.prod(others, 0)  # ∂I/∂s_d
                d_union = w * np.prod(1 - others, 0)  # ∂U/∂s_d
                if kind == "intersection":
                    g = (w / len(doms) - d_inter) / weight
                elif kind == "union":
                    g = d_union / weight
                else:
                    g = -(d_inter * union - inter * d_union) / union**2 if union else np.zeros_like(w)
                grads[li][d] = g
    return value, grads


def shared_scores(latents: list[np.ndarray], served: list[list[int]]) -> list[np.ndarray]:
    """(C,) per switch: the sum over its served domains of the latents, the common ranking
    by which an aligned projection turns channels off (channels the domains agree on last)."""
    return [np.asarray(x, np.float64)[doms].sum(axis=0) for x, doms in zip(latents, served)]


def within_switch_ranks(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Each score's rank inside its own switch, scaled to [0, 1) (0: the switch's lowest)."""
    ranks = []
    for x in scores:
        x = np.asarray(x, np.float64)
        order = np.argsort(x, axis=-1, kind="stable")
        r = np.empty_like(x)
        np.put_along_axis(r, order, np.arange(x.shape[-1], dtype=np.float64) / x.shape[-1], axis=-1)
        ranks.append(r)
    return ranks


def project_to_budget(latents: list[np.ndarray], costs, served, budget: float,
                      off_value: float = -1e-3, align: bool = False,
                      balance: bool = False) -> list[np.ndarray]:
    """Turns off switches of each over-budget domain until its usage <= budget.

    Without `align` each domain turns off its own lowest latents first; with `align` every
    domain turns channels off in ONE common order, lowest `shared_scores` first (own latent
    breaks ties), so the domains keep nested subsets of the same channels and the union
    mask is about as small as one domain's. With `balance` the order is by each score's rank
    inside its own switch (`within_switch_ranks`), so every layer loses about the same share
    of its channels and the latents only choose which ones: latents of different layers are
    not comparable (Adam moves each by about its learning rate per step, whatever its
    gradient), and a global order can empty the stem or a residual stream. Keeps at least one
    channel on per switch and domain (a domain never loses a whole layer). Returns new
    arrays; inputs are unchanged.
    """
    latents = [np.array(x, np.float64) for x in latents]
    common = shared_scores(latents, served) if align else None
    num_domains = latents[0].shape[0]
    scores = common if align else latents  # common: (C,) per switch; own: (D, C)
    order = within_switch_ranks(scores) if balance else scores
    for d in range(num_domains):
        mine = [i for i, doms in enumerate(served) if d in doms]
        total = sum(costs[i].sum() for i in mine)
        if not total:
            continue
        on = sum(float(costs[i] @ (latents[i][d] > 0)) for i in mine)
        row = (lambda x: x) if align else (lambda x: x[d])
        candidates = sorted((row(order[i])[c], row(scores[i])[c], latents[i][d, c], i, c)
                            for i in mine for c in np.flatnonzero(latents[i][d] > 0))
        for *_, i, c in candidates:
            if on / total <= budget + 1e-12:
                break
            if (latents[i][d] > 0).sum() <= 1:
                continue
            latents[i][d, c] = off_value
            on -= costs[i][c]
    return latents
