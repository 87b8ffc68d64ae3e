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
"""

import json
import os
import sys

# The backend stub embeds libpython and ignores PYTHONPATH: Conch passes the
# virtualenv's site-packages explicitly.
for _path in reversed(os.environ.get("CONCH_BACKEND_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _to_torch(tensor):
    return torch.from_dlpack(tensor)


def _from_torch(name, tensor):
    return pb_utils.Tensor.from_dlpack(name, tensor.contiguous())


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_names = [spec["name"] for spec in config["input"]]
        self.output_names = [spec["name"] for spec in config["output"]]
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
            parts = [_to_torch(pb_utils.get_input_tensor_by_name(r, name)) for r in requests]
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
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(results) != len(self.output_names):
            error = pb_utils.TritonError(
                f"the model returned {len(results)} tensors, config.pbtxt names "
                f"{len(self.output_names)} outputs"
            )
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

        responses = []
        offset = 0
        for size in sizes:
            tensors = []
            for name, value in zip(self.output_names, results, strict=True):
                part = value[offset : offset + size] if self.max_batch_size else value
                tensors.append(_from_torch(name, part))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses
