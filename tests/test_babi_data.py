"""Tests of the bAbI data pipeline (keras_stm.experiments.tasks.babi). No network access."""

import hashlib
import io
import math
import os
import tarfile

import keras
import numpy as np
import pytest

from keras_stm.experiments.tasks.babi import ABSENT_ID
from keras_stm.experiments.tasks.babi import BABI_URL
from keras_stm.experiments.tasks.babi import DEFAULT_SHAPE_BUCKETS
from keras_stm.experiments.tasks.babi import PAD_ID
from keras_stm.experiments.tasks.babi import PAD_TOKEN
from keras_stm.experiments.tasks.babi import BabiArrays
from keras_stm.experiments.tasks.babi import BabiTrainDataset
from keras_stm.experiments.tasks.babi import babi_filename
from keras_stm.experiments.tasks.babi import bucket_shapes
from keras_stm.experiments.tasks.babi import check_shape_buckets
from keras_stm.experiments.tasks.babi import load_babi
from keras_stm.experiments.tasks.babi import parse_stories
from keras_stm.experiments.tasks.babi import tokenize

# The project's copy of the official archive lives in shared/ beside the repository (in CI too);
# BABI_ARCHIVE overrides it.
REAL_ARCHIVE = os.environ.get(
    "BABI_ARCHIVE",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "shared",
        "data",
        "babi",
        "babi_tasks_1-20_v1-2.tar.gz",
    ),
)

# Task-1 style: a space before the TAB; two stories.
QA1_TRAIN = (
    "1 Mary moved to the bathroom.\n"
    "2 John went to the hallway.\n"
    "3 Where is Mary? \tbathroom\t1\n"
    "4 Daniel went back to the hallway.\n"
    "5 Sandra moved to the garden.\n"
    "6 Where is Daniel? \thallway\t4\n"
    "1 John moved to the office.\n"
    "2 Where is John? \toffice\t1\n"
)
QA1_VALID = "1 Sandra went to the kitchen.\n2 Where is Sandra? \tkitchen\t1\n"
QA1_TEST = (
    "1 Daniel journeyed to the garden.\n2 Mary went to the kitchen.\n"
    "3 Where is Daniel? \tgarden\t1\n"
)
# Task-8 style: no space before the TAB, a comma-joined multi-word answer.
QA8_TRAIN = (
    "1 Mary took the apple.\n"
    "2 Mary grabbed the football.\n"
    "3 What is Mary carrying?\tapple,football\t1 2\n"
    "4 Mary dropped the apple.\n"
    "5 What is Mary carrying?\tfootball\t4\n"
)
QA8_VALID = "1 John got the milk.\n2 What is John carrying?\tmilk\t1\n"
QA8_TEST = (
    "1 John got the milk.\n2 John discarded the milk.\n3 What is John carrying?\tnothing\t2\n"
)
# Task 3: four stories; the 10k training files are missing, as in the local archive.
S_A = "1 Bill went to the kitchen.\n2 Where is Bill? \tkitchen\t1\n"
S_B = "1 Fred went to the park.\n2 Fred went to the office.\n3 Where is Fred? \toffice\t2\n"
S_C = "1 Jeff went to the garden.\n2 Where is Jeff? \tgarden\t1\n"
S_D = "1 Mary went to the cellar.\n2 Where is Mary? \tcellar\t1\n"


def tiny_files():
    """Files of a small archive with the official layout (paths relative to tasks_1-20_v1-2/)."""
    files = {}
    for subset in ("en-valid-10k", "en-valid"):
        files.update(
            {
                babi_filename(subset, 1, "train"): QA1_TRAIN,
                babi_filename(subset, 1, "valid"): QA1_VALID,
                babi_filename(subset, 1, "test"): QA1_TEST,
                babi_filename(subset, 8, "train"): QA8_TRAIN,
                babi_filename(subset, 8, "valid"): QA8_VALID,
                babi_filename(subset, 8, "test"): QA8_TEST,
            }
        )
    files[babi_filename("en-valid", 3, "train")] = S_A + S_B
    files[babi_filename("en-valid", 3, "valid")] = S_C
    files[babi_filename("en-valid", 3, "test")] = S_D + S_A
    files[babi_filename("en-valid-10k", 3, "valid")] = S_C + S_D
    files[babi_filename("en-valid-10k", 3, "test")] = S_D + S_A
    files[babi_filename("en", 3, "train")] = S_A + S_B + S_C
    files[babi_filename("en", 3, "test")] = S_D + S_A
    files[babi_filename("en-10k", 3, "test")] = S_D + S_A
    files[babi_filename("en-10k", 1, "train")] = QA1_TRAIN
    files[babi_filename("en-10k", 1, "test")] = QA1_TEST
    return {k: v.encode() for k, v in files.items()}


def sums(files):
    """Independent SHA-256 table of the tiny files."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def make_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(f"tasks_1-20_v1-2/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return str(path)


def make_folder(root, files):
    for name, content in files.items():
        full = os.path.join(root, "tasks_1-20_v1-2", *name.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
    return str(root)


def words(text):
    return text.split()


def brute_force(samples, vocab, story_max, sentence_max, cap):
    """Per-example loops: the reference the vectorised code must match."""
    ids = {w: i for i, w in enumerate(vocab)}
    n = len(samples)
    S = np.zeros((n, story_max, sentence_max), np.int32)
    Q = np.zeros((n, sentence_max), np.int32)
    A = np.zeros(n, np.int32)
    L = np.zeros(n, np.int32)
    for i, (story, q, a) in enumerate(samples):
        story = story[-cap:]
        for j, sent in enumerate(story):
            for k, w in enumerate(sent):
                S[i, j, k] = ids[w]
        for k, w in enumerate(q):
            Q[i, k] = ids[w]
        A[i], L[i] = ids[a], len(story)
    return S, Q, A, L


def test_tokenize():
    assert tokenize("Mary moved to the bathroom.") == words("mary moved to the bathroom .")
    assert tokenize("Where is Mary? ") == words("where is mary ?")
    assert tokenize("  Is John in the park?") == words("is john in the park ?")
    assert tokenize("Hi!! there, Bob") == ["hi", "!!", "there", ",", "bob"]
    assert tokenize("apple,football") == ["apple", ",", "football"]
    assert tokenize("   ") == []


def test_parse_stories_by_hand():
    got = parse_stories(QA1_TRAIN)
    s1 = words("mary moved to the bathroom .")
    s2 = words("john went to the hallway .")
    s4 = words("daniel went back to the hallway .")
    s5 = words("sandra moved to the garden .")
    assert got == [
        ([s1, s2], words("where is mary ?"), "bathroom"),
        ([s1, s2, s4, s5], words("where is daniel ?"), "hallway"),  # earlier question excluded
        ([words("john moved to the office .")], words("where is john ?"), "office"),  # new story
    ]
    # No space before the TAB, multi-word answer kept whole, lines given as a list.
    got8 = parse_stories(QA8_TRAIN.splitlines(keepends=True))
    assert got8[0] == (
        [words("mary took the apple ."), words("mary grabbed the football .")],
        words("what is mary carrying ?"),
        "apple,football",
    )
    assert got8[1][0][-1] == words("mary dropped the apple .") and got8[1][2] == "football"
    assert len(got8[1][0]) == 3
    # Same result from bytes; answers are lower-cased.
    assert parse_stories(b"1 Go North.\n2 Which way? \tN,W\t1\n") == [
        ([["go", "north", "."]], words("which way ?"), "n,w")
    ]
    with pytest.raises(ValueError, match="line 2"):
        parse_stories("1 Mary went home.\nbad line without id\n")


def test_load_tiny_archive_matches_brute_force(tmp_path):
    files = tiny_files()
    archive = make_archive(tmp_path / "babi.tar.gz", files)
    cap = 3
    data = load_babi(archive, tasks=[8, 1], story_cap=cap, checksums=sums(files), use_cache=False)
    assert data.tasks == (1, 8) and data.metadata["splits"] == ["train", "valid", "test"]
    # Vocabulary: PAD first, then every token and whole answer of the loaded tasks, sorted.
    parsed = {
        (t, s): parse_stories(files[babi_filename("en-valid-10k", t, s)])
        for t in (1, 8)
        for s in ("train", "valid", "test")
    }
    expected_words = set()
    for samples in parsed.values():
        for story, q, a in samples:
            expected_words.update(w for sent in story for w in sent)
            expected_words.update(q)
            expected_words.add(a)
    assert data.vocab == [PAD_TOKEN] + sorted(expected_words)
    assert data.vocab[PAD_ID] == PAD_TOKEN and "apple,football" in data.vocab
    assert data.metadata["vocab_size"] == len(data.vocab)
    # Shapes: task 1's longest story has 4 statements -> capped to 3; longest sentence 7 tokens
    # ("daniel went back to the hallway ."); task 8: 3 statements, 5 tokens.
    assert (
        data.metadata["task_info"][1]["story_max"],
        data.metadata["task_info"][1]["sentence_max"],
    ) == (3, 7)
    assert (
        data.metadata["task_info"][8]["story_max"],
        data.metadata["task_info"][8]["sentence_max"],
    ) == (3, 5)
    assert data.common_shape == (3, 7)
    for t in (1, 8):
        info = data.metadata["task_info"][t]
        for s in ("train", "valid", "test"):
            a = getattr(data, s)[t]
            assert all(x.dtype == np.int32 for x in a)
            ref = brute_force(
                parsed[t, s], data.vocab, info["story_max"], info["sentence_max"], cap
            )
            for got, want in zip(a, ref):
                np.testing.assert_array_equal(got, want)
    # Hand-checked: the cap keeps the *last* statements; padding at the end.
    tr = data.train[1]
    assert data.decode(tr.story[1, 0]) == words("john went to the hallway .")
    assert data.decode(tr.story[1, 2]) == words("sandra moved to the garden .")
    np.testing.assert_array_equal(tr.story_length, [2, 3, 1])
    assert (tr.story[0, 2] == 0).all() and (tr.story[2, 1:] == 0).all()
    assert (tr.story[2, 0, 6:] == 0).all() and (tr.story[2, 0, :6] != 0).all()
    assert data.decode(tr.question[0]) == words("where is mary ?") and tr.question[0, 4] == 0
    assert data.decode(data.train[8].answer) == ["apple,football", "football"]


def _tiny_tasks_1_and_8(tmp_path):
    """Tasks 1 and 8 of the tiny archive, loaded without the cache."""
    files = tiny_files()
    return load_babi(
        make_archive(tmp_path / "b.tar.gz", files),
        tasks=[1, 8],
        checksums=sums(files),
        use_cache=False,
    )


def test_common_padding_and_inputs(tmp_path):
    data = _tiny_tasks_1_and_8(tmp_path)
    own = data.test[8]
    common = data.arrays("test", 8, padding="common")
    s, w = own.story.shape[1:]
    assert common.story.shape[1:] == data.common_shape and data.common_shape[1] > w
    np.testing.assert_array_equal(common.story[:, :s, :w], own.story)
    assert (common.story[:, :, w:] == 0).all() and (common.question[:, w:] == 0).all()
    x, y = data.inputs("valid", 8)
    assert set(x) == {"story", "question", "task"} and (x["task"] == 8).all()
    np.testing.assert_array_equal(y, data.valid[8].answer)
    x, y = data.inputs("valid", 1, padding=(5, 9), input_format="tuple", include_task=False)
    assert len(x) == 2 and x[0].shape[1:] == (5, 9) and x[1].shape[1:] == (9,)
    for bad in ({"padding": "wide"}, {"padding": (1, 1)}, {"input_format": "list"}):
        with pytest.raises(ValueError):
            data.inputs("valid", 1, **bad)
    with pytest.raises(ValueError, match="split"):
        data.arrays("dev", 1)


def test_bucket_shapes():
    own = {1: (10, 7), 2: (70, 7), 4: (2, 8), 14: (14, 9), 18: (20, 10), 6: (26, 7)}
    assert bucket_shapes(own, (10, 14, 26, 70)) == {
        1: (10, 10),
        2: (70, 10),
        4: (10, 10),
        14: (14, 10),
        18: (26, 10),
        6: (26, 10),
    }
    # Past the last boundary: the longest story of the tasks (any boundaries fit any cap).
    assert bucket_shapes(own, (12,)) == {
        t: (12 if s <= 12 else 70, 10) for t, (s, _) in own.items()
    }
    assert bucket_shapes(own, None) == own and bucket_shapes(own, ()) == own
    assert bucket_shapes({3: (5, 4)}, [8, 16]) == {3: (8, 4)}
    assert DEFAULT_SHAPE_BUCKETS == (10, 14, 26, 70)


@pytest.mark.parametrize(
    "bad, message",
    [
        ((20, 10), "20 is followed by 10"),
        ((10, 10), "10 is followed by 10"),
        ((0, 10), "0 in .* is not positive"),
        ((10, -5), "-5 in .* is not positive"),
        ((10, 2.5), "2.5 in .* is not an integer"),
        ((True,), "True in .* is not an integer"),
        ("10,20", "got '10,20'"),
        (10, "got 10"),
    ],
)
def test_shape_bucket_errors_name_the_problem(bad, message):
    with pytest.raises(ValueError, match="`shape_buckets` must be story-length boundaries") as e:
        check_shape_buckets(bad)
    assert e.match(message)
    with pytest.raises(ValueError, match=message):
        bucket_shapes({1: (3, 4)}, bad)


def test_with_shape_buckets_pads_with_absent_words(tmp_path):
    """Bucketed arrays: the task's own arrays (PAD padding included) in the corner, ABSENT_ID
    everywhere added; every split of a task has the same bucket shape."""
    data = _tiny_tasks_1_and_8(tmp_path)
    own = {t: data.train[t].story.shape[1:] for t in data.tasks}
    assert own[1] != own[8]  # two shapes
    bucketed = data.with_shape_buckets((2, 5))
    width = data.common_shape[1]
    want = {
        t: (2 if s <= 2 else 5 if s <= 5 else data.common_shape[0], width)
        for t, (s, _) in own.items()
    }
    assert bucketed.bucket_shapes((2, 5)) == data.bucket_shapes((2, 5)) == want
    assert bucketed.metadata["shape_buckets"] == [2, 5]
    assert bucketed.metadata["padded_shapes"] == {t: list(v) for t, v in want.items()}
    assert "shape_buckets" not in data.metadata  # the original is left as it was
    for split in ("train", "valid", "test"):
        assert {a.story.shape[1:] for a in getattr(bucketed, split).values()} <= set(want.values())
        for t in data.tasks:
            a, b = getattr(data, split)[t], getattr(bucketed, split)[t]
            s, w = a.story.shape[1:]
            assert b.story.shape[1:] == want[t] and b.question.shape[1:] == (want[t][1],)
            assert b.story.dtype == np.int32 and b.question.dtype == np.int32
            np.testing.assert_array_equal(b.story[:, :s, :w], a.story)  # PAD padding kept
            np.testing.assert_array_equal(b.question[:, :w], a.question)
            assert (b.story[:, s:] == ABSENT_ID).all() and (b.story[:, :, w:] == ABSENT_ID).all()
            assert (b.question[:, w:] == ABSENT_ID).all()
            for field in ("answer", "story_length"):
                np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
    assert (data.train[1].story == PAD_ID).any()  # the tiny task does have PAD padding
    # decode drops absent words like padding
    assert bucketed.decode(bucketed.test[8].question[0]) == data.decode(data.test[8].question[0])
    # None: every task keeps its own shape
    plain = data.with_shape_buckets(None)
    assert plain.metadata["shape_buckets"] is None
    assert all(plain.train[t].story.shape[1:] == own[t] for t in data.tasks)
    with pytest.raises(ValueError, match="is followed by"):
        data.with_shape_buckets((5, 2))


def test_folder_matches_archive(tmp_path):
    files = tiny_files()
    ref = load_babi(
        make_archive(tmp_path / "b.tar.gz", files),
        tasks=[1, 8],
        checksums=sums(files),
        use_cache=False,
    )
    root = make_folder(tmp_path / "extracted", files)
    for data_arg in (
        root,
        os.path.join(root, "tasks_1-20_v1-2"),
        os.path.join(root, "tasks_1-20_v1-2", "en-valid-10k"),
    ):
        got = load_babi(data_arg, tasks=[1, 8], checksums=sums(files), use_cache=False)
        assert got.vocab == ref.vocab
        for s in ("train", "valid", "test"):
            for t in (1, 8):
                for a, b in zip(getattr(got, s)[t], getattr(ref, s)[t]):
                    np.testing.assert_array_equal(a, b)


def test_corrupt_and_missing_members(tmp_path):
    files = tiny_files()
    good = sums(files)
    good[babi_filename("en-valid-10k", 8, "valid")] = hashlib.sha1(
        b"blob %d\0" % len(QA8_VALID) + QA8_VALID.encode()
    ).hexdigest()  # git blob SHA-1 form
    assert load_babi(
        make_archive(tmp_path / "ok.tar.gz", files), tasks=[8], checksums=good, use_cache=False
    ).metadata["verified"]
    bad = dict(files)
    bad[babi_filename("en-valid-10k", 1, "test")] = QA1_TEST.replace("garden", "cellar").encode()
    archive = make_archive(tmp_path / "bad.tar.gz", bad)
    with pytest.raises(ValueError, match=r"en-valid-10k/qa1_test\.txt.*corrupt"):
        load_babi(archive, tasks=[1], checksums=good, use_cache=False)
    with pytest.raises(ValueError, match="corrupt"):  # the git blob SHA-1 is checked too
        bad8 = dict(files, **{babi_filename("en-valid-10k", 8, "valid"): b"1 x.\n2 y?\tz\t1\n"})
        load_babi(
            make_archive(tmp_path / "bad8.tar.gz", bad8), tasks=[8], checksums=good, use_cache=False
        )
    # verify=False accepts it; the official table rejects the tiny (non-official) files.
    assert load_babi(archive, tasks=[1], verify=False, use_cache=False).test[1].answer.size == 1
    with pytest.raises(ValueError, match=r"en-valid-10k/qa1_train\.txt.*corrupt"):
        load_babi(archive, tasks=[1], use_cache=False)  # all three files are named
    # A missing ordinary member: named, with the tasks= hint; allow_partial does not hide it.
    lacking = {k: v for k, v in files.items() if k != babi_filename("en-valid-10k", 8, "test")}
    archive = make_archive(tmp_path / "lacking.tar.gz", lacking)
    for allow in (False, True):
        with pytest.raises(FileNotFoundError, match=r"en-valid-10k/qa8_test\.txt.*tasks="):
            load_babi(archive, tasks=[1, 8], checksums=good, allow_partial=allow, use_cache=False)
    # The known task-3 gap: named and explained, with the options.
    archive = make_archive(tmp_path / "b.tar.gz", files)
    with pytest.raises(FileNotFoundError) as err:
        load_babi(archive, tasks=[1, 3, 8], checksums=good, use_cache=False)
    msg = str(err.value)
    assert "'en-valid-10k/qa3_train.txt'" in msg and "known gap" in msg
    assert "tasks=[1, 8]" in msg and "allow_partial=True" in msg and BABI_URL in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_babi(str(tmp_path / "nope.tar.gz"))
    (tmp_path / "notatar.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a .*tar"):
        load_babi(str(tmp_path / "notatar.txt"))
    for kwargs in ({"subset": "hn"}, {"tasks": [0]}, {"tasks": []}, {"story_cap": 0}):
        with pytest.raises(ValueError):
            load_babi(archive, checksums=good, use_cache=False, **kwargs)


def test_allow_partial_task3(tmp_path):
    files = tiny_files()
    archive = make_archive(tmp_path / "b.tar.gz", files)
    # en-10k: en/qa3 train (A, B, C) + en-valid-10k/qa3_valid (C, D), C de-duplicated.
    data = load_babi(
        archive,
        subset="en-10k",
        tasks=[1, 3],
        allow_partial=True,
        checksums=sums(files),
        use_cache=False,
    )
    assert data.metadata["partial_tasks"] == [3] and data.metadata["splits"] == ["train", "test"]
    info = data.metadata["task_info"]
    assert info[3]["partial"] and "partial" in info[3]["note"] and not info[1]["partial"]
    assert info[3]["train_files"] == [
        "en/qa3_three-supporting-facts_train.txt",
        "en-valid-10k/qa3_valid.txt",
    ]
    assert data.decode(data.train[3].answer) == ["kitchen", "office", "garden", "cellar"]
    assert data.decode(data.test[3].answer) == ["cellar", "kitchen"] and data.valid == {}
    assert data.decode(data.train[3].story[1, 1]) == words("fred went to the office .")
    # en-valid-10k: the validation stories (C, D) stay out of training.
    data = load_babi(
        archive,
        subset="en-valid-10k",
        tasks=[3],
        allow_partial=True,
        checksums=sums(files),
        use_cache=False,
    )
    assert data.decode(data.train[3].answer) == ["kitchen", "office"]
    assert data.decode(data.valid[3].answer) == ["garden", "cellar"]
    assert data.metadata["partial_tasks"] == [3]
    # The 1k sets are complete: nothing partial, and allow_partial changes nothing.
    full = load_babi(
        archive,
        subset="en-valid",
        tasks=[3],
        allow_partial=True,
        checksums=sums(files),
        use_cache=False,
    )
    assert full.metadata["partial_tasks"] == [] and full.train[3].answer.size == 2
    # If a source of the partial set is missing too, say so.
    lacking = {k: v for k, v in files.items() if k != babi_filename("en", 3, "train")}
    with pytest.raises(FileNotFoundError, match=r"en/qa3_three-supporting-facts_train\.txt"):
        load_babi(
            make_archive(tmp_path / "l.tar.gz", lacking),
            subset="en-10k",
            tasks=[3],
            allow_partial=True,
            checksums=sums(files),
            use_cache=False,
        )


def test_cache_roundtrip(tmp_path):
    files = tiny_files()
    archive = make_archive(tmp_path / "b.tar.gz", files)
    kw = dict(tasks=[1, 8], checksums=sums(files), cache_dir=str(tmp_path / "cache"))
    first = load_babi(archive, **kw)
    second = load_babi(archive, **kw)
    assert not first.from_cache and second.from_cache
    assert second.vocab == first.vocab and second.metadata == first.metadata
    for s in ("train", "valid", "test"):
        for t in (1, 8):
            for a, b in zip(getattr(second, s)[t], getattr(first, s)[t]):
                assert b.dtype == np.int32 and a.dtype == np.int32
                np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(
        os.path.basename(first.metadata["cache_file"])[:-4] + ext for ext in (".json", ".npz")
    )
    assert not load_babi(archive, story_cap=2, **kw).from_cache  # other cap, other entry
    # Another source (a changed member) never hits the old entry, and is verified.
    bad = dict(files, **{babi_filename("en-valid-10k", 1, "test"): b"1 a.\n2 b?\tc\t1\n"})
    with pytest.raises(ValueError, match="corrupt"):
        load_babi(make_archive(tmp_path / "b2.tar.gz", bad), **kw)


def test_default_source_uses_get_file(tmp_path, monkeypatch):
    files = tiny_files()
    archive = make_archive(tmp_path / "b.tar.gz", files)
    calls = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        calls.append((fname, origin))
        return archive

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    data = load_babi(tasks=[1], checksums=sums(files), use_cache=False)
    assert calls == [("babi_tasks_1-20_v1-2.tar.gz", BABI_URL)]
    assert data.train[1].answer.size == 3


def synthetic(sizes, width=3):
    """Task arrays whose answer identifies the example: answer = 100 * task + row."""
    out = {}
    for t, n in sizes.items():
        ans = (100 * t + np.arange(n)).astype(np.int32)
        out[t] = BabiArrays(
            np.broadcast_to(ans[:, None, None], (n, t, width)).copy(),
            np.repeat(ans[:, None], width, 1),
            ans,
            np.full(n, t, np.int32),
        )
    return out


def test_train_dataset_protocol():
    arrays = synthetic({2: 10, 5: 7})
    ds = BabiTrainDataset(arrays, batch_size=4, seed=3, sampling="proportional")
    assert len(ds) == math.ceil(10 / 4) + math.ceil(7 / 4)
    for epoch in range(2):
        ids, sizes = {2: [], 5: []}, {2: [], 5: []}
        for i in range(len(ds)):
            x, y = ds[i]
            t = ds.batch_task(i)
            assert (x["task"] == t).all() and x["story"].shape[1:] == (t, 3)
            assert x["story"].dtype == np.int32 and y.dtype == np.int32
            np.testing.assert_array_equal(x["story"][:, 0, 0], y)
            ids[t] += list(y)
            sizes[t].append(len(y))
        ds.on_epoch_end()
        for t, n in ((2, 10), (5, 7)):
            assert sorted(ids[t]) == list(100 * t + np.arange(n))  # each example once per epoch
            assert sorted(sizes[t], reverse=True) == [
                min(4, n - 4 * k) for k in range(math.ceil(n / 4))
            ]

    # Uniform task choice; task streams persist across epochs in shuffled passes.
    ds = BabiTrainDataset(arrays, batch_size=4, seed=1)  # sampling="uniform"
    stream = {2: [], 5: []}
    batches = []
    for epoch in range(6):
        for i in range(len(ds)):
            x, y = ds[i]
            stream[ds.batch_task(i)].append(y)
            batches.append((epoch, i, y))
        ds.on_epoch_end()
    assert len(stream[2]) + len(stream[5]) == 6 * len(ds) and stream[2] and stream[5]
    for t, n in ((2, 10), (5, 7)):
        nb = math.ceil(n / 4)
        for p in range(len(stream[t]) // nb):
            one_pass = np.concatenate(stream[t][p * nb : (p + 1) * nb])
            assert sorted(one_pass) == list(100 * t + np.arange(n))
    # Random access, any order, and a fresh object give the same batches.
    other = BabiTrainDataset(arrays, batch_size=4, seed=1)
    for epoch, i, y in reversed(batches):
        other.epoch = epoch
        np.testing.assert_array_equal(other[i][1], y)
    third = BabiTrainDataset(arrays, batch_size=4, seed=2)
    assert any(not np.array_equal(third[i][1], batches[i][2]) for i in range(len(third)))
    with pytest.raises(IndexError):
        other[len(other)]
    for bad in (
        {"batch_size": 0},
        {"seed": -1},
        {"sampling": "roundrobin"},
        {"input_format": "list"},
    ):
        with pytest.raises(ValueError):
            BabiTrainDataset(arrays, **bad)


def test_train_dataset_pad_batches():
    """`pad_batches=True`: full-size batches whose extra rows are zero-weight copies."""
    arrays = synthetic({2: 10, 5: 7})
    plain = BabiTrainDataset(arrays, batch_size=4, seed=1)
    padded = BabiTrainDataset(arrays, batch_size=4, seed=1, pad_batches=True)
    assert len(padded) == len(plain)
    short = 0
    for epoch in range(3):
        plain.epoch = padded.epoch = epoch
        for i in range(len(plain)):
            x, y = plain[i]
            px, py, w = padded[i]
            real = len(y)
            assert py.shape == (4,) and px["story"].shape[0] == 4 and w.dtype == np.float32
            np.testing.assert_array_equal(w, [1.0] * real + [0.0] * (4 - real))
            np.testing.assert_array_equal(py[:real], y)  # the real rows, in order
            np.testing.assert_array_equal(px["story"][:real], x["story"])
            assert set(py[real:]) <= set(y)  # fillers repeat the batch's own rows
            np.testing.assert_array_equal(px["story"][:, 0, 0], py)
            short += real < 4
    assert short > 0  # the test did see smaller last batches
    with pytest.raises(ValueError, match="pad_batches"):
        BabiTrainDataset(arrays, pad_batches="yes")


def test_train_dataset_common_shape_fits_model(tmp_path):
    data = _tiny_tasks_1_and_8(tmp_path)
    ds = data.train_dataset(
        batch_size=2, seed=0, padding="common", input_format="tuple", include_task=False
    )
    assert len(ds) == 2 + 1
    for i in range(len(ds)):
        (story, question), y = ds[i]
        assert story.shape[1:] == data.common_shape and question.shape[1:] == data.common_shape[1:]
    story_in = keras.Input(data.common_shape, dtype="int32")
    question_in = keras.Input(data.common_shape[1:], dtype="int32")
    emb = keras.layers.Embedding(len(data.vocab), 4)
    h = keras.layers.Concatenate()(
        [keras.layers.Flatten()(emb(story_in)), keras.layers.Flatten()(emb(question_in))]
    )
    model = keras.Model([story_in, question_in], keras.layers.Dense(len(data.vocab))(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.skipif(not os.path.exists(REAL_ARCHIVE), reason="real bAbI archive not present")
def test_real_archive():
    data = load_babi(REAL_ARCHIVE, tasks=[1], use_cache=False)
    assert data.metadata["verified"]
    assert [data.train[1].answer.size, data.valid[1].answer.size, data.test[1].answer.size] == [
        9000,
        1000,
        1000,
    ]
    tr = data.train[1]
    assert tr.story.shape == (9000, 10, 7)
    assert data.decode(tr.story[0, 0]) == words("mary moved to the bathroom .")
    assert data.decode(tr.question[0]) == words("where is mary ?")
    assert data.decode(tr.answer[0]) == "bathroom"
    with pytest.raises(FileNotFoundError, match=r"en-valid-10k/qa3_train\.txt.*known gap"):
        load_babi(REAL_ARCHIVE, tasks=[3], use_cache=False)
    partial = load_babi(
        REAL_ARCHIVE, subset="en-10k", tasks=[3], allow_partial=True, use_cache=False
    )
    assert partial.train[3].answer.size == 1925 and partial.metadata["partial_tasks"] == [3]


@pytest.mark.skipif(not os.path.exists(REAL_ARCHIVE), reason="real bAbI archive not present")
def test_real_archive_shape_buckets_and_program_count(tmp_path):
    """The 20 tasks (task 3 partial) have 17 shapes, so `examples/babi.py` compiled 55 jax
    programs (training, validation and prediction steps); the default buckets leave 4 shapes
    and 16 programs, for 13% more STM steps per training batch (tasks drawn uniformly)."""
    from keras_stm.experiments import training
    from keras_stm.experiments.models.babi_model import BabiEvalDataset

    data = load_babi(REAL_ARCHIVE, allow_partial=True, cache_dir=str(tmp_path))
    bucketed = data.with_shape_buckets(DEFAULT_SHAPE_BUCKETS)

    def programs(d):
        train = BabiTrainDataset(d.train, 128, seed=0, include_task=False, pad_batches=True)
        valid, test = BabiEvalDataset(d.valid, 128), BabiEvalDataset(d.test, 128)
        return [len(training._distinct_batches(x)) for x in ([train], [valid], [valid, test])]

    own = {a.story.shape[1:] for a in data.train.values()}
    shapes = {a.story.shape[1:] for a in bucketed.train.values()}
    assert len(own) == 17 and shapes == {(10, 12), (14, 12), (26, 12), (70, 12)}
    assert programs(data) == [17, 19, 19] and programs(bucketed) == [4, 6, 6]
    steps = [np.mean([a.story.shape[1] for a in d.train.values()]) for d in (data, bucketed)]
    assert steps[0] == pytest.approx(23.9) and steps[1] == pytest.approx(27.0)


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "empty", "json"])
def test_unreadable_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    """Issue 24, finding 4: any unreadable cache entry (BadZipFile, zlib.error, EOFError, ...)
    is rebuilt from the source, with a warning naming the file, and healed for the next run."""
    files = tiny_files()
    archive = make_archive(tmp_path / "b.tar.gz", files)
    kw = dict(tasks=[1, 8], checksums=sums(files), cache_dir=str(tmp_path / "cache"))
    first = load_babi(archive, **kw)
    npz = first.metadata["cache_file"]
    data = open(npz, "rb").read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data = bytearray(data)
        for i in range(40, len(data) // 2, 7):  # inside the compressed members
            data[i] ^= 0x55
        data = bytes(data)
    elif damage == "empty":
        data = b""
    if damage == "json":
        with open(npz[:-4] + ".json", "w") as f:
            f.write('{"vocab": [')
    else:
        with open(npz, "wb") as f:
            f.write(data)
    with pytest.warns(UserWarning, match=os.path.basename(npz)[:-4]):
        again = load_babi(archive, **kw)
    assert not again.from_cache and again.vocab == first.vocab
    np.testing.assert_array_equal(again.test[8].answer, first.test[8].answer)
    assert load_babi(archive, **kw).from_cache  # healed


def test_bad_utf8_in_a_babi_file_is_named(tmp_path):
    """Issue 24, finding 6: a file that is not UTF-8 is named (member and archive) with its line."""
    files = tiny_files()
    name = babi_filename("en-valid-10k", 1, "test")
    files[name] = QA1_TEST.encode() + b"4 Mary went to the caf\xe9.\n"
    archive = make_archive(tmp_path / "b.tar.gz", files)
    with pytest.raises(ValueError, match=f"{name}.*b.tar.gz.*line 4: not UTF-8"):
        load_babi(archive, tasks=[1], verify=False, use_cache=False)
