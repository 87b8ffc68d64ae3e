"""Python-based `pytorch` backend for the embedded Triton.

Every model whose config.pbtxt says `backend: "pytorch"` runs through this file
when Conch embeds pytriton's Triton (which ships only the Python backend);
NVIDIA's container runs the same config with its native libtorch backend, and
this file follows that backend's conventions: the config's inputs are passed in
order as forward()'s arguments, and the returned tensor (or tuple) fills the
config's outputs in order. A whole dynamic batch runs in one forward() call.

Tensors cross the stub boundary through DLPack via torch: numpy 1.x and the
Triton 2.51 stub disagree on DLPack capsule names, torch and the stub agree,
and DLPack is also what keeps GPU tensors on the GPU.

String tensors (TYPE_STRING, the protocol's BYTES) follow the native backend
too: torch has no string tensors, so a string input reaches forward() as a
List[str] (UTF-8 decoded, one per element of the batch, which must be 1-D per
sample), and a List[str] the model returns fills a string output. They cross
the stub through numpy object arrays: DLPack cannot carry them.
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
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _to_torch(tensor):
    return torch.from_dlpack(tensor)


def _from_torch(name, tensor):
    return pb_utils.Tensor.from_dlpack(name, tensor.contiguous())


def _strings_in(name, tensor):
    """A string input's batch size and the List[str] the native backend passes to forward()."""
    array = tensor.as_numpy()
    try:
        strings = [item.decode("utf-8") for item in array.flat]
    except UnicodeDecodeError as exc:
        raise ValueError(f"input {name!r} is not valid UTF-8 text: {exc}") from None
    return (array.shape[0] if array.ndim else 1), strings


def _strings_out(name, strings, shape):
    encoded = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in strings]
    return pb_utils.Tensor(name, np.array(encoded, dtype=np.object_).reshape(shape))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_names = [spec["name"] for spec in config["input"]]
        self.output_names = [spec["name"] for spec in config["output"]]
        self.string_inputs = {
            spec["name"] for spec in config["input"] if spec.get("data_type") == "TYPE_STRING"
        }
        # Per-sample dims of each string output, to shape the returned list.
        self.string_output_dims = {
            spec["name"]: [int(d) for d in spec.get("dims", [])]
            for spec in config["output"]
            if spec.get("data_type") == "TYPE_STRING"
        }
        filename = config.get("default_model_filename") or "model.pt"
        path = os.path.join(args["model_repository"], args["model_version"], filename)

        # Each instance is its own stub process, so the setting is per instance. CPU
        # instances default to one thread: torch's pool (a thread per core, busy-
        # waiting after each parallel region) takes CPU from the Triton frontend and
        # the other instances. INTRA_OP_THREAD_COUNT (the native backend's key)
        # overrides; "0" keeps torch's default.
        gpu_instance = args["model_instance_kind"] == "GPU"
        parameter = config.get("parameters", {}).get("INTRA_OP_THREAD_COUNT", {})
        threads = int(parameter.get("string_value") or (0 if gpu_instance else 1))
        if threads > 0:
            torch.set_num_threads(threads)

        self.device = torch.device("cpu")
        if gpu_instance:
            if not torch.cuda.is_available():
                raise pb_utils.TritonModelException(
                    "instance kind KIND_GPU needs a CUDA build of torch and a visible GPU "
                    f"(torch {torch.__version__} sees none); use KIND_CPU"
                )
            self.device = torch.device(f"cuda:{int(args['model_instance_device_id'])}")
        self.model = torch.jit.load(path, map_location=self.device).eval()

    def execute(self, requests):
        if self.max_batch_size == 0:
            return [self._run_batch([request])[0] for request in requests]
        return self._run_batch(requests)

    def _run_batch(self, requests):
        """Concatenate the requests along the batch axis, run once, split the results."""
        args = []
        sizes = []
        for name in self.input_names:
            tensors = [pb_utils.get_input_tensor_by_name(r, name) for r in requests]
            if name in self.string_inputs:
                try:
                    lists = [_strings_in(name, t) for t in tensors]
                except ValueError as exc:
                    if len(requests) > 1:  # one request's bad text must not fail the others
                        return [self._run_batch([request])[0] for request in requests]
                    return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))]
                if not sizes:
                    sizes = [rows if self.max_batch_size else 1 for rows, _ in lists]
                args.append([text for _, strings in lists for text in strings])
                continue
            parts = [_to_torch(t) for t in tensors]
            if not sizes:
                sizes = [p.shape[0] if self.max_batch_size else 1 for p in parts]
            merged = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            args.append(merged.to(self.device))
        try:
            with torch.inference_mode():
                result = self.model(*args)
        except Exception as exc:  # TorchScript raises its own untyped errors
            error = pb_utils.TritonError(f"pytorch failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        # A tuple (or a list of tensors) fills several outputs; a List[str] is one output.
        several = isinstance(result, tuple) or (
            isinstance(result, list) and not all(isinstance(item, str) for item in result)
        )
        results = list(result) if several else [result]
        if len(results) != len(self.output_names):
            error = pb_utils.TritonError(
                f"the model returned {len(results)} tensors, config.pbtxt names "
                f"{len(self.output_names)} outputs"
            )
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        not_lists = [
            name
            for name, value in zip(self.output_names, results, strict=True)
            if name in self.string_output_dims and not isinstance(value, list)
        ]
        if not_lists:
            error = pb_utils.TritonError(
                f"string outputs {not_lists} must be returned as List[str] by the model"
            )
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

        responses = []
        offset = 0
        for size in sizes:
            tensors = []
            for name, value in zip(self.output_names, results, strict=True):
                if name in self.string_output_dims:
                    tensors.append(self._string_output(name, value, offset, size))
                    continue
                part = value[offset : offset + size] if self.max_batch_size else value
                tensors.append(_from_torch(name, part))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses

    def _string_output(self, name, strings, offset, size):
        """A List[str] output, one string per sample (or per element when unbatched)."""
        if not self.max_batch_size:
            return _strings_out(name, strings, (len(strings),))
        dims = self.string_output_dims[name]
        per_sample = 1
        for dim in dims:
            per_sample *= dim
        part = strings[offset * per_sample : (offset + size) * per_sample]
        return _strings_out(name, part, (size, *dims))
