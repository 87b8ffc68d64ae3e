"""scikit-learn text pipelines -> ONNX: one UTF-8 string per sample in, classes out.

A Pipeline whose first step is a CountVectorizer or TfidfVectorizer (say
`Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])`)
is exported with a BYTES input `input` [batch, 1] (config.pbtxt TYPE_STRING,
dims [1]) and the same outputs as a tabular model: `probabilities` with the
class labels in the manifest, or `variable` for a regressor. skl2onnx turns
the vectorizer into ONNX string ops (StringNormalizer, a RE2 Tokenizer,
TfIdfVectorizer), so only what those ops can express converts: word or char
analyzers, no custom analyzer, tokenizer or preprocessor callables, no
strip_accents, no HashingVectorizer. Those are refused here with a clear
message, before skl2onnx's own; anything else is caught by the parity check.

Two settings keep ONNX's text handling equal to scikit-learn's:
- the tokenizer regex: scikit-learn's default `(?u)\\b\\w\\w+\\b` is Unicode-aware,
  skl2onnx's substitute `[a-zA-Z0-9_]+` is ASCII-only and keeps one-letter
  tokens; `[\\p{L}\\p{N}_]{2,}` (RE2 syntax) matches what Python's pattern does;
- the lowercasing locale: StringNormalizer defaults to en_US.UTF-8, which slim
  containers lack (the session then fails to load); C.UTF-8 is always there.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conch_manifest.schema import TensorSpec
from exporters.arrays import Array
from exporters.errors import ExportError
from exporters.pipeline import Artifact, ServingOptions
from exporters.tabular import (
    INPUT_NAME,
    ONNX_ML_OPSET,
    ONNX_OPSET,
    ModelInput,
    native_labels,
    onnx_bytes,
    tabular_artifact,
)

SKLEARN_DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# RE2 (onnxruntime's regex engine) for the same tokens: two or more word characters.
RE2_WORD_TOKENS = r"[\p{L}\p{N}_]{2,}"
NORMALIZER_LOCALE = "C.UTF-8"
TEXT_PARITY_HINT = (
    "; text is tokenized by RE2 inside onnxruntime: a custom token_pattern must "
    "match the same tokens in RE2 as in Python's re"
)


def text_input() -> ModelInput:
    return ModelInput(
        TensorSpec(
            name=INPUT_NAME,
            datatype="BYTES",
            shape=[-1, 1],
            meaning="one UTF-8 text per sample",
        )
    )


def _is_vectorizer(step: Any) -> bool:
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    return isinstance(step, CountVectorizer | HashingVectorizer)  # Tfidf is a CountVectorizer


def find_text_vectorizer(model: Any) -> Any | None:
    """The text vectorizer that makes `model` a text model, None for a tabular model.

    A vectorizer anywhere but first in a Pipeline cannot be converted: the ONNX
    graph's input would not be the text.
    """
    from sklearn.pipeline import Pipeline

    if _is_vectorizer(model):
        return model
    if not isinstance(model, Pipeline):
        return None
    steps = [step for _, step in model.steps]
    if _is_vectorizer(steps[0]):
        return steps[0]
    later = [name for name, step in model.steps[1:] if _is_vectorizer(step)]
    if later:
        first = type(steps[0]).__name__
        raise ExportError(
            f"text step {later[0]!r} must be the pipeline's first step to export a text "
            f"model; {first} before it cannot take a string tensor"
        )
    return None


def check_vectorizer(model: Any, vectorizer: Any) -> None:
    """Refuse, with the reason, what skl2onnx cannot express in ONNX string ops."""
    from sklearn.feature_extraction.text import HashingVectorizer

    kind = type(vectorizer).__name__
    if vectorizer is model:
        raise ExportError(
            f"a {kind} alone is a feature extractor, not a classifier or regressor; "
            "export the Pipeline that ends in the estimator"
        )
    if isinstance(vectorizer, HashingVectorizer):
        raise ExportError(
            "HashingVectorizer has no ONNX converter; use CountVectorizer or TfidfVectorizer"
        )
    problems = []
    if callable(vectorizer.analyzer):
        problems.append("a custom analyzer function")
    elif vectorizer.analyzer == "char_wb":
        problems.append("analyzer='char_wb' (use 'word' or 'char')")
    if vectorizer.tokenizer is not None:
        problems.append("a custom tokenizer function (set token_pattern instead)")
    if vectorizer.preprocessor is not None:
        problems.append("a custom preprocessor function")
    if vectorizer.strip_accents is not None:
        problems.append("strip_accents")
    if getattr(vectorizer, "sublinear_tf", False):
        # skl2onnx computes log(1 + tf); scikit-learn 1 + log(tf): every repeated word differs.
        problems.append("sublinear_tf=True (skl2onnx's ONNX computes it differently)")
    if vectorizer.input != "content":
        problems.append(f"input={vectorizer.input!r} (only 'content', the text itself)")
    if problems:
        raise ExportError(f"{kind} cannot be converted to ONNX with {', '.join(problems)}")
    if not hasattr(vectorizer, "vocabulary_"):
        raise ExportError(f"the {kind} is not fitted (it has no vocabulary_)")


def load_texts(sample: Array | Path | Sequence[str]) -> list[str]:
    """Parity texts: a list or array of str, or a file (.txt: one text per non-blank
    line; .json: a list of strings; .npy: an array of str, never unpickled)."""
    if isinstance(sample, Path):
        if not sample.is_file():
            raise ExportError(f"sample data file {sample} does not exist")
        try:
            if sample.suffix == ".txt":
                lines = sample.read_text(encoding="utf-8").splitlines()
                values: Any = [line for line in lines if line.strip()]
            elif sample.suffix == ".json":
                values = json.loads(sample.read_text(encoding="utf-8"))
            elif sample.suffix == ".npy":
                values = np.load(sample, allow_pickle=False).ravel().tolist()
            else:
                raise ExportError(
                    f"sample texts must be a .txt, .json or .npy file, not {sample.name}"
                )
        except (ValueError, OSError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            raise ExportError(f"could not read sample texts {sample}: {exc}") from exc
    else:
        values = np.asarray(sample, dtype=object).ravel().tolist()
    if not isinstance(values, list) or not values:
        raise ExportError("sample texts must be a non-empty list of strings")
    if not all(isinstance(value, str) for value in values):
        bad = next(value for value in values if not isinstance(value, str))
        raise ExportError(f"sample texts must all be strings, found {type(bad).__name__}")
    return values


def text_tensor(texts: Sequence[str]) -> Array:
    """Texts as the model's BYTES input: an object array of UTF-8 bytes, [n, 1]."""
    return np.array([text.encode("utf-8") for text in texts], dtype=np.object_).reshape(-1, 1)


def convert_text(
    model: Any,
    vectorizer: Any,
    name: str,
    options: ServingOptions,
    sample: Array | Path | Sequence[str],
    atol: float | None,
    rtol: float | None,
) -> Artifact:
    """The convert step of a text pipeline: checks, ONNX conversion, parity case."""
    from sklearn.base import is_classifier, is_regressor

    check_vectorizer(model, vectorizer)
    kind = type(model).__name__
    classifier = is_classifier(model)
    if not classifier and not is_regressor(model):
        raise ExportError(f"{kind} is neither a classifier nor a regressor")
    if classifier and not hasattr(model, "predict_proba"):
        raise ExportError(
            f"the pipeline's {type(model.steps[-1][1]).__name__} has no predict_proba"
        )
    texts = load_texts(sample)
    if classifier:
        class_labels = native_labels(model.classes_)
        expected = np.asarray(model.predict_proba(texts))
    else:
        class_labels, expected = None, np.asarray(model.predict(texts))
    return tabular_artifact(
        name=name,
        framework="sklearn",
        onnx_bytes=onnx_bytes(_to_onnx(model, vectorizer, classifier)),
        model_input=text_input(),
        class_labels=class_labels,
        sample=text_tensor(texts),
        expected=expected,
        atol=atol,
        rtol=rtol,
        options=options,
        framework_versions={
            package: importlib.import_module(module).__version__
            for package, module in (("scikit-learn", "sklearn"), ("skl2onnx", "skl2onnx"))
        },
        parity_hint=TEXT_PARITY_HINT,
    )


def _to_onnx(model: Any, vectorizer: Any, classifier: bool) -> Any:
    import skl2onnx
    from skl2onnx.common.data_types import StringTensorType

    text_options: dict[str, Any] = {"locale": NORMALIZER_LOCALE}
    if vectorizer.analyzer == "word" and vectorizer.token_pattern == SKLEARN_DEFAULT_TOKEN_PATTERN:
        text_options["tokenexp"] = RE2_WORD_TOKENS
    options: dict[int, dict[str, Any]] = {id(vectorizer): text_options}
    if classifier:
        # zipmap=False: probabilities as a plain FP32 matrix, not a list of dicts.
        options[id(model.steps[-1][1])] = {"zipmap": False}
    try:
        converted = skl2onnx.convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, StringTensorType([None, 1]))],
            options=options,
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported steps
        raise ExportError(f"skl2onnx could not convert the text pipeline: {exc}") from exc
    # skl2onnx lists the three opset domains in set order, which changes with Python's
    # hash seed: sorted, the same pipeline gives the same bytes (and Triton name) each time.
    imports = sorted(converted.opset_import, key=lambda opset: opset.domain)
    del converted.opset_import[:]
    converted.opset_import.extend(imports)
    return converted
