"""Raw text -> sentences of tokens, split the way the published models' training text was.

    tok = Tokenizer()                          # "moses": as the 1B Word Benchmark was made
    tok.tokenize("It wasn't 3.5% -- ok.")      # ['It', 'wasn', "'t", '3.5', '%', '--', 'ok', '.']
    Tokenizer("bert").tokenize("It's ok.")     # a Hugging Face `tokenizers` pre-tokenizer
    Tokenizer(split_sentences=True).sentences("Dr. Smith came. He left.")
                                               # [['Dr.', 'Smith', 'came', '.'], ['He', 'left', '.']]

The published ELMo models were trained on the 1B Word Benchmark, which its `get-data.sh` made
by running the benchmark's `normalize-punctuation.perl` and then Moses' `tokenizer.perl -l en`
(v3) over the WMT news text. The default tokenizer, "moses", does the same: the punctuation
normalisation the benchmark added (curly quotes and apostrophes to ASCII, en/em dashes to `--`,
`…` to `...`, an English period or comma moved inside a closing quote), then `sacremoses`' port
of `tokenizer.perl` without HTML escaping (the corpus has plain `"`, `&` and `'`). Contractions
are therefore split Moses-style, `don't` -> `don 't`, as in the corpus (the reference sentences
in the bilm-tf fixtures have `Don 't !` and `It wasn 't`), not Penn-Treebank style `do n't`.

The other names are Hugging Face `tokenizers` pre-tokenizers (`HF_PRE_TOKENIZERS`). Sentence
splitting of paragraphs uses `sentence-splitter`, the port of Moses' `split-sentences.perl` (the
same family as the tokenizer: non-breaking prefixes such as `Dr.`, `Ms.`, `U.S.` for about 25
languages, no data download). On the 30 1B Word Benchmark sentences of the bilm-tf fixtures,
detokenized and joined into one paragraph, it recovers all 30; `blingfire`, `sentencex`,
`syntok` and `pysbd` recover 29, 27, 26 and 23 (splitting after `Ms.`, missing a boundary). It splits only where
whitespace follows the punctuation, so CJK text without spaces stays one sentence.
All three libraries are the optional extra `text` (`pip install 'elmo-jax[text]'`); a tokenizer
whose library is missing is one `TokenizerError` line saying what to install.

`Tokenizer.key` names the tokenizer, its settings and its library's version: corpus caches
include it, so a change of tokenizer (or of its library) re-tokenizes.
"""
from __future__ import annotations

import importlib.metadata
import re
from typing import Callable, Optional

from .errors import ElmoError

#: Bump when the normalisation or the way tokens are produced changes (invalidates caches).
TOKENIZE_VERSION = "1"
#: The extra that installs every tokenizer library.
TEXT_EXTRA = "elmo-jax[text]"
#: --tokenizer NAME -> the Hugging Face `tokenizers` pre-tokenizer it builds (`pre_tokenizers` module).
HF_PRE_TOKENIZERS: dict[str, Callable] = {
    "whitespace": lambda pt: pt.WhitespaceSplit(),  # split on whitespace only
    "whitespace_punct": lambda pt: pt.Whitespace(),  # runs of word characters, runs of punctuation
    "bert": lambda pt: pt.BertPreTokenizer(),  # whitespace, and every punctuation character alone
}
#: Every tokenizer name; "moses" is the default.
TOKENIZERS = ("moses", *HF_PRE_TOKENIZERS)

#: The 1B Word Benchmark's own additions to normalize-punctuation.perl (character -> replacement).
_BENCHMARK_PUNCT = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2014": "--", "\u2013": "--",
                                  "\u2026": "... ", "\u201e": '"', "\u2033": '"', "\u201c": '"',
                                  "\u201d": '"'})
#: normalize-punctuation.perl -l en: `"` followed by periods/commas -> those, then `"`.
_QUOTE_BEFORE_STOP = re.compile(r'"([,.]+)')


class TokenizerError(ElmoError):
    """A tokenizer that does not exist, or whose library is not installed."""


def _missing(name: str, package: str) -> TokenizerError:
    return TokenizerError(f"tokenizer '{name}' needs the '{package}' package, which is not installed: "
                          f"pip install '{TEXT_EXTRA}'")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def normalize_punctuation(text: str) -> str:
    """The 1B Word Benchmark's punctuation normalisation (English), before Moses tokenization."""
    return _QUOTE_BEFORE_STOP.sub(r'\1"', text.translate(_BENCHMARK_PUNCT))


# The tokenizer libraries are optional extras, imported only when a tokenizer is built: raw text
# is an option, and sacremoses alone takes about a second to import (joblib, click).
def _moses(language: str) -> tuple[Callable[[str], list[str]], str]:
    try:
        from sacremoses import MosesTokenizer
    except ImportError as e:
        raise _missing("moses", "sacremoses") from e
    try:
        moses = MosesTokenizer(lang=language)
    except Exception as e:  # noqa: BLE001 - an unknown language code, named in the message
        raise TokenizerError(f"tokenizer 'moses' cannot use language '{language}' ({e})") from e
    normalize = normalize_punctuation if language == "en" else (lambda t: t)

    def words(text: str) -> list[str]:
        return moses.tokenize(normalize(text), escape=False)

    return words, f"sacremoses {_version('sacremoses')}"


def _hf(name: str) -> tuple[Callable[[str], list[str]], str]:
    try:
        from tokenizers import pre_tokenizers
    except ImportError as e:
        raise _missing(name, "tokenizers") from e
    pre = HF_PRE_TOKENIZERS[name](pre_tokenizers)

    def words(text: str) -> list[str]:
        return [piece for piece, _ in pre.pre_tokenize_str(text)]

    return words, f"tokenizers {_version('tokenizers')}"


def _sentence_splitter(language: str) -> tuple[Callable[[str], list[str]], str]:
    try:
        from sentence_splitter import SentenceSplitter
    except ImportError as e:
        raise TokenizerError(f"sentence splitting needs the 'sentence-splitter' package, which is not "
                             f"installed: pip install '{TEXT_EXTRA}'") from e
    try:
        splitter = SentenceSplitter(language=language)
    except Exception as e:  # noqa: BLE001 - no rules for that language, named in the message
        raise TokenizerError(f"sentence splitting has no rules for language '{language}' ({e})") from e
    return splitter.split, f"sentence-splitter {_version('sentence-splitter')}"


class Tokenizer:
    """Raw text -> tokens (`tokenize`), or -> sentences of tokens (`sentences`).

    name: one of `TOKENIZERS`; language: ISO code for Moses' rules (abbreviations, contractions)
    and for the sentence splitter; split_sentences: split each text into sentences first (else a
    text is one sentence). Tokens never contain whitespace and are never empty."""

    def __init__(self, name: str = "moses", *, language: str = "en", split_sentences: bool = False):
        self._setup(name, language, split_sentences)

    def _setup(self, name: str, language: str, split_sentences: bool) -> None:
        if name not in TOKENIZERS:
            raise TokenizerError(f"unknown tokenizer '{name}' (choose one of {', '.join(TOKENIZERS)})")
        if not isinstance(language, str) or not language:
            raise TokenizerError(f"the tokenizer language must be a language code such as 'en', got {language!r}")
        self.name, self.language, self.split_sentences = name, language, bool(split_sentences)
        self._words, library = _moses(language) if name == "moses" else _hf(name)
        self._split, splitter = _sentence_splitter(language) if split_sentences else (None, "")
        self.key = "|".join([f"elmo-jax-tokenize-v{TOKENIZE_VERSION}", name, language, library,
                             f"split_sentences={self.split_sentences}", splitter])

    # pickled by name and settings (`datasets` may pickle a map function; the libraries' objects
    # are rebuilt on the other side)
    def __getstate__(self) -> tuple[str, str, bool]:
        return self.name, self.language, self.split_sentences

    def __setstate__(self, state: tuple[str, str, bool]) -> None:
        self._setup(*state)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.name!r}, language={self.language!r}"
                f"{', split_sentences=True' if self.split_sentences else ''})")

    def tokenize(self, text: str) -> list[str]:
        """The tokens of one sentence."""
        return [w for piece in self._words(text) for w in piece.split()]

    def split(self, text: str) -> list[str]:
        """The sentences of a text (the text itself when not splitting sentences)."""
        if self._split is None:
            return [text]
        return [s for s in self._split(text) if s.strip()]

    def sentences(self, text: str) -> list[list[str]]:
        """Tokens per sentence of a text. Without sentence splitting: exactly one (possibly empty)
        sentence; with it, the non-empty sentences (possibly none)."""
        if self._split is None:
            return [self.tokenize(text)]
        return [toks for toks in map(self.tokenize, self.split(text)) if toks]


def split_text(text: str, tokenizer: Optional[Tokenizer]) -> list[tuple[str, list[str]]]:
    """(sentence text, its tokens) of each sentence of a line: the line and its whitespace
    tokens for pre-tokenized text (`tokenizer` None), else what the tokenizer makes of it."""
    if tokenizer is None:
        return [(text, text.split())]
    if not tokenizer.split_sentences:
        return [(text, tokenizer.tokenize(text))]
    pairs = [(s, tokenizer.tokenize(s)) for s in tokenizer.split(text)]
    return [(s, toks) for s, toks in pairs if toks]
