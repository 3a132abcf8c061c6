"""The model server process: configuration, model lifecycle, REST and gRPC, shutdown.

As tensorflow_model_server: the configured models are loaded first and the ports open only once
each model's first version to finish loading is AVAILABLE (one that ends in error stops the
start with "N servable(s) did not become available", exit status 255); the base paths are polled
every `--file_system_poll_wait_seconds` from the start and, when
`--model_config_file_poll_wait_seconds` > 0, the config file is re-read and reloaded every poll.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import tensorflow as tf

from common.logs import configure_json_logging, log_event
from serving.model_server.batching import BatchScheduler
from serving.model_server.errors import Code, ServingError
from serving.model_server.grpc_api import GrpcServer
from serving.model_server.manager import ModelManager
from serving.model_server.metrics import Metrics
from serving.model_server.options import (
    ServerOptions,
    model_configs_from_proto,
    parse_options,
    read_batching_parameters,
    read_model_config_file,
    read_monitoring_path,
    single_model_config,
)
from serving.model_server.rest import RestApi, RestServer
from serving.model_server.servable import LoadedVersion, load_version

__all__ = ["ModelServer", "main"]

logger = logging.getLogger("serving.model_server")


class ModelServer:
    """Everything one `python -m serving.model_server` process runs."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self._batching = (
            read_batching_parameters(options.batching_parameters_file)
            if options.enable_batching
            else None
        )
        self._batch_slots = threading.Semaphore(
            self._batching.num_batch_threads if self._batching else 1
        )
        self._monitoring_path = read_monitoring_path(options.monitoring_config_file)
        self.manager = ModelManager(
            self._load,
            load_threads=max(1, options.num_load_threads),
            max_load_retries=max(0, options.max_num_load_retries),
            load_retry_interval=options.load_retry_interval_micros / 1e6,
        )
        self._rest: RestServer | None = None
        self._grpc: GrpcServer | None = None
        self._stop = threading.Event()
        self._config_lock = threading.Lock()
        self._config_thread: threading.Thread | None = None

    # -- loading -------------------------------------------------------------------------------

    def _load(self, name: str, version: int, path: Path) -> LoadedVersion:
        try:
            loaded = load_version(
                name,
                version,
                path,
                tags=[tag for tag in self.options.saved_model_tags.split(",") if tag],
                warmup=self.options.enable_model_warmup,
                warmup_iterations=self.options.num_request_iterations_for_warmup,
                xla_enabled=self.options.xla_enabled,
            )
        except Exception:
            self.metrics.record_load(str(path), "error")
            raise
        self.metrics.record_load(str(path), "success")
        if self._batching is not None:
            for key, signature in loaded.signatures.items():
                if signature.function is None:
                    continue
                scheduler = BatchScheduler(
                    signature.run,
                    self._batching,
                    self._batch_slots,
                    f"{name}-{version}-{key}",
                    on_batch=functools.partial(self.metrics.record_batch, name),
                    input_names=_tensor_names(loaded, key, "inputs"),
                    output_names=_tensor_names(loaded, key, "outputs"),
                )
                loaded.set_runner(key, scheduler.submit, scheduler.close)
        return loaded

    # -- configuration -------------------------------------------------------------------------

    def _initial_config(self) -> Any:
        """The ModelServerConfig to start with: the file, or the single model of the flags."""
        if self.options.model_config_file:
            return read_model_config_file(self.options.model_config_file)
        assert self.options.model_base_path is not None
        return single_model_config(self.options.model_name, self.options.model_base_path)

    def reload_config(self, config: Any) -> None:
        """ServerCore::ReloadConfig: the given ModelServerConfig replaces the current one.

        Only a model_config_list is applied. An empty config is no change at start (the server
        then runs with no model) and refused once a list is in effect, as is a custom config.
        """
        kind = config.WhichOneof("config")
        if kind != "model_config_list":
            if not self.manager.configured:
                if kind is None:
                    log_event(logger, "config_empty", detail="Taking no action for empty config.")
                    return
                raise ServingError.unimplemented(
                    "ModelServer does not yet support custom model config."
                )
            raise ServingError.failed_precondition(
                "Cannot transition to requested config. It is only legal to transition from "
                "one ModelConfigList to another."
            )
        models = model_configs_from_proto(config)
        with self._config_lock:
            self.manager.apply_config(
                models,
                allow_labels_for_unavailable=(
                    self.options.allow_version_labels_for_unavailable_models
                ),
            )

    def _poll_config_file(self, interval: float, applied: Any) -> None:
        """Server::PollFilesystemAndReloadConfig: every interval the file is read and reloaded,
        changed or not, so a reload that failed (a label on a version not AVAILABLE yet) is
        tried again on every poll; an unreadable file changes nothing."""
        path = str(self.options.model_config_file)
        while not self._stop.wait(interval):
            try:
                config = read_model_config_file(path)
            except ServingError as error:
                log_event(
                    logger,
                    "config_unreadable",
                    logging.ERROR,
                    message=f"Failed to read ModelServerConfig file: {error.message}",
                )
                continue
            try:
                self.reload_config(config)
            except ServingError as error:
                log_event(
                    logger,
                    "config_reload_failed",
                    logging.ERROR,
                    message=f"PollFilesystemAndReloadConfig failed to ReloadConfig: "
                    f"{error.message}",
                    code=error.code.name,
                    reason=error.message,
                )
                continue
            if config != applied:
                log_event(
                    logger,
                    "config_applied",
                    models=[entry.name for entry in config.model_config_list.config],
                )
                applied = config

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the models, then open the ports. Raises ServingError if a model fails."""
        options = self.options
        config = self._initial_config()
        log_event(
            logger,
            "server_starting",
            models=[entry.name for entry in config.model_config_list.config],
            batching=self._batching is not None,
        )
        # The base paths are polled from the start: a version that appears while the server
        # waits for its first versions is loaded (FileSystemStoragePathSource's own thread).
        self.manager.start_polling(options.file_system_poll_wait_seconds)
        self.reload_config(config)
        if options.port:
            self._grpc = GrpcServer(
                self.manager,
                self.metrics,
                options.grpc_host,
                options.port,
                max_threads=options.grpc_max_threads,
                reload_config=self.reload_config,
            )
            self._grpc.start()
            log_event(logger, "grpc_listening", address=f"{options.grpc_host}:{self._grpc.port}")
        if options.rest_api_port:
            api = RestApi(
                self.manager,
                self.metrics,
                timeout_seconds=options.rest_api_timeout_in_ms / 1000,
                monitoring_path=self._monitoring_path,
                enable_cors=options.rest_api_enable_cors_support,
            )
            self._rest = RestServer(
                api, options.rest_api_host, options.rest_api_port, options.rest_threads
            )
            self._rest.start()
            log_event(
                logger,
                "rest_listening",
                detail=f"Exporting HTTP/REST API at:{options.rest_api_host}:{self._rest.port} ...",
            )
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._poll_config_file,
                args=(options.model_config_file_poll_wait_seconds, config),
                name="config-poll",
                daemon=True,
            )
            self._config_thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._rest is not None:
            self._rest.stop()
        if self._grpc is not None:
            self._grpc.stop()
        self.manager.stop()


def _tensor_names(loaded: LoadedVersion, key: str, side: str) -> dict[str, str]:
    """Alias -> tensor name of one side ("inputs" or "outputs") of a SignatureDef."""
    definitions = loaded.signature_def_map.signature_def
    if key not in definitions:  # (indexing a protobuf map would add the key)
        return {}
    infos = definitions[key].inputs if side == "inputs" else definitions[key].outputs
    return {alias: info.name for alias, info in infos.items() if info.name}


def _configure_tensorflow(options: ServerOptions) -> None:
    if options.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(
            options.tensorflow_intra_op_parallelism
        )
    if options.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(
            options.tensorflow_inter_op_parallelism
        )


def main(argv: list[str] | None = None) -> int:
    """Run the server; on a failed start print what tensorflow_model_server prints (to stdout)
    and return its exit status, 255 (its `return -1`)."""
    options = parse_options(argv)
    configure_json_logging()
    _configure_tensorflow(options)
    try:
        server = ModelServer(options)
    except ValueError as error:
        print(f"Failed to start server. Error: INVALID_ARGUMENT: {error}", flush=True)
        return 255
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: server.request_stop())
    try:
        server.start()
    except (ServingError, ValueError, OSError) as error:
        failure = (
            error
            if isinstance(error, ServingError)
            else ServingError(Code.INVALID_ARGUMENT, str(error))
        )
        log_event(logger, "server_start_failed", logging.ERROR, reason=failure.status_string())
        print(f"Failed to start server. Error: {failure.status_string()}", flush=True)
        server.stop()
        return 255
    server.wait()
    log_event(logger, "server_stopping")
    server.stop()
    return 0
