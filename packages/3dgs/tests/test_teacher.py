import pytest
import torch
import torch.nn.functional as F

from subspace_3dgs.scenes import make_scene
from subspace_3dgs.teacher import Teacher, teacher_maps
from subspace_core.backbones import IMAGENET_MEAN, IMAGENET_STD, load_backbone


@pytest.fixture(scope="module")
def scene():
    return make_scene("icosphere", 3, 32, 32, seed=0)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)  # the random (untrained) network: no weight download in the tests
    return load_backbone("mobilenet_v2", pretrained=False)


def test_maps_match_the_network_on_normalised_resized_views(scene, network):
    teacher = Teacher(network, stage=3, input_size=64)
    maps = teacher_maps(scene, teacher, cache=False)
    assert teacher.width == 32 and teacher.map_size == 8
    assert maps.shape == (3, 32, 8, 8)
    # independent reference: antialiased bilinear resize, ImageNet normalisation, stages 1..3
    rgb = torch.stack([v.rgb for v in scene.views]).permute(0, 3, 1, 2)
    x = F.interpolate(rgb, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = network.feature_map(x, 3)
    assert torch.allclose(maps, expected, atol=1e-4, rtol=1e-4)


def test_single_image_and_cache(scene, network):
    teacher = Teacher(network, stage=2, input_size=32)
    maps = teacher_maps(scene, teacher)
    assert teacher_maps(scene, teacher) is maps  # cached per scene
    assert maps.shape == (3, 24, 8, 8)
    one = teacher(scene.views[1].rgb)
    assert torch.allclose(one, maps[1], atol=1e-5, rtol=1e-5)
    # another teacher on the same scene is a separate cache entry
    other = teacher_maps(scene, Teacher(network, stage=1, input_size=32))
    assert other.shape == (3, 16, 16, 16)


def test_bad_arguments(network):
    with pytest.raises(ValueError, match="stage"):
        Teacher(network, stage=6)
    with pytest.raises(ValueError, match="input_size"):
        Teacher(network, stage=5, input_size=100)
    with pytest.raises(ValueError, match="backbone"):
        Teacher("resnet50")
    with pytest.raises(TypeError, match="backbone"):
        Teacher(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="rgb"):
        Teacher(network, stage=1, input_size=32)(torch.rand(2, 3, 16, 16))
