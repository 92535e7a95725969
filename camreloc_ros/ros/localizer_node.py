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

"""The live localizer: camera images in, camera poses out (``ros2 run camreloc_ros localizer``).

A lifecycle node and a thin layer over
:class:`~camreloc_ros.core.inference.engine.InferenceEngine`:
the subscription callback only checks a message and keeps the newest one; a worker thread
converts it, runs the engine and publishes, so a slow model never blocks the executor and
never builds a queue (latest-frame policy: older waiting frames are dropped and counted).

Over 450 lines because the lifecycle transitions, the callback, the worker and publishing
are one state machine sharing one lock; everything else lives in its own module: the
parameter table (``ros/parameters.py``), TF and Nav2 (``ros/frame_io.py``, ``ros/tf_io.py``),
the refiner (``ros/refiner_worker.py``), diagnostics (``ros/diagnostics.py``), the camera
check (``ros/camera_check.py``), the gate and counters (``core/inference/live.py``).
"""

from collections import deque
import dataclasses
import math
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger

from camreloc_ros.core.inference.engine import InferenceEngine, Prediction, resolve_device
from camreloc_ros.core.inference.runtimes import is_onnx_file, live_threads
from camreloc_ros.ros.camera_check import CameraCheck
from camreloc_ros.core.inference.live import LatestSlot, LiveStats, PoseGate
from camreloc_ros.ros.conversions import (check_compressed, check_image, compressed_pixels,
                                          image_pixels, ImageConversionError, pose_msg,
                                          pose_stamped, pose_with_covariance_stamped,
                                          stamp_to_sec)
from camreloc_ros.ros.diagnostics import Health
from camreloc_ros.ros.parameters import (check_value, ConfigurationError, expected_value,
                                         min_image_side, MIN_IMAGE_SIDE, parameter_descriptor,
                                         PARAMETERS, PARAMETERS_BY_NAME)
from camreloc_ros.ros.qos import (image_qos, LATCHED_QOS, NODE_NAME,  # noqa: F401 - TF_QOS
                                  OUTPUT_QOS, TF_QOS)                 # re-exported (tests)
from camreloc_ros.ros.refiner_worker import RefinerWorker
from camreloc_ros.ros.frame_io import FrameIO

INPUT_TOPICS = {'raw': 'image', 'compressed': 'image/compressed'}
BAD_LOG_PERIOD_S = 5.0


class LocalizerNode(LifecycleNode):
    """Camera relocalization: ``image`` -> ``pose``, ``pose_with_covariance``, TF, ``path``."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        # before anything can fail: destroy_node needs them, and rclpy's context shutdown
        # calls it even on a node whose __init__ raised
        self._slot = LatestSlot()              # newest (message, receive time) for the worker
        self._worker: threading.Thread | None = None
        self._active = False
        self._frames: FrameIO | None = None   # TF lookups/output, Nav2 bootstrap (tf_io)
        self._refiner: RefinerWorker | None = None   # map: PnP refinement (refiner_worker)
        super().__init__(node_name, **kwargs)
        try:
            self._declare_parameters()
        except ConfigurationError:
            self.destroy_node()
            raise
        self.stats = LiveStats()
        self.engine: InferenceEngine | None = None
        self.gate = PoseGate()
        self._engine_lock = threading.Lock()   # engine, gate and path: worker vs services
        self._min_side = MIN_IMAGE_SIDE     # set from the model in on_configure
        self._pixels: Callable = self._raw_pixels
        self._check: Callable = check_image
        self._entities: dict[str, Any] = {}
        self._path_poses: deque = deque(maxlen=1)
        self._bad_logged: dict[str, float] = {}
        self._diag_last = (time.monotonic(), 0)
        self._camera_check: CameraCheck | None = None
        # plain publisher and timer: diagnostics in every lifecycle state
        self.health = Health(self, self.param('diagnostics_period'),
                             self._publish_diagnostics, OUTPUT_QOS)
        self._apply_live_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(lambda _: self._apply_live_parameters())
        if self.get_parameter('autostart').value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    @property
    def is_active(self) -> bool:
        """Whether frames are being localized (the node is in the active state)."""
        return self._active

    def param(self, name: str) -> Any:
        """Return a declared parameter's current value."""
        return self.get_parameter(name).value

    # ---- parameters --------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """Declare the table; a start value rclpy refuses becomes one clear ConfigurationError.

        rclpy checks ranges and types of ``--ros-args -p`` / params-file values here and
        raises; those values cannot even be stored, so the node cannot run with them.
        """
        for param in PARAMETERS:
            try:
                self.declare_parameter(param.name, param.default, parameter_descriptor(param))
            except ParameterException:
                # the refused value: rclpy keeps start overrides only in this attribute
                given = getattr(self, '_parameter_overrides', {}).get(param.name)
                value = '?' if given is None else repr(given.value)
                raise ConfigurationError(
                    f"cannot start: parameter '{param.name}' is {value}, expected "
                    f'{expected_value(param)}') from None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = PARAMETERS_BY_NAME.get(p.name)
            if spec is None:
                continue
            problem = check_value(spec, p.value)
            if problem is None and spec.when == 'configure' and self.engine is not None:
                problem = (f'{p.name} is read in on_configure: deactivate and clean up the '
                           'node before changing it')
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_live_parameters(self) -> None:
        with self._engine_lock:
            self.gate.max_speed = self.param('gate.max_speed')
            self.gate.max_angular_speed_rad = math.radians(self.param('gate.max_angular_speed'))
            self.gate.max_position_std = self.param('gate.max_position_std')
            self.gate.max_gap = self.param('max_gap')
            if self.engine is not None:
                self.engine.max_gap = self.param('max_gap')
            if self._refiner is not None:
                self._refiner.localizer.conf['max_gap'] = self.param('max_gap')
            length = self.param('path_length')
            self._path_length = length   # read per frame by the worker: no parameter lookup
            if self._path_poses.maxlen != max(length, 1):
                self._path_poses = deque(self._path_poses, maxlen=max(length, 1))

    def _read_configuration(self) -> dict:
        conf = {p.name: self.param(p.name) for p in PARAMETERS}
        for p in PARAMETERS:
            problem = check_value(p, conf[p.name])
            if problem:
                raise ConfigurationError(problem)
        if not conf['model']:
            raise ConfigurationError(
                "parameter 'model' is empty: set it to a checkpoint file, e.g. "
                '--ros-args -p model:=/path/to/model.pt')
        if os.path.isdir(conf['model']):
            raise ConfigurationError(
                f"parameter 'model' is {conf['model']!r}, a directory: expected a checkpoint "
                'FILE (.pt) written by `camreloc train`, or an .onnx written by '
                '`camreloc export`')
        return conf

    # ---- lifecycle ---------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, create the publishers, the subscription, the service, the timer."""
        try:
            self._configure(self._read_configuration())
        except Exception as exc:  # noqa: BLE001 - a bad model must not kill the node
            detail = '' if isinstance(exc, (ValueError, RuntimeError, OSError)) else \
                '\n' + traceback.format_exc()
            self.get_logger().error(f'configure failed: {exc}{detail}')
            self.health.error = f'configure failed: {exc}'
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.health.error = None
        return TransitionCallbackReturn.SUCCESS

    def _configure(self, conf: dict) -> None:
        if conf['runtime'] == 'torch' or (conf['runtime'] == 'auto'
                                          and not is_onnx_file(conf['model'])):
            resolve_device(conf['device'])   # a clear error before the model is read (torch)
        # TF listener first: it hears the tree while the model loads (second-parent check)
        self._frames = FrameIO(self, conf, self._seed_gate)
        engine = InferenceEngine.from_checkpoint(
            conf['model'], runtime=conf['runtime'], device=conf['device'],
            precision=conf['precision'],
            threads=conf['threads'] or live_threads(), max_gap=conf['max_gap'])
        size = engine.pre.size
        for _ in range(3):   # warm-up (allocator, kernels): the first frames are not slow
            engine.predict(np.zeros((size, size, 3), np.uint8))
        engine.reset()
        with self._engine_lock:
            self.engine = engine
            self.gate.reset()
            self._path_poses.clear()
        self._map_frame = conf['map_frame']
        self._camera_frame = conf['camera_pose_frame']
        ents = self._entities
        pose_qos = self._frames.pose_qos   # latched_pose: amcl_pose's transient local
        ents['pose'] = self.create_lifecycle_publisher(PoseStamped, 'pose', pose_qos)
        ents['pose_cov'] = self.create_lifecycle_publisher(
            PoseWithCovarianceStamped, 'pose_with_covariance', pose_qos)
        ents['path'] = self.create_lifecycle_publisher(Path, 'path', OUTPUT_QOS)
        # a Path of up to path_length poses per frame is O(frames x length): on a timer instead
        ents['path_timer'] = self.create_timer(conf['path_period'], self._publish_path)
        if conf['map']:   # imports torch (the map's retrieval trunk): only with a map
            cv2.setNumThreads(1)   # SIFT must not take the network's core (refiner: nice 19)
            self._refiner = RefinerWorker.from_conf(self, conf, OUTPUT_QOS,
                                                    self._frames.odom_camera)
            ents['refined_pose'] = self._refiner.publisher
            ents['network_pose'] = self.create_lifecycle_publisher(
                PoseWithCovarianceStamped, '~/network_pose', OUTPUT_QOS)
            ents['localized'] = self.create_lifecycle_publisher(Bool, '~/localized',
                                                                LATCHED_QOS)
            ents['status'] = self.create_lifecycle_publisher(
                DiagnosticArray, '~/localization_status', OUTPUT_QOS)
            self._localized = None   # last value on ~/localized (published on change)
            self.get_logger().info(f'refiner: {self._refiner.describe()}')
        refused = self._frames.check_parents(wait_s=conf['transform_timeout'])
        if refused is not None:
            raise ConfigurationError(refused)
        qos = image_qos(conf['qos.depth'], conf['qos.reliability'])
        self._min_side = min_image_side(size)
        if conf['input'] == 'compressed':   # the size is known once decoded (worker)
            self._check, self._pixels = check_compressed, self._compressed_pixels
            msg_type = CompressedImage
        else:                               # the size is in the header (callback)
            self._check, self._pixels = self._check_raw, self._raw_pixels
            msg_type = Image
        ents['sub'] = self.create_subscription(msg_type, INPUT_TOPICS[conf['input']],
                                               self._on_image, qos)
        self._camera_check = CameraCheck(
            engine.checkpoint_extra, conf['camera_check.fov_tolerance_deg'],
            conf['camera_check.aspect_tolerance'], conf['camera_check.refuse'],
            self.get_logger().warning)
        ents['camera_info'] = self.create_subscription(
            CameraInfo, 'camera_info', self._camera_check.on_camera_info, qos)
        if self._refiner is not None:   # PnP with the live K (camera_info), not the map's
            self._refiner.camera = self._camera_check.intrinsics
        engine.camera = self._camera_check.intrinsics   # scr head: its PnP too
        ents['reset'] = self.create_service(Trigger, '~/reset', self._on_reset)
        self.health.set_period(conf['diagnostics_period'])
        self.get_logger().info(
            f'configured: {conf["model"]} ({engine.describe()}, window {engine.window}); '
            f'input {conf["input"]} on {ents["sub"].topic_name} '
            f'({conf["qos.reliability"]}, depth {conf["qos.depth"]})')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers and start the inference worker."""
        self._slot.open()
        self._worker = threading.Thread(target=self._worker_loop, name='camreloc_inference',
                                        daemon=True)
        self._worker.start()
        if self._refiner is not None:
            self._refiner.start()
        self._active = True
        self._diag_last = (time.monotonic(), self.stats.processed)
        result = super().on_activate(state)   # enables the lifecycle publishers
        if self._refiner is not None:   # latched: a late subscriber learns the state
            self._localized = None
            self._publish_localized(self._refiner.localizer.state == 'localized')
        self.get_logger().info('active: localizing')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; the model stays loaded."""
        self._stop_worker()
        self.get_logger().info('inactive')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model and every entity created in on_configure."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop and release whatever state the node is in."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Join the worker before the node's handles go away."""
        self._stop_worker()
        if self._frames is not None:   # the TF listener's node and thread
            self._frames.close()
            self._frames = None
        super().destroy_node()

    def _stop_worker(self) -> None:
        self._active = False
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        if self._refiner is not None:
            self._refiner.stop()

    def _release(self) -> None:
        self._stop_worker()
        for name, entity in list(self._entities.items()):
            if name in ('sub', 'camera_info'):
                self.destroy_subscription(entity)
            elif name == 'reset':
                self.destroy_service(entity)
            elif name in ('timer', 'path_timer'):
                self.destroy_timer(entity)
            else:
                self.destroy_lifecycle_publisher(entity)
        self._entities.clear()
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        with self._engine_lock:
            self.engine = None
            self.gate.reset()
        self._refiner = None

    # ---- callbacks (executor thread): cheap -------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.health.image(msg.header.stamp)
        if not self._active:
            return
        received = time.monotonic()
        self.stats.add(received=1)
        try:
            self._check(msg)
        except ImageConversionError as exc:
            self._count_bad(exc)
            return
        check = self._camera_check
        if check is not None and check.refusing:   # camera_check.refuse: counted, no pose
            check.count_refused()
            return
        if self._slot.put((msg, received)):
            self.stats.add(dropped=1)

    def _check_raw(self, msg: Image) -> None:
        check_image(msg)
        self._check_size(int(msg.height), int(msg.width))

    def _compressed_pixels(self, msg: CompressedImage) -> tuple[np.ndarray, str]:
        """Decode to the decoder's BGR (the preprocessor swaps the small resized planes)."""
        pixels, order = compressed_pixels(msg)
        self._check_size(pixels.shape[0], pixels.shape[1])
        return pixels, order

    @staticmethod
    def _raw_pixels(msg: Image) -> tuple[np.ndarray, str]:
        """Convert a message the callback already checked (bgr8 stays a zero-copy view)."""
        return image_pixels(msg, checked=True)

    def _check_size(self, height: int, width: int) -> None:
        if min(height, width) < self._min_side:
            raise ImageConversionError(
                f'image {width}x{height} is too small: its shorter side must be at least '
                f'{self._min_side} px for this model', 'too_small')

    def _seed_gate(self, stamp: float, position: np.ndarray, quaternion: np.ndarray) -> None:
        with self._engine_lock:
            self.gate.seed(stamp, position, quaternion)
        self.get_logger().info(f'initialpose: gate reference set to {np.round(position, 3)}')

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        with self._engine_lock:
            if self.engine is None:
                response.success, response.message = False, 'not configured'
                return response
            self.engine.reset()
            self.gate.reset()
        if self._refiner is not None:
            self._refiner.reset()
            self._publish_localized(False)
        response.success, response.message = True, 'temporal window and gate cleared'
        self.get_logger().info('reset: temporal window and gate cleared')
        return response

    def _count_bad(self, exc: ImageConversionError) -> None:
        self.stats.add(bad=1)
        now = time.monotonic()
        if now - self._bad_logged.get(exc.reason, -math.inf) >= BAD_LOG_PERIOD_S:
            self._bad_logged[exc.reason] = now
            self.get_logger().error(f'dropped a bad image message: {exc} '
                                    f'({self.stats.bad} bad so far)')

    # ---- worker thread: the real work --------------------------------------------------
    def _worker_loop(self) -> None:
        while (job := self._slot.take()) is not None:
            msg, received = job
            try:
                self._process(msg, received)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bad frame
                self.stats.add(errors=1)
                self.get_logger().error(f'inference failed: {exc!r}',
                                        throttle_duration_sec=BAD_LOG_PERIOD_S)

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        try:
            pixels, order = self._pixels(msg)
        except ImageConversionError as exc:
            self._count_bad(exc)
            return
        stamp = stamp_to_sec(msg.header.stamp)
        with self._engine_lock:
            if self.engine is None:
                return
            pred = self.engine.predict(pixels, stamp, order=order)
        refiner = self._refiner
        frames = self._frames
        if refiner is not None:   # with a map: what the localizer stands behind, or nothing
            rgb = pixels if order == 'rgb' else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
            pred = self._localize(refiner, rgb, msg.header, pred)
            if pred is None:
                self.stats.add(processed=1)
                if frames is not None:
                    frames.republish(msg.header)   # map_to_odom: keep map -> odom alive
                return
        base = frames.to_base(msg.header, pred) if frames is not None else None
        if base is None:   # camera extrinsics missing at this stamp: counted as tf_missing
            self.stats.add(processed=1)
            return
        with self._engine_lock:
            gated = self.gate.check(stamp, base)
        if gated is not None:
            self.stats.add(processed=1, gated=1)
            self.get_logger().warning(f'gated a pose: {gated}',
                                      throttle_duration_sec=BAD_LOG_PERIOD_S)
            frames.republish(msg.header)   # map_to_odom: keep map -> odom from expiring
            return
        self._publish(Header(stamp=msg.header.stamp, frame_id=self._map_frame), base, pred)
        latency = time.monotonic() - received
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.published += 1
            self.stats.latencies_s.append(latency)

    def _localize(self, refiner: RefinerWorker, rgb: np.ndarray, header: Header,
                  pred: Prediction) -> Prediction | None:
        """Localize a frame against the map; the camera pose to publish, or None.

        Every frame's network pose goes out on ``~/network_pose`` and its state on
        ``~/localization_status``; ``~/localized`` changes with the state.
        """
        est = refiner.process(rgb, header, pred)
        ents = self._entities
        frames = self._frames
        net = frames.to_base(header, pred) if frames is not None else None
        if net is not None:
            ents['network_pose'].publish(pose_with_covariance_stamped(
                Header(stamp=header.stamp, frame_id=self._map_frame), net.position,
                net.quaternion, net.covariance))
        status = DiagnosticStatus(name='localization', level=DiagnosticStatus.OK)
        if est is None:   # no intrinsics for this image (camera_info of another aspect)
            status.level, status.message = DiagnosticStatus.WARN, 'not_localized'
            status.values = [KeyValue(key='source', value='none'),
                             KeyValue(key='reason', value=refiner.intrinsics)]
        else:
            status.message = est.state
            if est.state != 'localized':
                status.level = DiagnosticStatus.WARN
            status.values = [KeyValue(key='source', value=est.source),
                             KeyValue(key='published', value=str(est.publish).lower()),
                             KeyValue(key='inliers', value=str(est.inliers)),
                             KeyValue(key='refinement', value=est.refinement or 'none'),
                             KeyValue(key='reason', value=est.reason)]
        ents['status'].publish(DiagnosticArray(header=Header(stamp=header.stamp,
                                                             frame_id=self._map_frame),
                                               status=[status]))
        self._publish_localized(est is not None and est.state == 'localized')
        if est is None or not est.publish:
            with self.stats.lock:
                self.stats.not_localized += 1
            return None
        return dataclasses.replace(pred, position=est.position, quaternion=est.quaternion,
                                   covariance=est.covariance)

    def _publish_localized(self, localized: bool) -> None:
        """``~/localized`` (latched) when the answer changes."""
        pub = self._entities.get('localized')
        if pub is None or localized == getattr(self, '_localized', None):
            return
        self._localized = localized
        pub.publish(Bool(data=localized))

    def _publish(self, header: Header, pred: Prediction, camera: Prediction) -> None:
        """Publish base_frame's pose ``pred``; ``camera`` is the camera's (tf_mode camera)."""
        ents = self._entities
        body = pose_msg(pred.position, pred.quaternion)   # one Pose for both topics
        pose = pose_stamped(header, pred.position, pred.quaternion, body)
        ents['pose_cov'].publish(pose_with_covariance_stamped(
            header, pred.position, pred.quaternion, pred.covariance, body))
        self._frames.send_tf(header, camera, pred)
        self._frames.after_publish(header, pred)   # ~/localize: this pose on initialpose
        if self._path_length > 0:
            with self._engine_lock:
                self._path_poses.append(pose)
        ents['pose'].publish(pose)   # last: a subscriber waiting on it sees the rest first

    def _publish_path(self) -> None:
        """Timer: the kept poses as one Path, only while active and someone subscribes."""
        path = self._entities.get('path')
        if path is None or not self._active or path.get_subscription_count() == 0:
            return
        with self._engine_lock:
            poses = list(self._path_poses) if self._path_length > 0 else []
        if poses:
            path.publish(Path(header=Header(stamp=poses[-1].header.stamp,
                                            frame_id=self._map_frame), poses=poses))

    # ---- diagnostics (timer) -------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        snap = self.stats.snapshot()
        last_time, last_processed = self._diag_last
        self._diag_last = (now, snap['processed'])
        rate = (snap['processed'] - last_processed) / max(now - last_time, 1e-6)
        engine = self.engine
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name().lstrip("/")}: localizer',
                                  hardware_id=engine.describe() if engine else 'none')
        check = self._camera_check if engine is not None else None
        problem = self._frames.problem() if self._frames is not None and self._active else None
        refiner = self._refiner if self._active else None
        if self.health.error:
            status.level, status.message = DiagnosticStatus.ERROR, self.health.error
        elif not self._active:
            status.level = DiagnosticStatus.WARN
            status.message = 'inactive' if engine is not None else 'unconfigured'
        elif problem:   # no pose can go out: say which transform and both fixes
            status.level, status.message = DiagnosticStatus.WARN, problem
        elif check is not None and check.problems:
            status.level = DiagnosticStatus.WARN
            status.message = f'camera differs from training ({check.status()})'
        elif refiner is not None and refiner.localizer.state != 'localized':
            status.level = DiagnosticStatus.WARN
            status.message = f'{refiner.localizer.state}: {refiner.localizer.reason}'
        elif rate == 0:
            status.level, status.message = DiagnosticStatus.WARN, 'no frames localized'
        else:
            status.level, status.message = DiagnosticStatus.OK, f'{rate:.1f} Hz'
        values = {
            'rate_hz': f'{rate:.2f}',
            'latency_p50_ms': f'{snap["latency_p50_ms"]:.1f}',
            'latency_p95_ms': f'{snap["latency_p95_ms"]:.1f}',
            'received': snap['received'],
            'processed': snap['processed'],
            'published': snap['published'],
            'dropped_frames': snap['dropped'],
            'bad_messages': snap['bad'],
            'gated_poses': snap['gated'],
            'not_localized_frames': snap['not_localized'],
            'errors': snap['errors'],
            'model': self.param('model'),
            'device': engine.describe() if engine else 'none',
            'window': engine.window if engine else 0,
        }
        if self._frames is not None:
            values.update(self._frames.diagnostics())   # tf_mode, tf_missing, tf_refused ...
        values.update(self.health.values())   # last_image_age_s, configure_error
        if self._refiner is not None:
            values.update(self._refiner.diagnostics())   # refine_rate_hz, refine_last_age_s ...
        if check is not None:
            values.update(check.values())
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.health.publisher.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run camreloc_ros localizer`` and ``camreloc node``.

    Returns 1, after one log line, when a start parameter is refused. rclpy.init is not used
    as a context manager: Jazzy's returns None (the context manager came with Kilted).
    """
    rclpy.init(args=args)
    node = None
    try:
        node = LocalizerNode()
        rclpy.spin(node)
    except ConfigurationError as exc:
        get_logger(NODE_NAME).fatal(str(exc))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
