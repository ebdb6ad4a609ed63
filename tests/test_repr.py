"""repr(flow) and ``nfcore info``: the layer tree with shapes and parameter counts, from one function."""

import re

import numpy as np
import pytest

import nfcore
from nfcore.cli import main
from nfcore.core.module import describe

CONFIGS = [
    {"flow": "realnvp", "dim": 2, "layers": 3, "hidden": [8]},
    {"flow": "maf", "dim": 3, "layers": 2, "hidden": [8], "batch_norm": True, "base": "made-mog", "prior_hidden": [8]},
    {"flow": "nice", "dim": 4, "layers": 2, "hidden": [8], "permute": "reverse", "base": "diag"},
    {"flow": "resflow", "dim": 2, "layers": 1, "hidden": [4], "learn_beta": True},
    {"flow": "realnvp", "dim": 3, "layers": 2, "hidden": [8], "context_dim": 2, "whiten": True, "base": "gmm",
     "memory_saving": True},
    {"flow": "glow", "shape": [4, 4, 1], "layers": 1, "hidden": [4], "levels": 4},
    {"flow": "realnvp", "shape": [4, 4, 1], "layers": 1, "hidden": [4], "levels": 4},
    {"flow": "iresnet", "shape": [4, 4, 1], "layers": 1, "hidden": [2]},
]


def _lines(text):
    """(depth, label and name, count) per line; the root has depth 0 and its total as count."""
    rows = []
    for i, line in enumerate(text.splitlines()):
        if i == 0:
            (total,) = re.findall(r"([\d,]+) parameters\)$", line)
            rows.append((0, line, int(total.replace(",", ""))))
            continue
        head = re.match(r"^((?:│  |   )*)[├└]─ ", line)
        assert head, line
        count = re.search(r", ([\d,]+) params$", line)
        rows.append((len(head.group(1)) // 3 + 1, line[head.end():], int(count.group(1).replace(",", "")) if count
                     else 0))
    return rows


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['flow']}-{'image' if 'shape' in c else c['dim']}")
def test_repr_is_the_tree_with_every_layer_and_the_total(cfg):
    flow = nfcore.build(cfg)
    text = repr(flow)
    assert text == describe(flow)
    rows = _lines(text)
    # the total is the sum of the parameter sizes, and the leaf lines share it out exactly
    total = sum(int(np.prod(p.shape)) for p in flow.parameters())
    assert rows[0][2] == total == flow.num_parameters()
    leaves = [c for (d, _, c), nxt in zip(rows, [*rows[1:], (0, "", 0)]) if nxt[0] <= d]
    assert sum(leaves) == total
    # the root's children (the transform and the base) split the total too
    assert sum(c for d, _, c in rows if d == 1) == total
    # every layer and the base are named (a Gaussian mixture base's components are its own business)
    inside_base = {id(m) for m in flow.base.modules()}
    for m in flow.modules():
        if isinstance(m, (nfcore.Transform, nfcore.Distribution)) and (m is flow.base or id(m) not in inside_base):
            assert type(m).__name__ in text, (type(m).__name__, text)
    assert f"base={type(flow.base).__name__}" in rows[0][1]


def test_a_line_names_shapes_and_the_conditioner():
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [64, 64]})
    assert repr(flow).splitlines() == [
        "Flow(realnvp, dim=2, base=StandardNormal, 8,836 parameters)",
        "├─ Chain 2 layers, 8,836 params",
        "│  ├─ 0 AffineCoupling [2], conditioner MLP 1 -> 64 -> 64 -> 2 (relu), 4,418 params",
        "│  └─ 1 AffineCoupling [2], conditioner MLP 1 -> 64 -> 64 -> 2 (relu), 4,418 params",
        "└─ base StandardNormal [2]",
    ]
    text = repr(nfcore.build({"flow": "glow", "shape": [4, 4, 1], "layers": 1, "hidden": [4]}))
    assert "Squeeze [4x4x1 -> 2x2x4]" in text and "Split [2x2x4 -> 16]" in text and "Flatten [1x1x8 -> 8]" in text


def test_a_deep_chain_is_one_line_per_layer():
    flow = nfcore.build({"flow": "maf", "dim": 8, "layers": 64, "hidden": [16]})
    lines = repr(flow).splitlines()
    assert len(lines) == 1 + 1 + 64 + 1
    assert max(map(len, lines)) < 100
    assert lines[2].startswith("│  ├─ 0  MAF [8], MADE 8 -> 16 -> 16 (relu, natural order)")
    assert lines[-2].startswith("│  └─ 63 MAF [8], MADE 8 -> 16 -> 16 (relu, reversed order)")


def test_nfcore_info_prints_the_same_tree(tmp_path, capsys):
    flow = nfcore.build({"flow": "maf", "dim": 3, "layers": 2, "hidden": [8], "base": "made", "prior_hidden": [8]})
    path = tmp_path / "m.npz"
    nfcore.save(path, flow, meta={"epochs": 3})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert repr(nfcore.load(path)) in out and repr(flow) in out
    assert f"model: {path}" in out and '"epochs": 3' in out  # what info printed before the tree stays
