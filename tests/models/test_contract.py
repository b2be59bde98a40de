"""Input contract: folding ImageNet normalisation into the stem is exact."""

import dataclasses

import numpy as np
import torch

from judging.inputs import DEFAULT_IMAGES_DIR, load_images, parity_inputs, square_crops
from models.contract import InputContract
from models.folding import fold_normalization
from models.network import build_model
from models.preprocessing import normalise


def test_folded_model_on_rgb_equals_original_on_normalised_input(tiny_spec):
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    rgb = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        original = model(torch.from_numpy(normalise(rgb)))
        folded = fold_normalization(model)(torch.from_numpy(rgb))
    assert torch.allclose(original, folded, atol=1e-4)
    # and folding changed a copy, not the model itself
    assert not torch.equal(model.backbone.downsample_layers[0][0].weight,
                           fold_normalization(model).backbone.downsample_layers[0][0].weight)


def test_contract_states_what_goes_in(tiny_spec):
    spec = tiny_spec
    folded, plain = InputContract.for_spec(spec, True), InputContract.for_spec(spec, False)
    assert folded.value_range == (0.0, 1.0) and folded.to_dict()["normalization_folded"] is True
    assert plain.value_range[0] < -2 and plain.value_range[1] > 2.5
    rgb = np.full((1, 3, 2, 2), 0.5, dtype=np.float32)
    assert np.array_equal(folded.prepare(rgb), rgb)
    assert np.allclose(plain.prepare(rgb)[0, 0], (0.5 - 0.485) / 0.229)


def test_people_photos_become_square_crops():
    photos = load_images(DEFAULT_IMAGES_DIR, 64)
    assert photos.images.shape[1:] == (3, 64, 64)
    assert photos.images.min() >= 0 and photos.images.max() <= 1
    # the wide group photo gives three crops, the square ones one each
    assert sum(s.startswith("input.jpg") for s in photos.sources) == 3
    assert len(parity_inputs(64, DEFAULT_IMAGES_DIR)) == len(photos) + 3


def test_tall_images_are_cropped_top_and_bottom():
    from PIL import Image

    names = [n for n, _ in square_crops(Image.new("RGB", (100, 200)))]
    assert names == ["centre", "top", "bottom"]


def test_weights_trained_on_the_synthetic_task_are_judged_on_its_images(tiny_spec, make_ckpt, tmp_path):
    from judging.inputs import NUM_SYNTHETIC_INPUTS, inputs_for
    from models.checkpoint import load_checkpoint
    from models.training.reference import write_trained_checkpoint
    from models.training.schedule import Schedule

    tiny_spec = dataclasses.replace(tiny_spec, joints=18)  # the synthetic task's 18-joint set
    trained = write_trained_checkpoint(tiny_spec, tmp_path / "t.pth.tar", schedule=Schedule(steps=1, batch_size=2),
                                       eval_n=2, progress=False)
    inputs = inputs_for(load_checkpoint(trained, tiny_spec))
    groups = inputs.group_masks()
    assert set(groups) == {"photos", "random", "synthetic"} and inputs.judged_group == "synthetic"
    assert groups["synthetic"].sum() == NUM_SYNTHETIC_INPUTS and inputs.images.shape[1:] == (3, 64, 64)
    assert all(s.startswith("synthetic-eval:") for s in np.array(inputs.sources)[groups["synthetic"]])

    untrained = inputs_for(load_checkpoint(make_ckpt("XS"), "XS"))
    assert set(untrained.group_masks()) == {"photos", "random"} and untrained.judged_group == "photos"
