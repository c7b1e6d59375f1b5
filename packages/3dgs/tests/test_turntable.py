import numpy as np
import pytest
import torch
from PIL import Image

from subspace_3dgs.cameras import orbit_cameras
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import rasterize
from subspace_3dgs.turntable import render_turntable, save_gif


@pytest.fixture(scope="module")
def blobs() -> Gaussians:
    # two coloured blobs off the axis: the object looks different from every azimuth
    xyz = torch.tensor([[0.6, 0.0, 0.0], [0.0, 0.5, 0.2], [-0.3, -0.3, 0.0]])
    rgb = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.9], [0.1, 0.8, 0.2]])
    g = Gaussians.from_points(xyz, rgb, sh_degree=0, initial_opacity=0.9)
    with torch.no_grad():
        g.log_scales.fill_(np.log(0.25))
    return g


def test_frames_shape_and_first_frame_is_the_orbit_render(blobs):
    frames = render_turntable(blobs, n_frames=4, size=32)
    assert len(frames) == 4
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    cam = orbit_cameras(4, 3.0, 20.0, width=32, height=32)[0]
    ref = rasterize(blobs, cam.viewmat, cam.K, 32, 32, background=torch.ones(3)).rgb
    np.testing.assert_array_equal(frames[0], (ref.clamp(0, 1) * 255).round().byte().numpy())
    # the object turns: consecutive frames differ, and the white background shows
    assert all(np.abs(frames[i].astype(int) - frames[i + 1]).max() > 50 for i in range(3))
    assert (frames[0] == 255).all(axis=-1).any()


def test_gif_reopens_with_all_frames(blobs, tmp_path):
    frames = render_turntable(blobs, n_frames=5, size=24, background=(0.0, 0.0, 0.0))
    path = save_gif(frames, tmp_path / "turn.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (24, 24)
        assert im.info["duration"] == 100 and im.info["loop"] == 0
        im.seek(4)
        back = np.asarray(im.convert("RGB"))
    # GIF is palette-quantised: close to, not equal to, the frame
    assert np.abs(back.astype(int) - frames[4]).mean() < 8
    assert not list(tmp_path.glob("*.part"))


def test_bad_input_is_named(blobs, tmp_path):
    with pytest.raises(ValueError, match="n_frames"):
        render_turntable(blobs, n_frames=0)
    with pytest.raises(TypeError, match="gaussians"):
        render_turntable(torch.zeros(3))
    with pytest.raises(ValueError, match="frames"):
        save_gif([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        save_gif([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], tmp_path / "x.gif")
