"""The Open Inference Protocol v2 (KServe / Triton): REST routes on the service's port
(:mod:`service.oip.rest`), a gRPC server on its own port (:mod:`service.oip.grpc_server`), sharing
the request codec (:mod:`service.oip.tensors`), the model naming (:mod:`service.oip.models`) and
the inference path (:mod:`service.oip.infer`) with /classify's pipeline."""
