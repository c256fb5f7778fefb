"""Grad-CAM for 3-D models: values against hand computations, both weightings, hooks always released."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpsem.explain.gradcam import VideoGradCAM, normalise_cam, upsample_cam


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _reference_gradcam(model: torch.nn.Module, clip: torch.Tensor, layer: torch.nn.Module, target: int):
    """Grad-CAM written independently: full autograd, a plain forward hook and a tensor hook."""
    store: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        store["activation"] = output
        output.register_hook(lambda grad: store.__setitem__("gradient", grad))

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(clip)
        logits[0, target].backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return logits.detach(), store["activation"].detach()[0], store["gradient"][0]  # (C, T', H', W')


@pytest.mark.parametrize("which", [0, 1], ids=["mfnet", "mf_kpsem"])
@pytest.mark.parametrize("layer", ["tail", "conv4"])
def test_clip_weighting_matches_hand_written_hooks(tiny_pair, tiny_clip, which, layer):
    model = tiny_pair[which]
    logits, activation, gradient = _reference_gradcam(model, tiny_clip, model.get_submodule(layer), target=2)
    with VideoGradCAM(model, layer=layer, weighting="clip") as cam:
        result = cam.explain(tiny_clip, targets=[2])
    weights = gradient.mean(dim=(1, 2, 3))  # (C,)
    expected = torch.relu((weights[:, None, None, None] * activation).sum(0))  # (T', H', W')
    assert torch.allclose(result.logits, logits, atol=1e-6)
    assert torch.allclose(result.gradients[0], gradient, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(result.weights[0], weights.numpy(), rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(result.cam_feature[0], expected.numpy(), rtol=1e-4, atol=1e-9)


def test_tail_cam_equals_classifier_weights_over_cells(tiny_pair, tiny_clip):
    """At ``tail`` the gradient is known in closed form: d logit_c / dA_k = W[c, k] / (T' H' W')."""
    model = tiny_pair[0]
    with VideoGradCAM(model, layer="tail") as cam:
        result = cam.explain(tiny_clip, targets=[3])
    _, _, t, h, w = result.activations.shape
    assert (t, h, w) == (4, 2, 2)  # 8x64x64 clip: one temporal stride, spatial /32
    weight = model.classifier.weight.detach()[3]  # (C5,)
    np.testing.assert_allclose(result.weights[0], weight.numpy() / (t * h * w), rtol=1e-5, atol=1e-9)
    expected = torch.relu(torch.einsum("c,cthw->thw", weight, result.activations[0])) / (t * h * w)
    np.testing.assert_allclose(result.cam_feature[0], expected.numpy(), rtol=1e-5, atol=1e-9)


def test_slice_weighting_follows_its_definition(tiny_pair, tiny_clip):
    """One weight per channel and time slice: gradients averaged over H, W for each t."""
    model = tiny_pair[1]
    with VideoGradCAM(model, layer="conv4", weighting="slice") as cam:
        result = cam.explain(tiny_clip)
    grads, acts = result.gradients[0].numpy(), result.activations[0].numpy()  # (C, T', H', W')
    assert result.weights.shape == (1, grads.shape[0], grads.shape[1])
    for t in range(grads.shape[1]):
        w_t = grads[:, t].mean(axis=(1, 2))  # (C,)
        np.testing.assert_allclose(result.weights[0, :, t], w_t, rtol=1e-5, atol=1e-12)
        expected = np.maximum((w_t[:, None, None] * acts[:, t]).sum(axis=0), 0)
        np.testing.assert_allclose(result.cam_feature[0, t], expected, rtol=1e-4, atol=1e-9)
    assert result.targets == [int(result.logits[0].argmax())]  # default target: the prediction


def test_slice_and_clip_weighting_differ_by_hand_numbers():
    """Two slices whose gradients disagree in sign: per-clip weights cancel, per-slice ones do not."""
    grads = np.zeros((1, 1, 2, 1, 1), dtype=np.float32)
    grads[0, 0, 0], grads[0, 0, 1] = 1.0, -1.0
    acts = np.ones_like(grads)
    cam = VideoGradCAM.__new__(VideoGradCAM)  # only the weighting arithmetic, no model
    cam.layer_name, cam.weighting = "tail", "clip"
    assert cam.get_cam_weights(None, None, [], acts, grads).tolist() == [[0.0]]
    cam.weighting = "slice"
    assert cam.get_cam_weights(None, None, [], acts, grads).tolist() == [[[1.0, -1.0]]]
    assert cam.get_cam_image(None, None, [], acts, grads).reshape(-1).tolist() == [1.0, -1.0]


def test_upsampling_and_normalisation():
    cam = np.array([[[[0.0, 2.0], [2.0, 4.0]], [[4.0, 4.0], [4.0, 4.0]]]], dtype=np.float32)  # (1, 2, 2, 2)
    up = upsample_cam(cam, (4, 8, 8))
    assert up.shape == (1, 4, 8, 8)
    assert up[0, 0, 0, 0] == 0.0 and up[0, 0, -1, -1] == 4.0  # corners keep the corner cells' values
    np.testing.assert_allclose(up[0, -1], 4.0)  # a constant slice stays constant
    assert up.min() >= 0.0  # trilinear never overshoots (a cubic spline would)
    assert normalise_cam(up[0]).max() == 1.0
    assert normalise_cam(np.zeros((2, 2))).max() == 0.0
    np.testing.assert_allclose(normalise_cam(np.array([1.0, 2.0]), scale=4.0), [0.25, 0.5])


def test_explainer_leaves_model_untouched(tiny_pair, tiny_clip):
    model = tiny_pair[1].train()
    before = _hooks(model)
    with VideoGradCAM(model, layer="tail") as cam:
        assert model.training  # the explainer leaves the mode alone: each explain() runs in eval mode
        cam.explain(tiny_clip)
        cam.explain(tiny_clip)  # reusable inside one context
    assert _hooks(model) == before == 0
    assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())  # no weight gradients were computed
    assert all(p.requires_grad for p in model.parameters())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("error", [RuntimeError, IndexError])
def test_hooks_released_after_an_exception(tiny_pair, tiny_clip, error):
    """Released in __exit__ and the exception still propagates (BaseCAM's own __exit__ swallows IndexError)."""
    model = tiny_pair[0]
    with pytest.raises(error, match="boom"), VideoGradCAM(model, layer="conv4"):  # noqa: PT012  (hooks checked inside)
        assert _hooks(model) == 3  # our leaf hook and the package's two
        raise error("boom")
    assert _hooks(model) == 0


def test_hooks_released_when_explain_fails(tiny_pair):
    model = tiny_pair[1]
    with pytest.raises(ValueError, match="this MF-KPSEM was built for 8-frame clips"), VideoGradCAM(model) as cam:
        cam.explain(torch.zeros(1, 3, 4, 64, 64))
    assert _hooks(model) == 0
    assert torch.is_grad_enabled()


def test_clear_errors(tiny_pair, tiny_clip):
    model = tiny_pair[0]
    with pytest.raises(ValueError, match=r"MFNet has no layer 'conv9' for Grad-CAM; use one of "
                       r"\['tail', 'conv5', 'conv4'"):
        VideoGradCAM(model, layer="conv9")
    with pytest.raises(ValueError, match=r"weighting must be one of \('clip', 'slice'\); got 'frame'"):
        VideoGradCAM(model, weighting="frame")  # type: ignore[arg-type]
    out_of_range = r"target class 7 is out of range for a model with 5 classes \(0..4\)"
    with VideoGradCAM(model) as cam, pytest.raises(ValueError, match=out_of_range):
        cam.explain(tiny_clip, targets=[7])
    assert _hooks(model) == 0
