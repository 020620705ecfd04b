"""Word-level language-model data in the Penn Treebank layout (classic Needle hw4 API).

``Corpus(base_dir)`` reads ``train.txt`` and ``test.txt`` (one sentence per line, words
separated by whitespace) into lists of word ids over one shared :class:`Dictionary`, with an
``<eos>`` token closing every line. ``batchify`` lays a list of ids out as ``batch_size``
independent columns and ``get_batch`` cuts ``(data, target)`` windows of ``bptt`` time steps
from it, ``target`` being ``data`` shifted one step ahead.

Example:
    >>> corpus = Corpus("data/ptb")
    >>> train = batchify(corpus.train, batch_size=16, device=needle.cpu(), dtype="float32")
    >>> x, y = get_batch(train, 0, bptt=20)
    >>> x.shape, y.shape
    ((20, 16), (320,))
"""
import os

import numpy as np

from ..autograd import Tensor

EOS = "<eos>"


class Dictionary:
    """A vocabulary: a unique integer id per word, in the order words were first added.

    Attributes:
        word2idx: dict mapping a word to its id.
        idx2word: list of the words, ``idx2word[word2idx[w]] == w``.

    Example:
        >>> d = Dictionary()
        >>> d.add_word("the"), d.add_word("cat"), d.add_word("the"), len(d)
        (0, 1, 0, 2)
    """

    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        """Add ``word`` if it is new; return its id."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return idx

    def __len__(self):
        """The number of distinct words."""
        return len(self.idx2word)


class Corpus:
    """The train and test splits of a text corpus, tokenized over one :class:`Dictionary`.

    Args:
        base_dir: folder holding ``train.txt`` and ``test.txt``.
        max_lines: read at most this many lines of each file (``None``: all of them).

    Attributes:
        dictionary: the shared :class:`Dictionary` (train words first, then new test words).
        train, test: lists of word ids, ``<eos>`` closing each line.
    """

    def __init__(self, base_dir, max_lines=None):
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(base_dir, "train.txt"), max_lines)
        self.test = self.tokenize(os.path.join(base_dir, "test.txt"), max_lines)

    def tokenize(self, path, max_lines=None):
        """Add every word of the first ``max_lines`` lines of ``path`` to the dictionary and
        return the file as a list of ids: each line split on whitespace, then ``<eos>``."""
        if max_lines is not None and (isinstance(max_lines, bool) or
                                      not isinstance(max_lines, (int, np.integer)) or
                                      max_lines < 0):
            raise ValueError(f"max_lines must be None or an integer >= 0, got {max_lines!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such corpus file: {path}")
        ids = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if max_lines is not None and n >= max_lines:
                    break
                ids.extend(self.dictionary.add_word(w) for w in line.split())
                ids.append(self.dictionary.add_word(EOS))
        return ids


def batchify(data, batch_size, device=None, dtype=None):
    """Lay a sequence of ids out as ``batch_size`` columns, each a contiguous stretch.

    With the alphabet and ``batch_size=4`` the result is::

        a g m s
        b h n t
        c i o u
        d j p v
        e k q w
        f l r x

    The columns are independent sequences (the model never learns 'g' from 'f'); the tail
    that does not fill a whole row is dropped.

    Args:
        data: a list (or 1-D array) of word ids.
        batch_size: the number of columns.
        device: unused, kept for the classic signature (``get_batch`` makes the Tensors).
        dtype: dtype of the returned array (``None``: that of ``np.array(data)``).

    Returns:
        a NumPy array of shape ``(len(data) // batch_size, batch_size)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    data = np.asarray(data, dtype=dtype)
    if data.ndim != 1:
        raise ValueError(f"batchify: expected a 1-D sequence of ids, got shape {data.shape}")
    nbatch = len(data) // batch_size
    return np.ascontiguousarray(data[:nbatch * batch_size].reshape(batch_size, nbatch).T)


def get_batch(batches, i, bptt, device=None, dtype=None):
    """The window of rows ``i .. i + seq_len`` of ``batches`` and its next-token targets,
    with ``seq_len = min(bptt, len(batches) - 1 - i)``.

    For the alphabet batchified as in :func:`batchify`, ``bptt=2`` and ``i=0``::

        data    a g m s     target  b h n t   (flattened: b h n t c i o u)
                b h n t             c i o u

    The window runs along the time axis (axis 0); the batch axis was laid out by
    ``batchify``.

    Args:
        batches: the array returned by :func:`batchify`, shape ``(nbatch, batch_size)``.
        i: the first row, ``0 <= i < len(batches) - 1``.
        bptt: the maximum sequence length.
        device, dtype: of the returned Tensors (``None``: Needle's defaults, float32).

    Returns:
        ``(data, target)``: Tensors of shapes ``(seq_len, batch_size)`` and
        ``(seq_len * batch_size,)``, ``target`` being ``data`` one step ahead.
    """
    batches = np.asarray(batches)
    if batches.ndim != 2:
        raise ValueError(f"get_batch: expected the 2-D output of batchify, got shape "
                         f"{batches.shape}")
    if isinstance(bptt, bool) or not isinstance(bptt, (int, np.integer)) or bptt < 1:
        raise ValueError(f"bptt must be an integer >= 1, got {bptt!r}")
    if not 0 <= i < len(batches) - 1:
        raise IndexError(f"get_batch: i={i} is out of range; batches has {len(batches)} rows, "
                         f"so i must be in [0, {len(batches) - 2}] to leave a target")
    seq_len = min(bptt, len(batches) - 1 - i)
    data = batches[i:i + seq_len]
    target = batches[i + 1:i + 1 + seq_len].reshape(-1)
    return (Tensor(data, device=device, dtype=dtype, requires_grad=False),
            Tensor(target, device=device, dtype=dtype, requires_grad=False))
