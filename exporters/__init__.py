"""Conch exporters: trained models -> Triton model repository entries.

Each framework has its own module, imported lazily behind its optional extra.
Every export ends with a parity check through the real embedded Triton.

Entry points (each returns an `ExportResult` with the content-addressed
`triton_name`, the published path, the manifest and the step report):
- `sklearn_exporter.export_sklearn` (tabular estimators, and text pipelines with a
  BYTES input: see `text`), `xgboost_exporter.export_xgboost`,
  `lightgbm_exporter.export_lightgbm`, `torch_exporter.export_torch`,
  `recommender.export_recommender`
- `demo.build_demo(repository) -> DemoModels`
Pass one `session.ExportSession(repository)` to several exports so they share
one private parity Triton, and `transforms=[...]` (objects with a `name` and
`apply(artifact) -> artifact`) to run steps between convert and write, such as
`onnx_optimize.OnnxGraphOptimization()` (`--optimize`: onnxruntime's offline graph
optimization, recorded in the manifest's `optimization`).

Inside: `config` (config.pbtxt via Triton's protobuf schema), `repository`
(staging and atomic publish), `session` (the private Triton), `parity`
(comparisons and default tolerances), `steps` (named, timed steps), `pipeline`
(convert -> transforms -> write -> parity -> publish), `tabular` (what the
tree/sklearn exporters share), `text` (scikit-learn text pipelines), `implicit` and
`demo_data` (recommender training and the generated dataset).
"""
