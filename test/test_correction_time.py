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


"""A backwards jump in time (a bag replayed from an earlier stamp), ROS-free (issue #18).

The corrector keeps the newest refinement; without time-jump handling a reference from before
the replay refuses every later refinement, and ``pose`` is never corrected again until
``~/reset``.
"""

import numpy as np

from camreloc_ros.core.geometry import quat_from_rotvec
from camreloc_ros.core.inference.live import LatestSlot
from camreloc_ros.core.localization.correction import PoseCorrector


def _frame(corrector: PoseCorrector, stamp: float, ref_pos: np.ndarray, net_pos: np.ndarray,
           quat: np.ndarray):
    """One sync-mode frame: observe its stamp, refine it (to ``ref_pos``), correct it."""
    jump = corrector.observe(stamp)
    corrector.update(stamp, ref_pos, quat, np.eye(6) * 1e-4, net_pos, quat)
    return jump, corrector.correct(stamp, net_pos, quat)


def test_a_jump_back_in_time_resets_and_the_next_refinement_corrects_again():
    corrector = PoseCorrector(max_age=5.0)
    quat = quat_from_rotvec([0.0, 0.0, 0.3])
    net = np.array([1.0, 2.0, 0.5])
    jump, fix = _frame(corrector, 100.0, np.array([1.1, 2.0, 0.5]), net, quat)
    assert jump is None and corrector.stamp == 100.0
    np.testing.assert_allclose(fix.position, [1.1, 2.0, 0.5], atol=1e-12)
    assert corrector.observe(100.5) is None          # forward: nothing happens
    # the bag starts again 60.5 s earlier: its first frame refines to another place
    jump, fix = _frame(corrector, 40.0, np.array([3.0, 2.0, 0.5]), net, quat)
    assert jump == 60.5
    assert corrector.stamp == 40.0
    assert fix is not None, 'the refinement after the jump must correct poses again'
    np.testing.assert_allclose(fix.position, [3.0, 2.0, 0.5], atol=1e-12)
    later = corrector.correct(41.0, net + [0.2, 0.0, 0.0], quat)
    np.testing.assert_allclose(later.position, [3.2, 2.0, 0.5], atol=1e-12)


def test_a_refinement_started_before_the_jump_is_refused_after_it():
    """Async mode: the refiner finishes frame 100.0 after the network saw 40.0 (the replay):
    that refinement belongs to the old timeline and must not become the reference."""
    corrector = PoseCorrector(max_age=5.0)
    quat = np.array([0.0, 0.0, 0.0, 1.0])
    net = np.zeros(3)
    assert corrector.observe(100.0) is None
    assert corrector.observe(40.0) == 60.0
    corrector.update(100.0, np.ones(3), quat, np.eye(6), net, quat)   # from before the jump
    assert corrector.stamp is None and corrector.correct(40.1, net, quat) is None
    corrector.update(40.0, np.ones(3), quat, np.eye(6), net, quat)    # this timeline's
    assert corrector.stamp == 40.0 and corrector.correct(40.1, net, quat) is not None


def test_latest_slot_discard_drops_the_waiting_item_and_stays_open():
    slot = LatestSlot()
    slot.open()
    assert slot.put('stale') is False
    slot.discard()
    assert slot.put('fresh') is False        # nothing was waiting any more
    assert slot.take() == 'fresh'
