"""Plot helpers return figures/animations, remove their hooks and count correctly."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnncourse.models.lenet import lenet5  # noqa: E402
from cnncourse.plotting import (  # noqa: E402
    animation_html,
    capture_activations,
    confusion_matrix,
    plot_confusion_matrix,
    plot_feature_maps,
    plot_filters,
    plot_misclassified,
    plot_shift_strip,
    shift_animation,
    shift_demo,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return lenet5()


def _digit():
    x = torch.full((1, 32, 32), -0.1)
    x[0, 8:24, 14:18] = 1.175  # a "1"
    return x


def test_plot_filters_one_panel_per_map(model):
    fig = plot_filters(model.c1)
    assert isinstance(fig, Figure)
    assert sum(1 for ax in fig.axes if ax.images) == 6
    with pytest.raises(ValueError, match="C_out, C_in"):
        plot_filters(torch.zeros(6, 5, 5))


def test_capture_activations_shapes_and_hooks_removed(model):
    acts = capture_activations(model, _digit()[None], ["c1", "s2", "c3", "f6"])
    assert acts["c1"].shape == (1, 6, 28, 28) and acts["c3"].shape == (1, 16, 10, 10) and acts["f6"].shape == (1, 84)
    torch.testing.assert_close(acts["output"], model(_digit()[None]))
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="unknown layers"):
        capture_activations(model, _digit()[None], ["conv9"])


def test_plot_feature_maps(model):
    fig = plot_feature_maps(model, _digit(), ["c1", "s2", "c3", "s4", "c5", "f6"])
    assert isinstance(fig, Figure)
    assert sum(1 for ax in fig.axes if ax.images) == 1 + 6 + 6 + 16 + 16 + 16 + 1


def test_shift_demo_moves_the_input_and_maps(model):
    demo = shift_demo(model, _digit(), shifts=[-2, 0, 3], layers=["c1"])
    assert demo.inputs.shape == (3, 32, 32) and demo.maps["c1"].shape == (3, 6, 28, 28) and demo.scores.shape == (3, 10)
    torch.testing.assert_close(demo.inputs[1], _digit()[0])
    torch.testing.assert_close(demo.inputs[2][:, 17:21], _digit()[0][:, 14:18])  # moved 3 px right
    assert float(demo.inputs[2][:, :3].max()) == pytest.approx(-0.1)  # uncovered border = background
    # Convolution is equivariant: away from the borders, the C1 maps shift with the input.
    torch.testing.assert_close(demo.maps["c1"][2][:, :, 8:20], demo.maps["c1"][1][:, :, 5:17])
    assert len(demo.predictions) == 3


def test_shift_strip_and_animation(model):
    demo = shift_demo(model, _digit(), shifts=[-2, 0, 2], layers=["c1", "c3"])
    fig = plot_shift_strip(demo)
    assert isinstance(fig, Figure) and len(fig.axes) == 4 * 3
    anim = shift_animation(demo)
    assert isinstance(anim, FuncAnimation)
    html = animation_html(anim)
    assert "<video" in html or "<script" in html
    assert "http://" not in html and "https://" not in html, "the animation must not fetch from another host"
    described = animation_html(anim, alt='Digit "7" & its maps')
    assert ('alt="Digit &quot;7&quot; &amp; its maps"' in described) != ('aria-label="Digit &quot;7&quot; &amp; its maps"'
                                                                        in described)
    assert not re.search(r"<(img|video)[^>]*(alt|aria-label)=", html), "no alt text unless one is given"
    with pytest.raises(ValueError, match="non-blank"):
        animation_html(anim, alt="  ")


def test_confusion_matrix_counts():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds)
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert torch.equal(cm, expected)
    assert int(cm.sum()) == 6
    assert isinstance(plot_confusion_matrix(labels, preds, ["a", "b", "c"]), Figure)
    with pytest.raises(ValueError, match="equal shape"):
        confusion_matrix(labels, preds[:3])


def test_plot_misclassified_shows_only_errors():
    images = torch.zeros(5, 1, 28, 28, dtype=torch.uint8)
    labels = torch.tensor([1, 2, 3, 4, 5])
    preds = torch.tensor([1, 0, 3, 0, 5])
    fig = plot_misclassified(images, labels, preds)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["2->0", "4->0"]
