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
"""Dataset readers and splits on the real data in ../shared/data.

Cambridge, TUM and csv have no real sample here, so small fixtures in their exact on-disk
shape are written into tmp_path, pointing at real images and real (HoloLens) poses; the
pose conversions are checked against scipy, independently of the project's geometry code.
"""

from pathlib import Path

from camreloc_ros.tools.common import shared_data_dir
from camreloc_ros.core.data.datasets import Dataset, DatasetError, Frame, Intrinsics
from camreloc_ros.core.data.formats import FORMATS, read_dataset
from camreloc_ros.core.data.split import (block_split, causal_window_groups,
                                          causal_window_starts, frame_breaks,
                                          split_dataset, temporal_windows)
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

DATA = shared_data_dir()  # ../shared/data of the repo
SEVEN = DATA / '7scenes-stairs-mini'
HOLO = DATA / 'hololens-office'


def holo_images(n):
    return sorted((HOLO / 'images').glob('*.jpg'))[:n]


def holo_poses(n):
    return np.loadtxt(HOLO / 'poses.txt', max_rows=n).reshape(-1, 4, 4)


def fmt(x):
    return repr(float(x))


# ----------------------------------------------------------------------------- fixtures

def make_posed(tmp_path, n=6, pose_lines=None, k=True):
    root = tmp_path / 'posed'
    (root / 'images').mkdir(parents=True)
    for img in holo_images(n):
        (root / 'images' / img.name).symlink_to(img)
    if pose_lines is None:
        pose_lines = (HOLO / 'poses.txt').read_text().splitlines()[:n]
    (root / 'poses.txt').write_text('\n'.join(pose_lines) + '\n')
    if k:
        (root / 'K.txt').symlink_to(HOLO / 'K.txt')
    return root


def make_7scenes(tmp_path):
    """A writable 7-Scenes copy: real images linked, pose and split files copied."""
    root = tmp_path / '7s'
    for seq in sorted(SEVEN.glob('seq-*')):
        (root / seq.name).mkdir(parents=True)
        for f in seq.iterdir():
            if f.name.endswith('.pose.txt'):
                (root / seq.name / f.name).write_bytes(f.read_bytes())
            else:
                (root / seq.name / f.name).symlink_to(f)
    for s in ('TrainSplit.txt', 'TestSplit.txt'):
        (root / s).write_bytes((SEVEN / s).read_bytes())
    return root


def cambridge_line(rel, T):
    # Cambridge stores the camera centre and the world-to-camera rotation as w, x, y, z.
    x, y, z, w = Rotation.from_matrix(T[:3, :3].T).as_quat()
    return ' '.join([rel] + [fmt(v) for v in (*T[:3, 3], w, x, y, z)])


def make_cambridge(tmp_path, n_train=5, n_test=3):
    root = tmp_path / 'KingsCollege'
    imgs, poses = holo_images(n_train + n_test), holo_poses(n_train + n_test)
    header = ['Visual Landmark Dataset V1', 'ImageFile, Camera Position [X Y Z W P Q R]', '']
    files = {'dataset_train.txt': [], 'dataset_test.txt': []}
    for i, (img, T) in enumerate(zip(imgs, poses)):
        seq, j = ('seq1', i + 1) if i < n_train else ('seq2', i - n_train + 1)
        rel = f'{seq}/frame{j:05d}.png'
        (root / seq).mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(img)
        files['dataset_train.txt' if seq == 'seq1' else 'dataset_test.txt'].append(
            cambridge_line(rel, T))
    for name, lines in files.items():
        # Shuffled on purpose: readers must restore time order from the frame numbers.
        (root / name).write_text('\n'.join(header + lines[::-1]) + '\n')
    return root, poses


def tum_gt_line(ts, T):
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return ' '.join(fmt(v) for v in (ts, *T[:3, 3], *q))


def make_tum(tmp_path, n=6, gt_dt=0.004, missing_gt=()):
    root = tmp_path / 'rgbd_dataset_freiburg1_xyz'
    (root / 'rgb').mkdir(parents=True)
    imgs, poses = holo_images(n), holo_poses(n)
    t0 = 1305031102.175304
    rgb = ['# color images', "# file: 'rgbd_dataset_freiburg1_xyz.bag'", '# timestamp filename']
    gt = ['# ground truth trajectory', "# file: 'rgbd_dataset_freiburg1_xyz.bag'",
          '# timestamp tx ty tz qx qy qz qw']
    for i, (img, T) in enumerate(zip(imgs, poses)):
        ts = t0 + i / 30.0
        rel = f'rgb/{ts:.6f}.jpg'
        (root / rel).symlink_to(img)
        rgb.append(f'{ts:.6f} {rel}')
        if i not in missing_gt:
            gt.append(tum_gt_line(ts + gt_dt, T))
    (root / 'rgb.txt').write_text('\n'.join(rgb) + '\n')
    (root / 'groundtruth.txt').write_text('\n'.join(gt) + '\n')
    return root, poses, t0


def make_csv(tmp_path, n=6, with_seq=True):
    root = tmp_path / 'airframe'
    (root / 'images').mkdir(parents=True)
    imgs, poses = holo_images(n), holo_poses(n)
    header = 'image,x,y,z,qx,qy,qz,qw' + (',sequence,timestamp' if with_seq else '')
    lines = [header]
    for i, (img, T) in enumerate(zip(imgs, poses)):
        (root / 'images' / img.name).symlink_to(img)
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        row = [f'images/{img.name}'] + [fmt(v) for v in (*T[:3, 3], *q)]
        if with_seq:
            row += ['flightA' if i < 4 else 'flightB', fmt(100.0 + i * 0.1)]
        lines.append(','.join(row))
    (root / 'poses.csv').write_text('\n'.join(lines) + '\n')
    return root, poses


def replace_line(path, line_no, text):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text('\n'.join(lines) + '\n')


def raises_at(file_name, line, fn, *args, **kwargs):
    """Assert a DatasetError naming ``file_name`` (and ``line N`` when given)."""
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert file_name in msg, msg
    if line is not None:
        assert f'line {line}' in msg, msg
        assert info.value.line == line
    return msg


# ----------------------------------------------------------------------------- readers

def test_7scenes_real_layout_and_official_split():
    ds = read_dataset(SEVEN, '7scenes')
    assert isinstance(ds, Dataset) and ds.format == '7scenes'
    assert len(ds.frames) == 12
    assert list(ds.sequences()) == ['seq-01', 'seq-02', 'seq-03', 'seq-04']
    f0 = ds.frames[0]
    assert f0.name == 'seq-01/frame-000000' and f0.index == 0 and f0.timestamp is None
    assert f0.image_path == SEVEN / 'seq-01' / 'frame-000000.color.jpg'
    np.testing.assert_allclose(f0.pose_c2w,
                               np.loadtxt(SEVEN / 'seq-01' / 'frame-000000.pose.txt'))
    assert ds.intrinsics == Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    train = read_dataset(SEVEN, '7scenes', split='train')
    test = read_dataset(SEVEN, '7scenes', split='test')
    assert sorted(train.sequences()) == ['seq-02', 'seq-03']  # TrainSplit: sequence2, 3
    assert sorted(test.sequences()) == ['seq-01', 'seq-04']  # TestSplit: sequence1, 4
    assert len(train.frames) == len(test.frames) == 6
    assert [f.index for f in train.sequences()['seq-02']] == [0, 1, 2]
    official = split_dataset(ds, 'train')
    assert [f.name for f in official.frames] == [f.name for f in train.frames]


def test_posed_real_hololens():
    ds = read_dataset(HOLO, 'posed')
    assert len(ds.frames) == 373 and ds.format == 'posed'
    assert [f.name for f in ds.frames[:2]] == ['00003', '00004']
    assert ds.frames[-1].name == '00378'
    assert {f.sequence for f in ds.frames} == {'hololens-office'}
    assert [f.index for f in ds.frames] == list(range(373))
    first = np.array((HOLO / 'poses.txt').read_text().splitlines()[0].split(), float)
    np.testing.assert_array_equal(ds.frames[0].pose_c2w, first.reshape(4, 4))
    assert ds.frames[0].pose_c2w.dtype == np.float64
    assert not ds.frames[0].pose_c2w.flags.writeable
    k = ds.intrinsics
    assert (k.width, k.height) == (540, 360)
    assert k.fx == pytest.approx(495.6, abs=0.05) and k.fy == pytest.approx(495.5, abs=0.05)
    assert k.cx == pytest.approx(269.50, abs=0.01) and k.cy == pytest.approx(169.19, abs=0.01)


def test_cambridge_fixture(tmp_path):
    root, poses = make_cambridge(tmp_path)
    ds = read_dataset(root, 'cambridge')
    assert [f.name for f in ds.frames] == [f'seq1/frame{i:05d}' for i in range(1, 6)] + \
        [f'seq2/frame{i:05d}' for i in range(1, 4)]
    assert list(ds.sequences()) == ['seq1', 'seq2']
    assert [f.index for f in ds.frames] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert ds.intrinsics is None
    for f, T in zip(ds.frames, poses):
        np.testing.assert_allclose(f.pose_c2w, T, atol=1e-4)
    train = read_dataset(root, 'cambridge', split='train')
    test = read_dataset(root, 'cambridge', split='test')
    assert [f.sequence for f in train.frames] == ['seq1'] * 5
    assert [f.name for f in test.frames] == [f.name for f in split_dataset(ds, 'test').frames]


def test_tum_fixture_association(tmp_path):
    root, poses, t0 = make_tum(tmp_path)
    ds = read_dataset(root, 'tum')
    assert len(ds.frames) == 6 and ds.dropped == 0
    assert ds.frames[0].timestamp == pytest.approx(t0)
    assert ds.frames[0].name == f'rgb/{t0:.6f}'
    for f, T in zip(ds.frames, poses):
        np.testing.assert_allclose(f.pose_c2w, T, atol=1e-4)
    # 4 ms offset is outside a 3 ms tolerance: every frame is unmatched.
    raises_at('rgb.txt', 4, read_dataset, root, 'tum', max_dt=0.003)


def test_tum_unmatched_raise_or_drop(tmp_path):
    root, poses, t0 = make_tum(tmp_path, missing_gt=(2, 3))
    # Neighbours' GT is 1/30 s away: farther than the default 0.02 s.
    msg = raises_at('rgb.txt', 6, read_dataset, root, 'tum')
    assert '2 of 6' in msg and f'{t0 + 2 / 30:.6f}' in msg
    ds = read_dataset(root, 'tum', drop_unmatched=True)
    assert ds.dropped == 2 and len(ds.frames) == 4
    assert [f.index for f in ds.frames] == [0, 1, 4, 5]  # the gap stays visible
    assert temporal_windows(ds.frames, 2) == [[0, 1], [2, 3]]
    np.testing.assert_allclose(ds.frames[2].pose_c2w, poses[4], atol=1e-4)


def test_csv_fixture(tmp_path):
    root, poses = make_csv(tmp_path)
    ds = read_dataset(root, 'csv')
    assert list(ds.sequences()) == ['flightA', 'flightB']
    assert [f.index for f in ds.frames] == [0, 1, 2, 3, 0, 1]
    assert ds.frames[1].timestamp == pytest.approx(100.1)
    assert ds.frames[0].name == 'images/00003'
    for f, T in zip(ds.frames, poses):
        np.testing.assert_allclose(f.pose_c2w, T, atol=1e-4)
    same = read_dataset(root / 'poses.csv', 'csv')  # root may be the file itself
    assert [f.name for f in same.frames] == [f.name for f in ds.frames]
    plain_root, _ = make_csv(tmp_path / 'plain', with_seq=False)
    plain = read_dataset(plain_root, 'csv')
    assert {f.sequence for f in plain.frames} == {'airframe'}
    assert all(f.timestamp is None for f in plain.frames)


# ----------------------------------------------------------------------------- bad data

@pytest.mark.parametrize('line_text, what', [
    (' '.join(['1'] * 15), 'expected 16 values'),
    (' '.join(['1'] * 15 + ['abc']), 'non-numeric'),
    (' '.join(['nan'] + ['0'] * 15), 'NaN'),
    (' '.join(['inf'] + ['0'] * 15), 'NaN or infinite'),
    (' '.join(str(v) for v in (2 * np.eye(4)).ravel()), 'not a rigid'),
])
def test_posed_bad_pose_lines(tmp_path, line_text, what):
    root = make_posed(tmp_path)
    replace_line(root / 'poses.txt', 4, line_text)
    msg = raises_at('poses.txt', 4, read_dataset, root, 'posed')
    assert what in msg


def test_posed_pose_count_mismatch(tmp_path):
    lines = (HOLO / 'poses.txt').read_text().splitlines()
    fewer = make_posed(tmp_path / 'a', n=6, pose_lines=lines[:5])
    msg = raises_at('poses.txt', 5, read_dataset, fewer, 'posed')
    assert '00008.jpg' in msg
    more = make_posed(tmp_path / 'b', n=6, pose_lines=lines[:8])
    raises_at('poses.txt', 7, read_dataset, more, 'posed')


def test_empty_and_missing(tmp_path):
    empty = make_posed(tmp_path, n=0, pose_lines=[], k=False)
    raises_at('images', None, read_dataset, empty, 'posed')
    with pytest.raises(DatasetError, match='7scenes, posed, cambridge, tum, csv'):
        read_dataset(HOLO, 'colmap')
    assert FORMATS == ('7scenes', 'posed', 'cambridge', 'tum', 'csv')
    raises_at('nowhere', None, read_dataset, tmp_path / 'nowhere', 'posed')
    with pytest.raises(DatasetError, match='no official'):
        read_dataset(HOLO, 'posed', split='train')
    with pytest.raises(DatasetError, match='unknown option'):
        read_dataset(HOLO, 'posed', max_dt=1.0)


def test_7scenes_bad_data(tmp_path):
    root = make_7scenes(tmp_path)
    (root / 'TestSplit.txt').unlink()
    raises_at('TestSplit.txt', None, read_dataset, root, '7scenes', split='test')
    assert len(read_dataset(root, '7scenes', split='train').frames) == 6
    pose = root / 'seq-02' / 'frame-000001.pose.txt'
    replace_line(pose, 3, '0 0 nan 0')
    raises_at('frame-000001.pose.txt', 3, read_dataset, root, '7scenes')
    replace_line(pose, 3, '0 0 1')
    raises_at('frame-000001.pose.txt', 3, read_dataset, root, '7scenes')
    pose.write_bytes((SEVEN / 'seq-02' / 'frame-000001.pose.txt').read_bytes())
    (root / 'seq-03' / 'frame-000002.color.jpg').unlink()
    raises_at('frame-000002.pose.txt', None, read_dataset, root, '7scenes')
    (root / 'seq-03' / 'frame-000002.pose.txt').unlink()
    (root / 'seq-03' / 'frame-000002.color.jpg').symlink_to(
        SEVEN / 'seq-03' / 'frame-000002.color.jpg')
    raises_at('seq-03', None, read_dataset, root, '7scenes')  # image without pose
    (root / 'TrainSplit.txt').write_text('sequence2\nsequence9\n')
    raises_at('TrainSplit.txt', 2, read_dataset, root, '7scenes', split='train')


def test_cambridge_bad_data(tmp_path):
    root, _ = make_cambridge(tmp_path)
    train = root / 'dataset_train.txt'
    good = train.read_text()
    replace_line(train, 5, 'seq1/frame00099.png 1 2 3 1 0 0 0')
    msg = raises_at('dataset_train.txt', 5, read_dataset, root, 'cambridge')
    assert 'frame00099.png' in msg
    train.write_text(good)
    replace_line(train, 6, 'seq1/frame00002.png 1 2 3 1 0 0')
    assert 'expected 7 values' in raises_at('dataset_train.txt', 6, read_dataset, root,
                                            'cambridge')
    train.write_text(good)
    replace_line(train, 7, 'seq1/frame00002.png 1 2 3 2 0 0 0')
    raises_at('dataset_train.txt', 7, read_dataset, root, 'cambridge')  # not unit quaternion
    (root / 'dataset_test.txt').unlink()
    raises_at('dataset_test.txt', None, read_dataset, root, 'cambridge', split='test')


def test_tum_bad_data(tmp_path):
    root, _, t0 = make_tum(tmp_path)
    gt = root / 'groundtruth.txt'
    replace_line(gt, 5, f'{t0} 1 2 3 0 0 0 x')
    raises_at('groundtruth.txt', 5, read_dataset, root, 'tum')
    replace_line(gt, 5, f'{t0} 1 2 3 0 0 0 inf')
    raises_at('groundtruth.txt', 5, read_dataset, root, 'tum')
    replace_line(gt, 5, f'{t0} 1 2 3 0 0 1')
    raises_at('groundtruth.txt', 5, read_dataset, root, 'tum')
    replace_line(gt, 5, tum_gt_line(t0, np.eye(4)))
    replace_line(root / 'rgb.txt', 6, f'{t0 + 2 / 30:.6f} rgb/missing.png')
    msg = raises_at('rgb.txt', 6, read_dataset, root, 'tum')
    assert 'missing.png' in msg


def test_csv_bad_data(tmp_path):
    root, _ = make_csv(tmp_path)
    path = root / 'poses.csv'
    good = path.read_text()
    replace_line(path, 3, 'images/nope.jpg,0,0,0,0,0,0,1,flightA,1.0')
    raises_at('poses.csv', 3, read_dataset, root, 'csv')
    replace_line(path, 3, 'images/00004.jpg,0,0,0,0,0,0,1,flightA')
    raises_at('poses.csv', 3, read_dataset, root, 'csv')
    replace_line(path, 3, 'images/00004.jpg,0,0,nan,0,0,0,1,flightA,1.0')
    raises_at('poses.csv', 3, read_dataset, root, 'csv')
    replace_line(path, 3, 'images/00004.jpg,0,0,0,0,0,0,0,flightA,1.0')
    raises_at('poses.csv', 3, read_dataset, root, 'csv')
    path.write_text(good.replace('qw,', 'qW,', 1))
    raises_at('poses.csv', 1, read_dataset, root, 'csv')


# ----------------------------------------------------------------------------- splits

def fake_frames(seq_lengths):
    frames = []
    for s, n in seq_lengths.items():
        frames += [Frame(f'{s}/{i}', Path(f'{s}/{i}.png'), np.eye(4), s, i, None)
                   for i in range(n)]
    return frames


def test_block_split_hololens():
    ds = read_dataset(HOLO, 'posed')
    train, test = block_split(ds.frames, block=25, every=4)
    names_tr, names_te = [f.name for f in train], [f.name for f in test]
    assert not set(names_tr) & set(names_te)
    assert sorted(names_tr + names_te) == sorted(f.name for f in ds.frames)
    assert [f.index for f in test] == [i for b in (3, 7, 11) for i in range(25 * b, 25 * b + 25)]
    assert [f.index for f in train] == sorted(f.index for f in train)
    assert len(test) == 75 and len(train) == 298
    # An interleaved split would put a neighbour of every test frame into train; here no
    # test frame has one except at the block edges.
    train_idx = {f.index for f in train}
    assert sum((f.index - 1 in train_idx) or (f.index + 1 in train_idx) for f in test) == 6
    sd = split_dataset(ds, 'test')
    assert [f.name for f in sd.frames] == names_te and sd.intrinsics == ds.intrinsics
    assert len(split_dataset(ds, 'all').frames) == 373


def test_block_split_options_and_sequences():
    frames = fake_frames({'a': 10, 'b': 7})
    train, test = block_split(frames, block=2, every=3, offset=0)
    assert [f.name for f in test] == ['a/0', 'a/1', 'a/6', 'a/7', 'b/0', 'b/1', 'b/6']
    assert len(train) + len(test) == 17
    for bad in ({'block': 0}, {'every': 1}, {'every': 3, 'offset': 3}):
        with pytest.raises(ValueError):
            block_split(frames, **bad)
    with pytest.raises(ValueError):
        split_dataset(Dataset(Path('.'), 'posed', frames, None), 'val')


def test_temporal_windows_never_cross_sequences_or_gaps():
    frames = fake_frames({'a': 5, 'b': 2, 'c': 4})
    wins = temporal_windows(frames, 3)
    assert wins == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [7, 8, 9], [8, 9, 10]]
    assert temporal_windows(frames, 3, stride=2) == [[0, 1, 2], [2, 3, 4], [7, 8, 9]]
    assert temporal_windows(frames, 6) == []
    ds = read_dataset(HOLO, 'posed')
    train, _ = block_split(ds.frames)
    wins = temporal_windows(train, 10, stride=5)
    assert wins
    for w in wins:
        idx = [train[i].index for i in w]
        assert idx == list(range(idx[0], idx[0] + 10))  # consecutive: spans no gap
    assert not any(train[w[0]].index < 100 <= train[w[-1]].index for w in wins)
    seven = read_dataset(SEVEN, '7scenes')
    assert len(temporal_windows(seven.frames, 3)) == 4
    assert temporal_windows(seven.frames, 4) == []
    with pytest.raises(ValueError):
        temporal_windows(frames, 0)


def test_causal_window_starts_restart_at_breaks():
    frames = [Frame(f'{s}{i}', Path(f'{s}{i}.jpg'), np.eye(4), s, i)
              for s, idx in (('a', [0, 1, 2, 3, 5, 6]), ('b', [0, 1])) for i in idx]
    breaks = frame_breaks(frames)
    assert breaks == [True, False, False, False, True, False, True, False]
    assert causal_window_starts(breaks, 3).tolist() == [0, 0, 0, 1, 4, 4, 6, 6]
    assert causal_window_starts(breaks, 1).tolist() == list(range(8))


def test_causal_window_groups_batch_every_frame_once():
    breaks = [True, False, False, False, True, False, True, False]
    lo = causal_window_starts(breaks, 3)
    seen = []
    for idx, gather in causal_window_groups(breaks, 3, chunk=2):
        assert len(idx) <= 2
        for i, g in zip(idx, gather):
            assert g.tolist() == list(range(lo[i], i + 1))   # oldest first, frame last
            seen.append(int(i))
    assert sorted(seen) == list(range(8))
    later = [int(i) for idx, _ in causal_window_groups(breaks, 3, first=5) for i in idx]
    assert sorted(later) == [5, 6, 7]
