"""scikit-learn text pipelines: a BYTES input, parity-checked, served like tabular models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from conch_manifest.layout import load_manifest, verify_files
from exporters.cli import app
from exporters.errors import ExportError
from exporters.session import ExportSession
from exporters.sklearn_exporter import SklearnSource, export_sklearn
from exporters.text import text_tensor

Snapshot = Callable[[Path], dict[str, bytes]]

POSITIVE = ["great", "lovely", "excellent", "délicieux", "été", "naïve", "friendly", "fast"]
NEGATIVE = ["awful", "broken", "late", "rude", "cold", "dirty", "slow", "froid"]
FILLER = ["the", "service", "was", "really", "café", "and", "food", "a", "x", "très"]


def _sentences(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for _ in range(n):
        label = "positive" if rng.random() < 0.5 else "negative"
        own = POSITIVE if label == "positive" else NEGATIVE
        words = [str(rng.choice(own)) for _ in range(2)] + [
            str(rng.choice(FILLER)) for _ in range(4)
        ]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str], list[str]]:
    """Training texts and labels, and held-out texts that differ from them the way
    sklearn's tokenization is sensitive to: case, accents, punctuation, one-letter words."""
    rng = np.random.default_rng(3)
    texts, labels = _sentences(rng, 120)
    held_out, _ = _sentences(rng, 30)
    held_out += [
        "ÉTÉ, CAFÉ et DÉLICIEUX!",  # upper-case accented words whose lower case is known
        "Naïve-friendly: fast; a x b",  # punctuation and one-letter tokens
        "",  # nothing to count
        "   ",
        "unknown words only",
        "AWFUL awful Awful late",
    ]
    return texts, labels, held_out


def _pipeline(vectorizer: Any) -> Pipeline:
    return Pipeline([("vectorizer", vectorizer), ("clf", LogisticRegression(max_iter=1000))])


@pytest.fixture(scope="module")
def sentiment(sources: Path, corpus: tuple[list[str], list[str], list[str]]) -> Path:
    texts, labels, _ = corpus
    model = _pipeline(TfidfVectorizer(ngram_range=(1, 2))).fit(texts, labels)
    path = sources / "sentiment.joblib"
    joblib.dump(model, path)
    return path


def test_text_pipeline_is_served_with_a_bytes_input(
    sentiment: Path,
    corpus: tuple[list[str], list[str], list[str]],
    model_repository: Path,
    export_session: ExportSession,
    served: Any,
) -> None:
    _, _, held_out = corpus
    result = export_sklearn(
        sentiment, name="sentiment", repository=model_repository, sample=held_out,
        session=export_session,
    )  # fmt: skip

    manifest = load_manifest(model_repository, result.triton_name)
    assert manifest.task == "classification" and manifest.framework == "sklearn"
    assert manifest.parity.passed and manifest.parity.rows == len(held_out)
    [model_input] = manifest.inputs
    assert (model_input.name, model_input.datatype, model_input.shape) == (
        "input",
        "BYTES",
        [-1, 1],
    )
    assert model_input.feature_names is None
    [output] = manifest.outputs
    assert (output.name, output.datatype, output.shape) == ("probabilities", "FP32", [-1, 2])
    assert output.typed_class_labels() == ["negative", "positive"]
    assert verify_files(model_repository, manifest) == []
    config = (model_repository / result.triton_name / "config.pbtxt").read_text()
    assert 'name: "input"\n  data_type: TYPE_STRING\n  dims: 1\n' in config

    # A request of UTF-8 bytes through a Triton that took no part in the export.
    model = joblib.load(sentiment)
    got = served(result.triton_name, {"input": text_tensor(held_out)}, ["probabilities"])
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(held_out), atol=1e-5)
    labels = output.typed_class_labels()
    assert labels is not None
    predicted = [labels[i] for i in np.argmax(got["probabilities"], axis=1)]
    assert predicted == list(model.predict(held_out))


def test_text_regressor_exports_its_prediction(
    sources: Path,
    corpus: tuple[list[str], list[str], list[str]],
    model_repository: Path,
    export_session: ExportSession,
) -> None:
    texts, labels, held_out = corpus
    target = [1.0 if label == "positive" else -1.0 for label in labels]
    model = Pipeline([("counts", CountVectorizer()), ("ridge", Ridge())]).fit(texts, target)
    joblib.dump(model, sources / "score.joblib")
    result = export_sklearn(
        sources / "score.joblib", name="sentiment-score", repository=model_repository,
        sample=np.array(held_out), session=export_session,
    )  # fmt: skip
    assert result.manifest.task == "regression" and result.manifest.parity.passed
    assert [o.name for o in result.manifest.outputs] == ["variable"]
    assert result.manifest.inputs[0].datatype == "BYTES"


def test_cli_detects_the_text_pipeline(
    sentiment: Path, corpus: tuple[list[str], list[str], list[str]], tmp_path: Path
) -> None:
    _, _, held_out = corpus
    sample = tmp_path / "texts.txt"
    sample.write_text("\n".join(text for text in held_out if text.strip()) + "\n")
    repository = tmp_path / "repo"
    result = CliRunner().invoke(
        app,
        ["sklearn", str(sentiment), "--name", "sentiment-cli", "--repository", str(repository),
         "--sample-data", str(sample)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [published] = [p for p in repository.iterdir() if p.name.startswith("sentiment-cli-")]
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["inputs"][0]["datatype"] == "BYTES"
    assert manifest["parity"]["passed"] and manifest["parity"]["rows"] == len(held_out) - 2


UNSUPPORTED = {
    "hashing": (_pipeline(HashingVectorizer()), "HashingVectorizer has no ONNX converter"),
    "tokenizer": (
        _pipeline(TfidfVectorizer(tokenizer=str.split, token_pattern=None)),
        "a custom tokenizer function",
    ),
    "char_wb": (_pipeline(TfidfVectorizer(analyzer="char_wb")), "analyzer='char_wb'"),
    "strip_accents": (_pipeline(TfidfVectorizer(strip_accents="unicode")), "strip_accents"),
    "sublinear": (_pipeline(TfidfVectorizer(sublinear_tf=True)), "sublinear_tf=True"),
    "alone": (TfidfVectorizer(), "a TfidfVectorizer alone is a feature extractor"),
    "not-first": (
        Pipeline(
            [
                ("same", FunctionTransformer()),
                ("tfidf", TfidfVectorizer()),
                ("clf", LogisticRegression()),
            ]
        ),
        "text step 'tfidf' must be the pipeline's first step",
    ),
}


@pytest.mark.parametrize(("model", "message"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_text_steps_are_refused_with_the_reason(
    model: Any,
    message: str,
    corpus: tuple[list[str], list[str], list[str]],
    tmp_path: Path,
    repository_snapshot: Snapshot,
) -> None:
    texts, labels, held_out = corpus
    model.fit(texts, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    repository = tmp_path / "repo"
    repository.mkdir()
    with pytest.raises(ExportError, match=message):
        export_sklearn(
            tmp_path / "model.joblib", name="refused", repository=repository, sample=held_out
        )
    assert repository_snapshot(repository) == {}


@pytest.mark.parametrize(
    ("sample", "kwargs", "message"),
    [
        ([], {}, "non-empty list of strings"),
        (["fine", 3], {}, "must all be strings, found int"),
        (["fine"], {"feature_names": ["text"]}, "feature names do not apply to a text model"),
    ],
    ids=["empty", "not-strings", "feature-names"],
)
def test_bad_text_samples_are_refused(
    sentiment: Path, tmp_path: Path, sample: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        export_sklearn(sentiment, name="refused", repository=tmp_path, sample=sample, **kwargs)


def test_sample_text_files_are_read_or_refused(sentiment: Path, tmp_path: Path) -> None:
    csv = tmp_path / "texts.csv"
    csv.write_text("text\nhello\n")
    with pytest.raises(ExportError, match=r"must be a \.txt, \.json or \.npy file"):
        export_sklearn(sentiment, name="refused", repository=tmp_path, sample=csv)
    broken = tmp_path / "texts.json"
    broken.write_text('["unterminated')
    with pytest.raises(ExportError, match="could not read sample texts"):
        export_sklearn(sentiment, name="refused", repository=tmp_path, sample=broken)


def test_the_tabular_source_points_a_text_pipeline_to_export_sklearn(sentiment: Path) -> None:
    with pytest.raises(ExportError, match="text pipeline, not a tabular model"):
        SklearnSource(sentiment)


CONVERT_AND_HASH = """
import hashlib, sys
import joblib
from exporters.pipeline import ServingOptions
from exporters.text import convert_text, find_text_vectorizer
model = joblib.load(sys.argv[1])
artifact = convert_text(
    model, find_text_vectorizer(model), "x", ServingOptions(), ["a text"], None, None
)
print(hashlib.sha256(artifact.model_bytes).hexdigest())
"""


def test_the_same_pipeline_converts_to_the_same_bytes_under_any_hash_seed(
    sentiment: Path,
) -> None:
    """The Triton name is a hash of the ONNX bytes: they must not depend on set order."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", CONVERT_AND_HASH, str(sentiment)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(6)
    }
    assert len(digests) == 1, digests
