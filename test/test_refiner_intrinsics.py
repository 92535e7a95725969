# Copyright 2026 camreloc_ros authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.


"""The refiner with the query camera's own K (issue #18, defect 3), ROS-free.

A 2x lens: the centre half of a held-out walk image, upscaled back to full size. SIFT still
matches it to the map, but PnP with the map's K puts the camera a metre off (with a
centimetre covariance); with the zoomed camera's calibration it lands within centimetres.
The live node takes that calibration from ``camera_info`` (``CameraCheck.intrinsics``).
"""

import math

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.geometry import matrix_to_quat
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.ros.camera_check import CameraCheck
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
QUERY = 12   # held out of the map, in the middle of its frames


def zoom_2x(image: np.ndarray) -> np.ndarray:
    """The centre half of ``image`` upscaled back to its size: what a 2x lens sees."""
    h, w = image.shape[:2]
    crop = image[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)


def zoomed_camera(k: Intrinsics, scale: int = 1) -> Intrinsics:
    """The calibration of :func:`zoom_2x`'s camera, at ``scale`` times the image size."""
    ox, oy = k.width // 4, k.height // 4
    return Intrinsics(k.width * scale, k.height * scale, 2 * k.fx * scale, 2 * k.fy * scale,
                      2 * (k.cx - ox) * scale, 2 * (k.cy - oy) * scale)


@pytest.fixture(scope='module')
def small_map():
    """A triangulated map of 20 walk frames around the held-out query frame."""
    from camreloc_ros.core.localization.build import build_map
    from camreloc_ros.core.localization.retrieval import GlobalDescriptor
    from camreloc_ros.core.models.pose_model import build_model

    dataset = read_dataset(HOLO, 'posed')
    frames = dataset.frames[2:23]
    query = next(f for f in frames if f.index == QUERY)
    train = [f for f in frames if f is not query]
    lmap = build_map(train, dataset.intrinsics, GlobalDescriptor(build_model(
        'posenet', head={'width': 64})), {'sift': {'max_keypoints': 1024}}, log=lambda s: None)
    return lmap, dataset.intrinsics, query


def test_the_zoomed_cameras_K_refines_within_centimetres_the_maps_K_does_not(small_map):
    """Calibrated at twice the image size (a driver that downsamples): scaled to the image,
    the pose is within 0.1 m; the map's K on the same image is far off (or no pose)."""
    lmap, intrinsics, query = small_map
    refiner = Refiner(lmap)   # no retrieval: the images posed nearest the prior
    image = zoom_2x(read_rgb(query.image_path))
    h, w = image.shape[:2]
    truth = query.pose_c2w[:3, 3]
    prior = (truth, matrix_to_quat(query.pose_c2w[:3, :3]))
    K = refiner.intrinsics_for(w, h, zoomed_camera(intrinsics, scale=2))
    np.testing.assert_allclose(K, zoomed_camera(intrinsics).matrix(), atol=1e-9)
    right = refiner.refine(image, *prior, K=K)
    assert right.refined, right.reason
    assert np.linalg.norm(right.position - truth) < 0.1
    wrong = refiner.refine(image, *prior, K=refiner.intrinsics_for(w, h))
    assert not wrong.refined or np.linalg.norm(wrong.position - truth) > 0.3


def test_a_calibration_of_another_aspect_ratio_is_refused_not_guessed(small_map):
    """A 640x360 image with a 640x480 calibration is a crop: no K can be scaled from it."""
    lmap, intrinsics, _ = small_map
    refiner = Refiner(lmap)
    camera = Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    with pytest.raises(ValueError, match=r'calibration is for 640x480 images but the image is '
                                         r'640x360: expected the same aspect ratio'):
        refiner.intrinsics_for(640, 360, camera)
    np.testing.assert_allclose(refiner.intrinsics_for(1280, 960, camera)[0], [1170, 0, 640])


def _info(width: int, height: int, k: list[float]) -> CameraInfo:
    msg = CameraInfo(width=width, height=height)
    msg.k = [float(v) for v in k]
    return msg


def test_camera_check_keeps_the_live_calibration_for_the_refiner():
    """camera_info's K (with cx, cy) is kept; an uncalibrated or non-finite one is not."""
    warnings = []
    check = CameraCheck(None, 5.0, 0.02, False, warnings.append)
    assert check.intrinsics() is None                        # nothing received yet
    check.on_camera_info(_info(640, 480, [1170, 0, 330, 0, 1170, 250, 0, 0, 1]))
    assert check.intrinsics() == Intrinsics(640, 480, 1170.0, 1170.0, 330.0, 250.0)
    check.on_camera_info(_info(640, 480, [0] * 9))            # uncalibrated: the map's K
    assert check.intrinsics() is None
    check.on_camera_info(_info(640, 480, [math.nan, 0, 320, 0, 1170, 240, 0, 0, 1]))
    assert check.intrinsics() is None
    check.on_camera_info(_info(0, 0, [1170, 0, 320, 0, 1170, 240, 0, 0, 1]))
    assert check.intrinsics() is None                        # no size: nothing to scale from
