"""Python-based `onnxruntime` backend for the embedded Triton.

Every model whose config.pbtxt says `backend: "onnxruntime"` runs through this
file when Conch embeds pytriton's Triton (which ships only the Python backend);
NVIDIA's container runs the same config with its native backend. It honours the
config's inputs, outputs and `max_batch_size`, runs a whole dynamic batch in one
session call, and uses onnxruntime's CUDA provider on KIND_GPU instances when
onnxruntime-gpu is installed.

Tensors cross the stub boundary without copies. Triton 2.51's stub and numpy 1.x
disagree on DLPack capsule names (each renames the consumed capsule differently
and the other's deleter then raises), so under numpy 1.x tensors go through the
stub's numpy views; under numpy 2.x, where the numpy views came back empty on
the GPU machine, they go through DLPack.

String tensors (TYPE_STRING, the protocol's BYTES) cannot cross through DLPack:
they always take the numpy path, arriving as object arrays of bytes. The
native backend hands onnxruntime UTF-8 strings, so inputs are decoded to str
(a request that is not UTF-8 gets an error response) and string outputs are
encoded back to bytes.
"""

import json
import os
import sys

# The backend stub embeds libpython and ignores PYTHONPATH: Conch passes the
# virtualenv's site-packages explicitly.
for _path in reversed(os.environ.get("CONCH_BACKEND_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def _to_numpy(tensor, is_string):
    if is_string:
        return tensor.as_numpy()  # an object array of bytes
    return np.from_dlpack(tensor) if _NUMPY_2 else tensor.as_numpy()


def _from_numpy(name, array):
    if array.dtype == np.object_:
        return pb_utils.Tensor(name, _encode_strings(array))
    return pb_utils.Tensor.from_dlpack(name, array) if _NUMPY_2 else pb_utils.Tensor(name, array)


def _decode_strings(name, array):
    """Triton's bytes -> the str onnxruntime's string tensors hold."""
    try:
        decoded = [
            item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.flat
        ]
    except UnicodeDecodeError as exc:
        raise ValueError(f"input {name!r} is not valid UTF-8 text: {exc}") from None
    return np.array(decoded, dtype=np.object_).reshape(array.shape)


def _encode_strings(array):
    encoded = [item.encode("utf-8") if isinstance(item, str) else item for item in array.flat]
    return np.array(encoded, dtype=np.object_).reshape(array.shape)


def _session_options(parameters, cpu_instance):
    """onnxruntime's session options from the config's `parameters`.

    `intra_op_thread_count` and `inter_op_thread_count` are the native backend's
    keys; any `session.*` key is passed on as an onnxruntime session config entry.
    CPU instances default to one thread that sleeps when idle: onnxruntime's default
    (a thread per core, spinning between runs) takes CPU from the Triton frontend
    and the other instances on the same host, and the embedded Triton's batches
    are small.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    entries = {}
    if cpu_instance:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        entries = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    if parameters.get("intra_op_thread_count"):
        options.intra_op_num_threads = int(parameters["intra_op_thread_count"])
    if parameters.get("inter_op_thread_count"):
        options.inter_op_num_threads = int(parameters["inter_op_thread_count"])
    entries.update({k: v for k, v in parameters.items() if k.startswith("session.")})
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_names = [spec["name"] for spec in config["input"]]
        self.string_inputs = {
            spec["name"] for spec in config["input"] if spec.get("data_type") == "TYPE_STRING"
        }
        self.output_names = [spec["name"] for spec in config["output"]]
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)

        parameters = {
            key: value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
        }
        cpu_instance = args["model_instance_kind"] != "GPU"
        options = _session_options(parameters, cpu_instance)

        providers = ["CPUExecutionProvider"]
        if not cpu_instance:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise pb_utils.TritonModelException(
                    "instance kind KIND_GPU needs onnxruntime-gpu (CUDAExecutionProvider); "
                    "use KIND_CPU or install onnxruntime-gpu"
                )
            cuda = ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])})
            providers = [cuda, "CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)

        session_inputs = {i.name for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.input_names if n not in session_inputs]
        missing += [n for n in self.output_names if n not in session_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"config.pbtxt names tensors the ONNX file does not have: {missing}"
            )

    def execute(self, requests):
        if self.max_batch_size == 0:
            return [self._run_batch([request])[0] for request in requests]
        return self._run_batch(requests)

    def _run_batch(self, requests):
        """Concatenate the requests along the batch axis, run once, split the results."""
        feeds = {}
        sizes = []
        for name in self.input_names:
            is_string = name in self.string_inputs
            arrays = [
                _to_numpy(pb_utils.get_input_tensor_by_name(r, name), is_string) for r in requests
            ]
            if not sizes:
                sizes = [a.shape[0] if self.max_batch_size else 1 for a in arrays]
            merged = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
            if is_string:
                try:
                    merged = _decode_strings(name, merged)
                except ValueError as exc:
                    # One request's bad text must not fail the others in its batch.
                    return self._each_alone(requests) if len(requests) > 1 else _failed(exc)
            feeds[name] = merged
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            error = pb_utils.TritonError(f"onnxruntime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

        responses = []
        offset = 0
        for size in sizes:
            tensors = []
            for name, result in zip(self.output_names, results, strict=True):
                part = result[offset : offset + size] if self.max_batch_size else result
                tensors.append(_from_numpy(name, np.ascontiguousarray(part)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses

    def _each_alone(self, requests):
        return [self._run_batch([request])[0] for request in requests]


def _failed(exc):
    return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))]
