"""Raw-text tokenization: the default tokenizer against the 1B Word Benchmark sentences of the
bilm-tf fixtures and typical English, lossless non-English text, sentence splitting, the
Hugging Face pre-tokenizers, and the one-line errors for unknown or missing tokenizers."""
from __future__ import annotations

import json
import pickle
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sacremoses import MosesDetokenizer

from elmo_jax.tokenize import TOKENIZERS, Tokenizer, TokenizerError, split_text


@pytest.fixture(scope="module")
def moses() -> Tokenizer:
    return Tokenizer()


def benchmark_sentences(fixture_dir) -> list[str]:
    """The 30 sentences of the bilm-tf fixtures: 1B Word Benchmark text, as its pipeline split it."""
    groups = json.loads((fixture_dir / "lm_embeddings_sentences.json").read_text(encoding="utf-8"))
    return [s for group in groups for s in group]


#: Raw text written by hand for sentences of the fixture file -> their tokens there (the
#: benchmark's output): curly quotes and dashes normalised, `'t` split off, no `&amp;`.
RAW_FIXTURE_SENTENCES = {
    "Don't!": "Don 't !",
    "It wasn't the most seaworthy of prizes.": "It wasn 't the most seaworthy of prizes .",
    "Authorities previously served search warrants at Murray\u2019s Las Vegas home and his businesses in "
    "Las Vegas and Houston.": "Authorities previously served search warrants at Murray 's Las Vegas home and "
                              "his businesses in Las Vegas and Houston .",
    "Elk calling \u2014 a skill that hunters perfected long ago to lure game with the promise of a little "
    "romance \u2014 is now its own sport.": "Elk calling -- a skill that hunters perfected long ago to lure game "
                                           "with the promise of a little romance -- is now its own sport .",
    "When Ms. Winfrey invited Suzanne Somers to share her controversial views about bio-identical hormone "
    "treatment on her syndicated show in 2009, it won Ms. Winfrey a rare dollop of unflattering press, "
    "including a Newsweek cover story titled \u201cCrazy Talk: Oprah, Wacky Cures & You.\u201d":
        "When Ms. Winfrey invited Suzanne Somers to share her controversial views about bio-identical hormone "
        "treatment on her syndicated show in 2009 , it won Ms. Winfrey a rare dollop of unflattering press , "
        "including a Newsweek cover story titled \" Crazy Talk : Oprah , Wacky Cures & You . \"",
    "Fish, ranked 98th in the world, fired 22 aces en route to a 6-3, 6-7 (5/7), 7-6 (7/4) win over "
    "seventh-seeded Argentinian David Nalbandian.":
        "Fish , ranked 98th in the world , fired 22 aces en route to a 6-3 , 6-7 ( 5 / 7 ) , 7-6 ( 7 / 4 ) "
        "win over seventh-seeded Argentinian David Nalbandian .",
    "AMMAN (Reuters) - King Abdullah of Jordan will meet U.S. President Barack Obama in Washington on April "
    "21 to lobby on behalf of Arab states for a stronger U.S. role in Middle East peacemaking, palace "
    "officials said on Sunday.":
        "AMMAN ( Reuters ) - King Abdullah of Jordan will meet U.S. President Barack Obama in Washington on "
        "April 21 to lobby on behalf of Arab states for a stronger U.S. role in Middle East peacemaking , "
        "palace officials said on Sunday .",
}


def test_default_tokenizer_reproduces_benchmark_sentences(fixture_dir, moses):
    in_fixture = set(benchmark_sentences(fixture_dir))
    for raw, expected in RAW_FIXTURE_SENTENCES.items():
        assert expected in in_fixture, expected  # the expectation is the benchmark's own text
        assert moses.tokenize(raw) == expected.split()


def test_benchmark_paragraph_splits_and_tokenizes_back(fixture_dir):
    """All 30 fixture sentences, detokenized and run together as one paragraph, come back as the
    benchmark's sentences and tokens (sentence splitting + normalisation + tokenization)."""
    sentences = benchmark_sentences(fixture_dir)
    detok = MosesDetokenizer(lang="en")
    paragraph = " ".join(detok.detokenize(s.split()) for s in sentences)
    assert Tokenizer(split_sentences=True).sentences(paragraph) == [s.split() for s in sentences]


@pytest.mark.parametrize("text, expected", [
    ('He said, "I don\'t know."', 'He said , " I don \'t know . "'),  # quote moved after the period
    ("It's 3.5% of $1,000.50, i.e. 1,000.5 km.", "It 's 3.5 % of $ 1,000.50 , i.e. 1,000.5 km ."),
    ("A well-known, state-of-the-art e-mail.", "A well-known , state-of-the-art e-mail ."),
    ("Dr. Smith moved to the U.S. in 1990.", "Dr. Smith moved to the U.S. in 1990 ."),
    ("We can't, won't and shouldn't; they're O'Neil's.", "We can 't , won 't and shouldn 't ; they 're O 'Neil 's ."),
    ("Mail john.doe@example.com or see https://example.com/a?b=1&c=2 today.",
     "Mail john.doe @ example.com or see https : / / example.com / a ? b = 1 & c = 2 today ."),
    ("Wait\u2026 really?! (Yes) [no] {maybe}", "Wait ... really ? ! ( Yes ) [ no ] { maybe }"),
    ("It was the 1990's \u2013 \u2018the\u2019 decade.", "It was the 1990 's -- ' the ' decade ."),
    ("Tabs\tand   spaces\n", "Tabs and spaces"),
])
def test_default_tokenizer_on_typical_english(moses, text, expected):
    assert moses.tokenize(text) == expected.split()


NON_ENGLISH = ["東京は日本の首都です。北京也很大！", "Привет, мир! Как дела?", "مرحبا بالعالم، كيف حالك؟",
               "😀👍🏽 family: 👨\u200d👩\u200d👧 🇯🇵", "한국어 문장입니다. Ελληνικά γράμματα. עברית", "café naïve Zürich Ærø"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_non_english_passes_through_without_loss(name):
    tok = Tokenizer(name)
    for text in NON_ENGLISH:
        tokens = tok.tokenize(text)
        assert "".join(tokens) == "".join(text.split()), (name, text, tokens)
        assert all(t and not any(c.isspace() for c in t) for t in tokens)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Mn", "Nd", "So", "Zs")), max_size=40))
def test_letters_digits_and_symbols_are_never_lost(text):
    """Any mix of letters (every script), marks, digits, symbols (emoji) and spaces: the default
    tokenizer only inserts boundaries."""
    tokens = Tokenizer().tokenize(text)
    assert "".join(tokens) == "".join(text.split())


def test_sentence_splitting(moses):
    tok = Tokenizer(split_sentences=True)
    assert tok.sentences("Dr. Smith came at 5 p.m. He left. Did Ms. Jones? Yes!") == [
        ["Dr.", "Smith", "came", "at", "5", "p.m."], ["He", "left", "."], ["Did", "Ms.", "Jones", "?"], ["Yes", "!"]]
    assert tok.sentences("Это первое предложение. Это второе!") == [
        ["Это", "первое", "предложение", "."], ["Это", "второе", "!"]]
    assert tok.sentences("   ") == [] and moses.sentences("   ") == [[]]  # a text is one sentence unless split
    assert split_text("It rained. Then sun.", tok) == [("It rained.", ["It", "rained", "."]),
                                                        ("Then sun.", ["Then", "sun", "."])]
    assert split_text(" pre  tokenized ", None) == [(" pre  tokenized ", ["pre", "tokenized"])]


def test_hugging_face_pre_tokenizers():
    text = "It's 3.5% ok--fine."
    assert Tokenizer("whitespace").tokenize(text) == text.split()
    assert Tokenizer("whitespace_punct").tokenize(text) == ["It", "'", "s", "3", ".", "5", "%", "ok", "--", "fine", "."]
    assert Tokenizer("bert").tokenize(text) == ["It", "'", "s", "3", ".", "5", "%", "ok", "-", "-", "fine", "."]


def test_key_names_tokenizer_settings_and_library(moses):
    keys = {Tokenizer(n).key for n in TOKENIZERS} | {Tokenizer(split_sentences=True).key,
                                                      Tokenizer(language="de").key}
    assert len(keys) == len(TOKENIZERS) + 2
    assert "sacremoses" in moses.key and "tokenizers" in Tokenizer("bert").key
    again = pickle.loads(pickle.dumps(Tokenizer("bert", split_sentences=True)))
    assert again.key == Tokenizer("bert", split_sentences=True).key and again.tokenize("a,b") == ["a", ",", "b"]


@pytest.mark.parametrize("module, name, split, package", [
    ("sacremoses", "moses", False, "sacremoses"), ("tokenizers", "bert", False, "tokenizers"),
    ("sentence_splitter", "whitespace", True, "sentence-splitter")])
def test_missing_library_is_one_line_naming_the_extra(monkeypatch, module, name, split, package):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(TokenizerError) as e:
        Tokenizer(name, split_sentences=split)
    message = str(e.value)
    assert "\n" not in message and f"'{package}'" in message and "pip install 'elmo-jax[text]'" in message


def test_unknown_tokenizer_or_language():
    with pytest.raises(TokenizerError, match="unknown tokenizer 'spacy' .*moses"):
        Tokenizer("spacy")
    with pytest.raises(TokenizerError, match="language 'xx'"):
        Tokenizer(split_sentences=True, language="xx")
    with pytest.raises(TokenizerError, match="language code"):
        Tokenizer(language="")
