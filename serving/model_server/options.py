"""The model server's command line, with TF Serving's flag names, and its config files.

`parse_options(argv)` gives a frozen `ServerOptions`; `read_batching_parameters`,
`read_monitoring_path` and `read_model_config_file` read the text-format files the flags name.
Flags of the real binary this stand-in does not need are accepted only where listed here.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.logs import log_event
from serving.model_server.batching import BatchingParameters
from serving.model_server.errors import Code, ServingError
from serving.model_server.manager import ServedModelConfig, VersionPolicy
from serving.textproto import TextProtoError, parse_text_proto

__all__ = [
    "ServerOptions",
    "model_configs_from_proto",
    "parse_options",
    "read_batching_parameters",
    "read_model_config_file",
    "read_monitoring_path",
    "single_model_config",
]

logger = logging.getLogger("serving.model_server")

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class ServerOptions:
    port: int = 8500
    grpc_host: str = "127.0.0.1"
    rest_api_port: int = 8501
    rest_api_host: str = "127.0.0.1"
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    model_name: str = "default"
    model_base_path: str | None = None
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 2
    saved_model_tags: str = "serve"
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    grpc_max_threads: int = 32
    # TF Serving's flag: a label that is new (or keeps its version) may point at a version that
    # is not AVAILABLE yet; without it such a configuration is refused (FAILED_PRECONDITION).
    allow_version_labels_for_unavailable_models: bool = False
    # TF Serving's flags (main.cc): without either, XLA is off and a function compiled with
    # jit_compile fails when first run ("XLA compilation disabled"); GPU's enables both.
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False

    @property
    def xla_enabled(self) -> bool:
        return self.xla_cpu_compilation_enabled or self.xla_gpu_compilation_enabled

    @property
    def rest_threads(self) -> int:
        """TF Serving's default: four request threads per schedulable CPU."""
        return self.rest_api_num_threads or 4 * (os.cpu_count() or 1)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "t"):
        return True
    if lowered in ("0", "false", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xray-model-server",
        description="A local stand-in for tensorflow_model_server (REST and gRPC).",
    )
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0: no gRPC)")
    add("--grpc_host", default="127.0.0.1", help="gRPC bind address (TF Serving: all)")
    add("--rest_api_port", type=int, default=8501, help="REST port (0: no REST)")
    add("--rest_api_host", default="127.0.0.1", help="REST bind address (0.0.0.0: all)")
    add("--rest_api_num_threads", type=int, default=0, help="0: 4 x CPUs")
    add("--rest_api_timeout_in_ms", type=int, default=30000)
    add("--rest_api_enable_cors_support", type=_bool, nargs="?", const=True, default=False)
    add("--model_name", default="default")
    add("--model_base_path", default=None)
    add("--model_config_file", default=None)
    add("--model_config_file_poll_wait_seconds", type=float, default=0.0)
    add("--file_system_poll_wait_seconds", type=float, default=1.0)
    add("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    add("--batching_parameters_file", default=None)
    add("--monitoring_config_file", default=None)
    add("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    add("--num_request_iterations_for_warmup", type=int, default=1)
    add("--max_num_load_retries", type=int, default=5)
    add("--load_retry_interval_micros", type=int, default=60_000_000)
    add("--num_load_threads", type=int, default=2)
    add("--saved_model_tags", default="serve")
    add("--tensorflow_intra_op_parallelism", type=int, default=0)
    add("--tensorflow_inter_op_parallelism", type=int, default=0)
    add("--grpc_max_threads", type=int, default=32)
    add(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="let a new label point at a version that is not loaded yet (TF Serving's flag)",
    )
    add(
        "--xla_cpu_compilation_enabled",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="run functions exported with jit_compile (XLA); off, they fail (TF Serving's flag)",
    )
    add(
        "--xla_gpu_compilation_enabled",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="as --xla_cpu_compilation_enabled (TF Serving's flag enables both)",
    )
    return parser


def parse_options(argv: list[str] | None = None) -> ServerOptions:
    """Parse the command line; exits with a usage message on invalid flags."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    options = ServerOptions(**vars(arguments))
    if options.batching_parameters_file and not options.enable_batching:
        parser.error("--batching_parameters_file requires --enable_batching")
    if not options.model_config_file and not options.model_base_path:
        parser.error("either --model_config_file or --model_base_path is required")
    if options.port and options.port == options.rest_api_port:
        parser.error("--rest_api_port must differ from --port")
    return options


def read_batching_parameters(path: str | None) -> BatchingParameters:
    """A text BatchingParameters file (wrapper fields: `max_batch_size { value: 128 }`)."""
    defaults = BatchingParameters(num_batch_threads=os.cpu_count() or 1)
    if not path:
        return defaults
    try:
        message = parse_text_proto(Path(path).read_text(encoding="utf-8"))
        parameters = BatchingParameters(
            max_batch_size=message.wrapped_integer("max_batch_size", defaults.max_batch_size)
            or defaults.max_batch_size,
            batch_timeout_micros=message.wrapped_integer(
                "batch_timeout_micros", defaults.batch_timeout_micros
            )
            or 0,
            max_enqueued_batches=message.wrapped_integer(
                "max_enqueued_batches", defaults.max_enqueued_batches
            )
            or defaults.max_enqueued_batches,
            num_batch_threads=message.wrapped_integer(
                "num_batch_threads", defaults.num_batch_threads
            )
            or defaults.num_batch_threads,
            allowed_batch_sizes=tuple(
                value for value in message.values("allowed_batch_sizes") if isinstance(value, int)
            ),
        )
        parameters.validate()
    except (OSError, TextProtoError, TypeError, ValueError) as error:
        raise ValueError(f"invalid batching parameters file {path}: {error}") from error
    return parameters


def read_monitoring_path(path: str | None) -> str | None:
    """The Prometheus path of a MonitoringConfig file, or None when it is off or absent."""
    if not path:
        return None
    try:
        message = parse_text_proto(Path(path).read_text(encoding="utf-8"))
        prometheus = message.message("prometheus_config")
        if prometheus is None or not prometheus.boolean("enable"):
            return None
        metrics_path = prometheus.string("path") or DEFAULT_PROMETHEUS_PATH
    except (OSError, TextProtoError) as error:
        raise ValueError(f"invalid monitoring config file {path}: {error}") from error
    return metrics_path if metrics_path.startswith("/") else "/" + metrics_path


def read_model_config_file(path: str) -> Any:
    """models.config, a text ModelServerConfig, parsed with TF Serving's own protos.

    As ParseProtoTextFile: a file that cannot be read is NOT_FOUND (or the OS error), one that
    does not parse is INVALID_ARGUMENT `Invalid protobuf file: '<path>'` (the parser's reason
    is logged).
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServingError.not_found(f"{path}; No such file or directory") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ServingError(Code.UNKNOWN, f"{path}; {error}") from None
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        log_event(logger, "config_parse_error", logging.ERROR, path=path, reason=str(error))
        raise ServingError.invalid_argument(f"Invalid protobuf file: '{path}'") from None
    return config


def single_model_config(name: str, base_path: str) -> Any:
    """BuildSingleModelConfig: `--model_name` at `--model_base_path`, platform tensorflow."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    return config


def model_configs_from_proto(config: Any) -> list[ServedModelConfig]:
    """The models of a ModelServerConfig's model_config_list, as written (the manager checks
    them, in ServerCore's order)."""
    models = []
    for entry in config.model_config_list.config:
        policy_kind = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        if policy_kind == "specific":
            policy = VersionPolicy(
                "specific", versions=tuple(entry.model_version_policy.specific.versions)
            )
        elif policy_kind == "all":
            policy = VersionPolicy("all")
        else:
            policy = VersionPolicy(
                "latest", num_versions=entry.model_version_policy.latest.num_versions or 1
            )
        models.append(
            ServedModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                policy=policy,
                labels=dict(entry.version_labels),
                model_platform=entry.model_platform,
                model_type=int(entry.model_type),
            )
        )
    return models
