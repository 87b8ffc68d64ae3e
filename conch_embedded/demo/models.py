"""The demo models `make run` serves: one per kind of model Conch handles.

Everything is offline and seeded: scikit-learn's bundled datasets, a generated
implicit-feedback dataset, generated support tickets for a text classifier and
a randomly initialised MLP. The triton names are
recorded in `model_repository/.demo.json`; a second build that finds them all
intact returns at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from exporters.config import InstanceKind
from exporters.errors import ExportError, PublishedDifferentlyError
from exporters.pipeline import ProgressHook, ServingOptions, StepRecord
from exporters.repository import find_published
from exporters.session import ExportSession

DEMO_INDEX = ".demo.json"
# The trained source models, kept so anyone can compare Triton's answers with them.
DEMO_SOURCES = ".demo-sources"
# 2: the text classifier; an older index is rebuilt (the unchanged models are found again).
DEMO_VERSION = 2
MLP_FEATURES = 256
MLP_HIDDEN = 1024
MLP_CLASSES = 10

# Called with "<model>: <step>" while building.
DemoProgress = Callable[[str], None]


class DemoModels(BaseModel):
    demo_version: int = DEMO_VERSION
    tabular_classifier: str  # breast-cancer pipeline, predict_proba
    tabular_regressor: str  # diabetes random forest
    text_classifier: str  # support-ticket topic, TF-IDF + logistic regression, BYTES input
    recommenders: dict[str, str]  # "ials", "item_knn"
    mlp: str  # ONNX, onnxruntime backend
    mlp_torchscript: str  # TorchScript, pytorch backend
    demo_user_ids: list[str]  # users with training history, for example requests

    def triton_names(self) -> list[str]:
        names = [
            self.tabular_classifier,
            self.tabular_regressor,
            self.text_classifier,
            self.mlp,
            self.mlp_torchscript,
        ]
        return names + list(self.recommenders.values())


def demo_index(repository: Path, instance_kind: InstanceKind = "cpu") -> Path:
    return repository / (DEMO_INDEX if instance_kind == "cpu" else f".demo-{instance_kind}.json")


def load_built_demo(repository: Path, instance_kind: InstanceKind = "cpu") -> DemoModels | None:
    """The recorded demo when every model it names is still published intact."""
    try:
        demo = DemoModels.model_validate_json(demo_index(repository, instance_kind).read_bytes())
    except (OSError, ValidationError):
        return None
    if demo.demo_version != DEMO_VERSION:
        return None
    try:
        if all(find_published(repository, name) for name in demo.triton_names()):
            return demo
    except ExportError:
        pass  # a damaged model: rebuilding reports it properly
    return None


def build_demo(
    repository: Path, progress: DemoProgress | None = None, *, instance_kind: InstanceKind = "cpu"
) -> DemoModels:
    """Export the demo models into `repository` (a no-op when already there).

    `instance_kind="gpu"` gives the TorchScript MLP GPU instances (the one demo
    model the GPU machines can run on the GPU: they have CUDA torch but no
    onnxruntime-gpu); everything else stays on the CPU.
    """
    repository = repository.resolve()
    existing = load_built_demo(repository, instance_kind)
    if existing is not None:
        return existing
    report = progress or (lambda _: None)
    workdir = repository / DEMO_SOURCES
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        demo = _build(repository, workdir, report, instance_kind)
    except PublishedDifferentlyError as exc:
        # Published entries never change, so a demo built by an older Conch (whose
        # configs differ from what this one writes) cannot be updated.
        raise ExportError(
            f"{exc}; the demo models in {repository} were built by an older Conch: "
            "remove them (or pass another --repository) and run again"
        ) from exc
    _write_index(demo_index(repository, instance_kind), demo)
    return demo


def _build(
    repository: Path, workdir: Path, report: DemoProgress, instance_kind: InstanceKind
) -> DemoModels:
    with ExportSession(repository) as session:

        def hook(model: str) -> ProgressHook:
            def started(step: StepRecord) -> None:
                if step.status == "running":
                    report(f"{model}: {step.name}")

            return started

        classifier = _tabular_classifier(workdir, session, hook("tabular_classifier"))
        regressor = _tabular_regressor(workdir, session, hook("tabular_regressor"))
        text = _text_classifier(workdir, session, hook("text_classifier"))
        recommenders, users = _recommenders(workdir, session, hook)
        mlp, mlp_torchscript = _mlps(workdir, session, hook, instance_kind)
    return DemoModels(
        tabular_classifier=classifier,
        tabular_regressor=regressor,
        text_classifier=text,
        recommenders=recommenders,
        mlp=mlp,
        mlp_torchscript=mlp_torchscript,
        demo_user_ids=users,
    )


def _tabular_classifier(workdir: Path, session: ExportSession, progress: ProgressHook) -> str:
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from exporters.sklearn_exporter import export_sklearn

    data = load_breast_cancer()
    x_train, x_test, y_train, _ = train_test_split(data.data, data.target, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    path = workdir / "breast_cancer.joblib"
    joblib.dump(model, path)
    np.save(workdir / "breast_cancer_holdout.npy", x_test.astype(np.float32))
    return export_sklearn(
        path,
        name="breast-cancer-logreg",
        repository=session.repository,
        sample=x_test.astype(np.float32),
        feature_names=[str(n) for n in data.feature_names],
        session=session,
        progress=progress,
    ).triton_name


def _tabular_regressor(workdir: Path, session: ExportSession, progress: ProgressHook) -> str:
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import train_test_split

    from exporters.sklearn_exporter import export_sklearn

    data = load_diabetes()
    x_train, x_test, y_train, _ = train_test_split(data.data, data.target, random_state=0)
    model = RandomForestRegressor(n_estimators=50, max_depth=6, random_state=0, n_jobs=1)
    model.fit(x_train, y_train)
    path = workdir / "diabetes.joblib"
    joblib.dump(model, path)
    return export_sklearn(
        path,
        name="diabetes-forest",
        repository=session.repository,
        sample=x_test.astype(np.float32),
        feature_names=[str(n) for n in data.feature_names],
        session=session,
        progress=progress,
    ).triton_name


def _text_classifier(workdir: Path, session: ExportSession, progress: ProgressHook) -> str:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from conch_embedded.demo.text_data import generate_tickets
    from exporters.sklearn_exporter import export_sklearn

    tickets = generate_tickets()
    split = len(tickets.texts) * 3 // 4
    model = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2))),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(tickets.texts[:split], tickets.topics[:split])
    path = workdir / "support_tickets.joblib"
    joblib.dump(model, path)
    holdout = tickets.texts[split:]
    (workdir / "support_tickets_holdout.txt").write_text("\n".join(holdout) + "\n")
    return export_sklearn(
        path,
        name="support-ticket-topic",
        repository=session.repository,
        sample=holdout,
        session=session,
        progress=progress,
    ).triton_name


def _recommenders(
    workdir: Path, session: ExportSession, hook: Callable[[str], ProgressHook]
) -> tuple[dict[str, str], list[str]]:
    from conch_embedded.demo.data import generate_interactions
    from exporters.implicit import train_ials, train_item_knn
    from exporters.recommender import export_recommender

    data = generate_interactions()
    names = {}
    for key, model in (("ials", train_ials(data)), ("item_knn", train_item_knn(data))):
        path = workdir / f"{key}.npz"
        model.save(path)
        names[key] = export_recommender(
            path,
            name=f"demo-{key.replace('_', '-')}",
            repository=session.repository,
            session=session,
            progress=hook(f"recommenders.{key}"),
        ).triton_name
    # The most active users make the most telling example requests.
    activity = np.asarray(data.matrix.getnnz(axis=1))
    users = [data.user_ids[i] for i in np.argsort(-activity, kind="stable")[:5]]
    return names, users


def _mlps(
    workdir: Path,
    session: ExportSession,
    hook: Callable[[str], ProgressHook],
    torchscript_kind: InstanceKind,
) -> tuple[str, str]:
    import torch

    from exporters.torch_exporter import export_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(MLP_FEATURES, MLP_HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(MLP_HIDDEN, MLP_CLASSES),
    ).eval()
    path = workdir / "mlp.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    onnx_name = export_torch(
        path,
        name="demo-mlp",
        repository=session.repository,
        input_shape=(MLP_FEATURES,),
        task="classification",
        session=session,
        progress=hook("mlp"),
    ).triton_name
    suffix = "" if torchscript_kind == "cpu" else f"-{torchscript_kind}"
    torchscript_name = export_torch(
        path,
        name=f"demo-mlp-torchscript{suffix}",
        repository=session.repository,
        input_shape=(MLP_FEATURES,),
        format="torchscript",
        task="classification",
        options=ServingOptions(instance_kind=torchscript_kind),
        session=session,
        progress=hook("mlp_torchscript"),
    ).triton_name
    return onnx_name, torchscript_name


def _write_index(target: Path, demo: DemoModels) -> None:
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    temporary.write_text(demo.model_dump_json(indent=2))
    os.replace(temporary, target)
