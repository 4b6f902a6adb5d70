"""Triton Inference Server glue: config.pbtxt rendering (`config`) and a real server (`server`).

`config` depends only on protobuf and tritonclient's generated `model_config_pb2`; `server`
starts the `tritonserver` binary (on PATH, else the one inside the nvidia-pytriton wheel).
"""
