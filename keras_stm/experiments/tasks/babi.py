"""bAbI QA tasks 1-20 (v1.2): reading, verifying, tokenising, vectorising and batching.

This module is the one place that defines how keras-stm reads bAbI (reference spec, sections
5.1, 5.2 and 5.4). The pipeline:

1. **Source.** By default the official archive `babi_tasks_1-20_v1-2.tar.gz` is fetched once
   with `keras.utils.get_file` from `BABI_URL`. Alternatively `data=` names a local `.tar.gz`
   (read member by member, never extracted) or an extracted folder. No trustworthy checksum of
   the archive itself is published, so every member file that is read is checked against the
   per-file SHA-256 table shipped here (`BABI_CHECKSUMS`, copied from the archive's
   `SHA256SUMS.txt`). The two task-3 10k training files that the public copies lack have no
   SHA-256 in that table; they are checked against their git blob SHA-1 instead.
2. **Parsing** (`parse_stories`): a story restarts when the line id goes back to 1; every
   question is paired with all previous *statements* of its story (earlier questions are left
   out, supporting-fact ids are ignored). Text is tokenised by `tokenize` (lower-case, split on
   runs of non-word characters, keep the punctuation runs as tokens, drop empty ones). The
   answer is the whole lower-cased answer string (`"apple,football"` is one item). Whitespace
   between a question and its TAB varies by task and does not matter.
3. **Vocabulary.** One vocabulary over all loaded tasks and splits; id 0 is padding
   (`PAD_TOKEN`), ids 1.. are the tokens and answers in **sorted** order. The authors assigned
   ids in Python set order, which is arbitrary and varies between runs; an id permutation is
   harmless (embeddings and the output projection are initialised i.i.d., so the model family
   and its training distribution are unchanged), and sorted ids make the data reproducible.
4. **Tensors per task.** `story_max = min(longest story, story_cap)` (default cap 70: the
   authors' code meant 130 for task 3 but, comparing a string with an int, capped every task
   at 70, keeping the **last** 70 statements), `sentence_max` = longest statement or question
   of the task over all its splits (measured before the cap, as the authors did). Arrays
   (`BabiArrays`): story `(N, story_max, sentence_max)` int32 with statements left-aligned and
   followed by all-PAD statements, words padded at the end; question `(N, sentence_max)`;
   answer `(N,)`; story_length `(N,)` (statements kept, at most the cap).
5. **Batches** (`BabiTrainDataset`, spec 5.4): each batch comes from one task chosen at random;
   each task is read in shuffled passes of `batch_size` (the last batch of a pass may be
   smaller); an epoch has `sum_t ceil(n_train_t / batch_size)` batches.
6. **Shape buckets** (optional, a speed setting: `BabiData.with_shape_buckets`, `bucket_shapes`):
   every task is padded further, to a story length taken from a few shared boundaries
   (`DEFAULT_SHAPE_BUCKETS`) and to the longest sentence of the loaded tasks, so that a
   compiled (`jit`) program serves several tasks. The added positions hold `ABSENT_ID` (-1),
   not `PAD_ID`: the bAbI model's `SentenceEncoder` treats them as absent words and masks
   all-absent sentences, so the model's outputs, loss and gradients are those of the task's
   own shape (to float round-off). The task's own padding (PAD words and PAD statements, which
   the authors' model reads) is kept as it is.

The project's archive copy (`shared/data/babi`) lacks `en-10k/qa3_three-supporting-facts_train.txt`
and `en-valid-10k/qa3_train.txt`. Loading task 3 of a 10k subset from it raises a
`FileNotFoundError` that says so; `tasks=` (skip task 3) and `allow_partial=True` (a smaller,
labelled task-3 training set, see `load_babi`) are the two ways forward.

References:
    Weston et al., "Towards AI-Complete Question Answering: A Set of Prerequisite Toy Tasks",
    arXiv:1502.05698 (2015). Data: CC BY 3.0, Facebook AI Research.
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (bAbI protocol).
"""

import hashlib
import json
import os
import re
import tarfile
import warnings
from typing import NamedTuple

import keras
import numpy as np

from keras_stm.experiments.tasks.base import file_sha256

BABI_URL = "https://s3.amazonaws.com/text-datasets/babi_tasks_1-20_v1-2.tar.gz"
BABI_ARCHIVE = "babi_tasks_1-20_v1-2.tar.gz"
ARCHIVE_ROOT = "tasks_1-20_v1-2"
SUBSETS = ("en", "en-10k", "en-valid", "en-valid-10k")
PAD_TOKEN = "<pad>"
PAD_ID = 0
DEFAULT_STORY_CAP = 70
#: Fills the padding added by shape buckets: an absent word, which the bAbI model's
#: `SentenceEncoder` skips (and masks a sentence made only of it), unlike `PAD_ID`.
ABSENT_ID = -1
#: Story-length boundaries of `BabiData.with_shape_buckets`. Chosen on en-valid-10k (story cap
#: 70; the tasks' own story lengths are 2, 5, 8, 9, 10, 12, 14, 20, 26, 52, 58, 70): the four
#: boundaries that add the fewest STM steps per training batch (+13%, tasks drawn uniformly).
DEFAULT_SHAPE_BUCKETS = (10, 14, 26, 70)
NUM_TASKS = 20
CACHE_VERSION = 1

TASK_NAMES = {
    1: "single-supporting-fact",
    2: "two-supporting-facts",
    3: "three-supporting-facts",
    4: "two-arg-relations",
    5: "three-arg-relations",
    6: "yes-no-questions",
    7: "counting",
    8: "lists-sets",
    9: "simple-negation",
    10: "indefinite-knowledge",
    11: "basic-coreference",
    12: "conjunction",
    13: "compound-coreference",
    14: "time-reasoning",
    15: "basic-deduction",
    16: "basic-induction",
    17: "positional-reasoning",
    18: "size-reasoning",
    19: "path-finding",
    20: "agents-motivations",
}

_SPLIT_RE = re.compile(r"(\W+)")
_PARTIAL_NOTE = {
    "en-10k": (
        "partial: {n} questions ({s} distinct stories) from en/qa3 train + "
        "en-valid-10k/qa3_valid instead of 10,000 (file missing from the source)"
    ),
    "en-valid-10k": (
        "partial: {n} questions ({s} stories) = en/qa3 train stories not in "
        "en-valid-10k/qa3_valid, instead of 9,000 (file missing from the source; "
        "validation stories kept out of training)"
    ),
}


def tokenize(text):
    """Splits a bAbI sentence into lower-case word and punctuation tokens.

    The text is split on runs of non-word characters, the runs are kept as tokens, every token
    is stripped and lower-cased, and empty tokens are dropped (reference spec 5.2).

    Args:
        text: str, one statement or question.

    Returns:
        list of str tokens.

    Example:

    >>> tokenize("Mary moved to the bathroom.")
    ['mary', 'moved', 'to', 'the', 'bathroom', '.']
    >>> tokenize("Where is Mary? ")
    ['where', 'is', 'mary', '?']
    """
    return [t.strip().lower() for t in _SPLIT_RE.split(text) if t.strip()]


class _Parsed(NamedTuple):
    texts: list  # distinct token lists (statements and questions) of the file
    sentences: np.ndarray  # (S,) row in `texts` of every statement, in file order
    starts: np.ndarray  # (Q,) index in `sentences` of the first statement of the story
    ends: np.ndarray  # (Q,) one past the last statement before the question
    questions: np.ndarray  # (Q,) row in `texts` of each question
    answers: list  # (Q,) lower-cased answer strings


def _to_lines(lines):
    if isinstance(lines, bytes):
        lines = lines.decode("utf-8")
    if isinstance(lines, str):
        lines = lines.splitlines()
    return lines


def _parse(lines, name="<lines>"):
    """Parses bAbI lines into statement/question rows of a distinct-text table + story ranges."""
    sentences, questions, answers, starts, ends = [], [], [], [], []
    texts, row_of = [], {}  # bAbI repeats a few thousand distinct sentences: tokenise each once
    story_start = 0
    for lineno, raw in enumerate(_to_lines(lines), 1):
        line = raw.strip()
        if not line:
            continue
        head, _, text = line.partition(" ")
        if not head.isdigit() or not text:
            raise ValueError(f"{name}: line {lineno} is not '<id> <text>': {raw!r}")
        if int(head) == 1:
            story_start = len(sentences)
        is_question = "\t" in text
        if is_question:
            parts = text.split("\t")
            text = parts[0]
            answer = parts[1].strip().lower() if len(parts) > 1 else ""
            if not answer:
                raise ValueError(f"{name}: line {lineno} has a question but no answer: {raw!r}")
        row = row_of.get(text)
        if row is None:
            row = row_of[text] = len(texts)
            texts.append(tokenize(text))
        if is_question:
            questions.append(row)
            answers.append(answer)
            starts.append(story_start)
            ends.append(len(sentences))
        else:
            sentences.append(row)
    as_int = lambda v: np.asarray(v, np.int64)  # noqa: E731
    return _Parsed(
        texts, as_int(sentences), as_int(starts), as_int(ends), as_int(questions), answers
    )


def parse_stories(lines):
    """Parses bAbI lines into (story, question, answer) samples.

    A story restarts whenever a line's id is 1. Each question line
    (`id question<TAB>answer<TAB>supporting ids`) becomes one sample whose story is every
    statement of the current story before it (earlier questions excluded). The answer is the
    whole lower-cased answer string. Whitespace before the TAB is irrelevant.

    Args:
        lines: str (whole file), bytes, or an iterable of str lines.

    Returns:
        list of `(story, question, answer)`: `story` a list of token lists, `question` a token
        list, `answer` a str.

    Example:

    >>> parse_stories("1 Mary went home.\\n2 Where is Mary?\\thome\\t1\\n")
    [([['mary', 'went', 'home', '.']], ['where', 'is', 'mary', '?'], 'home')]
    """
    p = _parse(lines)
    return [
        ([list(p.texts[r]) for r in p.sentences[s:e]], list(p.texts[q]), a)
        for s, e, q, a in zip(p.starts, p.ends, p.questions, p.answers)
    ]


def _story_blocks(text):
    """Splits a file's text into stories (lists of stripped lines), a story starting at id 1."""
    blocks = []
    for line in _to_lines(text):
        line = line.strip()
        if not line:
            continue
        if line.split(" ", 1)[0] == "1" or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    return blocks


def babi_filename(subset, task, split):
    """Path of one bAbI file relative to the archive's top folder `tasks_1-20_v1-2/`.

    Args:
        subset: str, one of `SUBSETS`.
        task: int, task id 1..20.
        split: str, `"train"`, `"test"` or (en-valid subsets only) `"valid"`.

    Returns:
        str such as `"en-valid-10k/qa3_train.txt"` or `"en/qa3_three-supporting-facts_test.txt"`.

    Example:

    >>> babi_filename("en-10k", 8, "train")
    'en-10k/qa8_lists-sets_train.txt'
    """
    if subset not in SUBSETS:
        raise ValueError(f"`subset` must be one of {SUBSETS}, got {subset!r}.")
    if task not in TASK_NAMES:
        raise ValueError(f"`task` must be an integer in 1..20, got {task!r}.")
    if split not in _splits(subset):
        raise ValueError(
            f"`split` must be one of {_splits(subset)} for subset {subset!r}, got {split!r}."
        )
    if subset.startswith("en-valid"):
        return f"{subset}/qa{task}_{split}.txt"
    return f"{subset}/qa{task}_{TASK_NAMES[task]}_{split}.txt"


def _splits(subset):
    return ("train", "valid", "test") if subset.startswith("en-valid") else ("train", "test")


def _partial_sources(subset):
    """Files the partial task-3 training set of a 10k subset is built from (README)."""
    return (babi_filename("en", 3, "train"), babi_filename("en-valid-10k", 3, "valid"))


def _has_known_gap(subset, task, split):
    return subset in ("en-10k", "en-valid-10k") and task == 3 and split == "train"


# ----------------------------------------------------------------------------------------------
# Reading and verifying the source
# ----------------------------------------------------------------------------------------------


def _checksum_ok(content, expected):
    expected = expected.lower()
    if len(expected) == 64:
        return hashlib.sha256(content).hexdigest() == expected
    if len(expected) == 40:  # git blob SHA-1 (`git hash-object`)
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == expected
    raise ValueError(
        f"checksum {expected!r} is neither a SHA-256 (64 hex digits) nor a git "
        f"blob SHA-1 (40 hex digits)."
    )


def _normalise_member(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    if name.startswith(ARCHIVE_ROOT + "/"):
        name = name[len(ARCHIVE_ROOT) + 1 :]
    return name


def _resolve_source(data):
    """Returns `(kind, path)` with kind "tar" or "dir"; downloads the archive if data is None."""
    if data is None:
        data = keras.utils.get_file(fname=BABI_ARCHIVE, origin=BABI_URL)
    path = os.fspath(data)
    if os.path.isdir(path):
        path = os.path.normpath(path)
        roots = [os.path.join(path, ARCHIVE_ROOT), path]
        if os.path.basename(path) in SUBSETS:  # a subset folder itself
            roots.append(os.path.dirname(path))
        for root in roots:
            if any(os.path.isdir(os.path.join(root, s)) for s in SUBSETS):
                return "dir", root
        raise FileNotFoundError(
            f"`data` folder {path!r} holds none of the bAbI subset folders {SUBSETS} (looked in "
            f"it and in {ARCHIVE_ROOT}/ inside it)."
        )
    if os.path.isfile(path):
        if not tarfile.is_tarfile(path):
            raise ValueError(
                f"`data` file {path!r} is not a (gzip'd) tar archive; pass the bAbI "
                f"archive {BABI_ARCHIVE} or an extracted folder."
            )
        return "tar", path
    raise FileNotFoundError(f"`data` path {path!r} does not exist.")


def _read_members(kind, path, names):
    """Reads the wanted members (relative names) that exist; returns {name: bytes}."""
    names = set(names)
    found = {}
    if kind == "dir":
        for name in names:
            full = os.path.join(path, *name.split("/"))
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    found[name] = f.read()
        return found
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # one sequential pass, stopping once everything is found
                name = _normalise_member(member.name)
                if member.isfile() and name in names and name not in found:
                    found[name] = tar.extractfile(member).read()
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"bAbI archive {path!r} is corrupt or truncated ({err}).") from err
    return found


def _verify(found, checksums, source):
    unknown = sorted(n for n in found if n not in checksums)
    if unknown:
        raise ValueError(
            f"No checksum known for bAbI file(s) {unknown} (from {source}); pass "
            f"`checksums` with entries for them, or `verify=False`."
        )
    bad = [n for n in sorted(found) if not _checksum_ok(found[n], checksums[n])]
    if bad:
        raise ValueError(
            f"bAbI file(s) {', '.join(repr(n) for n in bad)} in {source} are corrupt: their "
            f"checksums do not match the expected values ("
            + ", ".join(f"{n}: {checksums[n]}" for n in bad)
            + "). Re-download the archive "
            "(delete it so `keras.utils.get_file` fetches it again) or re-extract the folder."
        )


def _missing_message(missing, subset, tasks, source):
    lines = [f"bAbI file(s) missing from {source}: " + ", ".join(repr(m) for m in missing) + "."]
    gap = [
        m
        for m in missing
        if any(
            m == babi_filename(subset, t, "train") and _has_known_gap(subset, t, "train")
            for t in tasks
        )
    ]
    if gap:
        rest = [t for t in tasks if t != 3]
        skip = f"`tasks={rest}`" if rest else "`tasks=` without 3"
        lines.append(
            "This is a known gap: the public copies of the bAbI v1.2 archive that the local repack "
            "was rebuilt from lack the task-3 training file of the 10k sets (archive README, "
            "'Missing files'); the official download " + BABI_URL + " has it. Options: "
            f"(1) {skip} to leave task 3 out; (2) `allow_partial=True` to build a smaller "
            "task-3 training set from en/qa3 train and en-valid-10k/qa3_valid (reported as "
            "partial in `metadata['partial_tasks']`); (3) `data=` the official archive."
        )
    else:
        lines.append(
            "Pass `tasks=[...]` to load only tasks whose files exist, or point `data=` "
            "at a complete archive or folder."
        )
    return " ".join(lines)


# ----------------------------------------------------------------------------------------------
# Arrays and the loaded data
# ----------------------------------------------------------------------------------------------


class BabiArrays(NamedTuple):
    """Padded arrays of one task and split (all int32).

    Attributes:
        story: (N, story_max, sentence_max) word ids; statements left-aligned, then all-PAD
            statements; words padded at the end with `PAD_ID`.
        question: (N, sentence_max) word ids, padded at the end.
        answer: (N,) vocabulary id of the whole answer string.
        story_length: (N,) number of statements kept (<= story cap).

    Example:

    >>> a = load_babi(tasks=[1]).test[1]  # doctest: +SKIP
    >>> a.story.shape, a.question.shape, a.answer.shape  # doctest: +SKIP
    ((1000, 10, 7), (1000, 7), (1000,))
    """

    story: np.ndarray
    question: np.ndarray
    answer: np.ndarray
    story_length: np.ndarray


def _encode_rows(token_lists, word_to_id, width):
    """Encodes token lists as an int32 matrix with a leading all-PAD row (row i+1 = list i)."""
    out = np.zeros((len(token_lists) + 1, width), np.int32)
    for i, tokens in enumerate(token_lists):  # distinct texts only: a few thousand rows
        out[i + 1, : len(tokens)] = [word_to_id[w] for w in tokens]
    return out


def _vectorise(parsed, word_to_id, story_max, sentence_max, story_cap):
    table = _encode_rows(parsed.texts, word_to_id, sentence_max)
    starts = parsed.starts
    if story_cap is not None:
        starts = np.maximum(starts, parsed.ends - story_cap)
    length = (parsed.ends - starts).astype(np.int32)
    j = np.arange(story_max)
    valid = j[None, :] < length[:, None]
    position = np.where(valid, starts[:, None] + j[None, :], 0)
    rows = (
        np.where(valid, parsed.sentences[position] + 1, 0)
        if parsed.sentences.size
        else np.zeros(position.shape, np.int64)
    )
    return BabiArrays(
        story=table[rows],
        question=table[parsed.questions + 1],
        answer=np.fromiter((word_to_id[a] for a in parsed.answers), np.int32, len(parsed.answers)),
        story_length=length,
    )


def _pad_to(a, story_max, sentence_max, fill=PAD_ID):
    """`a` padded at the end of its story and sentence axes to `(story_max, sentence_max)`
    with `fill` (the one padding routine: `padding=` shapes and shape buckets)."""
    n, s, w = a.story.shape
    if s > story_max or w > sentence_max:
        raise ValueError(
            f"`padding` shape ({story_max}, {sentence_max}) is smaller than the "
            f"task's own shape ({s}, {w})."
        )
    if (s, w) == (story_max, sentence_max):
        return a
    story = np.full((n, story_max, sentence_max), fill, np.int32)
    story[:, :s, :w] = a.story
    question = np.full((n, sentence_max), fill, np.int32)
    question[:, :w] = a.question
    return BabiArrays(story, question, a.answer, a.story_length)


def check_shape_buckets(shape_buckets):
    """Validates story-length boundaries for shape bucketing.

    Args:
        shape_buckets: None or an empty sequence (no bucketing: each task keeps its own shape),
            or a sequence of positive integers in strictly increasing order.

    Returns:
        tuple of int (empty for no bucketing).

    Raises:
        ValueError: naming the offending value.

    Example:

    >>> check_shape_buckets([10, 14, 26, 70])
    (10, 14, 26, 70)
    >>> check_shape_buckets(None)
    ()
    """
    if shape_buckets is None:
        return ()
    what = "`shape_buckets` must be story-length boundaries, positive integers in increasing order"
    if isinstance(shape_buckets, (str, bytes)) or not hasattr(shape_buckets, "__iter__"):
        raise ValueError(f"{what} (or None), got {shape_buckets!r}.")
    values = list(shape_buckets)
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{what}; {v!r} in {values} is not an integer.")
        if v < 1:
            raise ValueError(f"{what}; {v} in {values} is not positive.")
    for low, high in zip(values, values[1:]):
        if high <= low:
            raise ValueError(f"{what}; {low} is followed by {high} in {values}.")
    return tuple(int(v) for v in values)


def bucket_shapes(shapes, shape_buckets):
    """The shared padded shape of every task under shape bucketing.

    A task's story length goes up to the smallest boundary that holds it, or, above the last
    boundary, to the longest story of all the tasks (so any boundaries fit any story cap); its
    sentence length to the longest sentence of all the tasks. With no boundaries each task
    keeps its own shape.

    Args:
        shapes: dict task id -> `(story_max, sentence_max)`, the tasks' own shapes.
        shape_buckets: story-length boundaries (see `check_shape_buckets`).

    Returns:
        dict task id -> `(story_max, sentence_max)` padded shape.

    Example:

    >>> bucket_shapes({1: (10, 7), 2: (70, 7), 4: (2, 8), 14: (14, 9)}, (10, 14, 26, 70))
    {1: (10, 9), 2: (70, 9), 4: (10, 9), 14: (14, 9)}
    """
    buckets = check_shape_buckets(shape_buckets)
    if not buckets:
        return {t: (int(s), int(w)) for t, (s, w) in shapes.items()}
    longest = max(int(s) for s, _ in shapes.values())
    width = max(int(w) for _, w in shapes.values())
    return {
        t: (next((b for b in buckets if b >= s), longest), width) for t, (s, _) in shapes.items()
    }


def _pack_inputs(story, question, task, input_format, include_task):
    if input_format == "dict":
        x = {"story": story, "question": question}
        if include_task:
            x["task"] = task
        return x
    return (story, question, task) if include_task else (story, question)


def _check_input_format(input_format):
    if input_format not in ("dict", "tuple"):
        raise ValueError(f"`input_format` must be 'dict' or 'tuple', got {input_format!r}.")


class BabiData:
    """bAbI tasks loaded by `load_babi`: vocabulary, per-task arrays and metadata.

    Attributes:
        vocab: list of str; `vocab[i]` is the token or answer with id `i`, `vocab[0] == PAD_TOKEN`.
        word_to_id: dict str -> int, the inverse of `vocab`.
        train, valid, test: dict task id -> `BabiArrays` (`valid` is empty for `en`/`en-10k`).
        metadata: dict with `subset`, `tasks`, `splits`, `story_cap`, `vocab_size`, `source`,
            `source_sha256`, `verified`, `partial_tasks` (task ids whose training set is partial),
            `task_info` (task id -> name, shapes, counts, `partial`, `note`, `train_files`),
            `common_story_max`, `common_sentence_max` (max over tasks), `vocab_order`; after
            `with_shape_buckets`, also `shape_buckets` and `padded_shapes`.
        from_cache: bool, whether the arrays came from the cache.

    Args:
        vocab: list of str, id -> token.
        train, valid, test: dicts task id -> `BabiArrays`.
        metadata: dict as above.
        from_cache: bool. Defaults to False.

    Example:

    >>> data = load_babi(tasks=[1, 2])  # doctest: +SKIP
    >>> data.train[1].story.shape  # doctest: +SKIP
    (9000, 10, 7)
    """

    def __init__(self, vocab, train, valid, test, metadata, from_cache=False):
        self.vocab = list(vocab)
        self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
        self.train, self.valid, self.test = train, valid, test
        self.metadata = metadata
        self.from_cache = from_cache

    @property
    def tasks(self):
        """Tuple of the loaded task ids, ascending."""
        return tuple(self.metadata["tasks"])

    @property
    def common_shape(self):
        """`(story_max, sentence_max)` large enough for every loaded task (for joint batching)."""
        return (self.metadata["common_story_max"], self.metadata["common_sentence_max"])

    def _split(self, split):
        if split not in self.metadata["splits"]:
            raise ValueError(
                f"`split` must be one of {self.metadata['splits']} for subset "
                f"{self.metadata['subset']!r}, got {split!r}."
            )
        return getattr(self, split)

    def _shape(self, padding):
        if isinstance(padding, str):
            if padding == "common":
                return self.common_shape
            if padding == "task":
                return None
        elif (
            isinstance(padding, (tuple, list))
            and len(padding) == 2
            and all(isinstance(v, (int, np.integer)) and v > 0 for v in padding)
        ):
            return int(padding[0]), int(padding[1])
        raise ValueError(
            f"`padding` must be 'task', 'common' or (story_max, sentence_max), got {padding!r}."
        )

    def bucket_shapes(self, shape_buckets=DEFAULT_SHAPE_BUCKETS):
        """Every loaded task's padded shape under `shape_buckets` (see `bucket_shapes`).

        Args:
            shape_buckets: story-length boundaries, or None. Defaults to
                `DEFAULT_SHAPE_BUCKETS`.

        Returns:
            dict task id -> `(story_max, sentence_max)`.

        Example:

        >>> data.bucket_shapes((10, 14, 26, 70))[4]  # doctest: +SKIP
        (10, 12)
        """
        info = self.metadata["task_info"]
        return bucket_shapes(
            {t: (info[t]["story_max"], info[t]["sentence_max"]) for t in self.tasks},
            shape_buckets,
        )

    def with_shape_buckets(self, shape_buckets=DEFAULT_SHAPE_BUCKETS):
        """This data with every task of every split padded to its bucket shape.

        A speed setting: tasks share a few shapes, so `jit` compiles a few programs instead of
        one per task shape. The added positions hold `ABSENT_ID`, which the bAbI model skips
        (absent words, masked sentences; see `SentenceEncoder`), so its numbers do not change;
        a model that reads -1 as a word id must not be given these arrays. The task's own
        padding is unchanged. Use these arrays with `padding="task"`.

        Args:
            shape_buckets: story-length boundaries (see `check_shape_buckets`), or None for
                this data as it is. Defaults to `DEFAULT_SHAPE_BUCKETS`.

        Returns:
            a new `BabiData` sharing the vocabulary; `metadata` gains `shape_buckets` (list or
            None) and `padded_shapes` (task id -> `[story_max, sentence_max]`).

        Example:

        >>> data = load_babi(tasks=[1, 2, 4]).with_shape_buckets((10, 70))  # doctest: +SKIP
        >>> data.train[4].story.shape  # doctest: +SKIP
        (9000, 10, 8)
        """
        buckets = check_shape_buckets(shape_buckets)
        shapes = self.bucket_shapes(buckets)
        splits = {
            s: {t: _pad_to(a, *shapes[t], fill=ABSENT_ID) for t, a in getattr(self, s).items()}
            for s in ("train", "valid", "test")
        }
        metadata = dict(
            self.metadata,
            shape_buckets=list(buckets) or None,
            padded_shapes={t: list(shape) for t, shape in shapes.items()},
        )
        return BabiData(
            self.vocab, splits["train"], splits["valid"], splits["test"], metadata, self.from_cache
        )

    def arrays(self, split, task, padding="task"):
        """Arrays of one task and split, optionally re-padded to a larger common shape.

        Args:
            split: str, `"train"`, `"valid"` or `"test"`.
            task: int, a loaded task id.
            padding: `"task"` (the task's own shape, as the authors), `"common"`
                (`common_shape`) or a `(story_max, sentence_max)` tuple no smaller than the
                task's. Extra padding adds all-PAD statements/words; a model that embeds PAD
                as a real token (the authors' QA model does) sees them. Defaults to "task".

        Returns:
            `BabiArrays`.

        Example:

        >>> a = data.arrays("test", 1, padding="common")  # doctest: +SKIP
        """
        arrays = self._split(split)
        if task not in arrays:
            raise ValueError(f"`task` {task!r} is not loaded (tasks: {sorted(arrays)}).")
        shape = self._shape(padding)
        return arrays[task] if shape is None else _pad_to(arrays[task], *shape)

    def inputs(self, split, task, padding="task", input_format="dict", include_task=True):
        """`(x, y)` of one task and split for `model.evaluate` / `model.predict`.

        Args:
            split: str, `"train"`, `"valid"` or `"test"`.
            task: int, a loaded task id.
            padding: see `arrays`. Defaults to "task".
            input_format: `"dict"` (`{"story", "question"[, "task"]}`) or `"tuple"`
                (`(story, question[, task])`). Defaults to "dict".
            include_task: bool, add the int32 task id array (N,) (for per-task metrics; a
                functional model whose inputs are only story and question warns about the
                extra dict key, so pass False there). Defaults to True.

        Returns:
            `(x, y)` with `y` the int32 answer ids (N,).

        Example:

        >>> x, y = data.inputs("valid", 3)  # doctest: +SKIP
        """
        _check_input_format(input_format)
        a = self.arrays(split, task, padding)
        task_ids = np.full(a.answer.shape, task, np.int32)
        return _pack_inputs(a.story, a.question, task_ids, input_format, include_task), a.answer

    def train_dataset(
        self,
        batch_size=128,
        seed=0,
        sampling="uniform",
        padding="task",
        input_format="dict",
        include_task=True,
        **kwargs,
    ):
        """The joint training stream over all loaded tasks (reference spec 5.4).

        Args:
            batch_size: int, examples per batch. Defaults to 128.
            seed: int >= 0, seed of the task choices and the per-task shuffles. Defaults to 0.
            sampling: `"uniform"` (each batch's task drawn uniformly, as the authors) or
                `"proportional"` (each epoch is a shuffled list of every task's batches, so each
                example is seen once per epoch). Defaults to "uniform".
            padding: see `arrays`. Defaults to "task".
            input_format, include_task: see `inputs`.
            **kwargs: more `BabiTrainDataset` arguments (`pad_batches`) and those of
                `keras.utils.PyDataset`.

        Returns:
            `BabiTrainDataset`.

        Example:

        >>> ds = data.train_dataset(batch_size=128, seed=0)  # doctest: +SKIP
        >>> x, y = ds[0]  # doctest: +SKIP
        """
        shape = self._shape(padding)
        return BabiTrainDataset(
            self.train,
            batch_size=batch_size,
            seed=seed,
            sampling=sampling,
            shape=shape,
            input_format=input_format,
            include_task=include_task,
            **kwargs,
        )

    def decode(self, ids):
        """Maps word ids back to tokens, dropping padding.

        Args:
            ids: int or array-like of ints.

        Returns:
            str for a scalar id, else a list of str (PAD and `ABSENT_ID` ids dropped).

        Example:

        >>> data.decode(data.test[1].answer[0])  # doctest: +SKIP
        'hallway'
        """
        arr = np.asarray(ids)
        if arr.ndim == 0:
            return self.vocab[int(arr)]
        return [self.vocab[int(i)] for i in arr.reshape(-1) if i > PAD_ID]


class BabiTrainDataset(keras.utils.PyDataset):
    """Seeded joint bAbI training batches, one task per batch (reference spec 5.4).

    Each task is read in shuffled passes: pass `p` of task `t` is the permutation drawn from
    `np.random.default_rng([seed, 1, t, p])`, cut into `ceil(n_t / batch_size)` batches (the
    last one may be smaller). Batch `i` of epoch `e` takes the task
    `choices_e[i]` (drawn from `np.random.default_rng([seed, 0, e])`) and the next unread batch
    of that task's stream, a stream that carries over from epoch to epoch like the authors'
    persistent data-loader iterators. Everything is a pure function of `(seed, epoch, index)`,
    so the order of access, worker count or a resumed run do not change the data. (Unlike
    `TaskDataset`, a batch depends on its index, not on a per-batch generator, hence a
    separate class with the same conventions: `len`, `epoch`, `on_epoch_end`.)

    Args:
        arrays: dict task id -> `BabiArrays` (training split).
        batch_size: int > 0. Defaults to 128.
        seed: int >= 0. Defaults to 0.
        sampling: `"uniform"` or `"proportional"` (see `BabiData.train_dataset`).
        shape: None (each task's own shape) or `(story_max, sentence_max)` for every batch.
        input_format: `"dict"` or `"tuple"`. Defaults to "dict".
        include_task: bool, add the (B,) int32 task id to the inputs. Defaults to True.
        pad_batches: bool. If True, every batch has exactly `batch_size` rows and a third
            element, the (B,) float32 sample weights: the smaller last batch of a pass is
            filled up with copies of its own rows weighted 0, every real row weighs 1. With a
            loss reduced by `"mean_with_sample_weight"` this gives the same loss and gradients
            as the unpadded batch, and under `jit` one training-step shape per task instead of
            two. Defaults to False (the authors' batches).
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Example:

    >>> ds = BabiTrainDataset(data.train, batch_size=128, seed=0)  # doctest: +SKIP
    >>> x, y = ds[0]  # doctest: +SKIP
    >>> x["story"].shape, y.shape  # one task's (story_max, sentence_max)  # doctest: +SKIP
    ((128, 20, 10), (128,))
    """

    varying_shapes = True
    """bool: batches of different tasks differ in story and sentence length (see
    `keras_stm.experiments.training.backend_dataset`)."""

    def __init__(
        self,
        arrays,
        batch_size=128,
        seed=0,
        sampling="uniform",
        shape=None,
        input_format="dict",
        include_task=True,
        pad_batches=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
        if sampling not in ("uniform", "proportional"):
            raise ValueError(f"`sampling` must be 'uniform' or 'proportional', got {sampling!r}.")
        _check_input_format(input_format)
        if not arrays or any(a.answer.shape[0] == 0 for a in arrays.values()):
            raise ValueError("`arrays` must hold at least one task, each with examples.")
        self.tasks = tuple(sorted(arrays))
        self.arrays = {
            t: arrays[t] if shape is None else _pad_to(arrays[t], *shape) for t in self.tasks
        }
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.sampling = sampling
        self.input_format = input_format
        self.include_task = bool(include_task)
        if not isinstance(pad_batches, bool):
            raise ValueError(f"`pad_batches` must be True or False, got {pad_batches!r}.")
        self.pad_batches = pad_batches
        self.sizes = np.array([arrays[t].answer.shape[0] for t in self.tasks], np.int64)
        self.batches_per_task = -(-self.sizes // self.batch_size)
        self._num_batches = int(self.batches_per_task.sum())
        self.epoch = 0
        self._counts = []  # per epoch: (K,) batches of each task
        self._schedule_cache = None  # (epoch, (choices, stream position))
        self._perms = {}  # task position -> (pass, permutation)

    def __len__(self):
        return self._num_batches

    def _choices(self, epoch):
        rng = np.random.default_rng([self.seed, 0, epoch])
        k = len(self.tasks)
        if self.sampling == "uniform":
            return rng.integers(k, size=self._num_batches)
        return rng.permutation(np.repeat(np.arange(k), self.batches_per_task))

    def _schedule(self, epoch):
        """(task position, stream position) of every batch of `epoch`; pure and thread-safe."""
        cached = self._schedule_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        k = len(self.tasks)
        counts = self._counts  # per earlier epoch: batches of each task (grown, never mutated)
        if len(counts) < epoch:
            counts = counts + [
                np.bincount(self._choices(e), minlength=k) for e in range(len(counts), epoch)
            ]
            self._counts = counts
        offset = np.sum(counts[:epoch], axis=0, dtype=np.int64) if epoch else np.zeros(k, np.int64)
        choices = self._choices(epoch)
        order = np.argsort(choices, kind="stable")
        per_task = np.bincount(choices, minlength=k)
        rank = np.empty(choices.size, np.int64)
        rank[order] = np.arange(choices.size) - np.repeat(np.cumsum(per_task) - per_task, per_task)
        value = (choices, offset[choices] + rank)
        self._schedule_cache = (epoch, value)
        return value

    def batch_task(self, index):
        """Task id of batch `index` in the current epoch.

        Args:
            index: int, batch index in `[0, len(self))`.

        Returns:
            int task id.

        Example:

        >>> ds.batch_task(0)  # doctest: +SKIP
        7
        """
        self._check_index(index)
        return self.tasks[int(self._schedule(self.epoch)[0][index])]

    def batch_indices(self, index):
        """`(task, example indices)` that batch `index` of the current epoch is made of.

        Args:
            index: int, batch index in `[0, len(self))`.

        Returns:
            `(task id, int64 array of row indices into that task's training arrays)`.

        Example:

        >>> task, rows = ds.batch_indices(0)  # doctest: +SKIP
        """
        self._check_index(index)
        choices, position = self._schedule(self.epoch)
        k = int(choices[index])
        nb = int(self.batches_per_task[k])
        p, j = divmod(int(position[index]), nb)
        cached = self._perms.get(k)
        if cached is None or cached[0] != p:
            perm = np.random.default_rng([self.seed, 1, self.tasks[k], p]).permutation(
                int(self.sizes[k])
            )
            self._perms[k] = cached = (p, perm)
        return self.tasks[k], cached[1][j * self.batch_size : (j + 1) * self.batch_size]

    def _check_index(self, index):
        if not 0 <= index < self._num_batches:
            raise IndexError(f"batch index {index} out of range [0, {self._num_batches}).")

    def __getitem__(self, index):
        task, rows = self.batch_indices(index)
        a = self.arrays[task]
        if self.pad_batches:
            real = rows.shape[0]
            rows = np.resize(rows, self.batch_size)  # fillers: copies of the batch's own rows
            weights = (np.arange(self.batch_size) < real).astype(np.float32)
        task_ids = np.full(rows.shape, task, np.int32)
        x = _pack_inputs(
            a.story[rows], a.question[rows], task_ids, self.input_format, self.include_task
        )
        if self.pad_batches:
            return x, a.answer[rows], weights
        return x, a.answer[rows]

    def on_epoch_end(self):
        """Advances to the next epoch (fresh task choices; task streams continue)."""
        self.epoch += 1


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _check_tasks(tasks):
    if isinstance(tasks, (int, np.integer)):
        tasks = [tasks]
    try:
        tasks = sorted({int(t) for t in tasks})
    except (TypeError, ValueError) as err:
        raise ValueError(f"`tasks` must be task ids in 1..20, got {tasks!r}.") from err
    if not tasks or any(t not in TASK_NAMES for t in tasks):
        raise ValueError(f"`tasks` must be a non-empty set of task ids in 1..20, got {tasks!r}.")
    return tasks


def _default_cache_dir():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", "babi_cache")


def _cache_files(cache_dir, subset, story_cap, key):
    stem = os.path.join(cache_dir, f"babi_{subset}_cap{story_cap}_{key[:16]}")
    return stem + ".npz", stem + ".json"


def _save_cache(npz_path, json_path, data):
    os.makedirs(os.path.dirname(npz_path), exist_ok=True)
    small = (
        np.uint8 if len(data.vocab) <= 256 else np.uint16 if len(data.vocab) <= 65536 else np.int32
    )  # stored compactly (ids, lengths <= cap), read back as int32
    arrays = {
        f"{split}/{t}/{field}": getattr(a, field).astype(
            small if field != "story_length" else np.int32
        )
        for split in data.metadata["splits"]
        for t, a in getattr(data, split).items()
        for field in BabiArrays._fields
    }
    tmp_npz, tmp_json = npz_path + f".tmp{os.getpid()}.npz", json_path + f".tmp{os.getpid()}"
    np.savez_compressed(tmp_npz, **arrays)
    meta = dict(data.metadata, task_info={str(k): v for k, v in data.metadata["task_info"].items()})
    with open(tmp_json, "w") as f:
        json.dump({"vocab": data.vocab, "metadata": meta}, f, indent=1)
    os.replace(tmp_npz, npz_path)
    os.replace(tmp_json, json_path)  # the JSON marks a complete entry


def _load_cache(npz_path, json_path):
    """The cached `BabiData`, or None when the entry is absent or unreadable.

    An entry that exists but cannot be read (a truncated or bit-flipped `.npz`: `BadZipFile`,
    `zlib.error`, `EOFError`, ...; a damaged `.json`; arrays missing) is reported with a
    warning naming the file; the caller then rebuilds it from the source data.
    """
    if not (os.path.exists(json_path) and os.path.exists(npz_path)):
        return None  # absent (the JSON, written last, marks a complete entry)
    try:
        with open(json_path, encoding="utf-8") as f:
            saved = json.load(f)
        meta = saved["metadata"]
        meta["task_info"] = {int(k): v for k, v in meta["task_info"].items()}
        splits = {s: {} for s in ("train", "valid", "test")}
        with np.load(npz_path) as z:
            for s in meta["splits"]:
                for t in meta["tasks"]:
                    splits[s][t] = BabiArrays(
                        *(z[f"{s}/{t}/{f}"].astype(np.int32) for f in BabiArrays._fields)
                    )
        return BabiData(
            saved["vocab"], splits["train"], splits["valid"], splits["test"], meta, from_cache=True
        )
    except Exception as error:  # zip, zlib, EOF, OS, JSON, key and type errors alike
        warnings.warn(
            f"The bAbI cache {npz_path} (with {json_path}) is unreadable "
            f"({type(error).__name__}: {error}); rebuilding it from the source data.",
            stacklevel=3,
        )
        return None


def load_babi(
    data=None,
    subset="en-valid-10k",
    tasks=range(1, 21),
    story_cap=DEFAULT_STORY_CAP,
    allow_partial=False,
    cache_dir=None,
    use_cache=True,
    verify=True,
    checksums=None,
):
    """Loads, verifies and vectorises bAbI v1.2 tasks with one joint vocabulary.

    Args:
        data: None (download `BABI_URL` once with `keras.utils.get_file`), a path to the
            archive (`.tar.gz`, read without extracting) or to an extracted folder (the folder
            holding `tasks_1-20_v1-2/`, that folder itself, or one of its subset folders).
            Defaults to None.
        subset: str, one of `SUBSETS`: `"en-valid-10k"` (9,000/1,000/1,000 per task, the
            authors' setting), `"en-valid"`, `"en"`, `"en-10k"` (the last two have no valid
            split). Defaults to "en-valid-10k".
        tasks: iterable of task ids in 1..20 (or one int). Defaults to all 20.
        story_cap: int >= 1 or None; keep only the last `story_cap` statements of a story.
            Defaults to 70 (what the authors' code did for every task).
        allow_partial: bool. The local archive lacks the task-3 training file of the 10k
            subsets. If True and that file is missing, task 3 is trained on what exists: for
            `en-10k`, the stories of `en/qa3` train plus `en-valid-10k/qa3_valid`, de-duplicated
            (1,925 questions); for `en-valid-10k`, the `en/qa3` train stories that are not in
            its validation split (925 questions; the validation split stays as it is and
            disjoint from training). The task is listed in `metadata["partial_tasks"]` and
            described in `metadata["task_info"][3]["note"]`; label its results "partial".
            Other missing files still raise. Defaults to False.
        cache_dir: str or None; where the built arrays (`.npz`) and vocabulary/metadata
            (`.json`) are cached, keyed by subset, tasks, cap, options and the source's
            SHA-256. None means `$KERAS_HOME/datasets/babi_cache` (`~/.keras/...`). (With
            `data=None` the archive itself goes where `keras.utils.get_file` puts it.)
        use_cache: bool, read and write the cache. Defaults to True.
        verify: bool, check every file read against `checksums`. Defaults to True.
        checksums: None (the official table `BABI_CHECKSUMS`) or a dict mapping paths relative
            to `tasks_1-20_v1-2/` to a SHA-256 (64 hex digits) or git blob SHA-1 (40).

    Returns:
        `BabiData`.

    Raises:
        FileNotFoundError: `data` or a needed member file is missing (the message names the
            file(s), and for the known task-3 gap explains the options).
        ValueError: a member is corrupt (checksum mismatch), a line is malformed, or an
            argument is invalid.

    Example:

    >>> data = load_babi(tasks=[1, 2, 4], story_cap=70)  # doctest: +SKIP
    >>> ds = data.train_dataset(batch_size=128, seed=0)  # doctest: +SKIP
    >>> model.fit(ds, epochs=1)  # doctest: +SKIP
    """
    if subset not in SUBSETS:
        raise ValueError(f"`subset` must be one of {SUBSETS}, got {subset!r}.")
    tasks = _check_tasks(tasks)
    if story_cap is not None and (not isinstance(story_cap, (int, np.integer)) or story_cap < 1):
        raise ValueError(f"`story_cap` must be a positive integer or None, got {story_cap!r}.")
    story_cap = None if story_cap is None else int(story_cap)
    if checksums is None:
        checksums = BABI_CHECKSUMS
    elif not isinstance(checksums, dict):
        raise ValueError(f"`checksums` must be None or a dict, got {type(checksums).__name__}.")
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir()
    kind, path = _resolve_source(data)
    splits = _splits(subset)
    wanted = {babi_filename(subset, t, s) for t in tasks for s in splits}
    fallback = set()
    if allow_partial:
        fallback = {
            n for t in tasks if _has_known_gap(subset, t, "train") for n in _partial_sources(subset)
        }

    found = None
    if kind == "tar":
        source_sha = file_sha256(path)
    else:
        found = _read_members(kind, path, wanted | fallback)
        h = hashlib.sha256()
        for name in sorted(found):
            h.update(f"{name}\0{hashlib.sha256(found[name]).hexdigest()}\n".encode())
        source_sha = h.hexdigest()
    key_payload = json.dumps(
        {
            "version": CACHE_VERSION,
            "subset": subset,
            "tasks": tasks,
            "story_cap": story_cap,
            "allow_partial": bool(allow_partial),
            "verify": bool(verify),
            "source": source_sha,
            "checksums": hashlib.sha256(
                json.dumps(
                    sorted((k, checksums[k]) for k in wanted | fallback if k in checksums)
                ).encode()
            ).hexdigest()
            if verify
            else None,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_payload.encode()).hexdigest()
    npz_path, json_path = _cache_files(cache_dir, subset, story_cap, key)
    if use_cache:
        cached = _load_cache(npz_path, json_path)
        if cached is not None:
            cached.metadata["source"] = os.path.abspath(path)  # same bytes, maybe another path
            return cached

    if found is None:
        found = _read_members(kind, path, wanted | fallback)
    if verify:
        _verify(found, checksums, path)
    missing = sorted(wanted - set(found))
    partial = {}
    for t in tasks:
        name = babi_filename(subset, t, "train")
        if name in missing and allow_partial and _has_known_gap(subset, t, "train"):
            lacking = [n for n in _partial_sources(subset) if n not in found]
            if lacking:
                raise FileNotFoundError(
                    f"bAbI file {name!r} is missing from {path} and `allow_partial=True` cannot "
                    f"build a partial task-{t} training set: its source file(s) "
                    f"{lacking} are missing too."
                )
            missing.remove(name)
            partial[t] = name
    if missing:
        raise FileNotFoundError(_missing_message(missing, subset, tasks, path))

    parsed, task_info = {}, {}
    for t in tasks:
        info = {
            "name": TASK_NAMES[t],
            "partial": t in partial,
            "note": "",
            "train_files": [babi_filename(subset, t, "train")],
        }
        for s in splits:
            name = babi_filename(subset, t, s)
            if s == "train" and t in partial:
                text, n_stories = _partial_task3_text(subset, found)
                parsed[s, t] = _parse(text, f"partial {name}")
                info["train_files"] = list(_partial_sources(subset))
                info["note"] = _PARTIAL_NOTE[subset].format(
                    n=len(parsed[s, t].answers), s=n_stories
                )
            else:
                parsed[s, t] = _parse(_utf8(found[name], name, path), name)
        task_info[t] = info

    words = set()
    for p in parsed.values():
        for tokens in p.texts:
            words.update(tokens)
        words.update(p.answers)
    if PAD_TOKEN in words:
        raise ValueError(f"The data contains the padding token {PAD_TOKEN!r}.")
    vocab = [PAD_TOKEN] + sorted(words)
    word_to_id = {w: i for i, w in enumerate(vocab)}

    out = {s: {} for s in ("train", "valid", "test")}
    for t in tasks:
        ps = [parsed[s, t] for s in splits]
        longest_story = max(int((p.ends - p.starts).max(initial=0)) for p in ps)
        story_max = max(1, longest_story if story_cap is None else min(longest_story, story_cap))
        sentence_max = max(1, max(max((len(x) for x in p.texts), default=0) for p in ps))
        for s, p in zip(splits, ps):
            out[s][t] = _vectorise(p, word_to_id, story_max, sentence_max, story_cap)
        task_info[t].update(
            story_max=story_max,
            sentence_max=sentence_max,
            longest_story=longest_story,
            **{f"n_{s}": int(out[s][t].answer.shape[0]) for s in splits},
        )
    metadata = {
        "subset": subset,
        "tasks": tasks,
        "splits": list(splits),
        "story_cap": story_cap,
        "vocab_size": len(vocab),
        "vocab_order": "sorted (id 0 = padding)",
        "source": os.path.abspath(path),
        "source_sha256": source_sha,
        "verified": bool(verify),
        "partial_tasks": sorted(partial),
        "task_info": task_info,
        "common_story_max": max(i["story_max"] for i in task_info.values()),
        "common_sentence_max": max(i["sentence_max"] for i in task_info.values()),
        "cache_file": npz_path if use_cache else None,
    }
    result = BabiData(vocab, out["train"], out["valid"], out["test"], metadata)
    if use_cache:
        try:
            _save_cache(npz_path, json_path, result)
        except OSError:
            result.metadata["cache_file"] = None  # read-only location: work without a cache
    return result


def _utf8(content, name, source=None):
    """A bAbI file's bytes as text; a ValueError naming the file (and line) if not UTF-8."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        where = f" in {source!r}" if source else ""
        raise ValueError(
            f"bAbI file {name}{where}, line {line}: not UTF-8 text ({error.reason} "
            f"at byte {error.start})."
        ) from None


def _partial_task3_text(subset, found):
    """Builds the partial task-3 training file of a 10k subset; returns (text, stories)."""
    en_train, valid = (_utf8(found[n], n) for n in _partial_sources(subset))
    first = _story_blocks(en_train)
    extra = _story_blocks(valid)
    if subset == "en-10k":
        seen, stories = set(), []
        for block in first + extra:
            key = "\n".join(block)
            if key not in seen:
                seen.add(key)
                stories.append(block)
    else:  # en-valid-10k: keep the validation stories out of training
        held_out = {"\n".join(b) for b in extra}
        stories = [b for b in first if "\n".join(b) not in held_out]
    return "\n".join(line for b in stories for line in b) + "\n", len(stories)


# ----------------------------------------------------------------------------------------------
# Official per-file checksums (from the archive's SHA256SUMS.txt; paths relative to
# tasks_1-20_v1-2/). The two task-3 10k training files missing from the public copies are
# checked by git blob SHA-1 (`git hash-object`), as listed in the archive README.
# ----------------------------------------------------------------------------------------------

_SHA256SUMS = """
fde8f20ed0b3ba979058ed391a566af34653f23baab5b2793ee37f87ef4e88b7  en-10k/qa10_indefinite-knowledge_test.txt
c5c0788b0446095c07a0442784cad2b59c1d58e875ebe8ad852f5e3f628613f4  en-10k/qa10_indefinite-knowledge_train.txt
46f3290d0158ce1285a40cd2d793f5a65f86ae5000226e165cbc85a3dfeb2f6f  en-10k/qa11_basic-coreference_test.txt
edfcd97fecd4a5045af25e1790cf1408856ae362c39521b1b69cd32b88ec0ced  en-10k/qa11_basic-coreference_train.txt
6437718f8f9801ce345869e910b896836cdc6fd2d01dc7b4d2df49730703b4b1  en-10k/qa12_conjunction_test.txt
39d58df3564916c66cebc98befb65d605c032181e51208730fd8837a77bc166a  en-10k/qa12_conjunction_train.txt
76a25b684f23c9cc473d8cd1465506168b9a1ec8891cfc59d0bbd87e6a064990  en-10k/qa13_compound-coreference_test.txt
c530fdf122d26617a8a03ba5cdbacee87c22624ba7f50d1f07f9658c900e22d8  en-10k/qa13_compound-coreference_train.txt
e3f0b19858ffbec3ed1e49076cc4d1295a89ce146c50318b862f13f202b3caf2  en-10k/qa14_time-reasoning_test.txt
c322e0814eef71f088af1aa1334e7ae4b1ee6ca18f2ee94c05e2189226964ed6  en-10k/qa14_time-reasoning_train.txt
32b77e117fe9acf5f94906684e3b5206de0108e646c76e1da3e022896ec7ee94  en-10k/qa15_basic-deduction_test.txt
0a86673f7fafa484f8ee394048f03de19405bdc40b58f21086969efad2862010  en-10k/qa15_basic-deduction_train.txt
4a11e55366f2a5a859b5a81f683ee23801bdbe71ef984e51adb976bd053e8dcf  en-10k/qa16_basic-induction_test.txt
27fef347ce0b25dd148efea2b15f154926e0e9069d4ea6ab9cfca3add492ab35  en-10k/qa16_basic-induction_train.txt
9e1e0250ed4ec1831757fab26c04138f81ea557ebf6976a220db879cbed04bac  en-10k/qa17_positional-reasoning_test.txt
8a383651e009db50d6c9effed5778b8646c28c55fadb1592b5f4d8d3a187bbce  en-10k/qa17_positional-reasoning_train.txt
d34f70eb7228a276fcb3a7854174fe562c5634f4fb454a39fc3d1ad9934be3ef  en-10k/qa18_size-reasoning_test.txt
9e7c15107067d2070170ef12579a8bfe34dfc35a7ac9ebd13f2001dc1a7488f9  en-10k/qa18_size-reasoning_train.txt
023e391f0d7f79c9e6ae1c46c093e2d0dbd50ab8fbd8965e037a75e3614c20e5  en-10k/qa19_path-finding_test.txt
6cfdc6f448e3cf0e3d8a390fa3add461935b033f89ede32aeef30812401ec91e  en-10k/qa19_path-finding_train.txt
55acf66cef2f6d798e2aa1d056e1ec8f24e910ea9215b639450574321132959b  en-10k/qa1_single-supporting-fact_test.txt
749ea9f7c99070feb2d88c975a254417a0dcc8274add4435ae5ae24c7afc7e9d  en-10k/qa1_single-supporting-fact_train.txt
bd3bde3788ac14ba0ae095078f7b820fbd2bfa6a34dba9d1d46a34afde9c2729  en-10k/qa20_agents-motivations_test.txt
36f20f3baf6bad2297d5b9fd877e633550c36106fe78bc10ddfb7b1eede62573  en-10k/qa20_agents-motivations_train.txt
eff93fb9cd81ba02eb765772cf7cc269769ed44ec71cbbbc19cfb16ee5eba0f6  en-10k/qa2_two-supporting-facts_test.txt
d4074c0c5d54f70ce2f538056ce2b6ef6a313da336da4245f1a24f1298e37ef3  en-10k/qa2_two-supporting-facts_train.txt
17795c977100baf8188f386522ae301b62d6c1a13efc01b3aea781e588b4d57f  en-10k/qa3_three-supporting-facts_test.txt
07f0ca18ddeea9eed4ba6d59e162adcb0ce44815721114b3540d92825509331e  en-10k/qa4_two-arg-relations_test.txt
5d11b821d35234988ab907866aa7ce718e6b6d751acf63bdef52262afb59f12c  en-10k/qa4_two-arg-relations_train.txt
ec825c1c8a76e63a31f0d7a7763cd63740e98332fa9bdf246a19068949bd5f97  en-10k/qa5_three-arg-relations_test.txt
2506910935b701bac64fc8b1d7ff12bd8d0f47ceefca183454282bec784c12a5  en-10k/qa5_three-arg-relations_train.txt
b108b16f1eccbd1c24df6dca2649079a7b2f10af7fd12d4c45a3393802de59e3  en-10k/qa6_yes-no-questions_test.txt
602f379184bf3cb59660d0f7769d9c94ccdc1fc4d82dfe90bd460d985b1ff0c5  en-10k/qa6_yes-no-questions_train.txt
a74d1f2b91329b2bae814d41cdac2fbdfdf0328562b7d8afa9a0fa576d461e27  en-10k/qa7_counting_test.txt
4a2508733bef9b38cfce4b3108a91b83cdee378de4a7370e4d32fea2dacd3b7d  en-10k/qa7_counting_train.txt
362a653c821a580fa315a85243b4f03bfa06fa7e0269b6f8e596f8fe6911646a  en-10k/qa8_lists-sets_test.txt
9518da2d3aa5d98bec33335e0d5ba3a22c2bd1929ee679085d37eb50a7652e4a  en-10k/qa8_lists-sets_train.txt
63590aff3f89993db409f0e9a9eb39c2a5b9d5efff99b255d800a891b0044d9f  en-10k/qa9_simple-negation_test.txt
5f8949f6ef7d64516fc4dd5732b12b5932d057b1a614e8ac94e795fb020d4ff0  en-10k/qa9_simple-negation_train.txt
fde8f20ed0b3ba979058ed391a566af34653f23baab5b2793ee37f87ef4e88b7  en-valid-10k/qa10_test.txt
3c4285c3f6e45fd85ba3944ca58b860c91ed44f1ed394723c7e268048e2f251c  en-valid-10k/qa10_train.txt
df0a8d20028b11700862faec7dda64956d84a36e590e0eb2ea6188271bcf464b  en-valid-10k/qa10_valid.txt
46f3290d0158ce1285a40cd2d793f5a65f86ae5000226e165cbc85a3dfeb2f6f  en-valid-10k/qa11_test.txt
8217e55886155843be48d06b53c8e990b876cd99c6fce048e33b55f1f9a159f0  en-valid-10k/qa11_train.txt
4b7c481dddd99bce8015425463cf9bac68cc55d19537b72cd1dca0910512ab61  en-valid-10k/qa11_valid.txt
6437718f8f9801ce345869e910b896836cdc6fd2d01dc7b4d2df49730703b4b1  en-valid-10k/qa12_test.txt
d470857a0b3e0d4d92da39bc656053b35c990e14a1fa60761b707aa19eefb2c6  en-valid-10k/qa12_train.txt
985abac1f0d2a166c29984dad03c170b93e671c5e99c5628a80271f782bbf157  en-valid-10k/qa12_valid.txt
76a25b684f23c9cc473d8cd1465506168b9a1ec8891cfc59d0bbd87e6a064990  en-valid-10k/qa13_test.txt
93b8ea332cdc791f74520d8f6f456a90dec5e216c6e73f065d11bfbbd9673827  en-valid-10k/qa13_train.txt
8bcc1a09ad8bc7dbba32cc241879045a0a58daee0fd90082b57105bb5a6e0e50  en-valid-10k/qa13_valid.txt
e3f0b19858ffbec3ed1e49076cc4d1295a89ce146c50318b862f13f202b3caf2  en-valid-10k/qa14_test.txt
2eb60c0c728d9888f78d641322848b8ca2359272e1b8c2b974e9e51b15f7246e  en-valid-10k/qa14_train.txt
00169215f1f0bf995c556611b55d344a1a1d3f502ed71ff7c881e2da7e703afc  en-valid-10k/qa14_valid.txt
32b77e117fe9acf5f94906684e3b5206de0108e646c76e1da3e022896ec7ee94  en-valid-10k/qa15_test.txt
1aa31d576e196ad37f3802d1e6639c61417c31d720e8289353b145fb6af2db9d  en-valid-10k/qa15_train.txt
6fa344c75562d126fb56438ce993a8dbc630cd9e199a007d6ede4b005e6234e4  en-valid-10k/qa15_valid.txt
4a11e55366f2a5a859b5a81f683ee23801bdbe71ef984e51adb976bd053e8dcf  en-valid-10k/qa16_test.txt
5e6cbdcf78706889d066e7d4ef606a9eb9ad7e1d1fc33c4b406222f3f98aad4a  en-valid-10k/qa16_train.txt
014ad9bb6f5f4a0141553f0e707a9a4e13fa617208888f15ea65f3ff9195b6d5  en-valid-10k/qa16_valid.txt
9e1e0250ed4ec1831757fab26c04138f81ea557ebf6976a220db879cbed04bac  en-valid-10k/qa17_test.txt
523425b8627312b9e169af60e46289f67e33358fe8f8a1efe2a365d06ad6ad1d  en-valid-10k/qa17_train.txt
0f391eeb822e60d5a187b8456c58f2d75481a4c37bbf36047809b4f5ca824350  en-valid-10k/qa17_valid.txt
d34f70eb7228a276fcb3a7854174fe562c5634f4fb454a39fc3d1ad9934be3ef  en-valid-10k/qa18_test.txt
29901ebd6831d8e19f452d98aec10f8ad0c40488ff56f8153a77cedbeeb1da23  en-valid-10k/qa18_train.txt
a41d67b4056c373247fbb03840688e4ff199a04b32d6f28fe684118a7d8381e8  en-valid-10k/qa18_valid.txt
023e391f0d7f79c9e6ae1c46c093e2d0dbd50ab8fbd8965e037a75e3614c20e5  en-valid-10k/qa19_test.txt
59854cc0f60642e16f5c8d887dd4d4b1a44b072e2499f1605119f0f88309097d  en-valid-10k/qa19_train.txt
b188a6a68134cc3662e8b4efa1e0d8d1e594400063c69b4f090f9a5825593719  en-valid-10k/qa19_valid.txt
55acf66cef2f6d798e2aa1d056e1ec8f24e910ea9215b639450574321132959b  en-valid-10k/qa1_test.txt
6f3dad60b5001427caf740404d6106aaea7257dc8e75a73afd4289475bed705a  en-valid-10k/qa1_train.txt
a7a41a89ca009b00cd5869bb949f47bb21c3b5c4df424cd1795a5e6067f0562e  en-valid-10k/qa1_valid.txt
bd3bde3788ac14ba0ae095078f7b820fbd2bfa6a34dba9d1d46a34afde9c2729  en-valid-10k/qa20_test.txt
d3176fc7c5f2c337e1d74e69dd17954d85f4c19585c5687d5963a9733ddd36da  en-valid-10k/qa20_train.txt
ee57599d71919d00b2e864537c104cacb09432aa35a2a483e9ead323c6511ac4  en-valid-10k/qa20_valid.txt
eff93fb9cd81ba02eb765772cf7cc269769ed44ec71cbbbc19cfb16ee5eba0f6  en-valid-10k/qa2_test.txt
e074f5119e67bca02338882e5fc50616a271d824dfde977f9c643fd3fa8748c5  en-valid-10k/qa2_train.txt
cf3cb2877eada0bff7e84fe0cbbcc70fb45ea855c583fe963c6eb25c426726cc  en-valid-10k/qa2_valid.txt
17795c977100baf8188f386522ae301b62d6c1a13efc01b3aea781e588b4d57f  en-valid-10k/qa3_test.txt
8da018e1b079299c25b34c62a509cde6b9820735c398357e69d1d72a1cc54537  en-valid-10k/qa3_valid.txt
07f0ca18ddeea9eed4ba6d59e162adcb0ce44815721114b3540d92825509331e  en-valid-10k/qa4_test.txt
2cf269f9ccfe792e50ac4c364f9ea9f6dabf23c64b8826e25c884b2e4ca2a678  en-valid-10k/qa4_train.txt
6864535aa47280f2486d93d0f5e209c0e720a97cdcdd0ed406e63929c7c28845  en-valid-10k/qa4_valid.txt
ec825c1c8a76e63a31f0d7a7763cd63740e98332fa9bdf246a19068949bd5f97  en-valid-10k/qa5_test.txt
998903406d464de7cfe622549bc7040403211da8e09891a9538d8de4858edf44  en-valid-10k/qa5_train.txt
db165e176ce585ee745fb797386fc9c28512eb28060fde810c77b76ac530cbe2  en-valid-10k/qa5_valid.txt
b108b16f1eccbd1c24df6dca2649079a7b2f10af7fd12d4c45a3393802de59e3  en-valid-10k/qa6_test.txt
d3c276fd8041efb264e8589edea4f8f90488464b5ddf04fa163264711836636d  en-valid-10k/qa6_train.txt
58b488903ec1a1f1bf98f003a383d78976cebff02fef9a3f4d7a5ece442c3105  en-valid-10k/qa6_valid.txt
a74d1f2b91329b2bae814d41cdac2fbdfdf0328562b7d8afa9a0fa576d461e27  en-valid-10k/qa7_test.txt
3c1cfb0290981d2d4abeb37376522f3c21e51ffa310d19093a1a8efb7ee77223  en-valid-10k/qa7_train.txt
f8fe1ebb0707269e059f6c874024d896e96eb4b3d03a001d9589487cdb6e51dd  en-valid-10k/qa7_valid.txt
362a653c821a580fa315a85243b4f03bfa06fa7e0269b6f8e596f8fe6911646a  en-valid-10k/qa8_test.txt
4da116c3265b9ba97f3dc9cb97f463632f21f7e5e752a6a3deeb364cb683b7ae  en-valid-10k/qa8_train.txt
03d2192ae6603df0841d250a9619f25ce1e6c70ade67c8d4c3dcdcda56af9632  en-valid-10k/qa8_valid.txt
63590aff3f89993db409f0e9a9eb39c2a5b9d5efff99b255d800a891b0044d9f  en-valid-10k/qa9_test.txt
186733a0526ff52c6761642bc57092fcbde75b408dc33c6521d8ccecff53b147  en-valid-10k/qa9_train.txt
62c8156c69a2f399db0e4454ef174328d2b70ad7dab4a6ef834dfc312862e700  en-valid-10k/qa9_valid.txt
fde8f20ed0b3ba979058ed391a566af34653f23baab5b2793ee37f87ef4e88b7  en-valid/qa10_test.txt
d0ed41783098eb3497a0b032a79eafd71c4856c3bf55b799264a848ac5b38c33  en-valid/qa10_train.txt
144cf8454f599f713a75803bfbbd0d7a474d016cc73890f002908be37b0907c8  en-valid/qa10_valid.txt
46f3290d0158ce1285a40cd2d793f5a65f86ae5000226e165cbc85a3dfeb2f6f  en-valid/qa11_test.txt
ed021b4699427d8f38843cc95c6f607797a29230209c86a684b3fb0701c82496  en-valid/qa11_train.txt
7856fad68b0ac92f0f44dd5f4bc1a8c5653c8d9034a9202ebdd43cccc60cf790  en-valid/qa11_valid.txt
6437718f8f9801ce345869e910b896836cdc6fd2d01dc7b4d2df49730703b4b1  en-valid/qa12_test.txt
7f347326909be3845d6e0f6958af7be9b8f696fb4791f0d6fe61321de216d0f8  en-valid/qa12_train.txt
331f48d4667211d14d9c20cc2eff9f0c725fdb5beb399a94fe5b6abeeab39dad  en-valid/qa12_valid.txt
76a25b684f23c9cc473d8cd1465506168b9a1ec8891cfc59d0bbd87e6a064990  en-valid/qa13_test.txt
e99c6da9d613f5cb055e40dc85c9c3f41ad90bc9f79e7edeb27ab825bb15b980  en-valid/qa13_train.txt
3fce7c612b540a3c3667c4ec5ff3cfd028542280721806e264d8038e75485af7  en-valid/qa13_valid.txt
e3f0b19858ffbec3ed1e49076cc4d1295a89ce146c50318b862f13f202b3caf2  en-valid/qa14_test.txt
bb18278b6c56a9247f1b90de283c253ffae5b3ce7488fbfc8d3aaa34f27b2664  en-valid/qa14_train.txt
46aa8462bbbffd33ad0cb2cb1e7a8d676b417038e6a249220db1b148ef92b22d  en-valid/qa14_valid.txt
32b77e117fe9acf5f94906684e3b5206de0108e646c76e1da3e022896ec7ee94  en-valid/qa15_test.txt
4abcb703c4be035800f1026a19451dceca8af25d2683b53ec274c1b0d97078a3  en-valid/qa15_train.txt
265938b325771eb8d72069460b8f9ac7461f7ceefc4ad465b0682629f1a5a251  en-valid/qa15_valid.txt
4a11e55366f2a5a859b5a81f683ee23801bdbe71ef984e51adb976bd053e8dcf  en-valid/qa16_test.txt
e5eb4ad969c6d356d18e46253b6531cf3bf469319e804d04c00ff3e5bd45c97b  en-valid/qa16_train.txt
3de113dcc0380c838987ac0940352aa8f34fc16e1c7ead7902ebd81a501a692d  en-valid/qa16_valid.txt
9e1e0250ed4ec1831757fab26c04138f81ea557ebf6976a220db879cbed04bac  en-valid/qa17_test.txt
e5b5386a4e48a9333cc2335300efc7dd86116c802f5e6459b0d1c7b4f8a966ca  en-valid/qa17_train.txt
65bc10c74530a9db8cbf29d71a67f867ecbadb4977c448b78273f2d74ae68fea  en-valid/qa17_valid.txt
d34f70eb7228a276fcb3a7854174fe562c5634f4fb454a39fc3d1ad9934be3ef  en-valid/qa18_test.txt
f59d2b37e75c9d3cfa6368ec98f1b75db38137f899ea9bec0a92ec50119aab19  en-valid/qa18_train.txt
7fe06186367fd844d953295b18ad140000cec830322f79e14d9c4546460b29ba  en-valid/qa18_valid.txt
023e391f0d7f79c9e6ae1c46c093e2d0dbd50ab8fbd8965e037a75e3614c20e5  en-valid/qa19_test.txt
232e92c3621e929eb568da56790ea215fd4baf6ae0b5441983ba9f282c13c595  en-valid/qa19_train.txt
c6629238c7340d244a78d313e289c27a00a018c3caea2867d8645b68d1beb3a1  en-valid/qa19_valid.txt
55acf66cef2f6d798e2aa1d056e1ec8f24e910ea9215b639450574321132959b  en-valid/qa1_test.txt
e2ab2286843af159b14ec3fcffeb72411b36ef83b7b656addd0c778df9c9cb3d  en-valid/qa1_train.txt
8a4d571909a77beb99d1e25cd1708795f3a83028d52dd0db6211fc283c266e7c  en-valid/qa1_valid.txt
bd3bde3788ac14ba0ae095078f7b820fbd2bfa6a34dba9d1d46a34afde9c2729  en-valid/qa20_test.txt
8a52048df48d8c8c6cce21c8b0f9087278f066c8daa3a4dd14f7c0356fe571b9  en-valid/qa20_train.txt
d14d98ff8a7ea86b8900fcb2cc510a23fd056a76bcf32b8a7bd3293c48dd595a  en-valid/qa20_valid.txt
eff93fb9cd81ba02eb765772cf7cc269769ed44ec71cbbbc19cfb16ee5eba0f6  en-valid/qa2_test.txt
5d49bbda2d105beba39fa2518ff462f57f1e36f02852758a8ac37fb8d013f733  en-valid/qa2_train.txt
b17f0547cf5f6b35a618a1c486817811b107b506155248fb8d521490631e4073  en-valid/qa2_valid.txt
17795c977100baf8188f386522ae301b62d6c1a13efc01b3aea781e588b4d57f  en-valid/qa3_test.txt
3177a5aa6de0b6a0f83a341f0929c5a0db85239cffa615dcf6fd36bd28e10258  en-valid/qa3_train.txt
36964df287aa88afad243837d4fc87461e5fd0f51f5ab74be8c8688573b284ef  en-valid/qa3_valid.txt
07f0ca18ddeea9eed4ba6d59e162adcb0ce44815721114b3540d92825509331e  en-valid/qa4_test.txt
7cbbf503895e6fa6cd3a7bfc97bb4f28376e0ba5958cde8098df82180c1a4490  en-valid/qa4_train.txt
16b0b699e50950b5b01154f1fc88b4170d6fc3b0a533709fd86dcd83ba878177  en-valid/qa4_valid.txt
ec825c1c8a76e63a31f0d7a7763cd63740e98332fa9bdf246a19068949bd5f97  en-valid/qa5_test.txt
a53aea1aef2626d378e9e11e0609cc70e51552d9e7dbae225d0a23cc17741774  en-valid/qa5_train.txt
e9a973a9247eabf12ef8edd1f98f3be0f79c28208ccec4e1f224ad3c6664d948  en-valid/qa5_valid.txt
b108b16f1eccbd1c24df6dca2649079a7b2f10af7fd12d4c45a3393802de59e3  en-valid/qa6_test.txt
2ed13c13ce1750d7edcd0d232f5f54064572d1647e9f9154ea0dc273d252d23a  en-valid/qa6_train.txt
346db07bba227f8d848333b84b1b776cd958c94ef15f6026bc1e76d9a8fcf7d6  en-valid/qa6_valid.txt
a74d1f2b91329b2bae814d41cdac2fbdfdf0328562b7d8afa9a0fa576d461e27  en-valid/qa7_test.txt
60469d2cda8bd0ef2977c0b75387756106ebcd6e63ee5aa2981845a94a4e13b0  en-valid/qa7_train.txt
262f1409ee79ff51af26ca4d9ea8b9c277d2d32addcc9b4f2a06c0668a0a475a  en-valid/qa7_valid.txt
362a653c821a580fa315a85243b4f03bfa06fa7e0269b6f8e596f8fe6911646a  en-valid/qa8_test.txt
6673c6ca5b9703c933768fd00b1a0be47fed30f2b0092079875cc5980d1fef0f  en-valid/qa8_train.txt
b488bee4ad3ef51526c1dce990dff6abff66f2a0e364ea1e15bc8256b685e099  en-valid/qa8_valid.txt
63590aff3f89993db409f0e9a9eb39c2a5b9d5efff99b255d800a891b0044d9f  en-valid/qa9_test.txt
1d3d5ee5b0d3ba088a6c7b8ce5ffa592415e7a8fdc87b9eb9f43db2084ae9d82  en-valid/qa9_train.txt
6209011fc2d90b048002539e536e1dc0fe984672a2c08bdc5760014de6c7527e  en-valid/qa9_valid.txt
fde8f20ed0b3ba979058ed391a566af34653f23baab5b2793ee37f87ef4e88b7  en/qa10_indefinite-knowledge_test.txt
0b7691689447bab05476c5b48c44999b41e747c3978df69c18fdd87b60d6e8b3  en/qa10_indefinite-knowledge_train.txt
46f3290d0158ce1285a40cd2d793f5a65f86ae5000226e165cbc85a3dfeb2f6f  en/qa11_basic-coreference_test.txt
9468de9a1f256f43dfda693a5d07182d21149a82b65f7c2451c64e9cff5eb138  en/qa11_basic-coreference_train.txt
6437718f8f9801ce345869e910b896836cdc6fd2d01dc7b4d2df49730703b4b1  en/qa12_conjunction_test.txt
45c2764bb2d3c8f699d35e9d9aa7958fcd96379c6e907116cdf74526c108bb25  en/qa12_conjunction_train.txt
76a25b684f23c9cc473d8cd1465506168b9a1ec8891cfc59d0bbd87e6a064990  en/qa13_compound-coreference_test.txt
533a391edbda743e4c99504de88b40cdded5b1d5ef454d1390f0863f748a4cc9  en/qa13_compound-coreference_train.txt
e3f0b19858ffbec3ed1e49076cc4d1295a89ce146c50318b862f13f202b3caf2  en/qa14_time-reasoning_test.txt
b7561cbc624205c9c2fdbb8c843cfa8ad90edd65e78bb223fc6dea8113662df8  en/qa14_time-reasoning_train.txt
32b77e117fe9acf5f94906684e3b5206de0108e646c76e1da3e022896ec7ee94  en/qa15_basic-deduction_test.txt
e856ebfdcce4dd7d617c1d10f985e96a0850c0ca18e9a19a017cb710d135ed3d  en/qa15_basic-deduction_train.txt
4a11e55366f2a5a859b5a81f683ee23801bdbe71ef984e51adb976bd053e8dcf  en/qa16_basic-induction_test.txt
20121005137e3d4b061a086eb177a456303d5742b764eb8da2d0e480b6af4d28  en/qa16_basic-induction_train.txt
9e1e0250ed4ec1831757fab26c04138f81ea557ebf6976a220db879cbed04bac  en/qa17_positional-reasoning_test.txt
20083bf56ff74f0e7cf5e3e2f8c3905cdb8ef09293c3e8cf7a96ed8b45ae2277  en/qa17_positional-reasoning_train.txt
d34f70eb7228a276fcb3a7854174fe562c5634f4fb454a39fc3d1ad9934be3ef  en/qa18_size-reasoning_test.txt
18b7dcf52c9a0e87e4e7dd3d65b7e5a630de039645f52a1294197af7481d739d  en/qa18_size-reasoning_train.txt
023e391f0d7f79c9e6ae1c46c093e2d0dbd50ab8fbd8965e037a75e3614c20e5  en/qa19_path-finding_test.txt
dcb788352a56effb7bea1449128f31cc9c342c8c327b6df2caeee0e379e6ad3a  en/qa19_path-finding_train.txt
55acf66cef2f6d798e2aa1d056e1ec8f24e910ea9215b639450574321132959b  en/qa1_single-supporting-fact_test.txt
c64ba9b1a49bbb111ffc4cd2ae4f129d25c012399dd7ade9679eea464b9afb05  en/qa1_single-supporting-fact_train.txt
bd3bde3788ac14ba0ae095078f7b820fbd2bfa6a34dba9d1d46a34afde9c2729  en/qa20_agents-motivations_test.txt
29580ad55fb7b4b29ba014696056cc68f8f347dac3be88470fd692ad60150398  en/qa20_agents-motivations_train.txt
eff93fb9cd81ba02eb765772cf7cc269769ed44ec71cbbbc19cfb16ee5eba0f6  en/qa2_two-supporting-facts_test.txt
a4978af5bc0dc30191810e7c9949aaa6eae939ed0f6beb9fcb5f4330c2a27860  en/qa2_two-supporting-facts_train.txt
17795c977100baf8188f386522ae301b62d6c1a13efc01b3aea781e588b4d57f  en/qa3_three-supporting-facts_test.txt
a6e78019f36a02a7ed71fe6aaded0b563ff09c8deec392931801fcd9c6af4d60  en/qa3_three-supporting-facts_train.txt
07f0ca18ddeea9eed4ba6d59e162adcb0ce44815721114b3540d92825509331e  en/qa4_two-arg-relations_test.txt
c9370502d85fa382f32d1fea2111e817f81ae9e3e79eb2924a1a5392a90417fa  en/qa4_two-arg-relations_train.txt
ec825c1c8a76e63a31f0d7a7763cd63740e98332fa9bdf246a19068949bd5f97  en/qa5_three-arg-relations_test.txt
086cd59c3ca9677bfac3d6a22ca5853c76a5c1fbae3159c7c4a6aef759a74ec0  en/qa5_three-arg-relations_train.txt
b108b16f1eccbd1c24df6dca2649079a7b2f10af7fd12d4c45a3393802de59e3  en/qa6_yes-no-questions_test.txt
5a133115ee35d475776df703ff605d145b11effbcdbf7e74861f9d5639246a5a  en/qa6_yes-no-questions_train.txt
a74d1f2b91329b2bae814d41cdac2fbdfdf0328562b7d8afa9a0fa576d461e27  en/qa7_counting_test.txt
dca03bd91876951c49f1c971c83c9dd55404de60201b7b6435451cf7ddb4751c  en/qa7_counting_train.txt
362a653c821a580fa315a85243b4f03bfa06fa7e0269b6f8e596f8fe6911646a  en/qa8_lists-sets_test.txt
058604df6f9440458317e8ae685d2b7b84261e1a80b4d6410a9140d16f81bf06  en/qa8_lists-sets_train.txt
63590aff3f89993db409f0e9a9eb39c2a5b9d5efff99b255d800a891b0044d9f  en/qa9_simple-negation_test.txt
0c3b89921af0caea1c4059ee3f7b7f2a88869f924195a428da37820446b8c49f  en/qa9_simple-negation_train.txt
"""

BABI_CHECKSUMS = {
    path: digest for digest, path in (line.split() for line in _SHA256SUMS.strip().splitlines())
}
BABI_CHECKSUMS.update(
    {
        "en-10k/qa3_three-supporting-facts_train.txt": "9b2b35ca4357ea8ee44692c71ec71892edf51399",
        "en-valid-10k/qa3_train.txt": "458387a5aeb1aa11fd075d6a2f1c2bb13a1b08b4",
    }
)
