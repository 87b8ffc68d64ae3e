"""The Open Inference Protocol (KServe v2) REST door: `/v2/...`, passed through to Triton."""
